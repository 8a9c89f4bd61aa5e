"""The content of a prompt version, the bump a change requires, and diffs.

A :class:`PromptContent` is everything that determines what is sent to a
model: the template (text or chat), the model, its parameters, few-shot
examples and a response schema. It is immutable and compared by value; its
:meth:`~PromptContent.content_hash` is the BLAKE3 of its canonical JSON, so
registering identical content twice can return the existing version.

:func:`required_bump` applies the versioning rule (:data:`BUMP_RULE`) and
:func:`diff_prompts` shows what changed between two versions.

Example::

    >>> old = PromptContent("Answer: {{ question }}", model="gpt-4o", parameters={"temperature": 0.2})
    >>> new = PromptContent("Answer briefly: {{ question }}", model="gpt-4o", parameters={"temperature": 0.2})
    >>> required_bump(old, new)
    'patch'
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from keel.core.hashing import canonical_json, hash_bytes
from keel.core.template_shape import normalize_template
from keel.errors import InvalidInput

__all__ = ["BUMP_RULE", "PromptContent", "PromptDiff", "diff_prompts", "required_bump"]

BUMP_RULE = (
    "A new prompt version must be bumped at least as much as its change requires: "
    "MAJOR if the template's variables were added or removed, the response schema changed, "
    "or the template switched between text and chat (callers must change how they call it); "
    "at least MINOR if the model, the parameters or the few-shot examples changed (same call, different behaviour); "
    "at least PATCH if only the template's wording (or a chat message's role) changed. "
    "Registering content identical to an existing version returns that version."
)

_FIELDS = ("template", "model", "parameters", "few_shot", "response_schema")


class _FrozenDict(dict[str, Any]):
    """A dict that refuses changes, so a PromptContent cannot be edited in place.

    It is still a dict: ``json.dumps``, ``dict(...)`` and comparisons with plain dicts work.
    """

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("prompt content is immutable: build a new PromptContent (dataclasses.replace)")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:  # copy and pickle rebuild it instead of setting items
        return (_FrozenDict, (dict(self),))


def _freeze(value: Any, where: str) -> Any:
    """A JSON value with lists as tuples and dicts as _FrozenDicts; InvalidInput names the bad part."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{where} is {value}, which JSON cannot hold", "use a finite number")
        return value
    if isinstance(value, Mapping):
        frozen = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{where} has a key {key!r} that is not a string", "JSON object keys are strings")
            frozen[key] = _freeze(item, f"{where}[{key!r}]")
        return _FrozenDict(frozen)
    if isinstance(value, list | tuple):
        return tuple(_freeze(item, f"{where}[{i}]") for i, item in enumerate(value))
    raise InvalidInput(
        f"{where} holds a {type(value).__name__}, which is not JSON",
        "use strings, numbers, booleans, None, lists and dicts",
    )


def _thaw(value: Any) -> Any:
    """The plain JSON form (dicts and lists) of a frozen value."""
    if isinstance(value, dict):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


def _same(a: Any, b: Any) -> bool:
    # Compare as JSON, not with ==: in Python 1 == 1.0 == True, but they are different content.
    return canonical_json(a) == canonical_json(b)


