"""keel's exceptions: one root, each carrying a stable code, a hint and its own fields.

The tree::

    KeelError                    code="error"
    ├── NotFound                 code="not_found"              (HTTP 404)
    │   └── ReplayMiss           code="replay_miss"            (HTTP 404)  request_hash, closest
    ├── AlreadyExists            code="already_exists"         (HTTP 409)
    ├── InvalidInput             code="invalid_input"          (HTTP 400)
    │   └── FilterSyntaxError    code="invalid_filter"         (HTTP 400)  text, position
    ├── Conflict                 code="conflict"               (HTTP 409)
    │   └── PromptFilesRejected  code="prompt_files_rejected"  (HTTP 409)  problems
    ├── IntegrityError           code="integrity"              (HTTP 500)
    ├── StoreError               code="store"                  (HTTP 500)
    │   ├── SchemaTooNew         code="schema_too_new"         (HTTP 500)
    │   └── Unavailable          code="unavailable"            (HTTP 503)  dependency, retry_after
    ├── NoWorkspace              code="no_workspace"           (HTTP 400)
    ├── Unauthenticated          code="unauthenticated"        (HTTP 401)
    ├── Forbidden                code="forbidden"              (HTTP 403)
    ├── RateLimited              code="rate_limited"           (HTTP 429)  retry_after
    ├── TooLarge                 code="too_large"              (HTTP 413)
    └── WriteFailed              code="write_failed"           (HTTP 500)  run_id, rows, cause_code, cause

Every message says what went wrong; ``hint`` says what to do about it. The CLI
prints ``error: <message> (<hint>)`` on one line and exits with ``exit_code``.

Every error class is defined here, has a code of its own, and names its extra
attributes in ``fields`` (name -> default). Over HTTP an error travels as
:meth:`KeelError.to_dict`::

    {"code": "invalid_filter", "message": "...", "hint": "...",
     "details": {"text": "metrics.x >", "position": 10}}

and :func:`error_from_dict` rebuilds the same class with the same message,
hint and fields on the other side (the server renders ``{"error": <that>}``
with ``http_status``; the HTTP client raises what it rebuilds).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

__all__ = [
    "AlreadyExists",
    "Conflict",
    "FilterSyntaxError",
    "Forbidden",
    "IntegrityError",
    "InvalidInput",
    "KeelError",
    "NoWorkspace",
    "NotFound",
    "PromptFilesRejected",
    "RateLimited",
    "ReplayMiss",
    "SchemaTooNew",
    "StoreError",
    "TooLarge",
    "Unauthenticated",
    "Unavailable",
    "WriteFailed",
    "error_for_code",
    "error_from_dict",
]

# Bounds on the details read back from the wire: a value past them is ignored, never an error.
_MAX_DEPTH = 16  # nesting of lists and dicts in one field's value
_MAX_SIZE = 1 << 16  # items plus characters of strings in one field's value


class KeelError(Exception):
    """Root of every error keel raises on purpose.

    Args:
        message: what went wrong, in one sentence.
        hint: what the user can do next (optional).

    A subclass with attributes of its own names them in ``fields`` (attribute
    name -> its default), so they travel in ``to_dict()["details"]``.
    """

    code = "error"
    http_status = 500
    exit_code = 1
    fields: ClassVar[Mapping[str, object]] = {}

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used over HTTP and by ``--json`` output.

        ``{"code", "message", "hint", "details"}``: ``details`` holds the
        class's ``fields`` as JSON values (dataclasses and objects with a
        ``to_dict()`` become dicts, paths and other objects strings).
        """
        details = {name: _field_json(self, name, default) for name, default in _fields_of(type(self)).items()}
        return {"code": self.code, "message": self.message, "hint": self.hint, "details": details}


class NotFound(KeelError):
    """A run, project, object or other entity does not exist."""

    code = "not_found"
    http_status = 404
    exit_code = 3


class ReplayMiss(NotFound):
    """Replay found no recording of a request; names its hash and the closest recorded one.

    Attributes:
        request_hash: the hash of the request that was not found.
        closest: the most similar recorded request (``request_hash``, ``model``,
            ``source``, ``similarity``, ``differences``), or None if nothing is recorded.
            Received over HTTP it is a dict with those keys.
    """

    code = "replay_miss"
    fields = {"request_hash": "", "closest": None}

    def __init__(self, message: str, hint: str | None = None, request_hash: str = "", closest: object = None) -> None:
        super().__init__(message, hint)
        self.request_hash = request_hash
        self.closest = closest


