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

Example::

    >>> template_variables("Answer {{ question }} using {{ context }}.")
    ('context', 'question')
    >>> render_template([{"role": "user", "content": "Hi {{ name }}"}], {"name": "Ada"})
    [{'role': 'user', 'content': 'Hi Ada'}]
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.lexer import Token, TokenStream, newline_re
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from keel.errors import InvalidInput

__all__ = ["normalize_template", "render_template", "template_variables"]

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_SHAPE_HINT = 'a template is a string or a list of messages like {"role": "user", "content": "{{ question }}"}'
_SYNTAX_HINT = "placeholders look like {{ question }}; see the Jinja2 template syntax"
_COMPILE_CACHE_SIZE = 512
# A registered version is self-contained: there is no loader, and it must not change when another template does.
_LOADING_TAGS: dict[type[nodes.Node], str] = {
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from",
}


# -- shape ---------------------------------------------------------------------
def normalize_template(template: object) -> str | list[dict[str, str]]:
    """Check a template's shape; return the text, or the chat as a new list of ``{"role", "content"}`` dicts.

    Raises:
        InvalidInput: not a string or a non-empty list of messages whose ``role`` is a
            non-empty string and ``content`` a string (and no other keys); the message
            names the bad message index and key.
    """
    if isinstance(template, str):
        return template
    if isinstance(template, bytes | bytearray) or not isinstance(template, Sequence):
        raise InvalidInput(f"a template cannot be a {type(template).__name__}", _SHAPE_HINT)
    if not template:
        raise InvalidInput("a chat template needs at least one message", _SHAPE_HINT)
    messages = []
    for index, message in enumerate(template):
        if not isinstance(message, Mapping):
            raise InvalidInput(f"messages[{index}] is a {type(message).__name__}, not a dict", _SHAPE_HINT)
        for key in ("role", "content"):
            if key not in message:
                raise InvalidInput(f"messages[{index}] has no {key!r}", _SHAPE_HINT)
        extra = sorted(repr(key) for key in message if key not in ("role", "content"))
        if extra:
            raise InvalidInput(
                f"messages[{index}] has unknown key{'s' if len(extra) > 1 else ''} {', '.join(extra)}",
                "a message has exactly the keys 'role' and 'content'",
            )
        role, content = message["role"], message["content"]
        if not isinstance(role, str) or not role.strip():
            raise InvalidInput(f"messages[{index}]['role'] must be a non-empty string, not {role!r}", _SHAPE_HINT)
        if not isinstance(content, str):
            raise InvalidInput(
                f"messages[{index}]['content'] must be a string, not a {type(content).__name__}", _SHAPE_HINT
            )
        messages.append({"role": role, "content": content})
    return messages


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
    if source.count("{{") != len(names):
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
def _compile(source: str) -> tuple[Template, frozenset[str]]:
    """The compiled template and its undeclared variables (errors are not cached; they re-raise)."""
    names = _analyse(source)
    return _ENV.from_string(source), names


def _checked(where: str, source: str) -> tuple[Template, frozenset[str]]:
    return _guarded(where, source, _compile)


def _guarded(where: str, source: str, step: Any) -> Any:
    """Run ``step(source)``, turning Jinja syntax errors into InvalidInput with line and column."""
    try:
        return step(source)
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
    expected = set().union(*(names for _, _, names in compiled))
    _check_names(expected, variables)
    values = dict(variables)
    rendered = [_render(where, program, values) for where, program, _ in compiled]
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
    raise InvalidInput("; ".join(problems), f"{uses}; pass exactly those")


def _render(where: str, program: Template, values: dict[str, object]) -> str:
    place = f" in {where}" if where else ""
    try:
        return program.render(values)
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
