"""``keel.evaluate``: run a prompt x model over a dataset, score it, record everything.

::

    result = keel.evaluate(
        data="data/eval_set.jsonl", prompt="chat@1.3.0",
        model={"name": "gpt-4", "temperature": 0.7}, client=openai.OpenAI(),
        scorers=[keel.scorers.exact_match("answer"), my_scorer],
        run_name="prompt_v1.3_gpt4", concurrency=8, mode="auto")

One run per call, holding:

- params: the prompt reference, the model and its parameters, the dataset
  (path, content hash, rows), the scorers, the replay mode;
- the ``samples`` table: ``sample_id``, ``input``, ``output``, ``error``,
  ``latency_ms``, ``cost``, ``prompt_tokens``, ``completion_tokens``,
  ``request_hash`` and one ``score.<scorer>`` column per score;
- metrics: each score's mean with ``<name>_ci_low``/``<name>_ci_high``
  (95%: Wilson for 0/1 scores, Student's t otherwise), ``latency_p50_ms``, ``latency_p95_ms``, ``cost_total``,
  ``cost_per_query``, token totals, ``samples``, ``failed_samples``,
  ``scorer_errors``;
- lineage inputs: the prompt version, the dataset version, the model (a
  registry version when ``model`` names one), and the LLM calls' recordings;
- the text ``eval_spec`` (JSON): what ``keel reproduce`` needs to run it again.

Failures never stop the evaluation: a call that fails after its retries is a
failed sample (its error kept), a scorer that raises leaves that score empty
for that sample and is counted. A scorer that failed on more than half of the
samples it ran on is *failed* (``result.failed_scorers``): comparisons report
it as failed and ``keel eval run`` exits 1.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel.core.comparison import SAMPLE_ID, SAMPLES_TABLE, SCORE_PREFIX
from keel.core.directions import direction_tags
from keel.core.hashing import canonical_json, hash_bytes
from keel.core.scorers import SCORER_ERRORS, ScorerErrors, count_scorer_errors, scorer_direction, scorer_name
from keel.core.stats import mean_ci, percentile
from keel.core.table import Table
from keel.errors import InvalidInput, KeelError, NotFound

__all__ = ["SPEC_TEXT", "EvalResult", "default_run_name", "evaluate", "load_dataset"]

SPEC_TEXT = "eval_spec"  # run.log_text name of the spec keel reproduce reads
_RETRYABLE = ("APIConnectionError", "APITimeoutError", "RateLimitError", "InternalServerError", "Timeout")


@dataclass
class EvalResult:
    """What :func:`evaluate` produced.

    ``failed`` counts the samples whose model call failed; ``scorer_errors`` all
    scorer errors; ``errors_by_scorer`` has each scorer's errors, the samples it
    ran on and its first error; ``failed_scorers`` the scorers that failed on
    more than half of them.
    """

    run_id: str
    name: str
    metrics: dict[str, float]
    samples: Table
    failed: int
    scorer_errors: int
    spec: dict[str, Any] = field(default_factory=dict)
    errors_by_scorer: dict[str, ScorerErrors] = field(default_factory=dict)

    @property
    def failed_scorers(self) -> list[ScorerErrors]:
        """The scorers that failed on more than half of the samples they ran on."""
        return [e for e in self.errors_by_scorer.values() if e.failed]

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v:.3g}" for k, v in self.metrics.items() if "_ci_" not in k)
        failed = "".join(f" FAILED {e.summary()}" for e in self.failed_scorers)
        return f"<EvalResult {self.name} {self.run_id[:8]} {shown}{failed}>"


# -- datasets ------------------------------------------------------------------------
def load_dataset(data: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows and a description (``path``, ``hash``, ``rows``) of a dataset: a ``.jsonl``
    / ``.json`` file (one object per line / a list of objects), a registered ``keel data``
    version ``"dataset:PATH@VERSION"`` (its oid or a prefix; without ``@``, the newest) read
    from the store (one made from an MLflow evaluation dataset, say), or a list of dicts."""
    if isinstance(data, str) and data.startswith(_VERSION_PREFIX):
        return _load_version(data)
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        if not path.is_file():
            raise NotFound(f"no dataset file {str(path)!r}", "check the path (keel data pull brings tracked data)")
        raw = path.read_bytes()
        rows = _parse_rows(raw, path)
        return rows, {"path": str(data), "hash": hash_bytes(raw), "rows": len(rows)}
    if isinstance(data, Iterable) and not isinstance(data, str | bytes | Mapping):
        rows = list(data)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise InvalidInput(f"dataset row {i} is not a mapping", "give a list of dicts")
        rows = [dict(r) for r in rows]
        digest = hash_bytes(canonical_json(rows))
        return rows, {"path": None, "hash": digest, "rows": len(rows)}
    raise InvalidInput(f"cannot read a dataset from {type(data).__name__}", "give a .jsonl path or a list of dicts")


