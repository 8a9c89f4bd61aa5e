"""Shared by the data versioning tests: a git repository that is a keel workspace."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

OLD = 1_600_000_000  # an mtime far in the past: stat cache entries are trusted at once


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def init_repo(folder: Path) -> Path:
    from keel.sdk.workspace import init_workspace

    folder.mkdir(parents=True, exist_ok=True)
    git(folder, "init", "-q", "-b", "main")
    git(folder, "config", "user.email", "test@example.com")
    git(folder, "config", "user.name", "Test")
    init_workspace(folder)
    return folder


def write(path: Path, content: bytes | str, old: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not os.access(path, os.W_OK):
        path.unlink()
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    if old:
        os.utime(path, (OLD, OLD))
    return path


def make_kb(root: Path, n: int = 30) -> Path:
    kb = root / "data" / "kb"
    for i in range(n):
        write(kb / f"part{i % 3}" / f"doc{i:03d}.txt", f"document {i}\n" * (i + 1))
    return kb


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def commit(root: Path, message: str, tag: str | None = None) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    if tag:
        git(root, "tag", tag)
