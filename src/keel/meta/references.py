"""Every object id the metadata references, by source: what garbage collection must keep.

Objects are shared by content (an artifact, a data file and a KB document may be one
object), so an object may go only when *no* source names it. Each source below is one
table column (or a JSON field of one) that holds object ids; :func:`referenced` reads
them all, :func:`referenced_among` asks about given oids only. What these objects reach
in turn (a data tree's files and packs, a KB manifest's documents) is read from the
objects themselves by :mod:`keel.services.gc`: :func:`data_trees` lists the trees, and
``kb_versions.manifest_oid`` the manifests.

Sources (who writes them):

- ``artifacts.oid``: run artifacts (tracking, MLflow's run artifacts);
- ``mlflow_artifacts.oid``: files MLflow's artifact proxy keeps outside runs, logged
  models' files;
- ``dataset_versions.oid``: every ``keel data add`` (a file, or a folder's tree) and MLflow
  evaluation datasets' records;
- ``mlflow_datasets.oid``: an MLflow dataset's current records;
- ``llm_calls.oid``: the pack holding a recorded request and response;
- ``kb_versions.manifest_oid`` / ``chunks_oid`` / ``index_oid``: a KB version's objects;
- ``kb_staged.document_oid``: documents added and not yet committed;
- ``kb_embeddings.pack_oid``: embedding matrices reused by later commits;
- ``config_snapshots.hash``: resolved configuration snapshots;
- ``model_versions.source``: any object id a registered model version's source names;
- ``spans.inputs`` / ``spans.outputs``: payloads over the inline size, stored as
  ``{"$object": oid, "size": n}``;
- ``object_pins.oid``: objects ``keel data push`` sent to (or found on) a keel server: the
  versions that name them are in the pushing client's database.

Functions take a connection of the caller's transaction (``db.read()``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from keel.meta.dbapi import Connection

__all__ = ["SOURCES", "Source", "data_trees", "pin", "referenced", "referenced_among", "unpin"]


@dataclass(frozen=True)
class Source:
    """One place object ids are kept: a table, a column, how its values hold them."""

    name: str  # ``table.column``
    table: str
    column: str
    form: str = "oid"  # "oid": the value is an oid; "text": oids appear in text; "payload": {"$object": oid}
    where: str = ""  # an extra condition

    def select(self) -> str:
        """The query that lists this source's values."""
        conditions = [f"{self.column} IS NOT NULL"]
        if self.form == "payload":
            conditions.append(f"{self.column} LIKE '{{\"$object\":%'")
        if self.where:
            conditions.append(self.where)
        distinct = "DISTINCT " if self.form == "oid" else ""
        return f"SELECT {distinct}{self.column} FROM {self.table} WHERE {' AND '.join(conditions)}"


SOURCES: tuple[Source, ...] = (
    Source("artifacts.oid", "artifacts", "oid"),
    Source("mlflow_artifacts.oid", "mlflow_artifacts", "oid"),
    Source("dataset_versions.oid", "dataset_versions", "oid"),
    Source("mlflow_datasets.oid", "mlflow_datasets", "oid"),
    Source("llm_calls.oid", "llm_calls", "oid"),
    Source("kb_versions.manifest_oid", "kb_versions", "manifest_oid"),
    Source("kb_versions.chunks_oid", "kb_versions", "chunks_oid"),
    Source("kb_versions.index_oid", "kb_versions", "index_oid"),
    Source("kb_staged.document_oid", "kb_staged", "document_oid"),
    Source("kb_embeddings.pack_oid", "kb_embeddings", "pack_oid"),
    Source("config_snapshots.hash", "config_snapshots", "hash"),
    Source("model_versions.source", "model_versions", "source", form="text"),
    Source("spans.inputs", "spans", "inputs", form="payload"),
    Source("spans.outputs", "spans", "outputs", form="payload"),
    Source("object_pins.oid", "object_pins", "oid"),
)

_OID = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
_BATCH = 500  # oids per IN (...) list


def _oids_in(source: Source, values: Iterable[object]) -> Iterator[str]:
    for value in values:
        if not isinstance(value, str):
            continue
        if source.form == "oid":
            yield value
        elif source.form == "text":
            yield from _OID.findall(value)
        else:
            try:
                payload = json.loads(value)
            except ValueError:
                continue
            oid = payload.get("$object") if isinstance(payload, dict) else None
            if isinstance(oid, str):
                yield oid


def referenced(conn: Connection) -> dict[str, set[str]]:
    """``{source name: the oids it references}`` for every source of :data:`SOURCES`."""
    out: dict[str, set[str]] = {}
    tables = set(conn.table_names())
    for source in SOURCES:
        if source.table not in tables:
            out[source.name] = set()
            continue
        out[source.name] = set(_oids_in(source, conn.execute(source.select()).scalars()))
    return out


def referenced_among(conn: Connection, oids: Iterable[str]) -> dict[str, set[str]]:
    """Like :func:`referenced`, for the given ``oids`` only (an indexed lookup per batch where
    the column holds oids; text and JSON sources are read whole)."""
    wanted = sorted(set(oids))
    out: dict[str, set[str]] = {}
    tables = set(conn.table_names())
    for source in SOURCES:
        found: set[str] = set()
        if source.table in tables and wanted:
            if source.form == "oid":
                for i in range(0, len(wanted), _BATCH):
                    batch = wanted[i : i + _BATCH]
                    marks = ", ".join("?" * len(batch))
                    query = f"SELECT DISTINCT {source.column} FROM {source.table} WHERE {source.column} IN ({marks})"
                    found.update(conn.execute(query, tuple(batch)).scalars())
            else:
                found = set(_oids_in(source, conn.execute(source.select()).scalars())) & set(wanted)
        out[source.name] = found
    return out


def data_trees(conn: Connection) -> set[str]:
    """The oids of registered dataset versions that are folders (tree objects)."""
    return set(conn.execute("SELECT DISTINCT oid FROM dataset_versions WHERE kind = 'dir'").scalars())


# -- pins: objects a keel server received for clients -----------------------------------------------
_SQL_PIN_SQLITE = "INSERT INTO object_pins (oid, reason, created_at) VALUES (?, ?, ?) ON CONFLICT (oid) DO NOTHING"


def pin(conn: Connection, oids: Iterable[str], reason: str, now: int) -> int:
    """Record ``oids`` as kept for ``reason`` (``"pushed"``: received through the objects API);
    an oid pinned already keeps its first row. How many rows were new."""
    new = 0
    for oid in dict.fromkeys(oids):
        new += conn.execute(_SQL_PIN_SQLITE, (oid, reason, now)).rowcount or 0
    return new


def unpin(conn: Connection, oids: Iterable[str]) -> int:
    """Forget the pins of ``oids``; how many there were."""
    gone = 0
    for oid in dict.fromkeys(oids):
        gone += conn.execute("DELETE FROM object_pins WHERE oid = ?", (oid,)).rowcount or 0
    return gone
