"""MLflow's evaluation datasets (``mlflow.genai.datasets``) against a live keel server, with the
real ``mlflow`` client (mlflow-skinny 3.17): each dataset is a ``keel data`` path, each change of
its records a new version, and ``keel.evaluate`` runs on the version MLflow made. One server
for the module (the fixture of ``test_mlflow_client.py``).

``EvaluationDataset.merge_records`` imports pandas first thing (for DataFrames), which
mlflow-skinny does not install: records are merged here with the call it then makes, the
client store's ``upsert_dataset_records`` (``POST /api/3.0/mlflow/datasets/{id}/records``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import openai
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException
from mlflow.genai import datasets
from test_mlflow_client import Keel, keel, use  # noqa: F401 - keel: the module's server (a fixture)
from test_server_api import bootstrap, ok, start_server

import keel as keel_sdk
from keel.integrations.standin import StandInServer
from keel.sdk import session as sessions
from keel.sdk.remote import open_remote, remote
from keel.services.data_versions import DatasetVersionService

QUESTIONS = [{"inputs": {"question": f"What is {i} + {i + 2}?"}, "expectations": {"answer": str(2 * i + 2)}}
             for i in range(4)]  # fmt: skip


@pytest.fixture(autouse=True)
def _as_root(keel: Keel, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # noqa: F811
    use(keel, monkeypatch)
    mlflow.set_experiment(experiment_id="0")
    yield


@pytest.fixture(scope="module")
def versions(keel: Keel) -> Iterator[DatasetVersionService]:  # noqa: F811
    """keel's dataset versions on the server, as keel's SDK reaches them (over HTTP, as root)."""
    store = open_remote(keel.url, keel.tokens["root"])
    yield remote(DatasetVersionService, store)
    store.close()


def merge(dataset_id: str, records: list[dict[str, Any]]) -> dict[str, int]:
    """What ``merge_records`` sends once it has its list of records."""
    counts: dict[str, int] = MlflowClient()._tracking_client.store.upsert_dataset_records(dataset_id, records)
    return counts


def lines(versions: DatasetVersionService, path: str, oid: str) -> list[dict[str, Any]]:
    _oid, data = versions.content(path, oid)
    return [json.loads(line) for line in data.decode().splitlines()]


def test_a_dataset_is_a_keel_data_path_and_each_merge_a_version(
    keel: Keel,  # noqa: F811
    versions: DatasetVersionService,
) -> None:
    experiment = MlflowClient().create_experiment("ds-exp")
    dataset = datasets.create_dataset(name="qa-basic", experiment_id=experiment, tags={"team": "search"})
    assert dataset.dataset_id.startswith("d-") and dataset.name == "qa-basic" and dataset.tags["team"] == "search"
    assert dataset.created_by == "root"  # the client tags mlflow.user
    assert versions.versions("mlflow/datasets/qa-basic.jsonl") == []  # no records, no version yet

    assert merge(dataset.dataset_id, QUESTIONS[:3]) == {"inserted": 3, "updated": 0}
    fixed = {"inputs": QUESTIONS[0]["inputs"], "expectations": {"answer": "2", "note": "checked"}, "tags": {"k": "v"}}
    assert merge(dataset.dataset_id, [fixed, QUESTIONS[3]]) == {"inserted": 1, "updated": 1}

    got = datasets.get_dataset(dataset_id=dataset.dataset_id)
    assert json.loads(got.profile) == {"num_records": 4}
    assert json.loads(got.schema)["inputs"] == {"question": "string"}
    assert got.experiment_ids == [experiment]
    records = sorted(MlflowClient().get_dataset(dataset.dataset_id).records, key=lambda r: r.inputs["question"])
    assert [r.inputs["question"] for r in records] == sorted(q["inputs"]["question"] for q in QUESTIONS)
    first = next(r for r in records if r.inputs == QUESTIONS[0]["inputs"])
    assert first.expectations == {"answer": "2", "note": "checked"} and first.tags == {"k": "v"}

    listed = versions.versions("mlflow/datasets/qa-basic.jsonl")
    assert len(listed) == 2 and listed[0].kind == "file" and listed[0].files == 1
    assert got.digest == listed[0].oid[:8]  # MLflow's digest names the keel version
    newest = lines(versions, "mlflow/datasets/qa-basic.jsonl", listed[0].oid)
    assert len(newest) == 4 and len(lines(versions, "mlflow/datasets/qa-basic.jsonl", listed[1].oid)) == 3
    row = next(line for line in newest if line["question"] == QUESTIONS[0]["inputs"]["question"])
    assert row["answer"] == "2" and row["note"] == "checked" and row["id"] == first.dataset_record_id
    assert row["mlflow"]["inputs"] == QUESTIONS[0]["inputs"] and row["mlflow"]["tags"] == {"k": "v"}

    # deleting records is a new version too; the older versions stay
    deleted = MlflowClient()._tracking_client.store.delete_dataset_records(
        dataset.dataset_id, [first.dataset_record_id]
    )
    assert deleted == 1 and len(MlflowClient().get_dataset(dataset.dataset_id).records) == 3
    assert len(versions.versions("mlflow/datasets/qa-basic.jsonl")) == 3


def test_get_search_tags_and_delete(keel: Keel, versions: DatasetVersionService) -> None:  # noqa: F811
    experiment = MlflowClient().create_experiment("ds-search")
    made = [datasets.create_dataset(name=f"find-{i}", experiment_id=experiment, tags={"n": str(i)}) for i in range(3)]
    assert datasets.get_dataset(name="find-1").dataset_id == made[1].dataset_id
    found = datasets.search_datasets(experiment_ids=experiment)
    assert [d.name for d in found] == ["find-2", "find-1", "find-0"]  # newest first
    assert [d.name for d in datasets.search_datasets(filter_string="tags.n = '0'")] == ["find-0"]
    assert [d.name for d in datasets.search_datasets(experiment_ids=experiment, order_by=["name ASC"],
                                                     max_results=2)] == ["find-0", "find-1"]  # fmt: skip
    datasets.set_dataset_tags(made[0].dataset_id, {"stage": "gold"})
    datasets.delete_dataset_tag(made[0].dataset_id, "n")
    assert datasets.get_dataset(dataset_id=made[0].dataset_id).tags == {"stage": "gold", "mlflow.user": "root"}
    with pytest.raises(RestException) as caught:
        datasets.create_dataset(name="find-0", experiment_id=experiment)
    assert caught.value.error_code == "RESOURCE_ALREADY_EXISTS" and "one data path" in caught.value.message

    merge(made[2].dataset_id, QUESTIONS[:1])
    datasets.delete_dataset(dataset_id=made[2].dataset_id)
    with pytest.raises(MlflowException, match="not found"):
        datasets.get_dataset(dataset_id=made[2].dataset_id)
    assert len(versions.versions("mlflow/datasets/find-2.jsonl")) == 1  # keel keeps the versions
    datasets.delete_dataset(dataset_id=made[2].dataset_id)  # again: no error, as in MLflow
    with pytest.raises(RestException) as caught:
        datasets.create_dataset(name="elsewhere", experiment_id="987654")
    assert caught.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_a_reader_reads_datasets_and_cannot_change_them(keel: Keel, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    made = datasets.create_dataset(name="guarded", experiment_id="0")
    ok(keel.admin.put("/projects/@registries/grants/rita", json={"role": "reader"}))
    use(keel, monkeypatch, "rita")
    assert datasets.get_dataset(dataset_id=made.dataset_id).name == "guarded"
    with pytest.raises(RestException) as caught:
        merge(made.dataset_id, QUESTIONS[:1])
    assert caught.value.error_code == "PERMISSION_DENIED"
    with httpx.Client(base_url=keel.url) as anonymous:
        refused = anonymous.post("/api/3.0/mlflow/datasets/search", json={})
        assert refused.status_code == 401 and refused.json()["error_code"] == "UNAUTHENTICATED"


def test_keel_evaluate_runs_on_the_version_mlflow_made(
    keel: Keel,  # noqa: F811
    versions: DatasetVersionService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dataset = datasets.create_dataset(name="calc-eval", experiment_id="0")
    merge(dataset.dataset_id, QUESTIONS)
    digest = datasets.get_dataset(dataset_id=dataset.dataset_id).digest
    [version] = versions.versions("mlflow/datasets/calc-eval.jsonl")

    monkeypatch.setenv("KEEL_URI", keel.url)
    monkeypatch.setenv("KEEL_TOKEN", keel.tokens["root"])
    calc = [
        {"role": "system", "content": "Answer with the number only."},
        {"role": "user", "content": "{{ question }}"},
    ]
    try:
        keel_sdk.prompts.register("calc-mlflow", template=calc, changelog="first")
        with StandInServer() as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="standin", max_retries=0)
            result = keel_sdk.evaluate(
                data=f"dataset:mlflow/datasets/calc-eval.jsonl@{digest}",  # MLflow's digest: a prefix of the oid
                prompt="calc-mlflow@1.0.0",
                model="gpt-4",
                client=client,
                scorers=[keel_sdk.scorers.exact_match("answer")],
                project="calc-mlflow",
                concurrency=2,
            )
        inputs = {str(e.entity) for e in keel_sdk.Client().lineage(result.run_id) if e.direction == "input"}
    finally:
        sessions.reset()
    assert result.failed == 0 and result.metrics["samples"] == 4 and result.metrics["exact_match"] == 1.0
    assert f"dataset:mlflow/datasets/calc-eval.jsonl@{version.oid}" in inputs
    [used] = versions.versions("mlflow/datasets/calc-eval.jsonl")
    assert used.runs == [result.run_id]  # keel data log shows the evaluation using the version


@pytest.mark.postgres
@pytest.mark.s3
def test_datasets_on_postgres_and_s3(pg_url: str, s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = bootstrap(pg_url, objects=s3_url)
    server = start_server(pg_url, tmp_path, s3_url)
    try:
        use(Keel(server, server.client(token), {"root": token}), monkeypatch)
        dataset = datasets.create_dataset(name="pg-qa", experiment_id="0")
        merge(dataset.dataset_id, QUESTIONS[:2])
        merge(dataset.dataset_id, QUESTIONS[1:3])
        assert len(MlflowClient().get_dataset(dataset.dataset_id).records) == 3
        store = open_remote(server.url, token)
        try:
            listed = remote(DatasetVersionService, store).versions("mlflow/datasets/pg-qa.jsonl")
        finally:
            store.close()
        assert len(listed) == 2
    finally:
        server.stop()
