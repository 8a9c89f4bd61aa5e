"""keel's exceptions: one root, each carrying a stable code and a hint.

The tree::

    KeelError                  code="error"
    ├── NotFound               code="not_found"        (HTTP 404)
    │   └── ReplayMiss         code="replay_miss"      (HTTP 404)
    ├── AlreadyExists          code="already_exists"   (HTTP 409)
    ├── InvalidInput           code="invalid_input"    (HTTP 400)
    │   └── FilterSyntaxError  code="invalid_filter"   (HTTP 400)
    ├── Conflict               code="conflict"         (HTTP 409)
    ├── IntegrityError         code="integrity"        (HTTP 500)
    ├── StoreError             code="store"            (HTTP 500)
    │   └── SchemaTooNew       code="schema_too_new"   (HTTP 500)
    ├── NoWorkspace            code="no_workspace"     (HTTP 400)
    ├── Unauthenticated        code="unauthenticated"  (HTTP 401)
    ├── Forbidden              code="forbidden"        (HTTP 403)
    └── TooLarge               code="too_large"        (HTTP 413)

Every message says what went wrong; ``hint`` says what to do about it. The CLI
prints ``error: <message> (<hint>)`` on one line and exits with ``exit_code``;
the server renders ``{"error": {"code", "message", "hint"}}`` with ``http_status``.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "Conflict",
    "FilterSyntaxError",
    "IntegrityError",
    "InvalidInput",
    "KeelError",
    "NoWorkspace",
    "NotFound",
    "Forbidden",
    "ReplayMiss",
    "SchemaTooNew",
    "StoreError",
    "TooLarge",
    "Unauthenticated",
    "error_for_code",
]


class KeelError(Exception):
    """Root of every error keel raises on purpose.

    Args:
        message: what went wrong, in one sentence.
        hint: what the user can do next (optional).
    """

    code = "error"
    http_status = 500
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, str | None]:
        """The JSON shape used over HTTP and by ``--json`` output."""
        return {"code": self.code, "message": self.message, "hint": self.hint}


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
    """

    code = "replay_miss"

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
    """A search filter could not be parsed; the message points at the position."""

    code = "invalid_filter"

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


class TooLarge(KeelError):
    """A request or upload is larger than the server accepts (HTTP 413)."""

    code = "too_large"
    http_status = 413
    exit_code = 2


def error_for_code(code: str, message: str, hint: str | None = None) -> KeelError:
    """The :class:`KeelError` a wire error ``{"code", "message", "hint"}`` stands for.

    The HTTP client raises what the server raised: an unknown code (a newer
    server) becomes a plain :class:`KeelError` that keeps the code.
    """
    # Walked per call, so subclasses defined outside this module (already imported) count too.
    cls = {c.code: c for c in reversed(_subclasses(KeelError))}.get(code)
    if cls is None:
        error = KeelError(message, hint)
        error.code = code
        return error
    return cls(message, hint)


def _subclasses(cls: type[KeelError]) -> list[type[KeelError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_subclasses(sub))
    return found

