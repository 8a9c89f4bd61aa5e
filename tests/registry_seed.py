"""A small store for the web UI's registry pages (shared by the ASGI and the browser tests):
prompts with versions, aliases and eval runs; models with versions, cards, stages and
aliases; two versions of a tracked folder with their tree manifests; a knowledge base with
two versions; conversations with feedback; flags with history; a running A/B test with
exposures and outcomes. User-visible text carries XSS payloads where a person could type it."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from keel.core.batch import WriteBatch
from keel.core.conversations import ConversationBatch
from keel.core.data_tree import Tree, TreeEntry
from keel.core.entities import now_ms
from keel.core.hashing import hash_bytes
from keel.services.abtests import ABBatch, ABService
from keel.services.conversations import ConversationService
from keel.services.data_versions import register_with
from keel.services.flags import FlagService
from keel.services.kb import KBService
from keel.services.models import ModelService
from keel.services.prompts import PromptService
from keel.services.tracking import TrackingService
from keel.services.workspace import Store

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_ATTR = '"><img src=x onerror=alert(2)>'
PROMPT = "support-answer"
MODEL = "ranker"
DATA_PATH = "data/faq"
KB = "faq-kb"
FLAG = "new-retriever"
EXPERIMENT = "answer-style"


@dataclass
class Seeded:
    """What :func:`seed` created (ids the tests look for)."""

    runs: dict[str, str] = field(default_factory=dict)  # prompt version -> run id
    model_run: str = ""
    data_oids: list[str] = field(default_factory=list)  # old, new
    conversations: list[str] = field(default_factory=list)


def _tree(files: dict[str, bytes], store: Store) -> tuple[str, int]:
    entries = []
    for path, data in files.items():
        entries.append(TreeEntry(path, store.objects.put_bytes(data), len(data)))
    tree = Tree(sorted(entries))
    return store.objects.put_bytes(tree.encode()), tree.size


def seed(store: Store, who: str = "alice") -> Seeded:
    """Fill ``store`` (see the module docstring)."""
    out = Seeded()
    tracking = TrackingService(store)
    prompts = PromptService(store)
    texts = [
        ("Answer the question: {{ question }}", {"temperature": 0.2}, "first version"),
        (f"Answer briefly and politely.\nQuestion: {{{{ question }}}}\n{XSS_SCRIPT}", {"temperature": 0.2},
         f"shorter answers {XSS_ATTR}"),
        (f"Answer briefly and politely, citing {{{{ source }}}}.\nQuestion: {{{{ question }}}}\n{XSS_SCRIPT}",
         {"temperature": 0.0, "max_tokens": 300}, "cite the source"),
    ]  # fmt: skip
    versions = []
    for template, params, changelog in texts:
        pv, _ = prompts.register(PROMPT, template, model="gpt-4o-mini", parameters=params, changelog=changelog,
                                 bump="major" if "source" in template else None, author=who)  # fmt: skip
        versions.append(pv.version)
    prompts.register("plain", "Hello {{ name }}", changelog="hello", author=who)
    prompts.set_alias(PROMPT, "production", versions[0], reason="launch", who=who)
    prompts.set_alias(PROMPT, "production", versions[1], reason=f"better tone {XSS_SCRIPT}", who=who)
    prompts.set_alias(PROMPT, "staging", versions[2], reason="try citations", who=who)
    for i, version in enumerate(versions):
        record = tracking.start_run("support-bot", f"eval-{version}")
        at = now_ms()
        tracking.write_batch(
            WriteBatch(
                metrics=[(record.run_id, "accuracy", 0.70 + 0.08 * i, 0, at),
                         (record.run_id, "cost", 0.001 * (i + 1), 0, at)],
                # the production version's run reached it through the alias (the 8th field)
                lineage=[(record.run_id, "input", "prompt", PROMPT, version, "prompt", at,
                          "production" if version == versions[1] else "")],
                run_ends=[(record.run_id, "finished", at + 1000, None)],
            )
        )  # fmt: skip
        out.runs[version] = record.run_id

    models = ModelService(store, tracking)
    run = tracking.start_run("support-bot", "train-ranker")
    out.model_run = run.run_id
    weights = b"model weights"
    tracking.write_batch(
        WriteBatch(
            metrics=[(run.run_id, "ndcg", 0.81, 0, now_ms())],
            artifacts=[
                (run.run_id, "model/weights.bin", tracking.store_bytes(weights), len(weights), "file", now_ms())
            ],
            lineage=[(run.run_id, "input", "prompt", PROMPT, versions[1], "prompt", now_ms())],
            run_ends=[(run.run_id, "finished", now_ms(), None)],
        )
    )
    card = {"model": {"family": "cross-encoder", "notes": XSS_SCRIPT}, "evaluation": {"ndcg": 0.81}, "license": "MIT"}
    models.register(MODEL, f"runs:/{run.run_id}/model/weights.bin", card=card, description=XSS_ATTR, author=who)
    models.register(MODEL, "s3://bucket/ranker-v2", card={"evaluation": {"ndcg": 0.84}}, author=who)
    models.transition_stage(MODEL, 1, "Production", reason="first release", who=who)
    models.transition_stage(MODEL, 2, "Staging", reason="candidate", who=who)
    models.set_alias(MODEL, "champion", 1, reason="best so far", who=who)

    old_oid, old_size = _tree({"a.txt": b"alpha", "b.txt": b"beta", "gone.txt": b"bye"}, store)
    new_oid, new_size = _tree({"a.txt": b"alpha", "b.txt": b"beta v2", "c.txt": b"gamma"}, store)
    register_with(store, [(DATA_PATH, old_oid, "dir", old_size, 3, "abc1234def")])
    register_with(store, [(DATA_PATH, new_oid, "dir", new_size, 3, "def5678abc")])
    register_with(store, [("data/config.json", hash_bytes(b"{}"), "file", 2, 1, "")])
    tracking.write_batch(
        WriteBatch(lineage=[(out.runs[versions[2]], "input", "dataset", DATA_PATH, new_oid, "eval set", now_ms())])
    )
    out.data_oids = [old_oid, new_oid]

    kb = KBService(store)
    kb.create(KB, description=f"FAQ {XSS_SCRIPT}", chunk_size=200, chunk_overlap=20)
    kb.add_documents(KB, [{"text": "Refunds take five days.", "source": "refunds.md"},
                          {"text": "Passwords reset from Settings.", "source": "passwords.md"}])  # fmt: skip
    kb.commit(KB, message="first", author=who)
    kb.add_documents(KB, [{"text": "Refunds take three days.", "source": "refunds.md"},
                          {"text": "Shipping is free over 50 EUR.", "source": "shipping.md"}])  # fmt: skip
    kb.remove_documents(KB, ["passwords.md"])
    kb.commit(KB, message=f"update {XSS_ATTR}", author=who)

    conversations = ConversationService(store)
    batch = ConversationBatch()
    for i in range(12):
        cid = f"conv-{i:02d}"
        version = versions[i % 2]
        record = {
            "conversation_id": cid,
            "messages": [
                {"role": "user", "content": f"question {i} {XSS_SCRIPT}" if i == 0 else f"question {i}"},
                {"role": "assistant", "content": f"answer {i} {XSS_ATTR}" if i == 0 else f"answer {i}"},
            ],
            "model": "gpt-4o-mini" if i % 3 else "gpt-4o",
            "prompt_version": f"{PROMPT}@{version}",
            "user_feedback": {"thumb": "up" if i % 4 else "down", "score": (i % 5) / 4},
            "latency_ms": 100 + 10 * i,
            "tokens_used": {"prompt": 50, "completion": 20 + i},
            "metadata": {"user_id": f"u{i}"},
        }
        row = conversations.prepare(record)
        assert row is not None
        batch.conversations.append(row)
        out.conversations.append(cid)
    conversations.write_batch(batch)

    flags = FlagService(store, prompts)
    flags.set(FLAG, {"default": False, "description": f"retriever v2 {XSS_SCRIPT}"}, reason="created", who=who)
    flags.rollout(FLAG, 25, reason="ramp up", who=who)
    flags.set(FLAG, rules=[{"if": {"plan": "enterprise"}, "serve": True}], reason="enterprise first", who=who)
    flags.set("answer-tone", {"variants": {"formal": "f", "casual": "c"}, "default": "formal",
                              "distribution": {"formal": 50, "casual": 50}}, reason="tone test", who=who)  # fmt: skip

    ab = ABService(store, prompts, models)
    spec = {
        "name": EXPERIMENT,
        "hypothesis": f"Shorter answers get more thumbs up {XSS_SCRIPT}",
        "variants": [
            {"name": "control", "weight": 0.5, "prompt": f"{PROMPT}@{versions[0]}"},
            {"name": "short", "weight": 0.5, "prompt": f"{PROMPT}@production"},
        ],
        "primary_metric": "converted",
    }
    ab.create(spec, who=who)
    ab.start(EXPERIMENT, who=who, reason="go")
    rng = random.Random(7)
    ab_batch = ABBatch()
    resolved = json.dumps({"prompt": f"{PROMPT}@{versions[0]}"})
    at = now_ms()
    for i in range(400):
        variant = "control" if i % 2 else "short"
        unit = f"user{i}"
        ab_batch.exposures.append((EXPERIMENT, unit, variant, resolved, None, at))
        rate = 0.30 if variant == "control" else 0.45
        ab_batch.outcomes.append((EXPERIMENT, unit, "converted", 1.0 if rng.random() < rate else 0.0, at))
        ab_batch.outcomes.append((EXPERIMENT, unit, "latency", 100 + rng.random() * 20, at))
    ab.write_batch(ab_batch)
    return out
