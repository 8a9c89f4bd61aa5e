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

Every input is bounded (:mod:`keel.core.limits`): the text's length, the
nesting of parentheses and ``not``, the number of comparisons, values and
distinct keys, integer literals within 64 bits, finite numbers, text without
lone surrogates or NUL characters, ``true``/``false`` only with ``=``/``!=``,
and at most :data:`~keel.core.limits.MAX_SORT_KEYS` sort keys. A refusal is a
FilterSyntaxError pointing at the position; :func:`check_query` checks an AST
built by other code (and the join count of filter and sort together) with
the same bounds, before any SQL is generated. The parser's recursion is
bounded by the nesting limit, so no input can exhaust Python's stack.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from keel.core.limits import (
    INT64_MAX,
    INT64_MIN,
    MAX_FIELD_KEY_LENGTH,
    MAX_FILTER_DEPTH,
    MAX_FILTER_LENGTH,
    MAX_FILTER_TERMS,
    MAX_FILTER_VALUES,
    MAX_QUERY_KEYS,
    MAX_SORT_KEYS,
)
from keel.errors import FilterSyntaxError, InvalidInput

__all__ = [
    "And",
    "Comparison",
    "Field",
    "Node",
    "Not",
    "Or",
    "OrderBy",
    "RUN_PREFIXES",
    "check_query",
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


# Lone surrogates cannot be encoded (UTF-8, every driver); NUL cannot be stored (PostgreSQL text).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_INTEGER = re.compile(r"[-+]?\d+")
_ORDERED_OPS = ("<", "<=", ">", ">=")
_KEYWORDS = ("and", "or", "not", "in", "is", "like", "ilike")


def _printable(text: str) -> str:
    """``text`` safe to carry in an error (lone surrogates escaped as ``\\udXXX``)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _check_text(text: str, what: str) -> None:
    """Refuse text that is too long or holds characters no database can store."""
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterSyntaxError(
            f"the {what} is {len(text):,} characters long, at most {MAX_FILTER_LENGTH:,} are allowed "
            f"(it goes on past position {MAX_FILTER_LENGTH:,})",
            "",
            MAX_FILTER_LENGTH,
        )
    bad = _UNSTORABLE.search(text)
    if bad is not None:
        char = bad.group()
        name = "a NUL character" if char == "\x00" else f"a lone surrogate {char!r} (not valid UTF-8)"
        raise FilterSyntaxError(f"the {what} holds {name}", _printable(text), bad.start())


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
    """Recursive descent whose recursion is bounded by :data:`MAX_FILTER_DEPTH`
    (about three Python frames per level of parentheses, one per ``not``)."""

    def __init__(self, text: str, prefixes: Mapping[str, str], default_kind: str | None):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.prefixes = prefixes
        self.default_kind = default_kind
        self.depth = 0
        self.terms = 0
        self.values = 0
        self.keys: set[tuple[str, str]] = set()

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

    def enter(self, tok: _Tok) -> None:
        """One more level of nesting (a parenthesis or a ``not``), refused past the bound."""
        self.depth += 1
        if self.depth > MAX_FILTER_DEPTH:
            raise self.error(f"the filter nests parentheses and 'not' more than {MAX_FILTER_DEPTH} levels deep", tok)

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
            self.enter(self.take())
            node: Node = Not(self.unary())
            self.depth -= 1
            return node
        if self.tok.kind == "punct" and self.tok.text == "(":
            self.enter(self.take())
            node = self.expr()
            if self.tok.text != ")":
                raise self.error("expected ')'")
            self.take()
            self.depth -= 1
            return node
        return self.comparison()

    def field(self) -> Field:
        start = self.tok
        field = self._field()
        if len(field.key) > MAX_FIELD_KEY_LENGTH:
            raise self.error(f"the key is {len(field.key):,} characters long, at most {MAX_FIELD_KEY_LENGTH}", start)
        if field.kind not in (None, "attributes"):
            self.keys.add((field.kind, field.key))
            if len(self.keys) > MAX_QUERY_KEYS:
                raise self.error(
                    f"the filter refers to more than {MAX_QUERY_KEYS} distinct metric, param or tag keys", start
                )
        return field

    def _field(self) -> Field:
        tok = self.tok
        if tok.kind in ("backtick", "string") and not self.prefixes:
            self.take()
            return Field(None, _unquote(tok))
        if tok.kind != "name":
            raise self.error(f"expected a field name like metrics.accuracy, found {tok.text!r}")
        if tok.text.lower() in _KEYWORDS:
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
        self.values += 1
        if self.values > MAX_FILTER_VALUES:
            raise self.error(f"the filter holds more than {MAX_FILTER_VALUES:,} values", tok)
        if tok.kind == "number":
            return self.number(tok)
        if tok.kind == "string":
            return _unquote(tok)
        if tok.kind == "name" and tok.text.lower() in ("true", "false"):
            return tok.text.lower() == "true"
        if tok.kind == "name" and tok.text.lower() == "null":
            return None
        raise self.error(f"expected a value (number or 'quoted string'), found {tok.text!r}", tok)

    def number(self, tok: _Tok) -> int | float:
        text = tok.text
        if _INTEGER.fullmatch(text):
            # Checked on the digits first: int() of a huge text is slow, and refused past 4,300 digits.
            digits = text.lstrip("+-").lstrip("0")
            value = int(text) if len(digits) <= 19 else None
            if value is None or not INT64_MIN <= value <= INT64_MAX:
                raise self.error(
                    f"the integer {text[:30]}{'...' if len(text) > 30 else ''} is outside the 64-bit range "
                    f"({INT64_MIN}..{INT64_MAX})",
                    tok,
                )
            return value
        number = float(text)
        if not math.isfinite(number):
            raise self.error(f"the number {text[:30]}{'...' if len(text) > 30 else ''} is out of range", tok)
        return number

    def comparison(self) -> Node:
        start = self.tok
        self.terms += 1
        if self.terms > MAX_FILTER_TERMS:
            raise self.error(f"the filter has more than {MAX_FILTER_TERMS} comparisons", start)
        field = self.field()
        tok = self.tok
        if tok.kind == "op":
            self.take()
            op = {"==": "=", "<>": "!="}.get(tok.text, tok.text)
            value_tok = self.tok
            value = self.literal()
            if value is None:
                raise self.error("compare with null using 'is null' / 'is not null'", tok)
            if isinstance(value, bool) and op in _ORDERED_OPS:
                raise self.error(f"true and false compare only with = or !=, not {tok.text!r}", value_tok)
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
    """Parse a filter string; raise FilterSyntaxError pointing at the bad spot.

    The text, its nesting, its comparisons, values and keys are bounded
    (:mod:`keel.core.limits`); any input either parses or raises FilterSyntaxError.
    """
    if not isinstance(text, str):
        raise FilterSyntaxError(f"the filter must be text, not {type(text).__name__}")
    _check_text(text, "filter")
    return _Parser(text, prefixes, default_kind if prefixes else None).parse()


def parse_order_by(
    clauses: str | Sequence[str] | None,
    prefixes: Mapping[str, str] = RUN_PREFIXES,
    default_kind: str | None = "attributes",
) -> list[OrderBy]:
    """Parse ``["metrics.cost asc", "start_time desc"]`` (or one comma-separated string).

    At most :data:`~keel.core.limits.MAX_SORT_KEYS` clauses.
    """
    if clauses is None:
        return []
    if isinstance(clauses, str):
        _check_text(clauses, "sort order")
        clauses = [c for c in clauses.split(",") if c.strip()]
    elif not isinstance(clauses, Sequence):
        raise InvalidInput(
            f"order_by must be text or a list of text, not {type(clauses).__name__}",
            "e.g. order_by=['metrics.accuracy desc', 'start_time']",
        )
    if len(clauses) > MAX_SORT_KEYS:
        raise InvalidInput(
            f"{len(clauses)} sort keys given, at most {MAX_SORT_KEYS} are allowed",
            "order by fewer keys",
        )
    result = []
    for clause in clauses:
        if not isinstance(clause, str):
            raise FilterSyntaxError(f"an order clause must be text, not {type(clause).__name__}")
        _check_text(clause, "order clause")
        parser = _Parser(clause, prefixes, default_kind if prefixes else None)
        field = parser.field()
        ascending = True
        if parser.keyword("asc", "desc"):
            ascending = parser.take().text.lower() == "asc"
        if parser.tok.kind != "end":
            raise parser.error("an order clause is 'field [asc|desc]'")
        result.append(OrderBy(field, ascending))
    return result


_OPS = frozenset(
    ("=", "!=", "<", "<=", ">", ">=", "in", "not in", "is null", "is not null")
    + ("like", "ilike", "not like", "not ilike")
)
#: An AST nests And/Or/Not at most this deep: each level of parentheses may add an
#: ``or`` and an ``and`` (and a translation may wrap a comparison once more).
_MAX_AST_DEPTH = 3 * MAX_FILTER_DEPTH + 4


def _check_text_value(value: str, what: str) -> None:
    if len(value) > MAX_FILTER_LENGTH:
        raise InvalidInput(f"the {what} is {len(value):,} characters long", f"at most {MAX_FILTER_LENGTH:,}")
    if _UNSTORABLE.search(value):
        raise InvalidInput(f"the {what} {_printable(value)!r} holds a NUL or a lone surrogate", "use valid UTF-8 text")


def _check_literal(value: Any) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidInput(f"the value {value} is outside the 64-bit range", f"use {INT64_MIN}..{INT64_MAX}")
    elif isinstance(value, float):
        if math.isnan(value):
            raise InvalidInput("a filter cannot compare with NaN", "use 'is null' or a number")
    elif isinstance(value, str):
        _check_text_value(value, "value")
    else:
        raise InvalidInput(f"a filter cannot compare with {type(value).__name__}", "use numbers, text, true or false")


def _check_field(field: Any, keys: set[tuple[str, str]]) -> None:
    if (
        not isinstance(field, Field)
        or not isinstance(field.key, str)
        or not (field.kind is None or isinstance(field.kind, str))
    ):
        raise InvalidInput(f"invalid field {field!r} in a query", "use metrics.<key>, params.<key>, tags.<key>")
    _check_text_value(field.key, "key")
    if len(field.key) > MAX_FIELD_KEY_LENGTH:
        raise InvalidInput(f"the key {field.key[:40]!r}... is too long", f"at most {MAX_FIELD_KEY_LENGTH} characters")
    if field.kind not in (None, "attributes"):
        keys.add((field.kind, field.key))


def check_query(node: Node | None, order_by: Sequence[OrderBy] = ()) -> None:
    """Check a parsed (or translated, or built) query against the bounds of
    :mod:`keel.core.limits` before it becomes SQL; raise InvalidInput if it is out of them.

    Beyond what :func:`parse_filter` and :func:`parse_order_by` check one at a
    time, this bounds the filter and the sort together: at most
    :data:`~keel.core.limits.MAX_QUERY_KEYS` distinct metric/param/tag keys
    (each one a join). The walk is iterative: no AST can exhaust the stack.
    """
    keys: set[tuple[str, str]] = set()
    terms = values = 0
    stack: list[tuple[Any, int]] = [] if node is None else [(node, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_AST_DEPTH:
            raise InvalidInput(
                f"the filter nests more than {MAX_FILTER_DEPTH} levels deep", "use fewer parentheses and 'not'"
            )
        if isinstance(item, And | Or):
            if not isinstance(item.items, tuple) or not item.items:
                raise InvalidInput("an and/or in the filter has no terms", "check the filter")
            stack.extend((child, depth + 1) for child in item.items)
        elif isinstance(item, Not):
            stack.append((item.item, depth + 1))
        elif isinstance(item, Comparison):
            terms += 1
            if terms > MAX_FILTER_TERMS:
                raise InvalidInput(
                    f"the filter has more than {MAX_FILTER_TERMS} comparisons", "search with a shorter filter"
                )
            if item.op not in _OPS:
                raise InvalidInput(f"unsupported operator {item.op!r} in the filter", f"use one of {sorted(_OPS)}")
            _check_field(item.field, keys)
            listed = item.value if isinstance(item.value, tuple) else (item.value,)
            if item.op in ("in", "not in") and not isinstance(item.value, tuple):
                raise InvalidInput(f"'{item.op}' needs a list of values", "e.g. status in ('finished', 'failed')")
            values += len(listed)
            if values > MAX_FILTER_VALUES:
                raise InvalidInput(
                    f"the filter holds more than {MAX_FILTER_VALUES:,} values", "search with fewer values"
                )
            for value in listed:
                _check_literal(value)
            if item.op in _ORDERED_OPS and any(isinstance(v, bool) for v in listed):
                raise InvalidInput(
                    f"true and false compare only with = or !=, not {item.op!r}", "e.g. params.flag = true"
                )
        else:
            raise InvalidInput(f"invalid filter node {type(item).__name__}", "parse filters with parse_filter")
    if not isinstance(order_by, list | tuple):
        raise InvalidInput("order_by must be a list of sort keys", "parse them with parse_order_by")
    if len(order_by) > MAX_SORT_KEYS:
        raise InvalidInput(
            f"{len(order_by)} sort keys given, at most {MAX_SORT_KEYS} are allowed", "order by fewer keys"
        )
    for clause in order_by:
        if not isinstance(clause, OrderBy) or not isinstance(clause.ascending, bool):
            raise InvalidInput(f"invalid sort key {clause!r}", "parse sort keys with parse_order_by")
        _check_field(clause.field, keys)
    if len(keys) > MAX_QUERY_KEYS:
        raise InvalidInput(
            f"the search refers to {len(keys)} distinct metric, param or tag keys (filter and sort together), "
            f"at most {MAX_QUERY_KEYS} are allowed",
            "filter and sort on fewer keys",
        )


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
