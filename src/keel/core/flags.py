"""Feature flags: definitions, targeting, sticky percentage bucketing, compiled evaluators.

Pure: no I/O. A *flag set* is ``{key: Flag}``, parsed from YAML-shaped data::

    flags:
      use_new_prompt_v2:            # boolean: served True to 25% of users
        rollout: 25
      reranker:                     # multivariate: each variant carries a payload
        variants: {off: null, cohere: cohere-rerank-v3, v2: "prompt:chat@2.0.0"}
        default: off                # served when the flag is killed or nothing applies
        distribution: {off: 50, cohere: 25, v2: 25}
        rules:                      # first match wins
          - if: {plan: enterprise, app_version: {semver_gte: "2.1.0"}}
            serve: v2
          - if: {country: {in: [DE, FR]}}
            rollout: 10             # boolean flags: 10% of those users get True
        enabled: true               # false: the kill switch, everyone gets the default

Conditions (all must hold): ``attr: value`` (equals), or ``attr: {OP: value}``
with OP one of :data:`OPERATORS`. Context values from a command line are text,
so equality also matches on the text form (``42 == "42"``).

**Sticky bucketing.** A unit (the ``unit`` attribute, ``user_id`` by default)
falls in one of 10,000 buckets by the flag's allocation scheme
(:mod:`keel.core.bucketing`): ``bucketing: blake2b`` (BLAKE2b-64 of key, salt
and unit: independent across flags; what the store gives every new flag) or
``bucketing: crc32`` (``crc32(key + "." + salt + "." + unit) mod 10000``, how
keel bucketed before; a definition that names no scheme, in a file or in the
store, means ``crc32``, so no running flag changes its assignments; a
``flags.yaml`` may name a default for its flags with a top-level
``bucketing:``). A percentage rollout serves the first ``pct x 100`` buckets, so growing a
rollout from 10% to 25% only adds users: nobody who had the feature loses it.
A distribution gives each variant a contiguous range of buckets, in order.
A split that serves everyone the same (a 0% or 100% rollout, a distribution
with one variant at 100%) needs no unit; a partial one without a unit in the
context serves the flag's default and calls ``missing_unit`` (see
:func:`compile_flag`), so the caller can say so.

**Speed.** :func:`compile_flag` precomputes everything (the hash state of the
key and salt prefix, thresholds, compiled regexes, parsed versions) into
closures; the common case (a boolean with a rollout and no rules) is one
``dict.get``, one hash of the unit (a copy of the prefix's BLAKE2b state, or
one ``crc32``) and a comparison.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.core.bucketing import BUCKETS, DEFAULT, LEGACY, blake2b_state, bucketer, check_scheme
from keel.core.semver import SemVer
from keel.errors import InvalidInput

__all__ = [
    "BUCKETS",
    "OPERATORS",
    "CompiledFlag",
    "Condition",
    "Flag",
    "MissingUnit",
    "Rule",
    "bucket",
    "compile_flag",
    "compile_regex",
    "dump_flag",
    "dump_flags",
    "inherit_bucketing",
    "parse_flag",
    "parse_flags",
    "parse_flags_yaml",
    "parse_percent",
    "parse_weights",
    "prompt_references",
]

OPERATORS = (
    "eq",
    "ne",
    "in",
    "not_in",
    "regex",
    "gt",
    "gte",
    "lt",
    "lte",
    "semver_eq",
    "semver_gt",
    "semver_gte",
    "semver_lt",
    "semver_lte",
    "exists",
)
_FLAG_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
_MISSING = object()
_crc32 = zlib.crc32


def bucket(key: str, salt: str, unit: Any, scheme: str = LEGACY) -> int:
    """The unit's bucket in ``[0, 10000)`` for one flag (stable across processes and versions);
    ``scheme`` is the flag's :attr:`Flag.scheme` (``crc32``, the default here, is how keel
    bucketed before schemes were recorded)."""
    return bucketer(scheme, key, salt)(unit)


def parse_percent(value: Any, what: str = "rollout") -> float:
    """``25``, ``"25%"``, ``12.5`` -> 25.0 / 12.5; outside 0-100 raises InvalidInput."""
    text = str(value).strip()
    if isinstance(value, bool):
        raise InvalidInput(f"invalid {what} {value!r}", "give a percentage from 0 to 100, e.g. 25 or 25%")
    try:
        pct = float(text[:-1] if text.endswith("%") else text)
    except ValueError:
        raise InvalidInput(f"invalid {what} {value!r}", "give a percentage from 0 to 100, e.g. 25 or 25%") from None
    if not math.isfinite(pct) or pct < 0 or pct > 100:
        raise InvalidInput(f"{what} {value!r} is outside 0-100%", "give a percentage from 0 to 100, e.g. 25 or 25%")
    return pct


def parse_weights(weights: Any, what: str = "weights") -> dict[str, float]:
    """Variant weights as fractions summing to 1 (given as fractions, or percentages summing to 100)."""
    if not isinstance(weights, Mapping) or not weights:
        raise InvalidInput(f"{what} must map variant names to weights", "e.g. {control: 0.5, treatment: 0.5}")
    out: dict[str, float] = {}
    for name, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise InvalidInput(f"invalid weight {weight!r} for {name!r} in {what}", "weights are numbers >= 0")
        out[str(name)] = float(weight)
    total = sum(out.values())
    if abs(total - 1) <= 1e-6:
        return out
    if abs(total - 100) <= 1e-4:
        return {k: v / 100 for k, v in out.items()}
    raise InvalidInput(
        f"{what} sum to {total:g}, not 1",
        "make the weights sum to 1 (or the percentages to 100)",
    )


@dataclass(frozen=True)
class Condition:
    """``attribute OP value`` on the evaluation context."""

    attribute: str
    op: str
    value: Any

    def to_data(self) -> Any:
        """The YAML form's value for this condition."""
        return self.value if self.op == "eq" else {self.op: self.value}


