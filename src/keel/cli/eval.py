"""``keel eval run eval.yaml``, ``keel reproduce RUN`` and ``keel reproduce --trace ID``.

The eval spec format is :data:`SPEC_HELP` (shown by ``keel eval run --help``
and documented in docs/evaluation.md). Every prompt x model x parameter
combination becomes one evaluation run; then the runs are compared against
the baseline (CIs, significance, Pareto front, verdict). A scorer that failed
on more than half of a run's samples makes the command exit 1 (with one line
per failed scorer) unless ``--allow-scorer-errors`` is given.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from keel.errors import InvalidInput

__all__ = ["eval_app", "reproduce_command"]

eval_app = typer.Typer(help="Evaluate prompt x model grids on a dataset.", no_args_is_help=True)

#: ``keel eval run --help``'s description of the spec (click keeps the lines after ``\b`` as written).
SPEC_HELP = """\b
The spec (YAML); data, prompts, models and scorers are required:

\b
  project: calc-eval                    # the runs' project (default: the workspace's)
  data: data/eval_set.jsonl             # .jsonl (one object per line) or .json (a list)
  prompts: [calc@1.0.0, calc@1.0.1]     # registered prompts: name@version or name@alias
  models: [gpt-4, gpt-3.5-turbo]        # names, or {name: gpt-4, temperature: 0.7, ...}
  parameters: {temperature: [0.2, 0.7]} # optional grid, crossed with every model
  scorers:
    - exact_match: {field: answer}
    - token_f1: answer                  # shorthand for {field: answer}
    - llm_judge: {name: faithfulness, judge_prompt: judge@1.0.0, scale: 5}
  concurrency: 8                        # calls in flight per run (default 8)
  mode: auto                            # record | replay | auto (default auto)
  base_url: http://127.0.0.1:8765/v1    # any OpenAI-compatible server (--base-url wins)
  baseline: gpt-3.5-turbo               # compare with: a prompt, a model or a position (default 1)

\b
Scorers: exact_match, contains, token_f1 {field, name}; regex {pattern};
json_valid {required_keys}; embedding_similarity {field};
llm_judge {name, judge_prompt, model, scale, temperature}.
Each row's fields fill the prompt's variables; 'id' names the sample.

\b
Exit codes: 0 done; 1 a scorer failed on more than half of a run's samples
(one line each on stderr; --allow-scorer-errors exits 0); 2 a bad spec.
See docs/evaluation.md for a walkthrough."""

_KNOWN = {"project", "data", "prompts", "prompt", "models", "model", "parameters", "scorers", "concurrency", "mode",
          "base_url", "baseline"}  # fmt: skip


def load_spec(path: Path) -> dict[str, Any]:
    """Read and check an eval spec (with keel's bounded safe YAML loader: errors name the line)."""
    from keel.core.yaml_safe import load_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"no eval spec at {path}", "check the path") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text", "save the file as UTF-8") from None
    spec = load_yaml(text, str(path))
    if not isinstance(spec, dict):
        raise InvalidInput(f"{path} must be a mapping", "see 'keel eval run --help' for the format")
    unknown = sorted(set(spec) - _KNOWN)
    if unknown:
        raise InvalidInput(f"{path}: unknown key {unknown[0]!r}", f"use {', '.join(sorted(_KNOWN))}")
    for key in ("data", "scorers"):
        if key not in spec:
            raise InvalidInput(f"{path} has no {key!r}", f"add {key}: ...")
    if "prompts" not in spec and "prompt" not in spec:
        raise InvalidInput(f"{path} has no 'prompts'", "add prompts: [name@version, ...]")
    if "models" not in spec and "model" not in spec:
        raise InvalidInput(f"{path} has no 'models'", "add models: [gpt-4, ...]")
    return spec


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def build_scorers(entries: Any) -> list[Any]:
    """``[exact_match: {field: answer}, token_f1: answer, json_valid]`` -> scorer objects."""
    from keel.sdk.scorers import from_spec

    out = []
    for entry in _list(entries):
        if isinstance(entry, str):
            kind, args = entry, dict[str, Any]()
        elif isinstance(entry, dict) and len(entry) == 1:
            kind, raw = next(iter(entry.items()))
            args = raw if isinstance(raw, dict) else ({"field": raw} if raw is not None else {})
        else:
            raise InvalidInput(f"invalid scorer entry {entry!r}", "write - exact_match: {field: answer}")
        out.append(from_spec({"kind": kind, **args}))
    return out


