"""Where a run ran: git commit and dirty flag, host, Python, keel and package versions.

Captured once per process (per working directory for git), so starting a
thousand runs costs two ``git`` calls, not two thousand.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
from typing import Any

from keel._version import __version__
from keel.core.redaction import redact_argv

__all__ = ["TRACKED_PACKAGES", "capture_context", "context_json", "git_state"]

# Libraries whose version changes LLM results; recorded when installed.
TRACKED_PACKAGES = (
    "openai",
    "anthropic",
    "langchain",
    "langchain-core",
    "llama-index",
    "transformers",
    "sentence-transformers",
    "torch",
    "vllm",
    "tiktoken",
    "numpy",
    "pandas",
)


@functools.lru_cache(maxsize=16)
def git_state(cwd: str) -> dict[str, Any]:
    """``{"commit", "dirty", "branch"}`` of the git repository at ``cwd``, or {}."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no")
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    return {"commit": commit, "dirty": bool(status), "branch": branch or ""}


@functools.lru_cache(maxsize=1)
def _static_context() -> dict[str, Any]:
    import socket
    from importlib import metadata  # ~10 ms: only when a run starts, not for every command

    packages = {}
    for name in TRACKED_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "keel": __version__,
        "packages": packages,
        "argv": redact_argv(sys.argv[:8]),  # never a --api-key or a URL's password
    }


def capture_context(cwd: str | None = None) -> dict[str, Any]:
    """The run context: static facts plus the git state of ``cwd``."""
    return json.loads(context_json(os.path.abspath(cwd or os.getcwd())))


@functools.lru_cache(maxsize=16)
def context_json(cwd: str) -> str:
    """:func:`capture_context` as canonical JSON, computed once per folder and process."""
    context = dict(_static_context())
    git = git_state(cwd)
    if git:
        context["git"] = git
    return json.dumps(context, sort_keys=True, default=str)
