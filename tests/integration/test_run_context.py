"""A run records where it ran (the real git commit and dirty flag, host, versions), and the
active run is per thread and asyncio task (issue 16): concurrent runs never log into each other,
and LLM-call, prompt-load and flag attribution follow the run of the caller's own context."""

import asyncio
import contextvars
import socket
import subprocess
import sys
import textwrap
import threading

import openai
import pytest

import keel
from keel.errors import InvalidInput
from keel.integrations.standin import StandInServer
from keel.sdk import llm


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _log_a_run(cwd) -> str:
    code = textwrap.dedent(
        """
        import keel
        with keel.start_run(project="ctx") as run:
            keel.log_metric("m", 1)
        print(run.id)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_git_commit_dirty_flag_host_and_versions(ws):
    _git(ws, "init", "-q")
    _git(ws, "config", "user.email", "t@example.com")
    _git(ws, "config", "user.name", "t")
    (ws / "prompt.txt").write_text("You are helpful.\n")
    _git(ws, "add", "prompt.txt")
    _git(ws, "commit", "-qm", "v1")
    head = _git(ws, "rev-parse", "HEAD")

    clean = keel.Client().get_run(_log_a_run(ws))
    assert clean.context["git"] == {
        "commit": head,
        "dirty": False,
        "branch": _git(ws, "rev-parse", "--abbrev-ref", "HEAD"),
    }

    (ws / "prompt.txt").write_text("You are terse.\n")  # an uncommitted change to a tracked file
    dirty = keel.Client().get_run(_log_a_run(ws))
    assert dirty.context["git"]["commit"] == head and dirty.context["git"]["dirty"] is True

    assert clean.context["hostname"] == socket.gethostname()
    assert clean.context["python"] == ".".join(map(str, sys.version_info[:3]))
    assert clean.context["keel"] == keel.__version__
    assert isinstance(clean.context["packages"], dict)


def test_outside_a_git_repository_there_is_no_git_context(ws):
    record = keel.Client().get_run(_log_a_run(ws))
    assert "git" not in record.context


# -- the active run is per thread and asyncio task --------------------------------------------
def _history(run_id: str, key: str = "m") -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in keel.Client().metric_history(run_id, key)]


def test_threads_each_log_into_their_own_run(ws):
    threads, points = 8, 1_000
    start = threading.Barrier(threads)
    ids: dict[int, str] = {}
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            with keel.start_run(project="ctx", name=f"thread-{t}") as run:
                ids[t] = run.id
                start.wait()  # every run is active at once
                for step in range(points):
                    keel.log_metric("m", t * 10_000 + step, step=step)
                    assert keel.active_run() is run
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert keel.active_run() is None  # the main thread never started one
    for t, run_id in ids.items():
        assert _history(run_id) == [(step, float(t * 10_000 + step)) for step in range(points)]


def test_asyncio_tasks_each_log_into_their_own_run(ws):
    tasks, points = 100, 20

    async def request(t: int) -> str:
        with keel.start_run(project="ctx", name=f"request-{t}") as run:
            for step in range(points):
                keel.log_metric("m", t * 1_000 + step, step=step)
                await asyncio.sleep(0)  # every other task runs in between
                assert keel.active_run() is run
        return run.id

    async def main() -> list[str]:
        return await asyncio.gather(*(request(t) for t in range(tasks)))

    ids = asyncio.run(main())
    assert len(set(ids)) == tasks
    for t, run_id in enumerate(ids):
        assert _history(run_id) == [(step, float(t * 1_000 + step)) for step in range(points)]


def test_nested_runs_in_one_context_and_a_task_created_inside_a_run(ws):
    async def child_task() -> str | None:
        run = keel.active_run()
        keel.log_metric("from_task", 1.0)
        return run.id if run else None

    async def main() -> None:
        with keel.start_run(project="ctx", name="outer") as outer:
            with keel.start_run(name="inner") as inner:
                assert keel.active_run() is inner and inner.parent_id == outer.id
                assert await asyncio.create_task(child_task()) == inner.id
            assert keel.active_run() is outer  # the inner run left the stack
            assert await asyncio.gather(child_task(), child_task()) == [outer.id, outer.id]
            assert await asyncio.to_thread(lambda: keel.active_run()) is outer  # to_thread copies the context
        assert keel.active_run() is None
        assert _history(inner.id, "from_task") == [(0, 1.0)]
        assert _history(outer.id, "from_task") == [(0, 1.0), (0, 1.0)]

    asyncio.run(main())


def test_a_plain_thread_does_not_inherit_the_run_unless_given_the_context(ws):
    seen: dict[str, object] = {}

    def plain() -> None:
        seen["plain"] = keel.active_run()
        try:
            keel.log_metric("m", 1.0)
        except InvalidInput as exc:
            seen["error"] = exc

    def inheriting() -> None:
        seen["copied"] = keel.active_run()
        keel.log_metric("m", 2.0)

    with keel.start_run(project="ctx") as run:
        thread = threading.Thread(target=plain)
        thread.start()
        thread.join()
        thread = threading.Thread(target=contextvars.copy_context().run, args=(inheriting,))
        thread.start()
        thread.join()
    assert seen["plain"] is None and "no active run" in str(seen["error"])
    assert seen["copied"] is run
    assert _history(run.id) == [(0, 2.0)]


def test_a_run_finished_in_another_context_leaves_this_one(ws):
    run = keel.start_run(project="ctx")
    thread = threading.Thread(target=run.finish)
    thread.start()
    thread.join()
    assert keel.active_run() is None
    with pytest.raises(InvalidInput, match="no active run"):
        keel.log_metric("m", 1.0)


def test_llm_calls_prompt_loads_and_flag_exposures_follow_each_threads_run(ws):
    threads = 4
    for t in range(threads):
        keel.prompts.register(f"p{t}", f"Question {t}: {{{{ q }}}}", changelog="first")
    keel.flags.set("beta", rollout=100)
    flag_client = keel.flags.client(refresh_seconds=0, log_exposures=True)  # one client, shared
    ids: dict[int, str] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(threads)
    with StandInServer() as server:
        raw = openai.OpenAI(base_url=server.base_url, api_key="standin", max_retries=0)
        client = llm.wrap(raw)

        def work(t: int) -> None:
            try:
                with keel.start_run(project="ctx", name=f"thread-{t}") as run:
                    ids[t] = run.id
                    start.wait()
                    prompt = keel.prompts.load(f"p{t}")
                    assert flag_client.is_enabled("beta", user_id=f"u{t}")
                    for call in range(3):
                        content = prompt.render(q=f"{t}-{call}")
                        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": content}])
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        raw.close()
    llm.flush()
    assert errors == []
    for t, run_id in ids.items():
        calls = llm.calls(run=run_id)
        assert len(calls) == 3 and {c.run_id for c in calls} == {run_id}
        texts = {llm.get_call(c.request_hash).request["messages"][0]["content"] for c in calls}
        assert texts == {f"Question {t}: {t}-{call}" for call in range(3)}
        inputs = {str(ref).split("@")[0] for ref in keel.lineage.inputs(run_id)}
        assert f"prompt:p{t}" in inputs and "flag:beta" in inputs
        assert not {f"prompt:p{other}" for other in range(threads) if other != t} & inputs
