"""``keel gate CANDIDATE --baseline production --metric exact_match``: the evaluation gate for CI.

Prints the comparison as Markdown (for a pull-request comment; ``--json`` for
JSON) and exits 0 when the gate passes, 1 on a significant regression beyond
``--max-drop``, 2 on bad input (an unknown run, a metric the runs lack, no
baseline run). See :mod:`keel.sdk.gate` and docs/ci.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["gate_command"]


def gate_command(
    candidate: Annotated[
        str, typer.Argument(help="The candidate evaluation run (id or prefix), or a prompt version NAME@VERSION.")
    ],
    baseline: Annotated[
        str,
        typer.Option(
            "--baseline",
            "-b",
            help="What to compare with: an alias of the candidate's prompt (production), NAME@ALIAS, "
            "model:NAME@ALIAS, or run:RUN_ID.",
        ),
    ] = "production",  # fmt: skip
    metric: Annotated[str, typer.Option("--metric", "-m", help="The score to gate on.")] = "exact_match",
    max_drop: Annotated[
        float, typer.Option("--max-drop", help="Drop tolerated even when significant (the metric's units).")
    ] = 0.0,
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level.")] = 0.05,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="Server for evaluating a NAME@VERSION candidate.")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the Markdown to this file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of Markdown.")] = False,
) -> None:
    """Fail (exit 1) when an evaluation is significantly worse than what an alias points at; print Markdown.

    The baseline is the latest finished evaluation run of the version --baseline
    names (found through lineage). Paired test on the samples both runs scored
    (unpaired when they share none). Exit 0 passed, 1 regression, 2 bad input.
    """
    import keel.sdk.gate as gates
    from keel.cli.render import print_json
    from keel.errors import InvalidInput, NotFound

    try:
        result = gates.gate(candidate, baseline, metric, max_drop=max_drop, alpha=alpha, base_url=base_url)
    except NotFound as exc:  # for a gate, an unknown run or alias is bad input: exit 2, as documented
        raise InvalidInput(exc.message, exc.hint) from None
    markdown = result.to_markdown()
    if output is not None:
        output.write_text(markdown, encoding="utf-8")
    if as_json:
        print_json(result.to_dict())
    else:
        typer.echo(markdown, nl=False)
    if result.regression:
        typer.echo(f"keel gate: regression: {result.reason()}", err=True)
        raise typer.Exit(1)
