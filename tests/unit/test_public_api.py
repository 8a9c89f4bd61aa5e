"""The public API is a decision: adding or removing a name must change this test."""

import subprocess
import sys

import keel

EXPECTED = {
    "AlreadyExists",
    "Client",
    "Conflict",
    "EntityRef",
    "FilterSyntaxError",
    "Forbidden",
    "IntegrityError",
    "InvalidInput",
    "KeelError",
    "NoWorkspace",
    "NotFound",
    "PromptFilesRejected",
    "RateLimited",
    "ReplayMiss",
    "Run",
    "RunList",
    "RunRecord",
    "SchemaTooNew",
    "StoreError",
    "Table",
    "TooLarge",
    "Unauthenticated",
    "Unavailable",
    "WriteFailed",
    "__version__",
    "ab",
    "active_run",
    "compare",
    "config",
    "conversations",
    "data",
    "delivery",
    "evaluate",
    "finish",
    "flags",
    "flush",
    "gate",
    "import_from",
    "init",
    "kb",
    "lineage",
    "log",
    "log_artifact",
    "log_artifacts",
    "log_html",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_output",
    "log_param",
    "log_params",
    "log_table",
    "log_text",
    "llm",
    "models",
    "prompts",
    "register_model",
    "reproduce",
    "reviews",
    "scorers",
    "search_runs",
    "set_tag",
    "set_tags",
    "span",
    "start_run",
    "trace",
    "traces",
}


def test_all_is_pinned():
    assert set(keel.__all__) == EXPECTED
    assert len(keel.__all__) == len(EXPECTED)


def test_every_public_name_resolves_and_is_documented():
    for name in keel.__all__:
        value = getattr(keel, name)
        if name != "__version__":
            assert (getattr(value, "__doc__", None) or "").strip(), f"keel.{name} has no docstring"


def test_import_keel_does_not_load_the_database_layer():
    code = "import sys, keel; print('sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