class AlreadyExists(KeelError):
    """Creating something that exists already under that name."""

    code = "already_exists"
    http_status = 409
    exit_code = 4


class InvalidInput(KeelError):
    """A name, value or argument is malformed."""

    code = "invalid_input"
    http_status = 400
    exit_code = 2


class FilterSyntaxError(InvalidInput):
    """A search filter could not be parsed; the message points at the position.

    Attributes:
        text: the filter as given.
        position: the character offset in ``text`` where parsing failed.
    """

    code = "invalid_filter"
    fields = {"text": "", "position": 0}

    def __init__(self, message: str, text: str = "", position: int = 0) -> None:
        where = f" at position {position} of {text!r}" if text else ""
        super().__init__(
            f"{message}{where}",
            "filters look like: metrics.accuracy > 0.8 and params.model = 'gpt-4'",
        )
        self.text = text
        self.position = position


class Conflict(KeelError):
    """The request contradicts what is stored (e.g. re-logging a param)."""

    code = "conflict"
    http_status = 409
    exit_code = 4


class PromptFilesRejected(Conflict):
    """The prompt files failed the checks, so nothing was synced; ``problems`` lists why.

    Attributes:
        problems: one entry per problem (``keel.services.prompt_files.Problem``:
            ``prompt``, ``file``, ``line``, ``message``, ``hint``; received over
            HTTP each is a dict with those keys). ``str()`` of one is its line.
    """

    code = "prompt_files_rejected"
    fields = {"problems": ()}

    def __init__(self, problems: Sequence[Any]) -> None:
        self.problems = list(problems)
        listed = "\n".join(f"  {problem}" for problem in self.problems)
        count = f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        super().__init__(
            f"{count} in the prompt files, so nothing was registered:\n{listed}",
            "fix the files as each line says and sync again",
        )


class IntegrityError(KeelError):
    """Stored content does not match its hash: the object is corrupt."""

    code = "integrity"
    http_status = 500
    exit_code = 5


class StoreError(KeelError):
    """The metadata database or object store cannot be used."""

    code = "store"
    http_status = 500
    exit_code = 6


class SchemaTooNew(StoreError):
    """The database was written by a newer keel than this one."""

    code = "schema_too_new"


class Unavailable(StoreError):
    """The database or the object store cannot be reached right now (HTTP 503, ``Retry-After``).

    Raised when a dependency is unreachable, restarting, shutting down or out of
    connections, and when a transient database error (a serialization failure, a
    deadlock) persisted through the retries. Nothing was done: retrying later is safe.

    Attributes:
        dependency: which one is away: ``"database"`` or ``"objects"``.
        retry_after: seconds to wait before trying again (the server's ``Retry-After``).
    """

    code = "unavailable"
    http_status = 503
    fields = {"dependency": "", "retry_after": 5}

    def __init__(self, message: str, hint: str | None = None, dependency: str = "", retry_after: int = 5) -> None:
        super().__init__(message, hint)
        self.dependency = dependency
        self.retry_after = retry_after


class NoWorkspace(KeelError):
    """No ``.keel/`` was found and no ``KEEL_URI`` is set."""

    code = "no_workspace"
    http_status = 400
    exit_code = 2


class Unauthenticated(KeelError):
    """No token, or a token that is unknown, expired or revoked (HTTP 401)."""

    code = "unauthenticated"
    http_status = 401
    exit_code = 7


class Forbidden(KeelError):
    """The caller is known but its role does not allow the action (HTTP 403)."""

    code = "forbidden"
    http_status = 403
    exit_code = 7


class RateLimited(KeelError):
    """Too many failed sign-in attempts for a user name or from an address (HTTP 429).

    Attributes:
        retry_after: seconds to wait before trying again.
    """

    code = "rate_limited"
    http_status = 429
    exit_code = 7
    fields = {"retry_after": 60}

    def __init__(self, message: str, hint: str | None = None, retry_after: int = 60) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after


class TooLarge(KeelError):
    """A request or upload is larger than the server accepts (HTTP 413)."""

    code = "too_large"
    http_status = 413
    exit_code = 2


