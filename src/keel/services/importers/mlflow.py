"""Import from MLflow: an ``mlruns`` folder, a SQLite database or an MLflow server.

Read with MLflow's own client (``mlflow.MlflowClient``; the ``import-mlflow``
extra), written through keel's services:

- experiments -> projects (``Default`` -> ``default``);
- runs -> runs with the same 32-hex id, name, status, start and end times,
  params (as strings, as MLflow stores them), every tag, every metric's full
  history (step, timestamp, value), every artifact (files and folders, byte
  for byte) and the parent of a nested run (tag ``mlflow.parentRunId``). One
  run is one transaction: it is there completely or not at all;
- registered models and versions -> the model registry (the version's source
  ``runs:/RUN/PATH`` points at the imported run; the MLflow version number is
  kept in the tag ``mlflow.version``), then each version's stage and the
  model's aliases, moved with keel's reflog (reason "imported from MLflow");
- prompts -> keel prompts: MLflow version ``N`` becomes keel version
  ``N.0.0`` (identical content registers nothing new and maps to the version
  that has it), with the commit message as changelog and the aliases moved.

The importer skips what the ledger lists and what keel already has (a run with
that id, a model version tagged with that MLflow version), so it can be run
again after an interruption or to pick up new runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel.core.batch import WriteBatch
from keel.core.entities import now_ms
from keel.core.hashing import canonical_json
from keel.core.refnames import check_alias, match_alias
from keel.errors import InvalidInput, KeelError, NotFound, StoreError
from keel.meta.sqlite_files import NotADatabase, table_names
from keel.services.importers.ledger import ImportSummary, Ledger, Progress
from keel.services.importers.naming import derived_run_id, safe_name
from keel.services.models import ModelService
from keel.services.prompts import PromptService
from keel.services.tracking import TrackingService
from keel.services.workspace import Store

__all__ = ["WHO", "MlflowImporter", "check_source", "import_mlflow", "keel_run_id", "project_name"]

#: The actor recorded in the reflog for moves made by an import.
WHO = "mlflow-import"
_REASON = "imported from MLflow"
_STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
_PAGE = 1000
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _mlflow() -> Any:
    """The ``mlflow`` package, or a clear error naming the extra to install."""
    try:
        with warnings.catch_warnings():  # its import-time deprecation notes are not the user's business
            warnings.simplefilter("ignore")
            import mlflow
    except ImportError:
        raise InvalidInput(
            "importing from MLflow needs the mlflow package", "install it: pip install 'keel[import-mlflow]'"
        ) from None
    return mlflow


def keel_run_id(mlflow_run_id: str) -> str:
    """The keel id of an imported MLflow run: the same id when it is 32 hex digits
    (MLflow's own ids are), else a stable hash of it."""
    text = str(mlflow_run_id).lower()
    return text if _HEX32.match(text) else derived_run_id("mlflow", str(mlflow_run_id))


def project_name(experiment_name: str) -> str:
    """The keel project for an MLflow experiment: ``Default`` -> ``default``; characters
    keel names do not allow (MLflow allows ``/Users/x/exp``-style names) become ``-``."""
    return "default" if experiment_name == "Default" else safe_name(experiment_name, "default")


@dataclass
class _Source:
    """A validated MLflow location: the URI the client opens and the normalized form kept in the ledger."""

    uri: str
    location: str
    file_store: bool = False


def check_source(uri: str) -> _Source:
    """Validate ``uri`` (a folder, ``file://``, ``sqlite:///``, ``http(s)://``) without opening
    it with MLflow: a source that is not what it claims is an InvalidInput, before anything is written."""
    text = str(uri).strip()
    if text.startswith(("http://", "https://")):
        location = text.rstrip("/")
        return _Source(location, location)
    if text.startswith("sqlite:///"):
        path = Path(text[len("sqlite:///") :]).expanduser()
        if not path.is_file():
            raise InvalidInput(f"no MLflow database at {path}", "give sqlite:///path/to/mlflow.db of an existing file")
        try:
            tables = table_names(path)
        except NotADatabase as exc:
            raise InvalidInput(f"{path} is not a SQLite database ({exc})", "give MLflow's tracking database") from None
        if not {"experiments", "runs"} <= tables:
            raise InvalidInput(
                f"{path} is not an MLflow tracking database (no experiments and runs tables)",
                "give the file MLflow was started with: --backend-store-uri sqlite:///...",
            )
        location = f"sqlite:///{path.resolve()}"
        return _Source(location, location)
    if "://" in text and not text.startswith("file://"):
        raise InvalidInput(
            f"unsupported MLflow tracking URI {text!r}",
            "give an mlruns folder, sqlite:///path/to/mlflow.db or http(s)://host:port of an MLflow server",
        )
    folder = Path(text[len("file://") :] if text.startswith("file://") else text).expanduser()
    if not folder.is_dir():
        raise InvalidInput(f"no mlruns folder at {folder}", "give the folder MLflow writes (usually ./mlruns)")
    experiments = [p for p in folder.iterdir() if p.is_dir() and (p / "meta.yaml").is_file()]
    if not experiments and not (folder / "models").is_dir():
        raise InvalidInput(
            f"{folder} is not an mlruns folder (no experiment folder with a meta.yaml)",
            "give the folder MLflow writes (usually ./mlruns)",
        )
    resolved = folder.resolve()
    return _Source(resolved.as_uri(), str(resolved), file_store=True)


@contextlib.contextmanager
def _reading(what: str) -> Iterator[None]:
    """MLflow's errors (and its warnings) while reading ``what``, as one clear KeelError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        except KeelError:
            raise
        except Exception as exc:  # MlflowException, connection and file errors alike
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise StoreError(
                f"MLflow could not read {what}: {first}", "check the source, fix it and run the import again"
            ) from exc


@contextlib.contextmanager
def _mlflow_env(source: _Source) -> Iterator[None]:
    """MLflow settings for the time of the import. MLflow 3 refuses its file store unless
    told (reading one is what we are here for), and retries an unreachable server for
    minutes (an import should say so within seconds): defaults where the user set none.
    MLflow's file registry opens clients of the *default* tracking URI internally (which
    would create ``mlflow.db`` in the current folder): the source is made the default."""
    defaults = (
        {"MLFLOW_ALLOW_FILE_STORE": "true"}
        if source.file_store
        else {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
        if source.uri.startswith(("http://", "https://"))
        else {}
    )
    wanted = {k: v for k, v in defaults.items() if k not in os.environ}
    wanted.update({"MLFLOW_TRACKING_URI": source.uri, "MLFLOW_REGISTRY_URI": source.uri})
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _pages(fetch: Any) -> Iterator[Any]:
    """Every item of an MLflow paged listing (``fetch(page_token)`` returns a PagedList)."""
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


@dataclass
class _Plan:
    """What the source holds, listed before anything is written (for the progress total)."""

    experiments: dict[str, str] = field(default_factory=dict)  # experiment id -> project
    runs: list[Any] = field(default_factory=list)
    models: list[tuple[Any, list[Any]]] = field(default_factory=list)
    prompts: list[tuple[str, list[int]]] = field(default_factory=list)

    def total(self) -> int:
        return len(self.runs) + sum(len(v) for _, v in self.models) + sum(len(v) for _, v in self.prompts)


class MlflowImporter:
    """One import from one MLflow source into one keel store."""

    def __init__(self, store: Store, uri: str, progress: Progress | None = None) -> None:
        self.source = check_source(uri)
        self.store = store
        self.tracking = TrackingService(store)
        self.models = ModelService(store, self.tracking)
        self.prompts = PromptService(store)
        self.ledger = Ledger(store, "mlflow")
        self.summary = ImportSummary("mlflow", self.source.location)
        self.progress = progress
        self._done = 0
        self._total = 0

    def _key(self, item: str) -> str:
        """A ledger id for an item whose MLflow id is only unique within its source."""
        return f"{self.source.location}#{item}"

    def _tick(self) -> None:
        self._done += 1
        if self.progress is not None:
            self.progress(self._done, self._total)

    def run(self) -> ImportSummary:
        """Import everything; return the counts."""
        mlflow = _mlflow()
        with _mlflow_env(self.source):
            with _reading(self.source.location):
                client = mlflow.MlflowClient(tracking_uri=self.source.uri, registry_uri=self.source.uri)
            plan = self._plan(client)
            self._total = plan.total()
            if self.progress is not None:
                self.progress(0, self._total)
            self._import_experiments(plan)
            for run in plan.runs:
                self._import_run(client, plan, run)
                self._tick()
            for model, versions in plan.models:
                self._import_model(client, model, versions)
            for name, numbers in plan.prompts:
                self._import_prompt(client, name, numbers)
        return self.summary

    # -- listing ---------------------------------------------------------------------------
    def _plan(self, client: Any) -> _Plan:
        from mlflow.entities import ViewType

        plan = _Plan()
        with _reading(f"the experiments of {self.source.location}"):
            experiments = list(
                _pages(
                    lambda t: client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=_PAGE, page_token=t)
                )
            )
        for exp in experiments:
            plan.experiments[exp.experiment_id] = project_name(exp.name)
            with _reading(f"the runs of experiment {exp.name!r}"):
                plan.runs += list(
                    _pages(
                        lambda t, e=exp.experiment_id: client.search_runs(
                            [e], run_view_type=ViewType.ACTIVE_ONLY, max_results=_PAGE, page_token=t
                        )
                    )
                )
        with _reading("the registered models"):
            models = list(_pages(lambda t: client.search_registered_models(max_results=_PAGE, page_token=t)))
            for model in models:
                versions = list(
                    _pages(
                        lambda t, n=model.name: client.search_model_versions(
                            f"name = '{_quote(n)}'", max_results=_PAGE, page_token=t
                        )
                    )
                )
                plan.models.append((model, sorted(versions, key=lambda v: int(v.version))))
        with _reading("the prompts"):
            for prompt in _pages(lambda t: client.search_prompts(max_results=_PAGE, page_token=t)):
                numbers = sorted(
                    int(v.version)
                    for v in _pages(lambda t, n=prompt.name: client.search_prompt_versions(n, page_token=t))
                )
                plan.prompts.append((prompt.name, numbers))
        return plan

    # -- experiments and runs ------------------------------------------------------------------
    def _import_experiments(self, plan: _Plan) -> None:
        keys = {self._key(f"experiment:{e}"): p for e, p in plan.experiments.items()}
        known = self.ledger.known("experiment", keys)
        existing = {p.name for p, _ in self.tracking.list_projects()}
        fresh: list[tuple[str, str, dict[str, str]]] = []
        for key, project in keys.items():
            if key in known:
                self.summary.count("experiment", False)
                continue
            if project not in existing:
                self.tracking.create_project(project, "imported from MLflow")
                existing.add(project)
            fresh.append((key, project, {}))
            self.summary.count("experiment", True)
        self.ledger.record_many("experiment", fresh, self.source.location)

    def _import_run(self, client: Any, plan: _Plan, run: Any) -> None:
        info, data = run.info, run.data
        run_id = keel_run_id(info.run_id)
        if self.ledger.known("run", [info.run_id]):
            self.summary.count("run", False)
            return
        if self.tracking.repo.get_runs([run_id]):  # written, but the ledger row was not: finish it
            self.ledger.record("run", info.run_id, run_id, self.source.location)
            self.summary.count("run", False)
            return
        what = f"run {info.run_id}"
        with _reading(what):
            histories = {key: client.get_metric_history(info.run_id, key) for key in sorted(data.metrics)}
        with tempfile.TemporaryDirectory(prefix="keel-mlflow-") as tmp:
            artifacts = self._artifacts(client, info.run_id, Path(tmp), what)
            batch = self._batch(plan, run, run_id, histories, artifacts)
            self.tracking.write_batch(batch)  # one transaction: the run is complete or absent
        self.ledger.record("run", info.run_id, run_id, self.source.location)
        self.summary.count("run", True)
        self.summary.count("metric value", True, sum(len(h) for h in histories.values()))
        self.summary.count("artifact", True, len(artifacts))

    def _artifacts(self, client: Any, mlflow_run_id: str, tmp: Path, what: str) -> list[tuple[str, str, int]]:
        """Download every artifact of a run and store it; ``[(path, oid, size)]``."""
        with _reading(f"the artifacts of {what}"):
            if not list(client.list_artifacts(mlflow_run_id)):
                return []
            local = Path(client.download_artifacts(mlflow_run_id, "", str(tmp)))
        if not local.is_dir():
            raise StoreError(f"MLflow returned no artifact folder for {what}", "check the artifact store")
        return self.tracking.collect_artifacts(local)

    def _batch(
        self,
        plan: _Plan,
        run: Any,
        run_id: str,
        histories: dict[str, list[Any]],
        artifacts: list[tuple[str, str, int]],
    ) -> WriteBatch:
        info, data = run.info, run.data
        tags = dict(data.tags)
        start = int(info.start_time or info.end_time or now_ms())
        parent = tags.get("mlflow.parentRunId")
        parent_id = keel_run_id(parent) if parent else None
        project = plan.experiments.get(info.experiment_id, "default")
        name = (info.run_name or tags.get("mlflow.runName") or info.run_id[:8]).strip()[:250] or info.run_id[:8]
        context = {
            "imported_from": {
                "system": "mlflow",
                "location": self.source.location,
                "experiment_id": info.experiment_id,
                "run_id": info.run_id,
                "artifact_uri": info.artifact_uri,
                "user": info.user_id,
            }
        }
        end = int(info.end_time or start)
        batch = WriteBatch(
            new_runs=[(run_id, project, name, start, parent_id, canonical_json(context).decode())],
            params=[(run_id, k, "str", str(v), True) for k, v in sorted(data.params.items())],
            tags=[(run_id, k, str(v)) for k, v in sorted(tags.items())],
            metrics=[
                (run_id, key, float(m.value), int(m.step or 0), int(m.timestamp or start))
                for key, history in histories.items()
                for m in history
            ],
            artifacts=[(run_id, path, oid, size, "file", end) for path, oid, size in artifacts],
            lineage=[(run_id, "input", "run", parent_id, "", "parent", start)] if parent_id else [],
        )
        status = _STATUS.get(str(info.status))
        if status is not None:
            batch.run_ends.append((run_id, status, end, None))
        return batch

    # -- model registry -----------------------------------------------------------------------
    def _import_model(self, client: Any, model: Any, versions: list[Any]) -> None:
        name = safe_name(model.name, "model").replace("/", "-")  # keel model names have no '/'
        keys = {self._key(f"model:{model.name}/{v.version}"): v for v in versions}
        known = self.ledger.known("model_version", keys)
        number_map = {int(keys[key].version): int(keel_id.rsplit("@", 1)[1]) for key, keel_id in known.items()}
        existing = self._existing_versions(name)
        for key, version in keys.items():
            if key in known:
                self.summary.count("model version", False)
                self._tick()
                continue
            number = int(version.version)
            found = existing.get(number)
            if found is None:
                found = self._register_version(name, version)
                self.summary.count("model version", True)
            else:
                self.summary.count("model version", False)
            stage = str(version.current_stage or "None")
            if found.stage != stage:
                self.models.transition_stage(name, found.version, stage, reason=_REASON, who=WHO)
            number_map[number] = found.version
            self.ledger.record("model_version", key, found.ref, self.source.location, {"stage": stage})
            self._tick()
        if model.description or model.tags:
            with contextlib.suppress(NotFound):
                current = self.models.get_model(name)
                if current.description != (model.description or "") or any(
                    current.tags.get(k) != str(v) for k, v in model.tags.items()
                ):
                    self.models.update_model(name, model.description or "", model.tags)
        self._model_aliases(name, dict(model.aliases or {}), number_map)

    def _existing_versions(self, name: str) -> dict[int, Any]:
        """Keel versions of ``name`` registered by an earlier import, by MLflow version number."""
        try:
            versions = self.models.versions(name)
        except NotFound:
            return {}
        out = {}
        for v in versions:
            marker = v.tags.get("mlflow.version")
            if marker and marker.isdigit() and v.tags.get("mlflow.source") == self.source.location:
                out[int(marker)] = v
        return out

    def _register_version(self, name: str, version: Any) -> Any:
        source = str(version.source or "")
        run_id = keel_run_id(version.run_id) if version.run_id else None
        if run_id is not None and not self.tracking.repo.get_runs([run_id]):
            run_id = None  # the run is not in keel (deleted in MLflow, or from elsewhere)
        if source.startswith("runs:/"):
            rest = source[len("runs:/") :].strip("/")
            source_run, _, path = rest.partition("/")
            keel_source = keel_run_id(source_run)
            if run_id == keel_source and self._has_artifact(keel_source, path):
                source = f"runs:/{keel_source}/{path}" if path else f"runs:/{keel_source}"
            else:
                source = "mlflow+" + source  # kept as an external URI: keel has no such artifact
        elif source.startswith("models:/"):
            source = "mlflow+" + source  # an MLflow logged model: no keel counterpart
        tags = {str(k): str(v) for k, v in (version.tags or {}).items()}
        tags["mlflow.version"] = str(version.version)
        tags["mlflow.source"] = self.source.location
        return self.models.register(
            name,
            source or f"mlflow+models:/{name}/{version.version}",
            run_id=run_id,
            description=version.description or "",
            tags=tags,
            author=version.user_id or WHO,
        )

    def _has_artifact(self, run_id: str, path: str) -> bool:
        try:
            return bool(self.tracking.list_artifacts(run_id, path)) if path else True
        except KeelError:
            return False

    def _model_aliases(self, name: str, aliases: dict[str, Any], number_map: dict[int, int]) -> None:
        if not aliases:
            return
        current = self.models.get_model(name).aliases
        for alias, mlflow_version in sorted(aliases.items()):
            target = number_map.get(int(mlflow_version))
            if target is None:
                continue
            if not _valid_alias(alias, stages=True):  # 'production' is a stage name in the model registry
                self.summary.count("alias (name keel refuses)", False)
            elif current.get(match_alias(current, alias) or alias) != target:
                self.models.set_alias(name, alias, target, reason=_REASON, who=WHO)
                self.summary.count("alias", True)
            else:
                self.summary.count("alias", False)

    # -- prompts -----------------------------------------------------------------------------------
    def _import_prompt(self, client: Any, source_name: str, numbers: list[int]) -> None:
        name = safe_name(source_name, "prompt")
        keys = {self._key(f"prompt:{source_name}/{n}"): n for n in numbers}
        known = self.ledger.known("prompt_version", keys)
        version_map: dict[int, str] = {keys[k]: v.rsplit("@", 1)[1] for k, v in known.items()}
        aliases: dict[str, int] = {}
        for key, number in keys.items():
            with _reading(f"version {number} of prompt {source_name!r}"):
                version = client.get_prompt_version(source_name, number)
            for alias in version.aliases or []:
                aliases[alias] = number
            if key in known:
                self.summary.count("prompt version", False)
                self._tick()
                continue
            registered, created = self._register_prompt(name, number, version)
            version_map[number] = registered.version
            self.ledger.record("prompt_version", key, registered.ref, self.source.location)
            self.summary.count("prompt version", created)
            self._tick()
        if aliases:
            current = {a: v.version for v in self.prompts.versions(name) for a in v.aliases}
            for alias, number in sorted(aliases.items()):
                target = version_map.get(number)
                if target is None:
                    continue
                if not _valid_alias(alias):
                    self.summary.count("alias (name keel refuses)", False)
                elif current.get(match_alias(current, alias) or alias) != target:
                    self.prompts.set_alias(name, alias, target, reason=_REASON, who=WHO)
                    self.summary.count("alias", True)
                else:
                    self.summary.count("alias", False)

    def _register_prompt(self, name: str, number: int, version: Any) -> tuple[Any, bool]:
        template = version.template
        config = getattr(version, "model_config", None) or {}
        parameters = {k: v for k, v in config.items() if k not in ("model", "model_name")}
        model = str(config.get("model") or config.get("model_name") or "")
        response = getattr(version, "response_format", None)
        changelog = (version.commit_message or "").strip() or f"{_REASON}: version {number}"
        args = dict(
            template=template,
            model=model,
            parameters=json.loads(json.dumps(parameters, default=str)),
            response_schema=response,
            changelog=changelog,
            author=getattr(version, "user_id", None) or WHO,
        )
        try:
            return self.prompts.register(name, version=f"{number}.0.0", **args)  # type: ignore[arg-type]
        except InvalidInput as exc:
            if "does not increase" not in exc.message:
                raise
            # keel already has a higher version of this prompt: take the next major one.
            return self.prompts.register(name, bump="major", **args)  # type: ignore[arg-type]


def _valid_alias(alias: str, stages: bool = False) -> bool:
    """True if keel accepts ``alias`` (MLflow allows names keel does not, e.g. ``latest`` or ``1.0``,
    and, for models, stage names such as ``production``)."""
    try:
        check_alias(alias, stages=stages)
    except InvalidInput:
        return False
    return True


def _quote(name: str) -> str:
    """``name`` inside single quotes of an MLflow filter string."""
    return name.replace("\\", "\\\\").replace("'", "\\'")


def import_mlflow(store: Store, uri: str, progress: Progress | None = None) -> ImportSummary:
    """Import experiments, runs, registered models and prompts from the MLflow tracking
    URI ``uri`` (an ``mlruns`` folder, ``sqlite:///path`` or ``http(s)://host``).

    Idempotent and resumable: see the module docstring.
    """
    return MlflowImporter(store, uri, progress).run()
