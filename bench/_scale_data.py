"""The scale bench's PostgreSQL: a cluster kept between runs, and the generated store in it.

:class:`KeptPostgres` is the test suite's :class:`PostgresServer` (``tests/servers.py``)
with a folder that survives the bench: created (``initdb``) when absent, started, and
stopped but never deleted, so the generated database is reused by the next run.

:func:`generate` fills a migrated keel database with ``runs`` runs over
:data:`PROJECTS`, in keel's exact storage format (see ``keel.meta.schema`` and
``keel.meta.tracking``): every run has 5 params, 2 tags and 3 one-point metrics
(``acc``, ``loss``, ``f1``: a ``latest_metrics`` row and a one-point
``metric_chunks`` row each, the arrays packed little-endian like
``keel.core.series.pack_*``), its ``summary`` JSON mirrors them; ``long_runs`` of
them (every ``runs // long_runs``-th) also have a ``train_loss`` series of
``long_points`` points, stored as chunks of :data:`CHUNK` points (one per batch the
SDK would have written). Short rows are made by SQL (``generate_series``), the long
series by numpy and ``COPY ... (FORMAT BINARY)``: minutes, not hours.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from servers import PostgresServer, free_port  # noqa: E402

PROJECTS = ("vision", "nlp", "speech", "tabular")
MODELS = ("resnet18", "resnet50", "vit-b", "vit-l", "bert-base", "bert-large", "gpt2", "t5-small", "xgboost", "lstm")
OPTIMIZERS = ("adam", "sgd", "adamw")
LRS = (0.1, 0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001)
BATCH_SIZES = (16, 32, 64, 128, 256)
TEAMS = ("a", "b", "c", "d", "e")
DATASETS = ("v1", "v2", "v3")
CHUNK = 1_000  # points per metric_chunks row of a long series
BASE_TS = 1_700_000_000_000
LONG_KEY = "train_loss"

# The database settings of the bench cluster: a modest production-like configuration
# for a 2-core, 23 GB machine (shared_buffers and cache sized for the working set).
SETTINGS = (
    "-c shared_buffers=2GB -c effective_cache_size=8GB -c work_mem=16MB -c maintenance_work_mem=1GB "
    "-c max_wal_size=2GB -c checkpoint_timeout=30min -c max_connections=200 "
    "-c random_page_cost=1.1 -c jit=off"
)


class KeptPostgres(PostgresServer):
    """A PostgreSQL cluster in ``folder`` that outlives the process (see the module docstring)."""

    def __init__(self, folder: Path, durable: bool = True) -> None:
        super().__init__()
        self.folder = folder
        self.durable = durable

    def start(self) -> KeptPostgres:
        """initdb if needed, then start on a free port (fsync on unless ``durable`` is False)."""
        import pwd

        self.dir = self.folder
        owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if owner is not None:
            self._as_user = owner.pw_name
        self.folder.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        data = self.folder / "data"
        if not (data / "PG_VERSION").exists():
            shutil.rmtree(data, ignore_errors=True)
            self._run("initdb", "-D", str(data), "-U", self.user, "--auth=trust", "--encoding=UTF8", "--locale=C")
        if (data / "postmaster.pid").exists():  # left running (or killed) by an earlier bench
            try:
                self._run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
            except RuntimeError:
                (data / "postmaster.pid").unlink(missing_ok=True)
        self.port = free_port()
        durability = "" if self.durable else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} {SETTINGS}{durability}"
        self._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(self.folder / "log"), "-w", "-t", "120", "start")
        self.url = self._url("postgres")
        return self

    def stop(self) -> None:
        """Stop the server; keep its folder."""
        if self.dir is not None and (self.folder / "data" / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")
        self.dir = None

    def url_of(self, name: str) -> str:
        """The SQLAlchemy URL of database ``name``."""
        return self._url(name)

    def connect(self, name: str) -> Any:
        """A psycopg connection (autocommit) to database ``name``."""
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=name, autocommit=True)

    def database_exists(self, name: str) -> bool:
        with self._admin() as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None

    def create(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')

    def backend_cpu_seconds(self) -> float:
        """User+system CPU seconds of every process of this cluster so far (from /proc)."""
        pid_file = self.folder / "data" / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0])
        return _tree_cpu(postmaster)


def _tree_cpu(root: int) -> float:
    """CPU seconds (user+system, of live processes) of ``root`` and its descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        cpu[pid] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def tree_cpu(root: int) -> float:
    """Public alias of :func:`_tree_cpu` (the server's workers are children of its process)."""
    return _tree_cpu(root)


# -- generation --------------------------------------------------------------------------
def _pick(values: tuple[Any, ...], expr: str) -> str:
    """SQL picking ``values[expr % len]`` (expr an integer SQL expression)."""
    literal = ", ".join(json.dumps(v) if isinstance(v, str) else repr(v) for v in values).replace('"', "'")
    return f"(ARRAY[{literal}])[1 + (({expr}) % {len(values)})]"


