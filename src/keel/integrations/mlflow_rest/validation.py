"""MLflow's request checks, as its server (3.17) makes them, for the endpoints keel maps.

MLflow's handlers parse a request into its protobuf message, then check it against a
per-endpoint schema (``mlflow/server/handlers.py``): "required" checks always run, type
checks only when the protobuf parse failed (a field of the wrong JSON type). So a
number where a string is due (``artifact_location: 5``, a param ``key: 5``, a tag
``value: 5``) and a metric without a timestamp answer INVALID_PARAMETER_VALUE, while
a numeric string for a number (``"timestamp": "3"``) is accepted. :func:`check_request`
does the same from the tables below (the protobuf field types of each request message,
and MLflow's schema of each endpoint), with MLflow's messages.

:func:`check_key_name` applies MLflow's rules for param, metric and tag names
(``mlflow.utils.validation``) with MLflow's messages, :func:`check_model_version_source`
its rules for the source of a model version.
"""

from __future__ import annotations

import json
import posixpath
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from keel.core.names import MAX_KEY_LENGTH, mlflow_key_problem
from keel.errors import InvalidInput

__all__ = [
    "check_key_name",
    "check_model_version_source",
    "check_request",
    "invalid_source",
    "invalid_value",
    "schema_of",
    "source_within",
]

_DOCS = " See the API docs for more information about request parameters."

# -- the protobuf field types of the request messages ---------------------------------------------
# A type is (kind, repeated); kind is a scalar ("string", "double", "int64", "int32", "bool"),
# "enum:<name>" or a message name of _MESSAGES. Unknown fields are ignored, as MLflow's parse does.
_S, _D, _I64, _I32, _B = ("string", False), ("double", False), ("int64", False), ("int32", False), ("bool", False)
_SL = ("string", True)


def _list_of(message: str) -> tuple[str, bool]:
    return (message, True)


_KEY_VALUE = {"key": _S, "value": _S}
_MESSAGES: dict[str, dict[str, tuple[str, bool]]] = {
    "KeyValue": _KEY_VALUE,
    "Metric": {
        "key": _S,
        "value": _D,
        "timestamp": _I64,
        "step": _I64,
        "dataset_name": _S,
        "dataset_digest": _S,
        "model_id": _S,
        "run_id": _S,
    },
    "Dataset": {"name": _S, "digest": _S, "source_type": _S, "source": _S, "schema": _S, "profile": _S},
    "DatasetInput": {"tags": _list_of("KeyValue"), "dataset": ("Dataset", False)},
    "ModelInput": {"model_id": _S},
    # tracking
    "CreateExperiment": {"name": _S, "artifact_location": _S, "tags": _list_of("KeyValue")},
    "ExperimentId": {"experiment_id": _S},
    "GetExperimentByName": {"experiment_name": _S},
    "UpdateExperiment": {"experiment_id": _S, "new_name": _S},
    "ExperimentTag": {"experiment_id": _S, "key": _S, "value": _S},
    "ExperimentKey": {"experiment_id": _S, "key": _S},
    "SearchExperiments": {
        "max_results": _I64,
        "page_token": _S,
        "filter": _S,
        "order_by": _SL,
        "view_type": ("enum:ViewType", False),
    },
    "CreateRun": {"experiment_id": _S, "user_id": _S, "run_name": _S, "start_time": _I64, "tags": _list_of("KeyValue")},
    "UpdateRun": {"run_id": _S, "run_uuid": _S, "status": ("enum:RunStatus", False), "end_time": _I64, "run_name": _S},
    "RunId": {"run_id": _S, "run_uuid": _S},
    "RunIdOnly": {"run_id": _S},
    "LogMetric": {
        "run_id": _S,
        "run_uuid": _S,
        "key": _S,
        "value": _D,
        "timestamp": _I64,
        "step": _I64,
        "model_id": _S,
        "dataset_name": _S,
        "dataset_digest": _S,
    },
    "RunKeyValue": {"run_id": _S, "run_uuid": _S, "key": _S, "value": _S},
    "DeleteTag": {"run_id": _S, "key": _S},
    "LogBatch": {
        "run_id": _S,
        "metrics": _list_of("Metric"),
        "params": _list_of("KeyValue"),
        "tags": _list_of("KeyValue"),
    },
    "LogInputs": {"run_id": _S, "datasets": _list_of("DatasetInput"), "models": _list_of("ModelInput")},
    "GetMetricHistory": {"run_id": _S, "run_uuid": _S, "metric_key": _S, "page_token": _S, "max_results": _I32},
    "SearchRuns": {
        "experiment_ids": _SL,
        "filter": _S,
        "run_view_type": ("enum:ViewType", False),
        "max_results": _I32,
        "order_by": _SL,
        "page_token": _S,
    },
    "ListArtifacts": {"run_id": _S, "run_uuid": _S, "path": _S, "page_token": _S},
    # model registry
    "CreateRegisteredModel": {"name": _S, "tags": _list_of("KeyValue"), "description": _S, "deployment_job_id": _S},
    "Name": {"name": _S},
    "NameDescription": {"name": _S, "description": _S, "deployment_job_id": _S},
    "Rename": {"name": _S, "new_name": _S},
    "SearchRegistry": {"filter": _S, "max_results": _I64, "order_by": _SL, "page_token": _S},
    "GetLatestVersions": {"name": _S, "stages": _SL},
    "NameKeyValue": {"name": _S, "key": _S, "value": _S},
    "NameKey": {"name": _S, "key": _S},
    "CreateModelVersion": {
        "name": _S,
        "source": _S,
        "run_id": _S,
        "tags": _list_of("KeyValue"),
        "run_link": _S,
        "description": _S,
        "model_id": _S,
    },
    "NameVersion": {"name": _S, "version": _S},
    "NameVersionDescription": {"name": _S, "version": _S, "description": _S},
    "TransitionStage": {"name": _S, "version": _S, "stage": _S, "archive_existing_versions": _B},
    "NameVersionKeyValue": {"name": _S, "version": _S, "key": _S, "value": _S},
    "NameVersionKey": {"name": _S, "version": _S, "key": _S},
    "Alias": {"name": _S, "alias": _S, "version": _S},
    "NameAlias": {"name": _S, "alias": _S},
}
_ENUMS = {
    "ViewType": ({"ACTIVE_ONLY", "DELETED_ONLY", "ALL"}, {1, 2, 3}),
    "RunStatus": ({"RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"}, {1, 2, 3, 4, 5}),
}
_INT_RANGES = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1)}


