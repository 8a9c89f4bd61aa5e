"""Webhooks in-process: events recorded by the changes that cause them, fan-out to matching
subscriptions, signed deliveries to a real receiver on 127.0.0.1 that verifies them, retries
with backoff after 500s, bounded attempts, timeouts, refused targets, no redirects, and two
dispatchers sharing one database without sending a delivery twice."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hook_receiver import Receiver, verify
from keel.errors import InvalidInput, NotFound
from keel.meta.events import record_event
from keel.meta.hooks import HookStore
from keel.services.flags import FlagService
from keel.services.hooks import HookService
from keel.services.hooks_delivery import Dispatcher, HookSettings, sign
from keel.services.prompts import PromptService
from keel.services.workspace import Store, open_store

FAST = HookSettings(allow_private=True, connect_timeout=2, read_timeout=2, max_attempts=4, backoff=0.05, poll=0.05)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"), cached=False)
    yield opened
    opened.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as found:
        yield found


def _hooks(store: Store, settings: HookSettings = FAST) -> HookService:
    return HookService(store, settings)


def _subscribe(hooks: HookService, receiver: Receiver, scope: str = "*", **kwargs: object) -> int:
    sub = hooks.add(receiver.url, scope, **kwargs)  # type: ignore[arg-type]
    assert sub.secret is not None and sub.secret.startswith("whsec_")
    receiver.secret = sub.secret
    return sub.id


def _drain_until_settled(dispatcher: Dispatcher, db: object, timeout: float = 10.0) -> None:
    """Work the queue until no delivery is pending (retries included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dispatcher.drain()
        with dispatcher.db.read() as conn:
            if "pending" not in HookStore.counts(conn):
                return
        time.sleep(0.02)
    raise AssertionError("deliveries still pending")


# -- events at the choke points, signed deliveries -------------------------------------------
def test_a_new_prompt_version_and_an_alias_move_are_delivered_signed(store: Store, receiver: Receiver) -> None:
    hooks = _hooks(store)
    _subscribe(hooks, receiver, events=["version.created", "alias.moved"], scope="@registries", kind="prompt")
    prompts = PromptService(store)
    prompts.register("greet", "Hello {{name}}", changelog="first")
    prompts.set_alias("greet", "production", "1.0.0", reason="ship it")

    done = hooks.deliver()

    assert (done.events, done.queued, done.delivered) == (2, 2, 2)
    got = sorted(receiver.wait_for(2), key=lambda d: d.event_id)
    assert all(d.verified for d in got)
    assert [d.kind for d in got] == ["version.created", "alias.moved"]
    assert got[0].body["event"]["subject"] == {"kind": "prompt", "name": "greet", "version": "1.0.0"}
    assert got[1].body["event"]["subject"] == {"kind": "prompt", "name": "greet", "ref": "production"}
    assert got[1].body["event"]["data"] == {"old": None, "new": "1.0.0", "who": "root", "reason": "ship it"}
    headers = got[1].headers
    assert headers["X-Keel-Event"] == "alias.moved" and headers["X-Keel-Delivery"] == str(got[1].body["delivery"])
    # a changed body, another secret or a stale timestamp does not verify
    body = b'{"tampered":1}'
    assert not verify(receiver.secret, headers, body)
    assert not verify("whsec_other", headers, b"")
    stale = {**headers, "X-Keel-Timestamp": str(int(time.time()) - 3600)}
    stale["X-Keel-Signature"] = sign(receiver.secret, int(stale["X-Keel-Timestamp"]), body)
    assert not verify(receiver.secret, stale, body)
    assert verify(receiver.secret, {**stale, "X-Keel-Timestamp": str(int(time.time()))}, body) is False


def test_fan_out_follows_scope_events_kind_and_name(store: Store) -> None:
    hooks = _hooks(store)
    every = hooks.add("http://127.0.0.1:9/a", "*").id
    registry_models = hooks.add("http://127.0.0.1:9/b", "@registries", ["version.*"], "model").id
    alpha_evals = hooks.add("http://127.0.0.1:9/c", "alpha", ["eval.finished"]).id
    named = hooks.add("http://127.0.0.1:9/d", "*", ["alias.moved"], "prompt", "chat").id
    paused = hooks.add("http://127.0.0.1:9/e", "*").id
    hooks.set_active(paused, False)
    with store.db.write() as conn:
        record_event(conn, "version.created", project=None, subject={"kind": "model", "name": "m", "version": 1})
        record_event(conn, "eval.finished", project="alpha", subject={"kind": "run", "run_id": "r"})
        record_event(conn, "eval.finished", project="beta", subject={"kind": "run", "run_id": "s"})
        record_event(conn, "alias.moved", project=None, subject={"kind": "prompt", "name": "chat", "ref": "p"})
        record_event(conn, "alias.moved", project=None, subject={"kind": "prompt", "name": "other", "ref": "p"})

    events, queued = Dispatcher(store.db, FAST).fan_out()

    with store.db.read() as conn:
        rows = HookStore.deliveries(conn, None, None, 100)
        by_sub = Counter(r.subscription_id for r in rows)
    assert events == 5 and queued == 8
    assert by_sub == {every: 5, registry_models: 1, alpha_evals: 1, named: 1}
    assert Dispatcher(store.db, FAST).fan_out() == (0, 0)  # each event is fanned out once


def test_a_rolled_back_change_records_no_event(store: Store) -> None:
    with pytest.raises(RuntimeError), store.db.write() as conn:
        record_event(conn, "flag.killed", project=None, subject={"kind": "flag", "name": "f"})
        raise RuntimeError("the change failed")
    with store.db.read() as conn:
        assert HookStore.recent_events(conn) == []
    with pytest.raises(ValueError, match="unknown event kind"), store.db.write() as conn:
        record_event(conn, "flag.exploded", project=None, subject={})


def test_a_flag_kill_is_an_event_once(store: Store, receiver: Receiver) -> None:
    hooks = _hooks(store)
    _subscribe(hooks, receiver, events=["flag.killed"])
    flags = FlagService(store)
    flags.set("checkout", enabled=True)
    flags.kill("checkout", reason="errors spiking")
    flags.set("checkout", rollout=0)  # still off: not killed again

    hooks.deliver()

    (got,) = receiver.wait_for(1)
    assert got.body["event"]["subject"] == {"kind": "flag", "name": "checkout", "env": "production"}
    assert got.body["event"]["data"]["reason"] == "errors spiking"
    time.sleep(0.1)
    assert len(receiver.received) == 1


# -- retries, bounds, timeouts ----------------------------------------------------------------
def test_a_500_is_retried_with_backoff_and_every_attempt_is_recorded(store: Store, receiver: Receiver) -> None:
    hooks = _hooks(store)
    sub = _subscribe(hooks, receiver)
    receiver.plan = [500, 500]
    PromptService(store).register("greet", "Hi", changelog="first")
    dispatcher = Dispatcher(store.db, FAST)

    first = dispatcher.drain()
    assert (first.delivered, first.retrying) == (0, 1)
    _drain_until_settled(dispatcher, store.db)
    dispatcher.close()

    (delivery,) = hooks.deliveries(sub)
    assert (delivery.status, delivery.attempts, delivery.status_code) == ("delivered", 3, 200)
    attempts = hooks.attempts(delivery.id)
    assert [(a.attempt, a.status_code) for a in attempts] == [(1, 500), (2, 500), (3, 200)]
    assert attempts[0].error == "HTTP 500 Internal Server Error" and attempts[0].response == "not now"
    assert attempts[2].error is None and all(a.duration_ms > 0 for a in attempts)
    gaps = [b.at - a.at for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] >= 50 and gaps[1] >= 100  # 0.05 s, then 0.1 s (doubling)
    got = receiver.wait_for(3)
    assert len({d.headers["X-Keel-Delivery"] for d in got}) == 1 and all(d.verified for d in got)


def test_attempts_are_bounded_then_the_delivery_fails(store: Store, receiver: Receiver) -> None:
    hooks = _hooks(store, replace(FAST, max_attempts=3))
    sub = _subscribe(hooks, receiver)
    receiver.plan = [500] * 10
    PromptService(store).register("greet", "Hi", changelog="first")
    dispatcher = Dispatcher(store.db, replace(FAST, max_attempts=3))
    _drain_until_settled(dispatcher, store.db)
    dispatcher.close()

    (delivery,) = hooks.deliveries(sub)
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    assert len(receiver.received) == 3
    assert [d.id for d in hooks.deliveries(status="failed")] == [delivery.id]


def test_a_hanging_receiver_times_out_and_is_retried_later(store: Store, receiver: Receiver) -> None:
    settings = replace(FAST, read_timeout=0.3, backoff=30)
    hooks = _hooks(store, settings)
    sub = _subscribe(hooks, receiver)
    receiver.plan = ["hang"]
    receiver.hang_s = 3
    PromptService(store).register("greet", "Hi", changelog="first")

    dispatcher = Dispatcher(store.db, settings)
    started = time.monotonic()
    done = dispatcher.drain()
    took = time.monotonic() - started
    dispatcher.close()

    assert done.retrying == 1 and took < 2.5
    (delivery,) = hooks.deliveries(sub)
    assert delivery.status == "pending" and delivery.error is not None and delivery.error.startswith("timed out")
    assert delivery.next_at > time.time() * 1000 + 20_000  # due again after the backoff, not now


def test_a_redirect_is_not_followed(store: Store, receiver: Receiver) -> None:
    with Receiver() as elsewhere:
        hooks = _hooks(store, replace(FAST, max_attempts=1))
        sub = _subscribe(hooks, receiver)
        receiver.plan = [302]
        receiver.redirect_to = elsewhere.url
        delivery = hooks.test(sub)
        time.sleep(0.1)
        assert elsewhere.received == []
    assert (delivery.status, delivery.status_code) == ("failed", 302)
    assert receiver.received[0].kind == "hook.test" and receiver.received[0].verified


# -- where deliveries may go -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://100.64.0.1/hook", "non-public"),
    ],
)
def test_refused_addresses(store: Store, url: str, why: str) -> None:
    hooks = _hooks(store, replace(FAST, allow_private=False))
    with pytest.raises(InvalidInput, match=f"a {why} address: refused") as caught:
        hooks.add(url, "*")
    assert "KEEL_HOOKS_ALLOW_PRIVATE=1" in caught.value.hint
    assert hooks.subscriptions() == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "must be http or https"),
        ("file:///etc/passwd", "must be http or https"),
        ("https://user:secret@example.com/x", "carries a user or password"),
        ("http:///nohost", "names no host"),
        ("http://example.com:99999/", "not a valid URL"),
        ("", "needs a target URL"),
        ("http://exa mple.com/", "spaces or line breaks"),
        ("http://no-such-host.invalid/x", "does not resolve"),
    ],
)
def test_malformed_targets_are_refused(store: Store, url: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        _hooks(store).add(url, "*")


def test_the_address_is_checked_again_at_delivery_time(store: Store, receiver: Receiver) -> None:
    sub = _subscribe(_hooks(store), receiver)  # allowed when added (allow_private)
    strict = replace(FAST, allow_private=False, max_attempts=1)

    delivery = HookService(store, strict).test(sub)

    assert delivery.status == "failed" and delivery.status_code is None
    assert delivery.error is not None and "loopback address: refused" in delivery.error
    assert receiver.received == []


def test_bad_arguments_are_refused_with_a_hint(store: Store) -> None:
    hooks = _hooks(store)
    with pytest.raises(InvalidInput, match="unknown event 'version.deleted'") as caught:
        hooks.add("http://127.0.0.1:9/", "*", ["version.deleted"])
    assert "alias.moved" in caught.value.hint
    with pytest.raises(InvalidInput, match="unknown registry kind"):
        hooks.add("http://127.0.0.1:9/", "*", kind="runs")
    with pytest.raises(InvalidInput, match="unknown delivery status"):
        hooks.deliveries(status="lost")
    with pytest.raises(NotFound, match="no webhook subscription 7"):
        hooks.test(7)
    with pytest.raises(NotFound, match="no webhook subscription 7"):
        hooks.remove(7)


# -- one queue, several workers ----------------------------------------------------------------
def test_two_dispatchers_on_one_database_send_each_delivery_once(migrated_database_url: str, tmp_path: Path) -> None:
    store = open_store(migrated_database_url, str(tmp_path / "objects"), cached=False)
    try:
        with Receiver() as receiver:
            settings = replace(FAST, batch=16, concurrency=4)
            _subscribe(_hooks(store), receiver)
            with store.db.write() as conn:
                for i in range(100):
                    record_event(
                        conn, "version.created", project=None, subject={"kind": "model", "name": "m", "version": i}
                    )
            workers = [Dispatcher(store.db, settings, worker=f"w{i}") for i in range(2)]
            threads = [threading.Thread(target=w.drain) for w in workers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            for w in workers:
                w.close()
            got = receiver.wait_for(100)
            time.sleep(0.1)
            assert len(receiver.received) == 100
            assert sorted(Counter(d.event_id for d in got).values()) == [1] * 100
            with store.db.read() as conn:
                assert HookStore.counts(conn) == {"delivered": 100}
    finally:
        store.close()


def test_the_receiver_check_in_docs_hooks_md_verifies_a_real_delivery(store: Store, receiver: Receiver) -> None:
    import re

    text = (Path(__file__).parents[2] / "docs" / "hooks.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify" in b]
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/hooks.md", "exec"), namespace)  # noqa: S102 - the documented snippet itself
    documented = namespace["verify"]
    sub = _subscribe(_hooks(store), receiver)
    _hooks(store).test(sub)
    (got,) = receiver.wait_for(1)
    raw = receiver.raw[0]

    assert documented(receiver.secret, got.headers, raw) is True  # type: ignore[operator]
    assert documented(receiver.secret, got.headers, raw + b" ") is False  # type: ignore[operator]
    assert documented("whsec_wrong", got.headers, raw) is False  # type: ignore[operator]


def test_a_new_dataset_version_is_an_event_and_a_known_one_is_not(store: Store) -> None:
    from keel.services.data_versions import DatasetVersionService

    datasets = DatasetVersionService(store)
    row = ("data/train.csv", "a" * 64, "file", 10, 1, "")
    datasets.register([row, ("data/eval.csv", "b" * 64, "file", 5, 1, "")])
    datasets.register([row])  # registered already: no new version, no event

    with store.db.read() as conn:
        events = HookStore.recent_events(conn)
    assert [(e.kind, e.subject) for e in reversed(events)] == [
        ("version.created", {"kind": "dataset", "name": "data/train.csv", "version": "a" * 64}),
        ("version.created", {"kind": "dataset", "name": "data/eval.csv", "version": "b" * 64}),
    ]


@pytest.mark.parametrize("ws", ["sqlite-local"], indirect=True)
def test_an_evaluation_run_records_eval_finished_with_its_metrics(ws: Path) -> None:
    import openai

    import keel
    from keel.integrations.standin import StandInServer
    from keel.sdk import hooks
    from keel.sdk.session import get_session

    keel.prompts.register("calc", template=[{"role": "user", "content": "{{ question }}"}], changelog="first")
    rows = [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(5)]
    with StandInServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="standin", max_retries=0)
        result = keel.evaluate(rows, "calc@1.0.0", "gpt-4", client, [keel.scorers.exact_match("answer")], project="qa")

    with get_session().service.store.db.read() as conn:
        (event,) = [e for e in HookStore.recent_events(conn) if e.kind == "eval.finished"]
    assert event.project == "qa" and event.subject == {"kind": "run", "run_id": result.run_id, "name": result.name}
    assert event.data == {"metrics": {k: float(v) for k, v in result.metrics.items()}}
    assert hooks.deliver().events >= 1  # fanned out (no subscription wants it: nothing sent)
