"""Garbage collection benchmark: ``keel gc`` over 1,000,000 local objects, beside ``git prune``.

    .venv/bin/python bench/gc.py                 # 1,000,000 objects each (targets apply to this)
    .venv/bin/python bench/gc.py --count 100000  # a smaller store, a smoke run

Both stores get the same shape: ``--count`` small loose objects, half of them referenced.

- keel: a workspace (SQLite + local object store); the objects are written straight into the
  store's fan-out layout (``objects/ab/cdef...``, read-only files, as the store writes them),
  the referenced half as artifact rows of one run inserted in bulk. Timed: ``keel gc
  --dry-run`` (list + mark) and ``keel gc --grace 0`` (list, mark twice, delete), each as the
  command a user runs (a fresh process).
- git: a repository whose loose objects are the same count of blobs (zlib, ``.git/objects``),
  the referenced half named by one tree of one commit on a branch. Timed: ``git prune
  --expire=now`` (walk what is reachable, delete the unreachable loose objects).

The stores are made under ``--dir`` (default ``/dev/shm`` when it is there: a tmpfs, so the
figures are the tools' own work, not the disk's). Benchmarks assert nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import blake3


def _content(i: int) -> bytes:
    return b"object %d of the gc benchmark\n" % i


def _fan_out(root: Path) -> None:
    for fan in range(256):
        (root / f"{fan:02x}").mkdir(parents=True, exist_ok=True)


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def make_keel(folder: Path, n: int) -> tuple[float, int]:
    """A workspace with ``n`` objects, every even one an artifact of one run; (seconds, referenced)."""
    t0 = time.perf_counter()
    env_root = folder / "keel"
    env_root.mkdir(parents=True)
    from keel.sdk.workspace import init_workspace

    init_workspace(env_root)
    os.chdir(env_root)
    import keel
    from keel.sdk import session

    with keel.start_run(project="bench", name="gc") as run:
        pass
    session.reset()
    objects = env_root / ".keel" / "objects"
    _fan_out(objects)
    rows = []
    now = int(time.time() * 1000)
    for i in range(n):
        data = _content(i)
        oid = blake3.blake3(data).hexdigest()
        _write(f"{objects}/{oid[:2]}/{oid[2:]}", data)
        if i % 2 == 0:
            rows.append((f"a/{i:07d}.txt", oid, len(data), "file", now))
    db = sqlite3.connect(env_root / ".keel" / "keel.db")
    with db:
        run_pk = db.execute("SELECT id FROM runs WHERE run_id = ?", (run.id,)).fetchone()[0]
        db.executemany(
            "INSERT INTO artifacts (run_pk, path, oid, size, kind, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(run_pk, *row) for row in rows],
        )
    db.close()
    return time.perf_counter() - t0, len(rows)


def make_git(folder: Path, n: int) -> tuple[float, int]:
    """A repository with ``n`` loose blobs, every even one in the tree of the branch's commit."""
    t0 = time.perf_counter()
    repo = folder / "git"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    objects = repo / ".git" / "objects"
    _fan_out(objects)

    def loose(kind: bytes, body: bytes) -> bytes:
        raw = b"%s %d\0" % (kind, len(body)) + body
        sha = hashlib.sha1(raw, usedforsecurity=False)
        hexsha = sha.hexdigest()
        path = f"{objects}/{hexsha[:2]}/{hexsha[2:]}"
        if not os.path.exists(path):
            _write(path, zlib.compress(raw, 1))
        return sha.digest()

    entries = []
    for i in range(n):
        sha = loose(b"blob", _content(i))
        if i % 2 == 0:
            entries.append(b"100644 f%07d.txt\0" % i + sha)
    tree = loose(b"tree", b"".join(entries)).hex()
    commit = loose(
        b"commit",
        f"tree {tree}\nauthor b <b@b> 0 +0000\ncommitter b <b@b> 0 +0000\n\ngc bench\n".encode(),
    ).hex()
    subprocess.run(["git", "-C", str(repo), "update-ref", "HEAD", commit], check=True)
    return time.perf_counter() - t0, len(entries)


def _timed(command: list[str], cwd: Path) -> tuple[float, str]:
    """Run ``command`` in a fresh process: (seconds, stdout)."""
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, check=True)
    return time.perf_counter() - t0, done.stdout.decode()


def _loose_count(root: Path) -> int:
    return sum(len(os.listdir(root / f"{fan:02x}")) for fan in range(256))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000, help="objects in each store")
    parser.add_argument("--dir", default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    args = parser.parse_args()
    n = args.count
    base = Path(tempfile.mkdtemp(prefix="keel-bench-gc-", dir=args.dir))
    keel_cmd = [sys.executable, "-m", "keel", "gc"]
    print(f"gc benchmark: {n:,} objects per store, half referenced, under {base}")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {shutil.which('git')}")
    try:
        made_keel, keel_refs = make_keel(base, n)
        print(f"made the keel store in {made_keel:.1f} s ({keel_refs:,} artifact rows)")
        made_git, git_refs = make_git(base, n)
        print(f"made the git repository in {made_git:.1f} s ({git_refs:,} blobs in the tree)")

        ws = base / "keel"
        dry_s, out = _timed([*keel_cmd, "--dry-run", "--grace", "0", "--json"], ws)
        dry = json.loads(out)
        gc_s, out = _timed([*keel_cmd, "--grace", "0", "--json"], ws)
        report = json.loads(out)
        left_keel = _loose_count(ws / ".keel" / "objects")
        prune_s, _ = _timed(["git", "prune", "--expire=now"], base / "git")
        left_git = _loose_count(base / "git" / ".git" / "objects")

        rows = [
            ("keel gc --dry-run (list + mark)", dry_s, dry["removed"]),
            ("keel gc --grace 0", gc_s, report["removed"]),
            ("git prune --expire=now", prune_s, n + 2 - left_git),
        ]
        print()
        print(f"{'':36} {'seconds':>9} {'removed':>10} {'objects/s':>12}")
        for name, seconds, removed in rows:
            print(f"{name:36} {seconds:9.2f} {removed:10,} {n / seconds:12,.0f}")
        print()
        print(
            f"keel: listed {report['listed']:,}, referenced {report['referenced']:,}, removed "
            f"{report['removed']:,} ({report['bytes_freed']:,} bytes), left {left_keel:,}"
        )
        print(f"keel gc's own work (report.seconds, without the process start): {report['seconds']:.2f} s")
        print(f"git:  left {left_git:,} loose objects")
        print(f"load average while it ran: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"ratio keel gc / git prune: {gc_s / prune_s:.2f}x the time")
    finally:
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                os.chmod(os.path.join(dirpath, name), 0o644)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
