"""The model registry: versions, stages and aliases with audit, model cards, lineage.

- A *registered model* has a name, description and tags. Its *versions* are
  numbered 1, 2, 3, ... and immutable once created, except for their tags
  and description.
- A version's ``source`` is a run artifact (``runs:/<run_id>/<path>``, which
  must exist; the run is recorded as the producer and the version as the
  run's output) or any external URI (a path, ``s3://...``, ``hf://org/model``).
  ``models:/NAME/VERSION`` (or ``models:/NAME@ALIAS``) copies another
  version's source and run; an MLflow logged model's ``models:/m-<32 hex>`` is
  kept as the source (see :mod:`keel.services.mlflow_models`).
- Stages ``None``, ``Staging``, ``Production``, ``Archived`` (several versions
  may share a stage unless promoted with ``archive_existing``) and free-form
  aliases (``champion``). Every stage change and alias move is in the reflog,
  so :meth:`ModelService.history` and "which version was in Production at
  time T" (``get(name, stage="Production", at=T)``) are queries.
- "As of T" survives deletion: a deleted version's row is kept as a tombstone
  (``model_version_tombstones``), so a time it was the answer still returns it,
  marked ``deleted``. Every ``at`` goes through :func:`keel.core.times.parse_at`.
- Alias names follow :mod:`keel.core.refnames` (stage names and ``latest``
  refused in any case; case-insensitive, case-preserving); :meth:`ModelService.rollback`
  undoes an alias's last moves as git's ``reset HEAD@{n}`` does.
- A version registered from a local file or folder records its ``source_digest``
  (:mod:`keel.services.model_sources`); ``keel verify`` reports drift.
- A structured model card (:mod:`keel.core.model_card`) per version.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.core.auth import Principal
from keel.core.entities import EntityRef, LineageEdge, RunRecord, now_ms
from keel.core.model_card import CardChange, card_changes, check_card, dump_card, parse_card
from keel.core.names import check_name
from keel.core.refnames import check_alias, match_alias
from keel.core.times import AtLike, format_at, parse_at
from keel.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from keel.meta.models import KIND, ModelRow, RawModels, VersionRow, stage_ref
from keel.meta.refs import ABSENT, RefMove, check_expected
from keel.services.audit import who as audit_who
from keel.services.contract import (
    authorize_run,
    operation,
    service,
)
from keel.services.model_sources import check_digest, local_source
from keel.services.tracking import TrackingService
from keel.services.workspace import Store

__all__ = [
    "STAGES",
    "MetricChange",
    "ModelComparison",
    "ModelLineage",
    "ModelService",
    "ModelVersion",
    "RefMove",
    "RegisteredModel",
    "normalize_stage",
    "parse_source",
]

#: The lifecycle stages, as MLflow spells them.
STAGES = ("None", "Staging", "Production", "Archived")
_STAGE_BY_LOWER = {s.lower(): s for s in STAGES}
_PROMOTIONS = ("Staging", "Production")


#: An MLflow logged model's URI: a source as it is (the model is no registered version to copy).
_LOGGED_MODEL = re.compile(r"models:/m-[0-9a-f]{32}/?")


def normalize_stage(stage: str) -> str:
    """``"production"`` -> ``"Production"``; anything else unknown raises InvalidInput."""
    found = _STAGE_BY_LOWER.get(str(stage).strip().lower())
    if found is None:
        raise InvalidInput(f"unknown stage {stage!r}", f"use one of {', '.join(STAGES)}")
    return found


def parse_source(source: str) -> tuple[str | None, str]:
    """``runs:/<run_id>/<path>`` -> ``(run_id, path)``; any other URI -> ``(None, source)``."""
    if not isinstance(source, str) or not source.strip():
        raise InvalidInput("a model version needs a source", "give runs:/<run_id>/<path>, a path or a URI")
    if source.startswith("runs:/"):
        rest = source[len("runs:/") :].strip("/")
        run_id, _, path = rest.partition("/")
        if not run_id:
            raise InvalidInput(f"invalid run source {source!r}", "write runs:/<run_id>/<artifact_path>")
        return run_id, path
    return None, source


def check_model_name(name: Any) -> str:
    """A valid registered-model name: a keel name without '/' (``models:/NAME/VERSION`` must parse)."""
    check_name(name, "model name")
    if "/" in name:
        raise InvalidInput(f"invalid model name {name!r}: it contains '/'", "use '-' or '.' instead of '/'")
    return str(name)


def _expected_version(expected: Any) -> str | None:
    """An alias move's ``expected`` target as stored: None (no check), ``""`` (unset) or a number."""
    if expected is None:
        return None
    if expected == ABSENT:
        return ABSENT
    return str(_version_number(expected))


def _version_number(version: Any) -> int:
    text = str(version).strip()
    if text.lower().startswith("v"):
        text = text[1:]
    if isinstance(version, bool) or not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"invalid model version {version!r}", "model versions are whole numbers: 1, 2, 3")
    return int(text)


