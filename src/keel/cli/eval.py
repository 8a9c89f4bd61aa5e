"""``keel eval run eval.yaml`` and ``keel reproduce RUN``.

An eval spec is YAML::

    project: support-eval
    data: data/eval_set.jsonl
    prompts: [support@1.0.0, support@1.1.0]
    models:
      - {name: gpt-4, temperature: 0.7}
      - gpt-3.5-turbo
    parameters: {temperature: [0.2, 0.7]}     # optional grid, crossed with every model
    scorers:
      - exact_match: {field: answer}
      - token_f1: {field: answer}
      - llm_judge: {name: faithfulness, judge_prompt: judge@1.0.0, scale: 5}
    concurrency: 8
    mode: auto                                  # record | replay | auto
    base_url: http://127.0.0.1:8765/v1          # optional: any OpenAI-compatible server

Every prompt x model x parameter combination becomes one evaluation run;
then the runs are compared against the first (CIs, significance, Pareto
front, verdict).
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


@eval_app.command("run")
def eval_run(
    spec_file: Annotated[Path, typer.Argument(help="The eval spec (YAML).")],
    mode: Annotated[str | None, typer.Option("--mode", help="record, replay or auto (default: the spec's).")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="An OpenAI-compatible server.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Evaluate every prompt x model x parameter combination of a spec, then compare the runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import keel
    from keel.cli.main import _print_statistics
    from keel.cli.render import print_json

    spec = load_spec(spec_file)
    scorers = build_scorers(spec["scorers"])
    combos = grid(spec)
    client = _client(base_url or spec.get("base_url"))
    results = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=as_json, transient=False,
    ) as bar:  # fmt: skip
        for prompt, model in combos:
            label = f"{prompt} {model['name']} " + " ".join(f"{k}={v}" for k, v in model.items() if k != "name")
            task = bar.add_task(label.strip(), total=None)

            def progress(done: int, total: int, task: Any = task) -> None:
                bar.update(task, completed=done, total=total)

            results.append(
                keel.evaluate(
                    spec["data"], prompt, model, client, scorers, project=spec.get("project"),
                    concurrency=int(spec.get("concurrency", 8)), mode=mode or spec.get("mode", "auto"),
                    progress=progress,
                )
            )  # fmt: skip
    comparison = keel.compare([r.run_id for r in results]) if len(results) > 1 else None
    if as_json:
        print_json(
            {
                "runs": [{"run_id": r.run_id, "name": r.name, "metrics": r.metrics} for r in results],
                "comparison": comparison.to_dict() if comparison else None,
            }
        )
        return
    for r in results:
        failed = f", {r.failed} failed samples" if r.failed else ""
        errors = f", {r.scorer_errors} scorer errors" if r.scorer_errors else ""
        typer.echo(f"{r.run_id[:8]} {r.name}{failed}{errors}")
    if comparison is not None:
        _print_statistics(comparison)


def reproduce_command(
    run: Annotated[str, typer.Argument(help="The evaluation run (id or prefix).")],
    live: Annotated[bool, typer.Option("--live", help="Call the provider again (detect drift).")] = False,
    base_url: Annotated[str | None, typer.Option("--base-url", help="Server for --live.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-create a run's inputs and re-execute its evaluation (replayed, or --live); report differences."""
    import keel
    from keel.cli.render import print_json

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
