"""``keel runs``, ``keel artifacts`` and ``keel projects``: runs, their files and their projects."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from keel.sdk.client import Client

__all__ = ["artifacts_app", "projects_app", "runs_app"]

runs_app = typer.Typer(help="List, show, compare, delete, restore and purge runs.", no_args_is_help=True)
artifacts_app = typer.Typer(help="List and download run artifacts.", no_args_is_help=True)
projects_app = typer.Typer(help="List, create and rename projects.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _client() -> Client:
    from keel.sdk.client import Client

    return Client(create=False)


# -- runs ----------------------------------------------------------------------


def _run_columns(runs: list[Any]) -> tuple[list[str], list[str]]:
    metrics = sorted({k for r in runs for k in r.metrics})
    params = sorted({k for r in runs for k in r.params})
    return metrics, params


# The table's own columns, by the names --columns takes (id, name, status, start by default).
RUN_COLUMNS = ("id", "name", "status", "start", "project", "end", "duration")
_WHOLE = frozenset({"id", "status", "start", "end", "duration"})  # never cut
DEFAULT_METRICS = 6  # metric columns shown by default (fewer when the terminal is narrow)
# What keel.evaluate logs beside its scores, most telling first: shown after the scores
# and any other metric, before the scores' confidence bounds (<score>_ci_low/_ci_high).
_EVAL_SUMMARY = (
    "cost_per_query", "latency_p50_ms", "scorer_errors", "failed_samples", "latency_p95_ms",
    "cost_total", "prompt_tokens", "completion_tokens", "samples",
)  # fmt: skip


def _ranked_metrics(keys: set[str]) -> list[str]:
    """Metric names, most relevant first: evaluation scores (those with confidence bounds),
    other metrics, evaluation bookkeeping, then the bounds."""
    bounds = {k for k in keys if k.endswith(("_ci_low", "_ci_high")) and k.rpartition("_ci_")[0] in keys}
    scores = sorted({k.rpartition("_ci_")[0] for k in bounds})
    summary = [k for k in _EVAL_SUMMARY if k in keys]
    rest = sorted(keys - bounds - set(scores) - set(summary))
    return scores + rest + summary + sorted(bounds)


def _short_time(ms: int | None, now_ms: int) -> str:
    """``Dec 07 14:03`` (UTC) within half a year of ``now_ms``, else ``2025-12-07``, as ``ls -l``."""
    if ms is None:
        return ""
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return when.strftime("%b %d %H:%M" if abs(now_ms - ms) < 182 * 86_400_000 else "%Y-%m-%d")


def _short_duration(seconds: float | None) -> str:
    """``0.4s``, ``42s``, ``3m05s``, ``2h10m``, ``3d04h``; empty while the run is running."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    for unit, size, small, small_size in (("d", 86_400, "h", 3_600), ("h", 3_600, "m", 60), ("m", 60, "s", 1)):
        if whole >= size:
            return f"{whole // size}{unit}{whole % size // small_size:02d}{small}"
    return f"{whole}s"


def _run_cell(column: tuple[str, str], run: Any, now_ms: int) -> Any:
    kind, key = column
    if kind == "metrics":
        return run.metrics.get(key)
    if kind == "params":
        return run.params.get(key)
    if kind == "tags":
        return run.tags.get(key)
    if key in ("start", "end"):
        return _short_time(run.start_time if key == "start" else run.end_time, now_ms)
    if key == "duration":
        return _short_duration(run.duration_s)
    return run.run_id[:8] if key == "id" else getattr(run, key)


