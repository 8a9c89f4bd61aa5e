"""The filter language: text -> a safe AST (never SQL), plus a row evaluator.

Grammar (keywords are case-insensitive)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "not" unary | "(" expr ")" | comparison
    comparison := field op literal
                | field ["not"] "in" "(" literal ("," literal)* ")"
                | field "is" ["not"] "null"
    op         := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">=" | ["not"] ("like" | "ilike")
    field      := name ("." name)*          e.g. metrics.accuracy, params.rag.top_k
                | prefix "." quoted         e.g. tags."my tag", metrics.`f1 score`
    literal    := number | 'string' | "string" | true | false | null

For run search the first part of a field picks what it refers to:
``metrics``/``metric``/``m``, ``params``/``param``/``p``, ``tags``/``tag``/``t``,
``attributes``/``attribute``/``attr``/``run``; a bare name (``status``,
``name``) is a run attribute. Tables use bare column names.

The AST is made of frozen dataclasses so the SQL compiler (in ``meta``) and
the Python evaluator (:func:`evaluate`, used for tables) share one parser.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from keel.errors import FilterSyntaxError

__all__ = [
    "And",
    "Comparison",
    "Field",
    "Node",
    "Not",
    "Or",
    "OrderBy",
    "RUN_PREFIXES",
    "evaluate",
    "like_to_regex",
    "parse_filter",
    "parse_order_by",
]

RUN_PREFIXES: Mapping[str, str] = {
    "metrics": "metrics",
    "metric": "metrics",
    "m": "metrics",
    "params": "params",
    "param": "params",
    "p": "params",
    "tags": "tags",
    "tag": "tags",
    "t": "tags",
    "attributes": "attributes",
    "attribute": "attributes",
    "attr": "attributes",
    "run": "attributes",
}


@dataclass(frozen=True)
class Field:
    """A reference to a value: ``kind`` is metrics/params/tags/attributes (or None)."""

    kind: str | None
    key: str


@dataclass(frozen=True)
class Comparison:
    field: Field
    op: str  # one of = != < <= > >= like ilike not like, not ilike, in, not in, is null, is not null
    value: Any  # str | float | int | bool | None | tuple for in


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Union[Comparison, And, Or, Not]  # noqa: UP007 - a runtime alias


@dataclass(frozen=True)
class OrderBy:
    field: Field
    ascending: bool = True


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_]))
  | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
  | (?P<backtick>`[^`]*`)
  | (?P<op><=|>=|!=|<>|==|=|<|>)
  | (?P<punct>[(),.])
  | (?P<name>[A-Za-z_][A-Za-z0-9_\-:/]*)
    """,
    re.VERBOSE,
)


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise FilterSyntaxError(f"unexpected character {text[pos]!r}", text, pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    tokens.append(_Tok("end", "", len(text)))
    return tokens


def _unquote(tok: _Tok) -> str:
    body = tok.text[1:-1]
    if tok.text[0] == "'":
        body = body.replace("''", "'")
    return re.sub(r"\\(.)", r"\1", body) if tok.kind != "backtick" else body


class _Parser:
    def __init__(self, text: str, prefixes: Mapping[str, str], default_kind: str | None):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.prefixes = prefixes
        self.default_kind = default_kind

    # -- helpers -------------------------------------------------------
    @property
    def tok(self) -> _Tok:
        return self.tokens[self.i]

    def error(self, message: str, tok: _Tok | None = None) -> FilterSyntaxError:
        tok = tok or self.tok
        return FilterSyntaxError(message, self.text, tok.pos)

    def keyword(self, *words: str) -> bool:
        return self.tok.kind == "name" and self.tok.text.lower() in words

    def take(self) -> _Tok:
        tok = self.tok
        self.i += 1
        return tok

    # -- grammar ---------------------------------------------------------
    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise self.error("the filter is empty")
        node = self.expr()
        if self.tok.kind != "end":
            raise self.error(f"expected 'and', 'or' or the end, found {self.tok.text!r}")
        return node

    def expr(self) -> Node:
        items = [self.and_expr()]
        while self.keyword("or"):
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.unary()]
        while self.keyword("and"):
            self.take()
            items.append(self.unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self) -> Node:
        if self.keyword("not"):
            self.take()
            return Not(self.unary())
        if self.tok.text == "(":
            self.take()
            node = self.expr()
            if self.tok.text != ")":
                raise self.error("expected ')'")
            self.take()
            return node
        return self.comparison()

    def field(self) -> Field:
        tok = self.tok
        if tok.kind in ("backtick", "string") and not self.prefixes:
            self.take()
            return Field(None, _unquote(tok))
        if tok.kind != "name":
            raise self.error(f"expected a field name like metrics.accuracy, found {tok.text!r}")
        if tok.text.lower() in ("and", "or", "not", "in", "is", "like", "ilike"):
            raise self.error(f"expected a field name, found the keyword {tok.text!r}")
        self.take()
        kind = self.prefixes.get(tok.text.lower()) if self.prefixes else None
        if kind is not None and self.tok.text == ".":
            self.take()
            parts: list[str] = []
        else:
            kind = self.default_kind
            parts = [tok.text]
            if self.tok.text != ".":
                return Field(kind, tok.text)
            self.take()
        while True:
            part = self.tok
            if part.kind == "name" or part.kind == "number" and part.text.isdigit():
                parts.append(part.text)
            elif part.kind in ("string", "backtick"):
                parts.append(_unquote(part))
            else:
                raise self.error("expected a key after '.'")
            self.take()
            if self.tok.text != ".":
                break
            self.take()
        return Field(kind, ".".join(parts))

    def literal(self) -> Any:
        tok = self.take()
        if tok.kind == "number":
            text = tok.text
            return int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
        if tok.kind == "string":
            return _unquote(tok)
        if tok.kind == "name" and tok.text.lower() in ("true", "false"):
            return tok.text.lower() == "true"
        if tok.kind == "name" and tok.text.lower() == "null":
            return None
        raise self.error(f"expected a value (number or 'quoted string'), found {tok.text!r}", tok)

    def comparison(self) -> Node:
        field = self.field()
        tok = self.tok
        if tok.kind == "op":
            self.take()
            op = {"==": "=", "<>": "!="}.get(tok.text, tok.text)
            value = self.literal()
            if value is None:
                raise self.error("compare with null using 'is null' / 'is not null'", tok)
            return Comparison(field, op, value)
        negate = False
        if self.keyword("not"):
            self.take()
            negate = True
        if self.keyword("like", "ilike"):
            op = self.take().text.lower()
            value = self.literal()
            if not isinstance(value, str):
                raise self.error(f"{op} needs a 'quoted pattern'", tok)
            return Comparison(field, f"not {op}" if negate else op, value)
        if self.keyword("in"):
            self.take()
            if self.tok.text != "(":
                raise self.error("expected '(' after 'in'")
            self.take()
            values = [self.literal()]
            while self.tok.text == ",":
                self.take()
                values.append(self.literal())
            if self.tok.text != ")":
                raise self.error("expected ',' or ')' in the value list")
            self.take()
            return Comparison(field, "not in" if negate else "in", tuple(values))
        if not negate and self.keyword("is"):
            self.take()
            is_not = False
            if self.keyword("not"):
                self.take()
                is_not = True
            if not self.keyword("null"):
                raise self.error("expected 'null' after 'is'")
            self.take()
            return Comparison(field, "is not null" if is_not else "is null", None)
        raise self.error(f"expected a comparison operator after {field.key!r}, found {tok.text!r}")


