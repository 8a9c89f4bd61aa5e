"""Tree manifests: what a tracked directory holds, and where each file's bytes are.

A directory version is one immutable object, its *tree*: a text manifest
listing every file (path, content hash, size) and its location in the
object store. Small files are *packed*: many files' bytes concatenated into
one stored object (as git packs objects), so adding, pushing, pulling and
checking out 20,000 small files moves a handful of objects, not 20,000.
Larger files are *loose*: one object each, named by their own hash, so a
checkout can link them instead of copying. The format::

    keel-tree 1
    pack 9c1f...                      (pack 0: a stored object of concatenated files)
    pack 47aa...                      (pack 1)
    <oid> <size> 0:0 a/first.txt      (in pack 0 at offset 0)
    <oid> <size> 0:4096 a/second.txt
    <oid> <size> - big/model.bin      (loose: stored as object <oid>)
    <oid> <size> 0:8192:x bin/run.sh  (executable: ':x' after the location)
    <oid> <size> -:x bin/tool         (loose and executable)

A file whose user-executable bit is set (git's ``100755``, DVC 3's ``isexec``)
has ``:x`` after its location; no other permission bit is versioned. The mode
is part of the tree (so of its oid, as a git tree's is), not of the file's
``oid``: the same bytes are one stored object whatever their mode. A tree
without executable files encodes exactly as before modes were versioned, so
every older tree keeps its oid and reads as "no file executable".

Entries are sorted by path (UTF-8 byte order), one per line; paths are
relative, ``/``-separated, and cannot contain a newline. Packs are listed in
first-use order. Equal trees encode to equal bytes, so the tree's hash (the
pointer's ``oid``) names the version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import NamedTuple

from keel.core.checks import INT64_MAX, is_unicode, relative_path_problem, relative_paths_problem
from keel.core.hashing import is_oid
from keel.errors import InvalidInput

__all__ = [
    "PACK_MAX_FILE",
    "PACK_TARGET",
    "Tree",
    "TreeDiff",
    "TreeEntry",
    "MAX_TREE_PATH",
    "check_rel_path",
    "check_tree_paths",
    "diff_entries",
    "group_into_packs",
    "parse_tree",
]

PACK_MAX_FILE = 256 << 10  # files smaller than this go into packs; larger ones are loose objects
PACK_TARGET = 32 << 20  # a pack is closed once it holds this many bytes
_MAGIC = "keel-tree 1"
MAX_TREE_PATH = 4096  # characters of one entry's path (PATH_MAX)
_NOT_HEX = str.maketrans("", "", "0123456789abcdef")  # deletes the hex digits


class TreeEntry(NamedTuple):
    """One file of a tree. ``pack`` is the pack's oid ('' for a loose object)."""

    path: str
    oid: str
    size: int
    pack: str = ""
    offset: int = 0

    @property
    def object_oid(self) -> str:
        """The stored object holding this file's bytes (its pack, or itself)."""
        return self.pack or self.oid


@dataclass
class Tree:
    """A directory version: its entries, sorted by path."""

    entries: list[TreeEntry] = field(default_factory=list)
    executable: frozenset[str] = field(default_factory=frozenset)  # paths of the executable entries

    @property
    def size(self) -> int:
        """Bytes of all files."""
        return sum(e.size for e in self.entries)

    @property
    def packs(self) -> list[str]:
        """The pack objects the entries use, in first-use order."""
        return list(dict.fromkeys(e.pack for e in self.entries if e.pack))

    def objects(self) -> set[str]:
        """Every stored object the tree needs (packs and loose files, not the tree itself)."""
        return {e.pack or e.oid for e in self.entries}

    def by_path(self) -> dict[str, TreeEntry]:
        """Entries keyed by path."""
        return {e.path: e for e in self.entries}

    def encode(self) -> bytes:
        """The manifest's bytes (whose hash is the tree's oid)."""
        entries = sorted(self.entries)  # by path: code-point order is UTF-8 byte order
        packs: dict[str, int] = {}
        for e in entries:
            if e.pack and e.pack not in packs:
                packs[e.pack] = len(packs)
        lines = [_MAGIC]
        lines += [f"pack {p}" for p in packs]
        executable = self.executable
        for e in entries:
            loc = f"{packs[e.pack]}:{e.offset}" if e.pack else "-"
            if executable and e.path in executable:
                loc += ":x"
            lines.append(f"{e.oid} {e.size} {loc} {e.path}")
        return ("\n".join(lines) + "\n").encode("utf-8")


_PATH_HINT = (
    "a tree's paths are relative, '/'-separated, without '.', '..', empty parts, backslashes "
    "or control characters: restore the version from a remote you trust"
)
_NAME_HINT = "rename it: keel tracks files whose paths are relative, without control characters or backslashes"


def check_rel_path(path: str) -> str:
    """``path`` if it can be stored in a tree, else raise InvalidInput.

    The rule is :func:`keel.core.checks.relative_path_problem` (relative, no
    ``.``/``..``/empty component, no backslash, drive prefix or control
    character, valid UTF-8): the same rule every tree is checked against when
    it is read, so a tree keel writes can always be checked out again.
    """
    problem = relative_path_problem(path, MAX_TREE_PATH)
    if problem is not None:
        shown = path.encode("utf-8", "surrogateescape") if isinstance(path, str) and not is_unicode(path) else path
        raise InvalidInput(f"cannot track {shown!r}: its path {problem}", _NAME_HINT)
    return path


