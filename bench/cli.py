"""Command start-up: keel's everyday commands vs MLflow's and DVC's, as whole processes.

    .venv/bin/python bench/cli.py                  # peers from bench/.venv-mlflow and bench/.venv-dvc
    .venv/bin/python bench/cli.py --repeats 31     # more repeats on a busy machine

Every figure is one command run as a user types it: a fresh process of the installed
script (``keel``, ``mlflow``, ``dvc``), start-up included, output piped (and, for
``runs list`` and ``prompts show``, also on a pseudo-terminal of 120 columns, where the
table has bold headers and is drawn by rich). Each command
runs twice as a warm-up (page cache, SQLite files), then ``--repeats`` times; the
commands take turns (one run of each per round), so a busy moment of the machine
falls on all of them alike. The table shows the median and the 90th percentile of
the wall-clock time, and the median CPU time (user + system, from ``wait4``), which a
busy machine disturbs less than the wall clock.

On the same data for both tools:

- ``keel runs list`` vs ``mlflow runs list --experiment-id ID``: 10 runs of 10 params
  and 10 metrics each (the values of ``bench/_common.py``), keel in its default
  SQLite workspace, MLflow with a SQLite tracking store (``MLFLOW_TRACKING_URI``);
- ``keel data status`` vs ``dvc status``: a git repository with a ``data/`` folder of
  5 files (4 KiB each) tracked and committed, nothing changed;
- ``keel prompts show bench-chat``: the prompt every one of the 10 runs loaded (the
  table shows each version's runs and their mean metrics); MLflow has no such command;
- ``keel --help`` / ``--version`` beside ``dvc``'s and ``mlflow``'s, and
  ``python -c pass`` (the interpreter alone: the floor of any Python command).

keel runs from compiled bytecode, as an installed package does (see ``bench/data.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pty
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from data import DEFAULT_DVC_PYTHON, DVC_ENV, _keel_bytecode  # noqa: E402
from tracking import DEFAULT_MLFLOW_PYTHON, MLFLOW_ENV, fmt_ratio, machine_lines  # noqa: E402

N_RUNS = 10
N_FILES = 5
PROMPT = "bench-chat"

# Issue 20's targets (median, ms) for the keel side.
TARGETS = {
    "help": 100.0,
    "runs_list": 150.0,
    "runs_list_tty": 150.0,
    "data_status": 100.0,
    "prompts_show": 150.0,
    "prompts_show_tty": 150.0,
}

KEEL_SETUP = """
import sys
sys.path.insert(0, {here!r})
import keel
from _common import PROJECT, run_payloads
for i, (params, metrics) in enumerate(run_payloads({n})):
    with keel.start_run(project=PROJECT, name=f"run-{{i}}"):
        keel.prompts.load({prompt!r})
        keel.log_params(params)
        keel.log_metrics(metrics)