@dataclass(frozen=True)
class ModelVersion:
    """One version of a registered model."""

    name: str
    version: int
    source: str
    run_id: str | None
    stage: str
    aliases: tuple[str, ...]
    description: str
    tags: dict[str, str]
    card: dict[str, Any]
    author: str
    created_at: int
    updated_at: int
    #: ``sha256:<hex>`` of a local file or folder source when it was registered (see ``keel verify``)
    source_digest: str | None = None
    #: the version has been deleted since (an "as of T" answer for a time it existed)
    deleted: bool = False
    #: when it was deleted (epoch ms), or None
    deleted_at: int | None = None

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    @property
    def entity(self) -> EntityRef:
        """The lineage reference ``model:NAME@VERSION``."""
        return EntityRef(KIND, self.name, str(self.version))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "run_id": self.run_id,
            "stage": self.stage,
            "aliases": list(self.aliases),
            "description": self.description,
            "tags": dict(self.tags),
            "card": self.card,
            "author": self.author,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "source_digest": self.source_digest,
            "deleted": self.deleted,
            "deleted_at": self.deleted_at,
        }


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model with a summary of its versions."""

    name: str
    description: str
    tags: dict[str, str]
    created_at: int
    updated_at: int
    latest_version: int | None
    aliases: dict[str, int]
    stages: dict[str, list[int]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "description": self.description,
            "tags": dict(self.tags),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "latest_version": self.latest_version,
            "aliases": dict(self.aliases),
            "stages": {k: list(v) for k, v in self.stages.items()},
        }


@dataclass(frozen=True)
class MetricChange:
    """A metric of two versions side by side (from their cards' ``evaluation`` and their runs)."""

    key: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        """``b - a`` when both are numbers."""
        if self.a is None or self.b is None:
            return None
        return self.b - self.a

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"key": self.key, "a": self.a, "b": self.b, "delta": self.delta}


@dataclass(frozen=True)
class ModelComparison:
    """What differs between two versions of a model."""

    name: str
    a: ModelVersion
    b: ModelVersion
    card: list[CardChange]
    metrics: list[MetricChange]
    params: list[tuple[str, Any, Any]]
    fields: list[tuple[str, Any, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "a": self.a.version,
            "b": self.b.version,
            "fields": [{"field": k, "a": _jsonable(x), "b": _jsonable(y)} for k, x, y in self.fields],
            "card": [c.to_dict() for c in self.card],
            "metrics": [m.to_dict() for m in self.metrics],
            "params": [{"key": k, "a": x, "b": y} for k, x, y in self.params],
        }


@dataclass(frozen=True)
class ModelLineage:
    """Where a version came from: its run, the run's params and metrics, and what the run used."""

    version: ModelVersion
    run: RunRecord | None
    inputs: list[LineageEdge]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        run = self.run
        return {
            "model": self.version.ref,
            "run_id": run.run_id if run else None,
            "params": dict(run.params) if run else {},
            "metrics": dict(run.metrics) if run else {},
            "inputs": [str(e.entity) for e in self.inputs],
        }


def _plain_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    out = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"invalid tag key {key!r}", "tag keys are non-empty text")
        out[key] = "" if value is None else str(value)
    return out


def card_from(card: Any) -> tuple[dict[str, Any], str | None]:
    """A card argument (mapping, YAML/JSON text, or None) as ``(data, original text)``."""
    if card is None:
        return {}, None
    if isinstance(card, str):
        return parse_card(card), card
    return check_card(card), None


def linked_run(role: str) -> Callable[[Any, Principal, dict[str, Any]], None]:
    """The check of an operation that links a model version to a run (``run_id=`` or a ``runs:/``
    source) or looks versions up by run: ``role`` on that run's stored project (writer to link:
    the version is written into the run's lineage); a hidden run is NotFound."""

    def check(services: Any, caller: Principal, arguments: dict[str, Any]) -> None:
        source = arguments.get("source")
        linked = {arguments.get("run_id")}
        if isinstance(source, str) and source.startswith("runs:/"):
            linked.add(source[len("runs:/") :].strip("/").partition("/")[0])
        for run_id in linked - {None}:
            if not isinstance(run_id, str) or not run_id:
                raise InvalidInput("run_id must be a run id", "pass the run id as text")
            authorize_run(services, caller, run_id, role)

    return check


@dataclass(frozen=True)
class _AsOf:
    """A model at one moment: ``{alias: version}``, ``{version: stage}`` (versions never moved
    are absent: stage None) and ``{version: (row, deleted_at or None)}`` of the versions that existed."""

    when: int
    aliases: dict[str, int]
    stages: dict[int, str]
    rows: dict[int, tuple[VersionRow, int | None]]


