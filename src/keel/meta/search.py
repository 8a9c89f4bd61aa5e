"""Compile a parsed run filter (``keel.core.filters``) into SQL.

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
from typing import Any

from sqlalchemy import Float, and_, case, cast, exists, false, literal, not_, null, or_, select, true
from sqlalchemy.sql import ColumnElement, Select

from keel.core.filters import And, Comparison, Field, Node, Not, Or, OrderBy, check_query
from keel.errors import InvalidInput
from keel.meta.schema import latest_metrics, params, projects, runs, tags

__all__ = ["ATTRIBUTES", "RECORD_COLUMNS", "compile_search"]

ATTRIBUTES: dict[str, Any] = {
    "status": runs.c.status,
    "name": runs.c.name,
    "run_name": runs.c.name,
    "run_id": runs.c.run_id,
    "id": runs.c.run_id,
    "start_time": runs.c.start_time,
    "end_time": runs.c.end_time,
    "parent_id": runs.c.parent_id,
    "parent": runs.c.parent_id,
    "project": projects.c.name,
    "error": runs.c.error,
}

#: Attributes holding times (epoch milliseconds): compared with numbers only.
_TIME_ATTRIBUTES = frozenset(("start_time", "end_time"))

_TABLES = {"metrics": latest_metrics, "params": params, "tags": tags}

# What a run record is built from (see TrackingStore._record).
RECORD_COLUMNS = (
    runs.c.id,
    runs.c.run_id,
    projects.c.name,
    runs.c.name,
    runs.c.status,
    runs.c.start_time,
    runs.c.end_time,
    runs.c.parent_id,
    runs.c.deleted,
    runs.c.error,
    runs.c.context,
    runs.c.summary,
)


def _apply(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    if op == "=":
        return column == value
    if op == "!=":
        return column != value
    if op == "<":
        return column < value
    if op == "<=":
        return column <= value
    if op == ">":
        return column > value
    if op == ">=":
        return column >= value
    if op == "like":
        return column.like(value)
    if op == "not like":
        return not_(column.like(value))
    if op == "ilike":
        return column.ilike(value)
    if op == "not ilike":
        return not_(column.ilike(value))
    if op == "in":
        return column.in_(list(value))
    if op == "not in":
        return column.not_in(list(value))
    raise InvalidInput(f"unsupported operator {op!r}")  # pragma: no cover - parser guards


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numeric_param(table: Any) -> Any:
    """A param's value as a number, or NULL if it is not one.

    Floats are stored as JSON text; the non-finite ones are spelled out because
    CAST reads them as 0.0 (SQLite) or orders 'NaN' above every number (PostgreSQL).
    """
    return case(
        (table.c.value == "NaN", null()),
        (table.c.value == "Infinity", literal(math.inf, Float)),
        (table.c.value == "-Infinity", literal(-math.inf, Float)),
        (table.c.vtype.in_(("int", "float")), cast(table.c.value, Float)),
        else_=null(),
    )


def _value_condition(table: Any, cmp: Comparison) -> ColumnElement[bool]:
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
        return _apply(table.c.value, op, value)
    if kind == "params" and all(_is_number(v) for v in values) and not op.endswith("like"):
        return _apply(_numeric_param(table), op, value)
    if kind == "params" and all(isinstance(v, bool) for v in values):
        text = tuple("true" if v else "false" for v in values)
        return _apply(table.c.value, op, text if isinstance(value, tuple) else text[0])
    text_value = tuple(str(v) for v in values) if isinstance(value, tuple) else str(value)
    return _apply(table.c.value, op, text_value)


def _attribute_condition(cmp: Comparison) -> ColumnElement[bool]:
    column = ATTRIBUTES.get(cmp.field.key)
    if column is None:
        raise InvalidInput(
            f"unknown run attribute {cmp.field.key!r}",
            f"use metrics.<key>, params.<key>, tags.<key> or one of: {', '.join(sorted(ATTRIBUTES))}",
        )
    if cmp.op == "is null":
        return column.is_(None)
    if cmp.op == "is not null":
        return column.is_not(None)
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
        return _apply(column, cmp.op, value)
    # Text attributes compare as text (a number becomes its text: name = 5 is name = '5').
    text = tuple(str(v) for v in values)
    if key == "status":
        text = tuple(v.lower() for v in text)
    return _apply(column, cmp.op, text if isinstance(value, tuple) else text[0])


class _Compiler:
    def __init__(self) -> None:
        self.joins: list[tuple[Any, ColumnElement[bool], bool]] = []
        self.joined: dict[tuple[str, str], Any] = {}

    def join_for(self, kind: str, key: str, outer: bool = False) -> Any:
        """An alias of the metric/param/tag table joined on (run, key)."""
        found = self.joined.get((kind, key))
        if found is not None:
            return found
        alias = _TABLES[kind].alias(f"j{len(self.joins)}")
        self.joins.append((alias, and_(alias.c.run_pk == runs.c.id, alias.c.key == key), outer))
        self.joined[(kind, key)] = alias
        return alias

    def condition(self, node: Node, top: bool) -> ColumnElement[bool]:
        if isinstance(node, And):
            return and_(*(self.condition(item, top) for item in node.items))
        if isinstance(node, Or):
            return or_(*(self.condition(item, False) for item in node.items))
        if isinstance(node, Not):
            return not_(self.condition(node.item, False))
        return self.comparison(node, top)

    def comparison(self, cmp: Comparison, top: bool) -> ColumnElement[bool]:
        kind = cmp.field.kind
        if kind in (None, "attributes"):
            return _attribute_condition(cmp)
        table = _TABLES[kind]
        if cmp.op == "is null":
            return not_(self._exists(table, cmp.field.key, true()))
        if cmp.op == "is not null":
            return self._exists(table, cmp.field.key, true())
        if top and cmp.op not in ("!=", "not in", "not like", "not ilike"):
            alias = self.join_for(kind, cmp.field.key)
            return _value_condition(alias, cmp)
        return self._exists(table, cmp.field.key, _value_condition(table, cmp))

    @staticmethod
    def _exists(table: Any, key: str, condition: ColumnElement[bool]) -> ColumnElement[bool]:
        return exists().where(table.c.run_pk == runs.c.id, table.c.key == key, condition)


def _window_condition(column: Any, key: str, ascending: bool, window: int) -> ColumnElement[bool]:
    lm = latest_metrics
    ordered = lm.c.value.asc() if ascending else lm.c.value.desc()
    edge = (
        select(lm.c.value)
        .where(lm.c.key == key, lm.c.value.is_not(None))
        .order_by(ordered)
        .limit(1)
        .offset(window - 1)
        .scalar_subquery()
    )
    return column <= edge if ascending else column >= edge


def compile_search(
    project_ids: list[int] | None,
    node: Node | None,
    order_by: list[OrderBy],
    include_deleted: bool = False,
    only_deleted: bool = False,
    window: int | None = None,
) -> Select[Any]:
    """A SELECT of the matching runs (the columns of :data:`RECORD_COLUMNS`), in order.

    Raises InvalidInput when the query is out of keel's bounds (see
    :func:`keel.core.filters.check_query`), before anything is compiled.

    ``window`` (when the first order clause is a metric) keeps only runs whose
    value of that metric is among the ``window`` best of all runs, ties
    included. A top-k query then reads a few thousand index entries instead
    of every match; if the window holds fewer results than wanted, the caller
    runs the query again without it.
    """
    check_query(node, order_by)
    compiler = _Compiler()
    conditions: list[ColumnElement[bool]] = []
    if project_ids is not None:
        conditions.append(runs.c.project_id.in_(project_ids) if project_ids else false())
    if only_deleted:
        conditions.append(runs.c.deleted == true())
    elif not include_deleted:
        conditions.append(runs.c.deleted == false())
    if node is not None:
        conditions.append(compiler.condition(node, top=True))

    order_columns: list[Any] = []
    for clause in order_by:
        field: Field = clause.field
        if field.kind in (None, "attributes"):
            column = ATTRIBUTES.get(field.key)
            if column is None:
                raise InvalidInput(
                    f"cannot order by unknown run attribute {field.key!r}",
                    "order by metrics.<key>, params.<key>, tags.<key>, start_time, end_time, name or status",
                )
        else:
            alias = compiler.join_for(field.kind, field.key, outer=True)
            column = alias.c.value
            if window and not order_columns and field.kind == "metrics":
                conditions.append(_window_condition(column, field.key, clause.ascending, window))
            if field.kind == "params":  # numbers in numeric order first, then text
                numeric = _numeric_param(alias)
                order_columns.append((numeric.asc() if clause.ascending else numeric.desc()).nulls_last())
        ordered = column.asc() if clause.ascending else column.desc()
        order_columns.append(ordered.nulls_last())
    order_columns += [runs.c.start_time.desc(), runs.c.id.desc()]

    source: Any = runs.join(projects, projects.c.id == runs.c.project_id)
    for alias, on, outer in compiler.joins:
        source = source.join(alias, on, isouter=outer)
    return select(*RECORD_COLUMNS).select_from(source).where(*conditions).order_by(*order_columns)