@dataclass(frozen=True)
class Rule:
    """When every condition holds: serve a variant, a rollout (boolean) or a distribution."""

    conditions: tuple[Condition, ...]
    serve: str | None = None
    rollout: float | None = None
    distribution: tuple[tuple[str, float], ...] | None = None

    def to_data(self) -> dict[str, Any]:
        """The YAML form."""
        out: dict[str, Any] = {"if": {c.attribute: c.to_data() for c in self.conditions}}
        if self.serve is not None:
            out["serve"] = _yaml_variant(self.serve)
        if self.rollout is not None:
            out["rollout"] = self.rollout
        if self.distribution is not None:
            out["distribution"] = {_yaml_variant(k): round(v * 100, 4) for k, v in self.distribution}
        return out


@dataclass(frozen=True)
class Flag:
    """One flag definition (immutable; a change makes a new flag-set version)."""

    key: str
    variants: dict[str, Any]  # variant name -> payload ("true"/"false" -> True/False for booleans)
    default: str
    kind: str = "boolean"  # or "multivariate"
    enabled: bool = True
    rollout: float | None = None  # booleans: percent of units served True
    distribution: tuple[tuple[str, float], ...] | None = None  # multivariate fallthrough (fractions)
    rules: tuple[Rule, ...] = ()
    unit: str = "user_id"
    salt: str = ""
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    bucketing: str | None = None  # the allocation scheme as written; None: not stated (crc32)

    @property
    def is_boolean(self) -> bool:
        """True for an on/off flag."""
        return self.kind == "boolean"

    @property
    def scheme(self) -> str:
        """The allocation scheme units are bucketed by (:mod:`keel.core.bucketing`): the one
        stated, else ``crc32``, the scheme of every definition from before schemes were recorded."""
        return self.bucketing or LEGACY

    def to_data(self) -> dict[str, Any]:
        """The YAML/JSON form (what :func:`parse_flag` reads back)."""
        out: dict[str, Any] = {}
        if self.description:
            out["description"] = self.description
        if not self.is_boolean:
            out["variants"] = dict(self.variants)
        out["default"] = self.variants[self.default] if self.is_boolean else self.default
        out["enabled"] = self.enabled
        if self.rollout is not None:
            out["rollout"] = self.rollout
        if self.distribution is not None:
            out["distribution"] = {k: round(v * 100, 4) for k, v in self.distribution}
        if self.rules:
            out["rules"] = [r.to_data() for r in self.rules]
        if self.unit != "user_id":
            out["unit"] = self.unit
        if self.salt:
            out["salt"] = self.salt
        if self.tags:
            out["tags"] = dict(self.tags)
        if self.bucketing is not None:
            out["bucketing"] = self.bucketing
        return out