@service("models")
class ModelService:
    """Model registry use cases over one store."""

    def __init__(self, store: Store, tracking: TrackingService | None = None) -> None:
        self.store = store
        self.db = store.db
        self.raw = RawModels(store.db)
        self._tracking = tracking

    @property
    def tracking(self) -> TrackingService:
        """The store's tracking service (for lineage and comparisons)."""
        if self._tracking is None:
            self._tracking = TrackingService(self.store)
        return self._tracking

    # -- conversions ----------------------------------------------------------------------
    @staticmethod
    def _version(
        row: VersionRow, aliases: Mapping[str, int], stage: str | None = None, deleted_at: int | None = None
    ) -> ModelVersion:
        names = tuple(sorted(a for a, v in aliases.items() if v == row.version))
        return ModelVersion(
            row.name,
            row.version,
            row.source,
            row.run_id,
            row.stage if stage is None else stage,
            names,
            row.description,
            row.tags,
            row.card,
            row.author,
            row.created_at,
            row.updated_at,
            row.source_digest,
            deleted_at is not None,
            deleted_at,
        )

    def _as_of(self, cur: Any, name: str, when: int) -> _AsOf:
        """The model as it was at ``when``: its aliases and stages (from the reflog) and the
        versions that existed then (live rows, and tombstones of those deleted since)."""
        refs = self.raw.refs_at(cur, name, when)
        aliases = {
            ref: int(target)
            for ref, target in refs.items()
            if target is not None and ":" not in ref and target.isdigit()  # ref "model": deleted, target None
        }
        stages = {int(ref[6:]): target for ref, target in refs.items() if ref.startswith("stage:") and target}
        rows: dict[int, tuple[VersionRow, int | None]] = {}
        for number, stone in self.raw.tombstones_after(cur, name, when).items():
            if stone.row.created_at <= when:
                rows[number] = (stone.row, stone.deleted_at)
        for row in self.raw.versions(cur, name):
            if row.created_at <= when:
                rows[row.version] = (row, None)
        if not rows and not refs:
            self._model_or_raise(cur, name)
        return _AsOf(when, aliases, stages, rows)

    def _version_as_of(self, state: _AsOf, number: int) -> ModelVersion:
        row, deleted_at = state.rows[number]
        return self._version(row, state.aliases, state.stages.get(number, "None"), deleted_at)

    def _model_or_raise(self, cur: Any, name: str) -> ModelRow:
        model = self.raw.model(cur, name)
        if model is None:
            raise NotFound(f"no registered model named {name!r}", "list them with 'keel models list'")
        return model

    def _version_or_raise(self, cur: Any, name: str, version: Any) -> VersionRow:
        number = _version_number(version)
        row = self.raw.version(cur, name, number)
        if row is None:
            self._model_or_raise(cur, name)
            raise NotFound(f"model {name!r} has no version {number}", f"list them with 'keel models show {name}'")
        return row

    # -- registered models ----------------------------------------------------------------
    @operation("writer")
    def create_model(self, name: str, description: str = "", tags: Mapping[str, Any] | None = None) -> RegisteredModel:
        """Create a registered model with no versions; AlreadyExists if the name is taken."""
        check_model_name(name)
        plain = _plain_tags(tags)
        with self.db.raw_write() as cur:
            self.raw.lock(cur, name)  # two creations of one name: the second sees the first
            if self.raw.model(cur, name) is not None:
                raise AlreadyExists(
                    f"a registered model named {name!r} already exists", "register a new version of it instead"
                )
            row = self.raw.create_model(cur, name, str(description or ""), plain)
        return RegisteredModel(row.name, row.description, row.tags, row.created_at, row.updated_at, None, {}, {})

    @operation("writer")
    def update_model(
        self, name: str, description: str | None = None, tags: Mapping[str, Any] | None = None
    ) -> RegisteredModel:
        """Change a model's description and/or merge tags into its tags."""
        with self.db.raw_write() as cur:
            self.raw.lock(cur, name)  # concurrent merges of tags: none lost
            model = self._model_or_raise(cur, name)
            merged = {**model.tags, **_plain_tags(tags)}
            self.raw.update_model(cur, model.id, model.description if description is None else description, merged)
        return self.get_model(name)

    @operation("writer")
    def delete_model_tag(self, name: str, key: str) -> None:
        """Remove one tag of a registered model."""
        with self.db.raw_write() as cur:
            self.raw.lock(cur, name)
            model = self._model_or_raise(cur, name)
            if key not in model.tags:
                raise NotFound(f"model {name!r} has no tag {key!r}", f"see its tags: keel models show {name}")
            self.raw.update_model(cur, model.id, model.description, {k: v for k, v in model.tags.items() if k != key})

    @operation("reader")
    def get_model(self, name: str) -> RegisteredModel:
        """A registered model with its latest version, aliases and stages."""
        with self.db.raw_read() as cur:
            model = self._model_or_raise(cur, name)
            return self._summary(cur, model)

    def _summary(self, cur: Any, model: ModelRow) -> RegisteredModel:
        rows = self.raw.versions(cur, model.name)
        stages: dict[str, list[int]] = {}
        for row in rows:
            if row.stage != "None":
                stages.setdefault(row.stage, []).append(row.version)
        return RegisteredModel(
            model.name,
            model.description,
            model.tags,
            model.created_at,
            model.updated_at,
            rows[0].version if rows else None,
            self.raw.aliases(cur, model.name),
            stages,
        )

    @operation("reader")
    def list_models(self) -> list[RegisteredModel]:
        """Every registered model, by name."""
        with self.db.raw_read() as cur:
            return [self._summary(cur, model) for model in self.raw.models(cur)]

    # -- versions ---------------------------------------------------------------------------
    @operation("writer", check=linked_run("writer"))
    def register(
        self,
        name: str,
        source: str,
        run_id: str | None = None,
        card: Any = None,
        description: str = "",
        tags: Mapping[str, Any] | None = None,
        author: str | None = None,
        external_run: bool = False,
        check_artifact: bool = True,
        source_digest: str | None = None,
    ) -> ModelVersion:
        """Register the next version of ``name`` (created if new) from ``source``.

        A ``runs:/`` source must name an existing run and artifact; ``run_id``
        links an external source to the run that produced it. The run records
        the version as its output. Everything happens in one transaction: a
        failed registration leaves nothing behind.

        MLflow's registry (:mod:`keel.services.mlflow_registry`) records run ids of other
        stores: ``external_run`` keeps ``run_id`` and the source as given, unresolved and
        unlinked; ``check_artifact=False`` links a run whose ``runs:/`` artifact is not
        logged (yet), as MLflow does.

        ``source_digest``: ``sha256:<hex>`` of a local file or folder source's bytes
        (:mod:`keel.services.model_sources`; ``keel.models.register`` computes it where the
        path is, which a server cannot); a ``models:/`` source copies the version's digest.
        """
        check_model_name(name)
        card_data, card_text = card_from(card)
        plain_tags = _plain_tags(tags)
        pinned = check_digest(source_digest)
        if isinstance(source, str) and source.startswith("models:/") and not _LOGGED_MODEL.fullmatch(source):
            source, copied_run, copied_digest = self._copy_source(source)
            run_id = run_id or copied_run
            pinned = pinned or copied_digest
        if pinned is not None and (local_source(source) is None) == pinned.startswith("sha256:"):
            raise InvalidInput(
                f"a {pinned.split(':')[0]} source digest does not pin {str(source)[:200]!r}",
                "sha256: pins a local file or folder, etag: an s3:// source; leave it out for runs:/ sources",
            )
        source_run, artifact_path = parse_source(source)
        if external_run:
            source_run = None
        elif source_run is not None:
            source_run = self._full_run_id(source_run)
            if run_id is not None and self._full_run_id(run_id) != source_run:
                raise InvalidInput(
                    f"run_id {run_id!r} differs from the run in the source {source!r}", "give one or the other"
                )
            run_id = source_run
            source = f"runs:/{source_run}/{artifact_path}" if artifact_path else f"runs:/{source_run}"
        elif run_id is not None:
            run_id = self._full_run_id(run_id)
        author_name = audit_who(author)
        with self.db.raw_write() as cur:
            self.raw.lock(cur, name)  # first: a new name is created once, numbers never collide
            run_pk = None
            if run_id is not None and not external_run:
                run_pk = self.raw.run_pk(cur, run_id)
                if run_pk is None:
                    raise NotFound(f"no run {run_id!r}", "check the run id with 'keel runs list'")
                if check_artifact and source_run is not None and not self.raw.has_artifact(cur, run_pk, artifact_path):
                    what = f"artifact {artifact_path!r}" if artifact_path else "artifacts"
                    raise NotFound(
                        f"run {run_id} has no {what}",
                        f"log it first (keel.log_artifact), or see what it has: keel artifacts list {run_id}",
                    )
            model = self.raw.model(cur, name)
            if model is None:
                model = self.raw.create_model(cur, name, "", {})
            version, created = self.raw.insert_version(
                cur,
                name,
                model.id,
                source,
                run_id,
                str(description or ""),
                plain_tags,
                card_data,
                card_text,
                author_name,
                pinned,
            )
            if run_pk is not None:
                self.raw.link_output(cur, run_pk, name, version)
                self.store.tracking.reseal(cur, run_pk)  # a finished run's lineage changed
        return ModelVersion(
            name, version, source, run_id, "None", (), str(description or ""), plain_tags, card_data,
            author_name, created, created, pinned,
        )  # fmt: skip

    def _full_run_id(self, run_id: str) -> str:
        """A full run id as is (checked inside the registering transaction); a prefix resolved."""
        if len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id):
            return run_id
        return self.tracking.resolve_run_id(run_id)

    def _copy_source(self, uri: str) -> tuple[str, str | None, str | None]:
        rest = uri[len("models:/") :].strip("/")
        if "@" in rest:
            name, _, alias = rest.partition("@")
            found = self.get(name, alias=alias)
        else:
            name, _, selector = rest.partition("/")
            if not selector or selector == "latest":
                found = self.get(name)
            elif selector.isdigit():
                found = self.get(name, version=int(selector))
            else:
                found = self.get(name, stage=selector)
        return found.source, found.run_id, found.source_digest

    @operation("reader")
    def get(
        self,
        name: str,
        version: Any = None,
        stage: str | None = None,
        alias: str | None = None,
        at: AtLike | None = None,
    ) -> ModelVersion:
        """One version: by number, by stage (the highest in it), by alias, or the latest.

        ``at`` (any time :func:`keel.core.times.parse_at` reads: an aware datetime, ISO
        text with a zone, epoch ms, ``"1733500000s"``) answers for that moment: the version
        an alias pointed at, the highest version in a stage, or a version as it was then,
        with its stage and aliases *as of then*. A version deleted since is still the
        answer for a time it was the target, marked ``deleted`` (with ``deleted_at``).
        Aliases are read in any case (``CHAMPION`` is ``champion``).
        """
        given = [x is not None for x in (version, stage, alias)]
        if sum(given) > 1:
            raise InvalidInput("give one of version=, stage= or alias=", "get(name, alias='champion')")
        when = None if at is None else parse_at(at)
        if when is not None and not any(given):
            raise InvalidInput("'at' needs a stage or an alias (or a version)", "get(name, stage='Production', at=...)")
        wanted = None if stage is None else normalize_stage(stage)
        with self.db.raw_read() as cur:
            if when is not None:
                return self._get_at(cur, name, version, wanted, alias, when)
            if version is not None:
                row: VersionRow | None = self._version_or_raise(cur, name, version)
            elif wanted is not None:
                row = self.raw.in_stage(cur, name, wanted)
                if row is None:
                    self._model_or_raise(cur, name)
                    raise NotFound(f"model {name!r} had no version in {wanted}", f"see: keel models show {name}")
            elif alias is not None:
                row = self.raw.by_alias(cur, name, alias)
                if row is None:
                    spelled = match_alias(self.raw.aliases(cur, name), alias)
                    row = None if spelled is None else self.raw.by_alias(cur, name, spelled)
                if row is None:
                    self._model_or_raise(cur, name)
                    raise NotFound(
                        f"model {name!r} has no alias {alias!r}", f"see its aliases: keel models show {name}"
                    )
            else:
                row = self.raw.latest(cur, name)
                if row is None:
                    self._model_or_raise(cur, name)
                    raise NotFound(f"model {name!r} has no versions yet", f"register one: keel models register {name}")
            assert row is not None
            return self._version(row, self.raw.aliases(cur, name))

    def _get_at(
        self, cur: Any, name: str, version: Any, stage: str | None, alias: str | None, when: int
    ) -> ModelVersion:
        state = self._as_of(cur, name, when)
        then = f"at {format_at(when)}"
        hint = f"see what moved when: keel models history {name}"
        if version is not None:
            number = _version_number(version)
            if number not in state.rows:
                raise NotFound(f"model {name!r} had no version {number} {then}", hint)
            return self._version_as_of(state, number)
        if stage is not None:
            matching = [v for v in state.rows if state.stages.get(v, "None") == stage]
            if not matching:
                raise NotFound(f"model {name!r} had no version in {stage} at that time ({format_at(when)})", hint)
            return self._version_as_of(state, max(matching))
        assert alias is not None
        spelled = match_alias(state.aliases, alias)
        if spelled is None:
            raise NotFound(f"model {name!r} had no alias {alias!r} at that time ({format_at(when)})", hint)
        target = state.aliases[spelled]
        if target not in state.rows:  # deleted before keel kept deleted versions (migration 0030)
            raise NotFound(
                f"alias {spelled!r} of model {name!r} pointed at version {target} {then}, "
                "which was deleted before keel kept deleted versions",
                hint,
            )
        return self._version_as_of(state, target)

    @operation("reader")
    def versions_in_stage(self, name: str, stage: str, at: AtLike | None = None) -> list[int]:
        """Every version in a stage (now, or at a moment: deleted ones included), highest first."""
        wanted = normalize_stage(stage)
        when = None if at is None else parse_at(at)
        with self.db.raw_read() as cur:
            if when is None:
                self._model_or_raise(cur, name)
                return [r.version for r in self.raw.versions(cur, name) if r.stage == wanted]
            state = self._as_of(cur, name, when)
            return sorted((v for v in state.rows if state.stages.get(v, "None") == wanted), reverse=True)

    @operation("reader")
    def aliases_at(self, name: str, at: AtLike) -> dict[str, int]:
        """``{alias: version}`` as of ``at`` (versions deleted since included)."""
        when = parse_at(at)
        with self.db.raw_read() as cur:
            return dict(sorted(self._as_of(cur, name, when).aliases.items()))

    @operation("reader")
    def versions_at(self, name: str, at: AtLike) -> list[ModelVersion]:
        """The versions that existed at ``at``, newest first, each with its stage and aliases as
        of then; those deleted since are included, marked ``deleted``."""
        when = parse_at(at)
        with self.db.raw_read() as cur:
            state = self._as_of(cur, name, when)
            return [self._version_as_of(state, number) for number in sorted(state.rows, reverse=True)]

    @operation("reader")
    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, newest first."""
        with self.db.raw_read() as cur:
            self._model_or_raise(cur, name)
            aliases = self.raw.aliases(cur, name)
            return [self._version(row, aliases) for row in self.raw.versions(cur, name)]

    @operation("reader", check=linked_run("reader"))
    def versions_of_run(self, run_id: str) -> list[ModelVersion]:
        """The model versions a run produced."""
        run_id = self.tracking.resolve_run_id(run_id)
        with self.db.raw_read() as cur:
            rows = self.raw.versions_of_run(cur, run_id)
            return [self._version(row, self.raw.aliases(cur, row.name)) for row in rows]

    @operation("writer")
    def update_version(
        self, name: str, version: Any, description: str | None = None, tags: Mapping[str, Any] | None = None
    ) -> ModelVersion:
        """Change a version's description and/or merge tags (everything else is immutable)."""
        with self.db.raw_write() as cur:
            self.raw.lock(cur, name)
            row = self._version_or_raise(cur, name, version)
            merged = {**row.tags, **_plain_tags(tags)}
            self.raw.update_version(cur, row.id, row.description if description is None else description, merged)
        return self.get(name, version=version)

    @operation("writer")
    def delete_version_tag(self, name: str, version: Any, key: str) -> None:
        """Remove one tag of a version."""
        with self.db.raw_write() as cur:
            self.raw.lock(cur, name)
            row = self._version_or_raise(cur, name, version)
            if key not in row.tags:
                raise NotFound(f"{name} version {row.version} has no tag {key!r}", "see: keel models show")
            self.raw.update_version(cur, row.id, row.description, {k: v for k, v in row.tags.items() if k != key})

    # -- stages -----------------------------------------------------------------------------
    @operation("writer")
    def transition_stage(
        self,
        name: str,
        version: Any,
        stage: str,
        archive_existing: bool = False,
        reason: str = "",
        who: str | None = None,
        expected: str | None = None,
    ) -> ModelVersion:
        """Move a version to a stage (logged). With ``archive_existing``, the other
        versions in that stage (Staging or Production) move to Archived, each logged.
        ``expected``: the stage the caller believes the version is in now; if it is in
        another, Conflict naming it, and nothing moves."""
        wanted = normalize_stage(stage)
        believed = None if expected is None else normalize_stage(expected)
        if archive_existing and wanted not in _PROMOTIONS:
            raise InvalidInput(
                f"archive_existing only applies when moving to Staging or Production, not {wanted}",
                "drop archive_existing",
            )
        actor = audit_who(who)
        with self.db.raw_write() as cur:
            self.raw.lock(cur, name)  # the stage read below is the one the move replaces
            row = self._version_or_raise(cur, name, version)
            if believed is not None and row.stage != believed:
                raise Conflict(
                    f"version {row.version} of model {name!r} is in {row.stage}, not {believed} as expected: "
                    "someone moved it meanwhile",
                    "read it again, then move it from the stage you see",
                )
            peers = []
            if archive_existing:
                peers = self.raw.stage_peers(cur, self._model_or_raise(cur, name).id, wanted, row.version)
            # One time for the move and the archivals, never before a previous move of any of them.
            at = max(now_ms(), row.updated_at, *(updated for _, _, updated in peers))
            self.raw.set_stage(cur, row.id, wanted, at)
            self.raw.log(cur, name, stage_ref(row.version), row.stage, wanted, actor, reason, at)
            note = reason or f"archived: version {row.version} moved to {wanted}"
            for peer_id, peer_version, _ in peers:
                self.raw.set_stage(cur, peer_id, "Archived", at)
                self.raw.log(cur, name, stage_ref(peer_version), wanted, "Archived", actor, note, at)
            aliases = self.raw.aliases(cur, name)
        moved = VersionRow(**{**row.__dict__, "stage": wanted, "updated_at": at})
        return self._version(moved, aliases)

    # -- aliases ----------------------------------------------------------------------------
    @operation("writer")
    def set_alias(
        self,
        name: str,
        alias: str,
        version: Any = None,
        reason: str = "",
        who: str | None = None,
        expected: int | str | None = None,
        at: AtLike | None = None,
    ) -> RefMove:
        """Point an alias (``champion``) at a version; the move is logged with who and why.
        ``at`` instead of ``version``: point it where it pointed at that time (git's
        ``reset ALIAS@{T}``). Names follow :func:`keel.core.refnames.check_alias` with the
        stage names reserved; an alias that exists in another case is the one moved.
        ``expected``: the version the caller believes the alias points at now (``""``: not
        set yet); if it points elsewhere, Conflict naming where, and nothing moves."""
        check_alias(alias, stages=True)
        if (version is None) == (at is None):
            raise InvalidInput(
                "give the version to point at, or at= (where it pointed then), not both",
                f"set_alias(name, {alias!r}, 3) or set_alias(name, {alias!r}, at='2026-12-07T10:00:00Z')",
            )
        when = None if at is None else parse_at(at)
        believed = _expected_version(expected)
        actor = audit_who(who)
        with self.db.raw_write() as cur:
            self.raw.lock(cur, name)  # the target read by set_alias is the one the move replaces
            spelled = match_alias(self.raw.aliases(cur, name), alias) or alias
            if when is not None:
                state = self._as_of(cur, name, when)
                then = match_alias(state.aliases, alias)
                if then is None:
                    raise NotFound(
                        f"alias {alias!r} of model {name!r} pointed at nothing at {format_at(when)}",
                        f"see its moves: keel models history {name}",
                    )
                version = state.aliases[then]
                reason = reason or f"set to where it was at {format_at(when)}"
            row = self._live_target(cur, name, spelled, version)
            return self.raw.set_alias(cur, name, spelled, row.version, actor, reason, believed)

    def _live_target(self, cur: Any, name: str, alias: str, version: Any) -> VersionRow:
        """The version an alias is about to point at; a deleted one is refused, saying so."""
        number = _version_number(version)
        row = self.raw.version(cur, name, number)
        if row is None:
            self._model_or_raise(cur, name)
            if number in self.raw.tombstones_after(cur, name, -1):
                raise Conflict(
                    f"alias {alias!r} of model {name!r} would point at version {number}, which was deleted",
                    "point it at a live version (keel models show NAME lists them), or roll back further",
                )
            raise NotFound(f"model {name!r} has no version {number}", f"list them with 'keel models show {name}'")
        return row

    @operation("writer")
    def rollback(
        self,
        name: str,
        alias: str,
        reason: str = "",
        who: str | None = None,
        expected: int | str | None = None,
        steps: int = 1,
    ) -> RefMove:
        """Undo an alias's last ``steps`` moves, as git's ``reset ALIAS@{steps}``: point it at
        the target it had before its ``steps``-th latest move. A rollback is a move too, so
        two rollbacks of one step return where the first started; ``steps=2`` (or
        :meth:`set_alias` with ``at=``) reaches further back. Conflict when the alias has
        fewer moves, when it was unset before that move, or when that version was deleted."""
        check_alias(alias, stages=True)
        if not isinstance(reason, str):
            raise InvalidInput(f"reason must be text, not {reason!r}", "give the number of moves by name: steps=N")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InvalidInput(f"steps must be a whole number of moves, 1 or more, not {steps!r}", "steps=1")
        believed = _expected_version(expected)
        actor = audit_who(who)
        with self.db.raw_write() as cur:
            self.raw.lock(cur, name)  # the history read below is the one the move extends
            history = self.raw.history(cur, name)
            if not history:
                self._model_or_raise(cur, name)
            logged = {m.ref for m in history if ":" not in m.ref and m.ref != "model"}
            spelled = match_alias(self.raw.aliases(cur, name), alias) or match_alias(logged, alias) or alias
            moves = [m for m in history if m.ref == spelled]
            if len(moves) < steps:
                raise Conflict(
                    f"alias {spelled!r} of model {name!r} has {len(moves)} move(s): cannot undo {steps}",
                    f"see its moves: keel models history {name}",
                )
            undone = moves[-steps]
            if undone.old is None or not undone.old.isdigit():
                raise Conflict(
                    f"alias {spelled!r} of model {name!r} was not set before the move {steps} back "
                    f"(reflog entry {undone.id}, {format_at(undone.at)})",
                    "roll back fewer steps, or set it: keel models alias set NAME ALIAS VERSION",
                )
            row = self._live_target(cur, name, spelled, undone.old)
            why = reason or f"rollback of {spelled} by {steps} move(s)"
            return self.raw.set_alias(cur, name, spelled, row.version, actor, why, believed)

    @operation("writer")
    def delete_alias(
        self, name: str, alias: str, reason: str = "", who: str | None = None, expected: int | str | None = None
    ) -> RefMove:
        """Remove an alias (logged), named in any case; with ``expected``, only if it points at that version."""
        believed = _expected_version(expected)
        actor = audit_who(who)
        with self.db.raw_write() as cur:
            self.raw.lock(cur, name)
            current = self.raw.aliases(cur, name)
            spelled = match_alias(current, alias) if isinstance(alias, str) else None
            if spelled is None:
                self._model_or_raise(cur, name)
                raise NotFound(f"model {name!r} has no alias {alias!r}", f"see its aliases: keel models show {name}")
            old = current[spelled]
            check_expected(f"alias {spelled!r} of model {name!r}", str(old), believed)
            return self.raw.drop_alias(cur, name, spelled, old, actor, reason)

    # -- deletion (audited) -------------------------------------------------------------
    @operation("writer")
    def delete_version(self, name: str, version: Any, reason: str = "", who: str | None = None) -> list[RefMove]:
        """Delete one version (MLflow's ``delete_model_version``). Its aliases are removed;
        the deletion and each removed alias are in the reflog (ref ``version:<n>``). The
        run that produced it keeps its lineage edge, so history still names it. Version
        numbers are never reused: the next registration continues after the highest ever."""
        actor = audit_who(who)
        with self.db.raw_write() as cur:
            self.raw.lock(cur, name)
            row = self._version_or_raise(cur, name, version)
            moves = [
                self.raw.drop_alias(cur, name, alias, target, actor, reason or f"version {row.version} deleted")
                for alias, target in sorted(self.raw.aliases(cur, name).items())
                if target == row.version
            ]
            at = max(now_ms(), *(m.at for m in moves)) if moves else now_ms()
            self.raw.bury(cur, row, at, actor)  # "as of T" still answers with it, marked deleted
            self.raw.drop_version(cur, row.id)
            moves.append(self.raw.log(cur, name, f"version:{row.version}", str(row.version), None, actor, reason, at))
        return moves

    @operation("writer")
    def delete_model(self, name: str, reason: str = "", who: str | None = None) -> list[RefMove]:
        """Delete a registered model with all its versions and aliases (MLflow's
        ``delete_registered_model``); every removal is in the reflog, which is kept."""
        actor = audit_who(who)
        with self.db.raw_write() as cur:
            self.raw.lock(cur, name)
            model = self._model_or_raise(cur, name)
            note = reason or "model deleted"
            moves = [
                self.raw.drop_alias(cur, name, alias, target, actor, note)
                for alias, target in sorted(self.raw.aliases(cur, name).items())
            ]
            rows = self.raw.versions(cur, name)
            at = max(now_ms(), *(m.at for m in moves)) if moves else now_ms()
            for row in rows:
                self.raw.bury(cur, row, at, actor)
            self.raw.drop_model(cur, model.id)
            for number in sorted(r.version for r in rows):
                moves.append(self.raw.log(cur, name, f"version:{number}", str(number), None, actor, note, at))
            moves.append(self.raw.log(cur, name, "model", name, None, actor, reason, at))
        return moves

    @operation("reader")
    def history(self, name: str) -> list[RefMove]:
        """Every stage change (ref ``stage:<version>``), alias move and deletion of a model,
        oldest first, each with its reflog ``id``; still readable after the model itself was deleted."""
        with self.db.raw_read() as cur:
            moves = self.raw.history(cur, name)
            if not moves:
                self._model_or_raise(cur, name)
            return moves

    # -- cards, lineage, comparison ------------------------------------------------------
    @operation("reader")
    def card_text(self, name: str, version: Any) -> str:
        """A version's card as YAML: the imported text byte for byte, else a YAML dump."""
        with self.db.raw_read() as cur:
            row = self._version_or_raise(cur, name, version)
        if row.card_text is not None:
            return row.card_text
        return dump_card(row.card) if row.card else ""

    @operation("reader")
    def lineage(self, name: str, version: Any) -> ModelLineage:
        """The producing run (params, metrics) and the versions it used (prompts, data, ...)."""
        mv = self.get(name, version=version)
        if mv.run_id is None:
            return ModelLineage(mv, None, [])
        run = self.tracking.get_run(mv.run_id)
        inputs = [e for e in self.tracking.lineage(mv.run_id) if e.direction == "input"]
        return ModelLineage(mv, run, inputs)

    @operation("reader")
    def compare(self, name: str, a: Any, b: Any) -> ModelComparison:
        """Card, metric and param differences between two versions (metrics from the
        cards' ``evaluation`` section and from the producing runs)."""
        va, vb = self.get(name, version=a), self.get(name, version=b)
        fields = [
            (f, getattr(va, f), getattr(vb, f))
            for f in ("source", "run_id", "stage", "aliases", "description", "tags")
            if getattr(va, f) != getattr(vb, f)
        ]
        ra = self.tracking.get_run(va.run_id) if va.run_id else None
        rb = self.tracking.get_run(vb.run_id) if vb.run_id else None
        metrics_a, metrics_b = _metrics(va, ra), _metrics(vb, rb)
        keys = list(dict.fromkeys([*metrics_a, *metrics_b]))
        metrics = [MetricChange(k, metrics_a.get(k), metrics_b.get(k)) for k in keys]
        pa, pb = (dict(ra.params) if ra else {}), (dict(rb.params) if rb else {})
        params = [(k, pa.get(k), pb.get(k)) for k in sorted({*pa, *pb}) if pa.get(k) != pb.get(k)]
        return ModelComparison(name, va, vb, card_changes(va.card, vb.card), metrics, params, fields)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _metrics(version: ModelVersion, run: RunRecord | None) -> dict[str, float]:
    """A version's metrics: its card's ``evaluation`` numbers, then its run's latest metrics."""
    out: dict[str, float] = {}
    evaluation = version.card.get("evaluation")
    if isinstance(evaluation, Mapping):
        for key, value in evaluation.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[f"card.{key}"] = float(value)
    if run is not None:
        for key, value in run.metrics.items():
            if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
                out[key] = float(value)
    return out
