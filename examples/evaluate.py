"""keel walkthrough, part 2: evaluate three configurations, compare them with statistics, reproduce one.

    python examples/evaluate.py [FOLDER] [--base-url URL] [--models gpt-4,gpt-3.5-turbo]

The three experiments of the reference's section 4.3:

    prompt v1.2 + gpt-4 + temperature 0.5
    prompt v1.3 + gpt-4 + temperature 0.7
    prompt v1.3 + gpt-3.5-turbo + temperature 0.7

on a small dataset tracked with ``keel data``. Without ``OPENAI_API_KEY`` (and
no ``--base-url``) the model is keel's stand-in server on 127.0.0.1: a small
deterministic program that answers arithmetic questions right with a
per-model probability. It is not a real LLM; it makes the demo run anywhere,
offline, with the same numbers every time. With a key (or any
OpenAI-compatible server via ``--base-url``) the same demo runs against real
models.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import keel

SYSTEM_V12 = "You are a calculator. Reply with the result."
SYSTEM_V13 = "You are a careful calculator. Work step by step, then reply with the number only."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="workspace folder (default: a new temp folder)")
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"))
    parser.add_argument("--models", default="gpt-4,gpt-3.5-turbo", help="the strong and the cheap model")
    args = parser.parse_args()
    strong, cheap = args.models.split(",")
    folder = Path(args.folder or tempfile.mkdtemp(prefix="keel-eval-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    os.environ.pop("KEEL_URI", None)
    keel_cmd = str(Path(sys.executable).with_name("keel"))
    if shutil.which("git") and not (folder / ".git").exists():
        subprocess.run(["git", "init", "-q"], check=True)
    if not (folder / ".keel").exists():
        subprocess.run([keel_cmd, "init"], check=True, capture_output=True)
    print(f"keel workspace: {folder / '.keel'}\n")

    # A small eval set, tracked with keel data (its version is recorded in every run).
    rng = random.Random(7)
    Path("data").mkdir(exist_ok=True)
    pairs = rng.sample([(a, b) for a in range(2, 100) for b in range(2, 100)], 80)
    rows = [
        {"id": f"q{i:02d}", "question": f"What is {a} + {b}?", "answer": str(a + b)} for i, (a, b) in enumerate(pairs)
    ]
    Path("data/eval_set.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print("$ keel data add data/eval_set.jsonl")
    sys.stdout.flush()
    subprocess.run([keel_cmd, "data", "add", "data/eval_set.jsonl"], check=True)

    chat = [{"role": "system", "content": SYSTEM_V12}, {"role": "user", "content": "{{ question }}"}]
    keel.prompts.register("calc", template=chat, version="1.2.0", changelog="first version")
    chat[0] = {"role": "system", "content": SYSTEM_V13}
    keel.prompts.register("calc", template=chat, version="1.3.0", changelog="ask for step-by-step work")

    import openai

    server = None
    if os.environ.get("OPENAI_API_KEY") or args.base_url:
        client = openai.OpenAI(base_url=args.base_url) if args.base_url else openai.OpenAI()
        print(f"Model server: {args.base_url or 'api.openai.com'} (real models: results vary run to run)\n")
    else:
        from keel.integrations.standin import StandInServer

        server = StandInServer(latency={strong: 0.012, cheap: 0.004})
        server.start()
        client = openai.OpenAI(base_url=server.base_url, api_key="standin")
        print(
            f"Model server: keel's STAND-IN at {server.base_url}. It is a small deterministic program, "
            "not a real LLM:\nit answers arithmetic right with a per-model probability, so the numbers "
            "below are illustrative.\n(Set OPENAI_API_KEY or pass --base-url to run this against real models.)\n"
        )

    experiments = [
        ("calc@1.2.0", {"name": strong, "temperature": 0.5}, "prompt_v1.2_strong"),
        ("calc@1.3.0", {"name": strong, "temperature": 0.7}, "prompt_v1.3_strong"),
        ("calc@1.3.0", {"name": cheap, "temperature": 0.7}, "prompt_v1.3_cheap"),
    ]
    scorers = [keel.scorers.exact_match("answer")]
    results = []
    for prompt, model, name in experiments:
        result = keel.evaluate(
            "data/eval_set.jsonl", prompt, model, client, scorers, run_name=name.replace("strong", strong).replace(
                "cheap", cheap), project="calc-eval", concurrency=8, mode="auto",
        )  # fmt: skip
        results.append(result)
        m = result.metrics
        print(f"  {result.name:32} exact_match={m['exact_match']:.3f}  p50 latency={m.get('latency_p50_ms', 0):.0f} ms"
              f"  cost/query=${m.get('cost_per_query', 0):.5f}")  # fmt: skip
    ids = [r.run_id for r in results]
    print(f"\n$ keel runs compare {' '.join(i[:8] for i in ids[1:])} --baseline {ids[0][:8]} --markdown")
    sys.stdout.flush()
    subprocess.run(
        [keel_cmd, "runs", "compare", *(i[:8] for i in ids[1:]), "--baseline", ids[0][:8], "--markdown"], check=True
    )

    if server is not None:
        server.stop()
        print("\n(stand-in server stopped: what follows replays the recorded calls, no network)")
    print(f"\n$ keel reproduce {ids[1][:8]}")
    sys.stdout.flush()
    subprocess.run([keel_cmd, "reproduce", ids[1][:8]], check=True)
    print(f"\nExplore: cd {folder} && {keel_cmd} runs list --project calc-eval")


if __name__ == "__main__":
    main()
