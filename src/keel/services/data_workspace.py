"""The workspace side of data versioning: paths, pointer files and the data lock.

:class:`Workspace` is what every data command shares about the folder it works
in: its root, ``.keel/data/`` (local state, ignored by git), the workspace's
one data lock, and the pointer files (``PATH.keel``) that say which version of
each tracked path the working tree should hold. :meth:`Workspace.select` turns
what a user typed (data paths, pointer files, paths inside a tracked folder)
into :class:`Tracked` entries; data that only another tool's files track (a
commit from before ``keel import dvc``) comes from the registered history
sources (:mod:`keel.services.data_history`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.core.data_pointer import POINTER_SUFFIX, Pointer, format_pointer, parse_pointer
from keel.errors import Conflict, InvalidInput, KeelError, NotFound
from keel.services import data_files as files_
from keel.services.data_config import DIRNAME
from keel.services.data_files import os_error
from keel.services.data_history import sources_for

__all__ = ["JOURNAL", "Tracked", "Workspace", "conflict", "read_journal"]

JOURNAL = "checkout.journal"  # in .keel/data/: what a running checkout changes and creates in place


def read_journal(path: str | os.PathLike[str]) -> tuple[set[str], set[str]]:
    """What an interrupted checkout was doing (empty if the last one ended): ``(paths it
    was creating, tracked paths it was changing)``. Tracked paths are the lines starting
    with ``/`` (a workspace path never does); a journal from before they were listed has
    only the first kind."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [line for line in fh.read().split("\n") if line]
    except (FileNotFoundError, UnicodeDecodeError):
        return set(), set()
    except OSError as exc:
        raise os_error(exc, f"cannot read {path}") from exc
    return {x for x in lines if x[0] != "/"}, {x[1:] for x in lines if x[0] == "/" and len(x) > 1}


@dataclass(frozen=True)
class Tracked:
    """A pointer file and the data it stands for (paths relative to the workspace)."""

    pointer_path: str
    data_path: str
    pointer: Pointer


