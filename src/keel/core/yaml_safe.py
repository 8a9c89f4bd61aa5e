"""The one YAML reader of keel: safe tags only, and bounded in size, depth and alias expansion.

Pure: it parses text and opens no file; callers pass the text and a name for messages
(``config/production.yaml``, ``model card``), and every error is an :class:`InvalidInput`
that starts with ``<name>:<line>:``.

What it refuses (a YAML document is data a teammate, a repository or a server client
chose, so reading one must cost time and memory in proportion to its size):

- a document longer than :data:`MAX_DOCUMENT_CHARS`;
- nesting deeper than :data:`MAX_DEPTH` (counting what aliases bring in);
- alias expansion past :data:`MAX_ALIAS_NODES` nodes or :data:`MAX_ALIAS_CHARS`
  characters: the "billion laughs" document, whose few hundred bytes expand to
  gigabytes once anything walks or serializes it. Each alias adds the expanded size
  of the node it names, counted while the document is composed, before anything is
  built (the sizes are kept on the nodes, so counting costs one addition per alias);
- a recursive alias (an alias inside the node it names);
- a tag no constructor of the loader knows (``!!python/object/apply:...`` and any
  ``!custom``); a loader that supports a tag (``!secret`` for config files) registers
  a constructor for it, so the check follows what the loader can build;
- an integer written with more than :data:`MAX_INT_DIGITS` digits.

Callers that need the nodes (for the line of every key) use :func:`compose_yaml` and then
build values with the same loader class (:func:`construct_yaml`, or a loader instance's
``construct_object`` with errors turned into :class:`InvalidInput` by :func:`yaml_error`).
Loaders that read numbers as YAML 1.2 does (``2e-5`` is a float) subclass
:class:`Yaml12Loader`.

Composition runs over the parser's events (libyaml's when present) without recursion,
so no document depth reaches Python's recursion limit.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from keel.errors import InvalidInput, KeelError

__all__ = [
    "MAX_ALIAS_CHARS",
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_DOCUMENT_CHARS",
    "MAX_INT_DIGITS",
    "FLOAT_12",
    "SafeYamlLoader",
    "Yaml12Loader",
    "compose_yaml",
    "construct_yaml",
    "load_yaml",
    "yaml_error",
]

#: The longest document read, in characters (bytes for a bytes document).
MAX_DOCUMENT_CHARS = 10 * 1024 * 1024
#: The deepest nesting of sequences and mappings, aliases expanded (a config is 3 or 4 deep).
MAX_DEPTH = 64
#: The nodes all aliases of a document may add once expanded (merge keys and a reused
#: block or two add a few hundred).
MAX_ALIAS_NODES = 100_000
#: The characters of scalar text all aliases of a document may add once expanded.
MAX_ALIAS_CHARS = MAX_DOCUMENT_CHARS
#: The most digits of an integer (Python's own limit for decimal text).
MAX_INT_DIGITS = 4300

_HINT = "fix the YAML at that line"
_MERGE = "tag:yaml.org,2002:merge"

# YAML 1.2 core-schema floats (with '_' digit separators): "2e-5", "1E3", ".5", "1.", "+1.0e+3".
# Written so that no text makes it backtrack: a plain scalar of 100,000 digits is matched in
# linear time (a pattern with two adjacent optional digit runs took 9 s on 16,000 digits).
FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:\d[\d_]*(?:\.(?:\d[\d_]*)?)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_DIGITS = re.compile(r"[-+]?\d+")

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when present: ~10x faster


class _Limit(yaml.YAMLError):
    """A bound was passed while composing (turned into InvalidInput with the source's name)."""

    def __init__(self, line: int | None, message: str, hint: str) -> None:
        super().__init__(message)
        self.line, self.message, self.hint = line, message, hint


class SafeYamlLoader(_Base):  # type: ignore[misc,valid-type]
    """PyYAML's safe loader (YAML 1.1 types), composing with the bounds of this module.

    Subclass it to add resolvers or constructors; a tag is accepted only if the class
    has a constructor for it.
    """

    def get_single_node(self) -> Node | None:
        """The document's root node (None for an empty stream), checked on the way."""
        self.get_event()  # STREAM-START
        node = None
        if not self.check_event(StreamEndEvent):
            self.get_event()  # DOCUMENT-START
            node = self._compose()
            self.get_event()  # DOCUMENT-END
        if not self.check_event(StreamEndEvent):
            event = self.get_event()
            raise yaml.composer.ComposerError(
                "expected a single document in the stream",
                node.start_mark if node is not None else None,
                "but found another document",
                event.start_mark,
            )
        self.get_event()  # STREAM-END
        return node

    def _compose(self) -> Node:
        """Build the node graph from events, iteratively, counting as it goes.

        Each finished node carries its expanded size (``_keel_size`` nodes and ``_keel_chars``
        characters of scalar text, aliases counted in full) and ``_keel_height`` (levels of
        collections, 0 for a scalar).
        """
        known = self.yaml_constructors
        anchors: dict[str, Node] = {}
        open_nodes: set[int] = set()
        stack: list[Node] = []  # open collections
        pending_keys: list[Node | None] = []  # per open mapping: a key waiting for its value
        sizes: list[int] = []  # per open collection: its expanded nodes so far
        chars: list[int] = []  # per open collection: its expanded characters so far
        heights: list[int] = []
        added_nodes = added_chars = 0
        root: Node | None = None
        while True:
            event = self.get_event()
            depth = len(stack)
            if isinstance(event, AliasEvent):
                target = anchors.get(event.anchor)
                if target is None:
                    raise yaml.composer.ComposerError(
                        None, None, f"found undefined alias {event.anchor!r}", event.start_mark
                    )
                if id(target) in open_nodes:
                    raise _Limit(
                        event.start_mark.line + 1,
                        f"recursive alias *{event.anchor}: it is inside the node &{event.anchor} names",
                        "an alias can only repeat a node that is complete before it",
                    )
                added_nodes += target._keel_size  # type: ignore[attr-defined]
                added_chars += target._keel_chars  # type: ignore[attr-defined]
                if added_nodes > MAX_ALIAS_NODES or added_chars > MAX_ALIAS_CHARS:
                    over_nodes = added_nodes > MAX_ALIAS_NODES
                    what = f"{MAX_ALIAS_NODES:,} values" if over_nodes else f"{MAX_ALIAS_CHARS:,} characters"
                    raise _Limit(
                        event.start_mark.line + 1,
                        f"aliases expand the document by more than {what} (at *{event.anchor}): "
                        "refused as an alias bomb",
                        "repeat less through anchors and aliases (&name / *name), or write the values out",
                    )
                if depth + target._keel_height > MAX_DEPTH:  # type: ignore[attr-defined]
                    raise _too_deep(event.start_mark.line + 1)
                node: Node = target
            elif isinstance(event, ScalarEvent):
                tag = event.tag
                if tag is None or tag == "!":
                    tag = self.resolve(ScalarNode, event.value, event.implicit)
                elif tag not in known:
                    raise _unknown_tag(tag, event)
                node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
                node._keel_size = 1  # type: ignore[attr-defined]
                node._keel_chars = len(event.value)  # type: ignore[attr-defined]
                node._keel_height = 0  # type: ignore[attr-defined]
                self._anchor(anchors, event, node)
            elif isinstance(event, SequenceStartEvent | MappingStartEvent):
                if depth >= MAX_DEPTH:
                    raise _too_deep(event.start_mark.line + 1)
                kind = SequenceNode if isinstance(event, SequenceStartEvent) else MappingNode
                tag = event.tag
                if tag is None or tag == "!":
                    tag = self.resolve(kind, None, event.implicit)
                elif tag not in known:
                    raise _unknown_tag(tag, event)
                node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
                self._anchor(anchors, event, node)
                open_nodes.add(id(node))
                stack.append(node)
                pending_keys.append(None)
                sizes.append(1)
                chars.append(0)
                heights.append(0)
                continue
            elif isinstance(event, SequenceEndEvent | MappingEndEvent):
                node = stack.pop()
                pending_keys.pop()
                open_nodes.discard(id(node))
                node.end_mark = event.end_mark
                node._keel_size = sizes.pop()  # type: ignore[attr-defined]
                node._keel_chars = chars.pop()  # type: ignore[attr-defined]
                node._keel_height = heights.pop() + 1  # type: ignore[attr-defined]
            else:  # pragma: no cover - the parser gives nothing else inside a document
                raise yaml.composer.ComposerError(None, None, f"unexpected {type(event).__name__}", event.start_mark)
            # attach the finished node to its parent
            if not stack:
                root = node
                break
            parent = stack[-1]
            sizes[-1] += node._keel_size  # type: ignore[attr-defined]
            chars[-1] += node._keel_chars  # type: ignore[attr-defined]
            heights[-1] = max(heights[-1], node._keel_height)  # type: ignore[attr-defined]
            if isinstance(parent, SequenceNode):
                parent.value.append(node)
            elif pending_keys[-1] is None:
                pending_keys[-1] = node
            else:
                parent.value.append((pending_keys[-1], node))
                pending_keys[-1] = None
        return root

    def _anchor(self, anchors: dict[str, Node], event: Any, node: Node) -> None:
        anchor = event.anchor
        if anchor is None:
            return
        if anchor in anchors:
            raise yaml.composer.ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                anchors[anchor].start_mark,
                "second occurrence",
                event.start_mark,
            )
        anchors[anchor] = node

    # -- construction: every failure a ConstructorError at the node's line ----------------
    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (yaml.YAMLError, KeelError, RecursionError, MemoryError):
            raise
        except Exception as exc:  # a constructor's own failure: 2024-13-45, !!int "", ...
            shown = repr(node.value[:60]) if isinstance(node, ScalarNode) else f"this {node.id}"
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown} as {node.tag}: {exc}", node.start_mark
            ) from None

    def construct_yaml_int(self, node: Node) -> Any:
        _check_digits(node)
        return super().construct_yaml_int(node)