def parse_filter(
    text: str,
    prefixes: Mapping[str, str] = RUN_PREFIXES,
    default_kind: str | None = "attributes",
) -> Node:
    """Parse a filter string; raise FilterSyntaxError pointing at the bad spot."""
    if not isinstance(text, str):
        raise FilterSyntaxError("the filter must be a string")
    return _Parser(text, prefixes, default_kind if prefixes else None).parse()


def parse_order_by(
    clauses: str | list[str] | tuple[str, ...] | None,
    prefixes: Mapping[str, str] = RUN_PREFIXES,
    default_kind: str | None = "attributes",
) -> list[OrderBy]:
    """Parse ``["metrics.cost asc", "start_time desc"]`` (or one comma-separated string)."""
    if clauses is None:
        return []
    if isinstance(clauses, str):
        clauses = [c for c in clauses.split(",") if c.strip()]
    result = []
    for clause in clauses:
        parser = _Parser(clause, prefixes, default_kind if prefixes else None)
        field = parser.field()
        ascending = True
        if parser.keyword("asc", "desc"):
            ascending = parser.take().text.lower() == "asc"
        if parser.tok.kind != "end":
            raise parser.error("an order clause is 'field [asc|desc]'")
        result.append(OrderBy(field, ascending))
    return result


def like_to_regex(pattern: str, case_insensitive: bool = False) -> re.Pattern[str]:
    """SQL LIKE (``%`` any run, ``_`` one character) as an anchored regex."""
    out = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(f"^{out}$", re.S | (re.I if case_insensitive else 0))


_ORDERED: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "is null":
        return actual is None
    if op == "is not null":
        return actual is not None
    if actual is None:
        return False
    if op in ("in", "not in"):
        hit = any(_compare(actual, "=", v) for v in expected)
        return hit if op == "in" else not hit
    if op.endswith("like"):
        regex = like_to_regex(expected, case_insensitive=op.endswith("ilike"))
        hit = bool(regex.match(str(actual)))
        return not hit if op.startswith("not") else hit
    # Numbers compare as numbers (a numeric string column compares numerically).
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        if isinstance(actual, str):
            try:
                actual = float(actual)
            except ValueError:
                return op == "!="
        elif not isinstance(actual, int | float):
            return op == "!="
    elif isinstance(expected, str) and not isinstance(actual, str):
        actual = str(actual)
    try:
        return _ORDERED[op](actual, expected)
    except TypeError:
        return False


def evaluate(node: Node, lookup: Callable[[Field], Any]) -> bool:
    """Evaluate ``node`` against a row; ``lookup(field)`` returns the value or None."""
    if isinstance(node, Comparison):
        return _compare(lookup(node.field), node.op, node.value)
    if isinstance(node, And):
        return all(evaluate(item, lookup) for item in node.items)
    if isinstance(node, Or):
        return any(evaluate(item, lookup) for item in node.items)
    return not evaluate(node.item, lookup)
