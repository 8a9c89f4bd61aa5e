"""Validation of user-supplied names (projects, params, metrics, tags, paths)."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from keel.errors import InvalidInput

__all__ = ["MAX_KEY_LENGTH", "check_artifact_path", "check_key", "check_name", "mlflow_key_problem", "mlflow_keys"]

MAX_KEY_LENGTH = 250
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/ ]{0,199}$")
# Keys may contain dots (flattened params: ``rag.top_k``), slashes, dashes,
# spaces and colons, like MLflow's; nothing that could confuse the filter
# language's quoting or a file path.
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/ :]*$")


def check_name(name: object, what: str = "name") -> str:
    """Return ``name`` if it is a valid project/run name, else raise InvalidInput."""
    if not isinstance(name, str) or not _NAME.match(name) or name.strip() != name:
        raise InvalidInput(
            f"invalid {what} {name!r}",
            f"a {what} is 1-200 characters: letters, digits, '.', '_', '-', '/', spaces; "
            "it starts with a letter or digit",
        )
    return name


_GOOD_KEYS: set[str] = set()  # keys already checked (the same few keys are logged over and over)
_GOOD_KEYS_MAX = 100_000


def check_key(key: object, what: str = "key") -> str:
    """Return ``key`` if it is a valid param/metric/tag key, else raise InvalidInput."""
    if type(key) is str and key in _GOOD_KEYS:
        return key
    if (
        not isinstance(key, str)
        or not key
        or len(key) > MAX_KEY_LENGTH
        or not _KEY.match(key)
        or ".." in key
        or key.endswith((".", "/"))
    ):
        if _MLFLOW_KEYS.get() and isinstance(key, str) and mlflow_key_problem(key) is None:
            return key  # not cached: keel's own API keeps keel's rules
        raise InvalidInput(
            f"invalid {what} {key!r}",
            f"a {what} is 1-{MAX_KEY_LENGTH} characters of letters, digits, "
            "'_', '.', '-', '/', ':' and spaces, not starting with '.' or '-'",
        )
    if len(_GOOD_KEYS) < _GOOD_KEYS_MAX:
        _GOOD_KEYS.add(key)
    return key


# MLflow's rules for param, metric and tag names (mlflow.utils.validation): word characters
# (any script), '/', '.', '-', ' ' and ':', and a name that reads as the same file path
# once normalised ('a//b', 'a/./b', '/a', '..a' and '.' are refused; '-x', '.x', 'a..b' are not).
_MLFLOW_KEY = re.compile(r"[/\w.\- :]*")
_MLFLOW_KEYS: ContextVar[bool] = ContextVar("keel_mlflow_keys", default=False)


def mlflow_key_problem(key: str) -> str | None:
    """What MLflow's rules find wrong with ``key`` as a param, metric or tag name, in the order
    MLflow checks: ``"characters"``, ``"path"`` (it would read as another file path),
    ``"length"``; None if MLflow accepts it."""
    if not _MLFLOW_KEY.fullmatch(key):
        return "characters"
    normal = posixpath.normpath(key)
    if normal != key or normal == "." or normal.startswith(("..", "/")):
        return "path"
    return "length" if len(key) > MAX_KEY_LENGTH else None


@contextmanager
def mlflow_keys() -> Iterator[None]:
    """Within the block, :func:`check_key` also accepts what MLflow's rules accept.

    The MLflow REST API applies MLflow's rules (``-inf_metric`` is a valid MLflow metric name),
    keel's own API keeps keel's; the store takes both. Per task (a ContextVar), never global.
    """
    token = _MLFLOW_KEYS.set(True)
    try:
        yield
    finally:
        _MLFLOW_KEYS.reset(token)


def check_artifact_path(path: object) -> str:
    """Normalise a relative artifact path (``a/b.txt``); refuse escapes."""
    if not isinstance(path, str) or not path.strip():
        raise InvalidInput(f"invalid artifact path {path!r}", "give a relative path like 'eval/results.json'")
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts) or path.startswith("/"):
        raise InvalidInput(
            f"invalid artifact path {path!r}",
            "artifact paths are relative and may not contain '..'",
        )
    return "/".join(parts)