def _integer(value: Any) -> int | None:
    """``value`` as protobuf's JSON parser reads an integer field, or None if it refuses it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and " " not in value:
        try:
            return int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return None
            return int(number) if number.is_integer() else None
    return None


def _scalar_parses(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "double":
        if isinstance(value, bool | int | float):
            return True
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                return False
            return True
        return False
    if kind in _INT_RANGES:
        number = _integer(value)
        low, high = _INT_RANGES[kind]
        return number is not None and low <= number <= high
    if kind == "bool":
        return isinstance(value, bool)
    if kind.startswith("enum:"):
        names, numbers = _ENUMS[kind[5:]]
        if isinstance(value, str):
            if value in names:
                return True
            try:
                return int(value) in numbers
            except ValueError:
                return True  # an unknown name is ignored, as an unknown field
        return isinstance(value, int | float) and int(value) in numbers
    if isinstance(value, dict):
        return _message_parses(value, _MESSAGES[kind])
    # protobuf reads a text (or a list of texts) as a message's field names: all unknown, ignored
    return isinstance(value, str) or isinstance(value, list) and not any(isinstance(v, list | dict) for v in value)


def _message_parses(body: Mapping[str, Any], fields: Mapping[str, tuple[str, bool]]) -> bool:
    for name, (kind, repeated) in fields.items():
        value = body.get(name)
        if value is None:
            continue
        if repeated:
            if not isinstance(value, list) or any(item is None or not _scalar_parses(item, kind) for item in value):
                return False
        elif not _scalar_parses(value, kind):
            return False
    return True


# -- MLflow's schema checks ------------------------------------------------------------------------
class _Refused(Exception):
    """A failed check; ``message`` replaces MLflow's generic one when given."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message)
        self.message = message


Check = Callable[[Any], None]


def _required(value: Any) -> None:
    if value is None or value == "":
        raise _Refused()


def _string(value: Any) -> None:
    if not isinstance(value, str):
        raise _Refused()


