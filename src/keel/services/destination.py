"""Where a file named by stored or received content may be written: inside the chosen folder,
and never through a symlink.

A path that comes from content (an artifact path, a manifest entry, a pointer)
is checked by the pure rules of :func:`keel.core.checks.relative_path_problem`
(relative, no ``..``, no absolute or drive prefix, no backslash, no control
characters), then against the real destination: nothing between the folder
and the file may be a symlink (a link planted there would carry the write
elsewhere), a file may not stand where a folder is needed, nor a folder where
the file goes. The folder the user chose, and the folders above it, are the
user's: symlinks there are followed as usual.

Call :func:`contained_target` for every path of an operation before writing
the first file, so a refused path leaves nothing half-written.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from keel.core.checks import check_relative_path
from keel.errors import InvalidInput

__all__ = ["contained_target"]

_SYMLINK_HINT = "keel never writes through a symlink: remove the link or choose another destination"


def contained_target(root: str | os.PathLike[str], relative: str, what: str = "path", limit: int = 4096) -> Path:
    """``root / relative`` if writing there stays inside ``root`` without following a symlink.

    Raises InvalidInput if ``relative`` is not a contained relative path, if a
    symlink (or a non-folder) stands on the way below ``root``, if the target is
    a folder or a symlink, or if ``root`` itself is not a folder.
    """
    check_relative_path(relative, what, limit)
    parts = relative.split("/")
    base = Path(os.path.abspath(root))
    if os.path.lexists(base) and not base.is_dir():
        raise InvalidInput(f"destination {root} is not a folder", "choose a folder (it is created if missing)")
    current = base
    last = len(parts) - 1
    for i, part in enumerate(parts):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            break  # nothing exists from here down: no link to follow
        except NotADirectoryError:  # pragma: no cover - the folder check below stops first
            raise InvalidInput(f"{current.parent} is a file where {what} needs a folder", "move it away") from None
        if stat.S_ISLNK(mode):
            raise InvalidInput(f"{what} {relative!r} would be written through the symlink {current}", _SYMLINK_HINT)
        if i < last and not stat.S_ISDIR(mode):
            raise InvalidInput(f"{current} is a file where {what} {relative!r} needs a folder", "move it away")
        if i == last and not stat.S_ISREG(mode):
            raise InvalidInput(
                f"{current} is not a regular file: {what} {relative!r} cannot replace it", "move it away"
            )
    target = base.joinpath(*parts)
    if not target.resolve().is_relative_to(base.resolve()):  # the platform's own rules, as a last guard
        raise InvalidInput(f"{what} {relative!r} would land outside {root}", "paths must stay inside the destination")
    return Path(root).joinpath(*parts)
