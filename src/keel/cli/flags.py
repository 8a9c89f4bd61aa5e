"""``keel flags ...`` and ``keel ab ...``: feature flags and A/B tests from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keel.errors import InvalidInput

__all__ = ["ab_app", "flags_app"]

flags_app = typer.Typer(help="Feature flags: list, show, set, roll out, kill, history, evaluate.", no_args_is_help=True)
ab_app = typer.Typer(help="A/B tests: create, start, stop, status, analyze.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
EnvOpt = Annotated[str, typer.Option("--env", "-e", help="Environment.")]
FlagArg = Annotated[str, typer.Argument(help="Flag key.")]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit trail).")]
ExpArg = Annotated[str, typer.Argument(help="Experiment name.")]
AtOpt = Annotated[
    str | None,
    typer.Option(
        "--at",
        help="The stored flags in force at this time: 2026-12-07T10:00:00.123Z (as 'keel flags history' "
        "prints), an offset (+01:00), or 1733500000s / 1733500000000ms.",
    ),
]


def _flags() -> Any:
    from keel.sdk import flags

    return flags


def _ab() -> Any:
    from keel.sdk import ab

    return ab


def _scalar(text: str) -> Any:
    """``0.2`` -> 0.2, ``true`` -> True, ``[a, b]`` -> list: YAML's reading of one value (the text
    itself when it is not YAML, or past a bound of keel's safe loader)."""
    from keel.core.yaml_safe import load_yaml

    try:
        return load_yaml(text, "value")
    except InvalidInput:
        return text


def _pairs(items: list[str] | None, what: str) -> dict[str, Any]:
    from keel.cli.render import key_values

    return key_values(items, what)


def _describe(flag: Any) -> str:
    if not flag.enabled:
        return f"KILLED (serves {flag.default})"
    parts = []
    if flag.rollout is not None:
        parts.append(f"rollout {flag.rollout:g}%")
    if flag.distribution is not None:
        parts.append(" / ".join(f"{k} {v * 100:g}%" for k, v in flag.distribution))
    if flag.rules:
        parts.append(f"{len(flag.rules)} rule{'s' if len(flag.rules) > 1 else ''}")
    if not parts:
        parts.append(f"serves {flag.default}")
    return ", ".join(parts)


def _when(at: str | None) -> str:
    """`` at <the time, as history prints it>``, or nothing without --at."""
    if at is None:
        return ""
    from keel.core.times import format_at, parse_at

    return f" at {format_at(parse_at(at))}"