def _yaml_variant(name: str) -> Any:
    return {"true": True, "false": False}.get(name, name)


# -- parsing ----------------------------------------------------------------------------
def _variant_name(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _condition(attribute: str, spec: Any, where: str) -> Condition:
    if not isinstance(spec, Mapping):
        return Condition(attribute, "eq", spec)
    if len(spec) != 1:
        raise InvalidInput(f"{where}: condition on {attribute!r} needs exactly one operator", f"use one of {OPERATORS}")
    op, value = next(iter(spec.items()))
    if op not in OPERATORS:
        raise InvalidInput(f"{where}: unknown operator {op!r} on {attribute!r}", f"use one of {', '.join(OPERATORS)}")
    if op in ("in", "not_in") and not isinstance(value, (list, tuple)):
        raise InvalidInput(f"{where}: {op!r} on {attribute!r} needs a list", f"write {attribute}: {{{op}: [a, b]}}")
    if op == "regex":
        compile_regex(value, where, attribute)
    if op.startswith("semver_"):
        try:
            SemVer.parse(str(value))
        except Exception:
            raise InvalidInput(f"{where}: invalid version {value!r} on {attribute!r}", "write e.g. 2.1.0") from None
    if op in ("gt", "gte", "lt", "lte"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"{where}: {op!r} on {attribute!r} needs a number, not {value!r}", "e.g. {gte: 10}")
    return Condition(attribute, op, list(value) if op in ("in", "not_in") else value)


#: The longest regex a rule may hold.
MAX_REGEX_CHARS = 1000
_RE2: Any = None


def _re2_module() -> Any:
    global _RE2
    if _RE2 is None:
        import re2  # google-re2: imported when a rule first uses a regex

        _RE2 = re2
    return _RE2


def compile_regex(pattern: Any, where: str = "flag rule", attribute: str | None = None) -> Callable[[str], bool]:
    """``search(text) -> bool`` for a rule's regex, run on RE2: linear in the text, whatever
    the pattern (``^(a+)+$`` on 28 a's and a '!' answers at once; Python's ``re`` took 9.7 s).

    RE2 is Python's syntax less what needs backtracking: backreferences (``\\1``) and
    lookaround (``(?=``, ``(?!``, ``(?<=``) are refused, and so are ``\\Z`` (write ``$``) and
    patterns over :data:`MAX_REGEX_CHARS` characters. ``\\d`` and ``\\w`` are ASCII.

    Raises:
        InvalidInput: the pattern is not text, too long, or not one RE2 compiles; the message
            starts with ``where`` (``flags.yaml:4: flag 'beta' rule 1``) and names the attribute.
    """
    on = f" on {attribute!r}" if attribute is not None else ""
    if isinstance(pattern, bool) or not isinstance(pattern, str | int | float):
        raise InvalidInput(f"{where}: the regex{on} must be text, not {type(pattern).__name__}", "quote the pattern")
    pattern = str(pattern)
    if len(pattern) > MAX_REGEX_CHARS:
        raise InvalidInput(
            f"{where}: the regex{on} has {len(pattern):,} characters, more than {MAX_REGEX_CHARS:,}",
            "write a shorter pattern, or use 'in' with a list of values",
        )
    re2 = _re2_module()
    options = re2.Options()
    options.log_errors = False
    options.never_capture = True  # only "does it match" is asked
    try:
        compiled = re2.compile(pattern.encode("utf-8", "surrogatepass"), options)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise InvalidInput(
            f"{where}: invalid regex {pattern[:200]!r}{on}: {reason}",
            "flag rules run on a linear-time regex engine (RE2): no backreferences or lookaround",
        ) from None
    low = getattr(compiled, "_regexp", None)
    anchor = getattr(getattr(getattr(re2, "_re2", None), "RE2", None), "Anchor", None)
    if low is not None and anchor is not None and hasattr(low, "Match"):
        # the binding's own match loop builds match objects; one RE2 call is 2x faster
        unanchored = anchor.UNANCHORED
        match = low.Match

        def search_fast(text: str) -> bool:
            data = text.encode("utf-8", "surrogatepass")
            return bool(match(unanchored, data, 0, len(data))[0][0] >= 0)

        return search_fast

    def search(text: str) -> bool:
        return compiled.search(text.encode("utf-8", "surrogatepass")) is not None

    return search


def _distribution(spec: Any, variants: Mapping[str, Any], where: str) -> tuple[tuple[str, float], ...]:
    weights = parse_weights(spec, f"{where}: distribution")
    items = []
    for name, weight in weights.items():
        if name not in variants and _variant_name(_yaml_bool(name)) not in variants:
            raise InvalidInput(f"{where}: distribution names unknown variant {name!r}", f"variants: {list(variants)}")
        items.append((name if name in variants else _variant_name(_yaml_bool(name)), weight))
    return tuple(items)


def _yaml_bool(name: str) -> Any:
    return {"true": True, "false": False, "True": True, "False": False}.get(name, name)


def parse_flag(key: str, spec: Any, where: str = "", bucketing: str | None = None) -> Flag:
    """One flag from its YAML/JSON form; errors name ``where`` (e.g. ``flags.yaml:12``).

    ``bucketing`` is the scheme when the spec names none (a ``flags.yaml``'s top-level
    ``bucketing:``); None leaves it unstated, which evaluates as ``crc32``."""
    where = f"{where}: flag {key!r}" if where else f"flag {key!r}"
    if not isinstance(key, str) or not _FLAG_KEY.match(key):
        raise InvalidInput(f"invalid flag key {key!r}", "letters, digits, '_', '-', '.'; up to 200 characters")
    if spec is None:
        spec = {}
    if isinstance(spec, bool):
        spec = {"default": spec}
    if not isinstance(spec, Mapping):
        raise InvalidInput(
            f"{where}: a flag is a mapping (variants, default, rollout, rules, ...)", "see docs/flags.md"
        )
    known = {"description", "variants", "default", "enabled", "rollout", "distribution", "rules", "unit", "salt",
             "tags", "kind", "type", "bucketing"}  # fmt: skip
    unknown = set(spec) - known
    if unknown:
        raise InvalidInput(f"{where}: unknown field(s) {sorted(unknown)}", f"fields: {', '.join(sorted(known))}")
    raw_variants = spec.get("variants")
    if raw_variants is None:
        variants: dict[str, Any] = {"false": False, "true": True}
        kind = "boolean"
        default = _variant_name(bool(spec.get("default", False)))
        if not isinstance(spec.get("default", False), bool):
            raise InvalidInput(f"{where}: a boolean flag's default is true or false", "or give variants")
    else:
        if isinstance(raw_variants, (list, tuple)):
            raw_variants = {str(v): v for v in raw_variants}
        if not isinstance(raw_variants, Mapping) or len(raw_variants) < 2:
            raise InvalidInput(f"{where}: variants must map 2+ names to payloads", "e.g. variants: {a: x, b: y}")
        variants = {_variant_name(k): v for k, v in raw_variants.items()}
        kind = "multivariate"
        if "default" not in spec:
            default = next(iter(variants))
        else:
            default = _variant_name(spec["default"])
            if default not in variants:
                raise InvalidInput(
                    f"{where}: default {spec['default']!r} is not a variant", f"variants: {list(variants)}"
                )
    if "rollout" in spec and "distribution" in spec:
        raise InvalidInput(f"{where}: give rollout or distribution, not both", "rollout is for booleans")
    rollout = None
    if spec.get("rollout") is not None:
        if kind != "boolean":
            raise InvalidInput(f"{where}: rollout is for boolean flags", "use distribution: {variant: percent}")
        rollout = parse_percent(spec["rollout"], f"{where}: rollout")
    distribution = None
    if spec.get("distribution") is not None:
        distribution = _distribution(spec["distribution"], variants, where)
    enabled = spec.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidInput(f"{where}: enabled must be true or false", "enabled: false is the kill switch")
    rules = []
    for i, raw in enumerate(spec.get("rules") or []):
        rules.append(_rule(raw, variants, kind, f"{where} rule {i + 1}"))
    unit = spec.get("unit", "user_id")
    if not isinstance(unit, str) or not unit:
        raise InvalidInput(f"{where}: unit must be an attribute name", "e.g. unit: user_id")
    tags = spec.get("tags") or {}
    if not isinstance(tags, Mapping):
        raise InvalidInput(f"{where}: tags must be a mapping", "e.g. tags: {team: search}")
    return Flag(
        key=key,
        variants=variants,
        default=default,
        kind=kind,
        enabled=enabled,
        rollout=rollout,
        distribution=distribution,
        rules=tuple(rules),
        unit=unit,
        salt=str(spec.get("salt") or ""),
        description=str(spec.get("description") or ""),
        tags={str(k): str(v) for k, v in tags.items()},
        bucketing=_scheme(spec.get("bucketing", bucketing), where),
    )


def _scheme(value: Any, where: str) -> str | None:
    return None if value is None else check_scheme(value, f"{where}: bucketing")


def inherit_bucketing(definition: Mapping[str, Any], previous: Flag | None) -> dict[str, Any]:
    """``definition`` with its allocation scheme stated, for the store to record: the one it
    names; else the previous definition's (a change never moves a running flag's units;
    a previous one without a scheme was bucketed by ``crc32``); else, for a flag new to
    the store, :data:`keel.core.bucketing.DEFAULT`."""
    out = dict(definition)
    if out.get("bucketing") is None:
        out["bucketing"] = previous.scheme if previous is not None else DEFAULT
    return out


def _rule(raw: Any, variants: Mapping[str, Any], kind: str, where: str) -> Rule:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("if", {}), Mapping):
        raise InvalidInput(f"{where}: a rule is {{if: {{attr: value}}, serve: VARIANT}}", "see docs/flags.md")
    unknown = set(raw) - {"if", "serve", "rollout", "distribution"}
    if unknown:
        raise InvalidInput(
            f"{where}: unknown field(s) {sorted(unknown)}", "a rule has if, serve, rollout, distribution"
        )
    conditions = tuple(_condition(str(a), s, where) for a, s in (raw.get("if") or {}).items())
    actions = [k for k in ("serve", "rollout", "distribution") if raw.get(k) is not None]
    if len(actions) != 1:
        raise InvalidInput(f"{where}: give exactly one of serve, rollout, distribution", "e.g. serve: true")
    if actions[0] == "serve":
        name = _variant_name(raw["serve"])
        if name not in variants:
            raise InvalidInput(f"{where}: serves unknown variant {raw['serve']!r}", f"variants: {list(variants)}")
        return Rule(conditions, serve=name)
    if actions[0] == "rollout":
        if kind != "boolean":
            raise InvalidInput(f"{where}: rollout is for boolean flags", "use distribution")
        return Rule(conditions, rollout=parse_percent(raw["rollout"], f"{where}: rollout"))
    return Rule(conditions, distribution=_distribution(raw["distribution"], variants, where))


