"""Environment configuration: layered YAML, interpolation, overrides, secrets, provenance.

Pure: this module reads no file and no environment of its own; the caller
passes texts, file names and a mapping of variables.

- :func:`parse_layer` reads one YAML document with line numbers kept for every
  key path (``llm.model`` -> line 3); ``!secret`` marks a value as a secret.
- Layers merge in order (``base.yaml``, ``<env>.yaml``, ``KEEL_CONFIG__*``
  variables, ``--set`` items): mappings merge key by key, everything else
  (lists included) is replaced.
- ``${VAR}`` and ``${VAR:-default}`` in file values are replaced from the
  variables (``$${`` writes a literal ``${``). A value that is one reference
  alone takes the type the text reads as in YAML (``${TIMEOUT:-30}`` is 30).
  An unset variable without a default is an :class:`InvalidInput` naming the
  key path, the file and the line.
- A secret is a value tagged ``!secret`` or under a key named like a secret
  (``api_key``, ``token``, ``password``, ``secret``, ...; ``max_tokens`` is
  not one). :meth:`Resolved.redacted` replaces every secret with ``***``:
  that is what is shown, logged and stored.
- :meth:`Resolved.origin` says where a value came from: ``file:line``, the
  environment variable, or ``--set``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from keel.core.redaction import is_secret_key as _is_secret_key
from keel.core.redaction import redact_value
from keel.core.yaml_safe import FLOAT_12, MAX_INT_DIGITS, Yaml12Loader, compose_yaml, load_yaml, yaml_error
from keel.errors import InvalidInput

__all__ = [
    "ENV_PREFIX",
    "REDACTED",
    "ConfigView",
    "Layer",
    "Origin",
    "Resolved",
    "deep_merge",
    "flatten",
    "get_path",
    "interpolate",
    "is_secret_key",
    "is_secret_path",
    "override_layer",
    "parse_layer",
    "parse_scalar",
    "redact",
    "resolve",
    "validate_json_schema",
]

REDACTED = "***"
ENV_PREFIX = "KEEL_CONFIG__"
_SECRET_TAG = "!secret"


class _ConfigLoader(Yaml12Loader):
    """keel's bounded safe YAML (see :mod:`keel.core.yaml_safe`) with YAML 1.2 floats and the
    ``!secret`` tag; line numbers come from the nodes."""


def _construct_secret(loader: Any, node: yaml.Node) -> str:
    value = node.value if isinstance(node, yaml.ScalarNode) else None
    return "" if value is None else str(value)


_ConfigLoader.add_constructor(_SECRET_TAG, _construct_secret)


def _plain_scalar(value: Any) -> Any:
    """Dates and times as ISO strings, so a config is always JSON."""
    if hasattr(value, "isoformat") and not isinstance(value, str):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


@dataclass(frozen=True)
class Origin:
    """Where a value came from: a file and line, an environment variable, or ``--set``."""

    source: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.source}:{self.line}" if self.line else self.source


@dataclass
class Layer:
    """One source of values: the data, the line of every key path, the secret paths."""

    source: str
    data: dict[str, Any]
    lines: dict[str, int | None] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)
    literal: bool = False  # True for overrides: no ${...} interpolation

    def origin(self, path: str) -> Origin:
        """The origin of ``path`` in this layer."""
        return Origin(self.source, self.lines.get(path))


def parse_layer(text: str, source: str) -> Layer:
    """Parse one YAML document (a mapping, or empty) into a :class:`Layer`.

    Raises:
        InvalidInput: malformed YAML (with file and line), a document that is not a mapping,
            or one past the bounds of :mod:`keel.core.yaml_safe` (an alias bomb, a recursive
            alias, too deep, a 100,000-digit integer, an unknown tag such as ``!!python/...``).
    """
    node = compose_yaml(text, source, _ConfigLoader)
    layer = Layer(source, {})
    if node is None:
        return layer
    if not isinstance(node, yaml.MappingNode):
        raise InvalidInput(
            f"{source}:{node.start_mark.line + 1}: a config file must be a mapping (key: value), not a {node.id}",
            "write sections such as llm:, rag:, prompt:, monitoring:",
        )
    loader = _ConfigLoader("")
    try:
        layer.data = _build(loader, node, "", layer, source)
    except yaml.YAMLError as exc:
        raise yaml_error(source, exc) from None
    finally:
        loader.dispose()
    return layer


def _build(loader: Any, node: yaml.Node, path: str, layer: Layer, source: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    child = f"{path}.{key_node.value}" if path else key_node.value
                    raise InvalidInput(
                        f"{source}:{key_node.start_mark.line + 1}: duplicate key {child!r}", "keep one of the two"
                    )
                seen.add(key_node.value)
        loader.flatten_mapping(node)  # YAML merge keys (<<: *anchor); later keys win
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, bool) or not isinstance(key, str | int | float):
                raise InvalidInput(
                    f"{source}:{key_node.start_mark.line + 1}: key {key!r} of {path or '(top)'} is not text",
                    "keys are names: llm, model, temperature",
                )
            key = str(key)
            child = f"{path}.{key}" if path else key
            layer.lines[child] = key_node.start_mark.line + 1
            out[key] = _build(loader, value_node, child, layer, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            child = f"{path}.{index}"
            layer.lines[child] = item.start_mark.line + 1
            items.append(_build(loader, item, child, layer, source))
        return items
    if node.tag == _SECRET_TAG:
        layer.secrets.add(path)
        value = node.value
        return "" if value is None else str(value)
    if node.tag.startswith("!"):
        raise InvalidInput(
            f"{source}:{node.start_mark.line + 1}: unknown tag {node.tag} on {path!r}", "the one tag known is !secret"
        )
    return _plain_scalar(loader.construct_object(node, deep=True))


def parse_scalar(text: str) -> Any:
    """An override value as YAML reads it: ``0.2`` -> 0.2, ``true`` -> True, ``[a, b]`` -> a list, ``""`` -> ""."""
    if text == "" or text.strip() == "":
        return text
    try:
        value = load_yaml(text, "override", Yaml12Loader)
    except InvalidInput:  # not YAML, or past a bound (a 100,000-digit number): the text as given
        return text
    return _plain_scalar(value)


# -- merging --------------------------------------------------------------------------------
def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``: mappings merge key by key, anything else (lists too) replaces.

    Neither argument is modified; the result shares no mapping with them.
    """
    out = {k: (_copy(v)) for k, v in base.items()}
    for key, value in overlay.items():
        old = out.get(key)
        if isinstance(value, Mapping) and isinstance(old, dict):
            out[key] = deep_merge(old, value)
        else:
            out[key] = _copy(value)
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _split_path(path: str, what: str) -> list[str]:
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise InvalidInput(f"invalid key path {path!r} in {what}", "write dotted keys: llm.temperature=0.2")
    return parts


