"""``keel.data``: version data next to code (the DVC workflow, faster).

::

    from keel.sdk import data

    data.add(["data/training_set.jsonl", "data/knowledge_base"])   # writes *.keel pointer files
    data.add_remote("storage", "s3://my-bucket/keel-store", default=True)
    data.push()
    # ... git checkout v1.0 ...
    data.checkout()                     # the workspace's data == v1.0's
    data.status()                       # what changed since the last add
    data.diff("v1.0", "v2.0")           # files added / removed / modified between revisions

Every function works on the workspace (``.keel/``) at or above the current
folder, or at ``root``. Runs record the exact data they used with
``run.use_dataset(path)``; :func:`log` lists a path's versions and those runs.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.services import data as _data
from keel.services.importers import dvc_hook as _dvc_hook  # noqa: F401 - registers DVC history with data

if TYPE_CHECKING:
    from keel.services.data import AddResult
    from keel.services.data_checkout import CheckoutResult
    from keel.services.data_maint import DataChange, GcResult, PathStatus, VerifyProblem
    from keel.services.data_remote import Progress, TransferResult
    from keel.services.data_versions import DatasetVersion

# Each command imports only the service module it needs (start-up time of the CLI).
_LAZY = {
    "AddResult": "keel.services.data",
    "CheckoutResult": "keel.services.data_checkout",
    "DataChange": "keel.services.data_maint",
    "GcResult": "keel.services.data_maint",
    "PathStatus": "keel.services.data_maint",
    "VerifyProblem": "keel.services.data_maint",
    "Progress": "keel.services.data_remote",
    "TransferResult": "keel.services.data_remote",
    "DatasetVersion": "keel.services.data_versions",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AddResult",
    "CheckoutResult",
    "DataChange",
    "DatasetVersion",
    "GcResult",
    "PathStatus",
    "TransferResult",
    "VerifyProblem",
    "add",
    "add_remote",
    "checkout",
    "diff",
    "fetch",
    "gc",
    "log",
    "pull",
    "push",
    "remotes",
    "remove_remote",
    "status",
    "unprotect",
    "verify",
]

Paths = Sequence[str | os.PathLike[str]] | None
Root = str | os.PathLike[str] | None


def _repo(root: Root) -> _data.DataRepo:
    return _data.open_repo(root)


def _server_session(folder: Path) -> Any:
    """The session of the keel server this workspace works against (``KEEL_URI=http...`` or
    ``keel init --store http://...``), else None: dataset versions are registered there too."""
    from keel.sdk.remote import is_server_url
    from keel.services.workspace_config import read_workspace_config

    # (not keel.services.workspace.workspace_server: importing that module loads the database layer)
    if not (is_server_url(os.environ.get("KEEL_URI")) or read_workspace_config(folder).store.server):
        return None
    from keel.sdk.session import get_session

    return get_session(create=False)


def add(
    paths: Sequence[str | os.PathLike[str]] | str,
    link: str | None = None,
    root: Root = None,
    progress: Progress | None = None,
) -> list[AddResult]:
    """Track files or folders: store their content, write ``PATH.keel`` and ``.gitignore``
    entries, register the versions (in the workspace, and on its keel server if it has one).
    Unchanged files are not re-read (stat cache). ``progress(done, total)``: bytes hashed."""
    with _repo(root) as repo:
        results = repo.add([paths] if isinstance(paths, str | os.PathLike) else paths, link, progress)
        server = _server_session(repo.root)
        if server is not None and results:
            from keel.services.data_git import head_commit

            commit = head_commit(repo.root)
            server.datasets.register([(r.path, r.oid, r.kind, r.size, r.files, commit) for r in results])
        return results


def status(paths: Paths = None, root: Root = None) -> list[PathStatus]:
    """Each tracked path compared with its pointer file (``ok``, ``modified``, ``missing``)."""
    from keel.services import data_maint as _maint

    with _repo(root) as repo:
        return _maint.status(repo, paths)


def diff(rev_a: str | None = None, rev_b: str | None = None, root: Root = None) -> list[DataChange]:
    """Tracked data changed between git revisions ``rev_a`` (default HEAD) and ``rev_b``
    (default: the working tree's pointer files)."""
    from keel.services import data_maint as _maint

    with _repo(root) as repo:
        return _maint.diff(repo, rev_a, rev_b)


def checkout(
    paths: Paths = None,
    force: bool = False,
    link: str | None = None,
    root: Root = None,
    progress: Progress | None = None,
) -> CheckoutResult:
    """Make the workspace's data match the pointer files. Refuses to overwrite changes
    that are not in the cache unless ``force``. ``progress(done, total)``: files written."""
    from keel.services import data_checkout as _checkout

    with _repo(root) as repo:
        return _checkout.checkout(repo, paths, force, link, progress)


def unprotect(paths: Sequence[str | os.PathLike[str]], root: Root = None) -> list[str]:
    """Replace linked, read-only files with writable copies (to edit them in place)."""
    from keel.services import data_checkout as _checkout

    with _repo(root) as repo:
        return _checkout.unprotect(repo, paths)


def push(
    paths: Paths = None,
    remote: str | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    root: Root = None,
) -> TransferResult:
    """Upload what the remote lacks of the tracked data (default remote unless ``remote``)."""
    from keel.services import data_remote as _remote

    with _repo(root) as repo:
        return _remote.push(repo, remote, paths, jobs, progress)


def fetch(
    paths: Paths = None,
    remote: str | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    root: Root = None,
) -> TransferResult:
    """Download into the cache what it lacks of the tracked data (the workspace is not changed)."""
    from keel.services import data_remote as _remote

    with _repo(root) as repo:
        return _remote.fetch(repo, remote, paths, jobs, progress)


def pull(
    paths: Paths = None,
    remote: str | None = None,
    force: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
    root: Root = None,
) -> tuple[TransferResult, CheckoutResult]:
    """:func:`fetch`, then :func:`checkout` (``progress``: bytes fetched, then files written)."""
    from keel.core.progress import step
    from keel.services import data_checkout as _checkout
    from keel.services import data_remote as _remote

    with _repo(root) as repo:
        fetched = _remote.fetch(repo, remote, paths, jobs, step(progress, "fetch", "bytes"))
        return fetched, _checkout.checkout(repo, paths, force, None, step(progress, "checkout", "files"))


def gc(all_commits: bool = False, dry_run: bool = False, root: Root = None) -> GcResult:
    """Remove cached data objects that no pointer reaches (the working tree's, or with
    ``all_commits`` any commit's); never what a run or registered version references."""
    from keel.services import data_maint as _maint

    with _repo(root) as repo:
        return _maint.gc(repo, all_commits, dry_run)


def verify(workspace: bool = False, repair: bool = True, root: Root = None) -> tuple[int, list[VerifyProblem]]:
    """Re-hash the cached data (and with ``workspace`` the workspace files);
    ``(objects checked, problems)``. Corrupt objects are refetched when a remote has them."""
    from keel.services import data_maint as _maint

    with _repo(root) as repo:
        return _maint.verify(repo, workspace, repair)


def log(path: str | os.PathLike[str] | None = None, root: Root = None) -> list[DatasetVersion]:
    """Registered versions of a tracked path (every path if None), newest first, with
    the runs that used each."""
    from keel.services.data_versions import open_meta, versions_of

    with _repo(root) as repo:
        rel = None
        if path is not None:
            rel = repo.rel(path)
            if rel.endswith(".keel"):
                rel = rel[: -len(".keel")]
        server = _server_session(repo.root)
        if server is not None:
            return list(server.datasets.versions(rel))
        return versions_of(open_meta(repo.root), rel)


def remotes(root: Root = None) -> tuple[dict[str, str], str | None]:
    """``({name: url}, default name)`` of the configured remotes."""
    from keel.services import data_remote as _remote

    return _remote.list_remotes(_data.find_root(root))


def add_remote(name: str, url: str, default: bool = False, force: bool = False, root: Root = None) -> None:
    """Name a remote (a folder path or ``s3://bucket/prefix``); ``default`` makes push
    and pull use it. Stored in ``.keel/config.toml``, which belongs in git."""
    from keel.services import data_remote as _remote

    _remote.add_remote(_data.find_root(root), name, url, default, force)


def remove_remote(name: str, root: Root = None) -> None:
    """Forget a remote."""
    from keel.services import data_remote as _remote

    _remote.remove_remote(_data.find_root(root), name)


def workspace_root(root: Root = None) -> Path:
    """The workspace folder data commands use."""
    return _data.find_root(root)
