"""The README's Python blocks run, in order, as a newcomer runs them.

Every ```` ```python ```` block of README.md is executed in one fresh process in a new,
empty folder (no ``.keel/``, no ``KEEL_URI``), one after the other in a shared namespace, as
someone pasting them into one session would; blocks that need models get keel's stand-in
model server through ``OPENAI_BASE_URL``. A block that cannot run here says so in the
README, right above it: ``<!-- not-run: why -->``; there must stay few of them.

The README's snippets take some things as given, the reader's own: a few files (an
evaluation set, a model card, the reference's ``config/production.yaml``), a few values
(``rows``, ``losses``, ``uid``, ``my_scorer``) and what their registries already hold
(prompt ``chat`` 1.2.0 and 1.3.0 with ``production`` on 1.3.0, the ``calc`` and ``judge``
prompts the evaluation names, two versions of model ``chat-assistant``, a running A/B
test ``prompt-v2``). ``GIVEN`` makes them, in its own namespace: only the values it
names are handed to the blocks, so a block that forgets an import still fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from keel.integrations.standin import StandInServer

ROOT = Path(__file__).resolve().parents[2]
MAX_NOT_RUN = 2  # blocks marked <!-- not-run: ... -->: keep it small

GIVEN = """
import json
from pathlib import Path

import keel

Path("eval_results.json").write_text(json.dumps({"accuracy": 0.85, "faithfulness": 0.92}))
Path("model_config.yaml").write_text("base_model: meta-llama/Llama-3-8B-Instruct\\nquantization: AWQ-4bit\\n")
Path("card.yaml").write_text(
    "model:\\n  name: chat-assistant\\n  base_model: meta-llama/Llama-3-8B-Instruct\\n"
    "evaluation:\\n  eval_accuracy: 0.85\\n"
)
Path("config").mkdir()
Path("config/production.yaml").write_text(Path(REFERENCE_CONFIG).read_text())
Path("data").mkdir()
Path("data/eval_set.jsonl").write_text("".join(
    json.dumps({"id": f"q{i}", "question": f"What is {i} + {2 * i + 3}?", "answer": str(3 * i + 3)}) + "\\n"
    for i in range(12)
))

keel.prompts.register("chat", template="Answer: {{ question }}", model="gpt-4", changelog="first", version="1.2.0")
keel.prompts.register("chat", template="Answer briefly: {{ question }}", model="gpt-4", changelog="shorter",
                      version="1.3.0")
keel.prompts.set_alias("chat", "production", "1.3.0")
keel.prompts.register("chat", template="Answer briefly, citing the policy: {{ question }}", model="gpt-4",
                      changelog="cite the policy", version="2.0.0")
calc = [{"role": "system", "content": "You are a calculator. Reply with the result."},
        {"role": "user", "content": "{{ question }}"}]
keel.prompts.register("calc", template=calc, changelog="first", version="1.2.0")
calc[0] = {"role": "system", "content": "Work step by step, then reply with the number only."}
keel.prompts.register("calc", template=calc, changelog="step by step", version="1.3.0")
keel.prompts.register("judge", changelog="faithfulness rubric", version="1.0.0", template=(
    "Rate from 1 to 5 how faithful this answer is to the question. Reply with the number only.\\n"
    "Question: {{ question }}\\nAnswer: {{ output }}"
))
for weights in ("s3://models/chat-assistant/1", "s3://models/chat-assistant/2"):
    keel.models.register("chat-assistant", weights)
keel.models.transition_stage("chat-assistant", 2, "Production")
keel.ab.create("prompt-v2", [{"name": "control", "prompt": "chat@1.3.0"},
                             {"name": "treatment", "prompt": "chat@2.0.0"}])
keel.ab.start("prompt-v2")

rows = [["How do refunds work?", "Within 30 days.", 1.0, "up"], ["Where is my order?", "It ships today.", 0.5, ""]]
system_prompt_content = "You are a helpful support assistant."
losses = [1.0, 0.6, 0.4, 0.3]
uid = "user-42"


def my_scorer(output, sample):
    return float(len(output) < 20)


GIVEN_NAMES = ["rows", "system_prompt_content", "losses", "uid", "my_scorer"]
"""

RUNNER = """
import json, sys

given = {"__name__": "given", "REFERENCE_CONFIG": sys.argv[3]}
exec(compile(open(sys.argv[2]).read(), "given.py", "exec"), given)
namespace = {"__name__": "__main__"}
namespace.update({name: given[name] for name in given["GIVEN_NAMES"]})
for block in json.load(open(sys.argv[1])):
    print(f"--- README.md:{block['line']}", flush=True)
    # padded so a traceback names the README's own line numbers
    exec(compile("\\n" * block["line"] + block["code"], "README.md", "exec"), namespace)
print("--- all blocks ran", flush=True)
"""


@dataclass
class Block:
    line: int  # the line of the opening fence
    code: str
    not_run: str | None  # why, from <!-- not-run: why --> right above the fence


def readme_blocks(text: str) -> list[Block]:
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = re.fullmatch(r"<!--\s*not-run:\s*(.+?)\s*-->", before.strip())
        blocks.append(Block(text.count("\n", 0, match.start()) + 1, match.group(1), marker and marker.group(1)))
    return blocks


def test_the_readme_marks_few_blocks_not_run() -> None:
    marked = readme_blocks("text\n<!-- not-run: needs a team server -->\n```python\nx = 1\n```\n")
    assert [(b.line, b.code, b.not_run) for b in marked] == [(3, "x = 1\n", "needs a team server")]
    blocks = readme_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 10
    skipped = [f"README.md:{b.line}: {b.not_run}" for b in blocks if b.not_run]
    assert len(skipped) <= MAX_NOT_RUN, skipped


def test_readme_python_blocks_run_in_order(tmp_path: Path) -> None:
    blocks = [b for b in readme_blocks((ROOT / "README.md").read_text()) if not b.not_run]
    (tmp_path / "blocks.json").write_text(json.dumps([{"line": b.line, "code": b.code} for b in blocks]))
    (tmp_path / "given.py").write_text(GIVEN)
    (tmp_path / "runner.py").write_text(RUNNER)
    folder = tmp_path / "newcomer"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    with StandInServer() as server:
        env.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="standin")
        out = subprocess.run(
            [sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "blocks.json"), str(tmp_path / "given.py"),
             str(ROOT / "tests" / "fixtures" / "config" / "production.yaml")],
            cwd=folder, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    ran = re.findall(r"^--- README\.md:(\d+)$", out.stdout, re.M)
    failed_at = f"README.md:{ran[-1]}" if ran else "given.py"
    assert out.returncode == 0, f"the block at {failed_at} failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    assert ran == [str(b.line) for b in blocks] and out.stdout.rstrip().endswith("--- all blocks ran")
    assert "Traceback" not in out.stderr, out.stderr
    # what the README's comments promise
    assert re.search(r"^refund-policy\.md 0\.707", out.stdout, re.M), out.stdout
