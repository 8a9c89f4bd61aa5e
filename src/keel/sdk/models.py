"""``keel.models``: the model registry from Python.

The MLflow calls users already write translate one to one::

    with keel.start_run(project="chat") as run:
        keel.log_artifact("model_config.yaml")
        mv = keel.register_model(f"runs:/{run.id}/model_config.yaml", "chat-assistant", card="card.yaml")
    keel.models.transition_stage("chat-assistant", mv.version, "Production", archive_existing=True)
    keel.models.set_alias("chat-assistant", "champion", mv.version)
    keel.models.get("chat-assistant", stage="Production")   # or alias="champion", version=3
    keel.models.get("chat-assistant", stage="Production", at="2026-11-01T00:00:00Z")
    keel.models.rollback("chat-assistant", "champion")          # undo the alias's last move
    keel.models.compare("chat-assistant", 2, 3)

Registering inside an active run links the version to that run (it is the
run's output); getting a version inside an active run records
``model:NAME@VERSION`` as the run's input.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keel.core.times import AtLike, parse_at
from keel.errors import InvalidInput, NotFound
from keel.sdk.fluent import active_run
from keel.sdk.session import get_session
from keel.sdk.traces import note
from keel.services.model_sources import source_digest
from keel.services.models import (
    STAGES,
    ModelComparison,
    ModelLineage,
    ModelVersion,
    RefMove,
    RegisteredModel,
)

__all__ = [
    "STAGES",
    "ModelComparison",
    "ModelLineage",
    "ModelVersion",
    "RegisteredModel",
    "aliases_at",
    "card",
    "card_text",
    "compare",
    "create",
    "delete_alias",
    "delete_model",
    "delete_tag",
    "delete_version",
    "export_card",
    "get",
    "get_model",
    "history",
    "lineage",
    "list_models",
    "load_card",
    "register",
    "register_model",
    "rollback",
    "set_alias",
    "set_tags",
    "transition_stage",
    "update",
    "versions",
    "versions_at",
    "versions_in_stage",
    "versions_of_run",
]

_CARD_SUFFIXES = (".yaml", ".yml", ".json")
_STAGES_LOWER = {s.lower() for s in STAGES}


def _at(at: AtLike | None) -> int | None:
    """``at`` as epoch ms, read here: a naive datetime means this process's local time."""
    return None if at is None else parse_at(at)


def load_card(card: Any) -> Any:
    """A card argument as the service takes it: a mapping or YAML/JSON text.

    A path (``Path`` or a string ending in .yaml/.yml/.json) is read; its text is kept,
    so exporting the card later returns the file byte for byte.
    """
    if card is None or isinstance(card, Mapping):
        return card
    is_path = isinstance(card, os.PathLike) or (
        isinstance(card, str) and "\n" not in card and card.strip().lower().endswith(_CARD_SUFFIXES)
    )
    if is_path:
        path = Path(card)
        if not path.is_file():
            raise NotFound(f"no model card file {str(path)!r}", "check the path")
        return path.read_text(encoding="utf-8")
    if isinstance(card, str):
        return card
    raise InvalidInput(f"a model card must be a mapping, YAML text or a file, not {type(card).__name__}", "")


def _producing_run(source: str, run_id: str | None) -> str | None:
    """Flush pending writes (the artifact a runs:/ source names may still be queued) and
    default the producing run to the active one."""
    run = active_run()
    if run is not None:
        run.flush()
        if run_id is None and not str(source).startswith(("runs:/", "models:/")):
            return run.id
    else:
        get_session().writer.flush()
    return run_id


def register(
    name: str,
    source: str,
    card: Any = None,
    description: str = "",
    tags: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    author: str | None = None,
) -> ModelVersion:
    """Register the next version of ``name`` (the model is created if new).

    ``source``: ``runs:/<run_id>/<artifact_path>`` (checked to exist), any URI or path
    (``s3://...``, ``hf://org/model``), or ``models:/NAME/VERSION`` to copy one.
    ``card``: a mapping, YAML text or a card file. Inside an active run the
    version is linked to that run unless ``run_id`` says otherwise.
    A local file or folder source is pinned: its ``sha256:`` digest is recorded
    (``source_digest``), and ``keel verify`` reports it when the bytes change.
    """
    run_id = _producing_run(source, run_id)
    digest = source_digest(source) if isinstance(source, str) else None
    return get_session().models.register(
        name, source, run_id, load_card(card), description, tags, author, source_digest=digest
    )


def register_model(
    model_uri: str,
    name: str,
    card: Any = None,
    description: str = "",
    tags: Mapping[str, Any] | None = None,
    run_id: str | None = None,
) -> ModelVersion:
    """MLflow's ``register_model(model_uri, name)``: see :func:`register`."""
    return register(name, model_uri, card=card, description=description, tags=tags, run_id=run_id)


def _split(name: str, version: Any, stage: str | None, alias: str | None) -> tuple[str, Any, str | None, str | None]:
    """``"chat@3"`` / ``"chat@champion"`` as a name with a selector."""
    if "@" in name and version is None and stage is None and alias is None:
        base, _, selector = name.partition("@")
        if selector.isdigit():
            return base, int(selector), None, None
        if selector.lower() in _STAGES_LOWER:  # no alias may be named like a stage, in any case
            return base, None, selector, None
        return base, None, None, selector
    return name, version, stage, alias


