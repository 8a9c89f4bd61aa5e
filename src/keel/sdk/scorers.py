"""``keel.scorers``: built-in scorers for :func:`keel.evaluate`.

::

    scorers = [keel.scorers.exact_match("answer"), keel.scorers.token_f1("answer"),
               keel.scorers.llm_judge("faithfulness", judge_prompt="judge@1.0.0"), my_scorer]

A custom scorer is a plain function ``def my_scorer(output, sample) -> float``
(or a dict of named floats); its name is the function's name.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Mapping
from typing import Any

from keel.core import scorers as _core
from keel.core.scorers import Scorer, contains, exact_match, json_valid, normalize_text, regex, scorer_name, token_f1
from keel.errors import InvalidInput

__all__ = [
    "Scorer",
    "contains",
    "embedding_similarity",
    "exact_match",
    "from_spec",
    "json_valid",
    "llm_judge",
    "normalize_text",
    "regex",
    "scorer_name",
    "token_f1",
]

#: The client of the evaluation in progress (a judge without its own client uses it).
current_client: contextvars.ContextVar[Any] = contextvars.ContextVar("keel_eval_client", default=None)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def embedding_similarity(field: str = "expected", embedder: Any = None, name: str = "embedding_similarity") -> Scorer:
    """Cosine similarity of the output's and the reference's embeddings (0..1 for the
    built-in hashing embedder). ``embedder``: anything with ``embed(texts) -> array``
    (default: keel's deterministic hashing embedder, 384 dims)."""
    from keel.core.embedders import HashingEmbedder

    model = embedder or HashingEmbedder()

    def score(output: str, sample: Mapping[str, Any]) -> float:
        if field not in sample:
            raise InvalidInput(f"the sample has no field {field!r}", f"name the reference field: {name}('answer')")
        vectors = model.embed([str(output), str(sample[field])])
        a, b = vectors[0], vectors[1]
        norm = float((a @ a) ** 0.5 * (b @ b) ** 0.5)
        return float(a @ b) / norm if norm else 0.0

    spec = {"kind": "embedding_similarity", "field": field, "name": name} if embedder is None else None
    return Scorer(name, score, field, spec)


def llm_judge(
    name: str,
    judge_prompt: str,
    client: Any = None,
    model: str | None = None,
    scale: float | None = None,
    temperature: float = 0.0,
) -> Scorer:
    """An LLM-as-judge scorer. ``judge_prompt`` is a registered, versioned prompt
    (``"judge@1.0.0"``) rendered with the sample's fields plus ``output``; the first
    number in the judge's reply is the score, divided by ``scale`` when given
    (``scale=5`` for a 1-5 rubric). ``client``/``model`` default to the evaluation's."""

    def score(output: str, sample: Mapping[str, Any]) -> float:
        from keel.sdk import prompts

        prompt = prompts.load(judge_prompt)
        variables = {k: v for k, v in sample.items() if k in prompt.variables}
        variables["output"] = output
        missing = [v for v in prompt.variables if v not in variables]
        if missing:
            raise InvalidInput(
                f"judge prompt {prompt.ref} needs {', '.join(missing)}, which the sample lacks",
                "add the fields to the dataset or change the judge prompt",
            )
        rendered = prompt.render(**variables)
        messages = rendered if isinstance(rendered, list) else [{"role": "user", "content": rendered}]
        judge = client or current_client.get()
        if judge is None:
            raise InvalidInput(f"judge {name!r} has no client", "pass client= to llm_judge or to keel.evaluate")
        response = judge.chat.completions.create(
            model=model or prompt.model or "gpt-4o-mini", messages=messages, temperature=temperature
        )
        reply = response.choices[0].message.content or ""
        found = _NUMBER.search(reply)
        if found is None:
            raise InvalidInput(
                f"judge {name!r} gave no score: {reply[:80]!r}", "make the judge prompt ask for a number"
            )
        value = float(found.group())
        return value / scale if scale else value

    spec = None
    if client is None:
        spec = {"kind": "llm_judge", "name": name, "judge_prompt": judge_prompt, "model": model, "scale": scale,
                "temperature": temperature}  # fmt: skip
    return Scorer(name, score, None, spec)


def from_spec(spec: Mapping[str, Any]) -> Scorer:
    """A built-in scorer from its recorded spec (what ``keel reproduce`` uses)."""
    return _core.from_spec(spec, {"embedding_similarity": embedding_similarity, "llm_judge": llm_judge})