class WriteFailed(KeelError):
    """Rows logged to a run could not be written in the background and are lost.

    Raised by ``run.finish()``, ``run.flush()``, ``keel.flush()`` and the end of a
    ``with keel.start_run()`` block once the background writer has given up on some
    of the run's rows (the server refused them, the disk is full...); the rows of
    other runs are written all the same.

    Attributes:
        run_id: the run whose rows were lost.
        rows: how many logged rows (metrics, params, tags, ...) were lost.
        cause_code: the ``code`` of the error that refused them (e.g. ``forbidden``).
        cause: that error's text.
    """

    code = "write_failed"
    http_status = 500
    exit_code = 1
    fields = {"run_id": "", "rows": 0, "cause_code": "", "cause": ""}

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        run_id: str = "",
        rows: int = 0,
        cause_code: str = "",
        cause: str = "",
    ) -> None:
        super().__init__(message, hint)
        self.run_id = run_id
        self.rows = rows
        self.cause_code = cause_code
        self.cause = cause


# -- over the wire -------------------------------------------------------------------
def error_from_dict(data: Mapping[str, Any]) -> KeelError:
    """The :class:`KeelError` a wire error ``{"code", "message", "hint", "details"}`` stands for.

    The class of ``code`` is rebuilt with the message and hint as they are (its
    constructor, which may word the message, is not called) and every one of
    its ``fields`` from ``details``. Nothing in ``data`` makes this raise: an
    unknown code (a newer server) gives a plain :class:`KeelError` that keeps
    the code; a missing, mistyped or oversized field keeps its default; a
    ``details`` that is not a dict is ignored.
    """
    if not isinstance(data, Mapping):
        data = {}
    code = data.get("code")
    message = data.get("message")
    hint = data.get("hint")
    code = code if isinstance(code, str) and code else KeelError.code
    message = message if isinstance(message, str) and message else f"the server reported {code!r}"
    hint = hint if isinstance(hint, str) else None
    cls = _class_for(code)
    error = cls.__new__(cls)
    KeelError.__init__(error, message, hint)
    if cls is KeelError and code != KeelError.code:
        error.code = code
    details = data.get("details")
    for name, default in _fields_of(cls).items():
        value = details.get(name, default) if isinstance(details, Mapping) else default
        if value is not default and not (_fits(value, default) and _within(value, 0, [_MAX_SIZE])):
            value = default
        setattr(error, name, list(value) if isinstance(value, (tuple, list)) else value)
    return error


def error_for_code(code: str, message: str, hint: str | None = None) -> KeelError:
    """The :class:`KeelError` a wire error without details stands for (see :func:`error_from_dict`)."""
    return error_from_dict({"code": code, "message": message, "hint": hint})


def _class_for(code: str) -> type[KeelError]:
    # Walked per call (a handful of classes): the first class in the tree with the code wins.
    for cls in _subclasses(KeelError):
        if cls.code == code:
            return cls
    return KeelError


def _subclasses(cls: type[KeelError]) -> list[type[KeelError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_subclasses(sub))
    return found


def _fields_of(cls: type[KeelError]) -> dict[str, object]:
    """The ``fields`` of a class and of its bases, base first."""
    merged: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        own = klass.__dict__.get("fields")
        if isinstance(own, Mapping):
            merged.update(own)
    return merged


def _field_json(error: KeelError, name: str, default: object) -> Any:
    """One field of ``error`` as JSON values; None if it cannot be (rendering an error never fails)."""
    try:
        return _to_json(getattr(error, name, default))
    except Exception:  # noqa: BLE001 - a broken to_dict() of a field's value must not hide the error
        return None


def _to_json(value: object, depth: int = 0) -> Any:
    """``value`` as JSON values: the form a field takes in ``details``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth >= _MAX_DEPTH:
        return str(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and not isinstance(value, type):
        return _to_json(to_dict(), depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): _to_json(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_to_json(item, depth + 1) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _fits(value: object, default: object) -> bool:
    """Whether a received value has the type the field's default has (None: any JSON value)."""
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (tuple, list)):
        return isinstance(value, list)
    return isinstance(value, type(default))


def _within(value: object, depth: int, budget: list[int]) -> bool:
    """Whether ``value`` is plain JSON, at most ``_MAX_DEPTH`` deep, within what is left of ``budget``."""
    budget[0] -= 1
    if budget[0] < 0:
        return False
    if value is None or isinstance(value, (bool, int, float)):  # NaN and infinities too: Python's json has them
        return True
    if isinstance(value, str):
        budget[0] -= len(value)
        return budget[0] >= 0
    if depth >= _MAX_DEPTH:
        return False
    if isinstance(value, list):
        return all(_within(item, depth + 1, budget) for item in value)
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and _within(key, depth + 1, budget) and _within(item, depth + 1, budget)
            for key, item in value.items()
        )
    return False