def override_layer(
    items: Sequence[str] = (), environ: Mapping[str, str] | None = None, base: Mapping[str, Any] | None = None
) -> list[Layer]:
    """The override layers: ``KEEL_CONFIG__a__b=v`` variables (sorted by name), then ``--set a.b=v`` items.

    Variable path segments match existing keys case-insensitively (``KEEL_CONFIG__LLM__MODEL``
    sets ``llm.model``); values are read as YAML scalars.
    """
    layers: list[Layer] = []
    current: dict[str, Any] = dict(base or {})
    for name in sorted(environ or {}):
        if not name.startswith(ENV_PREFIX) and not name.upper().startswith(ENV_PREFIX):
            continue
        raw = name[len(ENV_PREFIX) :]
        parts = raw.split("__")
        if not raw or any(not p for p in parts):
            raise InvalidInput(f"invalid override variable {name}", f"write {ENV_PREFIX}llm__model=gpt-4o")
        parts = _match_case(current, parts)
        layer = _set_layer(f"env {name}", parts, parse_scalar((environ or {})[name]))
        current = deep_merge(current, layer.data)
        layers.append(layer)
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep:
            raise InvalidInput(f"invalid --set {item!r}", "write --set llm.temperature=0.2")
        layers.append(_set_layer(f"--set {key.strip()}", _split_path(key.strip(), "--set"), parse_scalar(value)))
    return layers


def _match_case(data: Mapping[str, Any], parts: list[str]) -> list[str]:
    out = []
    node: Any = data
    for part in parts:
        key = part
        if isinstance(node, Mapping) and part not in node:
            key = next((k for k in node if k.lower() == part.lower()), part)
        out.append(key)
        node = node.get(key) if isinstance(node, Mapping) else None
    return out


