"""A store with something of everything, and the check that a restored copy has it all (backup tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from keel.core.batch import WriteBatch
from keel.core.entities import now_ms
from keel.services.prompts import PromptService
from keel.services.tracking import TrackingService
from keel.services.verify import verify_store
from keel.services.workspace import Store

__all__ = ["Seeded", "check_restored", "seed"]


@dataclass
class Seeded:
    """What :func:`seed` wrote."""

    runs: dict[str, int] = field(default_factory=dict)  # run id -> metric steps
    artifacts: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (run id, path) -> content
    prompts: dict[str, str] = field(default_factory=dict)  # version -> template


def seed(store: Store, runs: int = 6, big: int = 200_000) -> Seeded:
    """Finished runs with params, metrics and artifacts (one of ``big`` bytes each), a prompt
    with two versions and an alias moved twice."""
    tracking = TrackingService(store)
    seeded = Seeded()
    ts = now_ms()
    for index in range(runs):
        run = tracking.start_run("backup", f"run-{index}", tags={"index": index}).run_id
        rows = []
        for path, content in (
            ("notes.txt", f"run {index}\n".encode()),
            ("data/big.bin", os.urandom(big)),
            ("data/shared.txt", b"the same in every run\n"),
        ):
            oid, size = tracking.objects.put_bytes(content), len(content)
            rows.append((run, path, oid, size, "file", ts))
            seeded.artifacts[(run, path)] = content
        batch = WriteBatch(
            metrics=[(run, "loss", 1 / (s + 1), s, ts + s) for s in range(50)]
            + [(run, "acc", s / 50, s, ts + s) for s in range(50)],
            params=[],
            artifacts=rows,
            run_ends=[(run, "finished", ts + 1000, None)],
        )
        tracking.write_batch(batch)
        seeded.runs[run] = 50
    prompts = PromptService(store)
    for template in ("Hello {{ name }}", "Hi {{ name }}, welcome"):
        version, _ = prompts.register("greeting", template, model="gpt-4o", changelog=f"say: {template}")
        seeded.prompts[version.version] = template
    first, second = sorted(seeded.prompts)
    prompts.set_alias("greeting", "production", first, reason="first")
    prompts.set_alias("greeting", "production", second, reason="second")
    return seeded


def check_restored(store: Store, seeded: Seeded) -> None:
    """Everything :func:`seed` wrote is in ``store``, and ``keel verify`` finds nothing wrong."""
    tracking = TrackingService(store)
    for run, steps in seeded.runs.items():
        record = tracking.get_run(run)
        assert record.status == "finished"
        assert [m.step for m in tracking.metric_history(run, "loss")] == list(range(steps))
        assert len(tracking.metric_history(run, "acc")) == steps
    for (run, path), content in seeded.artifacts.items():
        assert tracking.read_artifact(run, path) == content
    prompts = PromptService(store)
    for version, template in seeded.prompts.items():
        assert prompts.get("greeting", version).content.template == template
    assert prompts.resolve("greeting", "production") == max(seeded.prompts)
    report = verify_store(store)
    assert report.ok, report
    assert report.checked >= len({c for c in seeded.artifacts.values()})
