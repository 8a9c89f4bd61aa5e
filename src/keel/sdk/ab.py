"""``keel.ab``: A/B tests from Python.

::

    keel.ab.create(
        "prompt-v2",
        hypothesis="the v2 prompt raises thumbs-up",
        variants=[{"name": "control", "prompt": "chat@1.3.0"},
                  {"name": "treatment", "prompt": "chat@2.0.0", "config": {"llm.temperature": 0.2}}],
        weights={"control": 0.5, "treatment": 0.5},
        primary_metric="thumbs_up",
        guardrails=[{"metric": "latency_ms", "worse": "higher"}],
    )
    keel.ab.start("prompt-v2")

    a = keel.ab.assign("prompt-v2", user_id=uid)     # None when not running / not targeted
    prompt = keel.prompts.load(a.prompt)              # "chat@2.0.0", resolved at start
    keel.conversations.log(messages=..., metadata={"user_id": uid})   # feedback -> thumbs_up / score
    keel.ab.log_outcome("prompt-v2", uid, "latency_ms", 840)

    print(keel.ab.analyze("prompt-v2").verdict)
    keel.ab.stop("prompt-v2")

The analysis follows the experiment's design (``design=``: sequential by default,
valid however often it is looked at; or a fixed horizon; see docs/ab-statistics.md).

Assignment is deterministic (a hash of experiment, salt and unit by the experiment's
recorded scheme: BLAKE2b for new ones, crc32 for ones created before) and costs a
few dict lookups; the first exposure of each unit is queued with the versions
the variant resolved to and written in batches by a background thread
(``keel.ab.flush()`` writes now; interpreter exit flushes).

The running experiments are held in memory and never read on the request path
after the first ``assign`` (which waits at most ``KEEL_FIRST_LOAD_TIMEOUT``
seconds, 2, and answers None meanwhile). A start or stop, from any process,
reaches every running process within 2 s (typically under 1 s): the session's
refresher (:mod:`keel.sdk.live`) follows the store's change counters and re-reads
the experiments when one changed (and at least every :data:`BACKSTOP_SECONDS`).
While the store does not answer, assignment goes on with what is held.

Per experiment, the units already exposed are remembered in a bounded cache of at
most :data:`SEEN_MAX` units (two generations of half that: when the current one
is full it becomes the previous one and the older is forgotten; a unit found in
the previous generation moves back to the current). A unit forgotten and seen
again is assigned again (the same variant: assignment is deterministic) and its
exposure queued again; the store keeps the first exposure of each unit, so this
costs a row written twice, never a unit counted twice.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core.abtests import Analysis, Experiment
from keel.core.entities import now_ms
from keel.errors import InvalidInput
from keel.sdk import live
from keel.sdk.fluent import active_run
from keel.sdk.session import _SESSIONS, get_session
from keel.sdk.traces import note
from keel.sdk.writer import BatchWriter
from keel.services.abtests import ABBatch, ABService

__all__ = [
    "Analysis",
    "Assignment",
    "Experiment",
    "analyze",
    "assign",
    "create",
    "flush",
    "get",
    "history",
    "list_experiments",
    "log_outcome",
    "set_design",
    "start",
    "status",
    "stop",
]

log = logging.getLogger("keel")
BACKSTOP_SECONDS = 60.0  # the running experiments are re-read at least this often, change or not
SEEN_MAX = 100_000  # units remembered per experiment (see the module doc)
_SEEN_GENERATION = SEEN_MAX // 2


@dataclass(frozen=True)
class Assignment:
    """The variant a unit is in, with what it resolved to when the experiment started."""

    experiment: str
    variant: str
    prompt: str | None = None
    model: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    payload: Any = None

    def metadata(self, unit: Any = None, unit_key: str = "user_id") -> dict[str, Any]:
        """What to put in a conversation's metadata so its feedback counts for this experiment."""
        out: dict[str, Any] = {"experiment": self.experiment, "variant": self.variant}
        if unit is not None:
            out[unit_key] = unit
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "experiment": self.experiment,
            "variant": self.variant,
            "prompt": self.prompt,
            "model": self.model,
            "config": dict(self.config),
            "payload": self.payload,
        }


class _Compiled:
    __slots__ = ("assign", "by_variant", "exp", "previous", "resolved_json", "seen", "sticky", "unit")

    def __init__(self, exp: Experiment, service: ABService) -> None:
        self.exp = exp
        self.unit = exp.unit
        self.assign = service.assigner(exp)
        self.by_variant: dict[str, Assignment] = {}
        self.resolved_json: dict[str, str] = {}
        for v in exp.variants:
            r = exp.resolved.get(v.name, {})
            self.by_variant[v.name] = Assignment(
                exp.name, v.name, r.get("prompt", v.prompt), r.get("model", v.model), dict(v.config), v.payload
            )
            self.resolved_json[v.name] = json.dumps(r, sort_keys=True)
        # unit -> its assignment: exposed once; without targeting, also the answer next time.
        # Two generations of at most _SEEN_GENERATION units each (see the module doc).
        self.seen: dict[str, Assignment] = {}
        self.previous: dict[str, Assignment] = {}
        self.sticky = not exp.targeting


