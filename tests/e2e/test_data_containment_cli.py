"""Paths from content stay inside (issue 16), as a user meets them: real git, the CLI in-process
(``tests/cli_inprocess.py``).

- a teammate pushes a tree whose entry is ``../../victim.txt`` to a folder remote; a fresh
  clone's ``keel data pull`` is refused with one line and nothing outside the clone is written;
- ``keel data checkout --force`` where the tracked folder (or a folder inside it) is a symlink
  to somewhere else: refused, the place the link points at untouched;
- a NUL byte (or ``..``) in a pointer's path: one line, no traceback.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import blake3

from cli_inprocess import Result
from cli_inprocess import keel as run_keel
from keel.objects.local import LocalObjectStore

PRECIOUS = "precious, never to be replaced"


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


def one_line_error(out: Result, *words: str) -> None:
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr and out.stderr.startswith("error: "), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    for word in words:
        assert word in out.stderr, out.stderr


def new_repo(folder: Path) -> Path:
    folder.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=folder)
    git("config", "user.email", "me@example.com", cwd=folder)
    git("config", "user.name", "Me", cwd=folder)
    keel("init", cwd=folder)
    return folder


def pointer_text(kind: str, name: str, oid: str, size: int, files: int = 1) -> str:
    text = f"version: 1\nkind: {kind}\npath: {name}\noid: {oid}\nsize: {size}\n"
    return text + (f"files: {files}\n" if kind == "dir" else "")


def test_a_crafted_tree_on_a_folder_remote_cannot_write_outside_a_fresh_clone(tmp_path: Path):
    victim = tmp_path / "victim.txt"
    victim.write_text(PRECIOUS)
    remote = tmp_path / "remote-store"

    # The teammate's repository: a tracked folder, then a tree crafted by hand on the remote.
    teammate = new_repo(tmp_path / "teammate")
    (teammate / "kb").mkdir()
    (teammate / "kb" / "doc.txt").write_text("a document\n")
    keel("data", "add", "kb", cwd=teammate)
    keel("remote", "add", "-d", "shared", str(remote), cwd=teammate)
    keel("data", "push", cwd=teammate)
    payload = b"pwned\n"
    store = LocalObjectStore(remote)
    oid = store.put_bytes(payload)
    manifest = f"keel-tree 1\n{oid} {len(payload)} - ../../victim.txt\n".encode()
    tree = store.put_bytes(manifest)
    assert tree == blake3.blake3(manifest).hexdigest()
    (teammate / "kb.keel").write_text(pointer_text("dir", "kb", tree, len(payload)))
    git("add", "-A", cwd=teammate)
    git("commit", "-q", "-m", "data", cwd=teammate)

    clone = tmp_path / "work" / "clone"
    clone.parent.mkdir()
    git("clone", "-q", str(teammate), str(clone), cwd=tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*") if clone not in p.parents and p != clone)
    out = keel("data", "pull", cwd=clone, check=False)
    one_line_error(out, "line 2", "'../../victim.txt'", "'..' component")
    assert "files written" not in out.stdout
    assert victim.read_text() == PRECIOUS
    after = sorted(str(p) for p in tmp_path.rglob("*") if clone not in p.parents and p != clone)
    assert after == before  # nothing new anywhere outside the clone
    assert not (clone / "kb").exists()

    # checkout (the tree is in the cache now, or not): refused the same way
    one_line_error(keel("data", "checkout", "--force", cwd=clone, check=False), "'..' component")
    assert victim.read_text() == PRECIOUS


def test_checkout_never_writes_through_a_symlinked_data_folder_even_with_force(tmp_path: Path):
    repo = new_repo(tmp_path / "project")
    kb = repo / "data" / "kb"
    (kb / "part").mkdir(parents=True)
    (kb / "a.txt").write_text("a\n")
    (kb / "part" / "b.txt").write_text("b\n")
    keel("data", "add", "data/kb", cwd=repo)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.txt").write_text(PRECIOUS)

    # the tracked folder itself is a link
    run("rm", "-rf", str(kb), cwd=repo)
    kb.symlink_to(elsewhere, target_is_directory=True)
    for force in ([], ["--force"]):
        one_line_error(keel("data", "checkout", *force, cwd=repo, check=False), "data/kb", "symlink")
        assert (elsewhere / "a.txt").read_text() == PRECIOUS and sorted(os.listdir(elsewhere)) == ["a.txt"]

    # a folder inside it is a link
    kb.unlink()
    kb.mkdir()
    (kb / "part").symlink_to(elsewhere, target_is_directory=True)
    for force in ([], ["--force"]):
        one_line_error(keel("data", "checkout", *force, cwd=repo, check=False), "symlink", "data/kb/part")
        assert sorted(os.listdir(elsewhere)) == ["a.txt"]
    assert not (kb / "a.txt").exists()  # refused before the first write

    # a folder above it is a link (the data folder reached through "data")
    (kb / "part").unlink()
    run("rm", "-rf", str(repo / "data" / "kb"), cwd=repo)
    (repo / "real").mkdir()
    os.rename(repo / "data", repo / "real" / "data")
    (repo / "data").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "kb.keel").write_text((repo / "real" / "data" / "kb.keel").read_text())
    one_line_error(keel("data", "checkout", "--force", "data/kb", cwd=repo, check=False), "outside the repository")
    assert sorted(os.listdir(elsewhere)) == ["a.txt", "kb.keel"]

    # a link where a file goes
    (repo / "data").unlink()
    os.rename(repo / "real" / "data", repo / "data")
    kb.mkdir()
    (kb / "a.txt").symlink_to(elsewhere / "a.txt")
    one_line_error(keel("data", "checkout", "--force", cwd=repo, check=False), "symlink", "data/kb/a.txt")
    assert (elsewhere / "a.txt").read_text() == PRECIOUS and (kb / "a.txt").is_symlink()

    (kb / "a.txt").unlink()
    assert "2 files written" in keel("data", "checkout", cwd=repo).stdout
    assert (kb / "a.txt").read_text() == "a\n" and (kb / "part" / "b.txt").read_text() == "b\n"


def test_bad_pointer_paths_are_one_line_errors(tmp_path: Path):
    repo = new_repo(tmp_path / "project")
    (repo / "data").mkdir()
    (repo / "data" / "a.txt").write_text("a\n")
    keel("data", "add", "data/a.txt", cwd=repo)
    keel("remote", "add", "-d", "shared", str(tmp_path / "remote"), cwd=repo)
    keel("data", "push", cwd=repo)
    good = (repo / "data" / "a.txt.keel").read_text()
    oid = next(line.split(": ")[1] for line in good.splitlines() if line.startswith("oid:"))
    for name, words in (("a\x00b", "control character"), ("../../victim.txt", "invalid path"), ("..", "'..'")):
        (repo / "data" / "a.txt.keel").write_text(pointer_text("file", name, oid, 2))
        for command in (["data", "checkout", "--force"], ["data", "status"], ["data", "pull"]):
            one_line_error(keel(*command, cwd=repo, check=False), "data/a.txt.keel", words)
    assert not (tmp_path / "victim.txt").exists()

    # a pointer may not name git's or keel's own folders
    (repo / "git.keel").write_text(pointer_text("dir", ".git", oid, 2, 1))
    (repo / "data" / "a.txt.keel").write_text(good)
    one_line_error(keel("data", "checkout", "--force", cwd=repo, check=False), "git.keel", ".git")


def test_a_malformed_workspace_config_is_one_line_naming_file_and_line(tmp_path: Path):
    repo = new_repo(tmp_path / "project")
    config = repo / ".keel" / "config.toml"
    config.write_text(config.read_text() + "\n[data]\nlink = 'sideways'\n")
    one_line_error(keel("data", "status", cwd=repo, check=False), "config.toml:", "link = 'sideways'")
    config.write_text(config.read_text().replace("[data]", "[data"))
    one_line_error(keel("data", "status", cwd=repo, check=False), "config.toml:", "not valid TOML")
    one_line_error(keel("runs", "list", cwd=repo, check=False), "config.toml:", "not valid TOML")