def get(
    name: str,
    version: Any = None,
    stage: str | None = None,
    alias: str | None = None,
    at: AtLike | None = None,
) -> ModelVersion:
    """A version by number, stage (the highest in it), alias, or the latest; ``name`` may be
    ``"chat-assistant@3"``, ``"chat-assistant@champion"`` or ``"chat-assistant@Production"``
    (stage names in any case are stages: no alias may be named like one).
    ``at`` asks about an earlier moment (see :func:`keel.core.times.parse_at`: an aware
    datetime, ISO text with a zone, epoch ms, ``"1733500000s"``); the answer carries its
    stage and aliases as of then, and ``deleted=True`` if it has been deleted since."""
    name, version, stage, alias = _split(name, version, stage, alias)
    found: ModelVersion = get_session().models.get(name, version, stage, alias, _at(at))
    note("model", found.entity.id, found.entity.version)  # inside a trace: the current span loaded it
    run = active_run()
    if run is not None:  # with the alias or stage that led to it (none when the version was named)
        run.use(found.entity, "", "" if version is not None else (alias or stage or "latest"))
    return found


def versions(name: str) -> list[ModelVersion]:
    """Every version of a model, newest first."""
    return get_session().models.versions(name)


def versions_of_run(run_id: str) -> list[ModelVersion]:
    """The model versions a run produced."""
    return get_session().models.versions_of_run(run_id)


def versions_in_stage(name: str, stage: str, at: AtLike | None = None) -> list[int]:
    """The versions in a stage now (or at a moment), highest first."""
    return get_session().models.versions_in_stage(name, stage, _at(at))


def versions_at(name: str, at: AtLike) -> list[ModelVersion]:
    """The versions that existed at ``at``, newest first, with their stage and aliases as of
    then (those deleted since are included, marked ``deleted``)."""
    when = parse_at(at)
    return get_session().models.versions_at(name, when)


def aliases_at(name: str, at: AtLike) -> dict[str, int]:
    """``{alias: version}`` as of ``at``."""
    when = parse_at(at)
    return get_session().models.aliases_at(name, when)


def list_models() -> list[RegisteredModel]:
    """Every registered model with its latest version, aliases and stages."""
    return get_session().models.list_models()


def get_model(name: str) -> RegisteredModel:
    """One registered model."""
    return get_session().models.get_model(name)


def create(name: str, description: str = "", tags: Mapping[str, Any] | None = None) -> RegisteredModel:
    """Create a registered model with no versions yet (AlreadyExists if it exists)."""
    return get_session().models.create_model(name, description, tags)


def update(
    name: str, version: Any = None, description: str | None = None, tags: Mapping[str, Any] | None = None
) -> Any:
    """Change the description or merge tags of a model (or of one version)."""
    models = get_session().models
    if version is None:
        return models.update_model(name, description, tags)
    return models.update_version(name, version, description, tags)


def set_tags(name: str, tags: Mapping[str, Any], version: Any = None) -> Any:
    """Merge tags into a model (or one version)."""
    return update(name, version, tags=tags)


def delete_tag(name: str, key: str, version: Any = None) -> None:
    """Remove a tag from a model (or one version)."""
    models = get_session().models
    if version is None:
        models.delete_model_tag(name, key)
    else:
        models.delete_version_tag(name, version, key)


def transition_stage(
    name: str,
    version: Any,
    stage: str,
    archive_existing: bool = False,
    reason: str = "",
    who: str | None = None,
) -> ModelVersion:
    """Move a version to None/Staging/Production/Archived (logged with who and why)."""
    return get_session().models.transition_stage(name, version, stage, archive_existing, reason, who)


def set_alias(
    name: str,
    alias: str,
    version: Any = None,
    reason: str = "",
    who: str | None = None,
    at: AtLike | None = None,
) -> RefMove:
    """Point an alias (``champion``) at a version (logged); or, with ``at`` instead of a
    version, where it pointed at that time."""
    return get_session().models.set_alias(name, alias, version, reason, who, at=_at(at))


def rollback(name: str, alias: str, reason: str = "", who: str | None = None, *, steps: int = 1) -> RefMove:
    """Undo an alias's last ``steps`` moves (git's ``reset ALIAS@{steps}``): it points where
    it pointed before its ``steps``-th latest move. A rollback is itself a move."""
    return get_session().models.rollback(name, alias, reason, who, steps=steps)


def delete_alias(name: str, alias: str, reason: str = "", who: str | None = None) -> RefMove:
    """Remove an alias (logged)."""
    return get_session().models.delete_alias(name, alias, reason, who)


def delete_version(name: str, version: Any, reason: str = "", who: str | None = None) -> list[RefMove]:
    """Delete one version and its aliases (recorded in the reflog; numbers are never reused)."""
    return get_session().models.delete_version(name, version, reason, who)


def delete_model(name: str, reason: str = "", who: str | None = None) -> list[RefMove]:
    """Delete a registered model with its versions and aliases (recorded in the reflog)."""
    return get_session().models.delete_model(name, reason, who)


def history(name: str) -> list[RefMove]:
    """Every stage change (``ref`` = ``stage:<version>``) and alias move, oldest first."""
    return get_session().models.history(name)


def card(name: str, version: Any) -> dict[str, Any]:
    """A version's model card as data."""
    return get(name, version=version).card


def card_text(name: str, version: Any) -> str:
    """A version's model card as YAML (the imported text, byte for byte)."""
    return get_session().models.card_text(name, version)


def export_card(name: str, version: Any, path: str | os.PathLike[str]) -> Path:
    """Write a version's model card to ``path`` (YAML)."""
    out = Path(path)
    out.write_text(card_text(name, version), encoding="utf-8")
    return out


def compare(name: str, a: Any, b: Any) -> ModelComparison:
    """Card, metric and param differences between versions ``a`` and ``b``."""
    return get_session().models.compare(name, a, b)


def lineage(name: str, version: Any) -> ModelLineage:
    """The run that produced a version, its params and metrics, and the versions it used."""
    return get_session().models.lineage(name, version)
