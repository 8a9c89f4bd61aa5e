"""The unit of buffered writing: everything logged between two flushes.

The SDK appends to a batch from user code (cheap tuple appends); a writer
hands the whole batch to the store, which writes it in one transaction. The
same shape travels over HTTP to a server's batch endpoint.

:meth:`WriteBatch.validate` checks every row before anything is written
(the store calls it first, for every way a batch arrives), so one bad value
is refused as :class:`~keel.errors.InvalidInput` naming its row and field,
and never reaches, or fails, the shared transaction. The rules, per row:

============  ==================================================================
row           rules
============  ==================================================================
any           a tuple (or list) of the documented length; ``run_id`` is a run id
              as keel makes them: 32 lowercase hex digits
new run       project: a project name (:func:`~keel.core.names.check_name`);
              name: 1-250 characters, no control characters; start_time: int64;
              parent_id: None or a run id (not the run itself); context: a JSON
              object of at most 1 MiB, nested at most 64 deep; a run id once
metric        key: the key rules (:func:`~keel.core.names.check_key`); value: a
              float (NaN and +/-inf included) or an int a float can hold, not a
              bool; step and timestamp: int64
param         key: the key rules; vtype: one of :data:`PARAM_TYPES`; text: at
              most 64,000 characters and the canonical text of its type (an
              ``int`` is decimal digits, at most 4,000; a ``float`` a JSON
              number, ``NaN`` or ``[-]Infinity``; ``json`` parses, nested at most
              64 deep); overwrite: a bool
tag           key: the key rules; value: text of at most 64,000 characters
artifact      path: a contained relative path (:func:`~keel.core.checks.relative_path_problem`)
              of at most 1,000 characters; oid: 64 lowercase hex digits; size:
              int64 >= 0; kind: one of :data:`ARTIFACT_KINDS`; created_at: int64
lineage       direction ``input``/``output``; kind 1-32, id 1-250 characters
              (a run id for kind ``run``), version and role at most 100; created_at: int64;
              ref: '' or the alias the run resolved to reach the version
              (:func:`check_ref`); a row without ref (7 fields, as older clients and
              spools send them) is accepted and means ''
run end       status: one of :data:`~keel.core.entities.RUN_STATUSES`; end_time:
              int64; error: None or text of at most 64,000 characters
============  ==================================================================

All text is storable: no NUL character, no lone surrogate. The lengths are the
database columns' (PostgreSQL enforces them), so what passes writes on every backend.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core.checks import (
    INT64_MAX,
    INT64_MIN,
    int64_problem,
    json_text_problem,
    relative_path_problem,
    short,
    text_problem,
)
from keel.core.entities import RUN_ID_LENGTH, RUN_STATUSES
from keel.core.names import MAX_KEY_LENGTH, check_key, check_name
from keel.core.refnames import check_alias
from keel.core.values import MAX_PARAM_INT_DIGITS, MAX_PARAM_LENGTH
from keel.errors import InvalidInput

__all__ = [
    "ARTIFACT_KINDS",
    "LINEAGE_DIRECTIONS",
    "MAX_ARTIFACT_PATH_LENGTH",
    "MAX_CONTEXT_LENGTH",
    "MAX_ERROR_LENGTH",
    "MAX_LINEAGE_ROLE_LENGTH",
    "MAX_LINEAGE_REF_LENGTH",
    "MAX_RUN_NAME_LENGTH",
    "MAX_TAG_LENGTH",
    "PARAM_TYPES",
    "MAX_BATCH_ID_LENGTH",
    "WriteBatch",
    "check_batch_id",
    "check_ref",
    "check_row",
    "is_run_id",
    "lineage_rows",
]

ARTIFACT_KINDS = ("file", "table", "text", "html")
PARAM_TYPES = ("str", "int", "float", "bool", "null", "json")
LINEAGE_DIRECTIONS = ("input", "output")

MAX_RUN_NAME_LENGTH = 250
#: A run context is read with every run listed: 1 MiB holds the sdk's (8 argv items, packages, git).
MAX_CONTEXT_LENGTH = 1 << 20
MAX_TAG_LENGTH = MAX_PARAM_LENGTH
MAX_ERROR_LENGTH = MAX_PARAM_LENGTH
MAX_ARTIFACT_PATH_LENGTH = 1000
MAX_ENTITY_KIND_LENGTH = 32
MAX_ENTITY_ID_LENGTH = 250
MAX_ENTITY_VERSION_LENGTH = 100
MAX_LINEAGE_ROLE_LENGTH = 100
#: ``lineage.ref``: the alias a run resolved (an alias name, see :mod:`keel.core.refnames`).
MAX_LINEAGE_REF_LENGTH = 100
#: A delivered batch's id (``delivered_batches.batch_id``): made by the SDK, see keel.sdk.writer.
MAX_BATCH_ID_LENGTH = 100
_BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")

_HEX = "0123456789abcdef"
_OID_LENGTH = 64
_INT_TEXT = re.compile(rf"-?[0-9]{{1,{MAX_PARAM_INT_DIGITS}}}")
_FLOAT_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|NaN|-?Infinity")
_KEY_RULES = f"the key rules: 1-{MAX_KEY_LENGTH} letters, digits, '_', '.', '-', '/', ':' or spaces"

_ROW_HINT = "fix or drop that row; every row of a batch is checked before any is written"
_ROW_NAMES = {
    "new_runs": "new run",
    "metrics": "metric",
    "params": "param",
    "tags": "tag",
    "artifacts": "artifact",
    "lineage": "lineage edge",
    "run_ends": "run end",
}

# A problem found in a row: (field, what is wrong with it), or None.
Problem = tuple[str, str] | None


@dataclass
class WriteBatch:
    """Rows to write, each a tuple; ``run_id`` is always the public id.

    - ``new_runs``: ``(run_id, project, name, start_time, parent_id, context_json)``,
      written first, so the other rows of the batch may refer to them
    - ``metrics``: ``(run_id, key, value, step, timestamp)``
    - ``params``: ``(run_id, key, vtype, text, overwrite)``
    - ``tags``: ``(run_id, key, value)``
    - ``artifacts``: ``(run_id, path, oid, size, kind, created_at)``
    - ``lineage``: ``(run_id, direction, kind, id, version, role, created_at, ref)``: ``ref``
      is the alias the run resolved to reach ``version`` (``production``), '' when it named
      the version; a 7-field row (no ref, from an older client or spool) means ''
    - ``run_ends``: ``(run_id, status, end_time, error)``
    """

    new_runs: list[tuple[str, str, str, int, str | None, str]] = field(default_factory=list)
    metrics: list[tuple[str, str, float, int, int]] = field(default_factory=list)
    params: list[tuple[str, str, str, str, bool]] = field(default_factory=list)
    tags: list[tuple[str, str, str]] = field(default_factory=list)
    artifacts: list[tuple[str, str, str, int, str, int]] = field(default_factory=list)
    # 8 fields, or 7 from before the ref: typed loosely so both kinds of list are accepted
    lineage: list[tuple[Any, ...]] = field(default_factory=list)
    run_ends: list[tuple[str, str, int, str | None]] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.new_runs)
            + len(self.metrics)
            + len(self.params)
            + len(self.tags)
            + len(self.artifacts)
            + len(self.lineage)
            + len(self.run_ends)
        )

    def run_ids(self) -> set[str]:
        """Every run the batch touches."""
        ids: set[str] = set()
        for rows in (self.params, self.tags, self.artifacts, self.lineage, self.run_ends):
            ids.update(row[0] for row in rows)
        ids.update({row[0] for row in self.metrics})
        return ids

    def validate(self) -> None:
        """Check every row (see the module's table); raise InvalidInput naming the first bad
        row and field. A batch that passes writes without error on every backend (given
        its runs exist); nothing here touches storage."""
        for name, size, check in _KINDS:
            rows = getattr(self, name)
            if not isinstance(rows, list | tuple):
                raise InvalidInput(
                    f"write batch refused: {name} must be a list of rows, not {type(rows).__name__}",
                    "send the batch as the sdk builds it",
                )
            if rows:
                check(name, rows, size)


def check_row(kind: str, row: Any) -> None:
    """Check one row of batch field ``kind`` (``"tags"``, ``"lineage"``, ...) by the same rules as
    :meth:`WriteBatch.validate`, e.g. where it is logged; raise InvalidInput naming the field."""
    problem_of = _PROBLEMS[kind]
    size = _SIZES[kind]
    if not isinstance(row, list | tuple) or len(row) not in (size, _LEGACY_SIZES.get(kind, size)):
        found: Problem = ("row", f"must be a tuple of {size} fields, not {short(row)}")
    else:
        found = problem_of(row)
    if found is not None:
        where, what = found
        raise InvalidInput(f"invalid {_ROW_NAMES[kind]}: {where} {what}", "see the limits in keel.core.batch")


def check_ref(ref: Any) -> str:
    """``ref`` if it may be stored as the alias a lineage edge was resolved through: '' (the
    version was named), or an alias name by :func:`keel.core.refnames.check_alias` without the
    stage rule (``model@Production`` resolves through the stage), ``latest`` included (what
    ``name`` alone and ``name@latest`` resolve through); InvalidInput otherwise."""
    problem = _ref_problem(ref)
    if problem is not None:
        raise InvalidInput(
            f"invalid lineage ref: {problem[1]}",
            "pass the alias you resolved (production, champion, latest), or '' when you named the version",
        )
    return str(ref)


def lineage_rows(
    rows: Sequence[Sequence[Any]],
) -> list[tuple[str, str, str, str, str, str, int, str]]:
    """Lineage rows with their ``ref`` (the 8-field form): a 7-field row gains ''."""
    return [tuple(row) if len(row) == 8 else (*row, "") for row in rows]  # type: ignore[misc]


def check_batch_id(batch_id: Any) -> str | None:
    """``batch_id`` if it is None or a batch id as the SDK makes them (1-100 letters, digits,
    ``.``, ``_``, ``:`` or ``-``, starting with a letter or digit); InvalidInput otherwise."""
    if batch_id is None or (type(batch_id) is str and _BATCH_ID.fullmatch(batch_id)):
        return batch_id
    raise InvalidInput(
        f"invalid batch id {short(batch_id)}",
        f"a batch id is 1-{MAX_BATCH_ID_LENGTH} letters, digits, '.', '_', ':' or '-' (the sdk makes them)",
    )


def is_run_id(value: Any) -> bool:
    """True if ``value`` is a full run id as keel makes them (32 lowercase hex digits)."""
    return type(value) is str and len(value) == RUN_ID_LENGTH and not value.strip(_HEX)


def _refuse(kind: str, index: int, row: Any, problem: tuple[str, str]) -> InvalidInput:
    where, what = problem
    run = row[0] if isinstance(row, tuple | list) and row and is_run_id(row[0]) else None
    of_run = f" (run {run[:8]})" if run else ""
    return InvalidInput(f"write batch refused, nothing written: {kind}[{index}]{of_run} {where} {what}", _ROW_HINT)


def _check_rows(kind: str, rows: Sequence[Any], size: int, problem_of: Callable[[Any], Problem]) -> None:
    for index, row in enumerate(rows):
        if not isinstance(row, list | tuple) or len(row) != size:
            raise _refuse(kind, index, row, ("row", f"must be a tuple of {size} fields, not {short(row)}"))
        problem = problem_of(row)
        if problem is not None:
            raise _refuse(kind, index, row, problem)


def _run_problem(run_id: Any) -> Problem:
    if is_run_id(run_id):
        return None
    return "run_id", f"{short(run_id)} is not a run id (32 lowercase hex digits)"


def _key_problem(key: Any, what: str) -> Problem:
    try:
        check_key(key, what)  # caches the keys it accepted: the same few keys come over and over
    except InvalidInput:
        return "key", f"{short(key)} breaks {_KEY_RULES}, not starting with '.' or '-'"
    return None


def _int64(name: str, value: Any) -> Problem:
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:
        return None
    problem = int64_problem(value)
    return None if problem is None else (name, problem)


def _text(name: str, value: Any, limit: int, *, empty: bool = True, control: bool = True) -> Problem:
    problem = text_problem(value, limit, empty=empty, control=control)
    return None if problem is None else (name, problem)


# -- new runs ---------------------------------------------------------------------------
def _new_run_problem(row: Any) -> Problem:
    run_id, project, name, start_time, parent_id, context = row
    try:
        check_name(project, "project name")
    except InvalidInput:
        return "project", f"{short(project)} is not a project name (1-200 letters, digits, '.', '_', '-', '/', spaces)"
    problem = (
        _run_problem(run_id)
        or _text("name", name, MAX_RUN_NAME_LENGTH, empty=False, control=False)
        or _int64("start_time", start_time)
    )
    if problem:
        return problem
    if parent_id is not None:
        if not is_run_id(parent_id):
            return "parent_id", f"{short(parent_id)} is not a run id (32 lowercase hex digits)"
        if parent_id == run_id:
            return "parent_id", "is the run itself"
    found, _ = json_text_problem(context, MAX_CONTEXT_LENGTH, want=dict)
    return None if found is None else ("context", found)


def _check_new_runs(kind: str, rows: Sequence[Any], size: int) -> None:
    _check_rows(kind, rows, size, _new_run_problem)
    seen: set[str] = set()
    for index, row in enumerate(rows):
        if row[0] in seen:
            raise _refuse(kind, index, row, ("run_id", "is created twice in the batch"))
        seen.add(row[0])


# -- metrics: the hot path -----------------------------------------------------------------
def _metric_problem(row: Any) -> Problem:
    run_id, key, value, step, timestamp = row
    problem = _run_problem(run_id) or _key_problem(key, "metric key")
    if problem:
        return problem
    if not isinstance(value, float):
        if isinstance(value, bool) or not isinstance(value, int):
            return "value", f"must be a number, not {type(value).__name__} {short(value)}"
        try:
            float(value)
        except OverflowError:
            return "value", f"{short(value)} is too large for a 64-bit float"
    return _int64("step", step) or _int64("timestamp", timestamp)


def _check_metrics(kind: str, rows: Sequence[Any], size: int) -> None:
    """One tight loop over the rows that accepts the usual batch (float values, int steps and
    times, a few run ids and keys checked once each); anything unusual is left to the
    row-by-row check, which names the bad row (or accepts, e.g. an int value)."""
    runs: set[str] = set()
    keys: set[str] = set()
    lo, hi = INT64_MIN, INT64_MAX
    try:
        for run_id, key, value, step, timestamp in rows:
            if run_id not in runs:
                if not is_run_id(run_id):
                    break
                runs.add(run_id)
            if key not in keys:
                if type(key) is not str or _key_problem(key, "metric key"):
                    break
                keys.add(key)
            if (
                type(value) is not float
                or type(step) is not int
                or type(timestamp) is not int
                or not lo <= step <= hi
                or not lo <= timestamp <= hi
            ):
                break
        else:
            return
    except (TypeError, ValueError):  # a row of another length or an unhashable field
        pass
    _check_rows(kind, rows, size, _metric_problem)


# -- params, tags ---------------------------------------------------------------------------
def _param_value_problem(vtype: str, text: str) -> str | None:
    if vtype == "str":
        return None
    if vtype == "int":
        if _INT_TEXT.fullmatch(text):
            return None
        return f"{short(text)} is not an int of at most {MAX_PARAM_INT_DIGITS:,} digits"
    if vtype == "float":
        if _FLOAT_TEXT.fullmatch(text):
            return None
        return f"{short(text)} is not a float (a JSON number, NaN or Infinity)"
    if vtype == "bool":
        return None if text in ("true", "false") else f"{short(text)} is not 'true' or 'false'"
    if vtype == "null":
        return None if text == "null" else f"{short(text)} is not 'null'"
    problem, _ = json_text_problem(text, MAX_PARAM_LENGTH)
    return problem


def _param_problem(row: Any) -> Problem:
    run_id, key, vtype, text, overwrite = row
    problem = _run_problem(run_id) or _key_problem(key, "param key")
    if problem:
        return problem
    if type(vtype) is not str or vtype not in PARAM_TYPES:
        return "vtype", f"{short(vtype)} is not one of {', '.join(PARAM_TYPES)}"
    problem = _text("text", text, MAX_PARAM_LENGTH)
    if problem:
        return problem
    value_problem = _param_value_problem(vtype, text)
    if value_problem:
        return "text", value_problem
    if type(overwrite) is not bool and not (type(overwrite) is int and overwrite in (0, 1)):
        return "overwrite", f"must be a bool, not {short(overwrite)}"
    return None


def _tag_problem(row: Any) -> Problem:
    run_id, key, value = row
    return _run_problem(run_id) or _key_problem(key, "tag key") or _text("value", value, MAX_TAG_LENGTH)


# -- artifacts, lineage, run ends ----------------------------------------------------------------
def _artifact_problem(row: Any) -> Problem:
    run_id, path, oid, size, kind, created_at = row
    problem = _run_problem(run_id)
    if problem:
        return problem
    found = relative_path_problem(path, MAX_ARTIFACT_PATH_LENGTH)
    if found:
        return "path", found
    if type(oid) is not str or len(oid) != _OID_LENGTH or oid.strip(_HEX):
        return "oid", f"{short(oid)} is not an object id (64 lowercase hex digits)"
    problem = _int64("size", size)
    if problem:
        return problem
    if size < 0:
        return "size", f"{size} is negative"
    if type(kind) is not str or kind not in ARTIFACT_KINDS:
        return "kind", f"{short(kind)} is not one of {', '.join(ARTIFACT_KINDS)}"
    return _int64("created_at", created_at)


def _ref_problem(ref: Any) -> Problem:
    if ref == "":
        return None
    if type(ref) is not str:
        return "ref", f"must be text, not {type(ref).__name__}"
    if ref.lower() == "latest":  # what ``name`` and ``name@latest`` resolve through
        return None
    try:
        check_alias(ref)
    except InvalidInput:
        return "ref", (
            f"{short(ref)} is not an alias name (a letter, then at most {MAX_LINEAGE_REF_LENGTH - 1} letters, "
            "digits, '_', '.' or '-'; not shaped like a version)"
        )
    return None


def _lineage_problem(row: Any) -> Problem:
    run_id, direction, kind, entity_id, version, role, created_at, *rest = row
    problem = _run_problem(run_id)
    if problem:
        return problem
    if type(direction) is not str or direction not in LINEAGE_DIRECTIONS:
        return "direction", f"{short(direction)} is not one of {', '.join(LINEAGE_DIRECTIONS)}"
    problem = (
        _text("kind", kind, MAX_ENTITY_KIND_LENGTH, empty=False, control=False)
        or _text("id", entity_id, MAX_ENTITY_ID_LENGTH, empty=False, control=False)
        or _text("version", version, MAX_ENTITY_VERSION_LENGTH)
        or _text("role", role, MAX_LINEAGE_ROLE_LENGTH)
        or _int64("created_at", created_at)
        or (_ref_problem(rest[0]) if rest else None)
    )
    if problem:
        return problem
    if kind == "run" and not is_run_id(entity_id):
        return "id", f"{short(entity_id)} is not a run id (32 lowercase hex digits)"
    return None


def _run_end_problem(row: Any) -> Problem:
    run_id, status, end_time, error = row
    problem = _run_problem(run_id)
    if problem:
        return problem
    if type(status) is not str or status not in RUN_STATUSES:
        return "status", f"{short(status)} is not one of {', '.join(RUN_STATUSES)}"
    problem = _int64("end_time", end_time)
    if problem:
        return problem
    return None if error is None else _text("error", error, MAX_ERROR_LENGTH)


def _check_lineage(kind: str, rows: Sequence[Any], size: int) -> None:
    """Lineage rows of 8 fields, or of 7 (no ref: older clients, spools written before the ref)."""
    for index, row in enumerate(rows):
        if not isinstance(row, list | tuple) or len(row) not in (size, size - 1):
            found = ("row", f"must be a tuple of {size} (or {size - 1}, without ref) fields, not {short(row)}")
            raise _refuse(kind, index, row, found)
        problem = _lineage_problem(row)
        if problem is not None:
            raise _refuse(kind, index, row, problem)


def _rows_of(problem_of: Callable[[Any], Problem]) -> Callable[[str, Sequence[Any], int], None]:
    def check(kind: str, rows: Sequence[Any], size: int) -> None:
        _check_rows(kind, rows, size, problem_of)

    return check


# (field, row length, checker), in the order the store writes them.
_KINDS: tuple[tuple[str, int, Callable[[str, Sequence[Any], int], None]], ...] = (
    ("new_runs", 6, _check_new_runs),
    ("metrics", 5, _check_metrics),
    ("params", 5, _rows_of(_param_problem)),
    ("tags", 3, _rows_of(_tag_problem)),
    ("artifacts", 6, _rows_of(_artifact_problem)),
    ("lineage", 8, _check_lineage),
    ("run_ends", 4, _rows_of(_run_end_problem)),
)

_PROBLEMS: dict[str, Callable[[Any], Problem]] = {
    "new_runs": _new_run_problem,
    "metrics": _metric_problem,
    "params": _param_problem,
    "tags": _tag_problem,
    "artifacts": _artifact_problem,
    "lineage": _lineage_problem,
    "run_ends": _run_end_problem,
}
_SIZES = {name: size for name, size, _check in _KINDS}
# Row lengths accepted from before a field was added (a lineage row without its ref).
_LEGACY_SIZES = {"lineage": 7}
