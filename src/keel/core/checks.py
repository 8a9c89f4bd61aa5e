"""Small checks every validator shares: 64-bit integers, storable text, bounded JSON, contained paths.

Each rule comes in two forms:

- ``*_problem(value, ...)`` returns ``None`` for a good value and a short
  phrase saying what is wrong otherwise (``"is outside the 64-bit integer
  range"``), so a hot loop pays no exception on the good path and the caller
  composes the message (which row, which field);
- ``check_*(value, what, ...)`` returns the value or raises
  :class:`~keel.errors.InvalidInput` whose message names ``what``.

"Storable text" is what every database keel supports can hold and every
reader can decode: a ``str`` without NUL characters (PostgreSQL refuses them)
and without lone surrogates (they cannot be encoded as UTF-8, so SQLite's
driver and every HTTP response would fail on them).

Pure: no I/O. Checks of real file-system destinations (symlinks) live in
:mod:`keel.services.destination`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from keel.errors import InvalidInput

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_JSON_DEPTH",
    "MAX_PATH_COMPONENT_BYTES",
    "check_int64",
    "check_json_text",
    "check_relative_path",
    "check_text",
    "clip_text",
    "int64_problem",
    "is_int64",
    "is_unicode",
    "json_text_problem",
    "nesting_problem",
    "relative_path_problem",
    "relative_paths_problem",
    "short",
    "text_problem",
]

#: The range of the databases' 64-bit integer columns (steps, timestamps, sizes).
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
#: Deepest nesting of a JSON document keel stores (a param value, a run context).
MAX_JSON_DEPTH = 64
#: Longest file or folder name, in UTF-8 bytes (NAME_MAX of common file systems).
MAX_PATH_COMPONENT_BYTES = 255
_SHORT_COMPONENT = MAX_PATH_COMPONENT_BYTES // 4  # characters that cannot exceed it in UTF-8

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_JSON_SPECIAL = re.compile(r'[\[\]{}"\\]')


def short(value: Any, limit: int = 60) -> str:
    """A bounded description of ``value`` for a message: never a 10 MB string, never a deep repr."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value):,} characters)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length():,} bits"
    if value is None or isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes | bytearray | list | tuple | dict | set | frozenset):
        return f"a {type(value).__name__} of {len(value):,} items"
    return f"a {type(value).__name__}"


# -- integers -----------------------------------------------------------------------
def is_int64(value: Any) -> bool:
    """True if ``value`` is an ``int`` (not a bool) that fits a signed 64-bit column."""
    return isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX


