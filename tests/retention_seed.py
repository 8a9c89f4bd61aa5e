"""Records for the retention tests: expired and fresh conversations, recorded LLM calls and
traces (in a project with a policy and one without), beside runs and a model version that
retention must never touch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keel.core.batch import WriteBatch
from keel.core.conversations import ConversationBatch
from keel.core.entities import now_ms
from keel.services.conversations import ConversationService
from keel.services.llm import LlmService, PendingCall
from keel.services.models import ModelService
from keel.services.traces import TraceService
from keel.services.tracking import TrackingService
from keel.services.workspace import Store

DAY_MS = 86_400_000
APP, OTHER = "app", "other"  # traces of APP have a policy, those of OTHER none


@dataclass
class Counts:
    """How many records of each kind one :func:`seed` wrote."""

    conversations: int = 0
    llm_calls: int = 0
    traces: int = 0


def seed(store: Store, tag: str, *, old: int, new: int, at: int | None = None) -> Counts:
    """``old`` records of each kind made 10 days before ``at`` (default now) and ``new`` made an
    hour before it, in every kind; traces in both APP and OTHER (only APP's count as expired)."""
    now = at if at is not None else now_ms()
    conversations = ConversationService(store)
    tracking = TrackingService(store)
    llm = LlmService(store, tracking)
    traces = TraceService(store)
    expired = Counts()
    for age, count in ((10 * DAY_MS, old), (3_600_000, new)):
        when = now - age
        rows = [
            ConversationService.prepare(
                {
                    "conversation_id": f"{tag}-{age}-{i}",
                    "timestamp": when,
                    "messages": [{"role": "user", "content": f"hello from {tag} {i}"}],
                    "metadata": {"user_id": f"u-{i}"},
                }
            )
            for i in range(count)
        ]
        conversations.write_batch(ConversationBatch([row for row in rows if row is not None]))
        llm.write([_call(f"{tag}-{age}-{i}", when) for i in range(count)])
        for project in (APP, OTHER):
            spans = [_span(f"{tag}|{project}|{age}|{i}", when) for i in range(count)]
            if spans:
                traces.ingest(spans, project)
        if age > DAY_MS:
            expired = Counts(count, count, count)
    return expired


def _call(text: str, when: int) -> PendingCall:
    request = {"model": "m", "messages": [{"role": "user", "content": text}]}
    response = {"model": "m", "choices": [{"message": {"role": "assistant", "content": "ok"}}]}
    return PendingCall("chat.completions", request, response, 1.0, when)


def _span(key: str, when_ms: int) -> dict[str, Any]:
    import hashlib

    digest = hashlib.sha256(key.encode()).hexdigest()
    start = when_ms * 1_000_000
    return {
        "trace_id": digest[:32],
        "span_id": digest[32:48],
        "name": "answer",
        "start_ns": start,
        "end_ns": start + 1_000_000,
        "attributes": {"user_id": key},
    }


def keepers(store: Store) -> dict[str, Any]:
    """Runs (one deleted) and a model version registered from a run: retention never expires them."""
    tracking = TrackingService(store)
    runs = []
    for deleted in (False, True):
        run_id = tracking.start_run(project=APP).run_id
        oid = tracking.store_bytes(f"weights {run_id}".encode())
        tracking.write_batch(
            WriteBatch(
                artifacts=[(run_id, "model.bin", oid, 10, "file", now_ms() - 20 * DAY_MS)],
                metrics=[(run_id, "loss", 0.1, 0, now_ms() - 20 * DAY_MS)],
                run_ends=[(run_id, "finished", now_ms() - 20 * DAY_MS, None)],
            )
        )
        if deleted:
            tracking.delete_run(run_id)
        runs.append(run_id)
    ModelService(store, tracking).register("kept-model", f"runs:/{runs[0]}/model.bin")
    return {"runs": runs}


def counts(store: Store) -> dict[str, int]:
    """Rows of every kind retention may touch, and of what it must not."""
    out = {}
    with store.db.read() as conn:
        for table in ("conversations", "llm_calls", "runs", "model_versions", "artifacts", "latest_metrics"):
            out[table] = int(conn.execute(f"SELECT COUNT(*) FROM {table}").scalar())  # noqa: S608
        for project in (APP, OTHER):
            out[f"traces:{project}"] = int(
                conn.execute(
                    "SELECT COUNT(*) FROM traces JOIN projects ON projects.id = traces.project_id"
                    " WHERE projects.name = ?",
                    (project,),
                ).scalar()
            )
    return out


def retention_audit(store: Store) -> dict[str, int]:
    """Records deleted per kind, summed over the ``retention`` audit rows."""
    with store.db.read() as conn:
        rows = conn.execute("SELECT kind, SUM(deleted) FROM erasures WHERE reason = 'retention' GROUP BY kind").all()
    return {str(kind): int(total) for kind, total in rows}
