"""``keel artifacts get RUN --dest dl/sub`` as a reader runs it, on a run holding an artifact row
from before write-time validation (``../../x``): refused with one line, nothing written anywhere.
The CLI runs in-process (see ``tests/cli_inprocess.py``)."""

from pathlib import Path

from cli_inprocess import keel
from keel.services.tracking import TrackingService
from keel.services.workspace import open_store


def test_artifacts_get_refuses_a_stored_path_outside_dest(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    assert keel("init", cwd=work).returncode == 0
    store = open_store(start=work, cached=False)
    try:
        tracking = TrackingService(store)
        run_id = tracking.start_run("p", "old").run_id
        oid = tracking.store_bytes(b"pwned")
        with store.db.write() as conn:  # rows as an unvalidated write_batch could store them
            pk = conn.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).scalar()
            for path in ("ok.txt", "../../x.txt"):
                conn.execute(
                    "INSERT INTO artifacts (run_pk, path, oid, size, kind, created_at) VALUES (?, ?, ?, 5, 'file', 1)",
                    (pk, path, oid),
                )
    finally:
        store.close()
    out = keel("artifacts", "get", run_id[:8], "--dest", "dl/sub", cwd=work)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "artifact path '../../x.txt'" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (work / "x.txt").exists() and not (work / "dl").exists() and not (tmp_path / "x.txt").exists()
