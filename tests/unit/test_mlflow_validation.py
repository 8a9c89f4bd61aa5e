"""MLflow 3.17's request checks, name rules, model-version source rules and download types, as
keel's MLflow API applies them (keel.integrations.mlflow_rest). Each expectation is what an
MLflow 3.17 server answers to the same request (checked against one while writing them)."""

from __future__ import annotations

from typing import Any

import pytest

from keel.errors import InvalidInput
from keel.integrations.mlflow_rest.errors import unsupported_message
from keel.integrations.mlflow_rest.validation import check_key_name, check_model_version_source, check_request
from keel.services.mlflow_artifacts import mime_type

RUN = "ab" * 16
DOCS = " See the API docs for more information about request parameters."


@pytest.mark.parametrize(
    ("method", "path", "body", "refusal"),
    [
        # a number where protobuf wants text fails its parse, so MLflow's type checks run
        ("POST", "experiments/create", {"name": "e", "artifact_location": 5},
         "Invalid value 5 for parameter 'artifact_location' supplied:  Hint: Value was of type 'int'."),
        ("POST", "runs/log-parameter", {"run_id": RUN, "key": 5, "value": "x"},
         "Invalid value 5 for parameter 'key' supplied:  Hint: Value was of type 'int'."),
        ("POST", "runs/set-tag", {"run_id": RUN, "key": "t", "value": 5},
         "Invalid value 5 for parameter 'value' supplied:  Hint: Value was of type 'int'."),
        # required checks always run
        ("POST", "runs/log-metric", {"run_id": RUN, "key": "m", "value": 1.0},
         "Missing value for required parameter 'timestamp'."),
        ("POST", "runs/log-batch", {"run_id": RUN, "metrics": [{"key": "m", "value": 1.0}]},
         "Missing value for required parameter 'metrics[0].timestamp'."),
        ("POST", "runs/log-batch", {"run_id": RUN, "params": [{"value": "1"}]},
         "Missing value for required parameter 'params[0].key'."),
        ("GET", "runs/get", {}, "Missing value for required parameter 'run_id'."),
        # what protobuf parses passes: numbers as text, true for a double, a text as an empty message
        ("POST", "runs/log-metric", {"run_id": RUN, "key": "m", "value": "1.5", "timestamp": "3"}, None),
        ("POST", "runs/log-metric", {"run_id": RUN, "key": "m", "value": True, "timestamp": 3}, None),
        ("POST", "registered-models/create", {"name": None, "tags": ["a"]},
         "Missing value for required parameter 'name'."),
        ("POST", "runs/restore", {"run_uuid": True}, None),  # not a field of RestoreRun: ignored
        ("POST", "runs/update", {"run_id": RUN, "status": 1.5}, None),  # an enum number, truncated
        ("POST", "runs/update", {"run_id": RUN, "status": 9.0, "end_time": "x"},
         'Invalid value "x" for parameter \'end_time\' supplied:  Hint: Value was of type \'str\'.'),
        # limits and query strings
        ("POST", "runs/search", {"experiment_ids": ["0"], "max_results": 50_001},
         "Invalid value 50001 for parameter 'max_results' supplied:  Hint: Value was of type 'int'."),
        ("GET", "model-versions/search", {"order_by": "name", "max_results": "10"}, None),
        ("GET", "registered-models/search", {"max_results": "ten"},
         'Invalid value "ten" for parameter \'max_results\' supplied:  Hint: Value was of type \'str\'.'),
        ("POST", "not/an/endpoint", {"anything": 1}, None),
    ],
)  # fmt: skip
def test_requests_are_checked_as_mlflows_server_checks_them(
    method: str, path: str, body: dict[str, Any], refusal: str | None
) -> None:
    if refusal is None:
        check_request(method, path, body)
        return
    with pytest.raises(InvalidInput) as refused:
        check_request(method, path, body)
    assert refused.value.message == refusal + DOCS


@pytest.mark.parametrize("key", ["-inf_metric", ".hidden", "a..b", "métrique", "a b:c/d", "x" * 250])
def test_mlflow_names_accept_what_mlflow_accepts(key: str) -> None:
    assert check_key_name(key, "metric", "name") == key