class _State:
    """Per store: the service, the exposure writer and the running experiments."""

    def __init__(self) -> None:
        self.session = get_session()
        self.key: Any = next((k for k, s in _SESSIONS.items() if s is self.session), None)
        service = self.session.abtests
        self.service: ABService = service
        writer = self.session.exposure_writer  # the session's: spooled, retried, flushed at exit
        writer.on_reject = _forget_exposed
        self.writer: BatchWriter = writer
        self.running: dict[str, _Compiled] = {}
        self.loaded = time.monotonic()
        self.lock = threading.Lock()
        try:  # the first load may wait, briefly (assign answers None until it arrives)
            live.first_load(("ab", id(self)), self._reload, "loading the running experiments")
        except Exception as exc:
            _warn("*", "refresh", "could not read the running experiments (retrying in the background): %s", exc)
        self.refresher = _Refresher(self)
        self.refresher.watcher.subscribe(self.refresher)

    def valid(self) -> bool:
        return self.key is not None and _SESSIONS.get(self.key) is self.session

    def refresh(self) -> None:
        """Re-read the running experiments now (errors keep what is held, logged)."""
        try:
            self._reload()
        except Exception as exc:
            _warn("*", "refresh", "could not read the running experiments: %s", exc)

    def _reload(self) -> None:
        with self.lock:
            running = {e.name: e for e in self.service.list_experiments() if e.status == "running"}
            fresh = {}
            for name, exp in running.items():
                old = self.running.get(name)
                fresh[name] = old if old is not None and old.exp == exp else _Compiled(exp, self.service)
            self.running = fresh  # one swap: assign sees the old or the new set
            self.loaded = time.monotonic()


class _Refresher(live.Listener):
    """Re-reads a store's running experiments when one changed (and every BACKSTOP_SECONDS)."""

    kinds = frozenset({"experiment"})

    def __init__(self, state: _State) -> None:
        self._state = weakref.ref(state)
        self.watcher = live.watcher(state.session)

    def __repr__(self) -> str:
        return "the running experiments"

    def alive(self) -> bool:
        state = self._state()
        return state is not None and state.valid()

    def due(self) -> bool:
        state = self._state()
        return state is not None and time.monotonic() - state.loaded > BACKSTOP_SECONDS

    def refresh(self, changed: bool) -> None:
        state = self._state()
        if state is not None:
            state._reload()


_state: _State | None = None
_state_lock = threading.Lock()
_writers: list[BatchWriter] = []
_warned: dict[tuple[str, str], float] = {}


def _forget_exposed(batch: ABBatch) -> None:
    """Exposures the store refused for good: forget their units, so the next assign() records
    them again (a unit counts as exposed once its exposure is written)."""
    state = _state
    if state is None:
        return
    for row in batch.exposures:
        compiled = state.running.get(row[0])
        if compiled is not None:
            compiled.seen.pop(row[1], None)
            compiled.previous.pop(row[1], None)


def _warn(key: str, kind: str, message: str, *args: Any) -> None:
    now = time.monotonic()
    last = _warned.get((key, kind))
    if last is not None and now - last < 60:
        return
    if len(_warned) > 10_000:
        _warned.clear()
    _warned[(key, kind)] = now
    log.warning("keel ab: " + message, *args)


def _current() -> _State:
    global _state
    state = _state
    if state is None or not state.valid():
        with _state_lock:
            state = _state
            if state is None or not state.valid():
                state = _State()
                _state = state
    return state


def _service() -> ABService:
    return _current().service


# -- the hot path ---------------------------------------------------------------------------
def assign(experiment: str, unit: Any = None, /, **context: Any) -> Assignment | None:
    """The unit's variant of a running experiment, or None (not running, not targeted, no unit).

    The unit is ``unit`` or ``context[<experiment unit>]`` (e.g. ``user_id=``). The
    first exposure of each unit is recorded (batched). Never raises: errors log and
    return None.
    """
    try:
        state = _state
        if state is None or _SESSIONS.get(state.key) is not state.session:
            state = _current()
        compiled = state.running.get(experiment)
        if compiled is None:
            return None
        if unit is None:
            unit = context.get(compiled.unit)
            if unit is None:
                _warn(experiment, "unit", "assign(%r) got no %r: not assigned", experiment, compiled.unit)
                return None
        key = unit if type(unit) is str else str(unit)
        seen = compiled.seen
        hit = seen.get(key)
        if hit is None and compiled.previous:
            hit = compiled.previous.get(key)
            if hit is not None:
                seen[key] = hit  # seen again: back to the current generation
        if hit is not None and compiled.sticky:
            note("ab", experiment, hit.variant)  # inside a trace: the current span's arm
            return hit
        name = compiled.assign(key, context)
        if name is None:
            return None
        assigned = compiled.by_variant[name]
        if hit is None:
            if len(seen) >= _SEEN_GENERATION:
                compiled.previous, compiled.seen = seen, {}
                seen = compiled.seen
            seen[key] = assigned
            run = active_run()
            state.writer.add(
                "x",
                (experiment, key, name, compiled.resolved_json[name], None if run is None else run.id, now_ms()),
            )
        note("ab", experiment, name)
        return assigned
    except Exception as exc:
        _warn(experiment, "error", "assign(%r) failed: %s", experiment, exc)
        return None


