"""How ``keel verify`` prints a report (``keel.cli.verify_report``)."""

from keel.meta.digests import Damage, RecordCount
from keel.services.verify import VerifyReport


def _lines(report: VerifyReport) -> list[str]:
    from keel.cli.verify_report import verify_lines

    return verify_lines(report)


def test_postgresql_says_the_file_check_was_skipped() -> None:
    report = VerifyReport(backend="postgresql", records={"runs": RecordCount(checked=2, running=1)})
    lines = _lines(report)
    assert report.ok
    assert (
        "database (postgresql): integrity_check skipped: PostgreSQL has none (use its data checksums and amcheck)"
        in lines
    )
    assert "records checked: 2 runs (1 running): 0 damaged" in lines


def test_problems_come_first_one_line_each() -> None:
    report = VerifyReport(
        backend="sqlite",
        integrity_check="integrity_check",
        integrity=["*** in database main ***\nPage 12: btreeInitPage() returns error code 11", "Page 13: ..."],
        records={"runs": RecordCount(checked=1, not_covered=329)},
        damaged=[Damage("run", "ab" * 16, "run abababab (project p)", "metrics changed since it finished")],
        damaged_total=1,
    )
    lines = _lines(report)
    assert not report.ok
    assert lines[:2] == [
        "damaged  database  integrity_check: *** in database main *** Page 12: btreeInitPage() returns error code 11"
        " (and 1 more; --json lists them)",
        "damaged  run abababab (project p)  metrics changed since it finished",
    ]
    assert "database (sqlite): integrity_check FAILED" in lines
    assert any(line.startswith("not covered: 329 runs without a digest") for line in lines)
    assert report.to_dict()["database"]["not_covered"] == 329
