"""Check a store: every object against its hash, every referenced object present."""

from __future__ import annotations

from dataclasses import dataclass, field

from keel.services.workspace import Store

__all__ = ["VerifyReport", "verify_store"]


@dataclass
class VerifyReport:
    """What ``keel verify`` found."""

    checked: int = 0
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # (oid, problem)
    missing: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)  # (oid, [(run, path)])

    @property
    def ok(self) -> bool:
        """True when nothing is corrupt or missing."""
        return not self.corrupt and not self.missing


def verify_store(store: Store) -> VerifyReport:
    """Re-hash every stored object and look for referenced objects that are gone."""
    report = VerifyReport()
    present = set()
    for oid in store.objects.iter_oids():
        present.add(oid)
    report.checked = len(present)
    report.corrupt = list(store.objects.verify_all())
    for oid in sorted(store.tracking.referenced_oids() - present):
        report.missing.append((oid, store.tracking.artifact_runs(oid)))
    return report
