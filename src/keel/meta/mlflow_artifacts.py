"""The rows of ``mlflow_artifacts``: files MLflow's artifact proxy keeps at paths that are
not a keel run's, each a path and the content-addressed object it holds (the use cases are
:mod:`keel.services.mlflow_artifacts`)."""

from __future__ import annotations

from keel.meta.engine import Database

__all__ = ["MlflowArtifactRows"]

_SQL_DELETE = "DELETE FROM mlflow_artifacts WHERE path = ?"
_SQL_INSERT = "INSERT INTO mlflow_artifacts (path, oid, size, created_at) VALUES (?, ?, ?, ?)"
_SQL_GET = "SELECT oid, size FROM mlflow_artifacts WHERE path = ?"
_SQL_ALL = "SELECT path, size FROM mlflow_artifacts"
_SQL_UNDER = "SELECT path, size FROM mlflow_artifacts WHERE path LIKE ? ESCAPE '\\'"


def _under(folder: str) -> str:
    """The LIKE pattern of every path below ``folder/`` (its wildcards escaped)."""
    return folder.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"


class MlflowArtifactRows:
    """The ``mlflow_artifacts`` rows of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, path: str, oid: str, size: int, now: int) -> None:
        """Keep object ``oid`` at ``path``, replacing what the path held."""
        with self.db.write() as conn:
            conn.execute(_SQL_DELETE, (path,))
            conn.execute(_SQL_INSERT, (path, oid, size, now))

    def get(self, path: str) -> tuple[str, int] | None:
        """``(oid, size)`` of the file at ``path``, or None."""
        with self.db.read() as conn:
            row = conn.execute(_SQL_GET, (path,)).first()
        return None if row is None else (row.oid, int(row.size))

    def files(self, folder: str = "") -> list[tuple[str, int]]:
        """``(path, size)`` of every file, or of those whose path may lie under ``folder/``
        (a LIKE narrows: callers check the exact prefix)."""
        with self.db.read() as conn:
            if not folder:
                return [(row.path, row.size) for row in conn.execute(_SQL_ALL)]
            return [(row.path, row.size) for row in conn.execute(_SQL_UNDER, (_under(folder),))]
