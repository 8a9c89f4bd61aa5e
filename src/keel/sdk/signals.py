"""SIGTERM ends a process through keel's exit flush, whoever else handles it.

A script that installs no SIGTERM handler gets one that unwinds the main
thread (``SystemExit(128 + 15)``), so ``with`` blocks end their runs as killed
and ``atexit`` flushes every writer (see :mod:`keel.sdk.session`).

A server installs its own handler (uvicorn: stop accepting, finish the
requests in flight), and after its graceful stop uvicorn restores the handler
it found, usually the default one, and raises the signal again: the process
then dies at once, and Python's exit handlers (keel's bounded flush among them)
never run; what its workers had queued was lost. So when SIGTERM already has a
Python handler, keel wraps it: the wrapper notes the signal, *blocks* SIGTERM
in the main thread and calls the server's handler. The server stops as before;
the signal it raises again stays pending, the interpreter exits normally,
keel's exit handler flushes (bounded by ``KEEL_FLUSH_TIMEOUT``) and ends the
process with status 128 + 15. A second SIGTERM sent from outside still reaches
the other threads (and SIGKILL always works).

:func:`install` runs when ``keel`` is imported (a server imports the app, and
with it keel, after installing its handler) and when a session opens; only in
the main thread, the only one that may change signal handlers.
"""

from __future__ import annotations

import atexit
import signal
import threading
from typing import Any

__all__ = ["blocked", "install", "terminating"]

terminating: list[int] = []  # signals that are ending this process
_blocked: list[int] = []


def install(default: bool = True) -> None:
    """Route SIGTERM through keel's exit flush (see the module doc). ``default``: also when no
    handler is installed (a session opens); without it only a server's handler is wrapped."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        current = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):  # pragma: no cover - no signals on this platform
        return
    if getattr(current, "_keel", False) or current is signal.SIG_IGN:
        return
    try:
        if current in (signal.SIG_DFL, None):
            if default:
                signal.signal(signal.SIGTERM, _unwind)
        elif callable(current):
            signal.signal(signal.SIGTERM, _wrap(current))
            _register_release()
    except (ValueError, OSError):  # pragma: no cover - e.g. an embedded interpreter
        pass


def blocked() -> bool:
    """Whether a server's SIGTERM was held back for keel's exit handler."""
    return bool(_blocked)


def _unwind(signum: int, _frame: Any) -> None:
    # Unwind the main thread (with-blocks end their runs as killed); atexit then
    # finishes the rest and flushes every writer.
    terminating.append(signum)
    signal.signal(signum, signal.SIG_DFL)
    raise SystemExit(128 + signum)


_unwind._keel = True  # type: ignore[attr-defined]


_released: list[bool] = []


def _register_release() -> None:
    """At exit, after keel's exit handler (registered later, so it runs earlier): a SIGTERM held
    back and still pending ends the process as it would have (a process with no keel session)."""
    if not _released:
        _released.append(True)
        atexit.register(_release)


def _release() -> None:
    if _blocked:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _wrap(previous: Any) -> Any:
    def on_sigterm(signum: int, frame: Any) -> None:
        terminating.append(signum)
        if not _blocked:
            try:
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
                _blocked.append(signum)
            except (ValueError, OSError):  # pragma: no cover
                pass
        previous(signum, frame)

    on_sigterm._keel = True  # type: ignore[attr-defined]
    return on_sigterm