def _intlike(value: Any) -> None:
    try:
        value = int(value)
    except ValueError:
        pass
    except TypeError as exc:
        raise _Refused() from exc
    if not isinstance(value, int):
        raise _Refused()


def _floatlike(value: Any) -> None:
    try:
        value = float(value)
    except ValueError:
        pass
    except TypeError as exc:
        raise _Refused() from exc
    if not isinstance(value, float):
        raise _Refused()


def _bool(value: Any) -> None:
    if not isinstance(value, bool):
        raise _Refused()


def _array(value: Any) -> None:
    if not isinstance(value, list):
        raise _Refused()


def _items_string(value: Any) -> None:
    if not all(isinstance(item, str) for item in value):
        raise _Refused()


def _at_most(limit: int) -> Check:
    def check(value: Any) -> None:
        try:
            number = int(value)
        except (TypeError, ValueError) as exc:
            raise _Refused() from exc
        if number > limit:
            raise _Refused()

    return check


def _fields_present(kind: str, keys: Sequence[str]) -> Check:
    """log-batch: each metric has key, value and timestamp; each param and tag a key."""

    def check(items: Any) -> None:
        for index, item in enumerate(items if isinstance(items, list) else ()):
            for key in keys:
                value = item.get(key) if isinstance(item, dict) else None
                if value is None or value == "":
                    raise _Refused(f"Missing value for required parameter '{kind}[{index}].{key}'.")

    return check


# MLflow runs these only when the protobuf parse failed.
_TYPE_CHECKS: frozenset[Check] = frozenset({_string, _intlike, _floatlike, _bool, _array, _items_string})