def check_tree_paths(paths: Sequence[str], where: str = "tree") -> None:
    """Raise InvalidInput naming the first of ``paths`` that cannot be stored in a tree."""
    found = relative_paths_problem(paths, MAX_TREE_PATH)
    if found is not None:
        raise InvalidInput(f"{where}: cannot track {paths[found[0]]!r}: its path {found[1]}", _NAME_HINT)


def parse_tree(data: bytes, where: str = "tree") -> Tree:
    """Decode a tree manifest; raise InvalidInput if it is malformed."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{where} is not a keel tree manifest (not UTF-8)", "restore it from a remote") from None
    lines = text.split("\n")
    if not lines or lines[0] != _MAGIC:
        raise InvalidInput(f"{where} is not a keel tree manifest", "restore it from a remote")
    packs: list[str] = []
    entries: list[TreeEntry] = []
    executable: list[str] = []
    append = entries.append
    try:
        for number, line in enumerate(lines[1:], 2):
            if not line:
                continue
            if line.startswith("pack "):
                pack = line[5:]
                if not is_oid(pack):
                    raise ValueError(f"bad pack id on line {number}")
                packs.append(pack)
                continue
            oid, size, loc, path = line.split(" ", 3)
            if len(oid) != 64:
                raise ValueError(f"bad object id on line {number}")
            if loc[-2:] == ":x":
                executable.append(path)
                loc = loc[:-2]
            if loc == "-":
                append(TreeEntry(path, oid, int(size)))
            else:
                index, _, offset = loc.partition(":")
                append(TreeEntry(path, oid, int(size), packs[int(index)], int(offset)))
    except (ValueError, IndexError) as exc:
        raise InvalidInput(f"{where} is malformed: {exc}", "restore it from a remote") from None
    if entries:
        _check_columns(entries, lines, where)
    # Every path is checked here, where a manifest enters keel (from the cache, a remote, a
    # server): a tree that names a file outside its folder is refused before anything is written.
    bad = relative_paths_problem([e.path for e in entries], MAX_TREE_PATH)
    if bad is not None:
        path = entries[bad[0]].path
        number = next((n for n, line in enumerate(lines, 1) if line.endswith(" " + path)), 0)
        raise InvalidInput(f"{where}, line {number}: entry path {bad[1]}", _PATH_HINT)
    return Tree(entries, frozenset(executable))


def _check_columns(entries: list[TreeEntry], lines: list[str], where: str) -> None:
    """Object ids are hex (they become file names in the cache), sizes and offsets are
    64-bit and not negative; checked column by column (C loops, not a call per entry)."""
    problem = ""
    if "".join(e.oid for e in entries).translate(_NOT_HEX):  # what is left is not lowercase hex
        problem, bad = "an object id is not 64 hex digits", next(e for e in entries if not is_oid(e.oid))
    else:
        for name, values in (("size", [e.size for e in entries]), ("offset", [e.offset for e in entries])):
            if min(values) < 0 or max(values) > INT64_MAX:
                problem = f"a {name} is negative or too large"
                bad = next(e for e, v in zip(entries, values, strict=True) if not 0 <= v <= INT64_MAX)
                break
    if problem:
        number = next((n for n, line in enumerate(lines, 1) if line.endswith(" " + bad.path)), 0)
        raise InvalidInput(f"{where}, line {number}: {problem}", "restore it from a remote")


@dataclass(frozen=True)
class TreeDiff:
    """Paths added, removed and modified between two versions (sorted).

    ``mode_changed``: files with the same bytes whose executable bit differs
    (``made_executable``: those of them executable on the new side)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    mode_changed: list[str] = field(default_factory=list)
    made_executable: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified or self.mode_changed)

    def to_dict(self) -> dict[str, list[str]]:
        """JSON-ready."""
        return {
            "added": self.added,
            "removed": self.removed,
            "modified": self.modified,
            "mode_changed": self.mode_changed,
            "made_executable": self.made_executable,
        }


def diff_entries(
    old: Mapping[str, str],
    new: Mapping[str, str],
    old_executable: AbstractSet[str] = frozenset(),
    new_executable: AbstractSet[str] = frozenset(),
) -> TreeDiff:
    """Compare two ``{path: oid}`` maps, and (for files in both with the same oid) which
    of their paths are executable on each side."""
    added = sorted(p for p in new if p not in old)
    removed = sorted(p for p in old if p not in new)
    modified = sorted(p for p, oid in new.items() if p in old and old[p] != oid)
    mode_changed: list[str] = []
    if old_executable or new_executable:  # (only the paths whose bit differs are looked at)
        flipped = set(old_executable).symmetric_difference(new_executable)
        mode_changed = sorted(p for p in flipped if p in old and p in new and old[p] == new[p])
    made = [p for p in mode_changed if p in new_executable]
    return TreeDiff(added, removed, modified, mode_changed, made)


def group_into_packs(sizes: Sequence[int], target: int = PACK_TARGET) -> Iterable[range]:
    """Split items (in order) into consecutive runs of about ``target`` bytes each."""
    start = total = 0
    for i, size in enumerate(sizes):
        if total and total + size > target:
            yield range(start, i)
            start, total = i, 0
        total += size
    if start < len(sizes):
        yield range(start, len(sizes))