# -- flags ------------------------------------------------------------------------------
@flags_app.command("list")
def flags_list(env: EnvOpt = "production", at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """Every flag in force in an environment (flags.yaml overlaid by the store)."""
    from keel.cli.render import print_json, table

    snap = _flags().snapshot(env, at=at)
    if as_json:
        print_json(snap.to_dict())
        return
    typer.echo(f"flags of {env}{_when(at)} (version {snap.version})")
    if at is not None and "file" in snap.sources.values():
        typer.echo("(the store's flags as they were then; flags.yaml as it is now: its past is in git)")
    table(
        ["flag", "kind", "state", "default", "source", "description"],
        [
            [k, f.kind, _describe(f), f.default, snap.sources.get(k, ""), f.description]
            for k, f in sorted(snap.flags.items())
        ],
    )


@flags_app.command("show")
def flags_show(key: FlagArg, env: EnvOpt = "production", at: AtOpt = None, as_json: JsonOpt = False) -> None:
    """One flag's definition in force (now, or at --at)."""
    import yaml

    from keel.cli.render import print_json

    flag = _flags().get(key, env, at=at)
    if as_json:
        print_json({"flag": key, "env": env, **flag.to_data()})
        return
    typer.echo(f"{key} ({flag.kind}, {env}{_when(at)}): {_describe(flag)}")
    typer.echo(yaml.safe_dump(flag.to_data(), sort_keys=False).rstrip())


@flags_app.command("set")
def flags_set(
    key: Annotated[str | None, typer.Argument(help="Flag key (omit with --file to import every flag).")] = None,
    rollout: Annotated[str | None, typer.Option("--rollout", help="Percent of units served True.")] = None,
    default: Annotated[str | None, typer.Option("--default", help="Variant served when off / unmatched.")] = None,
    enable: Annotated[bool | None, typer.Option("--enable/--disable", help="Turn on, or kill.")] = None,
    description: Annotated[str | None, typer.Option("--description", "-d")] = None,
    spec: Annotated[str | None, typer.Option("--spec", help="The definition as YAML/JSON text.")] = None,
    field: Annotated[list[str] | None, typer.Option("--set", help="FIELD=VALUE, YAML value (repeatable).")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Import from a flags.yaml.")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace the definition instead of merging.")] = False,
    env: EnvOpt = "production",
    reason: ReasonOpt = "",
) -> None:
    """Create or change a flag in the store (a new flag-set version; logged with who/why)."""
    api = _flags()
    if file is not None:
        from keel.core.flags import parse_flags_yaml

        flags = parse_flags_yaml(file.read_text(encoding="utf-8"), str(file))
        chosen = [key] if key else sorted(flags)
        live = api.snapshot(env).flags
        for k in chosen:
            if k not in flags:
                raise InvalidInput(f"{file} has no flag {k!r}", f"flags in it: {', '.join(sorted(flags))}")
            definition = flags[k].to_data()
            if k not in live:  # evaluated from this file so far: by its scheme (none named: crc32)
                definition["bucketing"] = flags[k].scheme
            # (a flag the store or the workspace file has keeps its scheme unless the file names one)
            change = api.set(k, definition, env=env, reason=reason or f"from {file}", replace=True)
            typer.echo(f"set {k} in {env}: version {change.version}")
        return
    if not key:
        raise InvalidInput("which flag?", "keel flags set FLAG --rollout 10  (or --file flags.yaml)")
    fields: dict[str, Any] = {}
    if spec is not None:
        from keel.core.yaml_safe import load_yaml

        parsed = load_yaml(spec, "--spec")
        if not isinstance(parsed, dict):
            raise InvalidInput("--spec must be a mapping", "e.g. --spec '{variants: {a: 1, b: 2}}'")
        fields.update(parsed)
    for name, value in _pairs(field, "field").items():
        head, dot, rest = name.partition(".")
        if dot:
            fields.setdefault(head, {})[rest] = _scalar(value)
        else:
            fields[name] = _scalar(value)
    if rollout is not None:
        fields["rollout"] = rollout
    if default is not None:
        fields["default"] = _scalar(default)
    if enable is not None:
        fields["enabled"] = enable
    if description is not None:
        fields["description"] = description
    change = api.set(key, env=env, reason=reason, replace=replace, **fields)
    typer.echo(f"set {key} in {env}: {_describe(change.flag)} (flag-set version {change.version})")


@flags_app.command("rollout")
def flags_rollout(
    key: FlagArg,
    percent: Annotated[str, typer.Argument(help="Percentage, e.g. 25% or 25.")],
    env: EnvOpt = "production",
    reason: ReasonOpt = "",
) -> None:
    """Serve a boolean flag to PERCENT of units (sticky: growing it only adds units)."""
    change = _flags().rollout(key, percent, env=env, reason=reason)
    typer.echo(f"{key} in {env}: rollout {change.flag.rollout:g}% (flag-set version {change.version})")


@flags_app.command("kill")
def flags_kill(key: FlagArg, env: EnvOpt = "production", reason: ReasonOpt = "") -> None:
    """The kill switch: everyone gets the flag's default (undo: keel flags set FLAG --enable)."""
    change = _flags().kill(key, env=env, reason=reason)
    typer.echo(f"killed {key} in {env}: serving {change.flag.default} (flag-set version {change.version})")


@flags_app.command("history")
def flags_history(key: FlagArg, env: EnvOpt = "production", as_json: JsonOpt = False) -> None:
    """Every change of a flag: when, who, why, and what it became."""
    from keel.cli.render import print_json, table
    from keel.core.flags import parse_flag
    from keel.core.times import format_at

    entries = _flags().history(key, env)
    if as_json:
        print_json([e.to_dict() for e in entries])
        return
    if not entries:
        typer.echo(f"{key} has no stored changes in {env}")
        return
    rows = []
    for e in entries:
        state = "deleted" if e.definition is None else _describe(parse_flag(key, e.definition))
        rows.append([format_at(e.move.at), e.move.who, e.move.old or "-", e.move.new or "-", state, e.move.reason])
    table(["when", "who", "from", "to", "state", "why"], rows)


