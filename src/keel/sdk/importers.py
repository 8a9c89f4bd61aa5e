"""``keel.import_from``: bring MLflow, W&B and DVC history into keel.

::

    import keel

    keel.import_from.mlflow("sqlite:///mlflow.db")     # or an mlruns folder, or http://mlflow:5000
    keel.import_from.wandb("wandb/")                    # offline run folders
    keel.import_from.dvc()                              # the DVC repository here, with its git history

Each returns an :class:`ImportSummary` (per kind of item: how many were
imported and how many were already there). Imports are idempotent (running
one again imports nothing twice) and resumable (an interrupted one finishes
on the next run). They write to the local store of this process (the
workspace's ``.keel/``, or ``KEEL_URI``), not through a keel server.
See ``docs/import.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from keel.errors import InvalidInput
from keel.sdk.session import get_session
from keel.services.importers.ledger import ImportSummary, Progress

__all__ = ["ImportSummary", "Progress", "dvc", "mlflow", "wandb"]


def _store(root: str | os.PathLike[str] | None = None) -> Any:
    """The local store imports write to (never a keel server: imports read local files)."""
    if root is not None:
        from keel.services.data_config import find_root
        from keel.services.data_versions import open_meta

        return open_meta(find_root(root))
    session = get_session(create=False)
    if session.remote is not None:
        raise InvalidInput(
            "imports write to a local store, and KEEL_URI points at a keel server",
            "run the import where the server's database is reachable (KEEL_URI=postgresql+psycopg://...), "
            "or in a workspace",
        )
    session.writer.flush()
    return session.service.store


def mlflow(uri: str, progress: Progress | None = None) -> ImportSummary:
    """Import experiments, runs (params, metric histories, tags, artifacts, nesting),
    registered models (versions, stages, aliases) and prompts from an MLflow tracking URI:
    an ``mlruns`` folder, ``sqlite:///path/mlflow.db`` or ``http(s)://host:port``.

    Needs the ``mlflow`` package: ``pip install 'keel[import-mlflow]'``.
    """
    from keel.services.importers.mlflow import import_mlflow

    return import_mlflow(_store(), uri, progress)


def wandb(folder: str | os.PathLike[str] = "wandb", progress: Progress | None = None) -> ImportSummary:
    """Import the W&B runs written below ``folder`` (config, history, summary, tables, files).

    Needs the ``wandb`` package: ``pip install 'keel[import-wandb]'``.
    """
    from keel.services.importers.wandb import import_wandb

    return import_wandb(_store(), folder, progress)


def dvc(
    repo: str | os.PathLike[str] | None = None,
    revs: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> ImportSummary:
    """Import the data of the DVC repository ``repo`` (default: the current folder, which
    must be the keel workspace's root) and of every commit (or only ``revs``) into
    ``keel data``: objects, dataset versions and ``PATH.keel`` pointer files."""
    from keel.services.importers.dvc import check_repo, import_dvc

    root = check_repo(repo)
    return import_dvc(_store(root), root, list(revs) if revs else None, progress)