_RS: list[Check] = [_required, _string]
_SR: list[Check] = [_string, _required]
_RUN = {"run_id": _RS}
Schema = tuple[str, dict[str, list[Check]]]
_SCHEMAS: dict[tuple[str, str], Schema] = {
    # tracking
    ("POST", "experiments/create"): (
        "CreateExperiment",
        {"name": _RS, "artifact_location": [_string], "tags": [_array]},
    ),
    ("GET", "experiments/get"): ("ExperimentId", {"experiment_id": _RS}),
    ("GET", "experiments/get-by-name"): ("GetExperimentByName", {"experiment_name": _RS}),
    ("POST", "experiments/delete"): ("ExperimentId", {"experiment_id": _RS}),
    ("POST", "experiments/restore"): ("ExperimentId", {"experiment_id": _RS}),
    ("POST", "experiments/update"): ("UpdateExperiment", {"experiment_id": _RS, "new_name": _SR}),
    ("POST", "experiments/set-experiment-tag"): (
        "ExperimentTag",
        {"experiment_id": _RS, "key": _RS, "value": [_string]},
    ),
    ("POST", "experiments/delete-experiment-tag"): ("ExperimentKey", {"experiment_id": _RS, "key": _RS}),
    ("POST", "experiments/search"): (
        "SearchExperiments",
        {
            "view_type": [_intlike],
            "max_results": [_intlike],
            "order_by": [_array],
            "filter": [_string],
            "page_token": [_string],
        },
    ),
    ("POST", "runs/create"): (
        "CreateRun",
        {"experiment_id": [_string], "start_time": [_intlike], "run_name": [_string]},
    ),
    ("POST", "runs/update"): (
        "UpdateRun",
        {**_RUN, "end_time": [_intlike], "status": [_string], "run_name": [_string]},
    ),
    ("POST", "runs/delete"): ("RunIdOnly", _RUN),
    ("POST", "runs/restore"): ("RunIdOnly", _RUN),
    ("GET", "runs/get"): ("RunId", _RUN),
    ("POST", "runs/log-metric"): (
        "LogMetric",
        {
            **_RUN,
            "key": _RS,
            "value": [_required, _floatlike],
            "timestamp": [_intlike, _required],
            "step": [_intlike],
            "model_id": [_string],
            "dataset_name": [_string],
            "dataset_digest": [_string],
        },
    ),
    ("POST", "runs/log-parameter"): ("RunKeyValue", {**_RUN, "key": _RS, "value": [_string]}),
    ("POST", "runs/set-tag"): ("RunKeyValue", {**_RUN, "key": _RS, "value": [_string]}),
    ("POST", "runs/delete-tag"): ("DeleteTag", {**_RUN, "key": _RS}),
    ("POST", "runs/log-batch"): (
        "LogBatch",
        {
            "run_id": _SR,
            "metrics": [_array, _fields_present("metrics", ("key", "value", "timestamp"))],
            "params": [_array, _fields_present("params", ("key",))],
            "tags": [_array, _fields_present("tags", ("key",))],
        },
    ),
    ("POST", "runs/log-inputs"): ("LogInputs", {**_RUN, "datasets": [_array], "models": [_array]}),
    ("GET", "metrics/get-history"): ("GetMetricHistory", {"run_id": _SR, "metric_key": _SR, "page_token": [_string]}),
    ("POST", "runs/search"): (
        "SearchRuns",
        {
            "experiment_ids": [_array],
            "filter": [_string],
            "max_results": [_intlike, _at_most(50_000)],
            "order_by": [_array, _items_string],
        },
    ),
    ("GET", "artifacts/list"): ("ListArtifacts", {"run_id": _SR, "path": [_string], "page_token": [_string]}),
    # model registry
    ("POST", "registered-models/create"): (
        "CreateRegisteredModel",
        {"name": _SR, "tags": [_array], "description": [_string]},
    ),
    ("GET", "registered-models/get"): ("Name", {"name": _SR}),
    ("PATCH", "registered-models/update"): ("NameDescription", {"name": _SR, "description": [_string]}),
    ("POST", "registered-models/rename"): ("Rename", {"name": _SR, "new_name": _SR}),
    ("DELETE", "registered-models/delete"): ("Name", {"name": _SR}),
    ("GET", "registered-models/search"): (
        "SearchRegistry",
        {
            "filter": [_string],
            "max_results": [_intlike, _at_most(1000)],
            "order_by": [_array, _items_string],
            "page_token": [_string],
        },
    ),
    ("POST", "registered-models/get-latest-versions"): (
        "GetLatestVersions",
        {"name": _SR, "stages": [_array, _items_string]},
    ),
    ("GET", "registered-models/get-latest-versions"): (
        "GetLatestVersions",
        {"name": _SR, "stages": [_array, _items_string]},
    ),
    ("POST", "registered-models/set-tag"): ("NameKeyValue", {"name": _SR, "key": _SR, "value": [_string]}),
    ("DELETE", "registered-models/delete-tag"): ("NameKey", {"name": _SR, "key": _SR}),
    ("POST", "model-versions/create"): (
        "CreateModelVersion",
        {
            "name": _SR,
            "source": _SR,
            "run_id": [_string],
            "tags": [_array],
            "run_link": [_string],
            "description": [_string],
            "model_id": [_string],
        },
    ),
    ("GET", "model-versions/get"): ("NameVersion", {"name": _SR, "version": _SR}),
    ("PATCH", "model-versions/update"): (
        "NameVersionDescription",
        {"name": _SR, "version": _SR, "description": [_string]},
    ),
    ("POST", "model-versions/transition-stage"): (
        "TransitionStage",
        {"name": _SR, "version": _SR, "stage": _SR, "archive_existing_versions": [_bool]},
    ),
    ("DELETE", "model-versions/delete"): ("NameVersion", {"name": _SR, "version": _SR}),
    ("GET", "model-versions/search"): (
        "SearchRegistry",
        {
            "filter": [_string],
            "max_results": [_intlike, _at_most(200_000)],
            "order_by": [_array, _items_string],
            "page_token": [_string],
        },
    ),
    ("POST", "model-versions/set-tag"): (
        "NameVersionKeyValue",
        {"name": _SR, "version": _SR, "key": _SR, "value": [_string]},
    ),
    ("DELETE", "model-versions/delete-tag"): ("NameVersionKey", {"name": _SR, "version": _SR, "key": _SR}),
    ("POST", "registered-models/alias"): ("Alias", {"name": _SR, "alias": _SR, "version": _SR}),
    ("DELETE", "registered-models/alias"): ("NameAlias", {"name": _SR, "alias": _SR}),
    ("GET", "registered-models/alias"): ("NameAlias", {"name": _SR, "alias": _SR}),
}


