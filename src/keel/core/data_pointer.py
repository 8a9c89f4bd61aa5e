"""Pointer files: the small, human-readable ``PATH.keel`` files committed to git.

A pointer stands for the data beside it (a file or a directory) and names its
content by hash; the bytes live in keel's object store. The format is a few
``key: value`` lines (a subset of YAML), so a diff of a pointer in a pull
request reads like a sentence::

    # keel data pointer: commit this file to git; the data itself is in keel's store.
    # Restore the data with 'keel data checkout' (or 'keel data pull' from a remote).
    version: 1
    kind: dir
    path: knowledge_base
    oid: 5b0e2c...                  (64 hex digits: BLAKE3)
    size: 91873210
    files: 20000

- ``kind``: ``file`` (``oid`` is the file's content hash) or ``dir`` (``oid``
  is the hash of the directory's tree manifest, see ``keel.core.data_tree``);
- ``path``: the data's name, relative to the pointer's folder (one component);
- ``size``: bytes of data (for a directory, of all its files);
- ``files``: number of files (directories only);
- ``executable``: ``true`` for a file whose user-executable bit is set (git's
  ``100755``, DVC 3's ``isexec``). Written only when true, so the pointer of an
  ordinary file reads as it always did, and a pointer without the line (every
  pointer written before modes were versioned) means "not executable". A
  folder's modes are in its tree (:mod:`keel.core.data_tree`), not here. The
  mode is not part of ``oid``: the same bytes are one object whatever their mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from keel.core.checks import INT64_MAX, MAX_PATH_COMPONENT_BYTES, relative_path_problem, short
from keel.core.hashing import is_oid
from keel.errors import InvalidInput

__all__ = ["POINTER_SUFFIX", "POINTER_VERSION", "Pointer", "format_pointer", "parse_pointer", "pointer_name"]

POINTER_SUFFIX = ".keel"
POINTER_VERSION = 1
KINDS = ("file", "dir")
MAX_NAME = MAX_PATH_COMPONENT_BYTES  # the data's name is one file name

_HEADER = (
    "# keel data pointer: commit this file to git; the data itself is in keel's store.\n"
    "# Restore the data with 'keel data checkout' (or 'keel data pull' from a remote).\n"
)


@dataclass(frozen=True)
class Pointer:
    """What a pointer file says about its data."""

    kind: str  # file | dir
    path: str  # the data's name beside the pointer
    oid: str
    size: int
    files: int = 1
    executable: bool = False  # a file's user-executable bit (folders: per entry, in the tree)

    @property
    def is_dir(self) -> bool:
        """True for a directory (its ``oid`` names a tree manifest)."""
        return self.kind == "dir"


def pointer_name(data_name: str) -> str:
    """The pointer file name for data called ``data_name`` (``kb`` -> ``kb.keel``)."""
    return data_name + POINTER_SUFFIX


def format_pointer(pointer: Pointer) -> str:
    """The text of a pointer file (deterministic: equal pointers, equal bytes)."""
    lines = [
        f"version: {POINTER_VERSION}",
        f"kind: {pointer.kind}",
        f"path: {pointer.path}",
        f"oid: {pointer.oid}",
        f"size: {pointer.size}",
    ]
    if pointer.is_dir:
        lines.append(f"files: {pointer.files}")
    elif pointer.executable:
        lines.append("executable: true")
    return _HEADER + "\n".join(lines) + "\n"


def _check_name(name: str, where: str) -> str:
    """The pointer's ``path``: one contained path component (the rule of
    :func:`keel.core.checks.relative_path_problem`, and no ``/``)."""
    problem = relative_path_problem(name, MAX_NAME) if name else "is missing"
    if problem is None and "/" in name:
        problem = f"{short(name)} has more than one component"
    if problem is not None:
        raise InvalidInput(
            f"{where}: invalid path: the pointer's path {problem}",
            "a pointer's path is the name of the file or folder beside it (no slashes, no '..', "
            "no control characters): restore the pointer file from git",
        )
    return name


def _int(fields: dict[str, str], key: str, where: str) -> int:
    try:
        value = int(fields[key])
    except KeyError:
        raise InvalidInput(f"{where}: the pointer has no {key!r} line", "restore the file from git") from None
    except ValueError:
        raise InvalidInput(f"{where}: {key} {fields[key]!r} is not a number", "restore the file from git") from None
    if value < 0:
        raise InvalidInput(f"{where}: {key} is negative", "restore the file from git")
    if value > INT64_MAX:
        raise InvalidInput(f"{where}: {key} is too large", "restore the file from git")
    return value


def parse_pointer(text: str, where: str = "pointer") -> Pointer:
    """Parse a pointer file's text; ``where`` names it in errors.

    Raises:
        InvalidInput: the text is not a keel pointer (the message says which line is wrong).
    """
    fields: dict[str, str] = {}
    bad: InvalidInput | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            bad = bad or InvalidInput(f"{where}:{number}: expected 'key: value', got {raw!r}", "restore it from git")
            continue
        fields[key.strip()] = value.strip()
    if "version" not in fields or "oid" not in fields:
        raise InvalidInput(f"{where} is not a keel data pointer", "pointer files are written by 'keel data add'")
    if bad is not None:
        raise bad
    version = _int(fields, "version", where)
    if version != POINTER_VERSION:
        raise InvalidInput(
            f"{where} has pointer format version {version}; this keel reads version {POINTER_VERSION}",
            "upgrade keel (pip install -U keel)" if version > POINTER_VERSION else "restore the file from git",
        )
    kind = fields.get("kind", "")
    if kind not in KINDS:
        raise InvalidInput(f"{where}: kind {kind!r} is neither 'file' nor 'dir'", "restore the file from git")
    oid = fields["oid"]
    if not is_oid(oid):
        raise InvalidInput(f"{where}: oid {oid!r} is not a 64-digit hex hash", "restore the file from git")
    path = _check_name(fields.get("path", ""), where)
    size = _int(fields, "size", where)
    files = _int(fields, "files", where) if kind == "dir" else 1
    executable = _executable(fields, kind, where)
    return Pointer(kind=kind, path=path, oid=oid, size=size, files=files, executable=executable)


def _executable(fields: dict[str, str], kind: str, where: str) -> bool:
    """The ``executable`` line: absent or ``false`` (not executable), ``true``; files only."""
    value = fields.get("executable")
    if value is None:
        return False
    if value not in ("true", "false"):
        raise InvalidInput(f"{where}: executable {value!r} is neither 'true' nor 'false'", "restore the file from git")
    if kind == "dir":
        raise InvalidInput(
            f"{where}: a folder's pointer has an 'executable' line",
            "a folder's file modes are in its tree: restore the pointer file from git",
        )
    return value == "true"
