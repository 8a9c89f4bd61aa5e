"""``keel data`` and ``keel remote`` as a user runs them: real git, real remotes (the CLI in-process:
see ``tests/cli_inprocess.py``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cli_inprocess import Result
from cli_inprocess import keel as run_keel


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KEEL_URI", "KEEL_OBJECTS")}
    out = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def keel(*args: str, cwd: Path, check: bool = True) -> Result:
    out = run_keel(*args, cwd=cwd)
    if check and out.returncode != 0:
        raise AssertionError(f"keel {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def git(*args: str, cwd: Path) -> str:
    return run("git", *args, cwd=cwd).stdout


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "remote-store")
    return request.getfixturevalue("s3_url")


def test_the_issue_workflow_end_to_end(tmp_path: Path, remote_url: str):
    repo = tmp_path / "project"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    git("config", "user.email", "me@example.com", cwd=repo)
    git("config", "user.name", "Me", cwd=repo)
    keel("init", cwd=repo)
    run("sh", "-c", "git add .keel && git commit -q -m 'keel workspace'", cwd=repo)  # config.toml belongs in git
    data = repo / "data"
    kb = data / "knowledge_base"
    (kb / "faq").mkdir(parents=True)
    (data / "training_set.jsonl").write_text("".join(f'{{"q": "question {i}"}}\n' for i in range(100)))
    for i in range(40):
        (kb / "faq" / f"doc{i:02d}.md").write_text(f"# FAQ {i}\n" + "answer " * i)
    (kb / "manual.pdf").write_bytes(os.urandom(300_000))

    out = keel("data", "add", "data/training_set.jsonl", cwd=repo).stdout
    assert "data/training_set.jsonl.keel" in out
    keel("data", "add", "data/knowledge_base/", cwd=repo)
    assert (data / ".gitignore").read_text().splitlines() == ["/training_set.jsonl", "/knowledge_base"]
    run("sh", "-c", "git add data/*.keel data/.gitignore && git commit -q -m 'data v1' && git tag v1.0", cwd=repo)
    v1 = tree_bytes(data)

    keel("remote", "add", "-d", "myremote", remote_url, cwd=repo)
    assert "* myremote" in keel("remote", "list", cwd=repo).stdout
    assert "pushed 4 object(s)" in keel("data", "push", cwd=repo).stdout
    assert "pushed 0 object(s)" in keel("data", "push", cwd=repo).stdout

    # ... change, add, commit again ...
    (kb / "faq" / "doc00.md").write_text("# FAQ 0, rewritten\n")
    (kb / "faq" / "doc41.md").write_text("# a new question\n")
    (kb / "faq" / "doc01.md").unlink()
    with open(data / "training_set.jsonl", "a") as fh:
        fh.write('{"q": "one more"}\n')
    status = keel("data", "status", cwd=repo).stdout
    assert "modified: data/knowledge_base" in status and "data/knowledge_base/faq/doc41.md" in status
    keel("data", "add", "data/training_set.jsonl", "data/knowledge_base", cwd=repo)
    diff = keel("data", "diff", cwd=repo).stdout
    assert "modified: data/knowledge_base" in diff and "removed   data/knowledge_base/faq/doc01.md" in diff
    run(
        "sh",
        "-c",
        "git add data/*.keel data/.gitignore .keel/config.toml && git commit -q -m 'data v2' && git tag v2.0",
        cwd=repo,
    )
    v2 = tree_bytes(data)
    assert "data/knowledge_base/faq/doc41.md" in keel("data", "diff", "v1.0", "v2.0", cwd=repo).stdout
    keel("data", "push", cwd=repo)

    git("checkout", "-q", "v1.0", cwd=repo)
    keel("data", "checkout", cwd=repo)
    assert tree_bytes(data) == v1  # workspace bytes == v1.0 bytes
    assert "data up to date" in keel("data", "status", cwd=repo).stdout
    git("checkout", "-q", "main", cwd=repo)
    keel("data", "checkout", cwd=repo)
    assert tree_bytes(data) == v2

    # A fresh clone gets its bytes from the remote.
    clone = tmp_path / "clone"
    git("clone", "-q", str(repo), str(clone), cwd=tmp_path)
    assert "fetched 5 object(s)" in keel("data", "pull", cwd=clone).stdout
    assert tree_bytes(clone / "data") == v2
    git("checkout", "-q", "v1.0", cwd=clone)  # v1.0's config predates the remote: name it again
    keel("remote", "add", "-d", "myremote", remote_url, cwd=clone)
    keel("data", "pull", cwd=clone)
    assert tree_bytes(clone / "data") == v1

    log = keel("data", "log", "data/knowledge_base", "--json", cwd=repo).stdout
    assert log.count('"path": "data/knowledge_base"') == 2
    assert "0 problem(s)" in keel("data", "verify", "--workspace", cwd=repo).stdout


def test_cli_errors_are_one_line_with_a_hint(tmp_path: Path):
    repo = tmp_path / "project"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    keel("init", cwd=repo)
    (repo / "notes.txt").write_text("mine")
    (tmp_path / "outside.txt").write_text("x")

    out = keel("data", "add", str(tmp_path / "outside.txt"), cwd=repo, check=False)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "outside the repository" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1

    keel("data", "add", "notes.txt", cwd=repo)
    (repo / "notes.txt").write_text("mine, edited and not added")
    os.utime(repo / "notes.txt", (1_600_000_000, 1_600_000_000))
    (repo / "notes.txt.keel").write_text((repo / "notes.txt.keel").read_text())
    out = keel("data", "checkout", cwd=repo, check=False)
    assert out.returncode == 4 and "not in the cache" in out.stderr and "--force" in out.stderr
    assert (repo / "notes.txt").read_text() == "mine, edited and not added"
    keel("data", "checkout", "--force", cwd=repo)
    assert (repo / "notes.txt").read_text() == "mine"

    out = keel("data", "push", cwd=repo, check=False)
    assert out.returncode == 2 and "keel remote add -d" in out.stderr
    out = keel("data", "gc", cwd=repo, check=False)
    assert out.returncode == 2 and "--workspace or --all-commits" in out.stderr
    assert "removed 0 object(s)" in keel("data", "gc", "--workspace", cwd=repo).stdout
    assert "would remove" in keel("data", "gc", "--all-commits", "--dry-run", cwd=repo).stdout
    keel("remote", "add", "spare", str(tmp_path / "spare"), cwd=repo)
    keel("remote", "remove", "spare", cwd=repo)
    assert "no remotes" in keel("remote", "list", cwd=repo).stdout
    (repo / "big.bin").write_bytes(os.urandom(300_000))
    keel("data", "add", "--link", "hardlink", "big.bin", cwd=repo)
    assert "1 file(s) made writable" in keel("data", "unprotect", "big.bin", cwd=repo).stdout
    assert "error" not in keel("data", "fetch", "--help", cwd=repo).stdout.lower()[:0]
