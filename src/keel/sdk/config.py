"""``keel.config``: per-environment configuration, recorded with every run that uses it.

::

    cfg = keel.config.load(env="production")          # config/base.yaml + config/production.yaml
    cfg.llm.model, cfg["rag"]["top_k"]                 # attribute and item access
    cfg.source_of("llm.model")                         # 'config/production.yaml:3'
    cfg.to_dict()                                      # secrets as '***'
    prompt = cfg.load_prompt()                         # prompt.name/version through the registry
    keel.config.diff("staging", "production")
    keel.config.history()                              # snapshots with the runs that used them
    keel.config.snapshot(env="production", at="2026-12-07T10:00:00Z")   # what production was then

Loading reads files only (no database), in about a millisecond. Inside an
active run, :func:`load` records the snapshot (the resolved config with secrets
as ``***``, stored once by hash) and the run's input ``config:<env>@<hash12>``;
``cfg.attach(run)`` does the same for a run started later. A failure to record
is logged, never raised into the application.

Keys that share a name with a method (``env``, ``items``, ``get``, ...) are
reached by item access: ``cfg["env"]``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from keel.core.config import ConfigView
from keel.core.entities import EntityRef
from keel.core.model_card import CardChange
from keel.core.times import AtLike, parse_at
from keel.errors import InvalidInput
from keel.sdk.session import Session
from keel.services.config import ConfigService, ConfigSnapshot, LoadedConfig, available_envs, prompt_ref, source_of
from keel.services.config import diff as _diff
from keel.services.config import load as _load

__all__ = ["Config", "ConfigSnapshot", "available_envs", "diff", "history", "load", "snapshot"]

log = logging.getLogger("keel")

_attached: dict[str, set[str]] = {}  # run id -> {"env@hash"} attached in this process


def _service(session: Session) -> ConfigService:
    return session.config


class Config(ConfigView):
    """A resolved configuration: ``cfg.llm.model`` / ``cfg["llm"]["model"]``, read-only."""

    __slots__ = ("_loaded",)

    def __init__(self, loaded: LoadedConfig) -> None:
        super().__init__(loaded.data, "", loaded.resolved.secrets)
        object.__setattr__(self, "_loaded", loaded)

    @property
    def env(self) -> str:
        """The environment loaded."""
        return self._loaded.env

    @property
    def files(self) -> list[str]:
        """The files read, in merge order."""
        return list(self._loaded.files)

    @property
    def sources(self) -> list[str]:
        """The files, then the overrides (``env KEEL_CONFIG__...``, ``--set key``), in merge order."""
        return self._loaded.sources

    @property
    def snapshot_hash(self) -> str:
        """The id of the redacted snapshot (BLAKE3 hex of its canonical JSON)."""
        return self._loaded.hash

    @property
    def entity(self) -> EntityRef:
        """The lineage reference ``config:<env>@<hash12>``."""
        return self._loaded.entity

    @property
    def validated(self) -> Any:
        """The pydantic model instance when loaded with ``schema=Model``, else None."""
        return self._loaded.validated

    def source_of(self, path: str) -> str:
        """Where a value came from: ``config/production.yaml:4``, ``env KEEL_CONFIG__llm__model``
        or ``--set llm.temperature``."""
        return source_of(self._loaded, path)

    def explain(self) -> list[tuple[str, Any, str]]:
        """``(key path, value, origin)`` for every leaf, secrets as ``***``."""
        return self._loaded.resolved.explain()

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        """The values as a plain dict; secrets as ``***`` unless ``redact=False``."""
        return self._loaded.redacted() if redact else ConfigView.to_dict(self, redact=False)

    def to_json(self) -> str:
        """The snapshot text: canonical JSON, secrets as ``***``."""
        return self._loaded.snapshot.decode("utf-8")

    def save(self) -> ConfigSnapshot:
        """Record the snapshot in the store without a run."""
        from keel.sdk.session import get_session

        return _service(get_session()).record(self._loaded)

    def attach(self, run: Any = None) -> EntityRef:
        """Record this config as an input of ``run`` (default: the active run): the snapshot
        is stored once, the run gets ``config:<env>@<hash12>`` and the artifact ``config/<env>.json``."""
        if run is None:
            from keel.sdk.fluent import active_run

            run = active_run()
            if run is None:
                raise InvalidInput("no active run to attach the config to", "call it inside keel.start_run()")
        loaded = self._loaded
        done = _attached.setdefault(run.id, set())
        key = f"{loaded.env}@{loaded.hash}"
        if key in done:
            return loaded.entity
        _service(run._session).record(loaded)
        run.use(loaded.entity, "config")
        same_env = any(k.startswith(loaded.env + "@") for k in done)
        name = f"config/{loaded.env}-{loaded.hash[:12]}.json" if same_env else f"config/{loaded.env}.json"
        run.log_text(name, self.to_json())
        done.add(key)
        return loaded.entity

    def load_prompt(self, name: str | None = None, **kwargs: Any) -> Any:
        """The keel :class:`~keel.sdk.prompts.Prompt` the config's ``prompt`` section names
        (``prompt: {name: chat, version: production}``, ``prompt.version: chat@1.3.0``);
        ``name`` supplies the prompt name when the section has none. Keyword arguments go to
        :func:`keel.prompts.load` (``fallback=``, ``ttl=``)."""
        from keel.sdk import prompts

        return prompts.load(prompt_ref(self._loaded.data, name), **kwargs)

    def __repr__(self) -> str:
        return f"Config(env={self.env!r}, hash={self.snapshot_hash[:12]!r}, {self.to_dict()!r})"


def _env(env: str | None, directory: str | os.PathLike[str] = "config") -> str:
    chosen = env or os.environ.get("KEEL_ENV")
    if not chosen:
        envs = available_envs(directory)
        where = f" (environments in {os.fspath(directory)}/: {', '.join(envs)})" if envs else ""
        raise InvalidInput(
            "which environment?",
            f"keel.config.load(env={envs[0] if envs else 'production'!r}){where}, or set KEEL_ENV",
        )
    return chosen


def load(
    env: str | None = None,
    directory: str | os.PathLike[str] = "config",
    overrides: Sequence[str] | Mapping[str, Any] = (),
    schema: Any = None,
    attach: bool = True,
) -> Config:
    """Load ``<directory>/base.yaml`` + ``<directory>/<env>.yaml`` with ``${VAR}`` interpolation,
    ``KEEL_CONFIG__a__b`` variables and ``overrides`` (``["llm.temperature=0.2"]``), validated
    against ``schema`` (a pydantic model class, a JSON Schema mapping or file) if given.

    ``env`` defaults to ``$KEEL_ENV``. Inside an active run (and ``attach``), the config is
    recorded as the run's input.
    """
    cfg = Config(_load(_env(env, directory), directory, overrides, schema))
    traces = sys.modules.get("keel.sdk.traces")  # not imported: no span can be active
    if traces is not None:
        traces.note("config", cfg.entity.id, cfg.entity.version)  # the current span loaded it
    if attach:
        fluent = sys.modules.get("keel.sdk.fluent")  # not imported: no run can be active
        run = fluent.active_run() if fluent is not None else None
        if run is not None:
            try:
                cfg.attach(run)
            except Exception as exc:  # recording never breaks the application
                log.warning("keel: could not record config %s on run %s: %s", cfg.entity, run.id, exc)
    return cfg


def diff(
    env_a: str, env_b: str, directory: str | os.PathLike[str] = "config", overrides: Sequence[str] = ()
) -> list[CardChange]:
    """What differs between two environments' resolved configs (secrets as ``***``)."""
    return _diff(_load(env_a, directory, overrides), _load(env_b, directory, overrides))


