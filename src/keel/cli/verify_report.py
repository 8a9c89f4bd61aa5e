"""How ``keel verify`` prints its report: one line per problem, then the counts."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["verify_lines", "verify_progress"]

_RECORDS = (
    ("runs", "runs"),
    ("prompt_versions", "prompt versions"),
    ("model_versions", "model versions"),
    ("reflog", "reflog entries"),
)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def verify_lines(report: Any) -> list[str]:
    """The text report: problems first (``corrupt``, ``missing``, ``damaged``), then what was checked."""
    lines = [f"corrupt  {oid}  {problem}" for oid, problem in report.corrupt]
    for oid, users in report.missing:
        where = ", ".join(f"run {run[:8]}:{path}" for run, path in users)
        lines.append(f"missing  {oid}  (used by {where})")
    if report.integrity:
        first, more = _one_line(report.integrity[0]), len(report.integrity) - 1
        extra = f" (and {more} more; --json lists them)" if more else ""
        lines.append(f"damaged  database  {report.integrity_check}: {first}{extra}")
    lines.extend(f"damaged  {d.what}  {d.problem}" for d in report.damaged)
    if report.damaged_total > len(report.damaged):
        lines.append(
            f"damaged  ... and {report.damaged_total - len(report.damaged)} more (--json lists the first ones)"
        )
    for d in getattr(report, "drift", []):
        now = f"now {d.now}" if d.now else "now missing"
        lines.append(f"drift    model {d.name}@{d.version}  source {d.source}: registered {d.recorded}, {now}")
    lines.append(f"{report.checked} objects checked: {len(report.corrupt)} corrupt, {len(report.missing)} missing")
    if getattr(report, "sources_checked", 0):
        lines.append(
            f"model sources checked: {report.sources_checked}: {len(report.drift)} drifted"
            + (" (the versions now name other bytes than they were registered with)" if report.drift else "")
        )
    if getattr(report, "sources_unchecked", 0):
        lines.append(
            f"model sources not checked: {report.sources_unchecked} on S3 this machine cannot read "
            "(set AWS credentials / AWS_ENDPOINT_URL and run keel verify again)"
        )
    if not report.backend:
        return lines
    if report.integrity_check:
        state = "ok" if not report.integrity else "FAILED"
        lines.append(f"database ({report.backend}): {report.integrity_check} {state}")
    else:
        lines.append(
            f"database ({report.backend}): integrity_check skipped: PostgreSQL has none "
            "(use its data checksums and amcheck)"
        )
    counts = report.records
    checked = []
    for kind, label in _RECORDS:
        count = counts.get(kind)
        if count is not None:
            running = f" ({count.running} running)" if count.running else ""
            checked.append(f"{count.checked} {label}{running}")
    lines.append(f"records checked: {', '.join(checked)}: {report.damaged_total} damaged")
    uncovered = [f"{counts[k].not_covered} {label}" for k, label in _RECORDS if k in counts and counts[k].not_covered]
    if uncovered:
        lines.append(
            f"not covered: {', '.join(uncovered)} without a digest (written before keel kept them; "
            "'keel verify --seal' adds them)"
        )
    sealed = [f"{counts[k].sealed} {label}" for k, label in _RECORDS if k in counts and counts[k].sealed]
    if sealed:
        lines.append(f"sealed: {', '.join(sealed)}")
    return lines


def verify_progress() -> Callable[[str, int, int], None] | None:
    """A progress line on stderr while checking (a terminal only), at most 10 a second."""
    if not sys.stderr.isatty():
        return None
    last = [0.0]

    def show(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < 0.1:
            return
        last[0] = now
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\rchecking {stage}: {done:,}/{total:,}{end}")
        sys.stderr.flush()

    return show