@flags_app.command("eval")
def flags_eval(
    key: FlagArg,
    ctx: Annotated[list[str] | None, typer.Option("--ctx", "-c", help="Context attribute key=value.")] = None,
    env: EnvOpt = "production",
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a flag for a context, with the reason (e.g. --ctx user_id=42 --ctx plan=pro)."""
    from keel.cli.render import print_json

    client = _flags().client(env, refresh_seconds=0)
    found = client.explain(key, **_pairs(ctx, "context attribute"))
    if found["variant"] is None and found["reason"] == "no such flag":
        from keel.errors import NotFound

        raise NotFound(f"no flag {key!r} in {env!r}", "list flags with 'keel flags list'")
    if as_json:
        print_json(found)
        return
    typer.echo(f"{key} = {found['variant']}  (value {found['value']!r}; {found['reason']}; version {found['version']})")


# -- A/B tests ----------------------------------------------------------------------------
def _variant(text: str) -> dict[str, Any]:
    """``treatment:prompt=chat@2.0.0,model=gpt-4o,config.llm.temperature=0.2``."""
    name, _, rest = text.partition(":")
    if not name.strip():
        raise InvalidInput(f"invalid variant {text!r}", "write NAME[:prompt=chat@1.3.0,model=...,config.KEY=VALUE]")
    out: dict[str, Any] = {"name": name.strip()}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"invalid variant field {item!r} in {text!r}", "write key=value")
        if key.startswith("config."):
            out.setdefault("config", {})[key[len("config.") :]] = _scalar(value)
        elif key in ("prompt", "model"):
            out[key] = value
        elif key in ("payload", "weight"):
            out[key] = _scalar(value)
        else:
            raise InvalidInput(f"unknown variant field {key!r} in {text!r}", "use prompt, model, config.KEY, payload")
    return out


@ab_app.command("create")
def ab_create(
    name: ExpArg,
    variant: Annotated[
        list[str] | None, typer.Option("--variant", "-v", help="NAME[:prompt=..,model=..,config.KEY=..] (repeatable).")
    ] = None,
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="e.g. 0.5,0.5 (sum to 1).")] = None,
    hypothesis: Annotated[str, typer.Option("--hypothesis", help="What you expect and why.")] = "",
    unit: Annotated[str, typer.Option("--unit", help="Randomisation unit attribute.")] = "user_id",
    metric: Annotated[str, typer.Option("--metric", "-m", help="Primary metric.")] = "thumbs_up",
    lower_is_better: Annotated[bool, typer.Option("--lower-is-better", help="The primary metric should fall.")] = False,
    guardrail: Annotated[
        list[str] | None, typer.Option("--guardrail", "-g", help="METRIC[:higher|lower] = which way is worse.")
    ] = None,
    target: Annotated[list[str] | None, typer.Option("--target", help="Targeting attr=value (repeatable).")] = None,
    design: Annotated[
        str | None,
        typer.Option(
            "--design",
            help="sequential[:mde=..,baseline=..|sd=..] (default; look any time) or "
            "fixed:n=N | fixed:mde=..,baseline=..|sd=.. (verdict at the planned n); also alpha=, power=.",
        ),
    ] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="The definition as YAML.")] = None,
    reason: ReasonOpt = "",
) -> None:
    """Create a draft experiment (variants map to prompt / model versions and config overrides)."""
    spec: dict[str, Any] = {}
    if file is not None:
        from keel.core.yaml_safe import load_yaml

        loaded = load_yaml(file.read_text(encoding="utf-8"), str(file), syntax="malformed YAML")
        if not isinstance(loaded, dict):
            raise InvalidInput(f"{file} must hold a mapping", "name, variants, weights, ...")
        spec.update(loaded)
    variants = [_variant(v) for v in variant or []] or spec.get("variants")
    if not variants:
        raise InvalidInput(
            "an experiment needs variants", "--variant control:prompt=chat@1.3.0 --variant treatment:..."
        )
    if weights is not None:
        parts = [p.strip() for p in weights.split(",") if p.strip()]
        names = [v["name"] for v in variants] if isinstance(variants, list) else list(variants)
        if len(parts) != len(names):
            raise InvalidInput(f"{len(parts)} weights for {len(names)} variants", "give one weight per variant")
        try:
            spec["weights"] = dict(zip(names, (float(p) for p in parts), strict=True))
        except ValueError:
            raise InvalidInput(f"invalid weights {weights!r}", "e.g. --weights 0.5,0.5") from None
    guardrails = [_guardrail(g) for g in guardrail or []]
    api = _ab()
    exp = api.create(
        name,
        variants,
        hypothesis=hypothesis or spec.get("hypothesis", ""),
        unit=spec.get("unit", unit),
        weights=spec.get("weights"),
        primary_metric=spec.get("primary_metric", metric),
        higher_is_better=spec.get("higher_is_better", not lower_is_better),
        guardrails=guardrails or spec.get("guardrails", []),
        targeting={**(spec.get("targeting") or {}), **{k: _scalar(v) for k, v in _pairs(target, "target").items()}},
        salt=spec.get("salt", ""),
        design=_design(design) if design is not None else spec.get("design"),
        reason=reason,
    )
    split = ", ".join(f"{v.name} {v.weight:g}" for v in exp.variants)
    typer.echo(f"created experiment {exp.name} (draft): {split}; primary metric {exp.primary_metric}")
    typer.echo(exp.design.label())


def _guardrail(text: str) -> dict[str, Any]:
    """``METRIC[:higher|lower[:MARGIN]]``."""
    metric_name, _, rest = text.partition(":")
    worse, _, margin = rest.partition(":")
    out: dict[str, Any] = {"metric": metric_name, "worse": worse or "lower"}
    if margin:
        try:
            out["margin"] = float(margin)
        except ValueError:
            raise InvalidInput(
                f"invalid guardrail margin {margin!r} in {text!r}", "e.g. latency_ms:higher:50"
            ) from None
    return out


def _design(text: str) -> dict[str, Any]:
    """``sequential`` or ``fixed:n=5000`` or ``fixed:mde=0.03,baseline=0.3`` (numbers after '=')."""
    kind, _, rest = text.partition(":")
    out: dict[str, Any] = {"type": kind.strip()}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"invalid design field {item!r} in {text!r}", "write key=value, e.g. fixed:n=5000")
        out[key.strip()] = _scalar(value)
    return out


@ab_app.command("start")
def ab_start(name: ExpArg, reason: ReasonOpt = "") -> None:
    """Start assigning units (resolves and freezes every variant's versions)."""
    exp = _ab().start(name, reason=reason)
    typer.echo(f"started {exp.name}")
    for variant, resolved in exp.resolved.items():
        typer.echo(f"  {variant}: {', '.join(f'{k}={v}' for k, v in resolved.items()) or '-'}")


@ab_app.command("stop")
def ab_stop(name: ExpArg, reason: ReasonOpt = "") -> None:
    """Stop assigning units (an experiment stops once)."""
    exp = _ab().stop(name, reason=reason)
    typer.echo(f"stopped {exp.name}")


@ab_app.command("design")
def ab_design(
    name: ExpArg,
    design: Annotated[
        str, typer.Argument(help="sequential[:mde=..,baseline=..|sd=..] (the only design an old experiment can take).")
    ] = "sequential",
    reason: ReasonOpt = "",
) -> None:
    """Move an experiment created before designs existed to the sequential design (safe at any look)."""
    exp = _ab().set_design(name, _design(design), reason=reason)
    typer.echo(f"{exp.name}: {exp.design.label()}")


@ab_app.command("status")
def ab_status(
    name: Annotated[str | None, typer.Argument(help="Experiment (default: all).")] = None, as_json: JsonOpt = False
) -> None:
    """Experiments with their state and exposed units per variant."""
    from keel.cli.render import print_json, table
    from keel.core.entities import format_time

    api = _ab()
    if name is None:
        exps = api.list_experiments()
        if as_json:
            print_json([e.to_dict() for e in exps])
            return
        table(
            ["experiment", "status", "variants", "metric", "design", "started", "hypothesis"],
            [
                [
                    e.name,
                    e.status,
                    ", ".join(f"{v.name} {v.weight:g}" for v in e.variants),
                    e.primary_metric,
                    e.design.kind,
                    format_time(e.started_at) if e.started_at else "-",
                    e.hypothesis,
                ]
                for e in exps
            ],  # fmt: skip
        )
        return
    doc = api.status(name)
    if as_json:
        print_json(doc)
        return
    typer.echo(f"{doc['name']}: {doc['status']}   unit {doc['unit']}   primary metric {doc['primary_metric']}")
    design = doc.get("design") or {"type": "unstated"}
    planned = f", {design['n']} units per variant planned" if design.get("n") else ""
    typer.echo(f"design: {design['type']}{planned}")
    if doc["hypothesis"]:
        typer.echo(f"hypothesis: {doc['hypothesis']}")
    table(
        ["variant", "weight", "exposed", "resolved"],
        [
            [
                v["name"],
                v["weight"],
                doc["exposures"].get(v["name"], 0),
                ", ".join(f"{k}={x}" for k, x in doc["resolved"].get(v["name"], {}).items()),
            ]
            for v in doc["variants"]
        ],  # fmt: skip
    )


@ab_app.command("analyze")
def ab_analyze(
    name: ExpArg,
    mde: Annotated[float | None, typer.Option("--mde", help="Minimum detectable effect (absolute).")] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", help="Significance level (default: the design's).")] = None,
    power: Annotated[float, typer.Option("--power", help="Power for the sample-size estimate.")] = 0.8,
    as_json: JsonOpt = False,
) -> None:
    """Per-variant n, mean/rate with CI, difference with CI and p-value, SRM check, sample size, verdict."""
    from keel.cli.render import console, print_json, table

    result = _ab().analyze(name, mde=mde, alpha=alpha, power=power)
    if as_json:
        print_json(result.to_dict())
        return
    out = console()
    exposures = ", ".join(f"{k} {v}" for k, v in result.exposures.items())
    srm = "MISMATCH" if result.srm else "ok"
    out.print(f"{result.experiment}: exposures {exposures}; sample ratio {srm} (p = {result.srm_p:.3g})",
              highlight=False, markup=False)  # fmt: skip
    sequential = result.design.kind == "sequential"
    comparisons = {(c.metric, c.variant): c for c in result.comparisons}
    for metric, rows in result.stats.items():
        binary = result.binary.get(metric, False)
        kind = "rate" if binary else "mean"
        body = []
        for s in rows:
            c = comparisons.get((metric, s.variant))
            body.append(
                [
                    s.variant,
                    s.n,
                    _num(s.mean, binary),
                    f"[{_num(s.ci[0], binary)}, {_num(s.ci[1], binary)}]",
                    "(control)" if c is None else _num(c.diff, binary, sign=True),
                    "" if c is None else f"[{_num(c.ci[0], binary, True)}, {_num(c.ci[1], binary, True)}]",
                    "" if c is None else _p_cell(c),
                ]
            )
        primary = " (primary)" if metric == result.primary_metric else ""
        diff_ci = "diff CS (always valid)" if sequential else f"diff {100 * (1 - result.alpha):.4g}% CI"
        p_head = "p (always valid)" if sequential else "p"
        table(["variant", "n", kind, "95% CI", "diff", diff_ci, p_head], body, title=f"{metric}{primary}")
    if result.required_n > 0:
        import math

        design = result.design
        effect = _num(result.mde, result.binary.get(result.primary_metric, False), True)
        target = f" to detect {effect}" if math.isfinite(result.mde) else ""
        if design.kind == "fixed":
            line = f"Planned sample size (fixed horizon){target}: {result.required_n} per variant"
        else:
            test = " for the sequential test" if design.kind == "sequential" else ""
            level = f"alpha {result.alpha:g}, power {design.power if design.n else power:g}"
            line = f"Sample size{test}{target} on {result.primary_metric} ({level}): {result.required_n} per variant"
        out.print(line, highlight=False, markup=False)
    for metric in dict.fromkeys(g.metric for g in result.guardrail_checks):
        checks = [g for g in result.guardrail_checks if g.metric == metric]
        how = f"non-inferiority, margin {checks[0].margin:g}" if checks[0].margin is not None else checks[0].method
        states = ", ".join(f"{g.variant} {g.status} (harm <= {g.bound:.4g})" for g in checks)
        out.print(f"Guardrail {metric} ({how}): {states}", highlight=False, markup=False)
    for line in result.verdict:
        out.print(line, highlight=False, markup=False)


def _p_cell(c: Any) -> str:
    """The adjusted p, ``*`` when significant, ``(interim)`` before a fixed horizon is reached."""
    return f"{c.p_adjusted:.3g}{' *' if c.significant else ''}{'' if c.decided else ' (interim)'}"


def _num(x: float, binary: bool, sign: bool = False) -> str:
    import math

    if x is None or math.isnan(x):
        return "-"
    if binary:
        return f"{x * 100:+.2f}%" if sign else f"{x * 100:.2f}%"
    return f"{x:+.4g}" if sign else f"{x:.4g}"
