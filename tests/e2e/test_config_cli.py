"""``keel config ...`` as a user runs it (the CLI in-process: see ``tests/cli_inprocess.py``;
the hostile files run the ``keel`` script, whose memory is measured)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli_inprocess import keel as run_keel
from cli_inprocess import keel_env, python_in

KEEL = Path(sys.executable).with_name("keel")
SEED = Path(__file__).parents[1] / "fixtures" / "config" / "production.yaml"


def keel(*args, cwd, check=True, env=None):
    out = run_keel(*args, cwd=cwd, env=keel_env(**(env or {})))
    if check and out.returncode != 0:
        raise AssertionError(f"keel {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "config").mkdir()
    shutil.copy(SEED, tmp_path / "config" / "production.yaml")
    (tmp_path / "config" / "base.yaml").write_text("llm:\n  api_key: ${OPENAI_API_KEY}\n")
    (tmp_path / "config" / "staging.yaml").write_text("llm:\n  model: gpt-4o-mini\n  temperature: 0.2\n")
    return tmp_path


def test_show_explain_set_and_secrets(folder):
    env = {"OPENAI_API_KEY": "sk-live-abcdefghijklmnop", "KEEL_CONFIG__llm__timeout": "60"}
    out = keel("config", "show", "--env", "production", cwd=folder, env=env)
    assert out.stdout.startswith("# production: config/base.yaml + config/production.yaml")
    shown = yaml.safe_load(out.stdout)
    assert shown["llm"]["model"] == "gpt-4" and shown["llm"]["api_key"] == "***" and shown["llm"]["timeout"] == 60
    out = keel("config", "show", "--env", "production", "--json", "--set", "llm.temperature=0.2", cwd=folder, env=env)
    data = json.loads(out.stdout)
    assert data["llm"]["temperature"] == 0.2 and data["rag"]["top_k"] == 5
    out = keel("config", "show", "--env", "production", "--explain", "--json", cwd=folder, env=env)
    rows = {r["key"]: r for r in json.loads(out.stdout)}
    assert rows["llm.model"]["source"] == "config/production.yaml:4"
    assert rows["llm.api_key"] == {"key": "llm.api_key", "value": "***", "source": "config/base.yaml:2"}
    assert rows["llm.timeout"]["source"] == "env KEEL_CONFIG__llm__timeout"
    out = keel("config", "show", "--env", "production", "--explain", cwd=folder, env=env)
    assert "config/production.yaml:4" in out.stdout
    for text in (out.stdout, out.stderr):
        assert "sk-live" not in text


def test_bad_input_is_one_error_line(folder):
    out = keel("config", "show", "--env", "qa", cwd=folder, check=False, env={"OPENAI_API_KEY": "x"})
    assert out.returncode == 3 and "available environments: production, staging" in out.stderr
    out = keel("config", "show", "--env", "production", cwd=folder, check=False, env={"OPENAI_API_KEY": ""})
    assert out.returncode == 0  # set but empty is a value
    environ = {k: v for k, v in keel_env().items() if k != "OPENAI_API_KEY"}
    out = run_keel("config", "show", "--env", "production", cwd=folder, env=environ)
    assert out.returncode == 2 and "OPENAI_API_KEY" in out.stderr and "config/base.yaml:2" in out.stderr
    assert "Traceback" not in out.stderr
    (folder / "config" / "bad.yaml").write_text("llm: [1\n")
    out = keel("config", "show", "--env", "bad", cwd=folder, check=False)
    assert out.returncode == 2 and "config/bad.yaml:2: not valid YAML" in out.stderr


def test_diff_and_history(folder):
    env = {"OPENAI_API_KEY": "sk-x"}
    out = keel("config", "diff", "staging", "production", cwd=folder, env=env)
    assert "~ llm.model: gpt-4o-mini -> gpt-4" in out.stdout and "+ rag.top_k: 5" in out.stdout
    changes = json.loads(keel("config", "diff", "staging", "production", "--json", cwd=folder, env=env).stdout)
    assert {"path": "llm.temperature", "old": 0.2, "new": 0.7, "in_old": True, "in_new": True} in changes
    assert "are the same" in keel("config", "diff", "production", "production", cwd=folder, env=env).stdout

    keel("init", cwd=folder)
    import keel as sdk
    from keel.sdk import config

    with python_in(folder, env=keel_env(**env)):
        with sdk.start_run(project="chat") as run:
            digest = config.load(env="production").snapshot_hash
        run_id = run.id
    history = json.loads(keel("config", "history", "--json", cwd=folder).stdout)
    assert history == [
        {
            "hash": digest,
            "env": "production",
            "ref": f"config:production@{digest[:12]}",
            "sources": ["config/base.yaml", "config/production.yaml"],
            "created_at": history[0]["created_at"],
            "runs": [run_id],
        }
    ]
    out = keel("config", "history", cwd=folder)
    assert digest[:12] in out.stdout and run_id[:8] in out.stdout


def _laughs(levels: int) -> str:
    lines = ['a0: &a0 "lol"'] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("text", "message"),
    [
        # a 10-level bomb ran 121 s at 3.7 GB; the others were raw tracebacks or loaded a python tag
        (_laughs(10), "config/hostile.yaml:6: aliases expand the document by more than 100,000 values"),
        ("n: " + "1" * 100_000 + "\n", "config/hostile.yaml:1: an integer of 100,000 digits is too large"),
        ("a: &a [1, *a]\n", "config/hostile.yaml:1: recursive alias *a"),
        ("llm:\n  model: !!python/object/apply:os.system ['echo pwned']\n", "config/hostile.yaml:2: unknown tag"),
    ],
)
def test_hostile_config_files_are_one_error_line(folder, text, message):
    import time

    (folder / "config" / "base.yaml").unlink()
    (folder / "config" / "hostile.yaml").write_text(text)
    # The command runs under a small wrapper that reports its child's peak memory: a child
    # forked straight from pytest starts with pytest's own size (400 MB late in a full run).
    rss_file = folder / "rss.txt"
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[2:]);"
        " open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss));"
        " sys.exit(r.returncode)"
    )
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", wrapper, str(rss_file), str(KEEL), "config", "show", "--env", "hostile"],
        cwd=folder,
        capture_output=True,
        text=True,
        env=keel_env(),
    )
    assert time.perf_counter() - started < 30
    assert out.returncode == 2 and out.stdout == "" and "pwned" not in out.stderr
    assert out.stderr.startswith("error: " + message) and out.stderr.count("\n") == 1, out.stderr
    assert int(rss_file.read_text()) < 400 * 1024  # KiB: the command never grew past 400 MB


def test_show_without_env_names_the_option(folder):
    environ = {k: v for k, v in keel_env().items() if k != "KEEL_ENV"}
    out = run_keel("config", "show", cwd=folder, env=environ)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: which environment? (run keel config show --env production "
        "(environments in config/: production, staging), or set KEEL_ENV)"
    )
