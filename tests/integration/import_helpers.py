"""Shared by the importer tests: a new keel workspace per test, without migrating a database each time."""

from __future__ import annotations

import shutil
from pathlib import Path

_TEMPLATES: dict[str, Path] = {}


def new_workspace(folder: Path, template_root: Path) -> Path:
    """Make ``folder`` a keel workspace: a copy of one created (and migrated) once per
    ``template_root``, since migrating a new SQLite database costs seconds on a busy machine."""
    from keel.sdk.workspace import init_workspace

    key = str(template_root)
    template = _TEMPLATES.get(key)
    if template is None:
        template = template_root / "workspace-template"
        shutil.rmtree(template, ignore_errors=True)  # what a failed attempt left
        template.mkdir(parents=True)
        init_workspace(template)
        _TEMPLATES[key] = template
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template / ".keel", folder / ".keel")
    return folder
