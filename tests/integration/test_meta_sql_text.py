"""Conversations, recorded LLM calls, traces, knowledge bases and record digests (``keel
verify``) run their SQL as text on the database drivers (issue 20's one data-access design):
using them on a store that exists never imports SQLAlchemy (~250 ms of start-up), on both
databases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, sys, time

from keel.core.batch import WriteBatch
from keel.core.conversations import ConversationBatch
from keel.services.conversations import ConversationService
from keel.services.kb import KBService
from keel.services.llm import LlmService
from keel.services.tracking import TrackingService
from keel.services.traces import TraceService
from keel.services.verify import verify_store
from keel.services.workspace import open_store

store = open_store(sys.argv[1], sys.argv[2], cached=False)
done = {}

conversations = ConversationService(store)
row = conversations.prepare({"conversation_id": "c-1", "messages": [{"role": "user", "content": "hi"}],
                             "model": "m", "metadata": {"env": "prod"}})
conversations.write_batch(ConversationBatch([row], [conversations.feedback_row("c-1", thumb="up")]))
done["conversations"] = (
    len(conversations.search("metadata.env = 'prod'")), conversations.get("c-").latest.thumb,
    len(conversations.stats(by="model")),
)

tracking = TrackingService(store)
run_id = tracking.start_run("p", "r").run_id
now = int(time.time() * 1000)
tracking.write_batch(WriteBatch(metrics=[(run_id, "loss", 0.5, 0, now)], run_ends=[(run_id, "finished", now, None)]))

llm = LlmService(store, tracking)
llm.repo.insert([("a" * 64, "chat", "m", "b" * 64, 0, None, "tape", int(time.time() * 1000), 1.5, 3, 4, None,
                  None, False, "{}", 0)])
done["llm"] = (len(llm.calls(cassette="tape")), llm.cassettes())

traces = TraceService(store)
start = time.time_ns()
traces.ingest([{"trace_id": "1" * 32, "span_id": "2" * 16, "name": "root", "start_ns": start,
                "end_ns": start + 1_000_000, "status": "ok"}], project="p")
done["traces"] = (traces.count("p"), len(traces.get("1" * 8, "p").spans), len(traces.stats("p")),
                  traces.prune("2000-01-01"))

kb = KBService(store)
kb.create("docs")
kb.add_documents("docs", [{"text": "hello", "source": "a.txt"}])
staged = len(kb.status("docs").added)
version = kb.commit("docs", "first")
done["kb"] = (staged, version.version, len(kb.search("docs", "hello")[1]), len(kb.status("docs").added))

report = verify_store(store, objects=False)
done["verify"] = (report.ok, report.records["runs"].checked)
store.close()
done["sqlalchemy"] = sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "alembic"))
print(json.dumps(done))
"""


def test_conversations_llm_traces_kb_and_verify_never_import_sqlalchemy(
    migrated_database_url: str, tmp_path: Path
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, migrated_database_url, str(tmp_path / "objects")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    done = json.loads(out.stdout.strip().splitlines()[-1])

    assert done["conversations"] == [1, "up", 1]
    assert done["llm"] == [1, [["tape", 1]]]
    assert done["traces"][:3] == [1, 1, 1]
    assert done["kb"] == [1, "v1", 1, 0]
    assert done["verify"] == [True, 1]  # the run's digest, sealed as it finished
    assert done["sqlalchemy"] == []
