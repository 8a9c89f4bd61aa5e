"""The local object store: a directory with fan-out ``ab/cdef...`` files.

Writes go to a temp file inside the store's ``tmp/`` folder (same filesystem)
and are renamed into place, so a crash never leaves a partial object under a
real name. Stored files are made read-only. A file is never modified after
it is written; identical content is written once.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from keel.core.hashing import is_oid, new_hasher
from keel.errors import NotFound, StoreError, Unavailable
from keel.fileio import pid_alive
from keel.objects.base import CHUNK, Capabilities, ObjectInfo, ObjectStore, check_oid

__all__ = ["LocalObjectStore"]

_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
_NAME = re.compile(r"[0-9a-f]{62}").fullmatch  # an object file's name under its fan-out folder
_OID = re.compile(r"[0-9a-f]{64}").fullmatch
_TRASH = "gc-"  # tmp/gc-<pid>-<oid>: an object being deleted by gc (see LocalObjectStore.prune)


class LocalObjectStore(ObjectStore):
    """Objects as read-only files under ``root/ab/cdef...``."""

    capabilities = Capabilities(local_path=True, link_in=True, transfer_jobs=4)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = str(self.root)
        try:
            (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the object store at {self.root}: {exc.strerror}",
                "check the path and its permissions",
            ) from exc

    def path(self, oid: str) -> Path:
        """The file that holds ``oid`` (whether or not it exists)."""
        return self.root / oid[:2] / oid[2:]

    def describe(self, oid: str) -> str:
        return str(self.path(oid))

    def ping(self, timeout: float = 2.0) -> None:
        """Raise Unavailable unless the store's folder is there and writable (a disk that
        was unmounted or remounted read-only)."""
        tmp = self.root / "tmp"
        if not (tmp.is_dir() and os.access(tmp, os.W_OK | os.X_OK)):
            raise Unavailable(
                f"the object store folder {self.root} is missing or not writable",
                "check the disk and its mount",
                dependency="objects",
            )

    def exists(self, oid: str) -> bool:
        return is_oid(oid) and os.path.isfile(self.root / oid[:2] / oid[2:])

    def _commit_tmp(self, tmp: str, oid: str) -> None:
        final = self.path(oid)
        final.parent.mkdir(exist_ok=True)
        os.chmod(tmp, _READ_ONLY)
        os.replace(tmp, final)

    def tmp_folder(self) -> Path:
        return self.root / "tmp"

    def commit_file(self, tmp: str | os.PathLike[str], oid: str) -> Path:
        self._commit_tmp(os.fspath(tmp), check_oid(oid))
        return self.path(oid)

    def _write(self, oid: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            self._commit_tmp(tmp, oid)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def put_file(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        # One pass: hash while copying into the temp file, then rename.
        hasher = new_hasher()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp")
        try:
            with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    hasher.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
            oid = hasher.hexdigest()
            if not self.freshened(oid):
                self._commit_tmp(tmp, oid)
            return oid, size
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _read(self, oid: str) -> bytes:
        try:
            return self.path(oid).read_bytes()
        except FileNotFoundError:
            raise NotFound(
                f"object {oid} is not in the store at {self.root}",
                "pull it from a remote, or check the id",
            ) from None

    def _copy_to(self, oid: str, out: BinaryIO) -> None:
        try:
            src = open(self.path(check_oid(oid)), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise NotFound(f"object {oid} is not in the store at {self.root}", "check the id") from None
        with src:
            self._copy_verified(oid, iter(lambda: src.read(CHUNK), b""), out)

    def open_stream(self, oid: str, size: int = CHUNK) -> tuple[int | None, Iterator[bytes]]:
        """``(stored size, chunks)``: the file of ``oid`` read ``size`` bytes at a time,
        unverified (the reader hashes them), no copy. Raises NotFound at once if it is absent;
        the file is closed when the chunks end or are closed."""
        try:
            src = open(self.path(check_oid(oid)), "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            raise NotFound(f"object {oid} is not in the store at {self.root}", "check the id") from None
        length = os.fstat(src.fileno()).st_size

        def chunks() -> Iterator[bytes]:
            with src:
                yield from iter(lambda: src.read(size), b"")

        return length, chunks()

    def sweep_tmp(self, older_than: float) -> tuple[int, int]:
        """Remove the files of the store's ``tmp/`` folder untouched for ``older_than``
        seconds (left by a process killed while writing); ``(files, bytes)`` removed."""
        removed = size = 0
        now = time.time()
        folder = self.root / "tmp"
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return 0, 0
        for entry in entries:
            if entry.name.startswith(_TRASH):  # an object a killed gc was deleting: put back, never lost
                self.restore_pruned()
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode) or now - info.st_mtime < older_than:
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed += 1
            size += info.st_size
        return removed, size

    def iter_oids(self) -> Iterator[str]:
        for fan in sorted(os.listdir(self.root)):
            if len(fan) != 2 or fan == "tmp":
                continue
            for name in sorted(os.listdir(self.root / fan)):
                yield fan + name

    # -- listing, freshening and deleting ----------------------------------------------------
    def iter_objects(self) -> Iterator[ObjectInfo]:
        """Every object file with its size and mtime (one ``stat`` each, from ``scandir``);
        names that are not object ids (a stray file) are skipped, never reported."""
        root = str(self.root)
        for fan in sorted(os.listdir(root)):
            if len(fan) != 2 or fan == "tmp" or _OID(fan * 32) is None:
                continue
            try:
                entries = list(os.scandir(f"{root}/{fan}"))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if _NAME(entry.name) is None:
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # deleted since the folder was read
                    continue
                if stat.S_ISREG(info.st_mode):
                    yield ObjectInfo(fan + entry.name, info.st_size, info.st_mtime)

    def info(self, oid: str) -> ObjectInfo | None:
        """The size and mtime of ``oid`` (one ``lstat``), None if it is absent."""
        if _OID(oid) is None:
            check_oid(oid)  # raises
        try:
            found = os.lstat(f"{self.root}/{oid[:2]}/{oid[2:]}")
        except FileNotFoundError:
            return None
        return ObjectInfo(oid, found.st_size, found.st_mtime)

    def freshen(self, oid: str) -> None:
        self.freshened(oid)

    def freshened(self, oid: str) -> bool:
        """One ``utime``: it both checks that the object is there and makes it young. Its
        owner may set the time of a read-only file; an object written by another OS user
        (a shared folder) that cannot be touched is reported stored, not fresh."""
        if not is_oid(oid):
            return False
        try:
            os.utime(self.root / oid[:2] / oid[2:])
        except FileNotFoundError:
            return False
        except PermissionError:
            return self.exists(oid)
        return True

    def freshen_many(self, oids: Iterable[str]) -> set[str]:
        return {oid for oid in set(oids) if self.freshened(oid)}

    def delete_many(self, oids: Iterable[str]) -> int:
        """Unlink the files of ``oids`` (read-only files go: unlinking needs the folder's
        write permission, not the file's); the bytes freed. Absent ones are skipped."""
        freed = 0
        for oid in oids:
            path = self.path(check_oid(oid))
            try:
                size = os.lstat(path).st_size
                os.unlink(path)
            except FileNotFoundError:
                continue
            freed += size
        return freed

    def restore_pruned(self) -> int:
        """Put back the objects a gc killed mid-delete left in ``tmp/`` (renamed there, not yet
        unlinked: one of them may have been freshened by a writer a moment before); how many.
        Those of a live process (this one included) are left to it. An unreferenced one comes
        back and goes at the next gc."""
        restored = 0
        try:
            names = [n for n in os.listdir(self.root / "tmp") if n.startswith(_TRASH)]
        except FileNotFoundError:
            return 0
        for name in names:
            pid, _, oid = name[len(_TRASH) :].partition("-")
            if not (pid.isdigit() and is_oid(oid)) or int(pid) == os.getpid() or pid_alive(int(pid)):
                continue
            final = self.path(oid)
            try:
                final.parent.mkdir(exist_ok=True)
                os.rename(self.root / "tmp" / name, final)
            except FileNotFoundError:
                continue
            restored += 1
        return restored

    def prune(self, infos: Iterable[ObjectInfo], fresh_after: float) -> list[ObjectInfo]:
        """Delete the listed objects not written or freshened after ``fresh_after``, with no
        window for a writer to lose: each file is first renamed into ``tmp/``, then its time
        is read; a writer that freshened it before the rename made it young (it is renamed
        back), one that comes after finds it absent and stores it again.

        Three system calls an object (rename, stat, unlink), each relative to an open folder
        (``dir_fd``) so the kernel resolves one name, not the store's whole path: on a
        million objects the path walks were most of gc's time."""
        removed: list[ObjectInfo] = []
        trash_prefix = f"{_TRASH}{os.getpid()}-"
        folders: dict[str, int] = {}
        tmp_fd = os.open(self.root / "tmp", os.O_RDONLY | os.O_DIRECTORY)
        try:
            for info in infos:
                oid = info.oid
                if _OID(oid) is None:
                    check_oid(oid)  # raises
                fan = oid[:2]
                fan_fd = folders.get(fan)
                if fan_fd is None:
                    try:
                        fan_fd = folders[fan] = os.open(self.root / fan, os.O_RDONLY | os.O_DIRECTORY)
                    except FileNotFoundError:
                        continue
                name, trash = oid[2:], trash_prefix + oid
                try:
                    os.rename(name, trash, src_dir_fd=fan_fd, dst_dir_fd=tmp_fd)
                except FileNotFoundError:
                    continue
                try:
                    now = os.lstat(trash, dir_fd=tmp_fd)
                    if now.st_mtime > fresh_after:  # young, or freshened before the rename
                        os.rename(trash, name, src_dir_fd=tmp_fd, dst_dir_fd=fan_fd)  # (a copy stored
                        continue  # meanwhile has the same bytes)
                    os.unlink(trash, dir_fd=tmp_fd)
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        os.rename(trash, name, src_dir_fd=tmp_fd, dst_dir_fd=fan_fd)
                    raise
                removed.append(ObjectInfo(oid, now.st_size, now.st_mtime))
        finally:
            for fd in (tmp_fd, *folders.values()):
                os.close(fd)
        return removed

    def destroy(self) -> None:
        """Remove the whole store (tests only)."""
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                os.chmod(os.path.join(dirpath, name), stat.S_IWUSR | stat.S_IRUSR)
        shutil.rmtree(self.root)