def _pick_run_columns(spec: str, runs: list[Any]) -> list[tuple[str, str]]:
    """``--columns a,b,c`` -> (kind, key) pairs: a built-in column, else a metric, a param or a
    tag of these runs; ``metrics.x``, ``params.x`` and ``tags.x`` name one kind explicitly."""
    from keel.errors import InvalidInput

    have = {kind: {k for r in runs for k in getattr(r, kind)} for kind in ("metrics", "params", "tags")}
    chosen: list[tuple[str, str]] = []
    for name in (part.strip() for part in spec.split(",")):
        if not name:
            continue
        kind, dot, key = name.partition(".")
        if dot and kind in have and key:
            chosen.append((kind, key))
        elif name in RUN_COLUMNS:
            chosen.append(("run", name))
        elif found := next((kind for kind in ("metrics", "params", "tags") if name in have[kind]), None):
            chosen.append((found, name))
        elif not runs:  # nothing to check it against, and nothing to show
            chosen.append(("metrics", name))
        else:
            import difflib

            known = [*RUN_COLUMNS, *_ranked_metrics(have["metrics"]), *sorted(have["params"])]
            close = difflib.get_close_matches(name, known, n=1)
            raise InvalidInput(
                f"no column {name!r}: it is not a built-in column and no listed run has such a metric or param",
                (f"did you mean --columns ...,{close[0]}? " if close else "")
                + f"columns: {', '.join(known[:12])}{', ...' if len(known) > 12 else ''}",
            )
    if not chosen:
        raise InvalidInput("--columns names no column", "e.g. --columns id,name,status,start")
    return chosen


def _default_run_columns(runs: list[Any]) -> list[tuple[str, str]]:
    """id, the project when several are listed, name, status, start, and the most relevant metrics."""
    builtins = ["id", *(["project"] if len({r.project for r in runs}) > 1 else []), "name", "status", "start"]
    metrics = _ranked_metrics({k for r in runs for k in r.metrics})[:DEFAULT_METRICS]
    return [("run", b) for b in builtins] + [("metrics", m) for m in metrics]


def _headers(columns: list[tuple[str, str]]) -> list[str]:
    """A column's name as --columns takes it, with its kind when the bare name is ambiguous."""
    bare = [key for _kind, key in columns]
    return [key if bare.count(key) == 1 else f"{kind}.{key}" for kind, key in columns]


def _hidden_note(dropped: list[tuple[str, str]], chosen: list[tuple[str, str]], runs: list[Any]) -> str | None:
    """One line naming the metric and param columns not shown (those that did not fit
    first), and the --columns that shows them; None when every one is shown."""
    metrics = _ranked_metrics({k for r in runs for k in r.metrics})
    params = sorted({k for r in runs for k in r.params})
    every = [("metrics", m) for m in metrics] + [("params", p) for p in params]
    hidden = dropped + [c for c in every if c not in chosen and c not in dropped]
    if not hidden:
        return None
    plain = set(RUN_COLUMNS) | (set(metrics) & set(params))
    names = [f"{kind}.{key}" if key in plain else key for kind, key in hidden]
    listed = ", ".join(names[:4]) + (f", +{len(names) - 4} more" if len(names) > 4 else "")
    example = ",".join(["id", "name", *names[:2]])
    return f"({len(names)} columns hidden: {listed}; show them with --columns, e.g. --columns {example})"


