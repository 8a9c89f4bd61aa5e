"""A/B tests: create, start, stop, record exposures and outcomes, analyze.

- ``create`` stores a draft (the definition is checked: weights sum to 1,
  every prompt / model reference resolves).
- ``start`` resolves every variant's references to exact versions
  (``chat@production`` -> ``chat@1.3.0``, ``assistant@Production`` ->
  ``assistant@3``) and freezes them on the experiment; exposures carry them.
  Status moves (draft -> running -> stopped) are in the reflog (kind
  ``experiment``, ref ``status``) with who and why. Starting a running or
  stopped experiment, or stopping one that is not running, is a Conflict.
- Exposures (one per unit: the first one wins) and outcomes are written in
  batches (:meth:`ABService.write_batch`, fed by the SDK's background writer).
- ``analyze`` reads exposures, logged outcomes and conversation feedback
  (records whose metadata carries the unit, e.g. ``{"user_id": "u42"}``,
  logged while the experiment ran: ``thumbs_up`` is 1 for a thumb up and 0
  for a thumb down, ``score`` is the feedback score) and runs
  :func:`keel.core.abtests.analyze`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.core.abtests import Analysis, Experiment, analyze, compile_assigner, parse_experiment
from keel.core.batch import check_batch_id
from keel.core.bucketing import DEFAULT
from keel.core.entities import now_ms
from keel.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from keel.meta.abtests import ABStore, ExperimentRow
from keel.meta.refs import RefMove, Refs
from keel.services.audit import who as audit_who
from keel.services.contract import (
    operation,
    service,
)
from keel.services.workspace import Store

__all__ = ["ABBatch", "ABService", "KIND"]

KIND = "experiment"


@dataclass
class ABBatch:
    """Rows waiting to be written in one transaction.

    - ``exposures``: ``(experiment, unit, variant, resolved JSON, run_id, at)``
    - ``outcomes``: ``(experiment, unit, metric, value, at)``
    """

    exposures: list[tuple[Any, ...]] = field(default_factory=list)
    outcomes: list[tuple[Any, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.exposures) + len(self.outcomes)


def _experiment(row: ExperimentRow) -> Experiment:
    exp = parse_experiment(row.definition)
    from dataclasses import replace

    return replace(
        exp,
        status=row.status,
        started_at=row.started_at,
        stopped_at=row.stopped_at,
        created_at=row.created_at,
        author=row.author,
        resolved=row.resolved,
    )


@service("abtests")
class ABService:
    """The A/B tests of one store."""

    def __init__(self, store: Store, prompts: Any = None, models: Any = None) -> None:
        self.store = store
        self.db = store.db
        self.raw = ABStore(store.db)
        self._prompts = prompts
        self._models = models

    @property
    def prompts(self) -> Any:
        """The prompt registry (created on first use)."""
        if self._prompts is None:
            from keel.services.prompts import PromptService

            self._prompts = PromptService(self.store)
        return self._prompts

    @property
    def models(self) -> Any:
        """The model registry (created on first use)."""
        if self._models is None:
            from keel.services.models import ModelService

            self._models = ModelService(self.store)
        return self._models

    # -- lifecycle --------------------------------------------------------------------------
    @operation("writer")
    def create(self, spec: Mapping[str, Any], who: str | None = None, reason: str = "") -> Experiment:
        """Store a draft experiment (AlreadyExists if the name is taken)."""
        if not isinstance(spec, Mapping):
            raise InvalidInput("an experiment is a mapping (name, variants, ...)", "see docs/flags.md")
        # a new experiment: the well-mixed bucketing, and (unless the spec states one) the design
        # that stays valid however often it is looked at
        exp = parse_experiment(spec, default_bucketing=DEFAULT, default_design="sequential")
        self.resolve(exp)  # every reference must exist now
        author = audit_who(who)
        with self.db.write() as conn:
            if ABStore.get(conn, exp.name) is not None:
                raise AlreadyExists(f"an experiment named {exp.name!r} already exists", "choose another name")
            ABStore.create(conn, exp.name, exp.definition(), author)
            Refs.set(conn, KIND, exp.name, "status", "draft", author, reason or "created")
        return self.get(exp.name)

    @operation("reader")
    def get(self, name: str) -> Experiment:
        """One experiment (NotFound if absent)."""
        with self.db.read() as conn:
            row = ABStore.get(conn, name)
        if row is None:
            raise NotFound(f"no experiment {name!r}", "list experiments with 'keel ab status'")
        return _experiment(row)

    @operation("reader")
    def list_experiments(self) -> list[Experiment]:
        """Every experiment, by name."""
        with self.db.read() as conn:
            return [_experiment(r) for r in ABStore.all(conn)]

    @operation("writer")
    def start(self, name: str, who: str | None = None, reason: str = "") -> Experiment:
        """Resolve the variants' versions and start assigning (Conflict unless a draft)."""
        exp = self.get(name)
        if exp.status != "draft":
            raise Conflict(
                f"experiment {name!r} is {exp.status}; only a draft can start",
                "create a new experiment to run it again" if exp.status == "stopped" else "it is already running",
            )
        resolved = self.resolve(exp)
        author = audit_who(who)
        with self.db.write() as conn:
            row = ABStore.get(conn, name)
            if row is None or row.status != "draft":  # lost a race with another start
                raise Conflict(f"experiment {name!r} is no longer a draft", "see 'keel ab status'")
            ABStore.set_status(conn, name, "running", started_at=now_ms(), resolved=resolved)
            Refs.set(conn, KIND, name, "status", "running", author, reason)
        return self.get(name)

    @operation("writer")
    def stop(self, name: str, who: str | None = None, reason: str = "") -> Experiment:
        """Stop assigning (Conflict if it is not running: stopping twice is an error)."""
        author = audit_who(who)
        with self.db.write() as conn:
            row = ABStore.get(conn, name)
            if row is None:
                raise NotFound(f"no experiment {name!r}", "list experiments with 'keel ab status'")
            if row.status != "running":
                raise Conflict(
                    f"experiment {name!r} is {'already stopped' if row.status == 'stopped' else 'not started'}",
                    "only a running experiment can be stopped",
                )
            ABStore.set_status(conn, name, "stopped", stopped_at=now_ms())
            Refs.set(conn, KIND, name, "status", "stopped", author, reason)
        return self.get(name)

    @operation("writer")
    def set_design(
        self, name: str, design: str | dict[str, Any], who: str | None = None, reason: str = ""
    ) -> Experiment:
        """Give an experiment stored before designs existed (``unstated``) the sequential design.

        The always-valid test holds from its first unit whatever was looked at before, so an
        old experiment, even a running one, can move to it; no other change of design is
        allowed (a fixed horizon chosen after looking is no fixed horizon, and a stated design
        is part of what was agreed): Conflict. The move is in the reflog (ref ``design``)."""
        author = audit_who(who)
        with self.db.write() as conn:
            row = ABStore.get(conn, name)
            if row is None:
                raise NotFound(f"no experiment {name!r}", "list experiments with 'keel ab status'")
            exp = _experiment(row)
            definition = {**exp.definition(), "design": design}
            new = parse_experiment(definition)  # checks the design
            if exp.design.kind != "unstated" or new.design.kind != "sequential":
                raise Conflict(
                    f"experiment {name!r} has design {exp.design.kind!r}; only an experiment with no stated "
                    f"design can move, and only to 'sequential' (not {new.design.kind!r})",
                    "create a new experiment with the design you want",
                )
            ABStore.set_definition(conn, name, new.definition())
            Refs.set(conn, KIND, name, "design", "sequential", author, reason or "design stated")
        return self.get(name)

    @operation("reader")
    def history(self, name: str) -> list[RefMove]:
        """The experiment's status moves (reflog), oldest first."""
        with self.db.read() as conn:
            return Refs.history(conn, KIND, name, "status")

    # -- references -----------------------------------------------------------------------
    @operation("reader")
    def resolve(self, exp: Experiment) -> dict[str, dict[str, Any]]:
        """``{variant: {"prompt": "chat@1.3.0", "model": "assistant@3", "config": {...}}}``."""
        out: dict[str, dict[str, Any]] = {}
        for v in exp.variants:
            entry: dict[str, Any] = {}
            if v.prompt is not None:
                entry["prompt"] = self._resolve_prompt(exp.name, v.name, v.prompt)
            if v.model is not None:
                entry["model"] = self._resolve_model(exp.name, v.name, v.model)
            if v.config:
                entry["config"] = dict(v.config)
            if v.payload is not None:
                entry["payload"] = v.payload
            out[v.name] = entry
        return out

    def _resolve_prompt(self, exp: str, variant: str, ref: str) -> str:
        from keel.services.prompts import parse_prompt_ref

        name, selector = parse_prompt_ref(ref.removeprefix("prompt:"))
        try:
            version = self.prompts.resolve(name, selector)
            self.prompts.get(name, version)
        except NotFound as exc:
            raise InvalidInput(
                f"experiment {exp!r}, variant {variant!r}: prompt {ref!r} does not resolve: {exc.message}",
                "register the prompt version first or fix the reference",
            ) from None
        return f"{name}@{version}"

    def _resolve_model(self, exp: str, variant: str, ref: str) -> str:
        name, sep, selector = ref.partition("@")
        if not sep:
            return ref  # an external model name (gpt-4o): nothing to resolve
        try:
            if selector.isdigit():
                mv = self.models.get(name, version=int(selector))
            elif selector.lower() in ("none", "staging", "production", "archived"):
                mv = self.models.get(name, stage=selector)
            elif selector == "latest":
                mv = self.models.get(name)
            else:
                mv = self.models.get(name, alias=selector)
        except NotFound as exc:
            raise InvalidInput(
                f"experiment {exp!r}, variant {variant!r}: model {ref!r} does not resolve: {exc.message}",
                "register the model version first or fix the reference",
            ) from None
        return f"{mv.name}@{mv.version}"

    # -- exposures and outcomes -----------------------------------------------------------
    @operation("writer")
    def write_batch(self, batch: ABBatch, batch_id: str | None = None) -> None:
        """Write queued exposures and outcomes in one transaction; ``batch_id`` (made by the
        SDK) makes it idempotent (see :mod:`keel.meta.delivered`)."""
        self.raw.write(batch.exposures, batch.outcomes, check_batch_id(batch_id))

    def maintain(self) -> None:
        """Background upkeep of the store (SQLite: a passive WAL checkpoint)."""
        self.db.checkpoint()

    @operation("reader")
    def exposure(self, name: str, unit: Any) -> tuple[str, dict[str, Any], int] | None:
        """A unit's recorded exposure ``(variant, resolved, at)``, or None."""
        with self.db.read() as conn:
            return ABStore.exposure(conn, name, str(unit))

    @operation("reader")
    def counts(self, name: str) -> dict[str, int]:
        """Exposed units per variant."""
        exp = self.get(name)
        with self.db.read() as conn:
            assignments = ABStore.assignments(conn, name)
        out = {v.name: 0 for v in exp.variants}
        for variant in assignments.values():
            out[variant] = out.get(variant, 0) + 1
        return out

    @operation("reader")
    def outcomes(self, exp: Experiment) -> tuple[dict[str, str], list[tuple[str, str, float]]]:
        """Assignments (in exposure order for a fixed-horizon design, whose analysis takes
        the first planned units) and every outcome (logged ones plus conversation feedback)."""
        with self.db.read() as conn:
            if exp.design.kind == "fixed":
                assignments = ABStore.assignments_in_order(conn, exp.name)
            else:
                assignments = ABStore.assignments(conn, exp.name)
            outcomes = ABStore.outcomes(conn, exp.name)
            feedback = ABStore.feedback(conn, exp.started_at, exp.stopped_at)
        for metadata, thumb, score in feedback:
            try:
                meta = json.loads(metadata) if metadata else {}
            except ValueError:
                continue
            if not isinstance(meta, dict):
                continue
            tagged = meta.get("experiment")
            if tagged is not None and tagged != exp.name:
                continue
            unit = meta.get(exp.unit)
            if unit is None:
                continue
            unit = str(unit)
            if unit not in assignments:
                continue
            if thumb is not None:
                outcomes.append((unit, "thumbs_up", 1.0 if thumb > 0 else 0.0))
            if score is not None:
                outcomes.append((unit, "score", float(score)))
        return assignments, outcomes

    @operation("reader")
    def analyze(self, name: str, mde: float | None = None, alpha: float | None = None, power: float = 0.8) -> Analysis:
        """The analysis of an experiment under its design (see :func:`keel.core.abtests.analyze`);
        ``alpha`` defaults to the design's."""
        if mde is not None and (not isinstance(mde, (int, float)) or mde <= 0):
            raise InvalidInput(f"invalid minimum detectable effect {mde!r}", "give an absolute effect > 0, e.g. 0.02")
        if (alpha is not None and not 0 < alpha < 1) or not 0 < power < 1:
            raise InvalidInput("alpha and power must be between 0 and 1", "e.g. alpha=0.05, power=0.8")
        exp = self.get(name)
        assignments, outcomes = self.outcomes(exp)
        return analyze(exp, assignments, outcomes, mde=mde, alpha=alpha, power=power)

    @staticmethod
    def assigner(exp: Experiment) -> Any:
        """The compiled assignment function of an experiment."""
        return compile_assigner(exp)