@pytest.mark.parametrize(
    ("key", "what", "path", "message"),
    [
        ("a//b", "metric", "name", "This name would resolve to 'a/b'"),
        ("a/./b", "tag", "key", "This name would resolve to 'a/b'"),
        ("/abs", "param", "params[0].key", "for parameter 'params[0].key'"),
        ("..up", "metric", "name", "must not resolve to other names"),
        ("a$b", "metric", "name", "Names may only contain alphanumerics"),
        ("x" * 251, "metric", "name", "'Metric name' exceeds the maximum length of 250 characters"),
        ("x" * 251, "param", "key", "'Param key' exceeds the maximum length of 250 characters"),
        (None, "metric", "name", "Metric name cannot be None"),
        (None, "tag", "tags[2].key", "Missing value for required parameter 'tags[2].key'"),
    ],
)
def test_mlflow_names_refuse_what_mlflow_refuses(key: Any, what: str, path: str, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_key_name(key, what, path)
    assert message in refused.value.message


@pytest.mark.parametrize(
    ("source", "run_id", "left"),
    [
        ("runs:/run_id/model", "run_id", ""),  # MLflow's own tests register this
        ("s3://bucket/models/a", "any-id", ""),  # any run id is taken as given
        ("models:/other/1", "", ""),
        ("mlflow-artifacts:/0/" + RUN + "/artifacts/model", RUN, "proxied"),  # its run must contain it
        ("some/local/path", RUN, "local"),
        ("file:///tmp/model", "", "local"),
    ],
)
def test_model_version_sources_mlflow_takes(source: str, run_id: str, left: str) -> None:
    assert check_model_version_source(source, run_id) == left


@pytest.mark.parametrize(
    ("source", "run_id", "message"),
    [
        ("runs:/run_id/model", "run_id_1", "The run_id request parameter must identify the resource"),
        ("runs:/run_id/model", "", "The run_id request parameter must identify the resource"),
        ("models:/m-0123", "", "The model_id request parameter must identify the resource"),
        ("s3://bucket/../x", "", "without relative path references"),
        ("s3://bucket", "", "an absolute path must be provided"),
        ("http://example.com/model", "", "'source' cannot use the 'http' scheme"),
        ("mlflow-artifacts://elsewhere:5000/0/x", "", "'source' cannot use the 'mlflow-artifacts' scheme"),
    ],
)
def test_model_version_sources_mlflow_refuses(source: str, run_id: str, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_model_version_source(source, run_id)
    assert message in refused.value.message


@pytest.mark.parametrize(
    ("name", "mime"),
    [
        ("a.txt", "text/plain"),
        ("model/MLmodel", "text/plain"),
        ("mlproject", "text/plain"),
        ("conf.yaml", "text/plain"),
        ("notebook.ipynb", "text/plain"),
        ("c.png", "image/png"),
        ("d.pdf", "application/pdf"),
        ("page.html", "text/html"),  # the system's type: an attachment with nosniff, as MLflow serves it
        ("b.pkl", "application/octet-stream"),
        ("no-extension", "application/octet-stream"),
    ],
)
def test_downloads_get_mlflows_content_type_for_their_name(name: str, mime: str) -> None:
    assert mime_type(name) == mime


@pytest.mark.parametrize(
    ("method", "path", "feature"),
    [
        ("GET", "/api/2.0/mlflow/webhooks", "MLflow webhooks"),
        ("POST", "/api/3.0/mlflow/gateway/endpoints/create", "the MLflow AI gateway"),
        ("POST", "/graphql", "MLflow's GraphQL API"),
        ("GET", "/get-artifact", "MLflow's web UI artifact downloads"),
        ("DELETE", "/api/2.0/mlflow-artifacts/artifacts/a.txt", "deleting artifacts"),
        ("GET", "/ajax-api/2.0/mlflow-artifacts/artifacts/a.txt", "MLflow's web UI artifact API"),
        ("GET", "/api/3.0/mlflow/nothing-like-this", "this MLflow endpoint"),
    ],
)
def test_not_implemented_messages_name_the_feature(method: str, path: str, feature: str) -> None:
    message = unsupported_message(method, path)
    assert message.startswith(f"{method} {path}: {feature}") and "is not supported by keel" in message
