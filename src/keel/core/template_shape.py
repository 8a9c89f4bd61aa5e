"""A template's shape: a text, or a chat (a list of ``{"role", "content"}`` messages).

Checked without Jinja2 (:mod:`keel.core.templates` compiles templates and loads it), so
prompt versions read back from the registry are rebuilt without importing it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from keel.errors import InvalidInput

__all__ = ["normalize_template"]

_SHAPE_HINT = 'a template is a string or a list of messages like {"role": "user", "content": "{{ question }}"}'


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