def history(env: str | None = None) -> list[ConfigSnapshot]:
    """Every recorded snapshot (of ``env``), newest first, each with the runs that used it."""
    from keel.sdk.session import get_session

    session = get_session(create=False)
    session.writer.flush()
    return _service(session).history(env)


def snapshot(
    ref: str | None = None, *, env: str | None = None, at: AtLike | None = None
) -> tuple[ConfigSnapshot, dict[str, Any]]:
    """A recorded snapshot with its content (secrets as ``***``): by ``ref`` (6+ hex digits,
    or ``config:<env>@<hash12>``), or the snapshot of ``env`` in use at time ``at`` (a
    datetime, ``"2026-12-07T10:00:00Z"``, ``"1733500000s"``: :func:`keel.core.times.parse_at`;
    the newest recorded by then, or one a run used again by then)."""
    from keel.sdk.session import get_session

    service = _service(get_session(create=False))
    if at is None:
        if ref is None or env is not None:
            raise InvalidInput(
                "give a snapshot id, or an environment and a time",
                "keel.config.snapshot('1f2e3d4c5b6a') or keel.config.snapshot(env='production', at=...)",
            )
        return service.get(ref)
    if ref is not None or env is None:
        raise InvalidInput(
            "at= asks which snapshot of an environment was in use then: give env=, not a snapshot id",
            "keel.config.snapshot(env='production', at='2026-12-07T10:00:00Z')",
        )
    found = service.at(env, parse_at(at))  # read here: a naive datetime is this machine's local time
    return service.get(found.hash)
