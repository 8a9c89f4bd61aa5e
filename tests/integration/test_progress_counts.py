"""Progress of long operations, as the services report it (keel.core.progress): what a
callback is told by ``data add``, ``data checkout``, ``data pull`` and ``kb commit``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from data_helpers import commit, git, init_repo, write

from keel.core import progress as core_progress
from keel.sdk import data
from keel.sdk import kb as kbs


class Recorder:
    """A progress that labels steps: every call, under the step it belongs to."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str]] = [("", "")]
        self.calls: dict[str, list[tuple[int, int]]] = {"": []}
        self._now = ""

    def __call__(self, done: int, total: int) -> None:
        self.calls[self._now].append((done, total))

    def step(self, what: str, unit: str = "") -> Recorder:
        self.steps.append((what, unit))
        self.calls[what] = []
        self._now = what
        return self


def assert_counts(calls: list[tuple[int, int]], total: int) -> None:
    """Counts only go up, never past their total, and the last one is the whole work."""
    assert calls, "no progress reported"
    dones = [d for d, _ in calls]
    assert dones == sorted(dones), calls
    assert all(d <= t for d, t in calls if t), calls
    assert calls[-1] == (total, total), calls


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from keel.sdk import session

    monkeypatch.setattr(core_progress, "INTERVAL", 0.0)  # every count reaches the callback
    root = init_repo(tmp_path / "repo")
    os.chdir(root)
    yield root
    session.reset()


def _dataset(root: Path) -> int:
    """A folder of small files (packed) and two large ones (loose): its bytes."""
    size = 0
    for i in range(300):
        size += write(root / "data" / "set" / f"part{i % 3}" / f"f{i:03d}.txt", os.urandom(9_000)).stat().st_size
    size += write(root / "data" / "set" / "big.bin", os.urandom(17 << 20)).stat().st_size  # 2 hashing steps
    size += write(root / "data" / "set" / "mid.bin", os.urandom(300_000)).stat().st_size
    return size


@pytest.mark.parametrize("link", ["copy", "auto"])
def test_data_add_counts_every_byte_it_hashes_and_none_the_stat_cache_vouches_for(repo: Path, link: str) -> None:
    size = _dataset(repo)
    single = write(repo / "data" / "one.bin", os.urandom(1 << 20), old=False).stat().st_size  # racy: copied first
    seen: list[tuple[int, int]] = []
    data.add(["data/set", "data/one.bin"], link=link, progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 0)  # the total is not known before the first path is looked at
    assert_counts(seen, size + single)
    assert len(seen) > 5  # small files a MiB at a time, large ones 16 MiB at a time

    again: list[tuple[int, int]] = []
    data.add(["data/set"], link=link, progress=lambda d, t: again.append((d, t)))
    assert again[-1] == (0, 0)  # nothing changed: nothing read, nothing counted


def test_checkout_counts_the_files_it_writes(repo: Path) -> None:
    _dataset(repo)
    data.add(["data/set"])
    shutil.rmtree(repo / "data" / "set" / "part1")
    (repo / "data" / "set" / "big.bin").unlink()
    seen: list[tuple[int, int]] = []
    result = data.checkout(progress=lambda d, t: seen.append((d, t)))
    assert result.written == 101
    assert seen[0] == (0, 101)
    assert_counts(seen, 101)


def test_pull_reports_its_two_steps_bytes_fetched_then_files_written(repo: Path, tmp_path: Path) -> None:
    _dataset(repo)
    data.add(["data/set"])
    data.add_remote("storage", str(tmp_path / "remote"), default=True)
    commit(repo, "data v1")
    pushed: list[tuple[int, int]] = []
    data.push(progress=lambda d, t: pushed.append((d, t)))
    assert_counts(pushed, pushed[-1][1])
    assert pushed[-1][1] > 17 << 20

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    os.chdir(clone)
    recorder = Recorder()
    fetched, checked_out = data.pull(progress=recorder)
    assert recorder.steps[1:] == [("fetch", "bytes"), ("checkout", "files")]
    dones = [d for d, _ in recorder.calls["fetch"]]
    assert dones == sorted(dones) and dones[-1] == fetched.bytes > 17 << 20
    assert_counts(recorder.calls["checkout"], checked_out.written)
    assert checked_out.written == 302


def _docs(n: int) -> list[dict[str, str]]:
    return [
        {"text": f"Refunds guide {i}. " + "Refunds take five days to arrive. " * 40, "source": f"d{i}.md"}
        for i in range(n)
    ]


@pytest.fixture
def workspace(tmp_path: Path):
    from keel.sdk import session
    from keel.sdk.workspace import init_workspace

    init_workspace(tmp_path)  # (the progress of a commit does not depend on the store's backend)
    yield tmp_path
    session.reset()


def test_kb_add_and_commit_report_their_steps(workspace: Path) -> None:
    kb = kbs.create("docs", chunk_size=200, chunk_overlap=0)
    staging = Recorder()
    kb.add_documents(_docs(40), progress=staging)
    assert staging.steps[1:] == [("reading", "documents"), ("storing", "documents")]
    assert_counts(staging.calls["reading"], 40)
    assert_counts(staging.calls["storing"], 40)
    recorder = Recorder()
    version = kb.commit("first", progress=recorder)
    assert [what for what, _ in recorder.steps[1:]] == ["chunking", "embedding", "writing"]
    assert recorder.steps[1:3] == [("chunking", "documents"), ("embedding", "chunks")]
    assert_counts(recorder.calls["chunking"], 40)
    assert recorder.calls["chunking"][0] == (0, 40)
    assert version.embedded_chunks > 40
    assert_counts(recorder.calls["embedding"], version.embedded_chunks)

    # A plain callable hears the steps' counts one after the other.
    kb.add_documents(_docs(45)[40:])
    plain: list[tuple[int, int]] = []
    v2 = kb.commit("five more", progress=lambda d, t: plain.append((d, t)))
    assert (45, 45) in plain and plain[-1] == (v2.embedded_chunks, v2.embedded_chunks)
    assert 0 < v2.embedded_chunks < version.embedded_chunks
    assert core_progress.current() is None  # handed over for the call only


def test_backup_and_restore_report_their_steps_and_count_the_objects(workspace: Path, tmp_path: Path) -> None:
    from keel.sdk.backup import backup, restore

    for i in range(5):
        write(workspace / "data" / f"f{i}.bin", os.urandom(300_000))  # five loose objects
    data.add(["data"])
    recorder = Recorder()
    report = backup(tmp_path / "backup", progress=recorder)
    assert recorder.steps[1:] == [("database", ""), ("objects", "objects")]
    objects = report.manifest["objects"]["count"]
    assert objects >= 6  # the files and the folder's tree
    assert_counts(recorder.calls["objects"], objects)

    recorder = Recorder()
    restored = restore(tmp_path / "backup", tmp_path / "restored", progress=recorder)
    assert [what for what, _ in recorder.steps[1:]] == ["database", "objects", "verify"]
    assert_counts(recorder.calls["objects"], objects)
    assert restored.objects == objects and restored.verify.ok