def _construct_float_12(loader: SafeYamlLoader, node: Node) -> Any:
    """A YAML 1.2 float; a plain integer that matched the float pattern stays an int."""
    text = str(loader.construct_scalar(node)).replace("_", "")  # type: ignore[arg-type]
    if _DIGITS.fullmatch(text):
        _check_digits(node)
        return int(text)
    return loader.construct_yaml_float(node)  # type: ignore[arg-type]


SafeYamlLoader.add_constructor("tag:yaml.org,2002:int", SafeYamlLoader.construct_yaml_int)


class Yaml12Loader(SafeYamlLoader):
    """:class:`SafeYamlLoader` with YAML 1.2 floats: ``2e-5`` and ``1E3`` are floats (YAML 1.1 reads text)."""


Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT_12, list("-+0123456789."))
Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _construct_float_12)


def _check_digits(node: Node) -> None:
    if not isinstance(node, ScalarNode):
        return
    digits = len(str(node.value).replace("_", "").lstrip("+-"))
    if digits > MAX_INT_DIGITS:
        raise _Limit(
            node.start_mark.line + 1,
            f"an integer of {digits:,} digits is too large (at most {MAX_INT_DIGITS:,})",
            "quote it to keep it as text",
        )


def _too_deep(line: int) -> _Limit:
    return _Limit(
        line,
        f"nested deeper than {MAX_DEPTH} levels of lists and mappings",
        "flatten the structure",
    )


