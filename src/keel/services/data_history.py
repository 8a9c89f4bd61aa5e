"""History sources: data tracked by another tool's files, resolved to keel versions.

A repository that moved to keel from another tool (DVC) has commits whose data
is named only in that tool's files. An importer that knows those files
registers a :class:`HistorySource`, and data versioning asks the sources that
apply to a workspace (``marker`` exists in it) for what they track. Data
versioning itself knows no tool: the DVC importer registers its source in
:mod:`keel.services.importers.dvc_hook`, which :mod:`keel.sdk.data` imports.

A source is registered with its marker and a loader, so the registration
costs nothing in a workspace where the marker is absent (the loader imports the
source's module only when it is used).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from keel.core.data_pointer import Pointer
    from keel.services.data_workspace import Tracked, Workspace

__all__ = ["Disagreement", "HistorySource", "register_history_source", "sources_for"]


@dataclass(frozen=True)
class Disagreement:
    """Another tool's file and keel's pointer name different data for one path (a ``.dvc``
    file after ``dvc add``, while ``PATH.keel`` still names the version keel recorded).

    ``other_says`` and ``keel_says`` are short descriptions of each version;
    ``other_matches_workspace``: True/False when known (the other tool's hash of the
    workspace bytes was computed), None when not."""

    path: str
    other_file: str
    other_says: str
    keel_file: str
    keel_says: str
    other_matches_workspace: bool | None = None

    def message(self, keel_matches_workspace: bool | None = None) -> str:
        """One line: which file says what, and which of them the workspace holds when known."""

        def holds(matches: bool | None) -> str:
            return "" if matches is None else ("; the workspace holds it" if matches else "; not the workspace")

        return (
            f"{self.other_file} and {self.keel_file} disagree about {self.path}: "
            f"{self.other_file} says {self.other_says}{holds(self.other_matches_workspace)}, "
            f"{self.keel_file} says {self.keel_says}{holds(keel_matches_workspace)}"
        )


class HistorySource(Protocol):
    """What another tool's files track, as keel pointers."""

    def tracked(self, workspace: Workspace, exclude: set[str]) -> list[Tracked]:
        """The data the working tree's files of the tool track (``exclude``: data paths
        that a keel pointer tracks), resolved to keel versions."""
        ...

    def history_pointers(self, workspace: Workspace) -> list[Pointer]:
        """Pointers for every version any commit's files of the tool name (what ``gc
        --all-commits`` keeps)."""
        ...

    def disagreements(self, workspace: Workspace, tracked: list[Tracked]) -> list[Disagreement]:
        """The paths of ``tracked`` (keel pointers) that a file of the tool names at other data."""
        ...


@dataclass(frozen=True)
class _Registered:
    name: str
    marker: str  # a path relative to the workspace root
    load: Callable[[], HistorySource]


_SOURCES: dict[str, _Registered] = {}


def register_history_source(name: str, marker: str, load: Callable[[], HistorySource]) -> None:
    """Register (or replace) source ``name``, used in workspaces holding ``marker``
    (say ``.dvc``); ``load()`` returns it when it is first needed."""
    _SOURCES[name] = _Registered(name, marker, load)


def sources_for(root: str | os.PathLike[str]) -> list[HistorySource]:
    """The registered sources whose marker exists in the workspace at ``root``."""
    base = Path(root)
    return [s.load() for s in _SOURCES.values() if os.path.exists(base / s.marker)]