@dataclass(frozen=True, eq=False)
class PromptContent:
    """What a prompt version holds, apart from its version number and metadata.

    Lists and dicts given to the constructor are checked and stored immutably
    (chat messages and JSON lists as tuples, dicts as read-only dicts); equality
    and ``hash()`` follow the canonical JSON, so dict key order does not matter.

    Args:
        template: a text, or a chat: a list of ``{"role": ..., "content": ...}`` messages
            (see :func:`keel.core.templates.normalize_template`). Checked now: a syntax
            error is reported here, with its line and column.
        model: the model name, e.g. ``"gpt-4o"`` ("" if not fixed).
        parameters: model parameters (temperature, max_tokens, seed, ...), JSON values.
        few_shot: optional few-shot examples, any JSON value.
        response_schema: optional response (JSON) schema, any JSON value.

    Raises:
        InvalidInput: a part has the wrong shape or is not JSON.

    Example::

        >>> content = PromptContent([{"role": "user", "content": "{{ question }}"}], model="gpt-4o")
        >>> content.variables
        ('question',)
    """

    template: str | Sequence[Mapping[str, str]]
    model: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    few_shot: Any = None
    response_schema: Any = None

    def __post_init__(self) -> None:
        self._settle(compile_template=True)

    def _settle(self, compile_template: bool) -> None:
        """Check the parts and store them immutably; ``compile_template``: also compile the
        template (Jinja2), so that syntax errors surface at registration, not at render."""
        shaped = normalize_template(self.template)
        if compile_template:
            from keel.core.templates import template_variables

            template_variables(shaped)
        if not isinstance(self.model, str):
            raise InvalidInput(f"model must be a string, not a {type(self.model).__name__}", "e.g. model='gpt-4o'")
        if not isinstance(self.parameters, Mapping):
            raise InvalidInput(
                f"parameters must be a dict, not a {type(self.parameters).__name__}",
                "e.g. parameters={'temperature': 0.2, 'max_tokens': 256}",
            )
        for key in self.parameters:
            if not isinstance(key, str) or not key:
                raise InvalidInput(f"invalid parameter name {key!r}", "parameter names are non-empty strings")
        template = shaped if isinstance(shaped, str) else tuple(_FrozenDict(message) for message in shaped)
        object.__setattr__(self, "template", template)
        object.__setattr__(self, "parameters", _freeze(self.parameters, "parameters"))
        object.__setattr__(self, "few_shot", _freeze(self.few_shot, "few_shot"))
        object.__setattr__(self, "response_schema", _freeze(self.response_schema, "response_schema"))

    @classmethod
    def create(
        cls,
        template: object,
        model: str = "",
        parameters: Mapping[str, Any] | None = None,
        few_shot: Any = None,
        response_schema: Any = None,
    ) -> PromptContent:
        """Build from user input (lists, dicts, ``parameters=None``); the same checks as the constructor.

        Raises:
            InvalidInput: a part has the wrong shape or is not JSON.
        """
        return cls(
            template,  # type: ignore[arg-type]  # checked by __post_init__
            model=model,
            parameters={} if parameters is None else parameters,
            few_shot=few_shot,
            response_schema=response_schema,
        )

    @property
    def variables(self) -> tuple[str, ...]:
        """The sorted names of the template's variables."""
        from keel.core.templates import template_variables

        return template_variables(self.template)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``template``, ``model``, ``parameters``, ``few_shot``, ``response_schema``."""
        return {
            "template": _thaw(self.template),
            "model": self.model,
            "parameters": _thaw(self.parameters),
            "few_shot": _thaw(self.few_shot),
            "response_schema": _thaw(self.response_schema),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptContent:
        """Inverse of :meth:`to_dict` (keys other than ``template`` may be left out).

        Raises:
            InvalidInput: ``data`` is not a dict, lacks ``template`` or has unknown keys.
        """
        return cls._from_dict(data, compile_template=True)

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> PromptContent:
        """:meth:`from_dict` for content read back from the registry, whose template was
        compiled when the version was registered: every check but compiling it again, so
        listing versions (``keel prompts show``) does not load Jinja2; rendering does.

        Raises:
            InvalidInput: as :meth:`from_dict`, except for template syntax.
        """
        return cls._from_dict(data, compile_template=False)

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any], compile_template: bool) -> PromptContent:
        if not isinstance(data, Mapping):
            raise InvalidInput(f"prompt content must be a dict, not a {type(data).__name__}", f"keys: {_FIELDS}")
        unknown = sorted(str(key) for key in data if key not in _FIELDS)
        if unknown:
            raise InvalidInput(f"unknown prompt content key(s) {unknown}", f"the keys are {', '.join(_FIELDS)}")
        if "template" not in data:
            raise InvalidInput("prompt content has no 'template'", "give a text or a list of chat messages")
        parts = {
            "template": data["template"],
            "model": data.get("model", ""),
            "parameters": data.get("parameters", {}),
            "few_shot": data.get("few_shot"),
            "response_schema": data.get("response_schema"),
        }
        if compile_template:
            return cls(**parts)
        content = cls.__new__(cls)
        for key, value in parts.items():
            object.__setattr__(content, key, value)
        content._settle(compile_template=False)
        return content

    @functools.cached_property
    def _canonical(self) -> bytes:
        return canonical_json(self.to_dict())

    def content_hash(self) -> str:
        """BLAKE3 (hex) of the canonical JSON of :meth:`to_dict`: equal content, equal hash."""
        return hash_bytes(self._canonical)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PromptContent):
            return NotImplemented
        return self._canonical == other._canonical

    def __hash__(self) -> int:
        return hash(self._canonical)


def _is_chat(content: PromptContent) -> bool:
    return not isinstance(content.template, str)


def required_bump(old: PromptContent, new: PromptContent) -> str | None:
    """The smallest bump from ``old`` to ``new`` that :data:`BUMP_RULE` allows; None if the content is identical.

    Returns:
        ``"major"``, ``"minor"``, ``"patch"`` or None.
    """
    if old == new:
        return None
    if (
        set(old.variables) != set(new.variables)
        or not _same(old.response_schema, new.response_schema)
        or _is_chat(old) != _is_chat(new)
    ):
        return "major"
    if old.model != new.model or not _same(old.parameters, new.parameters) or not _same(old.few_shot, new.few_shot):
        return "minor"
    return "patch"


@dataclass(frozen=True)
class PromptDiff:
    """What changed from one prompt version to another (see :func:`diff_prompts`).

    Attributes:
        template_diff: a unified diff of the templates ("" if equal); chat messages are
            shown as ``[role]`` lines followed by their content.
        model: ``(old, new)`` if the model changed, else None.
        parameters_added: parameters only in the new version, with their values.
        parameters_removed: parameters only in the old version, with their values.
        parameters_changed: ``{name: (old value, new value)}``.
        variables_added: template variables only in the new version.
        variables_removed: template variables only in the old version.
        few_shot_changed: whether the few-shot examples differ.
        response_schema_changed: whether the response schema differs.
        required_bump: the smallest bump the change requires (see :func:`required_bump`).
    """

    template_diff: str
    model: tuple[str, str] | None
    parameters_added: dict[str, Any]
    parameters_removed: dict[str, Any]
    parameters_changed: dict[str, tuple[Any, Any]]
    variables_added: tuple[str, ...]
    variables_removed: tuple[str, ...]
    few_shot_changed: bool
    response_schema_changed: bool
    required_bump: str | None

    @property
    def is_empty(self) -> bool:
        """True if the two versions hold identical content."""
        return self.required_bump is None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (pairs as two-item lists)."""
        return {
            "template_diff": self.template_diff,
            "model": list(self.model) if self.model else None,
            "parameters_added": dict(self.parameters_added),
            "parameters_removed": dict(self.parameters_removed),
            "parameters_changed": {key: [old, new] for key, (old, new) in self.parameters_changed.items()},
            "variables_added": list(self.variables_added),
            "variables_removed": list(self.variables_removed),
            "few_shot_changed": self.few_shot_changed,
            "response_schema_changed": self.response_schema_changed,
            "required_bump": self.required_bump,
        }