def _unknown_tag(tag: str, event: Any) -> _Limit:
    shown = "!!" + tag[len("tag:yaml.org,2002:") :] if tag.startswith("tag:yaml.org,2002:") else tag
    return _Limit(
        event.start_mark.line + 1,
        f"unknown tag {shown[:200]}: keel reads plain YAML data only",
        "remove the tag (python/* and other custom tags are never run)",
    )


# -- entry points ------------------------------------------------------------------------
def yaml_error(source: str, exc: BaseException, syntax: str = "not valid YAML") -> InvalidInput:
    """A PyYAML error, or a bound passed, as ``InvalidInput("<source>:<line>: ...")``.

    Syntax errors read ``<source>:<line>: <syntax> (column <c>): <problem>``; refusals
    (a bound, an unknown tag, a recursive alias) ``<source>:<line>: <what>`` with their own hint.
    """
    if isinstance(exc, _Limit):
        where = f":{exc.line}" if exc.line else ""
        return InvalidInput(f"{source}{where}: {exc.message}", exc.hint)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f":{mark.line + 1}" if mark is not None else ""
    column = f" (column {mark.column + 1})" if mark is not None else ""
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = "; ".join(str(part) for part in (exc.context, exc.problem) if part) or "invalid YAML"
    else:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InvalidInput(f"{source}{where}: {syntax}{column}: {problem}", _HINT)


