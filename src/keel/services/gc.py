"""Garbage collection of the object store: remove objects no live record references.

A mark-and-sweep that is safe while other processes write, as git's prune is:

1. **List** every object *first* (S3: with its size and LastModified; a local store by
   name, its times read after the mark for unreferenced objects only, which is later and so
   safer). An object younger than the grace period (``grace_s``, default an hour) is
   kept whatever references it: it may be one a writer just stored, or found stored
   and freshened (every put path does that, :meth:`ObjectStore.freshened`), and is
   about to reference in a row gc has not seen.
2. **Mark**: every object id the database references (:mod:`keel.meta.references`, one
   source per column), plus what those objects reach (a data version's tree -> its
   files and packs; a KB manifest -> its documents and data sources), plus, in a
   workspace, every object its data layer owns (``.keel/data/state.db``: pulled data is
   named by pointer files in git, not by rows; ``keel data gc`` collects those).
3. **Mark again**, just before deleting: the references written since the first mark
   (a run that finished logging, a KB commit) to the old objects gc is about to delete.
4. **Sweep**: only old, unreferenced objects, through :meth:`ObjectStore.prune`, which
   re-checks each one's time as close to the delete as the store allows (a writer that
   freshened it since the listing keeps it; on a local store with no window at all).

Only unreferenced objects are ever deleted, one at a time (a local store) or a batch of
1,000 (S3), so a gc killed at any moment leaves a store where every referenced object is
present: ``keel verify`` passes. A local object being deleted is renamed into ``tmp/``
first; one left there by a killed gc is put back by the next gc or sweep.

Stale temporary files go too (:func:`keel.services.leftovers.sweep_store`: a local store's
``tmp/`` files, S3's abandoned multipart uploads). docs/gc.md has the rest.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.core.data_tree import parse_tree
from keel.core.kb_manifest import KBManifest
from keel.errors import InvalidInput, NotFound
from keel.meta import references as refs
from keel.objects.base import ObjectInfo, ObjectStore
from keel.services import leftovers

if TYPE_CHECKING:
    from keel.services.workspace import Store

__all__ = ["GRACE_S", "GcReport", "collect", "parse_grace", "pin_pushed", "reachable", "referenced"]

log = logging.getLogger("keel.gc")

GRACE_S = 3600.0  # objects younger than this are never removed (git's prune expiry is two weeks)
_BATCH = 10_000  # objects handed to the store's prune at a time
_TREE_MAGIC = b"keel-tree 1\n"
_LISTED = 1000  # removed oids kept in the report (the count is exact)


@dataclass
class GcReport:
    """What a gc found and removed (with ``dry_run``: would remove)."""

    listed: int = 0  # objects in the store
    referenced: int = 0  # listed objects something references
    removed: int = 0
    bytes_freed: int = 0
    kept_young: int = 0  # unreferenced, but younger than the grace period
    kept_fresh: int = 0  # unreferenced and old when listed, then referenced (or, S3, freshened) before the delete
    grace_s: float = GRACE_S
    dry_run: bool = False
    by_source: dict[str, int] = field(default_factory=dict)  # oids each source references
    removed_oids: list[str] = field(default_factory=list)  # the first 1,000 removed
    tmp_files: int = 0  # stale temporary files removed
    tmp_bytes: int = 0
    aborted_uploads: int = 0  # abandoned S3 multipart uploads aborted
    restored: int = 0  # objects a killed gc had set aside, put back
    seconds: float = 0.0
    #: what the store's retention policies expired first (``keel gc`` applies them locally):
    #: one :class:`~keel.core.erasure.ErasureReport` per policy that matched
    expired: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what ``keel gc --json`` prints)."""
        found = dict(self.__dict__)
        found["expired"] = [report.to_dict() for report in self.expired]
        return found


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_grace(text: str | float) -> float:
    """A grace period as seconds: a number of seconds, or ``30m``, ``1h``, ``2d``, ``1w``."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        raw = str(text).strip().lower()
        unit = _UNITS.get(raw[-1:], 0) if raw else 0
        number = raw[:-1] if unit else raw
        try:
            value = float(number) * (unit or 1)
        except ValueError:
            raise InvalidInput(
                f"invalid grace period {raw[:40]!r}", "write e.g. 1h, 30m, 2d or a number of seconds"
            ) from None
    if not 0 <= value < 10 * 365 * 86_400:
        raise InvalidInput(f"invalid grace period {text!r}", "give 0 seconds or more (default 1h)")
    return value


# -- marking -------------------------------------------------------------------------------------------
def _head(objects: ObjectStore, oid: str, size: int) -> bytes:
    """The first ``size`` bytes of ``oid`` (b"" if it is absent), without reading all of it."""
    try:
        _length, chunks = objects.open_stream(oid, max(size, 1 << 12))
    except NotFound:
        return b""
    try:
        return next(iter(chunks), b"")[:size]
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _read(objects: ObjectStore, oid: str) -> bytes | None:
    try:
        return objects.get_bytes(oid)
    except NotFound:
        return None


def reachable(objects: ObjectStore, trees: Iterable[str], manifests: Iterable[str], done: set[str]) -> set[str]:
    """The objects that data trees and KB manifests name (files, packs, documents, data
    sources and, through those, their trees' objects). ``done`` holds the roots read
    already (it is updated): a second pass reads only new ones. A root that is absent
    names nothing (``keel verify`` reports it); one that is corrupt raises, since gc
    cannot know what it would have kept."""
    found: set[str] = set()
    pending_trees = [oid for oid in dict.fromkeys(trees) if oid not in done]
    for manifest_oid in dict.fromkeys(manifests):
        if manifest_oid in done:
            continue
        done.add(manifest_oid)
        data = _read(objects, manifest_oid)
        if data is None:
            continue
        manifest = KBManifest.parse(data, f"manifest {manifest_oid}")
        found.update(doc.id for doc in manifest.documents)
        for source in manifest.data:
            oid = str(source.get("oid", ""))
            found.add(oid)
            if oid not in done and _head(objects, oid, len(_TREE_MAGIC)) == _TREE_MAGIC:
                pending_trees.append(oid)
    for tree_oid in pending_trees:
        if tree_oid in done:
            continue
        done.add(tree_oid)
        data = _read(objects, tree_oid)
        if data is None:
            continue
        for entry in parse_tree(data, f"tree {tree_oid}").entries:
            found.add(entry.oid)  # a packed file's own oid too: it may be stored loose as well
            if entry.pack:
                found.add(entry.pack)
    return found


def _data_owned(store: Store) -> set[str]:
    """Every object the workspace's data layer wrote or fetched (``.keel/data/state.db``): data
    named only by pointer files (pulled from a remote, or added before its version was
    registered) is left to ``keel data gc``, which reads the pointers in git."""
    if store.root is None:
        return set()
    path = store.root / ".keel" / "data" / "state.db"
    if not path.is_file():
        return set()
    from keel.services.data_state import DataState

    state = DataState(path)
    try:
        return set(state.owned_objects())
    finally:
        state.close()


@dataclass
class _Marks:
    """What one mark pass found."""

    oids: set[str] = field(default_factory=set)
    by_source: dict[str, int] = field(default_factory=dict)
    roots_done: set[str] = field(default_factory=set)


def _mark(store: Store, marks: _Marks) -> _Marks:
    """Add every referenced oid to ``marks`` (roots already read are not read again)."""
    with store.db.read() as conn:
        found = refs.referenced(conn)
        trees = refs.data_trees(conn)
        manifests = found.get("kb_versions.manifest_oid", set())
    for name, oids in found.items():
        marks.by_source[name] = len(oids)
        marks.oids |= oids
    reached = reachable(store.objects, trees, manifests, marks.roots_done)
    marks.by_source["reached from trees and manifests"] = marks.by_source.get(
        "reached from trees and manifests", 0
    ) + len(reached - marks.oids)
    marks.oids |= reached
    owned = _data_owned(store)
    marks.by_source["data layer (.keel/data)"] = len(owned)
    marks.oids |= owned
    return marks


def referenced(store: Store, oids: Iterable[str]) -> set[str]:
    """Those of ``oids`` something references (a row, or an object reached from one): what
    purge and erasure ask before deleting objects that may be shared by content."""
    wanted = set(oids)
    if not wanted:
        return set()
    with store.db.read() as conn:
        direct = refs.referenced_among(conn, wanted)
    found = set().union(*direct.values()) & wanted
    rest = wanted - found
    if rest:
        found |= _mark(store, _Marks()).oids & rest
    return found


# -- collecting -----------------------------------------------------------------------------------------
def _sweep_leftovers(objects: ObjectStore, grace_s: float, report: GcReport) -> None:
    """Put back what a killed gc set aside, remove stale temporary files and abort abandoned
    uploads (never younger than the grace period, nor than the server's own sweep ages)."""
    restore = getattr(objects, "restore_pruned", None)
    if callable(restore):
        report.restored = restore()
    age = max(grace_s, leftovers.UPLOAD_AGE_S if objects.capabilities.multipart_put else leftovers.SPOOL_AGE_S)
    swept = leftovers.sweep_store(objects, age)
    report.tmp_files, report.tmp_bytes = swept.store_files, swept.store_bytes
    report.aborted_uploads = len(swept.uploads)


def collect(
    store: Store,
    *,
    grace_s: float = GRACE_S,
    dry_run: bool = False,
    now: float | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> GcReport:
    """Remove the objects of ``store`` that nothing references and that are older than
    ``grace_s`` seconds (see the module docstring); with ``dry_run`` remove nothing and
    report what would go. ``progress(step, count)`` hears each step."""
    if not grace_s >= 0:
        raise InvalidInput(f"grace period {grace_s!r} is negative", "give 0 seconds or more (default 1h)")
    started = time.monotonic()
    report = GcReport(grace_s=grace_s, dry_run=dry_run)
    objects = store.objects
    cutoff = (time.time() if now is None else now) - grace_s
    if not dry_run:
        _sweep_leftovers(objects, grace_s, report)
    # 1. list first: anything written after this is not in the listing, so never a candidate.
    # A local store lists names only: the time of an unreferenced object is read after the mark
    # (reading it later is safer, a writer's freshen is seen), and referenced ones cost no stat.
    local = objects.capabilities.local_path and callable(getattr(objects, "info", None))
    infos: list[ObjectInfo] | None = None
    if local:
        names = list(objects.iter_oids())
    else:
        infos = list(objects.iter_objects())
        names = [info.oid for info in infos]
    report.listed = len(names)
    if progress:
        progress("listed", report.listed)
    # 2. mark
    marks = _mark(store, _Marks())
    report.by_source = dict(marks.by_source)
    marked = marks.oids
    if infos is None:
        unreferenced = [ObjectInfo(oid, 0, 0.0) for oid in names if oid not in marked]
    else:
        unreferenced = [info for info in infos if info.oid not in marked]
    del names, infos
    report.referenced = report.listed - len(unreferenced)
    if progress:
        progress("marked", len(marked))
    if local and dry_run:
        read = (objects.info(info.oid) for info in unreferenced)  # type: ignore[attr-defined]
        unreferenced = [info for info in read if info is not None]
    if local and not dry_run:
        candidates = unreferenced  # prune reads each one's time and keeps the young
    else:
        candidates = [info for info in unreferenced if info.mtime <= cutoff]
        report.kept_young = len(unreferenced) - len(candidates)
    del unreferenced
    if dry_run or not candidates:
        report.removed = len(candidates)
        report.bytes_freed = sum(info.size for info in candidates)
        report.removed_oids = sorted(info.oid for info in candidates)[:_LISTED]
        report.seconds = time.monotonic() - started
        return report
    # 3. mark again: references written since the first pass
    again = _mark(store, marks).oids
    late = [info for info in candidates if info.oid in again]
    if late:
        report.kept_fresh += len(late)
        candidates = [info for info in candidates if info.oid not in again]
    # 4. sweep, re-checking each object's time
    batches = [candidates[i : i + _BATCH] for i in range(0, len(candidates), _BATCH)]
    jobs = max(1, min(objects.capabilities.transfer_jobs, len(batches)))
    if local:  # system calls on one file system: more threads than CPUs only contend for its locks
        jobs = min(jobs, os.cpu_count() or 1)
    with ThreadPoolExecutor(jobs) as pool:  # deletes are system calls or requests: they overlap
        pruned = list(pool.map(lambda batch: objects.prune(batch, cutoff), batches))
    for batch, removed in zip(batches, pruned, strict=True):
        if local:  # times are read here first: a young one was young when listed, or freshened since
            report.kept_young += len(batch) - len(removed)
        else:
            report.kept_fresh += len(batch) - len(removed)
        report.removed += len(removed)
        report.bytes_freed += sum(info.size for info in removed)
        room = _LISTED - len(report.removed_oids)
        if room > 0:
            report.removed_oids.extend(info.oid for info in removed[:room])
        if progress:
            progress("removed", report.removed)
    _forget_cached(store, [info.oid for info in candidates])
    report.seconds = time.monotonic() - started
    log.info(
        "gc of %s: %d objects listed, %d removed (%d bytes), %d kept as younger than %ss",
        objects.url,
        report.listed,
        report.removed,
        report.bytes_freed,
        report.kept_young,
        grace_s,
    )
    return report


def _forget_cached(store: Store, oids: list[str]) -> None:
    """Drop parsed copies of removed trees kept beside a workspace (best effort)."""
    if store.root is None or not oids:
        return
    from keel.objects.trees import TreeCache

    cache = TreeCache(store.root / ".keel" / "data" / "trees")
    try:
        kept = set(os.listdir(cache.folder))
    except OSError:
        return
    cache.forget([oid for oid in oids if oid in kept])


# -- pins: what a keel server received through its objects API ------------------------------------
def pin_pushed(store: Store, oids: Iterable[str]) -> None:
    """Record objects a client pushed to (or found on) this server through the objects API, so
    gc keeps them: the versions that name them are in the client's database. A database that
    cannot take the write fails the request (the client retries): an unpinned pushed object
    could be collected."""
    from keel.core.entities import now_ms

    wanted = list(oids)
    if wanted:
        with store.db.write() as conn:
            refs.pin(conn, wanted, "pushed", now_ms())
