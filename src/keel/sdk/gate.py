"""``keel.gate``: block a change whose evaluation is significantly worse than production's.

::

    result = keel.gate("3f2a9c1e", baseline="production", metric="exact_match", max_drop=0.02)
    if not result.passed:
        print(result.to_markdown())      # the pull-request comment

The candidate is an evaluation run (id or prefix), or a prompt reference
(``"calc@1.0.1"``): then the latest finished evaluation of that version on the
baseline's dataset and model is used, and when there is none, it is evaluated
now with the baseline run's recorded spec (its data, model, scorers and server;
``mode="auto"`` replays what was recorded). See :mod:`keel.services.gate` for how
the baseline is found and when the gate fails.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from keel.core.entities import EntityRef, RunRecord
from keel.errors import InvalidInput, NotFound
from keel.sdk.session import Session, get_session
from keel.services.gate import GateResult, find_baseline, gate_runs, regression_data, require_metric, run_prompt

__all__ = ["GateResult", "gate"]


def gate(
    candidate: Any,
    baseline: str = "production",
    metric: str = "exact_match",
    max_drop: float = 0.0,
    alpha: float = 0.05,
    base_url: str | None = None,
    mode: str = "auto",
) -> GateResult:
    """Compare ``candidate`` with the evaluation of what ``baseline`` points at; see the module docstring.

    Args:
        candidate: an evaluation run (id, prefix, or a Run / EvalResult), or a prompt
            reference ``"name@version"`` (or ``"name@alias"``) to evaluate on the baseline's dataset.
        baseline: an alias or version of the candidate's prompt (``"production"``), ``"name@alias"``,
            ``"model:name@alias"``, or ``"run:RUN_ID"`` for a given run.
        metric: the score to gate on (a scorer's name, e.g. ``exact_match``).
        max_drop: the drop (in the metric's units) tolerated even when significant.
        alpha: the significance level.
        base_url: the OpenAI-compatible server for evaluating a prompt candidate (default: the
            baseline run's, or ``OPENAI_BASE_URL``).
        mode: ``auto``, ``record`` or ``replay`` for evaluating a prompt candidate.

    Returns:
        A :class:`~keel.services.gate.GateResult`: ``passed``, ``regression``, ``reason()``,
        ``to_markdown()`` and ``to_dict()``.
    """
    session = get_session()
    session.writer.flush()
    tracking = session.service
    text = _run_id(candidate)
    if "@" in text:
        return _gate_prompt(session, text, baseline, metric, max_drop, alpha, base_url, mode)
    try:
        record = tracking.get_run(text)
    except NotFound:
        raise InvalidInput(
            f"no run {text!r} to gate", "give an evaluation run id (keel runs list) or a prompt: NAME@VERSION"
        ) from None
    require_metric(tracking, record, metric)
    chosen, target, note = find_baseline(
        tracking, session.prompts, session.models, baseline, metric, run_prompt(tracking, record),
        _dataset(record), exclude=(record.run_id,),
    )  # fmt: skip
    result = gate_runs(
        tracking, record.run_id, chosen, metric, baseline_ref=baseline, baseline_target=target,
        baseline_note=note, max_drop=max_drop, alpha=alpha, declared=_directions(session),
    )  # fmt: skip
    return _announce(session, record.project, result)


def _directions(session: Session) -> Any:
    from keel.sdk.directions import service

    return service(session)


def _gate_prompt(
    session: Session, ref: str, baseline: str, metric: str, max_drop: float, alpha: float,
    base_url: str | None, mode: str,
) -> GateResult:  # fmt: skip
    tracking = session.service
    name, _, selector = ref.removeprefix("prompt:").rpartition("@")
    entity = EntityRef("prompt", name, session.prompts.get(name, selector).version)
    chosen, target, note = find_baseline(tracking, session.prompts, session.models, baseline, metric, entity)
    run = _existing_evaluation(tracking, entity, chosen, metric)
    notes: tuple[str, ...] = ()
    if run is None:
        run = _evaluate_like(chosen, f"{entity.id}@{entity.version}", base_url, mode)
        notes = (f"the candidate {entity} was evaluated now, as the baseline run was (run `{run[:8]}`)",)
    result = gate_runs(
        tracking, run, chosen, metric, baseline_ref=baseline, baseline_target=target, baseline_note=note,
        max_drop=max_drop, alpha=alpha, declared=_directions(session),
    )  # fmt: skip
    if notes:
        from dataclasses import replace

        result = replace(result, notes=notes + result.notes)
    return _announce(session, tracking.get_run(run).project, result)


def _announce(session: Session, project: str, result: GateResult) -> GateResult:
    """Record ``regression.detected`` when the gate failed (a failure to record is logged, never raised)."""
    if result.regression:
        try:
            from keel.sdk.hooks import service

            service().regression_detected(project, result.candidate, result.candidate_name, regression_data(result))
        except Exception as exc:  # noqa: BLE001 - the verdict stands; only the webhook event is lost
            logging.getLogger("keel").warning("keel: could not record regression.detected: %s", exc)
    return result


def _existing_evaluation(tracking: Any, entity: EntityRef, baseline: RunRecord, metric: str) -> str | None:
    """The latest finished evaluation of ``entity`` on the baseline's dataset and model, if any."""
    ids = [i for i in tracking.used_by(entity) if i != baseline.run_id]
    if not ids:
        return None
    same = [
        r for r in tracking.get_runs(ids)
        if r.status == "finished" and r.tags.get("keel.eval") and metric in r.metrics
        and r.params.get("dataset_hash") == baseline.params.get("dataset_hash")
        and r.params.get("model") == baseline.params.get("model")
    ]  # fmt: skip
    if not same:
        return None
    return max(same, key=lambda r: (r.end_time or 0, r.start_time)).run_id


def _evaluate_like(baseline: RunRecord, prompt: str, base_url: str | None, mode: str) -> str:
    """Evaluate ``prompt`` with the baseline run's recorded spec; the new run's id."""
    from keel.sdk.client import Client
    from keel.sdk.evaluate import SPEC_TEXT, evaluate, load_dataset
    from keel.sdk.scorers import from_spec

    try:
        spec = json.loads(Client(create=False).text(baseline.run_id, SPEC_TEXT))
    except NotFound:
        raise InvalidInput(
            f"baseline run {baseline.run_id[:8]} has no recorded eval spec, so the prompt cannot be evaluated like it",
            "evaluate the candidate with 'keel eval run' and gate that run",
        ) from None
    custom = [s["name"] for s in spec["scorers"] if s.get("kind") == "custom"]
    if custom:
        raise InvalidInput(
            f"baseline run {baseline.run_id[:8]} used the custom scorer {custom[0]!r}, which keel cannot rebuild",
            "evaluate the candidate with keel.evaluate and the same scorers, then gate that run",
        )
    data_spec = spec["data"]
    data: Any = data_spec.get("path") or data_spec.get("inline")
    if data_spec.get("path"):
        _rows, current = load_dataset(data)
        if current["hash"] != data_spec["hash"]:
            raise InvalidInput(
                f"dataset {data} changed since the baseline run ({data_spec['hash'][:12]}, now {current['hash'][:12]})",
                "restore it (git checkout / keel data checkout) or gate a run you evaluated",
            )
    try:
        import openai
    except ImportError:
        raise InvalidInput("evaluating a prompt needs the openai package", "pip install 'keel[openai]'") from None
    url = base_url or os.environ.get("OPENAI_BASE_URL") or spec.get("base_url")
    client = openai.OpenAI(base_url=url, api_key=os.environ.get("OPENAI_API_KEY") or "none")
    result = evaluate(
        data, prompt, spec["model"], client, [from_spec(s) for s in spec["scorers"]], project=baseline.project,
        concurrency=int(spec.get("concurrency") or 8), mode=mode, tags={"keel.gate": baseline.run_id},
    )  # fmt: skip
    return result.run_id


def _dataset(record: RunRecord) -> str | None:
    value = record.params.get("dataset_hash")
    return value if isinstance(value, str) else None


def _run_id(run: Any) -> str:
    for attribute in ("run_id", "id"):
        value = getattr(run, attribute, None)
        if isinstance(value, str):
            return value
    return str(run)