def _text_error(source: str, exc: UnicodeError) -> InvalidInput:
    reason = getattr(exc, "reason", None) or str(exc)
    return InvalidInput(f"{source}: not valid text: {reason}", "save the file as UTF-8")


def compose_yaml(
    text: str | bytes,
    source: str = "<yaml>",
    loader: type[SafeYamlLoader] = SafeYamlLoader,
    syntax: str = "not valid YAML",
) -> Any:
    """The root node of a one-document YAML text (None if empty), checked against every bound.

    Raises:
        InvalidInput: malformed YAML, a bound passed or an unknown tag; the message starts
            with ``source:line:`` (``syntax`` names a syntax error: see :func:`yaml_error`).
    """
    if not isinstance(text, str | bytes):
        raise InvalidInput(f"{source}: YAML must be text, not {type(text).__name__}", "pass the file's text")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise InvalidInput(
            f"{source}: {len(text):,} characters is more YAML than keel reads (at most {MAX_DOCUMENT_CHARS:,})",
            "split the file, or keep large content in data files",
        )
    try:
        reader = loader(text)
    except UnicodeError as exc:
        raise _text_error(source, exc) from None
    try:
        return reader.get_single_node()
    except yaml.YAMLError as exc:
        raise yaml_error(source, exc, syntax) from None
    except UnicodeError as exc:  # a lone surrogate in a str given to libyaml
        raise _text_error(source, exc) from None
    finally:
        reader.dispose()


def construct_yaml(
    node: Any, source: str = "<yaml>", loader: type[SafeYamlLoader] = SafeYamlLoader, syntax: str = "not valid YAML"
) -> Any:
    """The Python value of a node from :func:`compose_yaml` (None for None).

    Raises:
        InvalidInput: a value its tag cannot read (``!!int abc``, a date ``2024-13-45``), an
            integer too long, or an unhashable key; the message starts with ``source:line:``.
    """
    if node is None:
        return None
    builder = loader("")
    try:
        return builder.construct_document(node)
    except yaml.YAMLError as exc:
        raise yaml_error(source, exc, syntax) from None
    except RecursionError:
        raise InvalidInput(f"{source}: nested too deeply to read", "flatten the structure") from None
    finally:
        builder.dispose()


def load_yaml(
    text: str | bytes,
    source: str = "<yaml>",
    loader: type[SafeYamlLoader] = SafeYamlLoader,
    syntax: str = "not valid YAML",
) -> Any:
    """Parse one YAML document into Python values (YAML 1.1 types with the default loader).

    ``load_yaml(text, "config/base.yaml")`` is ``yaml.safe_load(text)`` with the bounds of
    this module and errors as ``InvalidInput("config/base.yaml:12: ...")``.
    """
    return construct_yaml(compose_yaml(text, source, loader, syntax), source, loader, syntax)
