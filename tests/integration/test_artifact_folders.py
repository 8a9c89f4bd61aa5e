"""Folders as artifacts (issue 17 item 6): ``log_artifact(folder)`` keeps the folder's name, so
``runs:/<run>/model`` names it, as MLflow's ``log_artifact`` and ``cp -r`` do; ``log_artifacts``
stores a folder's files at the root (or ``artifact_path``), as MLflow's does. Symbolic links are
followed only inside the logged folder: one that leads out of it refuses the call."""

import os
from pathlib import Path

import pytest

import keel
from keel.sdk import session as sessions
from keel.sdk.workspace import init_workspace


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("artifacts")
    init_workspace(root)  # one store for the module (creating one costs a migration)
    yield root
    sessions.reset()


@pytest.fixture
def workspace(store_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder inside the module's workspace, as the current directory."""
    folder = store_root / tmp_path.name
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def _model_folder(root: Path) -> Path:
    model = root / "model"
    (model / "weights").mkdir(parents=True)
    (model / "config.yaml").write_text("layers: 2\n")
    (model / "weights" / "w.bin").write_bytes(os.urandom(4096))
    return model


def _paths(run_id: str, prefix: str = "") -> list[str]:
    return [a.path for a in keel.Client().list_artifacts(run_id, prefix)]


def _stored_objects(folder: Path) -> list[Path]:
    objects = folder.parent / ".keel" / "objects"
    return [p for p in objects.rglob("*") if p.is_file() and p.parent.name != "tmp"]


def test_a_folder_keeps_its_name_and_runs_uri_resolves(workspace):
    model = _model_folder(workspace)
    with keel.start_run(project="p") as run:
        keel.log_artifact("model")
    assert _paths(run.id) == ["model/config.yaml", "model/weights/w.bin"]

    version = keel.register_model(f"runs:/{run.id}/model", "chat-model")
    assert version.source == f"runs:/{run.id}/model" and version.run_id == run.id
    written = keel.Client().download_artifacts(run.id, "model", workspace / "restored")
    assert sorted(p.relative_to(workspace / "restored").as_posix() for p in written) == [
        "config.yaml",
        "weights/w.bin",
    ]
    assert (workspace / "restored" / "weights" / "w.bin").read_bytes() == (model / "weights" / "w.bin").read_bytes()


def test_artifact_path_places_the_folder_and_log_artifacts_stores_contents(workspace):
    model = _model_folder(workspace)
    with keel.start_run(project="p") as run:
        keel.log_artifact(f"{model}/", artifact_path="checkpoints")  # a trailing slash changes nothing
        keel.log_artifacts(model)  # MLflow's log_artifacts: the files at the root
        keel.log_artifacts(model, artifact_path="copy")
        keel.log_artifact(model / "config.yaml", artifact_path="single")
    assert _paths(run.id) == [
        "checkpoints/model/config.yaml",
        "checkpoints/model/weights/w.bin",
        "config.yaml",
        "copy/config.yaml",
        "copy/weights/w.bin",
        "single/config.yaml",
        "weights/w.bin",
    ]
    with pytest.raises(keel.InvalidInput, match="not a directory"):
        with keel.start_run(project="p"):
            keel.log_artifacts(model / "config.yaml")


def test_a_link_out_of_the_folder_is_refused_and_nothing_is_stored(workspace):
    secret = workspace / "elsewhere" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("PRIVATE KEY")
    model = _model_folder(workspace)
    (model / "key").symlink_to(secret)
    (model / "outside").symlink_to(secret.parent, target_is_directory=True)
    before = _stored_objects(workspace)
    with keel.start_run(project="p") as run:
        with pytest.raises(keel.InvalidInput, match="outside the folder being logged") as refused:
            keel.log_artifact(model)
        with pytest.raises(keel.InvalidInput, match="outside the folder being logged"):
            keel.log_artifacts(model)
    assert str(model / "key") in refused.value.message and "log_artifact(" in refused.value.hint
    assert _paths(run.id) == []
    assert _stored_objects(workspace) == before  # no object written either
    assert all(p.read_bytes() != b"PRIVATE KEY" for p in _stored_objects(workspace))


def test_links_inside_the_folder_are_stored_as_their_targets(workspace):
    model = _model_folder(workspace)
    (model / "latest.yaml").symlink_to("config.yaml")
    (model / "current").symlink_to("weights", target_is_directory=True)
    with keel.start_run(project="p") as run:
        keel.log_artifact(model)
    assert _paths(run.id) == [
        "model/config.yaml",
        "model/current/w.bin",
        "model/latest.yaml",
        "model/weights/w.bin",
    ]
    client = keel.Client()
    assert client.read_artifact(run.id, "model/latest.yaml") == b"layers: 2\n"
    assert client.read_artifact(run.id, "model/current/w.bin") == (model / "weights" / "w.bin").read_bytes()


def test_a_linked_folder_is_logged_under_the_links_name(workspace):
    real = _model_folder(workspace / "store")
    (workspace / "model").symlink_to(real, target_is_directory=True)
    with keel.start_run(project="p") as run:
        keel.log_artifact("model")
    assert _paths(run.id) == ["model/config.yaml", "model/weights/w.bin"]


@pytest.mark.parametrize(
    ("make_link", "needle"),
    [
        (lambda model: (model / "gone").symlink_to(model / "missing.txt"), "does not exist"),
        (lambda model: (model / "weights" / "up").symlink_to(model, target_is_directory=True), "a loop"),
    ],
    ids=["dangling", "loop"],
)
def test_dangling_and_looping_links_are_refused(workspace, make_link, needle):
    model = _model_folder(workspace)
    make_link(model)
    with keel.start_run(project="p") as run:
        with pytest.raises(keel.InvalidInput, match=needle):
            keel.log_artifact(model)
    assert _paths(run.id) == []