def _template_text(content: PromptContent) -> str:
    if isinstance(content.template, str):
        return content.template
    # Every block ends with its content plus "\n", so a trailing newline in a content still shows.
    return "\n".join(f"[{message['role']}]\n{message['content']}\n" for message in content.template)


def _unified_diff(old: str, new: str, old_label: str, new_label: str) -> str:
    # Split on "\n" only (str.splitlines also splits on \f, \u2028, ...), keeping the ends so that
    # a missing final newline is a difference, marked as git and diff(1) do.
    lines = difflib.unified_diff(
        re.findall(r"[^\n]*\n|[^\n]+", old), re.findall(r"[^\n]*\n|[^\n]+", new), old_label, new_label
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def diff_prompts(old: PromptContent, new: PromptContent, old_label: str = "a", new_label: str = "b") -> PromptDiff:
    """Compare two prompt contents.

    Args:
        old: the earlier content.
        new: the later content.
        old_label: the name of ``old`` in the diff header, e.g. ``"chat@1.2.0"``.
        new_label: the name of ``new`` in the diff header.

    Example::

        >>> a = PromptContent("Hi {{ name }}", model="gpt-4o")
        >>> b = PromptContent("Hello {{ name }}", model="gpt-4o-mini")
        >>> diff = diff_prompts(a, b, "greet@1.0.0", "greet@1.1.0")
        >>> diff.model, diff.required_bump
        (('gpt-4o', 'gpt-4o-mini'), 'minor')
    """
    old_params, new_params = old.parameters, new.parameters
    old_vars, new_vars = set(old.variables), set(new.variables)
    return PromptDiff(
        template_diff=_unified_diff(_template_text(old), _template_text(new), old_label, new_label),
        model=(old.model, new.model) if old.model != new.model else None,
        parameters_added={key: _thaw(new_params[key]) for key in sorted(new_params) if key not in old_params},
        parameters_removed={key: _thaw(old_params[key]) for key in sorted(old_params) if key not in new_params},
        parameters_changed={
            key: (_thaw(old_params[key]), _thaw(new_params[key]))
            for key in sorted(old_params)
            if key in new_params and not _same(old_params[key], new_params[key])
        },
        variables_added=tuple(sorted(new_vars - old_vars)),
        variables_removed=tuple(sorted(old_vars - new_vars)),
        few_shot_changed=not _same(old.few_shot, new.few_shot),
        response_schema_changed=not _same(old.response_schema, new.response_schema),
        required_bump=required_bump(old, new),
    )
