"""Where a file named by stored or received content may be written: inside the chosen folder,
and never through a symlink.

A path that comes from content (an artifact path, a tree manifest entry, a
pointer, an imported file) is checked by the pure rules of
:func:`keel.core.checks.relative_path_problem` (relative, no ``..``, no
absolute or drive prefix, no backslash, no control characters), then against
the real destination: nothing between the folder and the file may be a
symlink (a link planted there would carry the write elsewhere), a file may
not stand where a folder is needed, nor a folder or a symlink where the file
goes. The folder the user chose, and the folders above it, are the user's:
symlinks there are followed as usual.

- :func:`contained_target`: one path (an artifact download).
- :class:`Destination`: many paths below one folder (a checkout of 20,000
  files): the pure rules run over all paths at once, and each folder on the
  way is looked at once, not once per file.

Check every path of an operation before writing the first file, so a refused
path leaves nothing half-written. ``--force`` never skips these checks.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Sequence
from pathlib import Path

from keel.core.checks import relative_paths_problem
from keel.errors import InvalidInput

__all__ = ["Destination", "contained_target"]

_SYMLINK_HINT = "keel never writes through a symlink: remove the link or choose another destination"
_PATH_HINT = "paths are relative, '/'-separated, without '.', '..', empty parts, backslashes or control characters"


class Destination:
    """A folder that files named by content are written into (see the module docstring).

    Args:
        root: the folder (created later if missing; a file there is refused).
        what: what the paths are, for messages (``"artifact path"``, ``"data path"``).
        limit: the longest path accepted, in characters.
    """

    def __init__(self, root: str | os.PathLike[str], what: str = "path", limit: int = 4096) -> None:
        self.root = root
        self.base = os.path.abspath(root)
        self.what = what
        self.limit = limit
        if os.path.lexists(self.base) and not os.path.isdir(self.base):
            raise InvalidInput(f"destination {root} is not a folder", "choose a folder (it is created if missing)")
        self._folders: set[str] = {""}  # folders (relative) found to be real folders, or absent

    def check(self, paths: Sequence[str], *, files: bool = True, removed: Collection[str] = ()) -> None:
        """Raise InvalidInput unless every one of ``paths`` may be written below the root.

        ``files=False`` skips looking at the files themselves (one ``lstat`` each): for a
        caller that writes by renaming a new file into place (a rename replaces a link, it
        never follows it) and has already looked at what is there. ``removed``: regular
        files the caller deletes before writing (a folder may take their place).
        """
        found = relative_paths_problem(paths, self.limit)
        if found is not None:
            raise InvalidInput(f"{self.what} {found[1]}", _PATH_HINT)
        known = self._folders
        for relative in paths:
            folder = relative.rpartition("/")[0]
            if folder not in known:
                self._check_folder(folder, relative, removed)
            if files:
                self._check_file(relative)

    def target(self, relative: str) -> Path:
        """``root / relative`` after :meth:`check`."""
        self.check([relative])
        return Path(self.root).joinpath(*relative.split("/"))

    def path(self, relative: str) -> str:
        """The absolute path of an already checked ``relative``."""
        return f"{self.base}/{relative}"

    def _check_folder(self, folder: str, relative: str, removed: Collection[str]) -> None:
        known = self._folders
        parts = folder.split("/")
        prefix = ""
        for i, part in enumerate(parts):
            prefix = f"{prefix}/{part}" if prefix else part
            if prefix in known:
                continue
            current = f"{self.base}/{prefix}"
            try:
                if prefix in removed:
                    raise FileNotFoundError(current)
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                # Nothing from here down exists: no link to follow (the writer creates the folders).
                rest = prefix
                known.add(rest)
                for later in parts[i + 1 :]:
                    rest = f"{rest}/{later}"
                    known.add(rest)
                return
            except NotADirectoryError:  # pragma: no cover - the folder check below stops first
                raise InvalidInput(
                    f"{current} is not a folder: {self.what} {relative!r} needs one", "move it away"
                ) from None
            if stat.S_ISLNK(mode):
                raise InvalidInput(
                    f"{self.what} {relative!r} would be written through the symlink {current}", _SYMLINK_HINT
                )
            if not stat.S_ISDIR(mode):
                raise InvalidInput(f"{current} is a file where {self.what} {relative!r} needs a folder", "move it away")
            known.add(prefix)

    def _check_file(self, relative: str) -> None:
        current = f"{self.base}/{relative}"
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode):
            raise InvalidInput(
                f"{self.what} {relative!r} would be written through the symlink {current}", _SYMLINK_HINT
            )
        if not stat.S_ISREG(mode):
            raise InvalidInput(
                f"{current} is not a regular file: {self.what} {relative!r} cannot replace it", "move it away"
            )


def contained_target(root: str | os.PathLike[str], relative: str, what: str = "path", limit: int = 4096) -> Path:
    """``root / relative`` if writing there stays inside ``root`` without following a symlink.

    Raises InvalidInput if ``relative`` is not a contained relative path, if a
    symlink (or a non-folder) stands on the way below ``root``, if the target is
    a folder or a symlink, or if ``root`` itself is not a folder.
    """
    destination = Destination(root, what, limit)
    target = destination.target(relative)
    base = Path(destination.base)
    if not base.joinpath(*relative.split("/")).resolve().is_relative_to(base.resolve()):  # a last guard
        raise InvalidInput(f"{what} {relative!r} would land outside {root}", "paths must stay inside the destination")
    return target
