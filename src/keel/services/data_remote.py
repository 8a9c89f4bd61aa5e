"""Remotes: where data objects are shared (a local folder or S3), and moving them.

A remote is an object store with the cache's layout (``ab/cdef...``), so any
keel object store URL works: a path, ``file:///path``,
``s3://bucket/prefix[?endpoint_url=...]`` (credentials the usual AWS ways:
environment, ``~/.aws``, instance roles) or a keel server,
``http(s)://host:port`` (its token from ``KEEL_TOKEN`` or ``keel login``; the
objects land in the server's store, beside its artifacts). Remotes are named in
``.keel/config.toml`` (``[data.remotes]``), which is committed, so a fresh
clone can ``keel data pull`` at once.

Transfers move only what the other side lacks: one batched existence check
(an S3 listing, not a request per object), then the missing objects in
parallel. Every object lands under a temporary name and is renamed into place,
so an interrupted push or pull leaves only whole objects and a rerun
completes it. Trees go last on push: a tree on a remote means the files it
lists are there. Downloads are verified against their hash before they
enter the cache.

A remote that fails (unreachable, no or refused credentials, a missing bucket...)
raises the store's :class:`~keel.errors.KeelError` with the remote's name in front
of its message (:func:`_remote_errors`); an S3 remote that cannot be reached says
where its endpoint is set (``keel remote list``) and how to change it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel.errors import IntegrityError, InvalidInput, KeelError, NotFound, StoreError, Unavailable
from keel.objects import ObjectStore, open_object_store
from keel.services import data_files as files_
from keel.services.data import DataRepo, Tracked
from keel.services.data_config import DataConfig, check_remote_name, read_config, write_config
from keel.services.data_files import os_error
from keel.transport.credentials import normalize_base_url

__all__ = [
    "TransferResult",
    "add_remote",
    "fetch",
    "list_remotes",
    "open_remote",
    "push",
    "refetch_objects",
    "remove_remote",
]

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


@dataclass
class TransferResult:
    """What a push or fetch moved."""

    remote: str = ""
    transferred: int = 0  # objects copied
    bytes: int = 0
    present: int = 0  # objects the destination had already
    not_in_cache: list[str] = field(default_factory=list)  # (push) tracked paths whose objects are not local
    not_on_remote: list[str] = field(default_factory=list)  # (fetch) tracked paths the remote cannot provide

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


# -- configuration ---------------------------------------------------------------------
def list_remotes(root: Path) -> tuple[dict[str, str], str | None]:
    """``({name: url}, default name)``."""
    config = read_config(root)
    return dict(config.remotes), config.default_remote


def add_remote(root: Path, name: str, url: str, default: bool = False, force: bool = False) -> None:
    """Name a remote (and make it the default with ``default``, or if it is the only one)."""
    from keel.errors import AlreadyExists, InvalidInput

    check_remote_name(name)
    if not url.strip():
        raise InvalidInput("the remote URL is empty", "give a folder path or s3://bucket/prefix")
    if "://" in url and not url.startswith(("s3://", "file://", "http://", "https://")):
        raise InvalidInput(
            f"unsupported remote URL {url!r}",
            "use a folder path, file:///path, s3://bucket/prefix or http(s)://keel-server:port",
        )
    if url.startswith(("http://", "https://")):
        url = normalize_base_url(url)
    config = read_config(root)
    if name in config.remotes and config.remotes[name] != url and not force:
        raise AlreadyExists(f"remote {name!r} exists ({config.remotes[name]})", "remove it first, or pass --force")
    config.remotes[name] = url
    if default or len(config.remotes) == 1:
        config.default_remote = name
    write_config(root, config)


def remove_remote(root: Path, name: str) -> None:
    """Forget a remote (its objects stay where they are)."""
    config = read_config(root)
    if name not in config.remotes:
        raise NotFound(f"no remote named {name!r}", "'keel remote list' shows the remotes")
    del config.remotes[name]
    if config.default_remote == name:
        config.default_remote = None
    write_config(root, config)


def open_remote(repo: DataRepo, name: str | None = None, config: DataConfig | None = None) -> tuple[str, ObjectStore]:
    """``(name, store)`` of remote ``name`` (default: the default remote)."""
    name, url = (config or repo.config).remote_url(name)
    with _remote_errors(name, url):
        return name, _open(repo, name, url)


def _open(repo: DataRepo, name: str, url: str) -> ObjectStore:
    if "://" not in url:
        path = Path(url).expanduser()
        if not path.is_absolute():
            path = repo.root / path
        if not path.exists() and not path.parent.is_dir():
            raise StoreError(
                f"remote {name!r} is unreachable: folder {path.parent} does not exist",
                "mount or create it, or fix the URL: keel remote add --force NAME URL",
            )
        url = str(path)
    store = open_object_store(url)
    if url.startswith(("http://", "https://")):
        from keel.objects.http import HttpObjectStore

        if isinstance(store, HttpObjectStore):
            store.pin = True  # the server's gc keeps what this push sends or relies on (docs/gc.md)
    return store


@contextlib.contextmanager
def _remote_errors(name: str, url: str) -> Iterator[None]:
    """Inside: a :class:`~keel.errors.StoreError` or :class:`~keel.errors.InvalidInput`
    (what a store raises when it cannot be used) names remote ``name`` first; an S3
    remote that cannot be reached points at ``keel remote list`` and ``keel remote add
    --force``, where its endpoint is seen and changed. Wrap store calls only: a local
    error (a full cache disk) is not the remote's. Without a ``name``, nothing changes."""
    try:
        yield
    except (StoreError, InvalidInput) as exc:
        if not name or exc.message.startswith(f"remote {name!r}"):
            raise
        hint = exc.hint
        if isinstance(exc, Unavailable) and url.startswith("s3://"):
            hint = (
                "check the endpoint (the remote's URL in 'keel remote list', or AWS_ENDPOINT_URL), the network and"
                f" that the object store is running; change it: keel remote add --force {name} S3_URL?endpoint_url=URL"
            )
        raise _renamed(exc, f"remote {name!r}: {exc.message}", hint) from None


