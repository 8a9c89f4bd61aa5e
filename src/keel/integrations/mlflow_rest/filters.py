"""MLflow's search grammar, translated to keel's.

MLflow's run filter (``metrics.acc > 0.8 and params.model = 'x' and
attributes.status = 'FINISHED'``) is close to keel's own filter language
(:mod:`keel.core.filters`), so a filter is parsed by keel's parser and its
AST rewritten where the two differ:

- MLflow attributes -> keel attributes: ``run_name`` -> ``name``, ``created`` ->
  ``start_time``, ``user_id`` -> the ``mlflow.user`` tag; the statuses
  ``RUNNING``/``SCHEDULED``/``FINISHED``/``FAILED``/``KILLED`` -> keel's
  ``running``/``finished``/``failed``/``killed``;
- the system tags keel keeps as run fields: ``tags.mlflow.runName`` -> ``name``,
  ``tags.mlflow.parentRunId`` -> ``parent_id``;
- what keel does not index (``artifact_uri``, ``lifecycle_stage``, ``dataset.*``)
  is an InvalidInput naming the field.

The registries (registered models, model versions, prompts) and experiments
are small, so their filters are evaluated over plain rows (:func:`row_filter`,
:func:`registry_filter`), with MLflow's meaning: a tag comparison (``!=`` too) holds
only where the tag exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from keel.core.filters import And, Comparison, Field, Node, Not, Or, OrderBy, evaluate, parse_filter, parse_order_by
from keel.errors import InvalidInput

__all__ = [
    "IS_PROMPT_TAG",
    "MLFLOW_STATUS",
    "KEEL_STATUS",
    "order_rows",
    "registry_filter",
    "row_filter",
    "run_filter",
    "run_order_by",
]

#: keel run status -> MLflow's.
MLFLOW_STATUS: Mapping[str, str] = {
    "running": "RUNNING",
    "finished": "FINISHED",
    "failed": "FAILED",
    "killed": "KILLED",
}
#: MLflow run status -> keel's (SCHEDULED runs are running runs to keel).
KEEL_STATUS: Mapping[str, str] = {**{v: k for k, v in MLFLOW_STATUS.items()}, "SCHEDULED": "running"}

_ATTRIBUTES: Mapping[str, Field] = {
    "run_id": Field("attributes", "run_id"),
    "run_uuid": Field("attributes", "run_id"),
    "run_name": Field("attributes", "name"),
    "name": Field("attributes", "name"),
    "status": Field("attributes", "status"),
    "start_time": Field("attributes", "start_time"),
    "created": Field("attributes", "start_time"),
    "Created": Field("attributes", "start_time"),
    "end_time": Field("attributes", "end_time"),
    "user_id": Field("tags", "mlflow.user"),
}
_SYSTEM_TAGS: Mapping[str, Field] = {
    "mlflow.runName": Field("attributes", "name"),
    "mlflow.parentRunId": Field("attributes", "parent_id"),
}
_RUN_PREFIXES: Mapping[str, str] = {
    "metrics": "metrics",
    "metric": "metrics",
    "params": "params",
    "param": "params",
    "parameter": "params",
    "parameters": "params",
    "tags": "tags",
    "tag": "tags",
    "attributes": "attributes",
    "attribute": "attributes",
    "attr": "attributes",
    "run": "attributes",
}
#: The tag that makes a registered model (and its versions) an MLflow prompt.
IS_PROMPT_TAG = "mlflow.prompt.is_prompt"
_REGISTRY_PREFIXES: Mapping[str, str] = {
    "tags": "tags",
    "tag": "tags",
    "attributes": "attributes",
    "attribute": "attributes",
    "attr": "attributes",
}


def _run_field(field: Field) -> Field:
    if field.kind in (None, "attributes"):
        found = _ATTRIBUTES.get(field.key)
        if found is None:
            raise InvalidInput(
                f"the run attribute {field.key!r} is not searchable in keel",
                "use run_id, run_name, status, start_time, end_time, user_id, metrics.*, params.* or tags.*",
            )
        return found
    if field.kind == "tags":
        return _SYSTEM_TAGS.get(field.key, field)
    return field


def _status(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_status(v) for v in value)
    status = KEEL_STATUS.get(str(value).upper())
    if status is None:
        raise InvalidInput(f"unknown run status {value!r}", f"use one of {', '.join(KEEL_STATUS)}")
    return status


def _rewrite(node: Node) -> Node:
    if isinstance(node, And):
        return And(tuple(_rewrite(item) for item in node.items))
    if isinstance(node, Or):
        return Or(tuple(_rewrite(item) for item in node.items))
    if isinstance(node, Not):
        return Not(_rewrite(node.item))
    field = _run_field(node.field)
    value = node.value
    if field.key == "status" and field.kind == "attributes" and node.op in ("=", "!=", "in", "not in"):
        value = _status(value)
    return Comparison(field, node.op, value)


def _empty(text: Any) -> bool:
    """No filter: None or blank text (anything else, text or not, goes to the parser)."""
    return text is None or isinstance(text, str) and not text.strip()


def run_filter(text: str | None) -> Node | None:
    """An MLflow run ``filter_string`` as keel's filter AST (None when empty).

    Bounded as keel's own filters are (:mod:`keel.core.limits`).
    """
    if _empty(text):
        return None
    return _rewrite(parse_filter(text, _RUN_PREFIXES, "attributes"))  # type: ignore[arg-type]


def run_order_by(clauses: Sequence[str] | None) -> list[OrderBy]:
    """MLflow ``order_by`` clauses (``["metrics.acc DESC", "start_time"]``) as keel's
    (at most :data:`~keel.core.limits.MAX_SORT_KEYS`)."""
    if clauses is None or isinstance(clauses, list | tuple) and not clauses:
        return []
    parsed = parse_order_by(clauses, _RUN_PREFIXES, "attributes")
    return [OrderBy(_run_field(clause.field), clause.ascending) for clause in parsed]


def _check_attributes(node: Node, allowed: set[str]) -> None:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, And | Or):
            stack.extend(item.items)
        elif isinstance(item, Not):
            stack.append(item.item)
        elif item.field.kind in (None, "attributes") and item.field.key not in allowed:
            raise InvalidInput(
                f"invalid attribute {item.field.key!r} in the filter",
                f"filter on tags.<key> or one of: {', '.join(sorted(allowed))}",
            )


def _predicate(node: Node | None) -> Callable[[Mapping[str, Any]], bool]:
    """``node`` over a plain row: a tag comparison is false where the row has no such tag
    (MLflow's stores join on the tag, so ``tags.k != 'v'`` needs ``k``)."""
    if node is None:
        return lambda _row: True

    def lookup(row: Mapping[str, Any]) -> Callable[[Field], Any]:
        def get(field: Field) -> Any:
            if field.kind == "tags":
                return row.get("tags", {}).get(field.key)
            return row.get(field.key)

        return get

    return lambda row: evaluate(node, lookup(row))


def _parse_rows(text: str, attributes: Sequence[str]) -> Node:
    node = parse_filter(text, _REGISTRY_PREFIXES, "attributes")  # type: ignore[arg-type]
    _check_attributes(node, set(attributes))
    return node


def row_filter(text: str | None, attributes: Sequence[str]) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate over experiment rows (dicts with a ``tags`` dict) for an MLflow filter.

    ``attributes`` are the names the filter may use bare (``name``, ``creation_time``...).
    """
    return _predicate(None if _empty(text) else _parse_rows(text, attributes))  # type: ignore[arg-type]


def _is_prompt_clause(node: Node) -> bool:
    return isinstance(node, Comparison) and node.field.kind == "tags" and node.field.key == IS_PROMPT_TAG


def registry_filter(text: str | None, attributes: Sequence[str]) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate over registered-model or model-version rows for an MLflow filter, with
    MLflow's rule for prompts (a prompt is tagged ``mlflow.prompt.is_prompt = 'true'``): rows
    are models unless the filter asks for prompts (``tags.`mlflow.prompt.is_prompt` = 'true'``
    or ``!= 'false'``); otherwise comparisons on that tag are dropped and prompts left out."""
    node = None if _empty(text) else _parse_rows(text, attributes)  # type: ignore[arg-type]
    clauses = list(node.items) if isinstance(node, And) else [] if node is None else [node]
    prompts = False
    for clause in clauses:
        if isinstance(clause, Comparison) and _is_prompt_clause(clause):
            value = str(clause.value).lower()
            prompts = (clause.op == "=" and value == "true") or (clause.op == "!=" and value == "false")
            break
    if not prompts:
        clauses = [clause for clause in clauses if not _is_prompt_clause(clause)]
    rest = _predicate(And(tuple(clauses)) if len(clauses) > 1 else clauses[0] if clauses else None)
    if prompts:
        return rest
    return lambda row: row.get("tags", {}).get(IS_PROMPT_TAG) != "true" and rest(row)


def order_rows(
    rows: list[dict[str, Any]], clauses: Sequence[str] | None, attributes: Sequence[str], default: Sequence[str]
) -> list[dict[str, Any]]:
    """``rows`` sorted by MLflow ``order_by`` clauses (``"name ASC"``), then by ``default``."""
    given = [] if clauses is None else parse_order_by(clauses, _REGISTRY_PREFIXES, "attributes")
    parsed = given + parse_order_by(list(default), _REGISTRY_PREFIXES, "attributes")
    for clause in parsed:
        if clause.field.kind in (None, "attributes") and clause.field.key not in attributes:
            raise InvalidInput(
                f"cannot order by {clause.field.key!r}", f"order by one of: {', '.join(sorted(attributes))}"
            )
    out = list(rows)
    for clause in reversed(parsed):
        key = clause.field.key
        tags = clause.field.kind == "tags"

        def value(row: dict[str, Any], key: str = key, tags: bool = tags) -> tuple[bool, Any]:
            found = row.get("tags", {}).get(key) if tags else row.get(key)
            return (found is None, found if found is not None else 0)

        present = [r for r in out if value(r)[0] is False]
        missing = [r for r in out if value(r)[0] is True]
        present.sort(key=lambda r: value(r)[1], reverse=not clause.ascending)
        out = present + missing
    return out
