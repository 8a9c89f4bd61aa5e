"""The DVC importer's history source: data of commits from before ``keel import dvc``.

Registered with :mod:`keel.services.data_history` when this module is imported
(:mod:`keel.sdk.data` imports it), for workspaces that hold a ``.dvc`` folder;
the DVC file readers (:mod:`.dvc_files`) are imported only when the source is
used. It resolves what DVC files name through the import ledger, so it yields
nothing in a DVC repository nothing was imported from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.services.data_history import register_history_source

if TYPE_CHECKING:
    from keel.core.data_pointer import Pointer
    from keel.services.data_history import Disagreement
    from keel.services.data_workspace import Tracked, Workspace

__all__ = ["DvcHistory"]


class DvcHistory:
    """:class:`~keel.services.data_history.HistorySource` of DVC's ``.dvc`` files and ``dvc.lock``."""

    def tracked(self, workspace: Workspace, exclude: set[str]) -> list[Tracked]:
        """See :func:`keel.services.importers.dvc_files.dvc_tracked`."""
        from keel.services.importers.dvc_files import dvc_tracked

        return dvc_tracked(workspace, exclude)

    def history_pointers(self, workspace: Workspace) -> list[Pointer]:
        """See :func:`keel.services.importers.dvc_files.dvc_history_pointers`."""
        from keel.services.importers.dvc_files import dvc_history_pointers

        return dvc_history_pointers(workspace)

    def disagreements(self, workspace: Workspace, tracked: list[Tracked]) -> list[Disagreement]:
        """See :func:`keel.services.importers.dvc_files.dvc_disagreements`."""
        from keel.services.importers.dvc_files import dvc_disagreements

        return dvc_disagreements(workspace, tracked)


register_history_source("dvc", ".dvc", DvcHistory)
