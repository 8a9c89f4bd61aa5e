"""Files MLflow's artifact proxy keeps at paths that are not a keel run's.

MLflow's artifact proxy (``/api/2.0/mlflow-artifacts/artifacts/<path>``) serves any
relative path under its artifact root. A path of a keel run
(``<experiment>/<run_id>/artifacts/...``) is that run's artifact; any other path
(``dir/a.txt``, a logged model's ``<experiment>/models/<id>/artifacts/...``) is a row
of ``mlflow_artifacts``: the path and the content-addressed object it holds (on disk or
S3, like every keel object). Putting a path again replaces what it holds, as MLflow
overwrites the file; objects are never modified (the old one is left to gc).
"""

from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from typing import Any

from keel.core.entities import now_ms
from keel.errors import InvalidInput
from keel.meta.mlflow_artifacts import MlflowArtifactRows

__all__ = ["MAX_PATH_LENGTH", "MlflowArtifacts", "ProxiedFile", "mime_type"]

#: ``mlflow_artifacts.path`` holds at most this many characters.
MAX_PATH_LENGTH = 1000

# File types MLflow serves as text/plain whatever the system's MIME table says
# (mlflow.utils.mime_type_utils), so a browser shows them instead of running them.
_TEXT_EXTENSIONS = frozenset(
    "txt log err cfg conf cnf cf ini properties prop hocon toml yaml yml xml json js py py3 csv tsv md rst ipynb "
    "MLmodel mlproject".split()
)


def mime_type(name: str) -> str:
    """The Content-Type MLflow's server gives a download named ``name``: ``text/plain`` for its
    text types (``MLmodel`` and ``mlproject`` too), else the system's guess, else
    ``application/octet-stream``; never what the request asked for."""
    base = os.path.basename(name)
    extension = os.path.splitext(base)[1].replace(".", "") or base
    if extension in _TEXT_EXTENSIONS:
        return "text/plain"
    guessed, _encoding = mimetypes.guess_type(base)
    return guessed or "application/octet-stream"


@dataclass(frozen=True)
class ProxiedFile:
    """A file kept at ``path``: its object and size."""

    path: str
    oid: str
    size: int


class MlflowArtifacts:
    """The ``mlflow_artifacts`` rows of one store."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.rows = MlflowArtifactRows(db)

    @staticmethod
    def check_path(path: str) -> str:
        """``path`` if a row can hold it (the caller has normalised it)."""
        if len(path) > MAX_PATH_LENGTH:
            raise InvalidInput(
                f"artifact path of {len(path)} characters is over the limit of {MAX_PATH_LENGTH}", "use a shorter path"
            )
        return path

    def put(self, path: str, oid: str, size: int) -> None:
        """Keep object ``oid`` at ``path`` (replacing what the path held)."""
        self.check_path(path)
        self.rows.put(path, oid, size, now_ms())

    def get(self, path: str) -> ProxiedFile | None:
        """The file at ``path``, or None."""
        found = self.rows.get(path)
        return None if found is None else ProxiedFile(path, *found)

    def is_folder(self, path: str) -> bool:
        """True if some file lies under ``path/``."""
        return any(item.startswith(path + "/") for item, _size in self.rows.files(path))

    def children(self, folder: str) -> list[dict[str, Any]]:
        """What lies directly in ``folder`` ("" = the root), as MLflow lists it: names relative
        to ``folder``, folders first met as ``is_dir``, files with their size (an empty file
        has none, as MLflow's JSON leaves a zero out)."""
        rows = self.rows.files(folder)
        seen: dict[str, dict[str, Any]] = {}
        skip = len(folder) + 1 if folder else 0
        for path, size in rows:
            if folder and not path.startswith(folder + "/"):
                continue
            name, slash, _rest = path[skip:].partition("/")
            if slash:
                seen.setdefault(name, {"path": name, "is_dir": True})
            else:
                seen[name] = {"path": name, "is_dir": False, **({"file_size": int(size)} if size else {})}
        return [seen[name] for name in sorted(seen)]
