"""Scorers: functions that grade one model output against one dataset sample.

A scorer is anything callable as ``scorer(output, sample) -> score`` where
``output`` is the model's text and ``sample`` the dataset row (a dict). A
score is a number (bools count as 0/1); a scorer may also return a dict of
named scores (``{"precision": .., "recall": ..}``). Its name is its
``name`` attribute, else its function name. A scorer declares which way is better
with a ``direction`` attribute (``"higher"`` or ``"lower"``): :class:`Scorer` objects,
and so every built-in, declare ``"higher"``; a plain function may set
``fn.direction = "lower"``. ``keel.evaluate`` records the declaration on the run
(``keel.direction.<name>`` tags) and comparisons read it (:mod:`keel.core.directions`).

The built-ins here are pure and deterministic; the ones that need a model
(LLM-as-judge, embedding similarity) are built in :mod:`keel.sdk.scorers`.

A scorer that raises (or returns something other than a number) on a sample
leaves that score empty and the error is kept in the sample's
``scorer_errors`` cell. :func:`count_scorer_errors` counts them per scorer;
a scorer that failed on more than half of the samples it ran on is *failed*
(:attr:`ScorerErrors.failed`): its mean would describe a minority of the data,
so comparisons report it as failed and ``keel eval run`` exits non-zero.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from keel.core.directions import HIGHER, parse_direction
from keel.errors import InvalidInput

__all__ = [
    "SCORER_ERRORS",
    "Scorer",
    "ScorerErrors",
    "contains",
    "count_scorer_errors",
    "exact_match",
    "from_spec",
    "json_valid",
    "normalize_text",
    "regex",
    "scorer_direction",
    "scorer_name",
    "token_f1",
]


@dataclass(frozen=True)
class Scorer:
    """A named scoring function ``fn(output, sample) -> float | dict``."""

    name: str
    fn: Callable[[str, Mapping[str, Any]], Any]
    field: str | None = None  # the sample field holding the reference, if any
    spec: Mapping[str, Any] | None = None  # how to build it again (``keel reproduce``); None: custom
    direction: str = HIGHER  # which way is better: "higher" (every built-in) or "lower"

    def __call__(self, output: str, sample: Mapping[str, Any]) -> Any:
        return self.fn(output, sample)


def scorer_name(scorer: Any) -> str:
    """The name under which a scorer's results are stored."""
    name = getattr(scorer, "name", None) or getattr(scorer, "__name__", None)
    if not isinstance(name, str) or not name or name == "<lambda>":
        raise InvalidInput(f"scorer {scorer!r} has no name", "use a def function or set a .name attribute")
    return name


def scorer_direction(scorer: Any) -> str | None:
    """The direction a scorer declares (``higher``/``lower``), or None when it declares none."""
    declared = getattr(scorer, "direction", None)
    return None if declared is None else parse_direction(declared, scorer_name(scorer))


#: The samples-table column holding one sample's scorer errors: JSON ``{"scorer": "Type: message"}``.
SCORER_ERRORS = "scorer_errors"


@dataclass(frozen=True)
class ScorerErrors:
    """How often one scorer failed in one evaluation.

    ``samples`` counts the samples the scorer ran on (those the model answered);
    ``errors`` those on which it raised or returned no number. The scorer is
    :attr:`failed` when ``errors`` is more than half of ``samples``.
    """

    name: str
    errors: int
    samples: int
    first_error: str | None = None

    @property
    def failed(self) -> bool:
        """True when the scorer failed on more than half of the samples it ran on."""
        return self.errors * 2 > self.samples

    def summary(self) -> str:
        """``scorer 'faithfulness' failed on 40 of 40 samples: InvalidInput: ...`` (one line)."""
        first = f": {self.first_error}" if self.first_error else ""
        return f"scorer {self.name!r} failed on {self.errors} of {self.samples} samples{first}"


def count_scorer_errors(rows: Iterable[Mapping[str, Any]], names: Iterable[str] = ()) -> dict[str, ScorerErrors]:
    """Per scorer, its errors in a samples table's rows (every name in ``names``, and
    every scorer with an error). Rows whose ``output`` is empty (the model call failed)
    ran no scorer and are not counted."""
    counts = dict.fromkeys(names, 0)
    first: dict[str, str] = {}
    ran = 0
    for row in rows:
        if "output" in row and row["output"] is None:
            continue
        ran += 1
        cell = row.get(SCORER_ERRORS)
        if not cell:
            continue
        try:
            errors = json.loads(cell) if isinstance(cell, str) else cell
        except ValueError:  # a hand-made table's column of that name: not ours to count
            continue
        if not isinstance(errors, Mapping):
            continue
        for name, message in errors.items():
            counts[name] = counts.get(name, 0) + 1
            first.setdefault(name, str(message))
    return {name: ScorerErrors(name, count, ran, first.get(name)) for name, count in counts.items()}


