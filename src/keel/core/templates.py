"""Prompt templates: ``{{ variable }}`` placeholders rendered by a sandboxed Jinja2.

A template is either a text (``str``) or a chat, a list of messages
``[{"role": "system", "content": "..."}, {"role": "user", "content": "{{ question }}"}]``
whose contents are templates (roles are literal). The Jinja2 environment is
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` with ``StrictUndefined``:
a template cannot reach Python internals (``{{ ''.__class__ }}``) or mutate
its inputs, and an undefined value is an error instead of an empty string.

Every check that can be made without values is made by
:func:`template_variables`, which the registry calls when a version is
registered: syntax errors (with line and column), unknown filters, and
``include``/``import``/``extends`` (a registered prompt is self-contained).
:func:`render_template` then only fails on the values it is given: a missing
or unknown variable, or a runtime error in the template.

**Bounds.** A template is code a registry writer chose, run on every render, so a
render is bounded (:class:`InvalidInput` when a bound is passed, naming it):

- output: at most :data:`MAX_OUTPUT_CHARS` characters beyond what the variables bring
  (4x their own size), and every value built on the way (``question * 10**9``,
  ``'a' * 10**9``, a list literal of lists, ``x|center(10**9)``, ``'%9999999d' % 1``)
  is checked against the same bound before it is built where its size is known in
  advance, and right after otherwise;
- loops: at most :data:`MAX_LOOP_ITERATIONS` iterations over all loops of a render
  (nested ``range(100000)`` loops stop there; plus 4x the variables' size);
- time: :data:`MAX_RENDER_SECONDS`, checked at every loop iteration and call (an
  exponential macro recursion stops there);
- integers: at most :data:`MAX_INT_BITS` bits from ``*`` and ``**`` (``10**10**9``).

``self`` is not a variable name: Jinja binds it to the template itself.

Example::

    >>> template_variables("Answer {{ question }} using {{ context }}.")
    ('context', 'question')
    >>> render_template([{"role": "user", "content": "Hi {{ name }}"}], {"name": "Ada"})
    [{'role': 'user', 'content': 'Hi Ada'}]
"""

from __future__ import annotations

import functools
import inspect
import itertools
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.lexer import Token, TokenStream, newline_re
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from keel.core.template_shape import normalize_template
from keel.errors import InvalidInput

__all__ = [
    "MAX_INT_BITS",
    "MAX_LOOP_ITERATIONS",
    "MAX_OUTPUT_CHARS",
    "MAX_RENDER_SECONDS",
    "normalize_template",
    "render_template",
    "template_variables",
]

#: Characters a render may produce (and the size of any value built on the way) beyond
#: 4x the size of the variables passed.
MAX_OUTPUT_CHARS = 1 << 20
#: Loop iterations in one render, over all loops (beyond 4x the variables' size).
MAX_LOOP_ITERATIONS = 100_000
#: Wall-clock seconds one render may take.
MAX_RENDER_SECONDS = 2.0
#: Bits of an integer built by ``*`` or ``**`` (about 20,000 digits).
MAX_INT_BITS = 1 << 16
_INPUT_FACTOR = 4  # the variables' own size may appear this many times over
_INPUT_WALK = 1 << 24  # the most items and characters of the variables ever counted
_BOUND_HINT = "templates fill in prompts: no huge repeats, loops or numbers"


