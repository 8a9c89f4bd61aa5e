"""The commands people type most start like native tools (issue 20): they import what they
use and nothing else. Asserted on the modules a fresh ``keel`` process has loaded when the
command returns, never on milliseconds (``bench/cli.py`` measures those)."""

import json
import subprocess
import sys

import pytest

from cli_inprocess import keel, keel_env, python_in
from keel.cli.main import COMMANDS

# The entry point of the `keel` script, then the loaded modules, written to a file.
PROBE = (
    "import json, sys\n"
    "from keel.cli.main import main\n"
    "code = main(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
)
# Never needed to list, show or check: the server's client, templates, YAML, embeddings,
# the migration tool, the async machinery, package metadata.
NEVER = {"httpx", "anyio", "jinja2", "yaml", "numpy", "alembic", "asyncio", "importlib.metadata", "keel.server"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A workspace with two runs that used a prompt, and a tracked data folder."""
    folder = tmp_path_factory.mktemp("startup")
    assert keel("init", cwd=folder).returncode == 0
    (folder / "p.txt").write_text("Answer {{ question }}")
    assert keel("prompts", "register", "chat", "-f", "p.txt", "-m", "first", cwd=folder).returncode == 0
    (folder / "data").mkdir()
    (folder / "data" / "a.csv").write_text("x,y\n1,2\n")
    assert keel("data", "add", "data", cwd=folder).returncode == 0
    import keel as sdk

    with python_in(folder):
        for i in range(2):
            with sdk.start_run(project="p", name=f"r{i}"):
                sdk.prompts.load("chat")
                sdk.log_metrics({"accuracy": 0.5 + i / 10})
    return folder


def loaded(folder, *args):
    """The modules of a ``keel ARGS`` process when the command returned (exit 0)."""
    out_file = folder / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(out_file), *args],
        cwd=folder,
        env=keel_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out_file.read_text())
    assert result["code"] == 0, proc.stderr
    return set(result["modules"])


def present(modules, names):
    """Which of ``names`` (packages: any of their submodules counts) are in ``modules``."""
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in modules))


def command_modules(but=()):
    return {module for name, (module, _attr, _help) in COMMANDS.items() if module not in but}


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("prompts", "--help")])
def test_help_and_version_import_no_command_and_no_store(workspace, args):
    """A group's --help imports that group's module only."""
    modules = loaded(workspace, *args)
    but = {"keel.cli.prompts"} if args[0] == "prompts" else set()
    assert present(modules, command_modules(but)) == []
    heavy = NEVER | {"keel.sdk.session", "keel.services", "keel.meta", "keel.objects", "rich", "sqlite3", "sqlalchemy"}
    assert present(modules, heavy) == []


def test_runs_list_imports_runs_and_what_it_shows(workspace):
    modules = loaded(workspace, "runs", "list")
    assert "keel.cli.runs" in modules
    assert present(modules, command_modules(but={"keel.cli.runs"})) == []
    assert present(modules, NEVER | {"keel.sdk.prompts", "keel.sdk.data", "keel.sdk.traces"}) == []


def test_runs_list_and_prompts_show_do_not_import_sqlalchemy(workspace):
    """The read path runs on the DBAPI drivers; SQLAlchemy is for Alembic's migrations only."""
    assert present(loaded(workspace, "runs", "list"), {"sqlalchemy"}) == []
    assert present(loaded(workspace, "prompts", "show", "chat"), {"sqlalchemy"}) == []


def test_data_status_imports_the_data_path_only(workspace):
    modules = loaded(workspace, "data", "status")
    assert present(modules, command_modules(but={"keel.cli.data"})) == []
    assert present(modules, NEVER | {"sqlalchemy", "rich", "keel.sdk.session", "keel.sdk.prompts"}) == []


def test_prompts_show_does_not_compile_templates(workspace):
    """The registry's versions are read as stored: no Jinja2, no YAML, no prompt cache, no tracing."""
    modules = loaded(workspace, "prompts", "show", "chat")
    assert present(modules, command_modules(but={"keel.cli.prompts"})) == []
    unneeded = {"keel.core.templates", "keel.services.prompt_files", "keel.sdk.prompts", "keel.sdk.traces"}
    assert present(modules, NEVER | unneeded) == []