def _set_layer(source: str, parts: list[str], value: Any) -> Layer:
    data: dict[str, Any] = {}
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    layer = Layer(source, data, literal=True)
    for i in range(len(parts)):
        layer.lines[".".join(parts[: i + 1])] = None
    _add_lines(value, ".".join(parts), layer.lines)
    return layer


def _add_lines(value: Any, path: str, lines: dict[str, int | None]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            lines[f"{path}.{k}"] = None
            _add_lines(v, f"{path}.{k}", lines)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            lines[f"{path}.{i}"] = None
            _add_lines(v, f"{path}.{i}", lines)


# -- paths, secrets, redaction -------------------------------------------------------------
def get_path(data: Any, path: str) -> Any:
    """The value at a dotted ``path`` (list items by index); KeyError if absent."""
    node = data
    for part in path.split(".") if path else []:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(path)
    return node


def flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf as ``(dotted path, value)`` (empty mappings and lists are leaves)."""
    if isinstance(data, Mapping) and data:
        for key, value in data.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list) and data:
        for index, value in enumerate(data):
            yield from flatten(value, f"{prefix}.{index}")
    else:
        yield prefix, data


def is_secret_key(key: str) -> bool:
    """True for keys named like a secret: ``api_key``, ``openaiApiKey``, ``auth_token``, ``db_password``,
    ``client_secret``, ``secrets``, ``Authorization``; False for ``max_tokens``, ``token_limit``, ``key``
    (the rules, and the workspace's own list, are :func:`keel.core.redaction.is_secret_key`)."""
    return _is_secret_key(key)


def redact(data: Any, secret_paths: Sequence[str] | set[str] = (), _path: str = "") -> Any:
    """A copy of ``data`` with every secret value replaced by ``***`` (None stays None)."""
    paths = secret_paths if isinstance(secret_paths, set) else set(secret_paths)
    if isinstance(data, Mapping):
        out = {}
        for key, value in data.items():
            child = f"{_path}.{key}" if _path else str(key)
            if is_secret_key(str(key)) or child in paths:
                out[key] = _mask(value)
            else:
                out[key] = redact(value, paths, child)
        return out
    if isinstance(data, list):
        return [_mask(v) if f"{_path}.{i}" in paths else redact(v, paths, f"{_path}.{i}") for i, v in enumerate(data)]
    return redact_value(data)  # secrets inside values: a URL's password, a token, a DSN


_redact_data = redact


def _mask(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return REDACTED


def is_secret_path(path: str, secret_paths: set[str]) -> bool:
    """True if the value at ``path`` is a secret (tagged, or under a secret-named key)."""
    parts = path.split(".")
    for i in range(len(parts)):
        if is_secret_key(parts[i]) or ".".join(parts[: i + 1]) in secret_paths:
            return True
    return False


# -- interpolation ----------------------------------------------------------------------------
_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}


def interpolate(
    data: dict[str, Any],
    environ: Mapping[str, str],
    where: Any = None,
    skip: set[str] | None = None,
    secrets: set[str] | None = None,
) -> dict[str, Any]:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of ``data`` (in place; returned).

    ``where(path)`` names the origin of a path for errors; ``skip`` holds paths whose
    values are taken literally (overrides); values at ``secrets`` paths (or under
    secret-named keys) always stay text.
    """
    _interp(data, "", environ, where, skip or set(), secrets or set())
    return data


def _interp(node: Any, path: str, environ: Mapping[str, str], where: Any, skip: set[str], secrets: set[str]) -> None:
    items: Any = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in list(items):
        child = f"{path}.{key}" if path else str(key)
        if isinstance(value, str):
            if "$" in value and child not in skip:
                node[key] = _substitute(value, child, environ, where, secrets)
        elif isinstance(value, dict | list):
            _interp(value, child, environ, where, skip, secrets)


def _typed(text: str) -> Any:
    """The text of a lone ``${VAR}`` as a number or bool when it reads as one (YAML 1.2 core
    rules: ``yes``/``on``/``0123`` stay text)."""
    if _INT.fullmatch(text) and len(text) <= MAX_INT_DIGITS:
        return int(text)
    if text in _BOOLS:
        return _BOOLS[text]
    if any(c.isdigit() for c in text) and any(c in ".eE" for c in text) and FLOAT_12.fullmatch(text):
        try:
            return float(text)
        except ValueError:
            return text
    return text


def _substitute(text: str, path: str, environ: Mapping[str, str], where: Any, secrets: set[str]) -> Any:
    whole = _REF.fullmatch(text)

    def one(match: re.Match[str]) -> str:
        if match.group() == "$${":
            return "${"
        name, sep, default = match.group(1).partition(":-")
        place = f" ({where(path)})" if where is not None else ""
        if not _VAR_NAME.fullmatch(name):
            raise InvalidInput(
                f"invalid reference {match.group()!r} in {path}{place}", "write ${VAR} or ${VAR:-default}"
            )
        value = environ.get(name)
        if value is None or (value == "" and sep):
            if not sep:
                raise InvalidInput(
                    f"environment variable {name} is not set, and {path}{place} uses it without a default",
                    f"set {name}, or write ${{{name}:-default}}",
                )
            return default
        return value

    result = _REF.sub(one, text)
    if whole is not None and whole.group() != "$${" and not is_secret_path(path, secrets):
        return _typed(result)
    return result


# -- resolving ----------------------------------------------------------------------------------
@dataclass
class Resolved:
    """A merged, interpolated configuration with where each value came from."""

    data: dict[str, Any]
    layers: list[Layer]
    secrets: set[str]

    def origin(self, path: str) -> Origin | None:
        """Where the value at ``path`` (or its nearest ancestor) came from; None if nowhere."""
        probe = path
        while probe:
            for layer in reversed(self.layers):
                if probe in layer.lines:
                    return layer.origin(probe)
            probe = probe.rpartition(".")[0]
        return None

    def where(self, path: str) -> str:
        """``origin`` as text (``config/production.yaml:4``), or ``unknown``."""
        found = self.origin(path)
        return str(found) if found is not None else "unknown origin"

    def redacted(self) -> dict[str, Any]:
        """The data with every secret replaced by ``***``."""
        return redact(self.data, self.secrets)  # type: ignore[no-any-return]

    def explain(self) -> list[tuple[str, Any, str]]:
        """``(path, redacted value, origin)`` for every leaf."""
        return [(path, value, self.where(path)) for path, value in flatten(self.redacted())]


def resolve(layers: Sequence[Layer], environ: Mapping[str, str]) -> Resolved:
    """Merge ``layers`` in order, then interpolate the values that came from files."""
    data: dict[str, Any] = {}
    secrets: set[str] = set()
    literal: set[str] = set()
    for layer in layers:
        data = deep_merge(data, layer.data) if data else _copy(layer.data)
        secrets |= layer.secrets
        if layer.literal:
            literal.update(path for path, _ in flatten(layer.data))
    resolved = Resolved(data, list(layers), secrets)
    interpolate(data, environ, resolved.where, literal, secrets)
    return resolved


# -- JSON Schema (a subset) ------------------------------------------------------------------
_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (
        isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, float) and math.isfinite(v) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def validate_json_schema(data: Any, schema: Mapping[str, Any], path: str = "") -> list[tuple[str, str]]:
    """Check ``data`` against a JSON Schema subset; returns ``(key path, problem)`` pairs.

    Supported: ``type`` (one or a list), ``enum``, ``const``, ``properties``, ``required``,
    ``additionalProperties`` (bool or schema), ``items``, ``minItems``/``maxItems``,
    ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``, ``minLength``/``maxLength``,
    ``pattern``. Other keywords are ignored.
    """
    errors: list[tuple[str, str]] = []
    where = path or "(top)"
    kind = schema.get("type")
    if kind is not None:
        kinds = [kind] if isinstance(kind, str) else list(kind)
        unknown = [k for k in kinds if k not in _TYPES]
        if unknown:
            raise InvalidInput(f"JSON Schema type {unknown[0]!r} is not supported", f"use one of {', '.join(_TYPES)}")
        if not any(_TYPES[k](data) for k in kinds):
            return [(where, f"must be {' or '.join(kinds)}, not {_kind(data)} {data!r}")]
    if "enum" in schema and data not in list(schema["enum"]):
        errors.append((where, f"must be one of {list(schema['enum'])!r}, not {data!r}"))
    if "const" in schema and data != schema["const"]:
        errors.append((where, f"must be {schema['const']!r}, not {data!r}"))
    if isinstance(data, int | float) and not isinstance(data, bool):
        for word, test, text in (
            ("minimum", lambda v, b: v >= b, ">="),
            ("maximum", lambda v, b: v <= b, "<="),
            ("exclusiveMinimum", lambda v, b: v > b, ">"),
            ("exclusiveMaximum", lambda v, b: v < b, "<"),
        ):
            bound = schema.get(word)
            if isinstance(bound, int | float) and not isinstance(bound, bool) and not test(data, bound):
                errors.append((where, f"must be {text} {bound}, not {data!r}"))
    if isinstance(data, str):
        if "minLength" in schema and len(data) < schema["minLength"]:
            errors.append((where, f"must be at least {schema['minLength']} characters long"))
        if "maxLength" in schema and len(data) > schema["maxLength"]:
            errors.append((where, f"must be at most {schema['maxLength']} characters long"))
        if "pattern" in schema and re.search(schema["pattern"], data) is None:
            errors.append((where, f"must match {schema['pattern']!r}, not {data!r}"))
    if isinstance(data, Mapping):
        props = schema.get("properties") or {}
        for name in schema.get("required") or ():
            if name not in data:
                errors.append((where, f"is missing the required key {name!r}"))
        extra = schema.get("additionalProperties", True)
        for key, value in data.items():
            child = f"{path}.{key}" if path else str(key)
            if key in props:
                errors += validate_json_schema(value, props[key], child)
            elif extra is False:
                errors.append((child, "is not an allowed key"))
            elif isinstance(extra, Mapping):
                errors += validate_json_schema(value, extra, child)
    if isinstance(data, list):
        if "minItems" in schema and len(data) < schema["minItems"]:
            errors.append((where, f"must have at least {schema['minItems']} items"))
        if "maxItems" in schema and len(data) > schema["maxItems"]:
            errors.append((where, f"must have at most {schema['maxItems']} items"))
        items = schema.get("items")
        if isinstance(items, Mapping):
            for index, value in enumerate(data):
                errors += validate_json_schema(value, items, f"{path}.{index}" if path else str(index))
    return errors


def _kind(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _TYPES[name](value) and not (name == "integer" and isinstance(value, float)):
            return name
    return type(value).__name__


# -- the user's view ----------------------------------------------------------------------------
class ConfigView(Mapping[str, Any]):
    """Read-only attribute and item access over a (nested) config mapping.

    ``view.llm.model == view["llm"]["model"]``; nested mappings come back as views,
    lists as lists of views/values. ``repr`` and ``str`` show secrets as ``***``.
    """

    __slots__ = ("_data", "_path", "_secrets")

    def __init__(self, data: Mapping[str, Any], path: str = "", secrets: set[str] | None = None) -> None:
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_secrets", secrets if secrets is not None else set())

    def _wrap(self, key: str, value: Any) -> Any:
        child = f"{self._path}.{key}" if self._path else key
        if isinstance(value, Mapping):
            return ConfigView(value, child, self._secrets)
        if isinstance(value, list):
            return [self._wrap(str(i), v) if isinstance(v, Mapping) else v for i, v in enumerate(value)]
        return value

    def __getitem__(self, key: str) -> Any:
        return self._wrap(key, self._data[key])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self._wrap(name, self._data[name])
        except KeyError:
            where = f"{self._path}.{name}" if self._path else name
            raise AttributeError(f"config has no key {where!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a config is read-only; use --set or KEEL_CONFIG__ variables to override values")

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ConfigView):
            return bool(self._data == other._data)
        if isinstance(other, Mapping):
            return bool(self._data == other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | {k for k in self._data if isinstance(k, str) and k.isidentifier()})

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        """A plain copy (secrets as ``***`` unless ``redact=False``)."""
        data = _copy(self._data)
        if not redact:
            return data  # type: ignore[no-any-return]
        prefix = self._path + "." if self._path else ""
        secrets = {p[len(prefix) :] for p in self._secrets if p.startswith(prefix)}
        masked = _redact_under(self._path, data)
        return _redact_data(masked, secrets)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"ConfigView({self.to_dict()!r})"


def _redact_under(path: str, data: Any) -> Any:
    """Everything is secret under a secret-named ancestor."""
    if path and any(is_secret_key(p) for p in path.split(".")):
        return _mask(data)
    return data