_VERSION_PREFIX = "dataset:"


def _load_version(ref: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A registered dataset version's rows; its description names the exact version
    (``dataset:PATH@OID``), which the run records as its input."""
    from keel.sdk.session import get_session

    path, _, version = ref[len(_VERSION_PREFIX) :].partition("@")
    if not path:
        raise InvalidInput(f"invalid dataset reference {ref!r}", "write dataset:PATH@VERSION")
    oid, raw = get_session().datasets.content(path, version or None)
    rows = _parse_rows(raw, Path(path))
    return rows, {"path": f"{_VERSION_PREFIX}{path}@{oid}", "hash": oid, "rows": len(rows)}


def _parse_rows(raw: bytes, path: Path) -> list[dict[str, Any]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text", "save the dataset as UTF-8") from None
    if path.suffix.lower() == ".json":
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"{path} is not valid JSON: {exc}", "fix the file") from None
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise InvalidInput(f"{path} must hold a list of objects", "one object per sample")
        return value
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InvalidInput(f"{path} line {number} is not valid JSON: {exc}", "one JSON object per line") from None
        if not isinstance(row, dict):
            raise InvalidInput(f"{path} line {number} is not a JSON object", "one JSON object per line")
        rows.append(row)
    if not rows:
        raise InvalidInput(f"{path} has no samples", "add one JSON object per line")
    return rows


def _sample_id(row: Mapping[str, Any], index: int) -> str:
    for key in ("id", "sample_id"):
        if key in row and row[key] is not None:
            return str(row[key])
    return str(index)


# -- the harness ----------------------------------------------------------------------
def _model_spec(model: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(model, str):
        return model, {}
    if isinstance(model, Mapping) and isinstance(model.get("name"), str):
        return model["name"], {k: v for k, v in model.items() if k != "name"}
    raise InvalidInput(f"invalid model {model!r}", 'give a name or {"name": "gpt-4", "temperature": 0.7}')


def _check_variables(rows: Sequence[Mapping[str, Any]], variables: Sequence[str], prompt_ref: str) -> None:
    for i, row in enumerate(rows):
        missing = [v for v in variables if v not in row]
        if missing:
            raise InvalidInput(
                f"dataset row {i} ({_sample_id(row, i)}) has no field {missing[0]!r}, "
                f"which prompt {prompt_ref} needs (it needs {', '.join(variables)})",
                "add the field to every row, or use a prompt whose variables the data has",
            )


def _messages(rendered: Any) -> list[dict[str, Any]]:
    return rendered if isinstance(rendered, list) else [{"role": "user", "content": rendered}]


def _is_retryable(exc: BaseException) -> bool:
    return type(exc).__name__ in _RETRYABLE or isinstance(exc, TimeoutError | ConnectionError)


def evaluate(
    data: Any,
    prompt: Any,
    model: Any,
    client: Any,
    scorers: Sequence[Any],
    run_name: str | None = None,
    project: str | None = None,
    concurrency: int = 8,
    mode: str | None = "auto",
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    retries: int = 2,
    backoff: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
    replay_from: str | None = None,
    rag_index_version: str | None = None,
) -> EvalResult:
    """Evaluate ``prompt`` x ``model`` on ``data`` with ``scorers``; one new run records it all.

    Args:
        data: a ``.jsonl``/``.json`` dataset (its content hash is recorded) or a list of dicts.
        prompt: a registered prompt reference (``"chat@1.3.0"``) or a loaded ``Prompt``;
            its variables are filled from each row's fields.
        model: a model name or ``{"name": ..., "temperature": ..., ...}`` (the rest are call arguments).
        client: an OpenAI-compatible client (``openai.OpenAI(base_url=...)``); it is wrapped with
            :func:`keel.llm.wrap` in ``mode`` (``record``, ``replay`` or ``auto``).
        scorers: built-ins from ``keel.scorers`` and/or plain functions ``f(output, sample)``.
        concurrency: calls in flight at once.
        retries, backoff: retries of a failed call (connection errors, timeouts, 429, 5xx),
            waiting ``backoff * 2**attempt`` seconds; then the sample is recorded as failed.
        progress: called as ``progress(done, total)`` after each sample.
        replay_from: replay only this run's (or imported cassette's) recordings.
    """
    from keel.sdk import llm, prompts
    from keel.sdk.fluent import start_run
    from keel.sdk.scorers import current_client

    if not scorers:
        raise InvalidInput("an evaluation needs at least one scorer", "scorers=[keel.scorers.exact_match('answer')]")
    names = [scorer_name(s) for s in scorers]
    if len(set(names)) != len(names):
        raise InvalidInput(f"scorer names repeat: {names}", "give each scorer its own name=")
    if concurrency < 1:
        raise InvalidInput("concurrency must be at least 1", "concurrency=8")
    rows, dataset = load_dataset(data)
    model_name, call_args = _model_spec(model)
    loaded = prompts.load(prompt) if isinstance(prompt, str) else prompt
    prompt_ref = f"{loaded.name}@{loaded.version}"
    _check_variables(rows, loaded.variables, prompt_ref)
    wrapped = llm.wrap(client, mode=mode, prompt=loaded, replay_from=replay_from, rag_index_version=rag_index_version)
    specs = [getattr(s, "spec", None) for s in scorers]
    spec = {
        "data": {**dataset, "inline": rows} if dataset["path"] is None else dataset,
        "prompt": prompt_ref,
        "model": {"name": model_name, **call_args},
        "scorers": [
            dict(s) if s is not None else {"kind": "custom", "name": n} for s, n in zip(specs, names, strict=True)
        ],
        "mode": mode,
        "concurrency": concurrency,
        "base_url": str(getattr(client, "base_url", "") or "") or None,
        "rag_index_version": rag_index_version,
    }
    run_params = {
        "prompt": prompt_ref,
        "model": model_name,
        **{f"model_params.{k}": v for k, v in call_args.items()},
        "dataset": dataset["path"] or f"inline:{dataset['hash'][:12]}",
        "dataset_hash": dataset["hash"],
        "dataset_rows": dataset["rows"],
        "scorers": ",".join(names),
        "mode": mode or "record",
        **dict(params or {}),
    }
    declared = {n: d for n, s in zip(names, scorers, strict=True) if (d := scorer_direction(s)) is not None}
    run_tags = {"keel.eval": "1", **direction_tags(declared), **dict(tags or {})}  # directions: issue 27
    if run_name is None:
        run_name = default_run_name(loaded, model_name)
    with start_run(project=project, name=run_name, tags=run_tags) as run:
        run.log_params(run_params)
        _record_inputs(run, dataset, model_name)
        _record_kb(run, rag_index_version)
        token = current_client.set(wrapped)
        try:
            results = _run_samples(
                rows, loaded, wrapped, model_name, call_args, scorers, names, concurrency, retries, backoff, progress
            )
        finally:
            current_client.reset(token)
        table = _table(results, names)
        metrics, failed, scorer_errors = _metrics(results, table)
        run.log_table(SAMPLES_TABLE, columns=list(table.columns), rows=[list(r) for r in table.rows])
        run.log_metrics(metrics)
        run.log_text(SPEC_TEXT, json.dumps(spec, indent=2, sort_keys=True))
        llm.flush()
    announce_finished(run, metrics)  # the eval.finished webhook event
    errors = count_scorer_errors(table, names)
    return EvalResult(run.id, run.name, metrics, table, failed, scorer_errors, spec, errors)


def announce_finished(run: Any, metrics: Mapping[str, float]) -> None:
    """Record the ``eval.finished`` event (webhooks); a failure is logged, never raised."""
    try:
        from keel.sdk.hooks import service

        service().eval_finished(run.project, run.id, run.name, dict(metrics))
    except Exception as exc:  # noqa: BLE001 - the evaluation is done and recorded: only the event is lost
        logging.getLogger("keel").warning("keel: could not record eval.finished for run %s: %s", run.id, exc)


def default_run_name(prompt: Any, model_name: str, details: Mapping[str, Any] | None = None) -> str:
    """``chat_v1.3.0_gpt-4`` for a loaded prompt and a model, then ``_key-value`` for each of
    ``details`` (what tells apart runs of a grid), as a valid run name."""
    name = f"{prompt.name}_v{prompt.version}_{model_name}" + "".join(f"_{k}-{v}" for k, v in (details or {}).items())
    return re.sub(r"[^A-Za-z0-9._\-/ ]", "-", name)[:200]


def _record_inputs(run: Any, dataset: Mapping[str, Any], model_name: str) -> None:
    from keel.core.entities import EntityRef

    path = dataset["path"]
    if isinstance(path, str) and path.startswith(_VERSION_PREFIX):  # a registered version, as read
        run.log_input(EntityRef.parse(path), role="eval")
        run.log_input(EntityRef("llm", model_name, ""), role="model")
        return
    use_dataset = getattr(run, "use_dataset", None)
    recorded = False
    if path is not None and use_dataset is not None:
        try:
            use_dataset(path)
            recorded = True
        except KeelError:  # not tracked by keel data: record the content hash instead
            recorded = False
    if not recorded:
        run.log_input(EntityRef("dataset", str(path or "inline"), dataset["hash"]), role="eval")
    run.log_input(EntityRef("llm", model_name, ""), role="model")


def _record_kb(run: Any, rag_index_version: str | None) -> None:
    """``rag_index_version="support-docs@v2"`` names a keel knowledge-base version: a run input."""
    from keel.core.entities import EntityRef

    if rag_index_version and "@" in rag_index_version:
        name, _, version = rag_index_version.partition("@")
        run.log_input(EntityRef("kb", name, version), role="retrieval")


@dataclass
class _Sample:
    sample_id: str
    inputs: dict[str, Any]
    output: str | None = None
    error: str | None = None
    latency_ms: float | None = None
    cost: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    request_hash: str | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    scorer_errors: dict[str, str] = field(default_factory=dict)


def _run_samples(
    rows: Sequence[dict[str, Any]],
    prompt: Any,
    client: Any,
    model_name: str,
    call_args: Mapping[str, Any],
    scorers: Sequence[Any],
    names: Sequence[str],
    concurrency: int,
    retries: int,
    backoff: float,
    progress: Callable[[int, int], None] | None,
) -> list[_Sample]:
    from keel.sdk import llm

    done = 0
    lock = threading.Lock()

    def one(index: int) -> _Sample:
        nonlocal done
        row = rows[index]
        sample = _Sample(_sample_id(row, index), {v: row[v] for v in prompt.variables})
        messages = _messages(prompt.render(**sample.inputs))
        for attempt in range(retries + 1):
            try:
                response = client.chat.completions.create(model=model_name, messages=messages, **call_args)
                sample.output = response.choices[0].message.content or ""
                sample.error = None
                break
            except Exception as exc:  # noqa: BLE001 - recorded per sample, the run continues
                sample.error = f"{type(exc).__name__}: {exc}"[:500]
                if attempt < retries and _is_retryable(exc):
                    time.sleep(backoff * 2**attempt)
                    continue
                break
        info = llm.last_call()
        if info is not None and sample.output is not None:
            # Rounded as recordings store it, so a replay reproduces the metrics exactly.
            sample.latency_ms = None if info.latency_ms is None else round(info.latency_ms, 3)
            sample.cost = info.cost
            sample.prompt_tokens, sample.completion_tokens = info.tokens
            sample.request_hash = info.request_hash
        if sample.output is not None:
            for scorer, name in zip(scorers, names, strict=True):
                try:
                    value = scorer(sample.output, row)
                except Exception as exc:  # noqa: BLE001 - a scorer bug must not stop the run
                    sample.scores[name] = None
                    sample.scorer_errors[name] = f"{type(exc).__name__}: {exc}"[:300]
                    continue
                _store_score(sample, name, value)
        with lock:
            done += 1
            if progress is not None:
                progress(done, len(rows))
        return sample

    def sequenced(index: int) -> _Sample:
        # Each sample numbers its LLM calls on its own: samples asking the same thing replay
        # their own recordings, whatever order the threads made the calls in.
        with llm.sequence(f"sample:{_sample_id(rows[index], index)}"[:200]):
            return one(index)

    if concurrency == 1 or len(rows) == 1:
        return [sequenced(i) for i in range(len(rows))]
    # Worker threads start with an empty context: each sample runs in a copy of this one, so its
    # LLM calls are attributed to the eval run and a judge finds the evaluation's client.
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=min(concurrency, len(rows)), thread_name_prefix="keel-eval") as pool:
        return list(pool.map(lambda index: context.copy().run(sequenced, index), range(len(rows))))


def _store_score(sample: _Sample, name: str, value: Any) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _store_score(sample, f"{name}.{key}", item)
        return
    if isinstance(value, bool):
        value = float(value)
    if not isinstance(value, int | float):
        sample.scores[name] = None
        sample.scorer_errors[name] = f"returned {type(value).__name__}, not a number"
        return
    sample.scores[name] = float(value)


def _table(results: Sequence[_Sample], names: Sequence[str]) -> Table:
    score_names: dict[str, None] = {}
    for name in names:
        score_names[name] = None
    for sample in results:
        score_names.update(dict.fromkeys(sample.scores))
    columns = [SAMPLE_ID, "input", "output", "error", "latency_ms", "cost", "prompt_tokens", "completion_tokens",
               "request_hash", *(SCORE_PREFIX + n for n in score_names), SCORER_ERRORS]  # fmt: skip
    rows = []
    for s in results:
        rows.append(
            [s.sample_id, json.dumps(s.inputs, sort_keys=True, ensure_ascii=False), s.output, s.error,
             s.latency_ms, s.cost, s.prompt_tokens, s.completion_tokens, s.request_hash,
             *(s.scores.get(n) for n in score_names),
             json.dumps(s.scorer_errors, sort_keys=True) if s.scorer_errors else None]
        )  # fmt: skip
    return Table.build(columns, rows)


def _metrics(results: Sequence[_Sample], table: Table) -> tuple[dict[str, float], int, int]:
    metrics: dict[str, float] = {}
    for column in table.columns:
        if not column.startswith(SCORE_PREFIX):
            continue
        name = column[len(SCORE_PREFIX) :]
        values = [v for v in table.column(column) if isinstance(v, int | float)]
        if values:
            metrics[name] = sum(values) / len(values)
            low, high = mean_ci([v for v in values if math.isfinite(v)])  # Wilson or t: nominal coverage
            metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = low, high
    answered = [s for s in results if s.output is not None]
    latencies = [s.latency_ms for s in answered if s.latency_ms is not None]
    if latencies:
        metrics["latency_p50_ms"] = percentile(latencies, 50)
        metrics["latency_p95_ms"] = percentile(latencies, 95)
    costs = [s.cost for s in answered if s.cost is not None]
    if costs:
        metrics["cost_total"] = sum(costs)
        metrics["cost_per_query"] = sum(costs) / len(costs)
    for key in ("prompt_tokens", "completion_tokens"):
        counts = [getattr(s, key) for s in answered if getattr(s, key) is not None]
        if counts:
            metrics[key] = float(sum(counts))
    failed = sum(1 for s in results if s.output is None)
    scorer_errors = sum(len(s.scorer_errors) for s in results)
    metrics["samples"] = float(len(results))
    metrics["failed_samples"] = float(failed)
    metrics["scorer_errors"] = float(scorer_errors)
    return {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}, failed, scorer_errors
