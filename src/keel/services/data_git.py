"""The few git queries data versioning needs, through the real ``git`` command.

Pointer files of a revision are read with two processes whatever their
number: ``git ls-tree`` (or ``rev-list --objects`` for every commit) lists
them, one ``git cat-file --batch`` reads them all.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from keel.core.data_pointer import POINTER_SUFFIX
from keel.errors import InvalidInput, StoreError

__all__ = ["all_commit_pointers", "head_commit", "is_git_repo", "pointer_files", "pointers_at", "resolve_rev"]


def _git(root: Path, *args: str, stdin: bytes | None = None, check: bool = True) -> bytes:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=root,
            input=stdin,
            capture_output=True,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
        )
    except FileNotFoundError:
        raise StoreError("git is not installed", "install git; keel data reads versions from git history") from None
    if check and out.returncode != 0:
        message = out.stderr.decode(errors="replace").strip().splitlines()
        raise StoreError(f"git {args[0]} failed: {message[-1] if message else out.returncode}", "check the repository")
    return out.stdout


def is_git_repo(root: Path) -> bool:
    """True if ``root`` is inside a git work tree."""
    for folder in (root, *root.parents):
        if (folder / ".git").exists():
            return True
    return False


def _prefix(root: Path) -> str:
    """``root`` relative to the top of its git work tree ('' at the top), ending in '/'."""
    prefix = _git(root, "rev-parse", "--show-prefix").decode().strip()
    return prefix


def head_commit(root: Path) -> str:
    """The commit checked out at ``root`` ('' outside git or before the first commit)."""
    if not is_git_repo(root):
        return ""
    out = _git(root, "rev-parse", "--verify", "-q", "HEAD", check=False).decode().strip()
    return out


def resolve_rev(root: Path, rev: str) -> str:
    """The commit id of ``rev``; InvalidInput if git does not know it."""
    if not is_git_repo(root):
        raise InvalidInput(f"cannot read revision {rev!r}: {root} is not in a git repository", "run 'git init' first")
    out = _git(root, "rev-parse", "--verify", "-q", f"{rev}^{{commit}}", check=False).decode().strip()
    if not out:
        raise InvalidInput(f"unknown git revision {rev!r}", "give a commit, branch or tag ('git log' lists them)")
    return out


def pointer_files(root: Path) -> list[str] | None:
    """Pointer files in the working tree (tracked or not, unless git-ignored), relative to
    ``root``; None outside git (the caller then walks the folder)."""
    if not is_git_repo(root):
        return None
    out = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", f"*{POINTER_SUFFIX}")
    names = [n for n in out.decode("utf-8", "surrogateescape").split("\0") if n.endswith(POINTER_SUFFIX)]
    return sorted(set(names))


def _cat_blobs(root: Path, shas: list[str]) -> dict[str, bytes]:
    if not shas:
        return {}
    out = _git(root, "cat-file", "--batch", stdin=("\n".join(shas) + "\n").encode())
    blobs: dict[str, bytes] = {}
    pos = 0
    for _ in shas:
        end = out.index(b"\n", pos)
        sha, kind, size = out[pos:end].decode().split(" ")
        start = end + 1
        blobs[sha] = out[start : start + int(size)] if kind == "blob" else b""
        pos = start + int(size) + 1
    return blobs


def pointers_at(root: Path, rev: str) -> dict[str, bytes]:
    """``{pointer path relative to root: content}`` of every pointer file in commit ``rev``."""
    commit = resolve_rev(root, rev)
    out = _git(root, "ls-tree", "-r", "-z", commit)
    found: dict[str, str] = {}
    for record in out.decode("utf-8", "surrogateescape").split("\0"):
        if not record:
            continue
        meta, _, path = record.partition("\t")
        mode, kind, sha = meta.split(" ")
        if kind == "blob" and path.endswith(POINTER_SUFFIX):
            found[path] = sha
    blobs = _cat_blobs(root, sorted(set(found.values())))
    return {path: blobs[sha] for path, sha in found.items()}


def all_commit_pointers(root: Path) -> list[tuple[str, bytes]]:
    """``(pointer path, content)`` of every distinct pointer blob in any commit reachable from
    a ref (branches, tags, stashes), paths relative to ``root``."""
    if not is_git_repo(root):
        return []
    if not _git(root, "rev-parse", "--verify", "-q", "HEAD", check=False).strip():
        return []
    prefix = _prefix(root)
    out = _git(root, "rev-list", "--all", "--objects")
    found: dict[str, str] = {}
    for line in out.decode("utf-8", "surrogateescape").splitlines():
        sha, _, path = line.partition(" ")
        if path.endswith(POINTER_SUFFIX) and path.startswith(prefix):
            found.setdefault(sha, path[len(prefix) :])
    blobs = _cat_blobs(root, sorted(found))
    return [(path, blobs[sha]) for sha, path in found.items()]
