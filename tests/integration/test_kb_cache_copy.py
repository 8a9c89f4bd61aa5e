"""The knowledge-base index cache cannot change answers: ``.keel/cache/kb/<oid>.npy`` is a
read-only copy of the stored object (never a hard link to it), checked by hash before a process
first maps it and again whenever its identity (inode, size, mtime, ctime) changes; a cache file
that does not match its name is rebuilt from the object."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from keel.sdk import kb as kbs
from keel.sdk import session as sessions
from keel.services import kb_index

QUERY = "how do refunds work?"


def _docs() -> list[dict[str, str]]:
    topics = ["refunds", "shipping", "invoices", "passwords"]
    return [{"text": f"How {t} work, case {i}. " * 8, "source": f"{t}-{i}.md"} for i, t in enumerate(topics * 3)]


def _forget_process_state() -> None:
    """What a new process starts with: nothing loaded, nothing checked."""
    sessions.reset()
    kb_index._LOADED.clear()
    kb_index._TABLES.clear()
    kb_index._CHECKED.clear()


def _writable(path: Path) -> None:
    path.chmod(0o644)  # the cache is read-only; its owner (or root) can still chmod it, as an attacker would


def zero(path: Path, _object: Path) -> None:
    _writable(path)
    path.write_bytes(b"\0" * path.stat().st_size)


def edit_in_place_keeping_mtime(path: Path, _object: Path) -> None:
    """Flip the bytes of the last vector and set the mtime back: only ctime tells."""
    st = path.stat()
    _writable(path)
    data = bytearray(path.read_bytes())
    data[-1536:] = bytes(reversed(data[-1536:]))
    with open(path, "r+b") as fh:  # same inode: a memory map of it sees the change
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def hard_link_to_object(path: Path, obj: Path) -> None:
    """What an older keel left: the cache file is the stored object itself."""
    path.unlink()
    os.link(obj, path)


def symlink_to_zeros(path: Path, _object: Path) -> None:
    fake = path.with_name("fake.bin")
    fake.write_bytes(b"\0" * path.stat().st_size)
    path.unlink()
    path.symlink_to(fake)


def delete(path: Path, _object: Path) -> None:
    path.unlink()


Tamper = Callable[[Path, Path], None]


@pytest.fixture
def built(ws: Path) -> tuple[Path, Path, list]:
    """A committed version, searched once: ``(cache file, stored object, hits)``."""
    _forget_process_state()  # an earlier test's workspace may have mapped the same (content-addressed) index
    kb = kbs.create("docs", chunk_size=120, chunk_overlap=0)
    kb.add_documents(_docs())
    version = kb.commit("v1")
    hits = kb.search(QUERY, top_k=4)
    cache = ws / ".keel" / "cache" / "kb" / f"{version.index_oid}.npy"
    obj = sessions.get_session().kb.objects.path(version.index_oid)
    return cache, obj, hits


def _assert_private_copy(cache: Path, obj: Path) -> None:
    st, ost = os.lstat(cache), os.stat(obj)
    assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and (st.st_dev, st.st_ino) != (ost.st_dev, ost.st_ino)
    assert stat.S_IMODE(st.st_mode) == 0o444
    assert cache.read_bytes() == obj.read_bytes()


@pytest.mark.parametrize("ws", ["sqlite-local"], indirect=True)
def test_the_cache_is_a_read_only_copy(built: tuple[Path, Path, list]) -> None:
    cache, obj, _hits = built
    _assert_private_copy(cache, obj)
    assert os.stat(obj).st_nlink == 1  # the object is nobody's link either


@pytest.mark.parametrize("ws", ["sqlite-local"], indirect=True)
@pytest.mark.parametrize("tamper", [zero, edit_in_place_keeping_mtime, hard_link_to_object, symlink_to_zeros, delete])
@pytest.mark.parametrize("process", ["same process (index mapped)", "fresh process state"])
def test_a_tampered_cache_is_rebuilt_not_served(built: tuple[Path, Path, list], tamper: Tamper, process: str) -> None:
    cache, obj, hits = built
    if process == "fresh process state":
        _forget_process_state()
    tamper(cache, obj)
    assert kbs.search("docs@v1", QUERY, top_k=4) == hits
    _assert_private_copy(cache, obj)
    assert obj.read_bytes() != b"\0" * obj.stat().st_size  # the stored object was never touched


@pytest.mark.parametrize("ws", ["sqlite-local"], indirect=True)
def test_zeroed_cache_then_a_new_process_searches_the_same(built: tuple[Path, Path, list], ws: Path) -> None:
    """The issue's reproduction: build the cache, zero it, search in a NEW process."""
    cache, obj, hits = built
    zero(cache, obj)
    code = (
        "import json, keel.sdk.kb as kb;"
        f"print(json.dumps([h.to_dict() for h in kb.search('docs@v1', {QUERY!r}, top_k=4)]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("KEEL_URI", "KEEL_OBJECTS")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ws, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [h.to_dict() for h in hits]
    _assert_private_copy(cache, obj)
