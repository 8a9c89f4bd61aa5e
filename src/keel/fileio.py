"""Replacing a file atomically: the one way keel writes a file that must never be half-written.

:func:`atomic_write` writes to a new temporary file in the target's own folder
(same file system, so the rename is atomic), named by the target, the
process id and random digits (two processes or threads writing the same
target never share a temporary file), created with ``O_EXCL`` (a file or a
planted symlink at that name is never opened), flushed and fsynced, given its
final permissions, then renamed over the target. If the writer raises (or the
process dies) the target keeps its previous content; the temporary file is
removed (after a crash a ``.NAME.<pid>.<random>.keel-tmp`` file may stay).

Where this lives: its own layer, ``keel.fileio``, between ``keel.transport``
and ``keel.core`` in the import-linter contract (``pyproject.toml``), so that
every layer that writes files may use it (the credentials file in
``keel.transport``, the object stores, the services) while ``keel.core``,
which must stay free of I/O, cannot import it. It depends on the standard
library only.

Errors are the ``OSError`` of the failing step: each caller knows what it was
writing and turns that into its own :class:`~keel.errors.KeelError`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Literal, TextIO, TypeVar, overload

__all__ = ["TEMP_SUFFIX", "atomic_write", "atomic_write_bytes", "atomic_write_text", "pid_alive", "temp_path"]

T = TypeVar("T")

#: How every temporary file of :func:`atomic_write` ends (``.NAME.<pid>.<random>.keel-tmp``).
TEMP_SUFFIX = ".keel-tmp"
_NAME_KEPT = 40  # characters of the target's name kept in the temporary name (NAME_MAX is 255 bytes)
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def _token_hex(nbytes: int) -> str:
    """What ``secrets.token_hex`` returns (``os.urandom``), without importing ``secrets``
    (hmac and OpenSSL's hashlib: ~4 ms of every command's start-up)."""
    return os.urandom(nbytes).hex()


def temp_path(target: str | os.PathLike[str]) -> Path:
    """A fresh temporary name beside ``target``: ``.NAME.<pid>.<12 random hex digits>.keel-tmp``."""
    path = Path(target)
    return path.with_name(f".{path.name[:_NAME_KEPT]}.{os.getpid()}.{_token_hex(6)}{TEMP_SUFFIX}")


def _create(target: Path, mode: int | None) -> tuple[int, Path]:
    # 0o600 while a file with chosen permissions is written (it may hold a secret); else what
    # a plain open() would give (0o666 less the umask).
    create_mode = 0o600 if mode is not None else 0o666
    for _ in range(100):
        tmp = temp_path(target)
        try:
            return os.open(tmp, _FLAGS, create_mode), tmp
        except FileExistsError:  # pragma: no cover - 48 random bits and the pid: practically never
            continue
    raise FileExistsError(f"cannot create a temporary file beside {target}")  # pragma: no cover


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every platform opens folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@overload
def atomic_write(
    target: str | os.PathLike[str],
    write: Callable[[BinaryIO], T],
    *,
    text: Literal[False] = False,
    mode: int | None = None,
    fsync: bool = True,
    encoding: str = "utf-8",
) -> T: ...


@overload
def atomic_write(
    target: str | os.PathLike[str],
    write: Callable[[TextIO], T],
    *,
    text: Literal[True],
    mode: int | None = None,
    fsync: bool = True,
    encoding: str = "utf-8",
) -> T: ...


def atomic_write(
    target: str | os.PathLike[str],
    write: Callable[[BinaryIO], T] | Callable[[TextIO], T],
    *,
    text: bool = False,
    mode: int | None = None,
    fsync: bool = True,
    encoding: str = "utf-8",
) -> T:
    """Replace ``target`` with what ``write(file)`` writes; return what ``write`` returns.

    Args:
        target: the file to replace (its folder must exist).
        write: called once with the open temporary file (binary, or text with
            ``text=True``: ``encoding``, no newline translation).
        mode: the final permissions (e.g. ``0o600`` for a secret, ``0o444`` for a
            read-only object); default: a new file's usual ``0o666`` less the umask.
        fsync: flush the file and the folder to disk before returning (off for
            caches and content whose hash is checked on every read).

    If ``write`` raises, or any step fails, the temporary file is removed, the
    exception propagates and ``target`` is unchanged.
    """
    path = Path(target)
    fd, tmp = _create(path, mode)
    try:
        with os.fdopen(
            fd, "w" if text else "wb", encoding=encoding if text else None, newline="" if text else None
        ) as fh:
            result = write(fh)  # type: ignore[arg-type]
            fh.flush()
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        _sync_folder(path.parent)
    return result


def atomic_write_bytes(
    target: str | os.PathLike[str], data: bytes, *, mode: int | None = None, fsync: bool = True
) -> None:
    """Replace ``target`` with ``data`` (see :func:`atomic_write`)."""
    atomic_write(target, lambda fh: fh.write(data), mode=mode, fsync=fsync)


def atomic_write_text(
    target: str | os.PathLike[str],
    text: str,
    *,
    mode: int | None = None,
    fsync: bool = True,
    encoding: str = "utf-8",
) -> None:
    """Replace ``target`` with ``text`` (encoded, no newline translation; see :func:`atomic_write`)."""
    atomic_write(target, lambda fh: fh.write(text), text=True, mode=mode, fsync=fsync, encoding=encoding)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs: how a temporary or spool file named by its writer's pid
    is known to be abandoned. Another user's process counts as running; 0 and negative
    numbers (process groups to ``kill``) as not."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