def parse_flags(doc: Any, source: str = "", lines: Mapping[str, int] | None = None) -> dict[str, Flag]:
    """A flag set from ``{flags: {key: spec}}`` (or ``{key: spec}``).

    Beside ``flags``, a top-level ``bucketing: blake2b`` is the scheme of every flag that
    names none (without it, such flags are bucketed by ``crc32``, as before schemes existed).
    """
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise InvalidInput(f"{source or 'flags'}: expected a mapping of flags", "write flags: {my_flag: {rollout: 10}}")
    wrapped = (
        "flags" in doc
        and set(doc) <= {"flags", "version", "bucketing"}
        and not isinstance(doc.get("bucketing"), Mapping)  # else a flag named "bucketing"
    )
    body = doc.get("flags") if wrapped else doc
    default_scheme = _scheme(doc.get("bucketing"), source or "flags") if wrapped else None
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise InvalidInput(f"{source or 'flags'}: 'flags' must be a mapping", "write flags: {my_flag: {rollout: 10}}")
    out = {}
    for key, spec in body.items():
        line = (lines or {}).get(str(key))
        where = f"{source}:{line}" if source and line else source
        out[str(key)] = parse_flag(str(key), spec, where, default_scheme)
    return out


def parse_flags_yaml(text: str, source: str = "flags.yaml") -> dict[str, Flag]:
    """Parse a ``flags.yaml``; errors name the file and line.

    The YAML is read by keel's bounded safe loader (:mod:`keel.core.yaml_safe`): an alias
    bomb, a recursive alias, an unknown tag or a 100,000-digit number is an InvalidInput.
    """
    from keel.core.yaml_safe import compose_yaml, construct_yaml

    loader = _loader()
    node = compose_yaml(text, source, loader, syntax="malformed YAML")
    doc = construct_yaml(node, source, loader, syntax="malformed YAML")
    return parse_flags(doc, source, _key_lines(node))


