"""keel quickstart: track a small prompt experiment end to end.

Run with ``make demo`` (or ``python examples/quickstart.py [FOLDER]``). It
creates a keel workspace in FOLDER (default: a new temp folder), logs one run
per prompt/model combination the way an evaluation script would, then uses
the search API and the ``keel`` command to compare them.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import keel
from keel.sdk.workspace import init_workspace

EVAL_SET = [
    ("How do refunds work?", "refund"),
    ("Can I change my shipping address?", "address"),
    ("Where is my order?", "tracking"),
    ("Do you ship abroad?", "international"),
    ("How do I reset my password?", "password"),
    ("Is there a student discount?", "discount"),
]
PROMPTS = {  # registered in keel's prompt registry; runs load them by version
    "v1.2": "You are a support agent. Answer: {{ question }}",
    "v1.3": "You are a concise, friendly support agent. Cite the policy. Answer: {{ question }}",
}
COMBINATIONS = [
    # (prompt version, model, temperature, accuracy the fake model reaches)
    ("v1.2", "gpt-4", 0.7, 0.78),
    ("v1.3", "gpt-4", 0.7, 0.86),
    ("v1.3", "gpt-4o-mini", 0.2, 0.83),
    ("v1.3", "llama-3-8b", 0.2, 0.71),
]
COST_PER_QUERY = {"gpt-4": 0.030, "gpt-4o-mini": 0.0006, "llama-3-8b": 0.0002}


def fake_llm(question: str, topic: str, correct: bool) -> tuple[str, float]:
    """Stand-in for a model call (the demo needs no API key or network)."""
    answer = f"Here is our {topic} policy." if correct else "I am not sure."
    return answer, 1.0 if correct else 0.0


def register_prompts() -> dict[str, str]:
    """Register the two prompt versions; returns {"v1.2": "1.0.0", "v1.3": "1.0.1"}."""
    versions = {}
    for label, template in PROMPTS.items():
        p = keel.prompts.register("support", template=template, changelog=f"prompt {label}")
        versions[label] = p.version
    keel.prompts.set_alias("support", "production", versions["v1.3"], reason="best accuracy in the demo")
    return versions


def run_experiment(prompt_ref: str, prompt_version: str, model: str, temperature: float, skill: float) -> str:
    rng = random.Random(f"{prompt_version}-{model}")
    with keel.start_run(project="llm-prompt-optimization", name=f"prompt_{prompt_version}_{model}",
                        tags={"team": "support"}) as run:
        keel.log_params({"prompt_version": prompt_version, "model": model, "temperature": temperature,
                         "rag": {"top_k": 5, "chunk_size": 512}})
        prompt = keel.prompts.load(prompt_ref)  # recorded as this run's input (lineage)
        run.log_text("system_prompt", prompt.render(question="{question}"))
        rows, scores, latencies = [], [], []
        questions = EVAL_SET * 5
        right = set(rng.sample(range(len(questions)), round(skill * len(questions))))
        for step, (question, topic) in enumerate(questions):
            answer, score = fake_llm(question, topic, step in right)
            latency = rng.gauss(900 if model == "gpt-4" else 400, 80)
            scores.append(score)
            latencies.append(latency)
            run.log_metric("running_accuracy", sum(scores) / len(scores), step=step)
            rows.append([question, answer, score, "good" if score else "bad"])
        accuracy = sum(scores) / len(scores)
        keel.log_metrics({"accuracy": accuracy, "faithfulness": min(1.0, accuracy + 0.05),
                          "avg_latency_ms": sum(latencies) / len(latencies),
                          "cost_per_query": COST_PER_QUERY[model]})
        run.log_table("eval_samples", columns=["query", "response", "score", "feedback"], rows=rows)
        Path("eval_results.json").write_text(json.dumps({"accuracy": accuracy, "n": len(scores)}))
        keel.log_artifact("eval_results.json")
        return run.id


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="keel-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    os.environ.pop("KEEL_URI", None)
    if not (folder / ".keel").exists():
        init_workspace(folder)
    print(f"keel workspace: {folder / '.keel'}\n")

    versions = register_prompts()
    ids = [run_experiment(f"support@{versions[label]}", label, *rest) for label, *rest in COMBINATIONS]

    best = keel.search_runs(
        "llm-prompt-optimization",
        filter="metrics.accuracy > 0.8 and params.prompt_version = 'v1.3' and tags.team = 'support'",
        order_by=["metrics.cost_per_query asc"],
    )
    print("Runs with accuracy > 0.8 on prompt v1.3, cheapest first:")
    for run in best:
        print(f"  {run.run_id[:8]}  {run.name:28} accuracy={run.metrics['accuracy']:.3f} "
              f"cost/query=${run.metrics['cost_per_query']:.4f}")
    sample = keel.Client().table(best[0].run_id, "eval_samples").filter("feedback = 'bad'")
    print(f"\n{best[0].name} got {len(sample)} of 30 eval questions wrong.\n")

    # Register the winner in the model registry with a model card, and promote it.
    winner = best[0]
    card = {
        "model": {"name": "support-assistant", "base_model": winner.params["model"]},
        "evaluation": {"accuracy": round(winner.metrics["accuracy"], 3)},
        "deployment": {"stage": "production", "serving_framework": "vllm"},
    }
    mv = keel.register_model(f"runs:/{winner.run_id}/eval_results.json", "support-assistant", card=card)
    keel.models.transition_stage("support-assistant", mv.version, "Production", archive_existing=True,
                                 reason=f"best accuracy/cost ({winner.name})")
    keel.models.set_alias("support-assistant", "champion", mv.version)
    serving = keel.models.get("support-assistant", stage="Production")
    print(f"Registered {serving.ref} from run {winner.run_id[:8]}; in Production, alias 'champion'.\n")

    keel_cmd = str(Path(sys.executable).with_name("keel"))
    print("$ keel runs compare " + " ".join(i[:8] for i in ids))
    sys.stdout.flush()
    subprocess.run([keel_cmd, "runs", "compare", *(i[:8] for i in ids)], check=True)
    print("\n$ keel prompts show support   (versions, aliases, and the runs that used each)")
    sys.stdout.flush()
    subprocess.run([keel_cmd, "prompts", "show", "support"], check=True)
    print("\n$ keel models history support-assistant   (every stage change and alias move)")
    sys.stdout.flush()
    subprocess.run([keel_cmd, "models", "history", "support-assistant"], check=True)
    print(f"\nExplore: cd {folder} && {keel_cmd} runs list   (or: runs show {ids[1][:8]}, prompts log support)")


if __name__ == "__main__":
    main()
