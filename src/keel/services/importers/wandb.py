"""Import W&B runs from the folders ``wandb`` writes (offline runs, or the local copy of online ones).

``keel import wandb --from wandb/`` finds every ``*/run-<id>.wandb`` below the
folder (see :mod:`.wandb_records` for how it is read) and writes each run as
one keel run, in one transaction:

- the W&B project -> the keel project; the display name -> the run name;
  ``wandb.run_id``, ``wandb.project``, ``wandb.entity``, ``wandb.group``,
  ``wandb.job_type``, ``wandb.notes`` and ``wandb.tags`` (comma-separated) -> tags;
- config -> params (nested values flattened: ``rag.top_k``; ``_wandb`` left out),
  and the whole config as the artifact ``wandb-config.json`` (a value keel's
  params cannot hold, such as a key with other characters or a value over
  64,000 characters, is there only);
- history -> metric histories: every numeric value of every logged row, at the
  row's ``_step`` and ``_timestamp`` (nested dicts flattened with ``.``);
- summary -> the final value of numeric keys that were never in the history
  (as a metric at the last step), and ``summary.<key>`` tags for text and
  booleans;
- ``wandb.Table`` values -> keel tables (``tables/<key>.json``, the last one
  logged under a key);
- every file under the run's ``files/`` folder -> an artifact at the same path;
- exit code 0 -> ``finished``, another -> ``failed``, none (a crash) -> ``killed``.

The keel run id is derived from ``entity/project/run id``, so a run is
imported once however often the import runs.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from keel.core.batch import WriteBatch
from keel.core.hashing import canonical_json
from keel.core.table import Table
from keel.core.values import encode_param, flatten
from keel.errors import InvalidInput, NotFound
from keel.services.importers.ledger import ImportSummary, Ledger, Progress
from keel.services.importers.naming import derived_run_id, safe_name
from keel.services.importers.wandb_records import WandbRun, read_run
from keel.services.tracking import TrackingService, table_path
from keel.services.workspace import Store

__all__ = ["CONFIG_ARTIFACT", "WandbImporter", "find_run_files", "import_wandb"]

_DEFAULT_PROJECT = "uncategorized"  # what W&B calls a run's project when none was given
#: The artifact holding a run's whole W&B config (nested, as logged).
CONFIG_ARTIFACT = "wandb-config.json"


def find_run_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Every ``run-<id>.wandb`` of the run folders in ``folder`` (a ``wandb/`` folder or
    one run's folder); InvalidInput if there is none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise InvalidInput(f"no folder at {root}", "give the wandb/ folder your runs wrote (wandb.init(dir=...))")
    found = sorted(root.glob("run-*.wandb")) + sorted(root.glob("*/run-*.wandb"))
    found = [p for p in found if not p.parent.is_symlink()]  # wandb/latest-run points at a real one
    if not found:
        raise InvalidInput(
            f"{root} is not a W&B folder (no */run-*.wandb inside)",
            "give the wandb/ folder that wandb.init(mode='offline') wrote",
        )
    return found


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _numbers(row: dict[str, Any]) -> list[tuple[str, float]]:
    """Numeric leaves of a logged row (``_``-prefixed bookkeeping and media left out)."""
    out = []
    for key, value in row.items():
        if key.startswith("_"):
            continue
        if isinstance(value, dict):
            if "_type" in value:
                continue
            out += [(f"{key}.{k}", v) for k, v in _numbers(value)]
            continue
        number = _number(value)
        if number is not None:
            out.append((key, number))
    return out


class WandbImporter:
    """One import of the W&B runs below one folder into one keel store."""

    def __init__(self, store: Store, folder: str | os.PathLike[str], progress: Progress | None = None) -> None:
        self.files = find_run_files(folder)
        self.location = str(Path(folder).expanduser().resolve())
        self.tracking = TrackingService(store)
        self.ledger = Ledger(store, "wandb")
        self.summary = ImportSummary("wandb", self.location)
        self.progress = progress

    def run(self) -> ImportSummary:
        """Import every run; return the counts."""
        total = len(self.files)
        if self.progress is not None:
            self.progress(0, total)
        for done, path in enumerate(self.files, 1):
            self._import(path)
            if self.progress is not None:
                self.progress(done, total)
        return self.summary

    def _import(self, path: Path) -> None:
        run = read_run(path)
        source_id = f"{run.entity}/{run.project}/{run.run_id}"
        run_id = derived_run_id("wandb", source_id)
        if self.ledger.known("run", [source_id]):
            self.summary.count("run", False)
            return
        if self.tracking.repo.get_runs([run_id]):  # written, but the ledger row was not: finish it
            self.ledger.record("run", source_id, run_id, str(path.parent))
            self.summary.count("run", False)
            return
        batch, counts = self._batch(run, run_id, path.parent)
        self.tracking.write_batch(batch)  # one transaction: the run is complete or absent
        self.ledger.record("run", source_id, run_id, str(path.parent))
        self.summary.count("run", True)
        for kind, n in counts.items():
            self.summary.count(kind, True, n)

    def _batch(self, run: WandbRun, run_id: str, folder: Path) -> tuple[WriteBatch, dict[str, int]]:
        start = run.start_ms or _mtime_ms(folder)
        project = safe_name(run.project or _DEFAULT_PROJECT, _DEFAULT_PROJECT)
        name = safe_name(run.name or run.run_id, run.run_id)
        context = {"imported_from": {"system": "wandb", "location": str(folder), "run_id": run.run_id}}
        batch = WriteBatch(new_runs=[(run_id, project, name, start, None, canonical_json(context).decode())])
        config = {k: v for k, v in run.config.items() if k != "_wandb"}
        refused = 0
        for key, value in flatten(config):
            try:
                vtype, text = encode_param(key, value)
            except InvalidInput:  # a key keel does not allow, or a value over the param size limit
                refused += 1
                continue
            batch.params.append((run_id, key, vtype, text, True))
        tags = {
            "wandb.run_id": run.run_id,
            "wandb.project": run.project,
            "wandb.entity": run.entity,
            "wandb.group": run.group,
            "wandb.job_type": run.job_type,
            "wandb.notes": run.notes,
            "wandb.tags": ",".join(run.tags),
        }
        last_step, last_ms, seen = 0, start, set()
        tables: dict[str, str] = {}  # key -> media path of the last table logged under it
        for row in run.history:
            step = int(row.get("_step", last_step))
            stamp = _number(row.get("_timestamp"))
            at = int(stamp * 1000) if stamp is not None else last_ms
            for key, value in _numbers(row):
                batch.metrics.append((run_id, key, value, step, at))
                seen.add(key)
            for key, value in row.items():
                if isinstance(value, dict) and value.get("_type") == "table-file" and value.get("path"):
                    tables[key] = str(value["path"])
            last_step, last_ms = step, at
        end = start + int(run.runtime_s * 1000) if run.runtime_s else last_ms
        for key, value in run.summary.items():
            if key.startswith("_") or key in seen:
                continue
            number = _number(value)
            if number is not None:
                batch.metrics.append((run_id, key, number, last_step, end))
            elif isinstance(value, str | bool):
                tags[f"summary.{key}"] = json.dumps(value) if isinstance(value, bool) else value
        batch.tags = [(run_id, k, v) for k, v in sorted(tags.items()) if v]
        files = folder / "files"
        # wandb.save() leaves links there to the files it named, wherever they are: follow them.
        artifacts = self.tracking.collect_artifacts(files, links_out=True) if files.is_dir() else []
        batch.artifacts = [(run_id, p, oid, size, "file", end) for p, oid, size in artifacts]
        for key, media in sorted(tables.items()):
            table = self._table(files / media, key, run.run_id)
            data = table.to_bytes()
            batch.artifacts.append((run_id, table_path(key), self.tracking.store_bytes(data), len(data), "table", end))
        if run.exit_code is None:
            batch.run_ends.append((run_id, "killed", end, "the W&B run did not finish (no exit record)"))
        elif run.exit_code == 0:
            batch.run_ends.append((run_id, "finished", end, None))
        else:
            batch.run_ends.append((run_id, "failed", end, f"exit code {run.exit_code}"))
        if config:  # the whole config as W&B had it, also what no param could hold
            data = canonical_json(config)
            oid = self.tracking.store_bytes(data)
            batch.artifacts.append((run_id, CONFIG_ARTIFACT, oid, len(data), "file", start))
        counts = {"metric value": len(batch.metrics), "artifact": len(artifacts), "table": len(tables)}
        if refused:
            counts["config value only in " + CONFIG_ARTIFACT] = refused
        return batch, counts

    @staticmethod
    def _table(path: Path, key: str, run_id: str) -> Table:
        """A ``*.table.json`` file W&B wrote, as a keel table."""
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound(
                f"table {key!r} of W&B run {run_id} is missing: no file {path}",
                "restore the run's files/ folder, then run the import again",
            ) from None
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read table {key!r} of W&B run {run_id} ({path}): {exc}") from None
        try:
            return Table.build(doc["columns"], [_plain_row(r) for r in doc.get("data", [])])
        except (KeyError, TypeError) as exc:
            raise InvalidInput(f"table file {path} is not a W&B table ({exc})", "restore it from a backup") from None


def _plain_row(row: list[Any]) -> list[Any]:
    """W&B writes NaN as a float; keel tables hold JSON, so NaN becomes None."""
    return [None if isinstance(v, float) and math.isnan(v) else v for v in row]


def _mtime_ms(path: Path) -> int:
    """``path``'s modification time in ms (a run without a start time started no later)."""
    return int(path.stat().st_mtime * 1000)


def import_wandb(store: Store, folder: str | os.PathLike[str], progress: Progress | None = None) -> ImportSummary:
    """Import the W&B runs written below ``folder`` (``wandb/``). Idempotent and resumable."""
    return WandbImporter(store, folder, progress).run()
