"""Run the ``keel`` command in this process, as the installed script would run it.

``keel ARGS`` in a subprocess costs about a second (a fresh interpreter importing
keel); most CLI tests make dozens of calls, so they call the script's own entry point,
:func:`keel.cli.main.main`, here instead. :func:`keel` mirrors ``subprocess.run(
[keel, *ARGS], cwd=..., env=..., capture_output=True, text=True)``:

- the current folder is ``cwd`` and ``os.environ`` is ``env`` (by default this
  process's environment without ``KEEL_URI``/``KEEL_OBJECTS``) for the call only;
- ``sys.argv`` is the script's; stdout and stderr are captured (not terminals, as
  when piped); stdin holds ``input`` (empty by default);
- warnings on loggers reach stderr as Python's last-resort handler prints them in a
  process that configured no logging (pytest's own log capture would take them);
- every session is finished and forgotten after the call (``session.reset``), as
  the process's exit would: rows are flushed and stores closed;
- an exception that escapes ``main`` is exit 1 with its traceback on stderr.

:func:`python_in` does the same for a script's worth of Python API calls (``python -c``
in a folder): the folder is current, the environment is the script's, and the sessions
are finished afterwards.

``tests/e2e/test_cli.py`` keeps the real ``keel`` script in a subprocess for what only
a process shows (start-up time, the exit code reaching the shell).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Result", "keel", "keel_env", "python_in"]


@dataclass
class Result:
    """What ``subprocess.run`` would give: the exit code and the captured text."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


class _Pipe(io.StringIO):
    """A captured stream: not a terminal, with the encoding a pipe has."""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def isatty(self) -> bool:
        return False


def keel_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``KEEL_URI``/``KEEL_OBJECTS``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("KEEL_URI", "KEEL_OBJECTS")}
    env.update(extra)
    return env


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def keel(
    *args: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    input: str = "",
) -> Result:
    """``keel ARGS`` run in ``cwd`` (default: the current folder) with ``env``, reading
    ``input`` on stdin, in this process."""
    from keel.cli.main import main
    from keel.sdk import session

    argv = [str(a) for a in args]
    out, err = _Pipe(), _Pipe()
    last_resort = logging.StreamHandler(err)
    last_resort.setLevel(logging.WARNING)
    root = logging.getLogger()
    before = Path.cwd()
    with _environment(keel_env() if env is None else env), contextlib.ExitStack() as stack:
        os.chdir(before if cwd is None else cwd)
        stack.callback(os.chdir, before)
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        saved_stdin, sys.stdin = sys.stdin, io.StringIO(input)
        stack.callback(setattr, sys, "stdin", saved_stdin)
        saved_argv, sys.argv = sys.argv, [str(Path(sys.executable).with_name("keel")), *argv]
        stack.callback(setattr, sys, "argv", saved_argv)  # usage lines name 'keel'; runs record this argv
        root.addHandler(last_resort)
        stack.callback(root.removeHandler, last_resort)
        try:
            try:
                code = main(argv)
            finally:
                session.reset()  # what the process's exit does: flush, close, forget
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:
            err.write(traceback.format_exc())
            code = 1
    return Result(argv, code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def python_in(folder: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Iterator[None]:
    """Use the Python API as a script run in ``folder`` would: ``folder`` is current,
    ``os.environ`` is ``env`` (default: :func:`keel_env`), and every session is finished
    (rows flushed, stores closed) on the way out, as at the script's exit."""
    from keel.sdk import session

    before = Path.cwd()
    with _environment(keel_env() if env is None else env):
        os.chdir(folder)
        try:
            yield
        finally:
            try:
                session.reset()
            finally:
                os.chdir(before)
