"""Aggregates over conversations: prices and cost, latency percentiles, one group's figures.

Prices are US dollars per million tokens, ``(prompt, completion)``.
:data:`DEFAULT_PRICES` holds indicative list prices of common models (check
your provider's current prices and pass your own table, or set them in
``.keel/config.toml`` under ``[conversations.prices]``). A model is priced by
its exact name, else by the longest listed name it starts with followed by
``-``, ``:``, ``@`` or ``.`` (``gpt-4o-2024-08-06`` -> ``gpt-4o``), else by the
part after the last ``/`` (``openai/gpt-4o``).

Percentiles interpolate linearly between the two nearest ranks (numpy's
default): with ``n`` sorted values the p-th percentile sits at position
``(n - 1) * p / 100``. The database returns only the values at the ranks
:func:`percentile_ranks` names, so no latency list ever reaches Python.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core.llm import DEFAULT_PRICES as LLM_PRICES
from keel.core.llm import find_price
from keel.errors import InvalidInput

__all__ = [
    "DEFAULT_PRICES",
    "GroupStats",
    "cost_of",
    "normalize_prices",
    "percentile",
    "percentile_from_ranks",
    "percentile_ranks",
    "price_for",
]

#: USD per 1M tokens (prompt, completion): the one price table keel has (:mod:`keel.core.llm`).
DEFAULT_PRICES: Mapping[str, tuple[float, float]] = LLM_PRICES


def normalize_prices(prices: Mapping[str, Any] | None) -> dict[str, tuple[float, float]]:
    """``{model: (prompt, completion)}`` from tuples/lists or ``{"prompt": .., "completion": ..}`` dicts."""
    out: dict[str, tuple[float, float]] = {}
    for model, price in (prices or {}).items():
        if isinstance(price, Mapping):
            pair: Any = (price.get("prompt", price.get("input")), price.get("completion", price.get("output")))
        else:
            pair = price
        try:
            prompt, completion = (float(p) for p in pair)
        except (TypeError, ValueError):
            raise InvalidInput(
                f"invalid price for model {model!r}: {price!r}",
                "prices are USD per 1M tokens: {'gpt-4': {'prompt': 30, 'completion': 60}} or (30, 60)",
            ) from None
        if not (math.isfinite(prompt) and math.isfinite(completion)) or prompt < 0 or completion < 0:
            raise InvalidInput(f"invalid price for model {model!r}: {price!r}", "prices are numbers >= 0")
        out[str(model)] = (prompt, completion)
    return out


def price_for(model: str | None, prices: Mapping[str, tuple[float, float]]) -> tuple[float, float] | None:
    """The ``(prompt, completion)`` price of ``model`` in ``prices``, or None (see :func:`find_price`)."""
    return find_price(model, prices)


def cost_of(prompt_tokens: int | None, completion_tokens: int | None, price: tuple[float, float]) -> float:
    """Dollars for the tokens at ``price`` (USD per 1M tokens)."""
    return ((prompt_tokens or 0) * price[0] + (completion_tokens or 0) * price[1]) / 1_000_000


def percentile_ranks(n: int, pct: int) -> tuple[int, int]:
    """The 0-based ranks ``(lo, hi)`` whose values the ``pct``-th percentile of ``n`` values interpolates."""
    scaled = (n - 1) * pct
    return scaled // 100, (scaled + 99) // 100


def percentile_from_ranks(n: int, pct: int, values: Mapping[int, float]) -> float | None:
    """The ``pct``-th percentile given the values at the ranks of :func:`percentile_ranks`."""
    if n <= 0:
        return None
    lo, hi = percentile_ranks(n, pct)
    low, high = values[lo], values[hi]
    fraction = ((n - 1) * pct % 100) / 100
    return low + (high - low) * fraction


def percentile(values: Sequence[float], pct: int) -> float | None:
    """The ``pct``-th percentile of ``values`` (linear interpolation), None if empty."""
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return None
    lo, hi = percentile_ranks(n, pct)
    return percentile_from_ranks(n, pct, {lo: ordered[lo], hi: ordered[hi]})


@dataclass
class GroupStats:
    """The figures of one group of conversations (e.g. one prompt version)."""

    group: dict[str, Any]
    count: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    score_sum: float = 0.0
    score_count: int = 0
    latency_sum: float = 0.0
    latency_count: int = 0
    latency_p50: float | None = None
    latency_p95: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0  # every token, with those logged only as a total
    unsplit_tokens: int = 0  # logged only as a total: no prompt/completion split, so not in ``cost``
    cost: float = 0.0
    unpriced_models: list[str] = field(default_factory=list)
    first_at: int | None = None
    last_at: int | None = None

    @property
    def thumbs_up_rate(self) -> float | None:
        """Thumbs up / conversations with a thumb (None when none has one)."""
        rated = self.thumbs_up + self.thumbs_down
        return self.thumbs_up / rated if rated else None

    @property
    def avg_score(self) -> float | None:
        """Mean feedback score (None when none has a score)."""
        return self.score_sum / self.score_count if self.score_count else None

    @property
    def latency_avg(self) -> float | None:
        """Mean latency in ms."""
        return self.latency_sum / self.latency_count if self.latency_count else None

    @property
    def cost_per_conversation(self) -> float | None:
        """Mean cost in dollars (over every conversation of the group)."""
        return self.cost / self.count if self.count else None

    def add(
        self,
        model: str | None,
        count: int,
        ups: int,
        downs: int,
        score_sum: float,
        score_count: int,
        latency_sum: float,
        latency_count: int,
        prompt_tokens: int,
        completion_tokens: int,
        first_at: int,
        last_at: int,
        prices: Mapping[str, tuple[float, float]],
        total_tokens: int = 0,
        unsplit_tokens: int = 0,
    ) -> None:
        """Fold in the sums of the group's conversations with one model (``total_tokens``:
        all their tokens; ``unsplit_tokens``: those logged only as a total, which cannot be priced)."""
        self.count += count
        self.thumbs_up += ups
        self.thumbs_down += downs
        self.score_sum += score_sum
        self.score_count += score_count
        self.latency_sum += latency_sum
        self.latency_count += latency_count
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.total_tokens += total_tokens or prompt_tokens + completion_tokens + unsplit_tokens
        self.unsplit_tokens += unsplit_tokens
        self.first_at = first_at if self.first_at is None else min(self.first_at, first_at)
        self.last_at = last_at if self.last_at is None else max(self.last_at, last_at)
        if prompt_tokens or completion_tokens:
            price = price_for(model, prices)
            if price is None:
                self.unpriced_models.append(model or "(no model)")
            else:
                self.cost += cost_of(prompt_tokens, completion_tokens, price)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            **self.group,
            "count": self.count,
            "thumbs_up": self.thumbs_up,
            "thumbs_down": self.thumbs_down,
            "thumbs_up_rate": self.thumbs_up_rate,
            "avg_score": self.avg_score,
            "latency_avg_ms": self.latency_avg,
            "latency_p50_ms": self.latency_p50,
            "latency_p95_ms": self.latency_p95,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "unsplit_tokens": self.unsplit_tokens,
            "cost_usd": self.cost,
            "cost_per_conversation_usd": self.cost_per_conversation,
            "unpriced_models": sorted(set(self.unpriced_models)),
            "first_at": self.first_at,
            "last_at": self.last_at,
        }
