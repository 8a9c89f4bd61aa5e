"""Data: the versions of tracked data (path, oid, size, files, git commit, time, the runs
that used each), and the diff of two versions of a folder (files added, removed and
modified) read from their tree manifests when the object store holds them."""

from __future__ import annotations

from collections import OrderedDict

from fastapi import Request
from fastapi.responses import HTMLResponse

from keel.core.data_tree import Tree, diff_entries, parse_tree
from keel.errors import InvalidInput, KeelError, NotFound
from keel.server.auth import Context
from keel.server.context import ServerContext
from keel.server.ui.render import add_nav, link_entities, render, url
from keel.server.ui.routing import UIRouter
from keel.server.ui.sessions import Viewer
from keel.services.auth import REGISTRIES
from keel.services.data_versions import DatasetVersion, versions_of

__all__ = ["router"]

router = UIRouter()
add_nav("Data", "/data", order=40)
link_entities("dataset", lambda ref: url("/data", path=ref.id, oid=ref.version or None))

MAX_DIFF_PATHS = 2000  # paths listed per kind of change


def _grouped(versions: list[DatasetVersion]) -> OrderedDict[str, list[DatasetVersion]]:
    groups: OrderedDict[str, list[DatasetVersion]] = OrderedDict()
    for v in sorted(versions, key=lambda v: v.path):
        groups.setdefault(v.path, []).append(v)
    return groups


@router.get("/data")
def data_page(
    request: Request, viewer: Viewer, context: Context, path: str | None = None, oid: str | None = None
) -> HTMLResponse:
    """Every version of tracked data (or of one ``path``), newest first per path."""
    viewer.require(REGISTRIES, "reader")
    versions = versions_of(context.store, path or None)
    if path and not versions:
        raise NotFound(f"no data versions of {path!r}", "track it with 'keel data add PATH'")
    return render(
        request,
        "data.html",
        title=path or "Data",
        groups=_grouped(versions),
        dataset=path or "",
        selected=oid or "",
    )


def _version(versions: list[DatasetVersion], oid: str, path: str) -> DatasetVersion:
    matches = [v for v in versions if v.oid.startswith(oid)] if oid else []
    if len(matches) != 1:
        what = "is ambiguous" if matches else "is not a version"
        raise NotFound(f"{oid!r} {what} of {path!r}", "pick the versions from the data page")
    return matches[0]


def _tree(context: ServerContext, version: DatasetVersion) -> Tree | None:
    """The version's tree manifest, or None when the object store does not hold it."""
    try:
        return parse_tree(context.store.objects.get_bytes(version.oid), f"tree {version.oid[:12]}")
    except NotFound:
        return None


@router.get("/data/diff")
def data_diff_page(
    request: Request, viewer: Viewer, context: Context, path: str = "", a: str = "", b: str = ""
) -> HTMLResponse:
    """Files added, removed and modified between two versions of a tracked folder."""
    viewer.require(REGISTRIES, "reader")
    if not path or not a or not b:
        raise InvalidInput("a data diff needs path, a and b", "pick two versions on the data page")
    versions = versions_of(context.store, path)
    if not versions:
        raise NotFound(f"no data versions of {path!r}", "track it with 'keel data add PATH'")
    old, new = _version(versions, a, path), _version(versions, b, path)
    if old.kind != "dir" or new.kind != "dir":
        raise InvalidInput(f"{path!r} is a file: only folder versions have a file list", "compare two folder versions")
    trees = {}
    missing = []
    for v in (old, new):
        try:
            tree = _tree(context, v)
        except KeelError as exc:
            raise InvalidInput(f"the tree of {v.oid[:12]} cannot be read: {exc.message}", exc.hint) from None
        if tree is None:
            missing.append(v.oid)
        else:
            trees[v.oid] = tree
    changes = None
    sizes: dict[str, tuple[int | None, int | None]] = {}
    if not missing:
        before, after = trees[old.oid].by_path(), trees[new.oid].by_path()
        changes = diff_entries({p: e.oid for p, e in before.items()}, {p: e.oid for p, e in after.items()})
        for p in changes.added:
            sizes[p] = (None, after[p].size)
        for p in changes.removed:
            sizes[p] = (before[p].size, None)
        for p in changes.modified:
            sizes[p] = (before[p].size, after[p].size)
    return render(
        request,
        "data_diff.html",
        title=f"{path}: diff",
        dataset=path,
        old=old,
        new=new,
        changes=changes,
        sizes=sizes,
        missing=missing,
        limit=MAX_DIFF_PATHS,
        versions=[v for v in versions if v.kind == "dir"],
    )