_LOADER: Any = None


def _loader() -> Any:
    """keel's safe loader where only true/false are booleans (YAML 1.2): a variant named
    ``off``, ``on``, ``yes`` or ``no`` stays a name."""
    global _LOADER
    if _LOADER is None:
        from keel.core.yaml_safe import SafeYamlLoader

        class Loader(SafeYamlLoader):
            pass

        resolvers = {}
        for first, entries in SafeYamlLoader.yaml_implicit_resolvers.items():
            kept = [(tag, rx) for tag, rx in entries if tag != "tag:yaml.org,2002:bool"]
            resolvers[first] = kept
        Loader.yaml_implicit_resolvers = resolvers
        Loader.add_implicit_resolver(
            "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
        )
        _LOADER = Loader
    return _LOADER


def _key_lines(node: Any) -> dict[str, int]:
    """``{flag key: line}`` from a composed YAML document."""
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return {}
    pairs = node.value
    for k, v in pairs:
        if k.value == "flags" and isinstance(v, yaml.MappingNode):
            pairs = v.value
            break
    return {k.value: k.start_mark.line + 1 for k, _ in pairs if isinstance(k, yaml.ScalarNode)}


def dump_flag(flag: Flag) -> dict[str, Any]:
    """The YAML/JSON form of one flag."""
    return flag.to_data()


