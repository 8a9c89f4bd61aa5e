"""Data versioning: track files and folders next to code, restore any version.

``keel data add PATH`` hashes the data (BLAKE3; a stat cache skips files that
did not change), stores the bytes in the workspace's content-addressed object
store (small files packed, see :mod:`keel.core.data_tree`), writes the pointer
file ``PATH.keel`` for git and adds ``PATH`` to the ``.gitignore`` beside it,
and registers the dataset version in the metadata store.

:class:`DataRepo` is the open workspace every data command shares, made of
small parts, each in the module named for what it holds:

- :mod:`.data_workspace`: paths, pointer files, what is tracked, the data lock;
- :mod:`.data_cache`: the object cache, its state (stat cache, pack index) and
  parsed trees;
- :mod:`.data_add`: the add pipeline (walk, hash, pack, store, pointer);
- :mod:`.data_checkout`: make the workspace match the pointer files;
- :mod:`.data_remote`: push, fetch and pull objects to and from remotes;
- :mod:`.data_maint`: status, diff, gc and verify;
- :mod:`.data_history`: data tracked by another tool's files (registered by importers).

Opening a repository never touches the metadata database; only ``add`` (to
register versions), ``log`` and ``gc`` do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.core.data_tree import Tree
from keel.core.progress import Progress
from keel.services.data_cache import DataCache, trusted
from keel.services.data_config import DataConfig, find_root
from keel.services.data_files import FileStat
from keel.services.data_workspace import Tracked, Workspace, conflict
from keel.services.workspace_config import read_workspace_config

if TYPE_CHECKING:
    from keel.services.data_add import AddResult

__all__ = ["AddResult", "DataRepo", "Tracked", "add", "conflict", "open_repo", "trusted"]


class DataRepo(Workspace, DataCache):
    """An open workspace for data versioning: a :class:`~.data_workspace.Workspace`
    with its :class:`~.data_cache.DataCache` and settings.

    Args:
        root: the workspace folder (holding ``.keel/``).
    """

    def __init__(self, root: Path) -> None:
        Workspace.__init__(self, root)
        settings = read_workspace_config(root)
        data = settings.data
        self.config: DataConfig = DataConfig(data.link, data.default_remote, dict(data.remotes))
        self.server: str | None = settings.store.server  # the keel server it works against, if any
        DataCache.__init__(self, self._cache_dir(settings.store.objects), self.data_dir)

    def _cache_dir(self, objects: str) -> Path:
        """The local object store: the workspace's own when it is a local folder."""
        if objects.startswith("file://"):
            objects = objects[len("file://") :]
        if "://" in objects:
            return self.data_dir / "cache"  # the shared store is remote: keep a local cache
        return (self.keel_dir / objects).resolve()

    def __enter__(self) -> DataRepo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refetch(self, oids: Sequence[str], quiet: bool = False) -> bool:
        """Fetch ``oids`` again from the default remote (replacing corrupt copies);
        True if all arrived. With ``quiet``, a missing remote just returns False."""
        from keel.services.data_remote import refetch_objects

        return refetch_objects(self, list(oids), quiet=quiet)

    def add(
        self, paths: Sequence[str | os.PathLike[str]], link: str | None = None, progress: Progress | None = None
    ) -> list[AddResult]:
        """Track ``paths`` (files or folders): see :func:`keel.services.data_add.add_paths`."""
        from keel.services.data_add import add_paths  # status, checkout and push never load the add pipeline

        return add_paths(self, paths, link, progress)

    def store_tree(self, files: Sequence[FileStat], mode: str = "copy") -> tuple[str, Tree, int]:
        """Store files from outside the workspace as one folder version: see
        :func:`keel.services.data_add.store_tree`."""
        from keel.services.data_add import store_tree

        return store_tree(self, files, mode)


def open_repo(start: str | os.PathLike[str] | None = None) -> DataRepo:
    """The :class:`DataRepo` of the workspace at or above ``start`` (default: here)."""
    return DataRepo(find_root(start))


def add(
    paths: Sequence[str | os.PathLike[str]], link: str | None = None, progress: Progress | None = None
) -> list[AddResult]:
    """Track ``paths`` in the workspace of the current folder (see :meth:`DataRepo.add`)."""
    with open_repo() as repo:
        return repo.add(paths, link, progress)


def __getattr__(name: str) -> Any:
    """``AddResult`` from :mod:`.data_add`, loaded when asked for (status never needs it)."""
    if name == "AddResult":
        from keel.services.data_add import AddResult

        return AddResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