# -- bounds -------------------------------------------------------------------------
def _deep_size(value: object, cap: int) -> int:
    """Items plus characters of ``value``, shared parts counted each time they appear;
    stops counting past ``cap`` (so it costs at most ``cap`` steps)."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes | bytearray):
            total += len(item) + 1
        elif isinstance(item, list | tuple | set | frozenset):
            total += 1
            stack.extend(item)
        elif isinstance(item, dict):
            total += 1
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            total += 1
        if total > cap:
            return total
    return total


class _Budget:
    """The limits and counters of one render (one :func:`render_template` call)."""

    __slots__ = ("deadline", "iterations", "max_iterations", "max_size", "output", "scaled", "values")

    def __init__(self, values: Mapping[str, object]) -> None:
        self.values = values
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS
        self.iterations = 0
        self.output = 0  # characters rendered so far, over every message of a chat
        self.max_iterations = MAX_LOOP_ITERATIONS
        self.max_size = MAX_OUTPUT_CHARS
        self.scaled = False

    def _scale(self) -> bool:
        """Raise the limits by the variables' own size, once; True if they grew."""
        if self.scaled:
            return False
        self.scaled = True
        extra = _INPUT_FACTOR * (_deep_size(list(self.values.values()), _INPUT_WALK) - 1)
        self.max_size += extra
        self.max_iterations += extra
        return extra > 0

    def size(self, size: int, what: str) -> None:
        """Refuse a value or an output of ``size`` characters/items past the bound."""
        if size > self.max_size and not (self._scale() and size <= self.max_size):
            raise InvalidInput(
                f"template output too large: {what} would be {size:,} characters or items (at most {self.max_size:,})",
                _BOUND_HINT,
            )

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise InvalidInput(f"template took more than {MAX_RENDER_SECONDS:g} s to render; stopped", _BOUND_HINT)

    def loop(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self.iterations += 1
            if self.iterations > self.max_iterations and not (self._scale() and self.iterations <= self.max_iterations):
                raise InvalidInput(
                    f"template loops ran more than {self.max_iterations:,} times in one render; stopped",
                    _BOUND_HINT,
                )
            if not self.iterations & 255:
                self.tick()
            yield item


_BUDGET: ContextVar[_Budget | None] = ContextVar("keel_template_budget", default=None)


def _budget() -> _Budget:
    """This render's budget (a fresh one with the static limits outside a render, e.g. while
    Jinja folds constants at compile time)."""
    return _BUDGET.get() or _Budget({})


def _check_size(value: object, what: str) -> object:
    """``value`` itself, once its size is within the render's bound."""
    if isinstance(value, str | bytes):
        if len(value) > MAX_OUTPUT_CHARS:
            _budget().size(len(value), what)
    elif isinstance(value, list | tuple | dict | set | frozenset):
        budget = _budget()
        size = _deep_size(value, budget.max_size)
        if size > budget.max_size:
            budget.size(_deep_size(value, _INPUT_WALK), what)
    return value


def _too_big(what: str, size: int) -> None:
    _budget().size(size, what)


def _check_int(value: object, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_OUTPUT_CHARS:
        _budget().size(abs(value), what)


def _size_of(value: object) -> int:
    return _deep_size(value, _budget().max_size)


# Widths and precisions of %-formats ("%9999999d", "%.*f") and format specs ("{:>9999999}").
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_NUMBER = re.compile(r"\d+")


def _check_percent_format(fmt: str, args: object) -> None:
    starred = False
    for match in _PERCENT_SPEC.finditer(fmt):
        for part in match.groups():
            if part == "*":
                starred = True
            elif part is not None and len(part) > 6:
                _too_big("a %-format width", int(part[:20]))
            elif part is not None:
                _check_int(int(part), "a %-format width")
    if starred:
        for arg in args if isinstance(args, tuple) else (args,):
            _check_int(arg, "a %-format width")


def _check_str_format(fmt: str, args: Sequence[object], kwargs: Mapping[str, object]) -> None:
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error itself
    for _literal, _name, spec, _conversion in fields:
        if not spec:
            continue
        for number in _NUMBER.findall(spec):
            if len(number) > 6:
                _too_big("a format width", int(number[:20]))
            _check_int(int(number), "a format width")
        if "{" in spec:  # a width taken from the arguments
            for arg in (*args, *kwargs.values()):
                _check_int(arg, "a format width")


def _check_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a method call on a built-in value whose result would pass the bound; the
    arguments to call it with (an iterator given to ``join`` is read once, here)."""
    target = getattr(method, "__wrapped__", method)  # str.format comes wrapped by the sandbox
    owner = getattr(target, "__self__", None)
    if not isinstance(owner, str | bytes | int | float | list | tuple | dict | set | frozenset):
        return args
    name = getattr(target, "__name__", "")
    if isinstance(owner, str) and name in ("format", "format_map"):
        if name == "format_map" and len(args) == 1 and isinstance(args[0], Mapping):
            _check_str_format(owner, (), args[0])
        else:
            _check_str_format(owner, args, kwargs)
        return args
    for arg in (*args, *kwargs.values()):
        _check_int(arg, f"an argument of {name or 'a method'}()")
    if isinstance(owner, str | bytes) and name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1])
    elif isinstance(owner, str | bytes) and name == "join" and args:
        items = list(args[0]) if not isinstance(args[0], str | bytes) else args[0]
        _too_big_join(owner, items)
        args = (items, *args[1:])
    elif isinstance(owner, str | bytes) and name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tab, int):
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            _too_big("expandtabs()", len(owner) + tabs * tab)
    return args


def _check_replace(text: Any, old: Any, new: Any) -> None:
    if not isinstance(text, str | bytes) or not isinstance(new, str | bytes) or not isinstance(old, str | bytes):
        return
    hits = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
    grown = len(text) + hits * max(0, len(new) - len(old))
    if grown > MAX_OUTPUT_CHARS:
        _too_big("replace()", grown)


def _too_big_join(separator: Any, items: Any) -> None:
    size = len(separator) * max(0, len(items) - 1) + _size_of(items)
    if size > MAX_OUTPUT_CHARS:
        _too_big("join()", size)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 (Jinja's names)
    """Jinja's ``lipsum`` global, at most 100 paragraphs of at most 1,000 words."""
    from jinja2.utils import generate_lorem_ipsum

    if not all(isinstance(v, int) and 0 <= v <= limit for v, limit in ((n, 100), (min, 1000), (max, 1000))):
        raise InvalidInput("lipsum() takes at most 100 paragraphs of at most 1,000 words", _BOUND_HINT)
    return generate_lorem_ipsum(n, html, min, max)


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter with its size arguments checked first and its result checked after."""
    signature = inspect.signature(function)
    check = _FILTER_CHECKS.get(name)
    # Jinja passes its context first to a filter marked so; a wrapper that added the mark
    # (an async variant) shows the signature of the function it wraps, without that argument.
    skip = int(
        getattr(function, "jinja_pass_arg", None) is not None
        and getattr(inspect.unwrap(function), "jinja_pass_arg", None) is None
    )

    what = f"the result of |{name}"

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if check is not None:
            bound = _bind(signature, args[skip:], kwargs)
            if bound is not None and check(name, bound.arguments):  # it read an iterator: call with its list
                args, kwargs = (*args[:skip], *bound.args), bound.kwargs
        result = function(*args, **kwargs)
        if type(result) is str:  # most filters: one length to compare
            if len(result) > MAX_OUTPUT_CHARS:
                _check_size(result, what)
            return result
        return _check_size(result, what)

    return bounded


def _bind(signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments | None:
    """The arguments of a filter call by name (None if they do not fit: the filter says why)."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return bound


# A check reads a filter's arguments by name (``a`` is the bound arguments, which it may
# change) and returns True when it changed them.
def _filter_center(name: str, a: dict[str, Any]) -> None:
    _check_int(a.get("width"), "|center width")


def _filter_indent(name: str, a: dict[str, Any]) -> None:
    text, width = a.get("s"), a.get("width")
    if isinstance(text, str):
        each = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        grown = len(text) + (text.count("\n") + 1) * each
        if grown > MAX_OUTPUT_CHARS:
            _too_big("|indent", grown)


def _filter_count(parameter: str) -> Callable[[str, dict[str, Any]], None]:
    def check(name: str, a: dict[str, Any]) -> None:
        _check_int(a.get(parameter), f"|{name}({parameter})")

    return check


def _filter_replace(name: str, a: dict[str, Any]) -> None:
    _check_replace(a.get("s"), a.get("old"), a.get("new"))


def _filter_join(name: str, a: dict[str, Any]) -> bool:
    value = a.get("value")
    read = not isinstance(value, list | tuple | str | Mapping)
    if read:
        try:
            a["value"] = value = list(value)  # type: ignore[arg-type]
        except TypeError:
            return False  # not iterable: the filter says so
    if isinstance(value, list | tuple):
        _too_big_join(str(a.get("d", "")), value)
    return read


def _filter_format(name: str, a: dict[str, Any]) -> None:
    value = a.get("value")
    if isinstance(value, str):
        _check_percent_format(value, tuple(a.get("args") or ()) + tuple((a.get("kwargs") or {}).values()))


def _filter_round(name: str, a: dict[str, Any]) -> None:
    precision = a.get("precision")
    if isinstance(precision, int) and abs(precision) > 1000:
        raise InvalidInput(f"|round precision {precision} is out of range (at most 1000)", _BOUND_HINT)


def _filter_sum(name: str, a: dict[str, Any]) -> None:
    start = a.get("start")
    if not isinstance(start, int | float) or isinstance(start, bool):
        raise InvalidInput("|sum adds numbers: its start must be a number", "join texts with |join")


_FILTER_CHECKS: dict[str, Callable[[str, dict[str, Any]], bool | None]] = {
    "center": _filter_center,
    "indent": _filter_indent,
    "batch": _filter_count("linecount"),
    "slice": _filter_count("slices"),
    "replace": _filter_replace,
    "join": _filter_join,
    "format": _filter_format,
    "round": _filter_round,
    "sum": _filter_sum,
}


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with every loop counted and built values checked."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        original = node.iter
        node.iter = nodes.Call(
            nodes.EnvironmentAttribute("keel_loop"), [original], [], None, None, lineno=original.lineno
        )
        try:
            super().visit_For(node, frame)
        finally:
            node.iter = original

    def _sized(self, visit: Callable[..., None], node: nodes.Node, frame: Frame) -> None:
        self.write("environment.keel_sized(")
        visit(node, frame)
        self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self._sized(super().visit_Concat, node, frame)

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._sized(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._sized(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx == "store":
            super().visit_Tuple(node, frame)
        else:
            self._sized(super().visit_Tuple, node, frame)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with the bounds of this module."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def keel_loop(self, iterable: Iterable[Any]) -> Iterable[Any]:
        budget = _BUDGET.get()
        return iterable if budget is None else budget.loop(iterable)

    def keel_sized(self, value: Any) -> Any:
        return _check_size(value, "a value")

    def concat(self, parts: Iterable[str]) -> str:  # type: ignore[override]
        """Joins macro, block and ``{% set %}`` bodies: checked in a bounded render."""
        text = "".join(parts)
        if _BUDGET.get() is not None:
            _check_size(text, "a block")
        return text

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _BUDGET.get()
        if budget is not None:
            budget.tick()
        _check_binop(operator, left, right)
        return _check_size(super().call_binop(context, operator, left, right), f"the result of {operator!r}")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805,B902
        budget = _BUDGET.get()
        if budget is not None:
            budget.tick()
        args = _check_method(__obj, args, kwargs)
        return _check_size(super().call(__context, __obj, *args, **kwargs), "the result of a call")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``left operator right`` before computing it when its size would pass the bound."""
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "*":
        if ints:
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise _int_too_big("*")
            return
        for seq, times in ((left, right), (right, left)):
            if isinstance(times, int) and isinstance(seq, str | bytes | list | tuple) and times > 1:
                size = (len(seq) if isinstance(seq, str | bytes) else _size_of(seq)) * times
                if size > MAX_OUTPUT_CHARS:
                    _too_big("a repeat (*)", size)
    elif operator == "**":
        if ints and right > 0 and abs(left) > 1 and (abs(left).bit_length() - 1) * right > MAX_INT_BITS:
            raise _int_too_big("**")
    elif operator == "+":
        if isinstance(left, str | bytes | list | tuple) and isinstance(right, str | bytes | list | tuple):
            size = _size_of(left) + _size_of(right)
            if size > MAX_OUTPUT_CHARS:
                _too_big("a sum (+)", size)
    elif operator == "%" and isinstance(left, str):
        _check_percent_format(left, right)


def _int_too_big(operator: str) -> InvalidInput:
    return InvalidInput(
        f"template integer too large: the result of {operator!r} would pass {MAX_INT_BITS:,} bits", _BOUND_HINT
    )


_ENV = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_ENV.filters = {name: _bounded_filter(name, function) for name, function in _ENV.filters.items()}
_ENV.globals["lipsum"] = _lipsum
_SYNTAX_HINT = "placeholders look like {{ question }}; see the Jinja2 template syntax"
_COMPILE_CACHE_SIZE = 512
# A registered version is self-contained: there is no loader, and it must not change when another template does.
_LOADING_TAGS: dict[type[nodes.Node], str] = {
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from",
}


def _sources(template: object) -> list[tuple[str, str]]:
    """``(where, source)`` for each text to compile: ``("", text)`` or ``("messages[i]", content)``."""
    shaped = normalize_template(template)
    if isinstance(shaped, str):
        return [("", shaped)]
    return [(f"messages[{i}]", message["content"]) for i, message in enumerate(shaped)]


# -- compile and check ---------------------------------------------------------
# "{{ name }}" and nothing else Jinja would read: most prompts. Checked without parsing.
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def _plain_placeholders(source: str) -> frozenset[str] | None:
    """The variables of a template made only of text and ``{{ name }}`` placeholders, or
    None when it uses any other Jinja syntax (then Jinja itself must check it)."""
    if "{%" in source or "{#" in source or "{{{" in source or "}}}" in source:
        return None
    names = _PLACEHOLDER.findall(source)
    if source.count("{{") != len(names) or "self" in names:
        return None
    return frozenset(names) - frozenset(_ENV.globals)


@functools.lru_cache(maxsize=_COMPILE_CACHE_SIZE)
def _analyse(source: str) -> frozenset[str]:
    """Check a template without generating code (registration is hot; code generation is
    ~0.5 ms) and return its undeclared variables. Unknown filters and tests, which Jinja
    only finds while generating code, are looked up here so they fail at registration."""
    plain = _plain_placeholders(source)
    if plain is not None:
        return plain
    tree = _ENV.parse(source)
    for name in tree.find_all(nodes.Name):
        if name.name == "self" and name.ctx == "load":
            raise TemplateSyntaxError(
                "'self' is reserved (Jinja binds it to the template itself): it cannot be a variable", name.lineno
            )
    for node in tree.find_all(tuple(_LOADING_TAGS)):
        raise TemplateSyntaxError(
            f"'{_LOADING_TAGS[type(node)]}' is not allowed: a registered template cannot load other templates",
            node.lineno,
        )
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        known = _ENV.filters if isinstance(node, nodes.Filter) else _ENV.tests
        if node.name not in known:
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            raise TemplateSyntaxError(f"No {kind} named {node.name!r}.", node.lineno)
    if "{%" not in source:
        # No block tags, so nothing can bind a name: every loaded name not a global is a
        # variable. (Jinja's own analysis runs its code generator: ~0.25 ms a template.)
        return frozenset(n.name for n in tree.find_all(nodes.Name) if n.ctx == "load") - frozenset(_ENV.globals)
    return frozenset(meta.find_undeclared_variables(tree))


@functools.lru_cache(maxsize=_COMPILE_CACHE_SIZE)
def _compile(source: str) -> tuple[Template, frozenset[str], bool]:
    """The compiled template, its undeclared variables, and whether it is text and
    ``{{ name }}`` placeholders only (errors are not cached; they re-raise)."""
    names = _analyse(source)
    return _ENV.from_string(source), names, _plain_placeholders(source) is not None


def _checked(where: str, source: str) -> tuple[Template, frozenset[str], bool]:
    return _guarded(where, source, _compile)


def _guarded(where: str, source: str, step: Any) -> Any:
    """Run ``step(source)``, turning Jinja syntax errors into InvalidInput with line and column."""
    try:
        return step(source)
    except RecursionError:
        place = f" in {where}" if where else ""
        raise InvalidInput(f"template{place} is nested too deeply to read", "use fewer nested parentheses") from None
    except TemplateSyntaxError as exc:
        line, column = _error_position(source, exc)
        place = f" in {where}" if where else ""
        # Jinja's lexer appends an absolute offset ("unexpected char '!' at 5"): the column replaces it.
        reason = re.sub(r" at \d+$", "", (exc.message or "invalid syntax").rstrip("."))
        excerpt = _line_of(source, line).strip()
        shown = f"; the line is {excerpt[:80]!r}" if excerpt else ""
        raise InvalidInput(
            f"template syntax error{place} at line {line}, column {column}: {reason}{shown}", _SYNTAX_HINT
        ) from None


def template_variables(template: object) -> tuple[str, ...]:
    """The sorted names of the variables a template uses (over every message of a chat).

    Names the template defines itself (``{% set %}``, loop variables) and Jinja2's
    globals (``range``, ``dict``, ...) are not variables.

    Raises:
        InvalidInput: the template's shape is wrong, or it does not compile; the message
            gives the line and column (and, for a chat, the message index).
    """
    names: set[str] = set()
    for where, source in _sources(template):
        names |= _guarded(where, source, _analyse)
    return tuple(sorted(names))


# -- render --------------------------------------------------------------------
def render_template(template: object, variables: Mapping[str, object]) -> str | list[dict[str, str]]:
    """Fill in a template: a text gives a ``str``, a chat a new list of ``{"role", "content"}`` dicts.

    Args:
        template: a text or chat template (see :func:`normalize_template`).
        variables: exactly the template's variables (see :func:`template_variables`).

    Raises:
        InvalidInput: a variable is missing or unknown (named in the message), the template
            tried something the sandbox forbids, or it failed while rendering.
    """
    if not isinstance(variables, Mapping):
        raise InvalidInput(f"variables must be a dict, not a {type(variables).__name__}", "pass variables={...}")
    for key in variables:
        if not isinstance(key, str):
            raise InvalidInput(f"variable name {key!r} is not a string", "use string keys")
    compiled = [(where, *_checked(where, source)) for where, source in _sources(template)]
    expected = set().union(*(names for _, _, names, _ in compiled))
    _check_names(expected, variables)
    values = dict(variables)
    if all(plain for *_, plain in compiled):
        # text and {{ name }} only: no loop, call or operator, so nothing to bound
        rendered = [_render(where, program, values) for where, program, _, _ in compiled]
    else:
        token = _BUDGET.set(_Budget(values))
        try:
            rendered = [_render(where, program, values, bounded=True) for where, program, _, _ in compiled]
        finally:
            _BUDGET.reset(token)
    shaped = normalize_template(template)
    if isinstance(shaped, str):
        return rendered[0]
    return [{"role": message["role"], "content": text} for message, text in zip(shaped, rendered, strict=True)]


def _check_names(expected: set[str], variables: Mapping[str, object]) -> None:
    missing = sorted(expected - set(variables))
    unknown = sorted(set(variables) - expected)
    if not missing and not unknown:
        return
    problems = []
    if missing:
        problems.append(f"missing variable{'s' if len(missing) > 1 else ''} {_quoted(missing)}")
    if unknown:
        problems.append(f"unknown variable{'s' if len(unknown) > 1 else ''} {_quoted(unknown)}")
    uses = f"the template's variables are {_quoted(sorted(expected))}" if expected else "the template has no variables"
    if "self" in unknown:
        uses = f"'self' is reserved in templates (Jinja binds it to the template); {uses}"
    raise InvalidInput("; ".join(problems), f"{uses}; pass exactly those")


def _render(where: str, program: Template, values: dict[str, object], bounded: bool = False) -> str:
    place = f" in {where}" if where else ""
    try:
        if not bounded:
            return program.render(values)
        budget = _budget()
        parts: list[str] = []
        pieces = program.root_render_func(program.new_context(values))
        while batch := list(itertools.islice(pieces, 64)):  # counted 64 pieces at a time
            budget.output += sum(map(len, batch))
            if budget.output > budget.max_size:
                budget.size(budget.output, f"the text{place}")
            parts += batch
        return "".join(parts)
    except InvalidInput:
        raise
    except SecurityError as exc:
        raise InvalidInput(
            f"template{place} tried an operation the sandbox forbids: {exc}",
            "templates may read variables and their items, not Python internals or mutating methods",
        ) from None
    except TemplateError as exc:
        raise InvalidInput(f"template{place} failed to render: {exc}", "check the values passed") from None
    except Exception as exc:  # the template's own code failed (1/0, 'a' + 1): a user error, not a keel bug
        raise InvalidInput(
            f"template{place} failed to render: {type(exc).__name__}: {exc}", "check the template and the values"
        ) from None


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names)


# -- error positions -----------------------------------------------------------
def _jinja_text(source: str) -> str:
    # Jinja's lexer splits lines on \r\n, \r and \n and rejoins them with \n; its
    # line numbers refer to that text, so columns are computed on it as well.
    return "\n".join(newline_re.split(source)[::2])


def _line_of(source: str, line: int) -> str:
    lines = _jinja_text(source).split("\n")
    return lines[line - 1] if 0 < line <= len(lines) else ""


def _error_position(source: str, exc: TemplateSyntaxError) -> tuple[int, int]:
    """1-based ``(line, column)`` of a syntax error; Jinja gives only the line."""
    text = _jinja_text(source)
    line = exc.lineno or 1
    try:
        offset = _failing_offset(text)
    except Exception:  # the column is a courtesy: never fail the real error over it
        offset = None
    if offset is None:  # the parser accepted it: the compiler failed (unknown filter, include, ...)
        offset = _offset_of_quoted_name(text, line, exc.message or "")
    starts = [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]
    start = starts[line - 1] if line <= len(starts) else len(text)
    end = starts[line] - 1 if line < len(starts) else len(text)
    offset = min(max(offset, start), end)  # keep the column on the line Jinja reported
    return line, offset - start + 1


def _failing_offset(text: str) -> int | None:
    """Re-parse ``text`` tracking where each token starts; the offset where parsing fails, or None."""
    state = {"start": 0, "end": 0}
    failed_at: list[int] = []
    starts: list[tuple[Token, int]] = []

    def raw() -> Iterator[tuple[int, str, str]]:
        try:
            for lineno, kind, value in _ENV.lexer.tokeniter(text, None):
                # Token values are slices of the text in order; whitespace stripped by
                # "{%-" is skipped, so searching forward finds each one.
                found = text.find(value, state["end"]) if value else -1
                state["start"] = found if found >= 0 else state["end"]
                state["end"] = state["start"] + len(value)
                yield lineno, kind, value
        except TemplateSyntaxError:
            failed_at.append(_skip_space(text, state["end"]))
            raise

    def wrapped() -> Iterator[Token]:
        try:
            for token in _ENV.lexer.wrap(raw()):
                starts.append((token, state["start"]))
                yield token
        except TemplateSyntaxError:
            if not failed_at:  # the token just read was invalid (bad identifier or string escape)
                failed_at.append(state["start"])
            raise

    parser = Parser(_ENV, "")
    try:
        parser.stream = TokenStream(wrapped(), None, None)
        parser.parse()
    except TemplateSyntaxError:
        if failed_at:
            return failed_at[0]
        current = parser.stream.current
        for token, start in reversed(starts):
            if token is current:
                return start
        return state["end"]  # the end of the template
    return None


def _skip_space(text: str, offset: int) -> int:
    while offset < len(text) and text[offset] in " \t":
        offset += 1
    return offset


def _offset_of_quoted_name(text: str, line: int, message: str) -> int:
    """Where the name quoted in an error message ("No filter named 'upper2'") appears on ``line``."""
    lines = text.split("\n")
    start = sum(len(part) + 1 for part in lines[: line - 1])
    match = re.search(r"'([^']+)'", message)
    if match and 0 < line <= len(lines):
        column = lines[line - 1].find(match.group(1))
        if column >= 0:
            return start + column
    return start