def _renamed(exc: KeelError, message: str, hint: str | None) -> KeelError:
    """A copy of ``exc`` (same class, same fields) with another message and hint."""
    error = type(exc).__new__(type(exc))
    error.__dict__.update(exc.__dict__)
    Exception.__init__(error, message)
    error.message, error.hint = message, hint
    return error


# -- what to move ------------------------------------------------------------------------
def _objects_of(repo: DataRepo, tracked: Tracked) -> tuple[list[str], list[str]]:
    """``(data objects, tree objects)`` of one tracked path (trees must be cached)."""
    pointer = tracked.pointer
    if not pointer.is_dir:
        return [pointer.oid], []
    tree = repo.load_tree(pointer.oid, tracked.data_path, fetch=False)
    return sorted(tree.objects()), [pointer.oid]


def _size(repo: DataRepo, oid: str) -> int:
    try:
        return os.stat(repo.cache.path(oid)).st_size
    except OSError:
        return 0


def _parallel(fn: Callable[[str], int], oids: list[str], jobs: int, total: int, progress: Progress | None) -> int:
    done = 0
    lock = threading.Lock()

    def step(oid: str) -> int:
        nonlocal done
        moved = fn(oid)
        if progress is not None:
            with lock:
                done += moved
                progress(done, total)
        return moved

    if len(oids) <= 1 or jobs <= 1:
        return sum(step(o) for o in oids)
    with ThreadPoolExecutor(min(jobs, len(oids))) as pool:
        return sum(pool.map(step, oids))


def _jobs(remote: ObjectStore, jobs: int | None) -> int:
    return jobs or remote.capabilities.transfer_jobs