def _le(send: str) -> str:
    """SQL: the 8 bytes of ``send`` (big-endian, from int8send/float8send) reversed (little-endian)."""
    return " || ".join(f"substring({send} from {k} for 1)" for k in range(8, 0, -1))


def _stage_sql(runs: int) -> str:
    # A deterministic spread of values per run (no random(): the same data every rebuild).
    return f"""
CREATE UNLOGGED TABLE scale_stage AS
SELECT i AS pk,
       1 + (i - 1) % {len(PROJECTS)} AS project_index,
       md5('keel-scale-' || i) AS run_id,
       {BASE_TS}::bigint + i * 60000 AS start_time,
       {BASE_TS}::bigint + i * 60000 + 3600000 AS end_time,
       CASE WHEN i % 97 = 0 THEN 'failed' ELSE 'finished' END AS status,
       {_pick(MODELS, "i * 7919 / 13")} AS model,
       {_pick(LRS, "i * 31 / 7")}::float8 AS lr,
       {_pick(BATCH_SIZES, "i * 17 / 3")} AS batch_size,
       {_pick(OPTIMIZERS, "i / 11")} AS optimizer,
       i % 1000 AS seed,
       {_pick(TEAMS, "i / 5")} AS team,
       {_pick(DATASETS, "i / 101")} AS dataset,
       ((i * 2654435761) % 1000003)::float8 / 1000003 AS acc,
       ((i * 40503) % 999983)::float8 / 999983 AS f1
FROM generate_series(1::bigint, {runs}::bigint) AS i
"""


def _long_values(pk: int, points: int) -> Any:
    """A loss curve with noise and a few spikes (so a chart's extremes matter), per run."""
    import numpy as np

    rng = np.random.default_rng(pk)
    steps = np.arange(points, dtype=np.float64)
    values = 2.0 * np.exp(-steps / (points / 5)) + 0.05 + rng.normal(0.0, 0.02, points)
    spikes = rng.integers(0, points, 5)
    values[spikes] += rng.uniform(1.0, 3.0, 5)
    return values


