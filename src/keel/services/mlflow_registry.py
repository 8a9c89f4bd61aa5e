"""MLflow's model registry and prompt registry as keel use cases.

MLflow keeps models and prompts in one registry (a prompt is a registered model
tagged ``mlflow.prompt.is_prompt = true`` whose versions carry the template in the
``mlflow.prompt.text`` tag). keel has two registries, so a name is routed:

- a keel registered model: versions, stages, aliases and tags are keel's
  (:class:`~keel.services.models.ModelService`); every stage change and alias
  move made through MLflow lands in keel's reflog (``keel models history``).
- a keel prompt (or an MLflow prompt not yet versioned): each MLflow version
  registers a keel prompt version (:class:`~keel.services.prompts.PromptService`,
  semver, the smallest bump the change needs). MLflow's integer version numbers
  map to keel's semver in ``mlflow_prompt_versions``; keel versions registered
  outside MLflow get the next numbers, in semver order, when MLflow first sees
  them. Re-registering identical content makes a new MLflow number for the same
  keel version (keel stores identical content once).

Every function answers MLflow's JSON shapes (see
:mod:`keel.integrations.mlflow_rest.entities`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from keel.core.entities import now_ms
from keel.core.refnames import check_alias, match_alias
from keel.errors import AlreadyExists, InvalidInput, NotFound
from keel.integrations.mlflow_rest.entities import model_version_json, registered_model_json
from keel.integrations.mlflow_rest.filters import IS_PROMPT_TAG, order_rows, registry_filter
from keel.integrations.mlflow_rest.paging import page_of
from keel.integrations.mlflow_rest.validation import check_model_version_source, invalid_source, source_within
from keel.meta.mlflow_prompts import MlflowPromptRows
from keel.services.models import ModelService, normalize_stage
from keel.services.prompts import PromptService, PromptVersion

__all__ = ["IS_PROMPT", "MlflowRegistry", "run_source"]

IS_PROMPT = IS_PROMPT_TAG
_TEXT = "mlflow.prompt.text"
_TYPE = "_mlflow_prompt_type"
_RESPONSE_FORMAT = "_mlflow_prompt_response_format"
_MODEL_CONFIG = "_mlflow_prompt_model_config"
_MODEL_ATTRIBUTES = ("name", "creation_timestamp", "last_updated_timestamp", "timestamp")
#: MLflow's alias that always names the highest version (it cannot be set).
LATEST = "latest"
_ALIAS = re.compile(r"[\w\-]*")
_VERSION_ALIAS = re.compile(r"[vV]\d+")
#: ``model_versions.run_id`` holds 32 characters (as MLflow's own column does).
_MAX_RUN_ID = 32
_VERSION_ATTRIBUTES = (
    "name",
    "version",
    "version_number",
    "run_id",
    "source",
    "source_path",
    "current_stage",
    "creation_timestamp",
    "last_updated_timestamp",
    "timestamp",
)


def run_source(source: str) -> str:
    """A model source as keel spells it: the proxied artifact URI the MLflow client sends
    (``mlflow-artifacts:/<exp>/<run>/artifacts/<path>``) becomes ``runs:/<run>/<path>``."""
    prefix = "mlflow-artifacts:/"
    if source.startswith(prefix):
        parts = source[len(prefix) :].strip("/").split("/", 3)
        if len(parts) >= 3 and parts[2] == "artifacts" and len(parts[1]) == 32:
            return f"runs:/{parts[1]}/{parts[3]}" if len(parts) > 3 else f"runs:/{parts[1]}"
    if source.startswith("models:/m-"):
        raise InvalidInput(
            f"the source {source!r} is an MLflow logged model: logged models are not supported by keel",
            "log the model's files as run artifacts and register runs:/<run_id>/<path>",
        )
    return source


def _tag_dict(items: Iterable[Mapping[str, Any]] | Mapping[str, Any] | None) -> dict[str, str]:
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in items.items()}
    return {str(t.get("key")): "" if t.get("value") is None else str(t.get("value")) for t in items}


class MlflowRegistry:
    """MLflow registered models, model versions and prompts over keel's registries."""

    def __init__(self, models: ModelService, prompts: PromptService) -> None:
        self.models = models
        self.prompts = prompts
        self.db = models.db
        self.rows = MlflowPromptRows(self.db)

    # -- routing ------------------------------------------------------------------------
    def _prompt_row(self, name: str) -> dict[str, Any] | None:
        row = self.rows.prompt(name)
        return None if row is None else {**row, "tags": json.loads(row["tags"] or "{}")}

    def _keel_prompt_versions(self, name: str) -> list[PromptVersion]:
        try:
            return self.prompts.versions(name)
        except NotFound:
            return []

    def _is_model(self, name: str) -> bool:
        try:
            self.models.get_model(name)
        except NotFound:
            return False
        return True

    def is_prompt(self, name: str) -> bool:
        """True if ``name`` is a prompt (MLflow-created, or a keel prompt)."""
        return self._prompt_row(name) is not None or bool(self._keel_prompt_versions(name))

    def _not_found(self, name: str) -> NotFound:
        return NotFound(
            f"Registered Model with name={name} not found", "list them: MlflowClient().search_registered_models()"
        )

    # -- prompts: the integer <-> semver map ----------------------------------------------
    def _sync(self, name: str) -> tuple[list[dict[str, Any]], dict[str, PromptVersion]]:
        """The MLflow versions of a prompt (oldest first), numbering keel versions MLflow
        has not seen yet; and the keel versions by semver."""
        keel_versions = {v.version: v for v in self._keel_prompt_versions(name)}
        rows = self.rows.versions(name)
        seen = {r["keel_version"] for r in rows}
        if seen.issuperset(keel_versions):
            return self._decoded(rows), keel_versions
        # number what keel registered since MLflow last looked
        ordered = sorted(keel_versions.values(), key=lambda v: v.created_at)
        rows = self.rows.number_versions(
            name,
            [{"keel_version": v.version, "description": v.changelog, "created_at": v.created_at} for v in ordered],
        )
        return self._decoded(rows), keel_versions

    @staticmethod
    def _decoded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            row["tags"] = json.loads(row["tags"] or "{}") if isinstance(row["tags"], str) else row["tags"]
        return rows

    @staticmethod
    def _prompt_tags(version: PromptVersion, stored: Mapping[str, str]) -> dict[str, str]:
        tags = {IS_PROMPT: "true"}
        content = version.content.to_dict()
        template = content["template"]
        if isinstance(template, str):
            tags.update({_TEXT: template, _TYPE: "text"})
        else:
            tags.update({_TEXT: json.dumps(template), _TYPE: "chat"})
        if content.get("response_schema") is not None:
            tags[_RESPONSE_FORMAT] = json.dumps(content["response_schema"])
        tags.update(stored)
        return tags

    def _prompt_version_json(
        self, row: Mapping[str, Any], version: PromptVersion | None, aliases: Mapping[str, int]
    ) -> dict[str, Any]:
        tags = self._prompt_tags(version, row["tags"]) if version is not None else {IS_PROMPT: "true", **row["tags"]}
        return model_version_json(
            {
                "name": row["name"],
                "version": row["version"],
                "created_at": row["created_at"],
                "updated_at": row["updated_at"],
                "author": version.author if version else "",
                "stage": "None",
                "description": row["description"],
                "source": f"prompts:/{row['name']}/{row['version']}",
                "run_id": None,
                "tags": tags,
                "aliases": sorted(a for a, v in aliases.items() if v == row["version"]),
            }
        )

    def _prompt_aliases(
        self, rows: Sequence[Mapping[str, Any]], versions: Mapping[str, PromptVersion]
    ) -> dict[str, int]:
        """keel's prompt aliases as MLflow numbers (the newest number of the aliased semver)."""
        numbers: dict[str, int] = {}
        for row in rows:
            numbers[row["keel_version"]] = row["version"]
        out = {}
        for version in versions.values():
            for alias in version.aliases:
                if version.version in numbers:
                    out[alias] = numbers[version.version]
        return out

    def _prompt_model_json(self, name: str) -> dict[str, Any]:
        meta = self._prompt_row(name)
        rows, versions = self._sync(name)
        created = meta["created_at"] if meta else min((r["created_at"] for r in rows), default=now_ms())
        updated = meta["updated_at"] if meta else max((r["updated_at"] for r in rows), default=created)
        tags = {IS_PROMPT: "true", **(meta["tags"] if meta else {})}
        aliases = self._prompt_aliases(rows, versions)
        body = registered_model_json(
            {
                "name": name,
                "created_at": created,
                "updated_at": updated,
                "description": meta["description"] if meta else "",
                "tags": tags,
                "aliases": aliases,
            }
        )
        if rows:
            latest = rows[-1]
            body["latest_versions"] = [self._prompt_version_json(latest, versions.get(latest["keel_version"]), aliases)]
        return body

    def _create_prompt_version(self, name: str, tags: dict[str, str], description: str, who: str) -> dict[str, Any]:
        text = tags.get(_TEXT)
        if text is None:
            raise InvalidInput(
                f"a version of prompt {name!r} needs the {_TEXT} tag", "use mlflow.genai.register_prompt"
            )
        template: Any = json.loads(text) if tags.get(_TYPE) == "chat" else text
        config = json.loads(tags[_MODEL_CONFIG]) if tags.get(_MODEL_CONFIG) else {}
        response = json.loads(tags[_RESPONSE_FORMAT]) if tags.get(_RESPONSE_FORMAT) else None
        model = str(config.pop("model_name", "") or "") if isinstance(config, dict) else ""
        rows, _versions = self._sync(name)
        number = max((r["version"] for r in rows), default=0) + 1
        version, _created = self.prompts.register(
            name,
            template,
            model=model,
            parameters=config if isinstance(config, dict) else {},
            response_schema=response,
            changelog=description or f"MLflow prompt version {number}",
            author=who,
        )
        now = now_ms()
        row = {
            "name": name,
            "version": number,
            "keel_version": version.version,
            "description": description,
            "tags": json.dumps(tags),
            "created_at": now,
            "updated_at": now,
        }
        self.rows.add_version(row)
        return self._prompt_version_json({**row, "tags": tags}, version, {})

    def _prompt_version(self, name: str, number: Any) -> dict[str, Any]:
        rows, versions = self._sync(name)
        aliases = self._prompt_aliases(rows, versions)
        for row in rows:
            if str(row["version"]) == str(number):
                return self._prompt_version_json(row, versions.get(row["keel_version"]), aliases)
        raise NotFound(
            f"Prompt (name={name}, version={number}) not found", f"list its versions: keel prompts log {name}"
        )

    def _set_prompt_meta(
        self, name: str, description: str | None = None, tags: Mapping[str, str | None] | None = None
    ) -> None:
        meta = self._prompt_row(name)
        now = now_ms()
        merged = dict(meta["tags"]) if meta else {}
        for key, value in (tags or {}).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        values = {"tags": json.dumps(merged), "updated_at": now}
        if description is not None:
            values["description"] = description
        self.rows.set_prompt(name, values, exists=meta is not None)

    def _set_prompt_version_meta(
        self, name: str, number: Any, description: str | None = None, tags: Mapping[str, str | None] | None = None
    ) -> None:
        rows, _versions = self._sync(name)
        found = [r for r in rows if str(r["version"]) == str(number)]
        if not found:
            raise NotFound(f"Prompt (name={name}, version={number}) not found", "check the version")
        merged = dict(found[0]["tags"])
        for key, value in (tags or {}).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        values: dict[str, Any] = {"tags": json.dumps(merged), "updated_at": now_ms()}
        if description is not None:
            values["description"] = description
        self.rows.set_version(name, found[0]["version"], values)

    def _keel_version_of(self, name: str, number: Any) -> str:
        rows, _versions = self._sync(name)
        for row in rows:
            if str(row["version"]) == str(number):
                return str(row["keel_version"])
        raise NotFound(f"Prompt (name={name}, version={number}) not found", "check the version")

    # -- registered models -------------------------------------------------------------------
    def _model_json(self, name: str) -> dict[str, Any]:
        model = self.models.get_model(name).to_dict()
        return registered_model_json(model, [v.to_dict() for v in self.models.versions(name)])

    def create_registered_model(self, name: Any, tag_items: Any, description: str | None, who: str) -> dict[str, Any]:
        """A new registered model, or a new prompt when tagged ``mlflow.prompt.is_prompt``."""
        if not isinstance(name, str) or not name:
            raise InvalidInput("a registered model needs a name", "create_registered_model('chat-assistant')")
        tags = _tag_dict(tag_items)
        if self.is_prompt(name) or self._is_model(name):
            raise AlreadyExists(f"Registered Model (name={name}) already exists", "register a new version of it")
        if tags.get(IS_PROMPT) == "true":
            self.rows.create_prompt(name, description or "", json.dumps(tags), now_ms())
            return self._prompt_model_json(name)
        self.models.create_model(name, description or "", tags)
        return self._model_json(name)

    def get_registered_model(self, name: str) -> dict[str, Any]:
        """A registered model (or prompt) by name."""
        if self._is_model(name):
            return self._model_json(name)
        if self.is_prompt(name):
            return self._prompt_model_json(name)
        raise self._not_found(name)

    def update_registered_model(self, name: str, description: str | None) -> dict[str, Any]:
        """Change the description of a model or prompt."""
        if self._is_model(name):
            self.models.update_model(name, description=description)
            return self._model_json(name)
        if self.is_prompt(name):
            self._set_prompt_meta(name, description=description)
            return self._prompt_model_json(name)
        raise self._not_found(name)

    def delete_registered_model(self, name: str, who: str) -> None:
        """Delete a model with its versions (audited in keel's reflog); a prompt only while
        it has no versions (keel keeps every prompt version)."""
        if self._is_model(name):
            self.models.delete_model(name, reason="deleted through MLflow", who=who)
            return
        if self._keel_prompt_versions(name):
            raise InvalidInput(
                f"deleting prompt {name!r} is not supported by keel: keel keeps every prompt version",
                "move or delete its aliases instead",
            )
        if self._prompt_row(name) is None:
            raise self._not_found(name)
        self.rows.delete_prompt(name)

    def set_registered_model_tag(self, name: str, key: str, value: str | None) -> None:
        """Set (``value``) or delete (``None``) a tag of a model or prompt."""
        if self._is_model(name):
            if value is None:
                self.models.delete_model_tag(name, key)
            else:
                self.models.update_model(name, tags={key: value})
        elif self.is_prompt(name):
            self._set_prompt_meta(name, tags={key: value})
        else:
            raise self._not_found(name)

    def _all_rows(self) -> list[dict[str, Any]]:
        rows = []
        for model in self.models.list_models():
            rows.append(
                {
                    "name": model.name,
                    "creation_timestamp": model.created_at,
                    "last_updated_timestamp": model.updated_at,
                    "timestamp": model.updated_at,
                    "tags": dict(model.tags),
                    "prompt": False,
                }
            )
        names = {name for name, _latest in self.prompts.list_prompts()}
        metas = {r["name"]: r for r in self.rows.prompts()}
        for name in sorted(names | set(metas)):
            meta = metas.get(name)
            tags = {IS_PROMPT: "true", **(json.loads(meta["tags"] or "{}") if meta else {})}
            created = meta["created_at"] if meta else 0
            rows.append(
                {
                    "name": name,
                    "creation_timestamp": created,
                    "last_updated_timestamp": created,
                    "timestamp": created,
                    "tags": tags,
                    "prompt": True,
                }
            )
        return rows

    def search_registered_models(
        self, filter_string: str | None, max_results: Any, order_by: Sequence[str] | None, page_token: str | None
    ) -> tuple[list[dict[str, Any]], str]:
        """Models and prompts matching an MLflow filter (``name LIKE 'x%'``, ``tags.k = 'v'``)."""
        keep = registry_filter(filter_string, _MODEL_ATTRIBUTES)
        rows = [row for row in self._all_rows() if keep(row)]
        ordered = order_rows(rows, order_by, _MODEL_ATTRIBUTES, ["name"])
        page, token = page_of(ordered, max_results or 100, page_token, limit=1000)
        return [self._prompt_model_json(r["name"]) if r["prompt"] else self._model_json(r["name"]) for r in page], token

    # -- versions ------------------------------------------------------------------------------
    def create_model_version(
        self,
        name: str,
        source: Any,
        run_id: str | None,
        tag_items: Any,
        description: str | None,
        who: str,
        run_root: str | None = None,
        link: bool = False,
    ) -> dict[str, Any]:
        """Register the next version of a model (keel's ``register``) or of a prompt.

        MLflow's rules for the source and ``run_id`` apply
        (:func:`~keel.integrations.mlflow_rest.validation.check_model_version_source`): any
        ``run_id`` is taken as given (MLflow registers runs of other stores), except that a
        ``runs:/`` source must name it and an artifact URI this server serves must lie under
        its run's artifacts. ``run_root`` is the artifact URI of the keel run ``run_id`` names
        (None: no such run the caller can read); ``link`` records the version as that run's
        output (the caller may write the run's project), otherwise the id is only recorded.
        """
        tags = _tag_dict(tag_items)
        if tags.get(IS_PROMPT) == "true" or (not self._is_model(name) and self.is_prompt(name)):
            if not self.is_prompt(name):
                raise self._not_found(name)
            return self._create_prompt_version(name, tags, description or "", who)
        if not isinstance(source, str) or not source:
            raise InvalidInput("a model version needs a source", "register runs:/<run_id>/<path>")
        run_id = run_id or ""
        left = check_model_version_source(source, run_id)
        if left == "local":
            if run_id and run_root is None:
                raise invalid_source(source)
            raise InvalidInput(
                f"Invalid model version source: '{source}'. To use a local path as a model version source, the "
                "run_id request parameter has to be specified and the local path has to be contained within the "
                "artifact directory of the run specified by the run_id.",
                "log the files as run artifacts and register runs:/<run_id>/<path>",
            )
        if left == "proxied" and (not run_id or run_root is None or not source_within(source, run_root)):
            raise invalid_source(source)
        if len(run_id) > _MAX_RUN_ID:
            raise InvalidInput(
                f"run_id {run_id[:80]!r} is longer than {_MAX_RUN_ID} characters", "MLflow run ids are 32 characters"
            )
        version = self.models.register(
            name,
            run_source(source),
            run_id=run_id or None,
            description=description or "",
            tags=tags,
            author=who,
            external_run=not link,
            check_artifact=False,
        )
        return model_version_json(version.to_dict())

    def get_model_version(self, name: str, version: Any) -> dict[str, Any]:
        """One version of a model or prompt."""
        if not self._is_model(name) and self.is_prompt(name):
            return self._prompt_version(name, version)
        return model_version_json(self.models.get(name, version=version).to_dict())

    def update_model_version(self, name: str, version: Any, description: str | None) -> dict[str, Any]:
        """Change a version's description."""
        if not self._is_model(name) and self.is_prompt(name):
            self._set_prompt_version_meta(name, version, description=description)
            return self._prompt_version(name, version)
        return model_version_json(self.models.update_version(name, version, description=description).to_dict())

    def delete_model_version(self, name: str, version: Any, who: str) -> None:
        """Delete a model version (audited); prompt versions are kept by keel."""
        if not self._is_model(name) and self.is_prompt(name):
            raise InvalidInput(
                f"deleting a version of prompt {name!r} is not supported by keel: keel keeps every prompt version",
                "point an alias at another version instead",
            )
        self.models.delete_version(name, version, reason="deleted through MLflow", who=who)

    def set_model_version_tag(self, name: str, version: Any, key: str, value: str | None) -> None:
        """Set (``value``) or delete (``None``) a tag of a version."""
        if not self._is_model(name) and self.is_prompt(name):
            self._set_prompt_version_meta(name, version, tags={key: value})
        elif value is None:
            self.models.delete_version_tag(name, version, key)
        else:
            self.models.update_version(name, version, tags={key: value})

    def _version_rows(self) -> list[dict[str, Any]]:
        rows = []
        for model in self.models.list_models():
            for v in self.models.versions(model.name):
                data = model_version_json(v.to_dict())
                rows.append(
                    {
                        **data,
                        "version": v.version,
                        "version_number": v.version,
                        "source_path": v.source,
                        "timestamp": v.updated_at,
                        "tags": dict(v.tags),
                        "json": data,
                    }
                )
        for row in self._all_rows():
            if row["prompt"]:
                for number in self._prompt_numbers(row["name"]):
                    data = self._prompt_version(row["name"], number)
                    tags = {t["key"]: t["value"] for t in data["tags"]}
                    rows.append(
                        {
                            **data,
                            "version": number,
                            "version_number": number,
                            "source_path": data["source"],
                            "timestamp": data["last_updated_timestamp"],
                            "tags": tags,
                            "json": data,
                        }
                    )
        return rows

    def _prompt_numbers(self, name: str) -> list[int]:
        rows, _versions = self._sync(name)
        return [int(r["version"]) for r in rows]

    def search_model_versions(
        self, filter_string: str | None, max_results: Any, order_by: Sequence[str] | None, page_token: str | None
    ) -> tuple[list[dict[str, Any]], str]:
        """Versions matching an MLflow filter (``name = 'm'``, ``run_id = '...'``, ``tags.k = 'v'``)."""
        keep = registry_filter(filter_string, _VERSION_ATTRIBUTES)
        rows = [row for row in self._version_rows() if keep(row)]
        ordered = order_rows(rows, order_by, _VERSION_ATTRIBUTES, ["name", "version_number DESC"])
        page, token = page_of(ordered, max_results or 10_000, page_token, limit=200_000)
        return [row["json"] for row in page], token

    def get_latest_versions(self, name: str, stages: Sequence[str] | None) -> list[dict[str, Any]]:
        """The highest version in each stage asked for (every stage when none is)."""
        if not self._is_model(name) and self.is_prompt(name):
            return self._prompt_model_json(name)["latest_versions"]
        latest = registered_model_json(
            self.models.get_model(name).to_dict(), [v.to_dict() for v in self.models.versions(name)]
        )["latest_versions"]
        wanted = {normalize_stage(s) for s in stages or ()}
        return [v for v in latest if not wanted or v["current_stage"] in wanted]

    def transition_stage(self, name: str, version: Any, stage: str, archive_existing: bool, who: str) -> dict[str, Any]:
        """Move a model version to a stage (keel's reflog records the move and who made it)."""
        if not self._is_model(name) and self.is_prompt(name):
            raise InvalidInput(f"{name!r} is a prompt: prompts have no stages", "use an alias: set_prompt_alias")
        moved = self.models.transition_stage(
            name, version, stage, archive_existing=bool(archive_existing), reason="through MLflow", who=who
        )
        return model_version_json(moved.to_dict())

    # -- aliases ------------------------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: Any, who: str) -> None:
        """Point an alias at a version of a model or prompt (logged in keel's reflog).

        MLflow's alias rules: letters, digits, ``_`` and ``-``; ``latest`` and ``v<number>``
        are reserved (``latest`` always names the highest version). Then keel's one rule
        (:mod:`keel.core.refnames`): a model's alias may not be a stage name in any case, and
        aliases are case-insensitive (``Champion`` moves an existing ``champion``; any case reads it)."""
        if not _ALIAS.fullmatch(alias) or not alias:
            raise InvalidInput(
                f"Invalid alias name: '{alias}'. Names may only contain alphanumerics, underscores (_), and dashes (-)."
            )
        if alias.lower() == LATEST:
            raise InvalidInput("'latest' alias name (case insensitive) is reserved.")
        if _VERSION_ALIAS.fullmatch(alias):
            raise InvalidInput(f"Version alias name '{alias}' is reserved.")
        prompt = not self._is_model(name) and self.is_prompt(name)
        check_alias(alias, stages=not prompt)  # keel's one rule: stage names are a model's stages
        if prompt:
            self.prompts.set_alias(name, alias, self._keel_version_of(name, version), reason="through MLflow", who=who)
        else:
            self.models.set_alias(name, alias, version, reason="through MLflow", who=who)

    def delete_alias(self, name: str, alias: str, who: str) -> None:
        """Remove an alias (logged), named in any case."""
        if not self._is_model(name) and self.is_prompt(name):
            self.prompts.delete_alias(name, alias, reason="through MLflow", who=who)
        else:
            self.models.delete_alias(name, alias, reason="through MLflow", who=who)

    def get_by_alias(self, name: str, alias: str) -> dict[str, Any]:
        """The version an alias points at; ``latest`` (any case) is the highest version, as
        MLflow resolves it (``load_prompt("name")`` and ``prompts:/name@latest`` ask for it)."""
        missing = InvalidInput(
            f"Registered model alias {alias} not found.", f"see its aliases: get_registered_model({name!r})"
        )
        if not self._is_model(name) and self.is_prompt(name):
            rows, versions = self._sync(name)
            if alias.lower() == LATEST:
                if not rows:
                    raise NotFound(f"Latest version not found for model {name}.", "register a version first")
                return self._prompt_version(name, rows[-1]["version"])
            aliases = self._prompt_aliases(rows, versions)
            spelled = match_alias(aliases, alias)  # aliases are case-insensitive in keel
            number = None if spelled is None else aliases[spelled]
            if number is None:
                raise missing
            return self._prompt_version(name, number)
        if alias.lower() == LATEST:
            if not self._is_model(name):
                raise self._not_found(name)
            registered = self.models.versions(name)
            if not registered:
                raise NotFound(f"Latest version not found for model {name}.", "register a version first")
            return model_version_json(max(registered, key=lambda v: int(v.version)).to_dict())
        try:
            return model_version_json(self.models.get(name, alias=alias).to_dict())
        except NotFound:
            if not self._is_model(name):
                raise self._not_found(name) from None
            raise missing from None
