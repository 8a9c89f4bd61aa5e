"""One keel prompt-registry workload in a fresh process (run by bench/prompts.py with keel's venv).

Prints one ``@@RESULT {json}`` line. The store is a keel workspace in
``--dir``, created beforehand by another process (``init``).

Workloads:

- ``register``: ``--n`` versions of one prompt, each with new template text
  (a patch bump each), through ``keel.prompts.register``; synchronous, so the
  timing ends with the last version committed.
- ``load_uncached``: ``keel.prompts.get("NAME@1.0.3", ttl=0)`` (the registry read,
  no cache), and ``keel.prompts.load("NAME@production", ttl=0)`` (an alias
  load with the cache off) -- ``--n`` calls per loop, median of ``--reps``.
- ``load_cached``: ``keel.prompts.load("NAME@1.0.3")`` repeated (a pinned
  version is cached for the life of the process).
- ``check``: a ``prompts/`` folder of ``--n`` prompts (prompt_config.yaml,
  one system_prompt.txt and CHANGELOG.md each), synced with
  ``keel prompts sync --dir prompts``; then ``keel prompts check --dir prompts``
  is timed end to end as a subprocess (median of ``--reps``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    KEEL_PINNED,
    PINNED_INDEX,
    PROMPT_ALIAS,
    PROMPT_NAME,
    Profiler,
    base_info,
    emit,
    parse_args,
    peak_rss_mb,
    prompt_template,
    prompt_templates,
    rate_reps,
)
from _keel_worker import open_workspace  # noqa: E402

# The script's folder is already sys.path[0]; drop the duplicates the imports above added
# (as in the MLflow worker, so both tools run with a plain script's sys.path).
sys.path[:] = list(dict.fromkeys(sys.path))

WORKLOADS = ["info", "init", "register", "load_uncached", "load_cached", "check"]


def init(args, db: str) -> dict:
    """Create the store (schema migration) in its own process, before the measured one."""
    return {"peak_rss_mb": peak_rss_mb()}


def register(args, db: str) -> dict:
    import keel

    templates = prompt_templates(args.n)
    keel.prompts.list_prompts()  # open (and check) the store outside the timing
    versions = []
    with Profiler(args.profile):
        t0 = time.perf_counter()
        for i, text in enumerate(templates):
            versions.append(keel.prompts.register(PROMPT_NAME, template=text, changelog=f"Wording pass {i}").version)
        elapsed = time.perf_counter() - t0
    rss = peak_rss_mb()
    stored = keel.prompts.versions(PROMPT_NAME)
    return {
        "seconds": elapsed,
        "rate": args.n / elapsed,
        "peak_rss_mb": rss,
        "stored": len(stored),
        "first_version": versions[0] if versions else None,
        "last_version": versions[-1] if versions else None,
        "pinned_version": versions[PINNED_INDEX] if len(versions) > PINNED_INDEX else None,
    }


def load_uncached(args, db: str) -> dict:
    import keel

    ref = f"{PROMPT_NAME}@{KEEL_PINNED}"
    alias_ref = f"{PROMPT_NAME}@{PROMPT_ALIAS}"
    keel.prompts.set_alias(PROMPT_NAME, PROMPT_ALIAS, KEEL_PINNED, reason="bench")
    get, load = keel.prompts.get, keel.prompts.load
    with Profiler(args.profile):
        pinned = rate_reps(lambda: get(ref, ttl=0), args.n, args.reps)
        alias = rate_reps(lambda: load(alias_ref, ttl=0), args.n, args.reps)
    expected = prompt_template(PINNED_INDEX)
    return {
        "rate": pinned["rate"],
        "times": pinned["times"],
        "calls": args.n,
        "alias_rate": alias["rate"],
        "alias_times": alias["times"],
        "served": pinned["result"].ref,
        "alias_served": alias["result"].ref,
        "template_ok": pinned["result"].content.template == expected and alias["result"].template == expected,
        "method": f'keel.prompts.get("{ref}", ttl=0); alias: keel.prompts.load("{alias_ref}", ttl=0)',
        "peak_rss_mb": peak_rss_mb(),
    }


def load_cached(args, db: str) -> dict:
    import keel

    ref = f"{PROMPT_NAME}@{KEEL_PINNED}"
    load = keel.prompts.load
    with Profiler(args.profile):
        result = rate_reps(lambda: load(ref), args.n, args.reps)
    return {
        "rate": result["rate"],
        "times": result["times"],
        "calls": args.n,
        "served": result["result"].ref,
        "template_ok": result["result"].template == prompt_template(PINNED_INDEX),
        "method": f'keel.prompts.load("{ref}")',
        "peak_rss_mb": peak_rss_mb(),
    }


# -- keel prompts check --------------------------------------------------------------
def keel_cli() -> list[str]:
    exe = Path(sys.executable).parent / "keel"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from keel.cli.main import main; main()"]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.setdefault("NO_COLOR", "1")
    env.setdefault("COLUMNS", "200")
    return env


def write_prompts_dir(root: Path, n: int) -> Path:
    """``root``/prompts: prompt_config.yaml of ``n`` prompts, each with its files (the
    layout of the domain reference: paths in the config are relative to ``root``)."""
    folder = root / "prompts"
    config = []
    for i in range(n):
        name = f"prompt{i:03d}"
        sub = folder / name
        sub.mkdir(parents=True, exist_ok=True)
        (sub / "system_prompt.txt").write_text(prompt_template(i))
        (sub / "CHANGELOG.md").write_text(
            f"# Changelog\n\n## 1.0.0 - 2026-11-29\n\n- First version of {name}: answer shop questions.\n"
        )
        config.append(
            f"{name}:\n"
            f'  version: "1.0.0"\n'
            f'  model: "gpt-4"\n'
            f"  temperature: {(i % 10) / 10}\n"
            f'  system_prompt: "prompts/{name}/system_prompt.txt"\n'
        )
    (folder / "prompt_config.yaml").write_text("# prompt_config.yaml\n" + "".join(config))
    return folder


def run_cli(args: list[str], timeout: float = 600) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(keel_cli() + args, capture_output=True, text=True, env=cli_env(), timeout=timeout)
    elapsed = time.perf_counter() - t0
    return proc.returncode, (proc.stdout + proc.stderr), elapsed


def command_missing(sub: str) -> bool:
    code, out, _ = run_cli(["prompts", sub, "--help"])
    return code != 0 and ("No such command" in out or "no such command" in out.lower())


def tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def check(args, db: str) -> dict:
    if command_missing("check"):
        return {"missing": True, "seconds": None}
    write_prompts_dir(Path.cwd(), args.n)
    sync = None
    if not command_missing("sync"):
        code, out, secs = run_cli(["prompts", "sync", "--dir", "prompts"])
        sync = {"exit": code, "seconds": secs, "output": tail(out)}
    times, codes, out = [], [], ""
    run_cli(["prompts", "check", "--dir", "prompts"])  # warm-up (page cache, .pyc)
    for _ in range(max(1, args.reps)):
        code, out, secs = run_cli(["prompts", "check", "--dir", "prompts"])
        times.append(secs)
        codes.append(code)
    import statistics

    import keel

    return {
        "missing": False,
        "seconds": statistics.median(times),
        "times": times,
        "exit_codes": codes,
        "output": tail(out),
        "sync": sync,
        "prompts": args.n,
        "registered": len(keel.prompts.list_prompts()),
        "command": " ".join(["keel", "prompts", "check", "--dir", "prompts"]),
    }


def main() -> None:
    args = parse_args(WORKLOADS)
    info = base_info()
    if args.workload == "info":
        t0 = time.perf_counter()
        import keel

        seconds = time.perf_counter() - t0
        emit({**info, "version": keel.__version__, "module": os.path.dirname(keel.__file__), "import_seconds": seconds})
        return
    db = open_workspace(args.dir)
    result = globals()[args.workload](args, db)
    emit({**info, **result})


if __name__ == "__main__":
    main()