def int64_problem(value: Any) -> str | None:
    """What keeps ``value`` from being stored as a 64-bit integer, or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer, not {type(value).__name__} {short(value)}"
    if not INT64_MIN <= value <= INT64_MAX:
        return f"{short(value)} is outside the 64-bit integer range"
    return None


def check_int64(value: Any, what: str) -> int:
    """``value`` if it is a 64-bit integer, else raise InvalidInput naming ``what``."""
    problem = int64_problem(value)
    if problem is not None:
        raise InvalidInput(f"{what} {problem}", f"{what} must be a whole number in [-2**63, 2**63-1]")
    return int(value)


# -- text --------------------------------------------------------------------------
def is_unicode(text: str) -> bool:
    """True if ``text`` encodes as UTF-8 (it holds no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_problem(value: Any, limit: int, *, empty: bool = True, control: bool = True) -> str | None:
    """What keeps ``value`` from being storable text of at most ``limit`` characters, or None.

    ``empty=False`` refuses ``""``; ``control=False`` refuses every control
    character (names and paths), not only NUL.
    """
    if not isinstance(value, str):
        return f"must be text, not {type(value).__name__}"
    if len(value) > limit:
        return f"is {len(value):,} characters long (at most {limit:,})"
    if not value and not empty:
        return "is empty"
    if not control:
        if _CONTROL.search(value):
            return f"{short(value)} contains a control character"
    elif "\x00" in value:
        return f"{short(value)} contains a NUL character"
    if not is_unicode(value):
        return f"{short(value)} is not valid Unicode (it holds a lone surrogate)"
    return None


def check_text(value: Any, what: str, limit: int, *, empty: bool = True, control: bool = True) -> str:
    """``value`` if it is storable text (see :func:`text_problem`), else raise InvalidInput."""
    problem = text_problem(value, limit, empty=empty, control=control)
    if problem is not None:
        raise InvalidInput(f"{what} {problem}", f"{what} must be valid text of at most {limit:,} characters")
    return value  # type: ignore[no-any-return]


def clip_text(text: str, limit: int) -> str:
    """``text`` made storable for a free-text field (an error message): cut to ``limit``
    characters, NUL characters dropped, lone surrogates spelled as ``\\udc80`` escapes."""
    text = text[:limit].replace("\x00", "")
    if not is_unicode(text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")[:limit]
    return text


# -- JSON --------------------------------------------------------------------------
def nesting_problem(text: str, limit: int = MAX_JSON_DEPTH) -> str | None:
    """None if the JSON ``text`` nests arrays and objects at most ``limit`` deep.

    Scans only the characters that matter (brackets, quotes, backslashes) and
    never recurses, so it is safe on any input; brackets inside strings do not count.
    """
    if text.count("[") + text.count("{") <= limit:  # cannot be deeper: the usual case
        return None
    depth = 0
    in_string = False
    escaped_at = -2
    for match in _JSON_SPECIAL.finditer(text):
        char, at = match.group(), match.start()
        if in_string:
            if char == "\\":
                if escaped_at != at - 1:
                    escaped_at = at
                else:
                    escaped_at = -2  # an escaped backslash escapes nothing after it
            elif char == '"' and escaped_at != at - 1:
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return f"nests deeper than {limit} levels"
        elif char in "]}":
            depth -= 1
    return None


def json_text_problem(
    text: Any, limit: int, *, depth: int = MAX_JSON_DEPTH, want: type | None = None
) -> tuple[str | None, Any]:
    """``(problem, value)``: None and the decoded value if ``text`` is storable JSON text,
    else what is wrong and None.

    Storable JSON: storable text of at most ``limit`` characters, nested at most
    ``depth`` deep, that parses (NaN and Infinity allowed, as Python writes them),
    with no lone surrogate in its decoded strings and no integer too long to read
    back, and whose value is a ``want`` when given (e.g. ``dict``).
    """
    problem = text_problem(text, limit)
    if problem is None:
        problem = nesting_problem(text, depth)
    if problem is not None:
        return problem, None
    try:
        value = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and integers past Python's digit limit
        return f"is not valid JSON ({str(exc)[:80]})", None
    except RecursionError:  # pragma: no cover - the nesting check comes first
        return f"nests deeper than {depth} levels", None
    if want is not None and not isinstance(value, want):
        return f"must be a JSON {'object' if want is dict else want.__name__}, not {type(value).__name__}", None
    if "\\u" in text:  # escapes may spell a lone surrogate: check the decoded strings
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return "holds a lone surrogate (\\ud800-\\udfff escape)", None
    return None, value


def check_json_text(text: Any, what: str, limit: int, *, depth: int = MAX_JSON_DEPTH, want: type | None = None) -> Any:
    """The decoded value of storable JSON ``text`` (see :func:`json_text_problem`), else raise."""
    problem, value = json_text_problem(text, limit, depth=depth, want=want)
    if problem is not None:
        raise InvalidInput(f"{what} {problem}", f"{what} must be valid JSON of at most {limit:,} characters")
    return value


# -- paths -------------------------------------------------------------------------
def relative_path_problem(path: Any, limit: int) -> str | None:
    """What keeps ``path`` from being a contained relative POSIX path, or None.

    Contained: joined to any folder, it names something inside that folder on
    every platform. So: storable text of 1..``limit`` characters, no control
    characters, no backslash (a separator on Windows), not absolute, no drive
    prefix (``C:``), every ``/``-separated component non-empty, not ``.`` or ``..``
    and at most 255 UTF-8 bytes. This is the stored (normalised) form: no
    leading, trailing or doubled ``/``.
    """
    problem = text_problem(path, limit, empty=False, control=False)
    if problem is not None:
        return problem
    if "\\" in path:
        return f"{short(path)} contains a backslash"
    if path.startswith("/"):
        return f"{short(path)} is absolute"
    if len(path) >= 2 and path[1] == ":" and path[0].isascii() and path[0].isalpha():
        return f"{short(path)} starts with a drive letter"
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return f"{short(path)} has {f'a {part!r}' if part else 'an empty'} component"
        if len(part) > MAX_PATH_COMPONENT_BYTES // 4 and len(part.encode("utf-8")) > MAX_PATH_COMPONENT_BYTES:
            return f"{short(path)} has a component longer than {MAX_PATH_COMPONENT_BYTES} bytes"
    return None


def relative_paths_problem(paths: Sequence[Any], limit: int = 4096) -> tuple[int, str] | None:
    """``(index, problem)`` of the first path of ``paths`` that :func:`relative_path_problem`
    refuses, or None if every one is a contained relative path.

    Built for many paths (a tree manifest of 20,000 files): one screen of all of
    them joined by ``/``, at C speed (no ``//``, ``/./`` or ``/../`` and none at
    either end, no backslash or colon, only printable characters, no component
    longer than 63 characters); only if the screen finds something suspicious
    is each path checked on its own, for the exact answer.
    """
    if not paths:
        return None
    try:
        joined = "/".join(paths)
        longest = max(map(len, paths))
    except TypeError:  # something that is not text: the path-by-path check names it
        pass
    else:
        if not (
            longest > limit
            or not joined
            or "//" in joined  # an empty path or component
            or joined.startswith(("/", "./", "../"))
            or joined.endswith(("/", "/.", "/.."))
            or joined in (".", "..")
            or "/./" in joined
            or "/../" in joined
            or "\\" in joined
            or ":" in joined  # (a drive prefix)
            or not joined.isprintable()  # control characters (and some harmless ones: then checked exactly)
            or not is_unicode(joined)
            or (longest > _SHORT_COMPONENT and max(map(len, joined.split("/"))) > _SHORT_COMPONENT)
        ):
            return None
    for index, path in enumerate(paths):
        problem = relative_path_problem(path, limit)
        if problem is not None:
            return index, problem
    return None


def check_relative_path(path: Any, what: str, limit: int = 4096) -> str:
    """``path`` if it is a contained relative path (see :func:`relative_path_problem`), else raise."""
    problem = relative_path_problem(path, limit)
    if problem is not None:
        raise InvalidInput(
            f"{what} {problem}",
            "paths are relative, '/'-separated, without '.', '..', empty parts, backslashes or control characters",
        )
    return path  # type: ignore[no-any-return]
