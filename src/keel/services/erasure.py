"""What the erasure operations share: the checks before anything is deleted, the immutable
versions made from erased records, and the removal of the objects they leave unreferenced.

The operations themselves live with their records (:meth:`ConversationService.delete
<keel.services.conversations.ConversationService.delete>`, :meth:`TraceService.delete
<keel.services.traces.TraceService.delete>`, ``LlmService.delete_calls``); each deletes in
SQL by the compiled filter, records one audit row (:mod:`keel.meta.erasures`) in the same
transaction, then scrubs the database (:meth:`keel.meta.engine.Database.scrub`).

**Derived versions.** Exported conversations and traces reach datasets as files: ``keel
conversations export`` / ``keel traces export`` write JSON Lines that ``keel data add`` then
registers; nothing in the metadata links a dataset version to the records it was made from.
So :func:`derived_datasets` looks in the content: the dataset versions registered after the
oldest erased record was written (an export cannot hold a record written after it), each a
JSON Lines file of at most :data:`SCAN_BYTES`, are read and a line whose ``conversation_id``
(conversations) or ``metadata.trace_id`` (traces) is an erased one marks the version; the runs
that used it (lineage) are named with it. Folder datasets, larger files and knowledge-base
versions are not searched (docs/erasure.md).
Versions are immutable: they are listed, never rewritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from keel.core.entities import format_time
from keel.errors import InvalidInput, NotFound
from keel.meta import datasets as dataset_rows
from keel.services.workspace import Store

__all__ = [
    "SCAN_BYTES",
    "check_request",
    "derived_datasets",
    "refuse_everything",
    "remove_objects",
    "describe_request",
]

#: Dataset files larger than this are not searched for erased records.
SCAN_BYTES = 64 << 20
#: At most this many ids in one erasure by ids (more: use a filter).
MAX_IDS = 100_000


def check_request(
    kind: str,
    ids: Sequence[str] | None,
    filter: str | None,
    since: Any,
    until: Any,
    reason: str,
) -> list[str] | None:
    """The ids as a list (None when erasing by filter); InvalidInput for a request that mixes
    ids with a filter, names no id, or gives an unknown reason."""
    from keel.core.erasure import REASONS

    if reason not in REASONS:
        raise InvalidInput(f"unknown erasure reason {reason!r}", f"use one of {', '.join(REASONS)}")
    if filter is not None and (not isinstance(filter, str) or not filter.strip()):
        raise InvalidInput(f"invalid filter {filter!r}"[:200], "give a filter, e.g. \"metadata.user_id = 'u-42'\"")
    if ids is None:
        return None
    if isinstance(ids, str):
        ids = [ids]
    listed = list(ids)
    if filter is not None or since is not None or until is not None:
        raise InvalidInput(
            f"erase {kind} either by ids or by a filter and time range, not both",
            "drop the ids, or the filter and --since/--until",
        )
    if not listed:
        raise InvalidInput(f"no {kind} ids given", "give at least one id, or a filter")
    if len(listed) > MAX_IDS:
        raise InvalidInput(f"{len(listed):,} ids in one erasure", f"give at most {MAX_IDS:,}, or erase by a filter")
    for value in listed:
        if not isinstance(value, str) or not value:
            raise InvalidInput(f"invalid id {value!r}"[:200], "ids are non-empty strings")
    return list(dict.fromkeys(listed))


def refuse_everything(kind: str, matched: int, total: int, everything: bool, where: str = "the store") -> None:
    """Refuse (InvalidInput) an erasure whose filter matches every record of ``where`` unless
    ``everything`` (``all=True``, ``--all``) says that is meant: a filter that matches all is
    more often a mistake (``!=`` for ``=``, a forgotten condition) than a wish."""
    if matched and matched >= total and not everything:
        raise InvalidInput(
            f"the filter matches every {kind} record in {where} ({matched:,}); nothing was deleted",
            "narrow the filter, or pass all=True (--all) to erase them all",
        )


def unknown_ids(kind: str, missing: Sequence[str]) -> NotFound:
    """The NotFound of an erasure by ids naming records that do not exist (nothing deleted)."""
    shown = ", ".join(repr(m) for m in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return NotFound(
        f"no {kind} {shown}; nothing was deleted",
        f"check the ids (list them with 'keel {kind} list'); an erasure by ids deletes only when every id exists",
    )


def describe_request(ids: Sequence[str] | None, filter: str | None, since: Any, until: Any) -> str:
    """The filter text an audit row keeps: the filter and time range as given (never the ids)."""
    if ids is not None:
        return ""
    parts = [filter.strip()] if filter else []
    if since is not None:
        parts.append(f"since {since}")
    if until is not None:
        parts.append(f"until {until}")
    return "; ".join(parts)


def remove_objects(store: Store, oids: Iterable[str]) -> tuple[int, int]:
    """Delete those of ``oids`` that no remaining record references, at once (erased content
    must be gone when the erasure returns, not at the next gc): ``(objects removed, bytes)``.

    The check is garbage collection's own (:func:`keel.services.gc.referenced`: every kind of
    record, span payloads included, and the trees and manifests they reach): objects are
    shared by content, so a payload's bytes may also be another span's, an artifact's or a
    dataset file's.
    """
    from keel.services import gc

    wanted = set(oids)
    if wanted:
        wanted -= gc.referenced(store, wanted)
    if not wanted:
        return 0, 0
    present = store.objects.exists_many(wanted)
    freed = store.objects.delete_many(present) if present else 0
    return len(present), int(freed)


def derived_datasets(
    store: Store, earliest_ms: int | None, ids: Callable[[], Iterable[str]], key: Callable[[Any], Any]
) -> list[dict[str, str]]:
    """Dataset versions that include erased records (see the module docstring).

    ``earliest_ms``: when the oldest erased record was written (None: nothing erased);
    ``ids()``: the erased ids (called only when a version has to be searched); ``key(line)``:
    the id a parsed JSON line carries, or None.
    """
    if earliest_ms is None:
        return []
    with store.db.read() as conn:
        rows = dataset_rows.versions(conn, None)
    candidates = [
        r
        for r in rows
        if r[2] == "file" and int(r[6]) >= earliest_ms and int(r[3]) <= SCAN_BYTES and str(r[0]).endswith(".jsonl")
    ]
    if not candidates:
        return []
    erased = set(ids())
    found: list[dict[str, str]] = []
    for path, oid, _kind, _size, _files, _commit, created in candidates:
        try:
            data = store.objects.get_bytes(oid)
        except Exception:  # noqa: BLE001 - unreadable: cannot tell, say nothing of it
            continue
        hits = 0
        for line in data.splitlines():
            try:
                value = key(json.loads(line))
            except (ValueError, TypeError, AttributeError):
                continue
            if isinstance(value, str) and value in erased:
                hits += 1
        if hits:
            why = f"{hits} line(s) exported from erased records (registered {format_time(int(created))})"
            with store.db.read() as conn:
                runs = [r[2] for r in dataset_rows.runs_of_versions(conn, str(path)) if r[1] == oid]
            if runs:
                shown = ", ".join(run[:8] for run in runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
                why += f"; used by run(s) {shown}"
            found.append({"kind": "dataset", "id": str(path), "version": str(oid), "why": why})
    return found