def dump_flags(flags: Mapping[str, Flag]) -> dict[str, Any]:
    """The YAML/JSON form of a flag set."""
    return {"flags": {k: flags[k].to_data() for k in sorted(flags)}}


_PROMPT_REF = re.compile(r"^(?:prompt:)?([A-Za-z0-9][A-Za-z0-9_.\-/ ]*)@(v?\d+\.\d+(?:\.\d+)?)$")


def prompt_references(flag: Flag) -> list[tuple[str, str]]:
    """``(name, version)`` of every payload that references a prompt version (``chat@2.0.0``,
    ``prompt:chat@2.0.0``, or ``{prompt: chat@2.0.0}``)."""
    out = []
    for payload in flag.variants.values():
        texts = []
        if isinstance(payload, str):
            texts.append(payload)
        elif isinstance(payload, Mapping) and isinstance(payload.get("prompt"), str):
            texts.append(payload["prompt"])
        for text in texts:
            found = _PROMPT_REF.match(text.strip())
            if found:
                out.append((found.group(1), found.group(2)))
    return out


# -- evaluation -------------------------------------------------------------------------
def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _version(value: Any) -> SemVer | None:
    try:
        return SemVer.parse(str(value))
    except Exception:
        return None


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "eq": lambda a, b: a == b,
}


