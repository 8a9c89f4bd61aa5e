"""Workspace set-up for the SDK and CLI (``keel init``)."""

from __future__ import annotations

import os
from pathlib import Path

from keel.services import workspace as _workspace

__all__ = ["find_workspace", "init_workspace"]


def init_workspace(
    folder: str | os.PathLike[str] | None = None,
    database: str | None = None,
    objects: str | None = None,
    force: bool = False,
) -> Path:
    """Create ``.keel/`` in ``folder`` (default: the current one); see ``keel init``."""
    return _workspace.init_workspace(folder, database, objects, force)


def find_workspace(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest folder at or above ``start`` holding ``.keel/``."""
    return _workspace.find_workspace(start)