# -- push ------------------------------------------------------------------------------------
def push(
    repo: DataRepo,
    remote: str | None = None,
    paths: Sequence[str | os.PathLike[str]] | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> TransferResult:
    """Upload the objects of ``paths`` (default: every tracked path) that the remote lacks."""
    name, store = open_remote(repo, remote)
    url = repo.config.remote_url(name)[1]
    result = TransferResult(remote=name)
    try:
        data: dict[str, None] = {}
        trees: dict[str, None] = {}
        for tracked in repo.select(paths):
            try:
                objects, tree_oids = _objects_of(repo, tracked)
            except NotFound:
                result.not_in_cache.append(tracked.data_path)
                continue
            if not all(repo.has(o) for o in objects):
                result.not_in_cache.append(tracked.data_path)
                objects = [o for o in objects if repo.has(o)]
                tree_oids = []  # an incomplete version never gets its tree on the remote
            data.update(dict.fromkeys(objects))
            trees.update(dict.fromkeys(tree_oids))
        wanted = list(data) + [t for t in trees if t not in data]
        with _remote_errors(name, url):
            present = store.freshen_many(wanted)  # the push relies on them: a gc there keeps them
        result.present = len(present)
        missing_data = [o for o in data if o not in present]
        missing_trees = [o for o in trees if o not in present and o not in data]
        total = sum(_size(repo, o) for o in missing_data)  # what progress counts (trees go after, uncounted)
        n = _jobs(store, jobs)

        def upload(oid: str) -> int:
            with _remote_errors(name, url):
                return _upload(repo, store, oid)

        result.bytes = _parallel(upload, missing_data, n, total, progress)
        result.bytes += _parallel(upload, missing_trees, n, total, None)
        result.transferred = len(missing_data) + len(missing_trees)
    finally:
        store.close()
    return result


def _upload(repo: DataRepo, store: ObjectStore, oid: str) -> int:
    source = repo.cache.path(oid)
    if store.capabilities.link_in:  # a folder: the kernel copies (copy_file_range), no hashing on the way
        tmp = files_.tmp_name(store.tmp_folder())
        try:
            files_.copy_file(str(source), tmp)
            return os.stat(store.commit_file(tmp, oid)).st_size
        except OSError as exc:
            raise os_error(exc, f"cannot copy object {oid[:12]} to {store.url}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    got, size = store.put_file(source)  # hashes as it reads: a corrupt cache object never spreads
    if got != oid:
        raise IntegrityError(
            f"cache object {oid} is corrupt (its content hashes to {got[:12]}); it was not pushed",
            "run 'keel data verify' to find the data it belongs to",
        )
    return size


# -- fetch ------------------------------------------------------------------------------------
def fetch(
    repo: DataRepo,
    remote: str | None = None,
    paths: Sequence[str | os.PathLike[str]] | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> TransferResult:
    """Download the objects of ``paths`` (default: every tracked path) the cache lacks."""
    name, store = open_remote(repo, remote)
    url = repo.config.remote_url(name)[1]
    result = TransferResult(remote=name)
    try:
        with repo.locked():
            selected = repo.select(paths)
            n = _jobs(store, jobs)
            trees = sorted({t.pointer.oid for t in selected if t.pointer.is_dir and not repo.has(t.pointer.oid)})
            with _remote_errors(name, url):
                trees_there = store.exists_many(trees) if trees else set()
            _parallel(lambda o: _download(repo, store, o, "tree", name, url), sorted(trees_there), n, 0, None)
            result.transferred += len(trees_there)
            data: dict[str, None] = {}
            owner: dict[str, str] = {}
            for tracked in selected:
                try:
                    objects, _ = _objects_of(repo, tracked)
                except NotFound:
                    result.not_on_remote.append(tracked.data_path)
                    continue
                for o in objects:
                    data.setdefault(o)
                    owner.setdefault(o, tracked.data_path)
            missing = [o for o in data if not repo.has(o)]
            result.present = len(data) - len(missing)
            with _remote_errors(name, url):
                there = store.exists_many(missing) if missing else set()
            absent = [o for o in missing if o not in there]
            result.not_on_remote += sorted({owner[o] for o in absent} - set(result.not_on_remote))
            todo = [o for o in missing if o in there]
            result.bytes = _parallel(lambda o: _download(repo, store, o, "", name, url), todo, n, 0, progress)
            result.transferred += len(todo)
            _learn_locations(repo, selected)
    finally:
        store.close()
    return result


def _download(repo: DataRepo, store: ObjectStore, oid: str, kind: str = "", name: str = "", url: str = "") -> int:
    tmp = files_.tmp_name(repo.cache.root / "tmp")
    try:
        with _remote_errors(name, url):  # a cache that cannot be written is an OSError: not the remote's
            store.get_file(oid, tmp)  # verified against the hash while it streams
        os.chmod(tmp, files_.READ_ONLY)
        st = os.stat(tmp)
        final = repo.cache.path(oid)
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp, final)
    except OSError as exc:
        raise os_error(exc, f"cannot write object {oid[:12]} to the cache") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    repo.state.set_checked([(oid, st.st_ino, st.st_size, st.st_mtime_ns)])
    repo.record_objects([(oid, kind or "data")])
    return st.st_size


def _learn_locations(repo: DataRepo, selected: list[Tracked]) -> None:
    """Index the packed files of fetched trees, so later adds reuse their packs."""
    rows: list[tuple[str, str, int, int]] = []
    for tracked in selected:
        if not tracked.pointer.is_dir or not repo.has(tracked.pointer.oid):
            continue
        with contextlib.suppress(KeelError):
            tree = repo.load_tree(tracked.pointer.oid, tracked.data_path, fetch=False)
            rows += [(e.oid, e.pack, e.offset, e.size) for e in tree.entries if e.pack]
    if rows:
        repo.state.add_locations(rows)


def refetch_objects(repo: DataRepo, oids: list[str], quiet: bool = False) -> bool:
    """Fetch ``oids`` from the default remote, replacing any (corrupt) cached copy.
    Returns True if every one arrived; with ``quiet`` a missing remote or object is
    not an error."""
    config = repo.config
    if not config.remotes:
        if quiet:
            return False
        raise NotFound(
            f"{len(oids)} object(s) are not in the cache and no remote is configured",
            "add one ('keel remote add -d NAME URL') and run 'keel data pull'",
        )
    try:
        name, store = open_remote(repo, None)
    except KeelError:
        if quiet:
            return False
        raise
    url = config.remote_url(name)[1]
    try:
        with _remote_errors(name, url):
            there = store.exists_many(oids)
        if len(there) != len(set(oids)):
            if quiet:
                return False
            raise NotFound(
                f"{len(set(oids)) - len(there)} object(s) are neither in the cache nor on remote {store.url}",
                "push them from a clone that has them ('keel data push')",
            )
        for oid in oids:
            _download(repo, store, oid, "", name, url)
    except KeelError:
        if quiet:
            return False
        raise
    finally:
        store.close()
    return True
