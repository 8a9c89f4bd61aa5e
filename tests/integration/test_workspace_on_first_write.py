"""A workspace is created by the first write, never by a read (issue 17 item 7).

In a folder with no ``.keel/`` (and no ``KEEL_URI``), read-only calls see an empty store and
leave the folder as it was; the first write (a run's rows, a registered version, a stored
object) creates ``.keel/`` there and says where, once, on stderr (the ``keel`` logger)."""

import logging
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import keel
from keel.sdk import session as sessions

KEEL = Path(sys.executable).with_name("keel")
CREATED = "keel: created workspace at"


@pytest.fixture(autouse=True)
def _fresh_sessions():
    yield
    sessions.reset()


def _created_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(CREATED)]


def test_reads_in_an_empty_folder_see_an_empty_store_and_create_nothing(tmp_path, caplog):
    assert keel.prompts.list_prompts() == []
    with pytest.raises(keel.NotFound):
        keel.prompts.get("chat")
    assert keel.models.list_models() == []
    client = keel.Client()
    assert client.list_projects() == []
    assert list(keel.search_runs()) == []
    with pytest.raises(keel.NotFound):
        client.get_run("abcdef12")
    with pytest.raises(keel.NotFound):
        client.list_artifacts("abcdef12")
    assert "not created yet" in client.describe()["workspace"]
    assert list(tmp_path.iterdir()) == []
    assert _created_lines(caplog) == []


def test_the_first_run_creates_the_workspace_and_says_so_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="keel")
    assert keel.prompts.list_prompts() == []  # a read first: the session starts on the empty store
    keel.init(project="p", config={"temperature": 0.7})
    keel.log({"accuracy": 0.9})
    run = keel.active_run()
    keel.finish()
    assert (tmp_path / ".keel" / "config.toml").is_file() and (tmp_path / ".keel" / "keel.db").is_file()
    assert _created_lines(caplog) == [f"{CREATED} {tmp_path / '.keel'}"]

    with keel.start_run(project="p") as again:  # later writes, in the same process: no new line
        keel.log_metric("m", 1)
        keel.log_text("note", "hi")
    keel.prompts.register("greet", "Hi {{ name }}", changelog="first")
    record = keel.Client().get_run(run.id)
    assert record.params == {"temperature": 0.7} and record.metrics == {"accuracy": 0.9}
    assert keel.Client().text(again.id, "note") == "hi"
    assert [name for name, _ in keel.prompts.list_prompts()] == ["greet"]
    assert len(_created_lines(caplog)) == 1


def test_concurrent_first_writes_create_it_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="keel")
    assert keel.prompts.list_prompts() == []
    errors: list[BaseException] = []

    def register(i: int) -> None:
        try:
            keel.prompts.register(f"p{i}", f"Prompt {i}: {{{{ q }}}}", changelog="first")
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(name for name, _ in keel.prompts.list_prompts()) == [f"p{i}" for i in range(6)]
    assert len(_created_lines(caplog)) == 1


def test_a_failed_creation_is_an_error_and_the_next_write_tries_again(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="keel")
    assert keel.prompts.list_prompts() == []
    (tmp_path / ".keel").write_text("")  # a file in the way: the folder cannot be made
    with pytest.raises(keel.StoreError, match=r"cannot create .*\.keel") as failed:
        keel.prompts.register("greet", "Hi {{ name }}", changelog="first")
    assert "keel init" in failed.value.hint
    assert _created_lines(caplog) == []
    (tmp_path / ".keel").unlink()
    keel.prompts.register("greet", "Hi {{ name }}", changelog="first")
    assert [name for name, _ in keel.prompts.list_prompts()] == ["greet"]
    assert len(_created_lines(caplog)) == 1


def _write_prompts(folder: Path) -> None:
    (folder / "prompts" / "chat").mkdir(parents=True)
    (folder / "prompts" / "prompt_config.yaml").write_text(
        'chat:\n  version: "1.3"\n  model: "gpt-4"\n  system_prompt: "prompts/chat/system_prompt.txt"\n'
    )
    (folder / "prompts" / "chat" / "system_prompt.txt").write_text("You are a helpful support agent.\n")
    (folder / "prompts" / "chat" / "CHANGELOG.md").write_text("# Changelog\n\n## 1.3\nFirst tracked version.\n")


def _keel(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KEEL), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_cli_check_creates_nothing_and_sync_creates_it_with_one_line(tmp_path):
    _write_prompts(tmp_path)
    checked = _keel("prompts", "check", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert not (tmp_path / ".keel").exists() and CREATED not in checked.stderr

    synced = _keel("prompts", "sync", cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    assert "registered chat@1.3.0" in synced.stdout
    assert synced.stderr.splitlines() == [f"{CREATED} {tmp_path.resolve() / '.keel'}"]


def test_a_script_says_where_it_created_the_workspace_once(tmp_path):
    script = textwrap.dedent(
        """
        import keel
        assert keel.prompts.list_prompts() == []
        keel.init(project="p", config={"temperature": 0.7})
        keel.log({"accuracy": 0.9})
        keel.finish()
        with keel.start_run(project="p"):
            keel.log_metric("m", 1)
        """
    )
    first = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines() == [f"{CREATED} {tmp_path.resolve() / '.keel'}"]
    second = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and second.stderr == ""