def grid(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every (prompt, model-with-parameters) combination of a spec."""
    prompts = [str(p) for p in _list(spec.get("prompts", spec.get("prompt")))]
    models = []
    for model in _list(spec.get("models", spec.get("model"))):
        if isinstance(model, str):
            models.append({"name": model})
        elif isinstance(model, dict) and isinstance(model.get("name"), str):
            models.append(dict(model))
        else:
            raise InvalidInput(f"invalid model entry {model!r}", "write a name or {name: gpt-4, temperature: 0.7}")
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("parameters must be a mapping of lists", "parameters: {temperature: [0.2, 0.7]}")
    keys = list(parameters)
    combos = list(itertools.product(*(_list(parameters[k]) for k in keys))) if keys else [()]
    out = []
    for prompt in prompts:
        for model in models:
            for combo in combos:
                out.append((prompt, {**model, **dict(zip(keys, combo, strict=True))}))
    return out


def baseline_index(value: Any, combos: list[tuple[str, dict[str, Any]]]) -> int:
    """The grid position of the spec's ``baseline``: a 1-based position, or the first
    combination whose prompt reference or model name it is (default: 0, the first)."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= len(combos):
            return value - 1
        raise InvalidInput(f"baseline {value} is not a run of the grid (1 to {len(combos)})", "baseline: 1")
    for index, (prompt, model) in enumerate(combos):
        if str(value) in (prompt, model["name"]):
            return index
    raise InvalidInput(
        f"baseline {value!r} is none of the spec's prompts or models",
        f"baseline: {combos[0][0]} (a prompt), {combos[0][1]['name']} (a model) or 1 (the first run)",
    )


def _client(base_url: str | None) -> Any:
    try:
        import openai
    except ImportError:
        raise InvalidInput("evaluations need the openai package", "pip install 'keel[openai]'") from None
    url = base_url or os.environ.get("OPENAI_BASE_URL")
    key = os.environ.get("OPENAI_API_KEY")
    if url is None and key is None:
        raise InvalidInput(
            "no model server: OPENAI_API_KEY is not set and no base_url was given",
            "set OPENAI_API_KEY, or run the stand-in ('keel llm standin') and pass --base-url",
        )
    return openai.OpenAI(base_url=url, api_key=key or "none")


@eval_app.command("run", epilog=SPEC_HELP)
def eval_run(
    spec_file: Annotated[Path, typer.Argument(help="The eval spec (YAML).")],
    mode: Annotated[str | None, typer.Option("--mode", help="record, replay or auto (default: the spec's).")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="An OpenAI-compatible server.")] = None,
    allow_scorer_errors: Annotated[
        bool, typer.Option("--allow-scorer-errors", help="Exit 0 even when a scorer failed on most samples.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Evaluate every prompt x model x parameter combination of a spec, then compare the runs.

    A scorer that failed (raised or gave no number) on more than half of the
    samples of a run is reported as failed, in the comparison and on stderr,
    and the command exits 1.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import keel
    from keel.cli.render import print_json
    from keel.cli.runs import _print_statistics

    spec = load_spec(spec_file)
    scorers = build_scorers(spec["scorers"])
    combos = grid(spec)
    baseline = baseline_index(spec.get("baseline"), combos)
    client = _client(base_url or spec.get("base_url"))
    names = _run_names(combos)
    results = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=as_json, transient=False,
    ) as bar:  # fmt: skip
        for (prompt, model), run_name in zip(combos, names, strict=True):
            label = f"{prompt} {model['name']} " + " ".join(f"{k}={v}" for k, v in model.items() if k != "name")
            task = bar.add_task(label.strip(), total=None)

            def progress(done: int, total: int, task: Any = task) -> None:
                bar.update(task, completed=done, total=total)

            results.append(
                keel.evaluate(
                    spec["data"], prompt, model, client, scorers, run_name=run_name, project=spec.get("project"),
                    concurrency=int(spec.get("concurrency", 8)), mode=mode or spec.get("mode", "auto"),
                    progress=progress,
                )
            )  # fmt: skip
    ids = [r.run_id for r in results]
    comparison = keel.compare(ids, baseline=ids[baseline]) if len(results) > 1 else None
    if as_json:
        print_json(
            {
                "runs": [
                    {
                        "run_id": r.run_id,
                        "name": r.name,
                        "metrics": r.metrics,
                        "failed_samples": r.failed,
                        "scorers": {
                            n: {"errors": e.errors, "samples": e.samples, "failed": e.failed,
                                "first_error": e.first_error}
                            for n, e in r.errors_by_scorer.items()
                        },
                    }
                    for r in results
                ],  # fmt: skip
                "comparison": comparison.to_dict() if comparison else None,
            }
        )
    else:
        for r in results:
            failed = f", {r.failed} failed samples" if r.failed else ""
            errors = f", {r.scorer_errors} scorer errors" if r.scorer_errors else ""
            typer.echo(f"{r.run_id[:8]} {r.name}{failed}{errors}")
        if comparison is not None:
            _print_statistics(comparison)
    _report_failed_scorers(results, allow_scorer_errors)


def _run_names(combos: list[tuple[str, dict[str, Any]]]) -> list[str | None]:
    """Run names that tell the grid's runs apart: the default (``calc_v1.0.0_gpt-4``) plus
    every model argument that varies across the grid (``_temperature-0.7``)."""
    import keel
    from keel.sdk.evaluate import default_run_name

    keys = dict.fromkeys(k for _, model in combos for k in model if k != "name")
    varying = [k for k in keys if len({repr(model.get(k)) for _, model in combos}) > 1]
    if not varying:
        return [None] * len(combos)  # keel.evaluate's default
    return [
        default_run_name(keel.prompts.load(prompt), model["name"], {k: model.get(k) for k in varying if k in model})
        for prompt, model in combos
    ]


def _report_failed_scorers(results: list[Any], allowed: bool) -> None:
    """One stderr line per failed scorer; exit 1 unless ``allowed``."""
    failures = [(r, e) for r in results for e in r.failed_scorers]
    level = "warning" if allowed else "error"
    for r, e in failures:
        typer.echo(f"{level}: run {r.run_id[:8]} {r.name}: {e.summary()}", err=True)
    if failures and not allowed:
        typer.echo(
            f"error: {len(failures)} failed scorer(s) above: fix them, or pass --allow-scorer-errors to exit 0",
            err=True,
        )
        raise typer.Exit(1)


def reproduce_command(
    run: Annotated[str | None, typer.Argument(help="The evaluation run (id or prefix).")] = None,
    live: Annotated[bool, typer.Option("--live", help="Call the provider again (detect drift).")] = False,
    base_url: Annotated[str | None, typer.Option("--base-url", help="Server for --live.")] = None,
    trace: Annotated[
        str | None,
        typer.Option("--trace", help="Replay a recorded trace's LLM calls offline instead (trace id or prefix)."),
    ] = None,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="The trace's project (with --trace; default: 'default').")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-create a run's inputs and re-execute its evaluation (replayed, or --live); report differences.

    With --trace ID: replay the LLM calls a trace made (recorded in its run by keel.llm.wrap)
    offline, call by call, and report whether each returned its recording (exit 1 if not).
    """
    import keel
    from keel.cli.render import print_json

    if trace is not None:
        if run is not None or live:
            raise InvalidInput(
                "--trace replays a trace offline: give no RUN and no --live", "keel reproduce --trace ID"
            )
        _reproduce_trace(trace, project, as_json)
        return
    if run is None:
        raise InvalidInput("give the evaluation run to reproduce, or --trace ID", "keel reproduce RUN")
    if project is not None:
        raise InvalidInput("--project goes with --trace", "keel reproduce --trace ID --project P")
    report = keel.reproduce(run, live=live, base_url=base_url)
    if as_json:
        print_json(report.to_dict())
    else:
        for note in report.notes:
            typer.echo(f"note: {note}")
        if report.identical:
            typer.echo(f"identical: run {report.new_run_id[:8]} reproduces {report.run_id[:8]}")
        else:
            typer.echo(f"differs: run {report.new_run_id[:8]} vs {report.run_id[:8]}:")
            for line in report.differences:
                typer.echo(f"  {line}")
    if not report.identical:
        raise typer.Exit(1)


def _reproduce_trace(trace: str, project: str | None, as_json: bool) -> None:
    """``keel reproduce --trace ID``: the calls, one line each, then identical / differs (exit 1)."""
    from keel.cli.render import print_json
    from keel.sdk.reproduce_trace import reproduce_trace

    report = reproduce_trace(trace, project)
    if as_json:
        print_json(report.to_dict())
    else:
        typer.echo(
            f"replayed {len(report.calls)} LLM call{'s' if len(report.calls) != 1 else ''} of trace "
            f"{report.trace_id[:8]} offline, from the recordings of run {report.run_id[:8]}:"
        )
        for n, call in enumerate(report.calls, 1):
            occurrence = "" if call.occurrence is None else f" #{call.occurrence}"
            status = "ok" if call.identical else "DIFFERS"
            typer.echo(
                f"  {n:>3}  {status:<7} {call.endpoint}  {call.model or '-'}  {call.request_hash[:12]}{occurrence}  "
                f"{call.answer!r}"
            )
        for note in report.notes:
            typer.echo(f"note: {note}")
        if report.identical:
            typer.echo(f"identical: every LLM call of trace {report.trace_id[:8]} replayed its recording")
        else:
            typer.echo(f"differs: trace {report.trace_id[:8]}:")
            for line in report.differences:
                typer.echo(f"  {line}")
    if not report.identical:
        raise typer.Exit(1)
