"""The run object every API style logs through.

``Run`` validates on the calling thread (bad keys, non-numeric metrics,
conflicting params raise at once) and queues rows on the store's
:class:`~keel.sdk.writer.BatchWriter`; logging never waits on storage.
``finish()`` and ``flush()`` wait for delivery, at most ``KEEL_FLUSH_TIMEOUT``
seconds (default 5): when the store or server is away longer, they log one
warning naming the spool, return, and the rows (the run's end included) are
delivered from the spool later; the run shows as finished once its end is.
Rows the store refused (a permanent error: the server refused them, a row is
invalid) are not silent: ``flush()``, ``finish()`` and the end of the ``with``
block raise :class:`~keel.errors.WriteFailed` for this run's own lost rows.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from keel.core.batch import MAX_ERROR_LENGTH, MAX_LINEAGE_ROLE_LENGTH, check_ref, check_row
from keel.core.checks import INT64_MAX, INT64_MIN, check_int64, clip_text
from keel.core.entities import RUN_STATUSES, EntityRef, RunRecord, now_ms
from keel.core.names import check_key
from keel.core.redaction import redact_tag
from keel.core.table import Table
from keel.core.values import decode_param, encode_param, flatten, metric_value
from keel.errors import Conflict, InvalidInput, NotFound

if TYPE_CHECKING:
    from keel.sdk.session import Session

__all__ = ["Run"]

log = logging.getLogger("keel")

_TEXT_SUFFIXES = {"text": ".txt", "html": ".html"}


class Run:
    """A live run: log params, metrics, tags, artifacts, tables, text and lineage.

    Use it as a context manager; leaving the block finishes the run (``failed``
    with the error recorded if an exception escaped, ``killed`` on Ctrl-C)::

        with keel.start_run(project="chat", name="prompt-v2") as run:
            run.log_params({"model": "gpt-4o", "temperature": 0.2})
            run.log_metric("accuracy", 0.91)
    """

    def __init__(
        self, session: Session, record: RunRecord, stored_params: Mapping[str, tuple[str, str]] | None = None
    ) -> None:
        self._session = session
        self._writer = session.writer
        self.id: str = record.run_id
        self.name: str = record.name
        self.project: str = record.project
        self.parent_id: str | None = record.parent_id
        self._params: dict[str, tuple[str, str]] = dict(stored_params or {})
        self._keys: set[str] = set()
        self._step = 0
        self._used: set[tuple[EntityRef, str]] = set()
        self._lock = threading.Lock()
        self.status = "running"

    def __repr__(self) -> str:
        return f"<Run {self.id[:8]} {self.name!r} project={self.project!r} {self.status}>"

    # -- params ---------------------------------------------------------------
    def log_param(self, key: str, value: Any, overwrite: bool = False) -> None:
        """Log one param (any JSON value). Changing a logged value raises Conflict."""
        self.log_params({key: value}, overwrite=overwrite)

    def log_params(self, params: Mapping[str, Any], overwrite: bool = False) -> None:
        """Log params; nested dicts are flattened with dots (``rag.top_k``)."""
        if not isinstance(params, Mapping):
            raise InvalidInput("log_params takes a dict", "call log_params({'name': value})")
        rows = []
        with self._lock:
            for key, value in flatten(params):
                vtype, text = encode_param(key, value)
                old = self._params.get(key)
                if old is not None and old != (vtype, text) and not overwrite:
                    raise Conflict(
                        f"param {key!r} of run {self.id[:8]} is {decode_param(*old)!r}; "
                        f"cannot change it to {decode_param(vtype, text)!r}",
                        "params are fixed once logged: log a new key, or pass overwrite=True",
                    )
                rows.append((self.id, key, vtype, text, overwrite))
            for row in rows:
                self._params[row[1]] = (row[2], row[3])
        for row in rows:
            self._writer.add("p", row)

    # -- metrics --------------------------------------------------------------
    def log_metric(self, key: str, value: float, step: int | None = None, timestamp: int | None = None) -> None:
        """Log one metric value (float; NaN and +/-inf are kept). Costs microseconds."""
        if key not in self._keys:
            check_key(key, "metric key")
            self._keys.add(key)
        if type(value) is not float:
            value = metric_value(key, value)
        if step is None:
            step = 0
        elif type(step) is not int or not INT64_MIN <= step <= INT64_MAX:
            step = _check_step(step)
        if not timestamp:
            timestamp = now_ms()
        elif type(timestamp) is not int or not INT64_MIN <= timestamp <= INT64_MAX:
            timestamp = _check_step(timestamp, "timestamp")
        self._writer.add_metric((self.id, key, value, step, timestamp))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log several metrics at one step (nested dicts are flattened)."""
        if not isinstance(metrics, Mapping):
            raise InvalidInput("log_metrics takes a dict", "call log_metrics({'accuracy': 0.9})")
        ts = now_ms()
        for key, value in flatten(metrics):
            self.log_metric(key, value, step, ts)

    def log(self, values: Mapping[str, Any], step: int | None = None) -> None:
        """W&B style: numbers become metrics, anything else params.

        Without ``step`` each call is the next step of this run (0, 1, 2...).
        """
        if not isinstance(values, Mapping):
            raise InvalidInput("log takes a dict", "call log({'accuracy': 0.9, 'model': 'gpt-4'})")
        flat = dict(flatten(values))
        numbers = {k: v for k, v in flat.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        others = {k: v for k, v in flat.items() if k not in numbers}
        if step is None:
            step, self._step = self._step, self._step + 1
        if others:
            self.log_params(others)
        if numbers:
            ts = now_ms()
            for key, value in numbers.items():
                self.log_metric(key, value, step, ts)

    # -- tags -----------------------------------------------------------------
    def set_tag(self, key: str, value: Any) -> None:
        """Set a tag (a mutable string label); setting it again replaces it."""
        row = (self.id, check_key(key, "tag key"), redact_tag(key, str(value)))
        check_row("tags", row)
        self._writer.add("t", row)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags."""
        for key, value in tags.items():
            self.set_tag(key, value)

    # -- content ---------------------------------------------------------------
    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> str:
        """Store a file, or a folder under its own name, as output of this run; returns the
        oid of the file (of a folder's first file). Identical content is stored once.

        ``log_artifact("model")`` stores ``model/...`` (as ``cp -r`` and MLflow do), so
        ``runs:/<run id>/model`` names it; ``artifact_path="checkpoints"`` stores
        ``checkpoints/model/...``. A file lands as ``<artifact_path>/<its name>``. Links
        inside a folder are followed only within it (see ``keel.log_artifacts``).
        """
        return self._log_items(self._session.service.collect_artifacts(path, artifact_path, named=True))

    def log_artifacts(self, directory: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Store every file under ``directory``, its paths kept relative to it, at the
        artifact root or under ``artifact_path`` (MLflow's ``log_artifacts``).

        A symbolic link inside ``directory`` is stored as what it points to when that is
        inside ``directory``; a link out of it (or dangling, or looping) raises
        InvalidInput naming it, and nothing is stored.
        """
        if not Path(directory).is_dir():
            raise InvalidInput(f"{directory} is not a directory", "use log_artifact for a single file")
        self._log_items(self._session.service.collect_artifacts(directory, artifact_path))

    def _log_items(self, items: list[tuple[str, str, int]]) -> str:
        """Queue the rows (and output edges) of stored artifacts; the first one's oid."""
        now = now_ms()
        rows = [(self.id, target, oid, size, "file", now) for target, oid, size in items]
        for row in rows:  # all checked before any is queued
            check_row("artifacts", row)
        for row in rows:
            self._writer.add("a", row)
            self._writer.add("l", (self.id, "output", "artifact", row[2], "", row[1][:MAX_LINEAGE_ROLE_LENGTH], now))
        return items[0][1] if items else ""

    def _log_bytes(self, path: str, data: bytes, kind: str) -> str:
        oid = self._session.service.store_bytes(data)
        now = now_ms()
        self._writer.add("a", (self.id, path, oid, len(data), kind, now))
        self._writer.add("l", (self.id, "output", "artifact", oid, "", path[:MAX_LINEAGE_ROLE_LENGTH], now))
        return oid

    def log_table(
        self,
        name: str,
        columns: Sequence[str] | None = None,
        rows: Sequence[Sequence[Any] | Mapping[str, Any]] = (),
    ) -> Table:
        """Store a table (rows as lists with ``columns``, or as dicts) as one object."""
        from keel.services.tracking import table_path

        table = Table.build(columns, rows)
        self._log_bytes(table_path(name), table.to_bytes(), "table")
        return table

    def log_text(self, name: str, text: str) -> str:
        """Store a text value (e.g. the system prompt a run used) as ``name[.txt]``."""
        return self._log_value(name, text, "text")

    def log_html(self, name: str, html: str) -> str:
        """Store an HTML document as ``name[.html]``."""
        return self._log_value(name, html, "html")

    def _log_value(self, name: str, text: str, kind: str) -> str:
        if not isinstance(text, str):
            raise InvalidInput(f"log_{kind} takes a string, got {type(text).__name__}")
        path = text_path(name, kind)
        self._log_bytes(path, text.encode("utf-8"), kind)
        return path

    # -- lineage ----------------------------------------------------------------
    def log_input(self, entity: str | EntityRef, role: str = "", ref: str = "") -> None:
        """Record that this run used ``entity`` (``kind:id[@version]``).

        ``ref`` is the alias the caller resolved to reach that version (``production`` for
        ``chat@production`` -> 1.3.0; '' when the version was named), so the runs that used
        ``production`` at the time stay one query away after the alias moves
        (:func:`keel.lineage.runs_using`). It is an alias name (letters, digits, ``_``, ``.``,
        ``-``, at most 100 characters, starting with a letter) or ``latest``.
        """
        entity_ref = EntityRef.parse(entity)
        if ref:
            check_ref(ref)  # its own message and hint, before the row's generic one
        row: tuple[str | int, ...] = (
            self.id,
            "input",
            entity_ref.kind,
            entity_ref.id,
            entity_ref.version,
            role,
            now_ms(),
        )
        if ref:  # without one, the 7-field row a server from before the ref also takes
            row += (ref,)
        check_row("lineage", row)
        self._writer.add("l", row)

    def use(self, entity: str | EntityRef, role: str = "", ref: str = "") -> None:
        """Record an input once per run (cheap to call on every use, e.g. every prompt load);
        ``ref``: the alias resolved to reach it, as for :meth:`log_input`. The first use of a
        version in a role is the one kept (with its ref)."""
        entity = EntityRef.parse(entity)
        key = (entity, role)
        if key not in self._used:
            self.log_input(entity, role, ref)
            self._used.add(key)

    def use_dataset(self, path: str | os.PathLike[str], role: str = "", check: bool = True) -> EntityRef:
        """Record that this run used the tracked data at ``path`` (its pointer file's version),
        as input ``dataset:<path>@<oid>``; returns that reference.

        With ``check`` (the default) the data must match its pointer file, so the
        recorded version is the data the run really reads: modified data raises
        Conflict (run ``keel data add PATH`` first), missing data NotFound.
        """
        from keel.services.data import open_repo
        from keel.services.data_maint import status
        from keel.services.importers import dvc_hook  # noqa: F401 - data tracked by pre-import DVC files

        with open_repo() as repo:
            (tracked,) = repo.select([path])
            if check:
                (state,) = status(repo, [tracked.pointer_path])
                if state.state == "missing":
                    raise NotFound(f"{tracked.data_path} is missing", "restore it: keel data checkout")
                if state.state != "ok":
                    raise Conflict(
                        f"{tracked.data_path} differs from its pointer file ({tracked.pointer_path})",
                        f"record this version first: keel data add {tracked.data_path}",
                    )
            pointer = tracked.pointer
            self._session.datasets.register(
                [(tracked.data_path, pointer.oid, pointer.kind, pointer.size, pointer.files, "")]
            )
        ref = EntityRef("dataset", tracked.data_path, pointer.oid)
        self.use(ref, role)
        return ref

    def log_output(self, entity: str | EntityRef, role: str = "") -> None:
        """Record that this run produced ``entity``."""
        ref = EntityRef.parse(entity)
        row = (self.id, "output", ref.kind, ref.id, ref.version, role, now_ms())
        check_row("lineage", row)
        self._writer.add("l", row)

    # -- reading back -------------------------------------------------------------
    @property
    def info(self) -> RunRecord:
        """The run as stored now (flushes pending rows first)."""
        self._writer.flush()
        return self._session.service.get_run(self.id)

    def table(self, name: str) -> Table:
        """A table logged by this run."""
        self._writer.flush()
        return self._session.service.read_table(self.id, name)

    def text(self, name: str, kind: str = "text") -> str:
        """A text value logged by this run."""
        self._writer.flush()
        return self._session.service.read_artifact(self.id, text_path(name, kind)).decode("utf-8")

    # -- lifecycle ---------------------------------------------------------------
    def flush(self) -> bool:
        """Wait until everything logged so far is delivered, at most ``KEEL_FLUSH_TIMEOUT``
        seconds; True when it is, False when some of it waits in the spool (a warning says
        so; it is delivered later, see ``docs/delivery.md``).

        Raises WriteFailed if some of this run's rows could not be written (the server
        refused them...): how many, and why. Each loss is raised once.
        """
        delivered = self._writer.flush()
        if not delivered:
            self._warn_spooled("flushed")
        self._raise_lost()
        return delivered

    def finish(self, status: str = "finished", error: str | None = None) -> None:
        """End the run with ``status`` and wait for its rows to be delivered (at most
        ``KEEL_FLUSH_TIMEOUT`` seconds: past it, one warning says they wait in the spool,
        and the run shows ``status`` once the spool delivers its end). Idempotent.

        Raises WriteFailed (after ending the run) if some of its rows could not be written.
        """
        self._end(status, error)
        self._raise_lost()

    def _end(self, status: str, error: str | None = None, wait: bool = True) -> bool:
        """End the run and (with ``wait``) flush, without raising a write failure (it stays for
        the exit report); False if it had ended already."""
        if status not in RUN_STATUSES or status == "running":
            raise InvalidInput(f"invalid final status {status!r}", "use finished, failed or killed")
        with self._lock:
            if self.status != "running":
                return False
            self.status = status
        if error is not None:
            error = clip_text(str(error), MAX_ERROR_LENGTH)
        recordings = self._session._llm_writer
        if wait and recordings is not None:  # its recorded LLM calls are readable once it has ended
            recordings.flush()
        self._writer.add("e", (self.id, status, now_ms(), error))
        if wait and not self._writer.flush():
            self._warn_spooled("ended")
        self._session.forget(self)
        return True

    def _warn_spooled(self, what: str) -> None:
        writer = self._writer
        error = writer.last_error
        log.warning(
            "keel: run %s %s, but %s logged rows wait for the store%s; they are in the spool (%s) and "
            "will be delivered in the background, by the next keel process here or by `keel sync`",
            self.id[:8],
            f"{what} ({self.name})" if self.name else what,
            f"{writer.pending:,}",
            f" ({error})" if error is not None else "",
            self._session.spool_dir.parent,
        )

    def _raise_lost(self) -> None:
        loss = self._writer.take_loss(self.id)
        if loss is not None:
            raise loss.failure(self.id, self.name)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # With an exception on its way out, a write failure does not replace it: the
        # lost rows are reported at exit (one line on stderr, a non-zero status). On the
        # way out of the process (Ctrl-C, SystemExit, a signal) the end is queued and the
        # exit flush waits for everything at once (one deadline: see keel.sdk.session).
        if exc_type is None:
            self.finish("finished")  # raises WriteFailed if rows were lost
        elif issubclass(exc_type, KeyboardInterrupt):
            self._end("killed", "KeyboardInterrupt", wait=False)
        elif issubclass(exc_type, SystemExit):
            from keel.sdk.session import terminating

            code = getattr(exc, "code", 0)
            if terminating:
                self._end("killed", f"signal {terminating[0]}", wait=False)
            elif code in (0, None):
                self._end("finished", wait=False)
            else:
                self._end("failed", f"SystemExit: {code}", wait=False)
        else:
            self._end("failed", f"{exc_type.__name__}: {exc}")


def text_path(name: str, kind: str = "text") -> str:
    """The artifact path of a text/html value: ``name`` plus a suffix if it has none."""
    check_key(name, f"{kind} name")
    return name if Path(name).suffix else name + _TEXT_SUFFIXES.get(kind, ".txt")


def _check_step(step: Any, what: str = "step") -> int:
    """``step`` (or a timestamp) as an int64; an integral float or numpy integer is converted."""
    try:
        if isinstance(step, bool) or int(step) != step:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"invalid {what} {step!r}", f"a {what} is an integer") from None
    return check_int64(int(step), what)