def _matcher(cond: Condition) -> Callable[[Mapping[str, Any]], bool]:
    attr, op, value = cond.attribute, cond.op, cond.value
    if op in ("eq", "ne"):
        want, want_text = value, _text(value)
        positive = op == "eq"

        def eq(ctx: Mapping[str, Any]) -> bool:
            got = ctx.get(attr, _MISSING)
            if got is _MISSING:
                return not positive
            return (got == want or _text(got) == want_text) is positive

        return eq
    if op in ("in", "not_in"):
        texts = frozenset(_text(v) for v in value)
        inside = op == "in"
        return lambda ctx: (attr in ctx and _text(ctx[attr]) in texts) is inside
    if op == "regex":
        search = compile_regex(value, f"flag rule on {attr!r}", attr)
        known: dict[str, bool] = {}  # answers for recent texts (plans, countries, versions repeat)

        def regex(ctx: Mapping[str, Any]) -> bool:
            if attr not in ctx:
                return False
            text = _text(ctx[attr])
            found = known.get(text)
            if found is None:
                found = search(text)
                if len(known) < 10_000 and len(text) <= 256:
                    known[text] = found
            return found

        return regex
    if op == "exists":
        return lambda ctx: (ctx.get(attr) is not None) is bool(value)
    if op.startswith("semver_"):
        ref = SemVer.parse(str(value))
        compare = _COMPARE[op[len("semver_") :]]
        seen: dict[Any, Any] = {}  # parsed context versions (few distinct values)

        def semver(ctx: Mapping[str, Any]) -> bool:
            raw = ctx.get(attr)
            if raw is None:
                return False
            if type(raw) is not str:
                got = _version(raw)
            else:
                got = seen.get(raw, _MISSING)
                if got is _MISSING:
                    got = _version(raw)
                    if len(seen) < 10_000:
                        seen[raw] = got
            return got is not None and compare(got, ref)

        return semver
    threshold = float(value)
    compare = _COMPARE[op]

    def numeric(ctx: Mapping[str, Any]) -> bool:
        got = _number(ctx.get(attr))
        return got is not None and compare(got, threshold)

    return numeric


def _all(matchers: list[Callable[[Mapping[str, Any]], bool]]) -> Callable[[Mapping[str, Any]], bool]:
    if not matchers:
        return lambda ctx: True
    if len(matchers) == 1:
        return matchers[0]
    return lambda ctx: all(m(ctx) for m in matchers)


Picker = Callable[[Mapping[str, Any]], str]
#: Called with the flag when a partial split meets a context without the flag's unit.
MissingUnit = Callable[[Flag], None]


def _ignore(flag: Flag) -> None:
    return None


def _served(ranges: list[tuple[int, str]], rest: str) -> set[str]:
    """The variants a split serves to some bucket (``ranges`` as in :func:`_split`)."""
    names, lower = set(), 0
    for upper, name in ranges:
        if upper > lower:
            names.add(name)
            lower = upper
    if lower < BUCKETS:
        names.add(rest)
    return names


def _split(flag: Flag, ranges: list[tuple[int, str]], rest: str, missing_unit: MissingUnit = _ignore) -> Picker:
    """Serve by bucket: ``ranges`` are (exclusive upper bucket, variant), ascending. A split
    that serves every bucket the same variant is that variant: it needs no unit."""
    served = _served(ranges, rest)
    if len(served) == 1:
        return _constant(served.pop())
    unit, bucket_of = flag.unit, bucketer(flag.scheme, flag.key, flag.salt)
    default = flag.default
    if len(ranges) == 1:
        upper, name = ranges[0]

        def one(ctx: Mapping[str, Any]) -> str:
            u = ctx.get(unit)
            if u is None:
                missing_unit(flag)
                return default
            return name if bucket_of(u) < upper else rest

        return one

    def many(ctx: Mapping[str, Any]) -> str:
        u = ctx.get(unit)
        if u is None:
            missing_unit(flag)
            return default
        b = bucket_of(u)
        for upper, name in ranges:
            if b < upper:
                return name
        return rest

    return many


def _ranges(distribution: tuple[tuple[str, float], ...]) -> list[tuple[int, str]]:
    out, total = [], 0.0
    for name, weight in distribution:
        total += weight
        out.append((min(BUCKETS, round(total * BUCKETS)), name))
    return out


def _bucket_ranges(rollout: float | None, dist: Any) -> tuple[list[tuple[int, str]], str]:
    """A rollout or a distribution as ``(ranges, rest)`` for :func:`_split`."""
    if rollout is not None:
        return [(round(rollout * BUCKETS / 100), "true")], "false"
    ranges = _ranges(dist)
    return ranges, ranges[-1][1]


def _needs_unit(serve: str | None, rollout: float | None, dist: Any) -> bool:
    """True if an action serves by bucket, and not the same variant to every bucket."""
    return serve is None and len(_served(*_bucket_ranges(rollout, dist))) > 1


def _action(
    flag: Flag, serve: str | None, rollout: float | None, dist: Any, missing_unit: MissingUnit = _ignore
) -> Picker:
    if serve is not None:
        return lambda ctx: serve
    return _split(flag, *_bucket_ranges(rollout, dist), missing_unit)