def log_outcome(experiment: str, unit: Any, metric: str, value: float, strict: bool = False) -> bool:
    """Queue one outcome value for a unit (batched). Bad input logs and returns False
    (``strict``: raises InvalidInput)."""
    try:
        if not isinstance(metric, str) or not metric or len(metric) > 200:
            raise InvalidInput(f"invalid metric name {metric!r}", "give a name like thumbs_up or latency_ms")
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidInput(f"invalid outcome value {value!r} for {metric!r}", "give a finite number")
        if unit is None:
            raise InvalidInput("log_outcome needs a unit", "log_outcome(exp, user_id, metric, value)")
        _current().writer.add("o", (experiment, str(unit), metric, float(value), now_ms()))
        return True
    except Exception as exc:
        if strict:
            raise
        _warn(experiment, "outcome", "log_outcome(%r) dropped: %s", experiment, exc)
        return False


def flush() -> None:
    """Write queued exposures and outcomes now."""
    _current().writer.flush()


def refresh() -> None:
    """Re-read the running experiments now (otherwise when one changes: see the module doc)."""
    _current().refresh()


# -- management -----------------------------------------------------------------------------
def create(
    name: str,
    variants: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    *,
    hypothesis: str = "",
    unit: str = "user_id",
    weights: Mapping[str, float] | None = None,
    primary_metric: str = "thumbs_up",
    higher_is_better: bool = True,
    guardrails: Sequence[Any] = (),
    targeting: Mapping[str, Any] | None = None,
    salt: str = "",
    design: str | Mapping[str, Any] | None = None,
    who: str | None = None,
    reason: str = "",
) -> Experiment:
    """Create a draft experiment (see the module doc); weights must sum to 1.

    ``design``: ``"sequential"`` (the default: always-valid, look any time),
    ``{"type": "fixed", "n": 5000}`` or ``{"type": "fixed", "mde": 0.03, "baseline": 0.30}``
    (the verdict waits for the planned n); see docs/ab-statistics.md. A guardrail may
    carry a ``margin`` (non-inferiority: ``{"metric": "latency_ms", "worse": "higher",
    "margin": 50}``)."""
    spec: dict[str, Any] = {
        "name": name,
        "hypothesis": hypothesis,
        "unit": unit,
        "variants": variants,
        "primary_metric": primary_metric,
        "higher_is_better": higher_is_better,
        "guardrails": list(guardrails),
        "targeting": dict(targeting or {}),
        "salt": salt,
    }
    if weights is not None:
        spec["weights"] = weights
    if design is not None:
        spec["design"] = design
    return _service().create(spec, who, reason)


def start(name: str, *, who: str | None = None, reason: str = "") -> Experiment:
    """Start assigning (resolves every variant's versions now)."""
    exp = _service().start(name, who, reason)
    _current().refresh()  # this process assigns at once
    return exp


def stop(name: str, *, who: str | None = None, reason: str = "") -> Experiment:
    """Stop assigning (Conflict if not running)."""
    exp = _service().stop(name, who, reason)
    state = _current()
    state.writer.flush()
    state.refresh()  # this process stops assigning at once
    return exp


def set_design(
    name: str, design: str | Mapping[str, Any] = "sequential", *, who: str | None = None, reason: str = ""
) -> Experiment:
    """Move an experiment created before designs existed to the sequential design (safe at any
    look from then on); any other change of design is a Conflict."""
    value = design if isinstance(design, str) else dict(design)
    return _service().set_design(name, value, who, reason)


def get(name: str) -> Experiment:
    """One experiment."""
    return _service().get(name)


def list_experiments() -> list[Experiment]:
    """Every experiment."""
    return _service().list_experiments()


def status(name: str) -> dict[str, Any]:
    """Definition, state and exposed units per variant."""
    flush()
    service = _service()
    exp = service.get(name)
    return {**exp.to_dict(), "exposures": service.counts(name)}


def history(name: str) -> list[Any]:
    """The experiment's status moves: who, when, why."""
    return _service().history(name)


def analyze(name: str, mde: float | None = None, alpha: float | None = None, power: float = 0.8) -> Analysis:
    """Per-variant n, means/rates with CIs, differences with CIs and p-values, SRM check,
    required sample size for ``mde``, guardrails and a verdict under the experiment's design
    (``alpha``: the design's unless given; queued writes flushed first)."""
    flush()
    return _service().analyze(name, mde, alpha, power)


def _flush_all() -> None:
    for writer in list(_writers):
        try:
            writer.close()
        except Exception:  # pragma: no cover - best effort at exit
            log.exception("keel ab: could not flush exposures at exit")


atexit.register(_flush_all)