"""

MLFLOW_SETUP = """
import sys
sys.path.insert(0, {here!r})
import mlflow
from _common import PROJECT, run_payloads
mlflow.set_tracking_uri({uri!r})
experiment = mlflow.create_experiment(PROJECT)
for i, (params, metrics) in enumerate(run_payloads({n})):
    with mlflow.start_run(experiment_id=experiment, run_name=f"run-{{i}}"):
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
print(experiment)
"""


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stdout[-1500:]}{out.stderr[-1500:]}")
    return out.stdout


def make_files(folder: Path) -> None:
    folder.mkdir(parents=True)
    for i in range(N_FILES):
        (folder / f"part-{i}.csv").write_bytes(os.urandom(2048).hex().encode())


def git_repo(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for args in (["init", "-q"], ["config", "user.email", "b@example.com"], ["config", "user.name", "bench"]):
        subprocess.run(["git", *args], cwd=folder, check=True)


def git_commit(folder: Path) -> None:
    subprocess.run(["git", "add", "-A"], cwd=folder, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "data"], cwd=folder, check=True)


def setup_keel(root: Path, keel: str, python: str, env: dict[str, str]) -> None:
    git_repo(root)
    run([keel, "init"], root, env)
    (root / "prompt.txt").write_text("Answer the customer's question in three sentences.\n\nQuestion: {{ question }}\n")
    run([keel, "prompts", "register", PROMPT, "-f", "prompt.txt", "-m", "first wording"], root, env)
    run([python, "-c", KEEL_SETUP.format(here=str(HERE), n=N_RUNS, prompt=PROMPT)], root, env)
    make_files(root / "data")
    run([keel, "data", "add", "data"], root, env)
    git_commit(root)


def setup_dvc(root: Path, dvc: str, env: dict[str, str]) -> None:
    git_repo(root)
    run([dvc, "init", "-q"], root, env)
    make_files(root / "data")
    run([dvc, "add", "-q", "data"], root, env)
    git_commit(root)


def setup_mlflow(root: Path, python: str, env: dict[str, str]) -> str:
    root.mkdir(parents=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env["MLFLOW_TRACKING_URI"] = uri
    out = run([python, "-c", MLFLOW_SETUP.format(here=str(HERE), uri=uri, n=N_RUNS)], root, env)
    return out.strip().splitlines()[-1]


class Command:
    """One command line, where and how it runs, and its timings (ms)."""

    def __init__(
        self, key: str, label: str, argv: list[str], cwd: Path, env: dict[str, str], terminal: bool = False
    ) -> None:
        self.key, self.label, self.argv, self.cwd, self.env = key, label, argv, cwd, env
        self.terminal = terminal  # stdout and stderr a pseudo-terminal, 120 columns (else pipes)
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def stats(self) -> dict[str, float] | None:
        if not self.wall:
            return None
        ordered = sorted(self.wall)
        p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
        return {"median": statistics.median(self.wall), "p90": p90, "cpu": statistics.median(self.cpu)}


def run_with_usage(command: Command) -> tuple[float, float]:
    """Wall and CPU (user + system) milliseconds of one run of ``command``."""
    t0 = time.perf_counter()
    if command.terminal:
        master, slave = pty.openpty()
        env = {**command.env, "COLUMNS": "120"}
        proc = subprocess.Popen(
            command.argv, cwd=command.cwd, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: the command closed the terminal (it ended)
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        output = b"".join(chunks)
    else:
        proc = subprocess.Popen(
            command.argv, cwd=command.cwd, env=command.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert proc.stdout is not None
        output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = (time.perf_counter() - t0) * 1000
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code != 0:
        raise RuntimeError(f"{' '.join(command.argv)} exited {code}:\n{output.decode(errors='replace')[-1500:]}")
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keel-python", default=sys.executable, help="python with keel (default: this one)")
    parser.add_argument("--mlflow-python", default=str(DEFAULT_MLFLOW_PYTHON), help="python of a venv with mlflow")
    parser.add_argument("--dvc-python", default=str(DEFAULT_DVC_PYTHON), help="python of a venv with dvc")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs of each command (after 2 warm-ups)")
    parser.add_argument("--keel-only", action="store_true", help="no peers (a quick look at keel's own figures)")
    parser.add_argument("--json", metavar="PATH", help="also write every timing as JSON")
    parser.add_argument("--tmpdir", help="where the repositories go (default: the system temp dir)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    # Absolute, not resolved: a venv's python is a symlink that must stay in its venv.
    keel_python = os.path.abspath(args.keel_python)
    keel = str(Path(keel_python).with_name("keel"))
    mlflow_python = os.path.abspath(args.mlflow_python)
    dvc_python = os.path.abspath(args.dvc_python)
    have_mlflow = Path(mlflow_python).exists() and not args.keel_only
    have_dvc = Path(dvc_python).exists() and not args.keel_only
    _keel_bytecode(keel_python)

    base = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "MLFLOW_", "DVC_"))}
    base.pop("COLUMNS", None)  # piped output, printed whole, as a script reading it gets it
    keel_env = dict(base)
    mlflow_env = {**base, **MLFLOW_ENV}
    mlflow_env.pop("PYTHONPATH", None)
    dvc_env = {**base, **DVC_ENV}
    dvc_env.pop("PYTHONPATH", None)

    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-cli-", dir=args.tmpdir))
    started = time.perf_counter()
    try:
        keel_repo, dvc_repo = tmp / "keel", tmp / "dvc"
        print("  .. setting up keel (10 runs, a prompt, 5 tracked files)", file=sys.stderr)
        setup_keel(keel_repo, keel, keel_python, keel_env)
        commands = [
            Command("floor", "python -c pass", [keel_python, "-c", "pass"], tmp, keel_env),
            Command("import", "python -c 'import keel'", [keel_python, "-c", "import keel"], tmp, keel_env),
            Command("help", "keel --help", [keel, "--help"], keel_repo, keel_env),
            Command("version", "keel --version", [keel, "--version"], keel_repo, keel_env),
            Command("runs_list", f"keel runs list ({N_RUNS} runs)", [keel, "runs", "list"], keel_repo, keel_env),
            Command("runs_list_tty", "  on a terminal", [keel, "runs", "list"], keel_repo, keel_env, terminal=True),
            Command(
                "data_status", f"keel data status ({N_FILES} files)", [keel, "data", "status"], keel_repo, keel_env
            ),
            Command(
                "prompts_show", f"keel prompts show {PROMPT}", [keel, "prompts", "show", PROMPT], keel_repo, keel_env
            ),
            Command(
                "prompts_show_tty",
                "  on a terminal",
                [keel, "prompts", "show", PROMPT],
                keel_repo,
                keel_env,
                terminal=True,
            ),
        ]
        peers: dict[str, list[Command]] = {}
        if have_mlflow:
            print("  .. setting up MLflow (10 runs, SQLite store)", file=sys.stderr)
            mlflow = str(Path(mlflow_python).with_name("mlflow"))
            experiment = setup_mlflow(tmp / "mlflow", mlflow_python, mlflow_env)
            listing = ["runs", "list", "--experiment-id", experiment]
            for key, label, argv in (
                ("help", "mlflow --help", [mlflow, "--help"]),
                ("version", "mlflow --version", [mlflow, "--version"]),
                ("runs_list", "mlflow " + " ".join(listing), [mlflow, *listing]),
            ):
                peers.setdefault(key, []).append(Command(key, label, argv, tmp / "mlflow", mlflow_env))
        if have_dvc:
            print("  .. setting up DVC (5 tracked files)", file=sys.stderr)
            dvc = str(Path(dvc_python).with_name("dvc"))
            setup_dvc(dvc_repo, dvc, dvc_env)
            for key, label, argv in (
                ("help", "dvc --help", [dvc, "--help"]),
                ("version", "dvc --version", [dvc, "--version"]),
                ("data_status", "dvc status", [dvc, "status"]),
            ):
                peers.setdefault(key, []).append(Command(key, label, argv, dvc_repo, dvc_env))
        everything = commands + [c for group in peers.values() for c in group]
        for command in everything:  # warm-up: caches as a user's second command has them
            for _ in range(2):
                run_with_usage(command)
        for round_ in range(args.repeats):
            print(f"\r  .. round {round_ + 1}/{args.repeats}", end="", file=sys.stderr, flush=True)
            for command in everything:
                wall, cpu = run_with_usage(command)
                command.wall.append(wall)
                command.cpu.append(cpu)
        print(file=sys.stderr)
        versions = {
            "keel": run([keel, "--version"], tmp, keel_env).strip().replace("keel ", ""),
            "mlflow": run([str(Path(mlflow_python).with_name("mlflow")), "--version"], tmp, mlflow_env).strip()
            if have_mlflow
            else None,
            "dvc": run([str(Path(dvc_python).with_name("dvc")), "--version"], tmp, dvc_env).strip()
            if have_dvc
            else None,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - started

    print()
    for text in machine_lines({}, tmp)[:2]:  # the machine and the temp folder (tools: the next line)
        print(text)
    shown = [f"keel {versions['keel']} (python {platform.python_version()})"]
    shown += [
        f"{label} {versions[name].split()[-1]}"
        for name, label in (("mlflow", "MLflow"), ("dvc", "DVC"))
        if versions[name]
    ]
    print(f"{'; '.join(shown)}; {args.repeats} timed runs per command after 2 warm-ups; total {total:.0f} s")
    print()
    headers = ["command", "median", "p90", "cpu", "peer", "median", "p90", "cpu", "peer/keel", "target", "keel meets?"]
    rows = []
    for command in commands:
        own = command.stats()
        assert own is not None
        target = TARGETS.get(command.key)
        met = "-" if target is None else ("yes" if own["median"] <= target else "NO")
        mates = peers.get(command.key) or [None]
        for i, peer in enumerate(mates):
            other = peer.stats() if peer else None
            first = i == 0
            rows.append(
                [
                    command.label if first else "",
                    fmt_ms(own["median"]) if first else "",
                    fmt_ms(own["p90"]) if first else "",
                    fmt_ms(own["cpu"]) if first else "",
                    peer.label if peer else "",
                    fmt_ms(other["median"]) if other else "",
                    fmt_ms(other["p90"]) if other else "",
                    fmt_ms(other["cpu"]) if other else "",
                    fmt_ratio(other["median"] / own["median"]) if other else "",
                    (f"<= {target:.0f} ms" if target else "") if first else "",
                    met if first else "",
                ]
            )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    align = ["<", ">", ">", ">", "<", ">", ">", ">", ">", "<", "<"]

    def line(cells: list[str]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths, strict=True)).rstrip()

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    print()
    print("median, p90: wall clock of the whole process; cpu: median user + system time")
    print("peer/keel: how many times longer the peer's command takes (medians)")
    if args.json:
        doc = {
            "versions": versions,
            "repeats": args.repeats,
            "targets_ms": TARGETS,
            "commands": {
                c.label: {"key": c.key, "wall_ms": c.wall, "cpu_ms": c.cpu, **(c.stats() or {})} for c in everything
            },
        }
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
