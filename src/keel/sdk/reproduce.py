"""``keel.reproduce``: run an evaluation again from what its run recorded, and say what differs.

It re-creates the run's inputs from its ``eval_spec``: the prompt version
(from the registry), the dataset (re-read and checked against the recorded
content hash), the model and its parameters, the built-in scorers; it
checks the code commit; then it re-executes the evaluation as a new run
tagged ``keel.reproduces=<run>``:

- by default in *replay* mode from the original run's recordings (no network):
  any difference means keel, the prompt, the data or a scorer changed. Replay is
  exact call by call: samples that send the same request (a dataset with repeated
  questions at a temperature above 0) each get back the answer recorded for them,
  since :func:`keel.evaluate` numbers each sample's calls in its own sequence
  (:func:`keel.llm.sequence`), whatever order its threads ran in;
- with ``live=True`` against the provider, to detect drift in the model.

The report is ``identical`` or the exact samples and metrics that differ.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core.comparison import SAMPLE_ID, SCORE_PREFIX
from keel.errors import InvalidInput, NotFound

__all__ = ["ReproduceReport", "reproduce"]

# Metrics that describe how a call went, not what it produced (they may differ when live).
_OPERATIONAL = ("latency", "cost", "tokens")


@dataclass
class ReproduceReport:
    """What :func:`reproduce` found."""

    run_id: str
    new_run_id: str
    live: bool
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """True when every sample's output, error and score and every quality metric match
        (latency, cost and token metrics are reported in ``notes``)."""
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "run_id": self.run_id,
            "new_run_id": self.new_run_id,
            "live": self.live,
            "identical": self.identical,
            "differences": list(self.differences),
            "notes": list(self.notes),
        }


def _default_client(spec: dict[str, Any], live: bool, base_url: str | None, api_key: str | None) -> Any:
    try:
        import openai
    except ImportError:
        raise InvalidInput("reproducing needs the openai package", "pip install 'keel[openai]'") from None
    if not live:  # replay never contacts the server
        return openai.OpenAI(base_url=base_url or "http://127.0.0.1:9/v1", api_key=api_key or "replay")
    url = base_url or os.environ.get("OPENAI_BASE_URL") or spec.get("base_url")
    key = api_key or os.environ.get("OPENAI_API_KEY") or "none"
    return openai.OpenAI(base_url=url, api_key=key)


def reproduce(
    run: Any,
    live: bool = False,
    client: Any = None,
    scorers: Sequence[Any] | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
) -> ReproduceReport:
    """Re-run an evaluation run (id, prefix or Run) and compare; see the module docstring.

    ``scorers`` supplies custom scorers by name (built-ins are rebuilt from the run).
    """
    from keel.sdk.client import Client
    from keel.sdk.evaluate import SPEC_TEXT, evaluate
    from keel.sdk.scorers import from_spec, scorer_name
    from keel.services.context import git_state

    client_api = Client(create=False)
    record = client_api.get_run(getattr(run, "id", None) or getattr(run, "run_id", None) or str(run))
    try:
        spec = json.loads(client_api.text(record.run_id, SPEC_TEXT))
    except NotFound:
        raise InvalidInput(
            f"run {record.run_id[:8]} is not an evaluation run (it has no {SPEC_TEXT})",
            "reproduce runs made by keel.evaluate or 'keel eval run'",
        ) from None
    notes: list[str] = []
    differences: list[str] = []
    # Code: the commit the run was made at vs now.
    then = (record.context.get("git") or {}).get("commit")
    now = git_state(os.getcwd()).get("commit")
    if then and now and then != now:
        notes.append(f"code commit differs: run {then[:10]}, now {now[:10]}")
    # Data: the same bytes?
    data_spec = spec["data"]
    if data_spec.get("path"):
        data: Any = data_spec["path"]
        from keel.sdk.evaluate import load_dataset

        _rows, current = load_dataset(data)
        if current["hash"] != data_spec["hash"]:
            differences.append(
                f"dataset {data} changed: recorded {data_spec['hash'][:12]}, now {current['hash'][:12]} "
                "(restore it with git checkout + keel data checkout)"
            )
    else:
        data = data_spec["inline"]
    # Scorers: built-ins rebuilt, custom ones by name from the caller.
    given = {scorer_name(s): s for s in scorers or ()}
    rebuilt = []
    for entry in spec["scorers"]:
        if entry.get("kind") == "custom":
            if entry["name"] in given:
                rebuilt.append(given[entry["name"]])
            else:
                notes.append(f"custom scorer {entry['name']!r} not given: its scores are not compared")
        else:
            rebuilt.append(from_spec(entry))
    if not rebuilt:
        raise InvalidInput("no scorer could be rebuilt", "pass the custom scorers: reproduce(run, scorers=[...])")
    model = spec["model"]
    result = evaluate(
        data,
        spec["prompt"],
        model,
        client or _default_client(spec, live, base_url, api_key),
        rebuilt,
        run_name=f"reproduce {record.name}"[:200],
        project=None,
        concurrency=int(spec.get("concurrency") or 8),
        mode="record" if live else "replay",
        tags={"keel.reproduces": record.run_id},
        replay_from=None if live else record.run_id,
        rag_index_version=spec.get("rag_index_version"),
        params={"reproduces": record.run_id},
    )
    original = client_api.table(record.run_id, "samples").to_dicts()
    differences.extend(_sample_differences(original, result.samples.to_dicts(), {scorer_name(s) for s in rebuilt}))
    metric_diffs, metric_notes = _metric_differences(
        record.metrics, result.metrics, {scorer_name(s) for s in rebuilt}, live
    )
    differences.extend(metric_diffs)
    notes.extend(metric_notes)
    return ReproduceReport(record.run_id, result.run_id, live, differences, notes)


def _sample_differences(old: list[dict[str, Any]], new: list[dict[str, Any]], scores: set[str]) -> list[str]:
    out = []
    before = {row[SAMPLE_ID]: row for row in old}
    after = {row[SAMPLE_ID]: row for row in new}
    for sample_id in before.keys() - after.keys():
        out.append(f"sample {sample_id}: missing from the new run")
    for sample_id in after.keys() - before.keys():
        out.append(f"sample {sample_id}: not in the original run")
    for sample_id in [s for s in before if s in after]:
        a, b = before[sample_id], after[sample_id]
        if (a.get("error") is None) != (b.get("error") is None):
            out.append(f"sample {sample_id}: error {a.get('error')!r} -> {b.get('error')!r}")
        elif a.get("output") != b.get("output"):
            out.append(f"sample {sample_id}: output {_short(a.get('output'))} -> {_short(b.get('output'))}")
        for column in a:
            if column.startswith(SCORE_PREFIX) and column[len(SCORE_PREFIX) :].split(".")[0] in scores:
                if not _same(a.get(column), b.get(column)):
                    out.append(f"sample {sample_id}: {column} {a.get(column)} -> {b.get(column)}")
    return out


def _metric_differences(
    old: dict[str, float], new: dict[str, float], scores: set[str], live: bool
) -> tuple[list[str], list[str]]:
    """``(differences, notes)``: quality metrics must match; operational ones (latency, cost,
    tokens) are only noted: they differ live, and on replay of a run recorded before keel
    numbered repeated calls (its repeated requests replay one recording's latency)."""
    differences, notes = [], []
    for key, value in old.items():
        if key not in new or _same(value, new[key]):
            continue
        line = f"metric {key}: {value:.6g} -> {new[key]:.6g}"
        if any(word in key for word in _OPERATIONAL):
            if not live:
                notes.append(line)
        elif key.split("_ci_")[0].split(".")[0] in scores or key in ("samples", "failed_samples"):
            differences.append(line)
    return differences, notes


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def _short(text: Any) -> str:
    value = repr(text)
    return value if len(value) <= 60 else value[:57] + "..."
