"""Check a store, as ``git fsck`` does: every object against its hash, every referenced
object present, and the metadata database: SQLite's own integrity check, and the
content digest of every immutable record (finished runs, prompt and model versions,
reflog entries), recomputed from its rows and compared with the one stored when it
was written (see :mod:`keel.core.digests`). Then the sources model versions pinned
(:mod:`keel.services.model_sources`): a local file or folder whose bytes changed since
it was registered, or that is gone, is listed as drift (the store itself is sound, so
drift does not make the report fail)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keel.errors import KeelError
from keel.meta.digests import Checker, Damage, Progress, RecordCount
from keel.meta.models import RawModels
from keel.services.model_sources import SourceDrift, check_sources
from keel.services.workspace import Store

__all__ = ["VerifyReport", "verify_store"]

#: What each kind of record is called in the report.
RECORDS = {
    "runs": "runs",
    "prompt_versions": "prompt versions",
    "model_versions": "model versions",
    "reflog": "reflog entries",
}


@dataclass
class VerifyReport:
    """What ``keel verify`` found."""

    checked: int = 0
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # (oid, problem)
    missing: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)  # (oid, [(run, path)])
    #: the database: "sqlite" or "postgresql"
    backend: str = ""
    #: the file check run ("integrity_check" or "quick_check"); "" when skipped (PostgreSQL)
    integrity_check: str = ""
    #: what the file check found: [] when the file is sound
    integrity: list[str] = field(default_factory=list)
    #: per kind of record (see :data:`RECORDS`): checked, not covered, running, sealed
    records: dict[str, RecordCount] = field(default_factory=dict)
    #: records whose content no longer matches their digest, and unreadable parts
    damaged: list[Damage] = field(default_factory=list)
    #: every damaged record, including those past the listed ones
    damaged_total: int = 0
    #: model versions whose pinned local source changed or is gone (not a fault of the store)
    drift: list[SourceDrift] = field(default_factory=list)
    #: model versions whose pinned source was re-hashed
    sources_checked: int = 0
    sources_unchecked: int = 0  # pinned S3 sources this machine could not read

    @property
    def ok(self) -> bool:
        """True when nothing is corrupt, missing or damaged (records without a digest are
        not covered, not wrong)."""
        return not self.corrupt and not self.missing and not self.integrity and not self.damaged_total

    @property
    def not_covered(self) -> int:
        """Finished records that have no digest (written before digests, never sealed)."""
        return sum(count.not_covered for count in self.records.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``keel verify --json`` prints)."""
        return {
            "checked": self.checked,
            "corrupt": self.corrupt,
            "missing": self.missing,
            "database": {
                "backend": self.backend,
                "integrity_check": self.integrity_check or None,
                "integrity": self.integrity,
                "records": {kind: count.to_dict() for kind, count in self.records.items()},
                "damaged": [d.to_dict() for d in self.damaged],
                "damaged_total": self.damaged_total,
                "not_covered": self.not_covered,
            },
            "sources": {
                "checked": self.sources_checked,
                "unchecked": self.sources_unchecked,
                "drift": [d.to_dict() for d in self.drift],
            },
            "ok": self.ok,
        }


def verify_store(
    store: Store,
    *,
    objects: bool = True,
    database: bool = True,
    quick: bool = False,
    seal: bool = False,
    progress: Progress | None = None,
    sources: bool = True,
) -> VerifyReport:
    """Check ``store``: re-hash every object and look for referenced objects that are gone;
    run SQLite's integrity check (``quick``: the faster ``quick_check``); recompute every
    record digest. With ``seal``, finished records that have no digest yet get one
    (records whose digest does not match are never re-sealed). With ``sources``, re-hash
    the local sources model versions pinned (relative paths from the workspace folder)
    and list those that drifted."""
    report = VerifyReport()
    if objects:
        present = set()
        for oid in store.objects.iter_oids():
            present.add(oid)
        report.checked = len(present)
        report.corrupt = list(store.objects.verify_all())
        try:
            for oid in sorted(store.tracking.referenced_oids() - present):
                report.missing.append((oid, store.tracking.artifact_runs(oid)))
        except KeelError as exc:  # the artifacts table is unreadable: the database checks say where
            report.damaged.append(Damage("database", "artifacts", "artifacts", f"cannot be read: {exc.message}"))
            report.damaged_total += 1
    if database:
        db = store.db
        report.backend = "sqlite" if db.is_sqlite else db.dialect
        checker = Checker(db, seal=seal, progress=progress)
        found = checker.integrity(quick)
        if found is not None:
            report.integrity_check = "quick_check" if quick else "integrity_check"
            report.integrity = found
        checker.check_runs()
        checker.check_prompt_versions()
        checker.check_model_versions()
        checker.check_reflog()
        report.records = checker.counts
        report.damaged.extend(checker.damaged)
        report.damaged_total += checker.damaged_total
    if sources:
        try:
            with store.db.raw_read() as cur:
                pinned = RawModels(store.db).pinned(cur)
        except KeelError as exc:  # an unreadable table: the database checks say where
            problem = f"cannot be read: {exc.message}"
            report.damaged.append(Damage("database", "model_versions", "model versions", problem))
            report.damaged_total += 1
            pinned = []
        unchecked: list[Any] = []
        report.drift = check_sources(pinned, store.root, unchecked)
        report.sources_unchecked = len(unchecked)
        report.sources_checked = len(pinned) - len(unchecked)
    return report
