"""Loading a prompt or a model through an alias inside a run records the alias with the version
(``prompt:chat@1.0.0 via production``), so the runs that used ``production`` at the time are one
query away after the alias moves; naming the version records no alias."""

from __future__ import annotations

from pathlib import Path

import keel


def test_loads_through_aliases_are_recorded_with_the_alias(ws: Path) -> None:
    keel.prompts.register("chat", "Hello {{ name }}", changelog="first")
    keel.prompts.set_alias("chat", "production", "1.0.0")
    keel.models.register("ranker", "s3://bucket/ranker-v1")
    keel.models.set_alias("ranker", "champion", 1)
    with keel.start_run(project="p") as via_alias:
        keel.prompts.load("chat@production", ttl=0)
        keel.models.get("ranker", alias="champion")
    with keel.start_run(project="p") as direct:
        keel.prompts.load("chat@1.0.0", ttl=0)
        keel.models.get("ranker", version=1)
    keel.prompts.register("chat", "Hi {{ name }}", changelog="second")
    keel.prompts.set_alias("chat", "production", "1.0.1")

    used = keel.lineage.runs_using("prompt:chat@production")
    assert [(u.run_id, u.entity.version) for u in used] == [(via_alias.id, "1.0.0")]
    edges = {(e.entity.kind, e.entity.version, e.ref) for e in keel.lineage.of(via_alias.id)}
    assert ("prompt", "1.0.0", "production") in edges and ("model", "1", "champion") in edges
    direct_refs = {e.ref for e in keel.lineage.of(direct.id) if e.direction == "input"}
    assert direct_refs == {""}