@runs_app.command("list")
def runs_list(
    project: Annotated[list[str] | None, typer.Option("--project", "-p", help="Project(s) to list.")] = None,
    filter_: Annotated[str | None, typer.Option("--filter", "-f", help='e.g. "metrics.accuracy > 0.8"')] = None,
    sort: Annotated[list[str] | None, typer.Option("--sort", "-s", help='e.g. "metrics.cost asc"')] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many runs.")] = 50,
    deleted: Annotated[bool, typer.Option("--deleted", help="List deleted runs instead.")] = False,
    columns: Annotated[
        str | None,
        typer.Option(
            "--columns",
            "-c",
            help="Table columns, comma-separated: id, name, status, start, project, end, duration, and "
            "metric or param names (metrics.X / params.X / tags.X pick a kind). --json is always complete.",
        ),
    ] = None,
    used: Annotated[
        str | None,
        typer.Option(
            "--used",
            help="Only the runs that used KIND:NAME[@SELECTOR], newest use first: @production = "
            "resolved through that alias at the time (whatever it points at now), @1.3.0 = that version.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first (or in --sort order).

    The table shows id, name, status, start (UTC) and the most telling metrics, and fits
    the terminal (COLUMNS overrides its width): names are shortened, then metric columns
    dropped, and stderr says which columns are hidden. Piped, the table is printed whole.

    With --used, the runs that used a version, each with the version it got and the alias it
    resolved (``keel runs list --used prompt:chat@production``).
    """
    import time

    from keel.cli.render import output_width, print_json, table

    if used is not None:
        _list_used(used, project, filter_, sort, limit, deleted, as_json)
        return
    runs = _client().search_runs(project or None, filter_, sort or None, limit, only_deleted=deleted)
    if as_json:
        print_json({"runs": [r.to_dict() for r in runs], "next_page_token": runs.next_page_token})
        return
    records = list(runs)
    chosen = _pick_run_columns(columns, records) if columns else _default_run_columns(records)
    headers = _headers(chosen)
    now_ms = int(time.time() * 1000)
    dropped = table(
        headers,
        [[_run_cell(c, r, now_ms) for c in chosen] for r in records],
        keep=[i for i, (kind, key) in enumerate(chosen) if kind == "run" and key in _WHOLE],
        optional=[i for i, (kind, _key) in enumerate(chosen) if kind != "run"],
        right=[i for i, (kind, _key) in enumerate(chosen) if kind == "metrics"],
    )
    if columns is None and records:
        note = _hidden_note([chosen[headers.index(h)] for h in dropped], chosen, records)
        if note:
            typer.echo(note, err=True)
    elif dropped:
        typer.echo(
            f"({len(dropped)} columns did not fit in {output_width()} columns: {', '.join(dropped)}; "
            "widen the terminal or list fewer with --columns)",
            err=True,
        )
    if runs.next_page_token:
        typer.echo(f"(more runs: raise --limit; showing {len(runs)})", err=True)


def _list_used(
    used: str,
    projects: list[str] | None,
    filter_: str | None,
    sort: list[str] | None,
    limit: int,
    deleted: bool,
    as_json: bool,
) -> None:
    """``runs list --used``: the runs that used an entity, newest use first, with the version
    each got and the alias it resolved."""
    from keel.cli.render import print_json, table
    from keel.errors import InvalidInput
    from keel.sdk.lineage import runs_using

    if filter_ or sort:
        raise InvalidInput(
            "--used lists runs in the order they used the entity and takes no --filter or --sort",
            "drop --filter/--sort, or narrow with --project and --limit",
        )
    client = _client()
    edges = runs_using(used, limit=limit, client=client)
    records = {r.run_id: r for r in client.get_runs(list(dict.fromkeys(e.run_id for e in edges)))}
    wanted = set(projects or ())
    rows = [
        (e, records[e.run_id])
        for e in edges
        if e.run_id in records
        and records[e.run_id].deleted == deleted
        and (not wanted or records[e.run_id].project in wanted)
    ]
    if as_json:
        print_json(
            {
                "used": used,
                "runs": [
                    {**r.to_dict(), "used": {"entity": str(e.entity), "ref": e.ref, "role": e.role, "at": e.created_at}}
                    for e, r in rows
                ],
            }
        )
        return
    if not rows:
        typer.echo(f"no {'deleted ' if deleted else ''}run used {used}")
        return
    from keel.core.times import format_at

    table(
        ["id", "project", "name", "status", "version", "via", "used at"],
        [
            [r.run_id[:8], r.project, r.name, r.status, e.entity.version, e.ref, format_at(e.created_at)]
            for e, r in rows
        ],
        keep=[0, 4, 5, 6],
    )


@runs_app.command("show")
def runs_show(run: Annotated[str, typer.Argument(help="Run id or unique prefix.")], as_json: JsonOpt = False) -> None:
    """Show one run: status, context, params, metrics (latest/min/max), tags, artifacts."""
    from keel.cli.render import console, print_json, table
    from keel.core.entities import format_time

    client = _client()
    record = client.get_run(run)
    summaries = client.metric_summaries(record.run_id)
    artifacts = client.list_artifacts(record.run_id)
    if as_json:
        doc = record.to_dict()
        doc["metric_summaries"] = [s.__dict__ for s in summaries]
        doc["artifacts"] = [a.__dict__ for a in artifacts]
        print_json(doc)
        return
    out = console()
    out.print(f"[bold]run[/bold]      {record.run_id}")
    out.print(f"name     {record.name}   project {record.project}   status {record.status}")
    out.print(f"started  {format_time(record.start_time)}   ended {format_time(record.end_time) or '-'}")
    if record.parent_id:
        out.print(f"parent   {record.parent_id}")
    if record.error:
        out.print(f"[red]error    {record.error}[/red]")
    git = record.context.get("git") or {}
    if git:
        out.print(f"git      {git.get('commit', '')[:12]}{' (dirty)' if git.get('dirty') else ''}")
    out.print(f"host     {record.context.get('hostname', '')}   python {record.context.get('python', '')}")
    if record.params:
        table(["param", "value"], [[k, v] for k, v in record.params.items()])
    if summaries:
        table(
            ["metric", "latest", "step", "min", "max", "count"],
            [[s.key, s.latest, s.step, s.min, s.max, s.count] for s in summaries],
        )
    if record.tags:
        table(["tag", "value"], [[k, v] for k, v in record.tags.items()])
    if artifacts:
        table(["artifact", "size", "kind", "oid"], [[a.path, a.size, a.kind, a.oid[:12]] for a in artifacts])


@runs_app.command("compare")
def runs_compare(
    runs: Annotated[list[str], typer.Argument(help="Two or more run ids or prefixes.")],
    baseline: Annotated[
        str | None, typer.Option("--baseline", "-b", help="Compare against this run, with statistics.")
    ] = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", "-m", help="Metrics to test (repeatable).")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the statistics as Markdown.")] = False,
    chart: Annotated[Path | None, typer.Option("--chart", help="Draw the trade-off to a .png or .svg.")] = None,
    direction: Annotated[
        list[str] | None,
        typer.Option("--direction", help="Declare which way is better: METRIC=higher or METRIC=lower (repeatable)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Params and metrics side by side; with --baseline (or for evaluation runs) each metric's
    95% CI, delta vs the baseline, significance (Holm-corrected), the Pareto front and a verdict."""
    from keel.cli.render import print_json, table
    from keel.errors import InvalidInput

    if len(runs) < 2 and baseline is None:
        raise InvalidInput("compare needs at least two runs", "keel runs compare RUN RUN [RUN...]")
    client = _client()
    records = list({r.run_id: r for r in client.get_runs(runs if baseline is None else [baseline, *runs])}.values())
    if len(records) < 2:
        raise InvalidInput("compare needs at least two different runs", "keel runs compare RUN RUN [RUN...]")
    stats = _statistics(records, baseline, metric, chart, _directions(direction or []))
    if markdown:
        if stats is None:
            raise InvalidInput("these runs have no per-sample scores to test", "add --baseline RUN")
        typer.echo(stats.to_markdown(), nl=False)
        return
    metrics, params = _run_columns(records)
    rows: list[list[Any]] = []
    kinds: list[str] = []
    for kind, keys, getter in (("param", params, "params"), ("metric", metrics, "metrics")):
        for key in keys:
            rows.append([f"{kind}s.{key}", *(getattr(r, getter).get(key) for r in records)])
            kinds.append(kind)
    if as_json:
        out: dict[str, Any] = {
            "runs": [r.run_id for r in records],
            "rows": [{"key": row[0], "values": row[1:], "differs": _differs(row[1:])} for row in rows],
        }
        if stats is not None:
            out["statistics"] = stats.to_dict()
        print_json(out)
        return
    differing = {i for i, row in enumerate(rows) if _differs(row[1:])}
    table(["", *(f"{r.run_id[:8]} {r.name}" for r in records)], rows, highlight_rows=differing)
    typer.echo(f"{len(differing)} of {len(rows)} values differ")
    if stats is not None:
        _print_statistics(stats)
    if chart is not None:
        typer.echo(f"wrote {chart}")


def _directions(declared: list[str]) -> dict[str, str]:
    """``--direction accuracy=higher`` as ``{"accuracy": "higher"}``."""
    from keel.errors import InvalidInput

    out = {}
    for item in declared:
        name, sep, way = item.partition("=")
        if not sep or not name.strip():
            raise InvalidInput(f"invalid --direction {item!r}", "use METRIC=higher or METRIC=lower")
        out[name.strip()] = way.strip()
    return out


def _statistics(
    records: list[Any], baseline: str | None, metric: list[str] | None, chart: Path | None, directions: dict[str, str]
) -> Any:
    """The statistical comparison, when asked for or when the runs are evaluations."""
    import keel

    evaluations = all(any(a.path == "tables/samples.json" for a in _client().list_artifacts(r.run_id, "tables"))
                      for r in records)  # fmt: skip
    if baseline is None and not metric and chart is None and not evaluations and not directions:
        return None
    return keel.compare(
        [r.run_id for r in records],
        baseline=records[0].run_id,
        metrics=metric or None,
        chart=chart,
        directions=directions or None,
    )


def _print_statistics(stats: Any) -> None:
    from keel.cli.render import console, table

    head = [f"{a.label}{' (baseline)' if a.key == stats.baseline else ''}" for a in stats.arms]
    rows = [[m, *(stats.cell(stats.result(a.key, m)) for a in stats.arms)] for m in stats.metrics]
    table(["metric", *head], rows, title=stats.legend())
    out = console()
    out.print("Directions: " + "; ".join(stats.direction_notes()), highlight=False, markup=False)
    for note in stats.power_notes():
        out.print(note, highlight=False, markup=False)
    if stats.pareto:
        out.print("Pareto front: " + ", ".join(stats.label(k) for k in stats.pareto), highlight=False, markup=False)
    for line in stats.verdict:
        out.print(line, highlight=False, markup=False)


def _differs(values: list[Any]) -> bool:
    from keel.cli.render import fmt

    return len({fmt(v) for v in values}) > 1


@runs_app.command("delete")
def runs_delete(
    runs: Annotated[list[str], typer.Argument(help="Run ids or prefixes.")],
    purge: Annotated[
        bool, typer.Option("--purge", help="Then remove them permanently (as 'keel runs purge'); asks first.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="With --purge: do not ask for confirmation.")] = False,
) -> None:
    """Delete runs (soft: 'keel runs restore' brings them back; --purge: gone for good)."""
    client = _client()
    if purge:
        from keel.errors import KeelError

        records = [client.get_run(run) for run in runs]
        _confirm_purge(len(records), yes)
        deleted_now = [r.run_id for r in records if not r.deleted]
        for run_id in deleted_now:
            client.delete_run(run_id)
        try:
            _purge([r.run_id for r in records], None, None, dry_run=False, yes=True, as_json=False)
        except KeelError:  # refused (e.g. a model version's run): leave the runs as they were
            for run_id in deleted_now:
                client.restore_run(run_id)
            raise
        return
    for run in runs:
        typer.echo(f"deleted {client.delete_run(run)}")


@runs_app.command("purge")
def runs_purge(
    runs: Annotated[
        list[str] | None, typer.Argument(help="Deleted run ids or prefixes (default: every deleted run).")
    ] = None,
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="Only runs deleted before this: 30d, 12w, a date.")
    ] = None,
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only this project's deleted runs.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; remove nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (scripts).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Permanently remove deleted runs: params, metrics, tags, artifacts, lineage, recorded calls.

    Their artifacts' objects go too unless something else references them. A run that a
    model version was registered from is refused. An audit entry stays ('keel erasures list')."""
    _purge(runs or None, project, older_than, dry_run=dry_run, yes=yes, as_json=as_json)


def _confirm_purge(count: int, yes: bool) -> None:
    import sys

    from keel.errors import InvalidInput

    if yes or count == 0:
        return
    if not sys.stdin.isatty():
        raise InvalidInput(
            f"{count:,} runs would be purged; that needs a confirmation, and there is no terminal to ask on",
            "add --yes to purge without asking (or --dry-run to count them)",
        )
    if not typer.confirm(f"Remove {count:,} runs permanently (params, metrics, artifacts, recordings)?", default=False):
        typer.echo("nothing purged")
        raise typer.Exit(1)


def _purge(
    runs: list[str] | None, project: str | None, older_than: str | None, *, dry_run: bool, yes: bool, as_json: bool
) -> None:
    from keel.sdk.retention import purge_runs

    plan = purge_runs(runs, project=project, older_than=older_than, dry_run=True)
    if not dry_run and plan.matched:
        _confirm_purge(plan.matched, yes)
        plan = purge_runs(runs, project=project, older_than=older_than)
    if as_json:
        from keel.cli.render import print_json

        print_json(plan.to_dict())
        return
    if dry_run:
        typer.echo(f"{plan.matched:,} deleted runs match (dry run: nothing removed)")
    elif plan.matched == 0:
        typer.echo("no deleted run matches: nothing purged")
    else:
        typer.echo(
            f"purged {plan.deleted:,} runs ({plan.objects_removed:,} objects removed, "
            f"{plan.bytes_freed:,} bytes freed; audit entry {plan.audit_id})"
        )
    for item in plan.derived:
        version = f"@{item['version']}" if item.get("version") else ""
        typer.echo(f"  kept: {item['kind']} {item['id']}{version}: {item['why']}")


@runs_app.command("direction")
def runs_direction(
    metric: Annotated[str, typer.Argument(help="The metric (or score) name.")],
    direction: Annotated[
        str | None, typer.Argument(help="higher or lower: which way is better (omit with --unset).")
    ] = None,
    project: Annotated[str | None, typer.Option("--project", "-p", help="Project (default: default).")] = None,
    unset: Annotated[bool, typer.Option("--unset", help="Remove the project's declaration.")] = False,
) -> None:
    """Declare which way is better for a metric of a project's runs (comparisons and the gate use it)."""
    from keel.sdk import directions

    if unset:
        if direction is not None:
            raise typer.BadParameter("give either a direction or --unset, not both")
        directions.unset(metric, project)
        typer.echo(f"{project or 'default'}: {metric} has no declared direction now")
        return
    if direction is None:
        raise typer.BadParameter("give higher or lower (or --unset)")
    done = directions.set(metric, direction, project)
    typer.echo(f"{done['project']}: {done['direction']} is better for {done['metric']}")


@runs_app.command("directions")
def runs_directions(
    project: Annotated[
        list[str] | None, typer.Option("--project", "-p", help="Project (repeatable; default: default).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The metric directions the projects declare."""
    from keel.cli.render import print_json, table
    from keel.sdk import directions

    found = directions.declared(project or None)
    if as_json:
        print_json(found)
        return
    rows = [[name, metric, way] for name, declared in sorted(found.items()) for metric, way in sorted(declared.items())]
    if not rows:
        typer.echo("no metric direction is declared (keel runs direction METRIC higher|lower)")
        return
    table(["project", "metric", "direction"], rows)


@runs_app.command("restore")
def runs_restore(runs: Annotated[list[str], typer.Argument(help="Run ids or prefixes.")]) -> None:
    """Restore deleted runs."""
    client = _client()
    for run in runs:
        typer.echo(f"restored {client.restore_run(run)}")


@runs_app.command("lineage")
def runs_lineage(run: Annotated[str, typer.Argument(help="Run id or prefix.")], as_json: JsonOpt = False) -> None:
    """What a run used (inputs) and produced (outputs), and its child runs."""
    from keel.cli.render import print_json, table

    client = _client()
    full = client.get_run(run).run_id
    edges = client.lineage(full)
    children = client.children(full)
    if as_json:
        print_json(
            {
                "run_id": full,
                "inputs": [
                    {"entity": str(e.entity), "role": e.role, "ref": e.ref} for e in edges if e.direction == "input"
                ],
                "outputs": [
                    {"entity": str(e.entity), "role": e.role, "ref": e.ref} for e in edges if e.direction == "output"
                ],
                "children": children,
            }
        )
        return
    rows = [
        [
            e.direction,
            e.entity.kind,
            e.entity.id,
            f"{e.entity.version} (via {e.ref})" if e.ref else e.entity.version,
            e.role,
        ]
        for e in edges
    ]
    rows += [["child", "run", child, "", ""] for child in children]
    if not rows:
        typer.echo(f"run {full[:8]} has no recorded inputs or outputs")
        return
    table(["direction", "kind", "id", "version", "role"], rows)


# -- artifacts ----------------------------------------------------------------


@artifacts_app.command("list")
def artifacts_list(
    run: Annotated[str, typer.Argument(help="Run id or prefix.")],
    path: Annotated[str, typer.Argument(help="Folder path inside the run.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """List a run's artifacts."""
    from keel.cli.render import print_json, table

    items = _client().list_artifacts(run, path)
    if as_json:
        print_json([item.__dict__ for item in items])
        return
    table(["path", "size", "kind", "oid"], [[a.path, a.size, a.kind, a.oid[:12]] for a in items])


@artifacts_app.command("get")
def artifacts_get(
    run: Annotated[str, typer.Argument(help="Run id or prefix.")],
    path: Annotated[str, typer.Argument(help="File or folder path inside the run (default: all).")] = "",
    dest: Annotated[Path, typer.Option("--dest", "-o", help="Folder to write into.")] = Path("."),
) -> None:
    """Download artifacts (hash-verified) into --dest."""
    for written in _client().download_artifacts(run, path, dest):
        typer.echo(str(written))


# -- projects -------------------------------------------------------------------


@projects_app.command("list")
def projects_list(as_json: JsonOpt = False) -> None:
    """List projects and their run counts."""
    from keel.cli.render import print_json, table
    from keel.core.entities import format_time

    projects = _client().list_projects()
    if as_json:
        print_json(
            [{"name": p.name, "runs": n, "created_at": p.created_at, "description": p.description} for p, n in projects]
        )
        return
    table(
        ["project", "runs", "created", "description"],
        [[p.name, n, format_time(p.created_at), p.description] for p, n in projects],
    )


@projects_app.command("create")
def projects_create(
    name: Annotated[str, typer.Argument(help="Project name.")],
    description: Annotated[str, typer.Option("--description", "-d")] = "",
) -> None:
    """Create a project (runs also create theirs on first use)."""
    project = _client().create_project(name, description)
    typer.echo(f"created project {project.name}")


@projects_app.command("rename")
def projects_rename(
    name: Annotated[str, typer.Argument(help="The project's name now.")],
    new_name: Annotated[str, typer.Argument(help="Its new name.")],
) -> None:
    """Rename a project: its runs follow; the audit log keeps the old name (keel server audit)."""
    project = _client().rename_project(name, new_name)
    typer.echo(f"renamed project {name} to {project.name}")
