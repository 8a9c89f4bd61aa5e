"""keel: experiment management and version control for LLM applications.

Quick start::

    import keel

    with keel.start_run(project="llm-prompt-optimization", name="prompt_v1.3_gpt4") as run:
        keel.log_params({"prompt_version": "v1.3", "model": "gpt-4", "temperature": 0.7})
        keel.log_metrics({"accuracy": 0.85, "faithfulness": 0.92})

    keel.search_runs("llm-prompt-optimization", filter="metrics.accuracy > 0.8")

Names are loaded on first use, so ``import keel`` (and the ``keel`` command)
starts fast; the database libraries load when a store is first opened.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from keel._version import __version__
from keel.errors import (
    AlreadyExists,
    Conflict,
    FilterSyntaxError,
    Forbidden,
    IntegrityError,
    InvalidInput,
    KeelError,
    NotFound,
    NoWorkspace,
    PromptFilesRejected,
    RateLimited,
    ReplayMiss,
    SchemaTooNew,
    StoreError,
    TooLarge,
    Unauthenticated,
    Unavailable,
    WriteFailed,
)
from keel.sdk import signals as _signals

__all__ = [
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
]

_LAZY = {
    "Client": "keel.sdk.client",
    "Run": "keel.sdk.run",
    "RunList": "keel.sdk.results",
    "RunRecord": "keel.core.entities",
    "EntityRef": "keel.core.entities",
    "Table": "keel.core.table",
    "register_model": "keel.sdk.models",
    "compare": "keel.sdk.compare",
    "evaluate": "keel.sdk.evaluate",
    "gate": "keel.sdk.gate",
    "reproduce": "keel.sdk.reproduce",
    "span": "keel.sdk.traces",
    "trace": "keel.sdk.traces",
}
_MODULES = (
    "ab",
    "config",
    "conversations",
    "data",
    "delivery",
    "flags",
    "kb",
    "lineage",
    "llm",
    "models",
    "prompts",
    "reviews",
    "scorers",
    "traces",
)
_FLUENT = {
    "active_run",
    "finish",
    "flush",
    "init",
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
    "search_runs",
    "set_tag",
    "set_tags",
    "start_run",
}


_MODULE_ALIASES = {"import_from": "keel.sdk.importers"}


def __getattr__(name: str) -> Any:
    if name in _MODULES or name in _MODULE_ALIASES:
        module = importlib.import_module(_MODULE_ALIASES.get(name, f"keel.sdk.{name}"))
    elif name in _FLUENT:
        module = importlib.import_module("keel.sdk.fluent")
    elif name in _LAZY:
        module = importlib.import_module(_LAZY[name])
    else:
        raise AttributeError(f"module 'keel' has no attribute {name!r}")
    value = module if name in _MODULES or name in _MODULE_ALIASES else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from keel.core.entities import EntityRef, RunRecord
    from keel.core.table import Table
    from keel.sdk import (
        ab,
        config,
        conversations,
        data,
        delivery,
        flags,
        kb,
        lineage,
        llm,
        models,
        prompts,
        reviews,
        scorers,
        traces,
    )
    from keel.sdk import importers as import_from
    from keel.sdk.client import Client
    from keel.sdk.compare import compare
    from keel.sdk.evaluate import evaluate
    from keel.sdk.fluent import (
        active_run,
        finish,
        flush,
        init,
        log,
        log_artifact,
        log_artifacts,
        log_html,
        log_input,
        log_metric,
        log_metrics,
        log_output,
        log_param,
        log_params,
        log_table,
        log_text,
        search_runs,
        set_tag,
        set_tags,
        start_run,
    )
    from keel.sdk.gate import gate
    from keel.sdk.models import register_model
    from keel.sdk.reproduce import reproduce
    from keel.sdk.results import RunList
    from keel.sdk.run import Run
    from keel.sdk.traces import span, trace

# A server that handles SIGTERM (uvicorn) imports the app, and keel, after installing its
# handler: route the signal through keel's bounded exit flush (see keel.sdk.signals).
_signals.install(default=False)