def schema_of(method: str, path: str) -> Schema | None:
    """MLflow's schema for ``METHOD /api/2.0/mlflow/<path>`` (None: MLflow checks nothing up front)."""
    return _SCHEMAS.get((method, path))


def invalid_value(path: str, value: Any, message: str | None = None) -> str:
    """MLflow's "Invalid value ... for parameter ..." text (``mlflow.utils.validation.invalid_value``)."""
    try:
        shown = json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        shown = repr(value)
    if message:
        return f"Invalid value {shown} for parameter '{path}' supplied: {message}"
    return f"Invalid value {shown} for parameter '{path}' supplied."


def _query_value(value: Any, repeated: bool) -> Any:
    if repeated:
        return value if isinstance(value, list) else [value]
    return value[0] if isinstance(value, list) and value else value


def check_request(method: str, path: str, args: Mapping[str, Any]) -> None:
    """Refuse a request to ``METHOD /api/2.0/mlflow/<path>`` as MLflow 3.17's server does
    (INVALID_PARAMETER_VALUE with MLflow's message); nothing for an endpoint without a schema.

    ``args`` are the request's arguments: the query string of a GET (a value, or a list when
    repeated), the JSON body otherwise.
    """
    found = _SCHEMAS.get((method, path))
    if found is None:
        return
    message_name, schema = found
    fields = _MESSAGES[message_name]
    body: dict[str, Any] = dict(args)
    if method == "GET":  # MLflow reads only the message's fields: a repeated one as a list, others' first value
        body = {k: _query_value(v, fields[k][1]) for k, v in body.items() if k in fields}
    parsed: bool | None = None  # whether protobuf would parse the body: worked out only when it matters
    for name, checks in schema.items():
        if name not in body and _required not in checks:
            continue
        value = body.get(name)
        if name == "run_id" and value is None and "run_uuid" in body:
            value = body.get("run_uuid")
        for check in checks:
            typed = check in _TYPE_CHECKS  # MLflow runs these only when the parse failed
            if typed and parsed:
                continue
            try:
                check(value)
            except _Refused as refused:
                if typed:
                    if parsed is None:
                        parsed = _message_parses(body, fields)
                    if parsed:
                        continue
                if refused.message:
                    text = refused.message
                elif check is _required:
                    text = f"Missing value for required parameter '{name}'."
                else:
                    text = invalid_value(name, value, f" Hint: Value was of type '{type(value).__name__}'.")
                raise InvalidInput(text + _DOCS) from None


_BAD_CHARACTERS = (
    "Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), "
    "colon(:) and slashes (/)."
)


def check_key_name(key: Any, what: str, path: str) -> str:
    """``key`` if MLflow accepts it as the name of a ``what`` (``"metric"``, ``"param"`` or
    ``"tag"``); else INVALID_PARAMETER_VALUE with MLflow's message (``path`` names the field,
    e.g. ``metrics[3].name``)."""
    if key is None:
        if what == "metric":
            text = invalid_value(path, None, "Metric name cannot be None. A key name must be provided.")
        elif what == "param":
            text = invalid_value(path, "", "A key name must be provided.")
        else:
            text = f"Missing value for required parameter '{path}'."
        raise InvalidInput(text)
    if not isinstance(key, str):
        raise InvalidInput(invalid_value(path, key, _BAD_CHARACTERS))
    problem = mlflow_key_problem(key)
    if problem == "characters":
        raise InvalidInput(invalid_value(path, key, _BAD_CHARACTERS))
    if problem == "path":
        raise InvalidInput(
            invalid_value(
                path,
                key,
                "Names may be treated as files in certain cases, and must not resolve to other names when "
                f"treated as such. This name would resolve to {posixpath.normpath(key)!r}",
            )
        )
    if problem == "length":
        entity = {"metric": "Metric name", "param": "Param key"}.get(what, path)
        raise InvalidInput(f"'{entity}' exceeds the maximum length of {MAX_KEY_LENGTH} characters")
    return key


# -- the source of a model version (MLflow's _validate_source_run) ------------------------------------
# Schemes whose artifact repositories connect to the host the URI names: MLflow's server refuses
# them as a source (it would fetch from there); ``mlflow-artifacts:/path`` (no host) is its own.
_HOST_SCHEMES = frozenset({"ftp", "sftp", "hdfs", "viewfs", "http", "https", "mlflow-artifacts", "r2", "b2", "abfss"})
_PROXY_ROUTE = ("api", "2.0", "mlflow-artifacts", "artifacts")