_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_text(text: Any) -> str:
    """Lower case, no punctuation or articles, single spaces (SQuAD-style)."""
    value = unicodedata.normalize("NFKC", "" if text is None else str(text)).lower()
    value = _ARTICLES.sub(" ", value.translate(_PUNCT))
    return " ".join(value.split())


def _reference(sample: Mapping[str, Any], field: str) -> Any:
    if field not in sample:
        raise InvalidInput(
            f"the sample has no field {field!r} (it has {', '.join(sorted(sample)) or 'none'})",
            "name the reference field in the scorer, e.g. exact_match('answer')",
        )
    return sample[field]


def _references(sample: Mapping[str, Any], field: str) -> list[str]:
    value = _reference(sample, field)
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def exact_match(field: str = "expected", normalize: bool = True, name: str = "exact_match") -> Scorer:
    """1.0 if the output equals the sample's ``field`` (any of them, if a list), else 0.0.
    ``normalize`` ignores case, punctuation, articles and spacing."""

    def score(output: str, sample: Mapping[str, Any]) -> float:
        prepare = normalize_text if normalize else (lambda t: str(t).strip())
        got = prepare(output)
        return float(any(got == prepare(ref) for ref in _references(sample, field)))

    return Scorer(name, score, field, {"kind": "exact_match", "field": field, "normalize": normalize, "name": name})


def contains(field: str = "expected", case_sensitive: bool = False, name: str = "contains") -> Scorer:
    """1.0 if the sample's ``field`` (any of them, if a list) appears in the output."""

    def score(output: str, sample: Mapping[str, Any]) -> float:
        text = str(output) if case_sensitive else str(output).lower()
        refs = _references(sample, field)
        return float(any((ref if case_sensitive else ref.lower()) in text for ref in refs))

    spec = {"kind": "contains", "field": field, "case_sensitive": case_sensitive, "name": name}
    return Scorer(name, score, field, spec)


def regex(pattern: str, name: str = "regex", flags: int = 0) -> Scorer:
    """1.0 if ``pattern`` is found in the output."""
    try:
        compiled = re.compile(pattern, flags)
    except re.error as exc:
        raise InvalidInput(f"invalid regex {pattern!r}: {exc}", "fix the pattern") from None
    spec = {"kind": "regex", "pattern": pattern, "name": name, "flags": flags}
    return Scorer(name, lambda output, _sample: float(compiled.search(str(output)) is not None), None, spec)


def json_valid(required_keys: tuple[str, ...] = (), name: str = "json_valid") -> Scorer:
    """1.0 if the output parses as JSON (an object with ``required_keys``, when given)."""

    def score(output: str, _sample: Mapping[str, Any]) -> float:
        text = str(output).strip()
        if text.startswith("```"):  # a fenced block: ```json ... ```
            text = text.strip("`").removeprefix("json").strip()
        try:
            value = json.loads(text)
        except ValueError:
            return 0.0
        if required_keys:
            return float(isinstance(value, dict) and all(k in value for k in required_keys))
        return 1.0

    return Scorer(name, score, None, {"kind": "json_valid", "required_keys": list(required_keys), "name": name})


def token_f1(field: str = "expected", name: str = "token_f1") -> Scorer:
    """Token-overlap F1 between the output and the sample's ``field`` (best over a list)."""

    def f1(prediction: str, reference: str) -> float:
        got, want = normalize_text(prediction).split(), normalize_text(reference).split()
        if not got or not want:
            return float(got == want)
        common = sum((Counter(got) & Counter(want)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(got), common / len(want)
        return 2 * precision * recall / (precision + recall)

    def score(output: str, sample: Mapping[str, Any]) -> float:
        return max(f1(str(output), ref) for ref in _references(sample, field))

    return Scorer(name, score, field, {"kind": "token_f1", "field": field, "name": name})


_BUILDERS: dict[str, Callable[..., Scorer]] = {}


def from_spec(spec: Mapping[str, Any], extra: Mapping[str, Callable[..., Scorer]] | None = None) -> Scorer:
    """Build a scorer again from its ``spec`` (the inverse of ``Scorer.spec``)."""
    builders = {**_BUILDERS, **(extra or {})}
    kind = spec.get("kind")
    if kind not in builders:
        raise InvalidInput(f"unknown scorer kind {kind!r}", f"use one of {', '.join(sorted(builders))}")
    args = {k: v for k, v in spec.items() if k != "kind"}
    if kind == "json_valid" and "required_keys" in args:
        args["required_keys"] = tuple(args["required_keys"])
    try:
        return builders[str(kind)](**args)
    except TypeError as exc:
        raise InvalidInput(f"invalid arguments for scorer {kind!r}: {exc}", "check the scorer spec") from None


_BUILDERS.update(
    {"exact_match": exact_match, "contains": contains, "regex": regex, "json_valid": json_valid, "token_f1": token_f1}
)