def _copy_long(pg: KeptPostgres, name: str, pks: list[int], points: int, start_times: dict[int, int]) -> None:
    """The long series of ``pks``, CHUNK points per row, by COPY (FORMAT BINARY)."""
    import numpy as np

    with pg.connect(name) as conn, conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        with conn.transaction():
            with cur.copy(
                "COPY metric_chunks (run_pk, key, count, min_step, max_step, steps, timestamps, vals) "
                "FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "text", "int4", "int8", "int8", "bytea", "bytea", "bytea"])
                for pk in pks:
                    values = _long_values(pk, points)
                    steps = np.arange(points, dtype="<i8")
                    stamps = (start_times[pk] + steps * 100).astype("<i8")
                    vals = values.astype("<f8")
                    for first in range(0, points, CHUNK):
                        last = min(points, first + CHUNK)
                        copy.write_row(
                            (
                                pk,
                                LONG_KEY,
                                last - first,
                                first,
                                last - 1,
                                steps[first:last].tobytes(),
                                stamps[first:last].tobytes(),
                                vals[first:last].tobytes(),
                            )
                        )
            # Their latest_metrics rows (latest = last step) and summaries.
            rows = []
            for pk in pks:
                values = _long_values(pk, points)
                last_step = points - 1
                rows.append(
                    (
                        pk,
                        float(values[-1]),
                        last_step,
                        start_times[pk] + last_step * 100,
                        float(values.min()),
                        float(values.max()),
                        points,
                    )
                )
            cur.executemany(
                "INSERT INTO latest_metrics (run_pk, key, value, is_nan, step, timestamp, min_value, max_value, count) "
                "VALUES (%s, 'train_loss', %s, false, %s, %s, %s, %s, %s)",
                rows,
            )
            cur.executemany(
                "UPDATE runs SET summary = jsonb_set(summary::jsonb, '{metrics,train_loss}', "
                "to_jsonb(%s::float8))::text WHERE id = %s",
                [(row[1], row[0]) for row in rows],
            )


def generate(
    pg: KeptPostgres, name: str, runs: int, long_runs: int, long_points: int, log: Any = print
) -> dict[str, Any]:
    """Fill the (migrated, empty) database ``name``; the seconds each part took."""
    timings: dict[str, float] = {}
    with pg.connect(name) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '1GB'")

        def step(label: str, sql: str, args: Any = None) -> None:
            t0 = time.perf_counter()
            conn.execute(sql, args)
            timings[label] = time.perf_counter() - t0
            log(f"  {label}: {timings[label]:.1f} s")

        project_ids = []
        for project in PROJECTS:
            row = conn.execute(
                "INSERT INTO projects (name, description, created_at) VALUES (%s, '', %s) "
                "ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
                (project, BASE_TS),
            ).fetchone()
            project_ids.append(int(row[0]))
        conn.execute("DROP TABLE IF EXISTS scale_stage")
        step("stage", _stage_sql(runs))
        project_array = "ARRAY[" + ", ".join(str(p) for p in project_ids) + "]::bigint[]"
        step(
            "runs",
            f"""
INSERT INTO runs (id, run_id, project_id, name, status, start_time, end_time, parent_id, deleted, error,
                  context, summary, digest)
SELECT s.pk, s.run_id, ({project_array})[s.project_index], 'run-' || s.pk, s.status, s.start_time, s.end_time,
       NULL, false, CASE WHEN s.status = 'failed' THEN 'RuntimeError: diverged' END, '{{}}',
       json_build_object(
         'metrics', json_build_object('acc', s.acc, 'f1', s.f1, 'loss', 1 - s.acc),
         'params', json_build_object('batch_size', s.batch_size, 'lr', s.lr, 'model', s.model,
                                     'optimizer', s.optimizer, 'seed', s.seed),
         'tags', json_build_object('dataset', s.dataset, 'team', s.team))::text,
       NULL
FROM scale_stage s ORDER BY s.pk
""",
        )
        conn.execute(f"SELECT setval(pg_get_serial_sequence('runs', 'id'), {runs})")
        step(
            "params",
            """
INSERT INTO params (run_pk, key, vtype, value)
SELECT pk, 'batch_size', 'int', batch_size::text FROM scale_stage
UNION ALL SELECT pk, 'lr', 'float', s.lr::text FROM scale_stage s
UNION ALL SELECT pk, 'model', 'str', model FROM scale_stage
UNION ALL SELECT pk, 'optimizer', 'str', optimizer FROM scale_stage
UNION ALL SELECT pk, 'seed', 'int', seed::text FROM scale_stage
""",
        )
        step(
            "tags",
            """
INSERT INTO tags (run_pk, key, value)
SELECT pk, 'dataset', dataset FROM scale_stage UNION ALL SELECT pk, 'team', team FROM scale_stage
""",
        )
        step(
            "latest_metrics",
            """
INSERT INTO latest_metrics (run_pk, key, value, is_nan, step, timestamp, min_value, max_value, count)
SELECT pk, k, v, false, 0, end_time, v, v, 1
FROM scale_stage, LATERAL (VALUES ('acc', acc), ('f1', f1), ('loss', 1 - acc)) AS m(k, v)
""",
        )
        zero = "'\\x0000000000000000'::bytea"
        step(
            "metric_chunks (short)",
            f"""
INSERT INTO metric_chunks (run_pk, key, count, min_step, max_step, steps, timestamps, vals)
SELECT pk, k, 1, 0, 0, {zero}, {_le("int8send(end_time)")}, {_le("float8send(v)")}
FROM scale_stage, LATERAL (VALUES ('acc', acc), ('f1', f1), ('loss', 1 - acc)) AS m(k, v)
ORDER BY pk
""",
        )
        start_times = dict(
            conn.execute(
                "SELECT pk, start_time FROM scale_stage WHERE (pk - 1) %% %s = 0 ORDER BY pk LIMIT %s",
                (max(1, runs // long_runs), long_runs),
            ).fetchall()
        )
    pks = sorted(start_times)
    t0 = time.perf_counter()
    halves = [pks[: len(pks) // 2], pks[len(pks) // 2 :]]  # two cores: two COPY streams
    processes = []
    for half in halves:
        if not half:
            continue
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "copy-long",
                    str(pg.port),
                    str(pg.folder),
                    name,
                    str(long_points),
                    json.dumps({str(pk): start_times[pk] for pk in half}),
                ]  # fmt: skip
            )
        )
    for process in processes:
        if process.wait() != 0:
            raise RuntimeError("generating the long series failed")
    timings["metric_chunks (long)"] = time.perf_counter() - t0
    log(f"  metric_chunks (long): {timings['metric_chunks (long)']:.1f} s")
    with pg.connect(name) as conn:
        conn.execute("DROP TABLE scale_stage")
        t0 = time.perf_counter()
        conn.execute("VACUUM (ANALYZE)")
        timings["vacuum analyze"] = time.perf_counter() - t0
        log(f"  vacuum analyze: {timings['vacuum analyze']:.1f} s")
    return timings


def _copy_long_main(argv: list[str]) -> int:
    port, folder, name, points, pks_json = argv
    pg = KeptPostgres(Path(folder))
    pg.port = int(port)
    starts = {int(k): int(v) for k, v in json.loads(pks_json).items()}
    _copy_long(pg, name, sorted(starts), int(points), starts)
    return 0


def points_total(runs: int, long_runs: int, long_points: int) -> int:
    """Metric points the generated store holds."""
    return runs * 3 + long_runs * long_points


def human(n: float) -> str:
    """1.2M-style counts."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.{0 if n % size == 0 else 1}f}{unit}"
    return f"{n:g}" if not math.isnan(n) else "-"


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "copy-long":
    sys.exit(_copy_long_main(sys.argv[2:]))