def invalid_source(source: str, id_name: str = "run_id") -> InvalidInput:
    """MLflow's refusal of a source the ``run_id`` (or ``model_id``) does not contain."""
    return InvalidInput(
        f"Invalid model version source: '{source}'. The {id_name} request parameter must identify the "
        "resource that contains the source."
    )


def _scheme(uri: str) -> str:
    scheme = urllib.parse.urlparse(uri).scheme
    return "" if len(scheme) == 1 and scheme.isalpha() else scheme


def _unquoted(value: str) -> str:
    while (unquoted := urllib.parse.unquote(value)) != value:
        value = unquoted
    return value


def _uri_parts(uri: str) -> tuple[str, str, tuple[str, ...]]:
    parsed = urllib.parse.urlsplit(uri)
    parts = tuple(_unquoted(part) for part in parsed.path.split("/") if part)
    return parsed.scheme.lower(), parsed.netloc.lower(), parts


def source_within(source: str, root: str) -> bool:
    """True if ``source`` is ``root`` or a path under it (a run's artifact URI)."""
    scheme, authority, parts = _uri_parts(source)
    root_scheme, root_authority, root_parts = _uri_parts(root)
    return (
        (scheme, authority) == (root_scheme, root_authority)
        and bool(root_parts)
        and (parts[: len(root_parts)] == root_parts)
    )


def _relative_path_problem(source: str) -> bool:
    """MLflow's test for a source path that is not absolute and normal once unquoted."""
    while (unquoted := urllib.parse.unquote_plus(source)) != source:
        source = unquoted
    path = re.sub(r"/+", "/", urllib.parse.urlparse(source).path.rstrip("/"))
    if "\x00" in path or any(part == ".." for part in source.split("/")):
        return True
    return not path.startswith("/") or posixpath.normpath(path) != path


def check_model_version_source(source: str, run_id: str) -> str:
    """Check a (non-prompt) model version's ``source`` and ``run_id`` by MLflow's rules.

    Refuses (INVALID_PARAMETER_VALUE, MLflow's messages) a source on a host-addressed scheme,
    one with relative path parts, a ``runs:/`` source whose run is not ``run_id``, and a
    logged-model ``models:/m-...`` source. Otherwise answers what is left to check against
    the run ``run_id`` names: ``"local"`` (a file path: MLflow takes it only inside a run's
    local artifact folder, which a keel run never has), ``"proxied"`` (an artifact URI served
    by this server: the run must exist and contain it) or ``""`` (nothing: MLflow takes any
    ``run_id`` as given).
    """
    scheme = _scheme(source)
    parsed = urllib.parse.urlparse(source)
    if scheme in _HOST_SCHEMES and not (scheme == "mlflow-artifacts" and not parsed.netloc):
        raise InvalidInput(
            f"'source' cannot use the '{scheme}' scheme: the '{scheme}' scheme addresses a host other than "
            "the tracking server's configured artifact storage, so the server would connect to the host "
            "named in the URI."
        )
    if scheme in ("", "file"):
        return "local"
    if _relative_path_problem(source):
        raise InvalidInput(
            f"Invalid model version source: '{source}'. If supplying a source as an http, https, local file "
            "path, ftp, objectstore, or mlflow-artifacts uri, an absolute path must be provided without "
            "relative path references present. Please provide an absolute path."
        )
    if scheme == "runs":
        path = parsed.path
        source_run = path[1:].split("/")[0] if path.startswith("/") and len(path) > 1 else ""
        if parsed.netloc or not source_run or source_run != run_id:
            raise invalid_source(source)
        return ""
    if scheme == "models":
        if parsed.netloc or parsed.path.lstrip("/").startswith("m-"):
            raise invalid_source(source, "model_id")
        return ""
    _, _, parts = _uri_parts(source)
    if scheme == "mlflow-artifacts" or any(
        parts[i : i + len(_PROXY_ROUTE)] == _PROXY_ROUTE for i in range(len(parts) - len(_PROXY_ROUTE) + 1)
    ):
        return "proxied"
    return ""