class Workspace:
    """A workspace folder as data versioning sees it.

    Args:
        root: the workspace folder (holding ``.keel/``).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keel_dir = root / DIRNAME
        self.data_dir = self.keel_dir / "data"
        self.tmp = self.data_dir / "tmp"
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            ignore = self.data_dir / ".gitignore"
            if not ignore.exists():
                ignore.write_text("# keel's local data state (stat cache, object index): never commit it\n*\n")
        except OSError as exc:
            raise os_error(exc, f"cannot create {self.data_dir}") from exc
        self._lock_fh: Any = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the workspace's data lock (one add/checkout/fetch/gc at a time)."""
        if self._lock_fh is not None:
            yield
            return
        fh = open(self.data_dir / "lock", "a+")  # noqa: SIM115 - closed below
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
            self._lock_fh = fh
            yield
        finally:
            self._lock_fh = None
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    # -- paths ---------------------------------------------------------------------
    def rel(self, path: str | os.PathLike[str]) -> str:
        """The workspace-relative ``/`` path of ``path`` (relative to the current folder).

        Raises:
            InvalidInput: the path is outside the workspace, the workspace itself, or in ``.keel/``/``.git/``.
        """
        text = os.fspath(path)
        if "\x00" in text:
            raise InvalidInput(f"{text!r} contains a NUL character", "give the path of a file or folder")
        absolute = os.path.abspath(text)
        parent, name = os.path.split(absolute)
        real = os.path.join(os.path.realpath(parent), name) if name else os.path.realpath(parent)
        root = str(self.root)
        if real == root:
            raise InvalidInput(
                f"{text} is the whole workspace", "track folders or files inside it, e.g. 'keel data add data/'"
            )
        if not real.startswith(root + os.sep):
            raise InvalidInput(
                f"{text} is outside the repository ({root})",
                "keel tracks data inside the workspace: move or copy it in",
            )
        rel = real[len(root) + 1 :].replace(os.sep, "/")
        top = rel.split("/", 1)[0]
        if top in (DIRNAME, ".git"):
            raise InvalidInput(f"{text} is inside {top}/", "keel cannot track its own or git's files")
        return rel

    def abs(self, rel: str) -> str:
        """The absolute path of workspace path ``rel``."""
        return str(self.root / rel)

    # -- pointers ----------------------------------------------------------------------
    def read_pointer(self, pointer_rel: str) -> Pointer:
        """Parse a pointer file of the workspace."""
        path = self.root / pointer_rel
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise NotFound(f"no pointer file {pointer_rel}", "'keel data add PATH' creates it") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read {pointer_rel}: {exc}", "restore it from git") from None
        return parse_pointer(text, pointer_rel)

    def tracked(self, pointer_rel: str) -> Tracked:
        """The :class:`Tracked` of a pointer file.

        Raises:
            InvalidInput: the pointer names data inside ``.keel/`` or a ``.git`` folder
                (a pointer from someone else's repository must not make checkout write there).
        """
        pointer = self.read_pointer(pointer_rel)
        data_path = posixpath.join(posixpath.dirname(pointer_rel), pointer.path)
        parts = data_path.split("/")
        if parts[0] == DIRNAME or ".git" in parts:
            raise InvalidInput(
                f"{pointer_rel} names data inside {'.keel' if parts[0] == DIRNAME else '.git'}/ ({data_path})",
                "keel never writes its data into its own or git's folders: remove or fix the pointer file",
            )
        return Tracked(pointer_rel, data_path, pointer)

    def tracking_ancestor(self, rel: str) -> str | None:
        """The pointer of a tracked folder that contains ``rel``, if any."""
        parts = rel.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            candidate = folder + POINTER_SUFFIX
            if os.path.isfile(self.abs(candidate)):
                try:
                    pointer = self.read_pointer(candidate)
                except KeelError:
                    continue
                if pointer.is_dir and pointer.path == parts[i - 1]:
                    return candidate
        return None

    def all_pointer_files(self) -> list[str]:
        """Every pointer file in the working tree (git's view, or a walk outside git)."""
        from keel.services.data_git import pointer_files

        listed = pointer_files(self.root)
        if listed is not None:
            return [p for p in listed if os.path.isfile(self.abs(p))]
        found: list[str] = []
        stack = [(str(self.root), "")]
        while stack:
            folder, prefix = stack.pop()
            with os.scandir(folder) as entries:
                items = list(entries)
            names = {e.name for e in items}
            for e in items:
                rel = prefix + e.name
                if e.is_dir(follow_symlinks=False):
                    if not prefix and e.name in (DIRNAME, ".git"):
                        continue
                    if e.name + POINTER_SUFFIX not in names:  # do not walk into tracked data
                        stack.append((e.path, rel + "/"))
                elif e.name.endswith(POINTER_SUFFIX) and e.is_file(follow_symlinks=False):
                    found.append(rel)
        return sorted(found)

    def select(self, paths: Sequence[str | os.PathLike[str]] | None) -> list[Tracked]:
        """The tracked data named by ``paths`` (data paths, pointer files, or paths inside a
        tracked folder); every tracked path when ``paths`` is empty."""
        if not paths:
            tracked = [self.tracked(p) for p in self.all_pointer_files()]
            return tracked + self.imported({t.data_path for t in tracked})
        chosen: dict[str, Tracked] = {}
        others: list[Tracked] | None = None
        for path in paths:
            rel = self.rel(path)
            if rel.endswith(POINTER_SUFFIX) and os.path.isfile(self.abs(rel)):
                pointer_rel = rel
            elif os.path.isfile(self.abs(rel + POINTER_SUFFIX)):
                pointer_rel = rel + POINTER_SUFFIX
            else:
                ancestor = self.tracking_ancestor(rel)
                if ancestor is None:
                    others = self.imported(set()) if others is None else others
                    data_rel = rel[: -len(".dvc")] if rel.endswith(".dvc") else rel
                    matches = [t for t in others if data_rel == t.data_path or data_rel.startswith(t.data_path + "/")]
                    if not matches:
                        raise NotFound(
                            f"{path} is not tracked (no {rel}{POINTER_SUFFIX})", "track it: keel data add PATH"
                        )
                    chosen.setdefault(matches[0].pointer_path, matches[0])
                    continue
                pointer_rel = ancestor
            chosen.setdefault(pointer_rel, self.tracked(pointer_rel))
        return list(chosen.values())

    def imported(self, exclude: set[str]) -> list[Tracked]:
        """Data that only another tool's files track (a commit from before ``keel import
        dvc``), from the history sources that apply here; ``exclude``: data paths a
        pointer file tracks."""
        found: list[Tracked] = []
        for source in sources_for(self.root):
            found += source.tracked(self, exclude | {t.data_path for t in found})
        return found

    def write_pointer(self, pointer_rel: str, pointer: Pointer) -> bool:
        """Write a pointer file (atomically) unless it already says the same; True if written."""
        path = self.root / pointer_rel
        text = format_pointer(pointer)
        try:
            if path.read_text() == text:
                return False
        except (FileNotFoundError, UnicodeDecodeError):
            pass
        files_.write_text_atomic(path, text)
        return True


def conflict(paths: Sequence[str], what: str, hint: str) -> Conflict:
    """A Conflict naming up to 10 ``paths``."""
    shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
    return Conflict(f"{what}: {shown}", hint)
