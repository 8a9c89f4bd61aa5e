"""Importers: bring MLflow, W&B and DVC history into keel.

Each importer reads a foreign source with that tool's own client or file
format and writes through keel's services. Everything imported is listed in
the import ledger (:mod:`.ledger`), so an import can be run again: it skips
what is there and finishes what an interrupted run left undone.

- :mod:`.mlflow`: an ``mlruns`` folder, a SQLite database or an MLflow server;
- :mod:`.wandb`: offline run folders written by ``wandb``;
- :mod:`.dvc`: a DVC repository's ``.dvc`` files, cache and git history.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.services.importers.ledger import ImportSummary, Ledger, Progress

__all__ = ["ImportSummary", "Ledger", "Progress"]


def __getattr__(name: str) -> Any:
    # Loaded when first asked for: the ledger imports the database layer, and importing a
    # light module of this package (the DVC importer's history hook) must not.
    if name in __all__:
        return getattr(importlib.import_module("keel.services.importers.ledger"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
