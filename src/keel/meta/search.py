"""Compile a parsed run filter (``keel.core.filters``) into SQL text with ``?`` placeholders.

User text never reaches SQL: it is parsed into an AST first, and every value
becomes a bound parameter. Positive comparisons at the top level of an
``and`` become inner joins (the database can then drive the query from the
``(key, value)`` index of the compared metric/param/tag); anything under
``or``/``not`` becomes a correlated ``EXISTS``. Runs lacking the metric that
orders the result come last.

Before any SQL is built the query is checked against keel's bounds
(:func:`keel.core.filters.check_query`): at most 10 sort keys and 20 distinct
metric/param/tag keys (joins) in all, so no search can make a query the
database cannot plan. Values are checked against the attribute they compare
with (times with numbers, names with text, no true/false), so the database
never sees a comparison of the wrong type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from keel.core.filters import And, Comparison, Field, Node, Not, Or, OrderBy, check_query
from keel.errors import InvalidInput

__all__ = ["ATTRIBUTES", "RECORD_COLUMNS", "SearchSQL", "compile_search"]

ATTRIBUTES: dict[str, str] = {
    "status": "runs.status",
    "name": "runs.name",
    "run_name": "runs.name",
    "run_id": "runs.run_id",
    "id": "runs.run_id",
    "start_time": "runs.start_time",
    "end_time": "runs.end_time",
    "parent_id": "runs.parent_id",
    "parent": "runs.parent_id",
    "project": "projects.name",
    "error": "runs.error",
}

#: Attribute columns that are never NULL.
_NOT_NULL = frozenset(("runs.status", "runs.name", "runs.run_id", "runs.start_time", "projects.name"))

#: Attributes holding times (epoch milliseconds): compared with numbers only.
_TIME_ATTRIBUTES = frozenset(("start_time", "end_time"))

_TABLES = {"metrics": "latest_metrics", "params": "params", "tags": "tags"}

#: What a run record is built from (see TrackingStore._record), in this order.
RECORD_COLUMNS = (
    "runs.id, runs.run_id, projects.name, runs.name, runs.status, runs.start_time, runs.end_time, "
    "runs.parent_id, runs.deleted, runs.error, runs.context, runs.summary"
)
_FROM = "runs JOIN projects ON projects.id = runs.project_id"

_COMPARE = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


@dataclass(frozen=True)
class SearchSQL:
    """A run search as SQL text with ``?`` placeholders and its arguments, in order."""

    sql: str
    args: tuple[Any, ...]

    def page(self, limit: int, offset: int = 0) -> tuple[str, tuple[Any, ...]]:
        """The statement for ``limit`` rows from ``offset``."""
        return f"{self.sql} LIMIT ? OFFSET ?", (*self.args, limit, offset)


class _Args(list):  # type: ignore[type-arg]
    """The arguments of the statement being built: ``add`` returns the placeholder."""

    def add(self, value: Any) -> str:
        self.append(value)
        return "?"

    def marks(self, values: tuple[Any, ...]) -> str:
        self.extend(values)
        return ", ".join("?" * len(values))


def _apply(column: str, op: str, value: Any, args: _Args) -> str:
    if op in _COMPARE:
        return f"{column} {_COMPARE[op]} {args.add(value)}"
    if op == "like":
        return f"{column} LIKE {args.add(value)}"
    if op == "not like":
        return f"NOT ({column} LIKE {args.add(value)})"
    if op == "ilike":
        return f"lower({column}) LIKE lower({args.add(value)})"
    if op == "not ilike":
        return f"NOT (lower({column}) LIKE lower({args.add(value)}))"
    if op in ("in", "not in"):
        values = tuple(value)
        if not values:  # nothing is in an empty list
            return "1 = 0" if op == "in" else "1 = 1"
        word = "IN" if op == "in" else "NOT IN"
        return f"{column} {word} ({args.marks(values)})"
    raise InvalidInput(f"unsupported operator {op!r}")  # pragma: no cover - parser guards


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numeric_param(table: str, args: _Args) -> str:
    """A param's value as a number, or NULL if it is not one.

    Floats are stored as JSON text; the non-finite ones are spelled out because
    CAST reads them as 0.0 (SQLite) or orders 'NaN' above every number (PostgreSQL).
    """
    return (
        f"CASE WHEN {table}.value = 'NaN' THEN NULL"
        f" WHEN {table}.value = 'Infinity' THEN {args.add(math.inf)}"
        f" WHEN {table}.value = '-Infinity' THEN {args.add(-math.inf)}"
        f" WHEN {table}.vtype IN ('int', 'float') THEN CAST({table}.value AS FLOAT)"
        " ELSE NULL END"
    )


def _value_condition(table: str, cmp: Comparison, args: _Args) -> str:
    """The condition on one metric/param/tag row for ``cmp`` (key already matched)."""
    kind, op, value = cmp.field.kind, cmp.op, cmp.value
    values = value if isinstance(value, tuple) else (value,)
    if kind == "metrics":
        if not all(_is_number(v) for v in values):
            raise InvalidInput(
                f"metrics.{cmp.field.key} is compared with {value!r}",
                "metrics compare with numbers, e.g. metrics.accuracy > 0.8",
            )
        if op.endswith("like"):
            raise InvalidInput(f"'{op}' does not apply to the metric {cmp.field.key!r}", "use =, <, > ...")
        return _apply(f"{table}.value", op, value, args)
    if kind == "params" and all(_is_number(v) for v in values) and not op.endswith("like"):
        return _apply(f"({_numeric_param(table, args)})", op, value, args)
    if kind == "params" and all(isinstance(v, bool) for v in values):
        text = tuple("true" if v else "false" for v in values)
        return _apply(f"{table}.value", op, text if isinstance(value, tuple) else text[0], args)
    text_value = tuple(str(v) for v in values) if isinstance(value, tuple) else str(value)
    return _apply(f"{table}.value", op, text_value, args)


def _attribute_condition(cmp: Comparison, args: _Args) -> str:
    column = ATTRIBUTES.get(cmp.field.key)
    if column is None:
        raise InvalidInput(
            f"unknown run attribute {cmp.field.key!r}",
            f"use metrics.<key>, params.<key>, tags.<key> or one of: {', '.join(sorted(ATTRIBUTES))}",
        )
    if cmp.op == "is null":
        return f"{column} IS NULL"
    if cmp.op == "is not null":
        return f"{column} IS NOT NULL"
    key, value = cmp.field.key, cmp.value
    values = value if isinstance(value, tuple) else (value,)
    if any(isinstance(v, bool) for v in values):
        raise InvalidInput(f"the run attribute {key!r} is not true or false", f"compare {key} with a value")
    if key in _TIME_ATTRIBUTES:
        if cmp.op.endswith("like") or not all(_is_number(v) for v in values):
            raise InvalidInput(
                f"{key} is compared with {value!r}",
                f"{key} compares with a number of milliseconds since the epoch, e.g. {key} > 1700000000000",
            )
        return _apply(column, cmp.op, value, args)
    # Text attributes compare as text (a number becomes its text: name = 5 is name = '5').
    text = tuple(str(v) for v in values)
    if key == "status":
        text = tuple(v.lower() for v in text)
    return _apply(column, cmp.op, text if isinstance(value, tuple) else text[0], args)


class _Compiler:
    """Builds the WHERE clause; positive top-level comparisons become joins (``join_sql``)."""

    def __init__(self, args: _Args) -> None:
        self.args = args  # of the WHERE clause
        self.join_args = _Args()  # of the JOIN clauses, which come first in the statement
        self.joins: list[str] = []
        self.joined: dict[tuple[str, str], str] = {}

    def join_for(self, kind: str, key: str, outer: bool = False) -> str:
        """An alias of the metric/param/tag table joined on (run, key)."""
        found = self.joined.get((kind, key))
        if found is not None:
            return found
        alias = f"j{len(self.joins)}"
        word = "LEFT OUTER JOIN" if outer else "JOIN"
        on = f"{alias}.run_pk = runs.id AND {alias}.key = {self.join_args.add(key)}"
        self.joins.append(f" {word} {_TABLES[kind]} AS {alias} ON {on}")
        self.joined[(kind, key)] = alias
        return alias

    def condition(self, node: Node, top: bool) -> str:
        if isinstance(node, And):
            return "(" + " AND ".join(self.condition(item, top) for item in node.items) + ")"
        if isinstance(node, Or):
            return "(" + " OR ".join(self.condition(item, False) for item in node.items) + ")"
        if isinstance(node, Not):
            return f"NOT ({self.condition(node.item, False)})"
        return self.comparison(node, top)

    def comparison(self, cmp: Comparison, top: bool) -> str:
        kind = cmp.field.kind
        if kind in (None, "attributes"):
            return _attribute_condition(cmp, self.args)
        table = _TABLES[kind]
        if cmp.op == "is null":
            return f"NOT ({self._exists(table, cmp.field.key, None)})"
        if cmp.op == "is not null":
            return self._exists(table, cmp.field.key, None)
        if top and cmp.op not in ("!=", "not in", "not like", "not ilike"):
            alias = self.join_for(kind, cmp.field.key)
            return _value_condition(alias, cmp, self.args)
        return self._exists(table, cmp.field.key, cmp)

    def _exists(self, table: str, key: str, cmp: Comparison | None) -> str:
        where = f"{table}.run_pk = runs.id AND {table}.key = {self.args.add(key)}"
        if cmp is not None:
            where += f" AND {_value_condition(table, cmp, self.args)}"
        return f"EXISTS (SELECT 1 FROM {table} WHERE {where})"


def _window_condition(column: str, ascending: bool, edge: float) -> str:
    """``column`` within the window's edge, the edge written as a literal: with a parameter or a
    subquery the planner cannot tell that only a few thousand rows pass, and on 1M runs it
    drives the query from the filter instead (1.5 s instead of ~20 ms). The edge is a finite
    float from the database, written by ``repr`` (exact, never text from a user)."""
    if not math.isfinite(edge):
        raise ValueError(f"the window's edge must be finite, not {edge!r}")
    return f"{column} {'<=' if ascending else '>='} {float(edge)!r}"


def compile_search(
    project_ids: list[int] | None,
    node: Node | None,
    order_by: list[OrderBy],
    include_deleted: bool = False,
    only_deleted: bool = False,
    window_edge: float | None = None,
) -> SearchSQL:
    """A SELECT of the matching runs (the columns of :data:`RECORD_COLUMNS`), in order.

    Raises InvalidInput when the query is out of keel's bounds (see
    :func:`keel.core.filters.check_query`), before any SQL is built.

    ``window_edge`` (when the first order clause is a metric) keeps only runs whose
    value of that metric is this edge or better: the caller reads the value a few
    thousand places from the best first (``TrackingStore._window_edge``), so ties
    are included. A top-k query then reads a few thousand index entries instead
    of every match; if the window holds fewer results than wanted, the caller
    runs the query again without it.
    """
    check_query(node, order_by)
    args = _Args()
    compiler = _Compiler(args)
    conditions: list[str] = []
    if project_ids is not None:
        conditions.append(f"runs.project_id IN ({args.marks(tuple(project_ids))})" if project_ids else "1 = 0")
    if only_deleted:
        conditions.append(f"runs.deleted = {args.add(True)}")
    elif not include_deleted:
        conditions.append(f"runs.deleted = {args.add(False)}")
    if node is not None:
        conditions.append(compiler.condition(node, top=True))

    order_args = _Args()
    order_columns: list[str] = []
    for clause in order_by:
        field: Field = clause.field
        direction = "ASC" if clause.ascending else "DESC"
        if field.kind in (None, "attributes"):
            column = ATTRIBUTES.get(field.key)
            if column is None:
                raise InvalidInput(
                    f"cannot order by unknown run attribute {field.key!r}",
                    "order by metrics.<key>, params.<key>, tags.<key>, start_time, end_time, name or status",
                )
        else:
            alias = compiler.join_for(field.kind, field.key, outer=True)
            column = f"{alias}.value"
            if window_edge is not None and not order_columns and field.kind == "metrics":
                conditions.append(_window_condition(column, clause.ascending, window_edge))
            if field.kind == "params":  # numbers in numeric order first, then text
                order_columns.append(f"{_numeric_param(alias, order_args)} {direction} NULLS LAST")
        # NULLS LAST only where there can be NULLs: PostgreSQL walks an index backwards for a
        # plain DESC (the newest runs of a project: ix_runs_project_start), never for DESC NULLS LAST.
        order_columns.append(f"{column} {direction}" if column in _NOT_NULL else f"{column} {direction} NULLS LAST")
    order_columns += ["runs.start_time DESC", "runs.id DESC"]

    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = f"SELECT {RECORD_COLUMNS} FROM {_FROM}{''.join(compiler.joins)}{where} ORDER BY {', '.join(order_columns)}"
    return SearchSQL(sql, (*compiler.join_args, *args, *order_args))