def _constant(name: str) -> Picker:
    return lambda ctx: name


@dataclass
class CompiledFlag:
    """A flag compiled for evaluation: ``pick(ctx) -> variant``, ``enabled(ctx) -> bool``,
    ``explain(ctx) -> (variant, reason)``; ``version`` is the flag set's version."""

    flag: Flag
    pick: Picker
    enabled: Callable[[Mapping[str, Any]], bool]
    explain: Callable[[Mapping[str, Any]], tuple[str, str]]
    values: dict[str, Any]
    version: str = ""


def compile_flag(flag: Flag, version: str = "", missing_unit: MissingUnit | None = None) -> CompiledFlag:
    """Precompute everything an evaluation needs (see the module docstring).

    ``missing_unit(flag)`` is called (by ``pick``/``enabled``, not ``explain``) each time a
    partial rollout or distribution meets a context without the flag's unit; the default
    is served then.
    """
    missing = missing_unit or _ignore
    default = flag.default
    on = frozenset({"true"} if flag.is_boolean else set(flag.variants) - {default})
    rules = [
        (_all([_matcher(c) for c in r.conditions]), _action(flag, r.serve, r.rollout, r.distribution, missing))
        for r in flag.rules
    ]
    rule_needs_unit = [_needs_unit(r.serve, r.rollout, r.distribution) for r in flag.rules]
    fall_needs_unit = False
    if flag.rollout is not None or flag.distribution is not None:
        fall: Picker = _action(flag, None, flag.rollout, flag.distribution, missing)
        fall_reason = "rollout" if flag.rollout is not None else "distribution"
        fall_needs_unit = _needs_unit(None, flag.rollout, flag.distribution)
    else:
        fall, fall_reason = (lambda ctx: default), "default"

    pick: Picker
    if not flag.enabled:
        pick = _constant(default)
    elif not rules:
        pick = fall
    else:

        def pick_rules(ctx: Mapping[str, Any]) -> str:
            for match, act in rules:
                if match(ctx):
                    return act(ctx)
            return fall(ctx)

        pick = pick_rules

    hot = flag.is_boolean and flag.enabled and not rules and flag.rollout is not None and fall_needs_unit
    if hot and flag.scheme == DEFAULT:
        # the hot case, inlined: bucket < threshold (a copy of the prefix's hash state per unit)
        unit, seed, from_bytes = flag.unit, blake2b_state(flag.key, flag.salt), int.from_bytes
        upper, off = round((flag.rollout or 0) * BUCKETS / 100), default == "true"

        def enabled(ctx: Mapping[str, Any]) -> bool:
            u = ctx.get(unit)
            if u is None:
                missing(flag)
                return off
            h = seed.copy()
            h.update(str(u).encode())
            return from_bytes(h.digest(), "big") % BUCKETS < upper

    elif hot:
        # the same for crc32 (flags stored before schemes were recorded)
        unit, prefix, crc = flag.unit, _crc32(f"{flag.key}.{flag.salt}.".encode()), _crc32
        upper, off = round((flag.rollout or 0) * BUCKETS / 100), default == "true"

        def enabled(ctx: Mapping[str, Any]) -> bool:
            u = ctx.get(unit)
            if u is None:
                missing(flag)
                return off
            return crc(str(u).encode(), prefix) % BUCKETS < upper

    elif not flag.enabled:
        state = default in on

        def enabled(ctx: Mapping[str, Any]) -> bool:
            return state

    else:

        def enabled(ctx: Mapping[str, Any]) -> bool:
            return pick(ctx) in on

    def explain(ctx: Mapping[str, Any]) -> tuple[str, str]:
        if not flag.enabled:
            return default, "killed"
        no_unit = ctx.get(flag.unit) is None
        for i, (match, act) in enumerate(rules):
            if match(ctx):
                if rule_needs_unit[i] and no_unit:
                    return default, f"no {flag.unit} in the context (rule {i + 1})"
                return act(ctx), f"rule {i + 1}"
        if fall_needs_unit and no_unit:
            return default, f"no {flag.unit} in the context"
        return fall(ctx), fall_reason

    return CompiledFlag(flag, pick, enabled, explain, dict(flag.variants), version)
