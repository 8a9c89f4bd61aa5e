"""Conversations: append-only logging with late feedback, queries, aggregates, eval export.

- A record (see :mod:`keel.core.conversations`) is validated, redacted and
  JSON-encoded by :meth:`ConversationService.prepare` on the caller's thread,
  then written in batches by :meth:`ConversationService.write_batch` (one
  transaction per batch). The SDK's background writer calls it; this layer
  never swallows errors, the SDK's logging path does.
- Feedback that arrives later updates the latest record of its conversation
  and is kept as an event (:meth:`ConversationService.get` shows them).
- :meth:`ConversationService.search`, :meth:`stats` and :meth:`export` take a
  filter in keel's filter language (``feedback.thumb = 'down' and model =
  'gpt-4'``, ``metadata.environment = 'prod'``) and a time range.

Workspace configuration (``.keel/config.toml``)::

    [conversations]
    redact = "builtin"              # or "package.module:function", or false (the default)

    [conversations.prices]          # USD per 1M tokens, added to the default table
    "my-finetune" = { prompt = 3.0, completion = 12.0 }
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from keel.core.batch import check_batch_id
from keel.core.conversation_stats import DEFAULT_PRICES, GroupStats, normalize_prices, percentile_from_ranks
from keel.core.conversations import (
    FILTER_PREFIXES,
    Conversation,
    ConversationBatch,
    FeedbackEvent,
    check_text,
    dumps,
    normalize_feedback,
    normalize_record,
    parse_time,
    to_row,
)
from keel.core.entities import format_time, now_ms
from keel.core.erasure import ErasureReport
from keel.core.filters import parse_filter
from keel.core.limits import MAX_PAGE_SIZE, MAX_SORT_KEYS
from keel.core.redaction import redact_record, redact_record_secrets, redact_value
from keel.errors import InvalidInput, NotFound, StoreError
from keel.fileio import atomic_write
from keel.meta import erasures
from keel.meta.conversations import Query, RawConversations
from keel.meta.erasures import Found
from keel.services.audit import who as audit_who
from keel.services.contract import (
    operation,
    service,
)
from keel.services.erasure import (
    check_request,
    derived_datasets,
    describe_request,
    refuse_everything,
    unknown_ids,
)
from keel.services.workspace import Store
from keel.services.workspace_config import ConversationSettings, read_workspace_config

__all__ = [
    "Conversation",
    "ConversationDetail",
    "ConversationService",
    "FeedbackEvent",
    "GroupStats",
    "Redactor",
    "load_redactor",
    "write_examples",
]

Redactor = Callable[[dict[str, Any]], "dict[str, Any] | None"]
_PERCENTILES = (50, 95)
_OLD_ROW_WIDTH = 14  # a stored row before total_tokens (keel.core.conversations.to_row)


def load_redactor(spec: Any) -> Redactor | None:
    """A redactor from configuration: ``"builtin"``, ``"module:function"``, a callable, or None/false."""
    if spec is None or spec is False or spec == "" or spec == "none":
        return None
    if spec is True or spec == "builtin":
        return redact_record
    if callable(spec):
        return spec  # type: ignore[no-any-return]
    if isinstance(spec, str) and ":" in spec:
        module, _, name = spec.partition(":")
        try:
            found = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise InvalidInput(f"cannot load the redactor {spec!r}: {exc}", "check [conversations] redact") from exc
        if not callable(found):
            raise InvalidInput(f"the redactor {spec!r} is not a function", "name a function: 'package.module:fn'")
        return found  # type: ignore[no-any-return]
    raise InvalidInput(f"invalid redactor {spec!r}", "use 'builtin', 'package.module:function', a function, or None")


@dataclass(frozen=True)
class ConversationDetail:
    """Every stored record of one conversation (oldest first) and its feedback events."""

    conversation_id: str
    records: list[Conversation]
    feedback: list[FeedbackEvent]

    @property
    def latest(self) -> Conversation:
        """The newest record."""
        return self.records[-1]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "conversation_id": self.conversation_id,
            "records": [r.to_dict() for r in self.records],
            "feedback_events": [e.to_dict() for e in self.feedback],
        }


@service("conversations")
class ConversationService:
    """Conversation logging and queries on one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.raw = RawConversations(store.db)
        config = self._config()
        self.configured_redactor: Redactor | None = load_redactor(config.redact)
        self.prices: dict[str, tuple[float, float]] = {
            **DEFAULT_PRICES,
            **normalize_prices(config.prices),
        }

    def _config(self) -> ConversationSettings:
        root = self.store.root
        if root is None:
            return ConversationSettings()
        return read_workspace_config(root).conversations

    # -- the logging path (caller's thread) --------------------------------------------
    @staticmethod
    def prepare(
        raw: Mapping[str, Any], run_id: str | None = None, redactor: Redactor | None = None
    ) -> tuple[Any, ...] | None:
        """Validate, redact and encode one record; the row to queue, or None if the
        redactor dropped it. Raises InvalidInput for a bad record."""
        record = normalize_record(raw)
        if record["run_id"] is None:
            record["run_id"] = run_id
        if redactor is not None:
            # The redactor may change what it gets: give it copies, never the app's own dicts.
            record["messages"] = [dict(m) for m in record["messages"]]
            redacted = redactor(record)
            if redacted is None:
                return None
            record = redacted
        if isinstance(record, Mapping):
            record = redact_record_secrets(record)  # always: no secret is stored, whatever the redactor
        return to_row(record, now_ms())

    @staticmethod
    def feedback_row(
        conversation_id: Any,
        thumb: Any = None,
        score: Any = None,
        comment: Any = None,
        redactor: Redactor | None = None,
    ) -> tuple[str, int | None, float | None, str | None, int]:
        """Validate one piece of late feedback; the row to queue."""
        if isinstance(conversation_id, int) and not isinstance(conversation_id, bool):
            conversation_id = str(conversation_id)
        cid = check_text(conversation_id, "conversation_id")
        if not cid:
            raise InvalidInput("feedback needs a conversation_id", "pass the id the conversation was logged with")
        value, score_value, comment_value = normalize_feedback({"thumb": thumb, "score": score, "comment": comment})
        if value is None and score_value is None and comment_value is None:
            raise InvalidInput("the feedback is empty", "pass thumb='up'/'down', a score or a comment")
        if comment_value is not None and redactor is not None:
            redacted = redactor(
                {
                    "conversation_id": cid,
                    "messages": [],
                    "metadata": {},
                    "user_feedback": {"thumb": value, "score": score_value, "comment": comment_value},
                }
            )
            if redacted is not None:
                comment_value = (redacted.get("user_feedback") or {}).get("comment", comment_value)
        if comment_value is not None:
            comment_value = redact_value(comment_value)
        return cid, value, score_value, comment_value, now_ms()

    @operation("writer")
    def write_batch(self, batch: ConversationBatch, batch_id: str | None = None) -> None:
        """Durably write a batch of records and feedback (one transaction); ``batch_id`` (made
        by the SDK) makes it idempotent (see :mod:`keel.meta.delivered`)."""
        if batch.conversations and len(batch.conversations[0]) == _OLD_ROW_WIDTH:
            # Rows spooled (or sent) by a keel from before totals were stored: no total, so
            # readers use prompt + completion, as they did.
            batch = ConversationBatch([(*row, None) for row in batch.conversations], batch.feedback)
        self.raw.write_batch(batch, check_batch_id(batch_id))

    def maintain(self) -> None:
        """Background upkeep of the store (SQLite: a passive WAL checkpoint)."""
        self.store.db.checkpoint()

    # -- queries ------------------------------------------------------------------------
    def query(self, filter: str | None = None, since: Any = None, until: Any = None) -> Query:
        """Compile a filter and time range (datetimes, epoch s/ms, ISO text or '7d')."""
        node = parse_filter(filter, FILTER_PREFIXES, "attributes") if filter else None
        return self.raw.compile(
            node,
            None if since is None else parse_time(since),
            None if until is None else parse_time(until),
        )

    @operation("reader")
    def search(
        self, filter: str | None = None, since: Any = None, until: Any = None, limit: int | None = 100
    ) -> list[Conversation]:
        """Matching records, newest first."""
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE
        ):
            raise InvalidInput(f"invalid limit {limit!r}", f"give a whole number in 1..{MAX_PAGE_SIZE:,} (None: all)")
        return self.raw.select(self.query(filter, since, until), limit)

    @operation("reader")
    def count(self, filter: str | None = None, since: Any = None, until: Any = None) -> int:
        """How many records match."""
        return self.raw.count(self.query(filter, since, until))

    @operation("reader")
    def resolve(self, conversation_id: str) -> str:
        """A conversation id from the full id or a unique prefix."""
        if not isinstance(conversation_id, str) or not conversation_id:
            raise InvalidInput(f"invalid conversation id {conversation_id!r}", "give a conversation id")
        records, _ = self.raw.records(conversation_id)
        if records:
            return conversation_id
        found = self.raw.conversation_ids(conversation_id)
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InvalidInput(
                f"conversation id prefix {conversation_id!r} is ambiguous ({found[0]}, {found[1]}, ...)",
                "give more characters",
            )
        raise NotFound(f"no conversation {conversation_id!r}", "list conversations with 'keel conversations list'")

    @operation("reader")
    def get(self, conversation_id: str) -> ConversationDetail:
        """Every record of one conversation and its feedback events (NotFound if none)."""
        full = self.resolve(conversation_id)
        records, events = self.raw.records(full)
        return ConversationDetail(full, records, events)

    @operation("reader")
    def stats(
        self,
        by: str | Sequence[str] = "prompt_version",
        filter: str | None = None,
        since: Any = None,
        until: Any = None,
        prices: Mapping[str, Any] | None = None,
    ) -> list[GroupStats]:
        """Per group: count, thumbs up/down and rate, score, latency avg/p50/p95, tokens, cost.

        ``by``: ``prompt_version`` (default), ``model``, ``run_id``, ``day``,
        ``feedback.thumb``, ``metadata.<key>``, or several of them. ``prices``
        (USD per 1M tokens) are added to the store's table. Groups come largest first.
        """
        groups = [by] if isinstance(by, str) else list(by)
        if not groups:
            raise InvalidInput("stats needs at least one group", "e.g. by='prompt_version'")
        if len(groups) > MAX_SORT_KEYS or not all(isinstance(g, str) for g in groups):
            raise InvalidInput(f"stats groups by 1-{MAX_SORT_KEYS} names, got {by!r}"[:200], "e.g. by='prompt_version'")
        table = {**self.prices, **normalize_prices(prices)}
        query = self.query(filter, since, until)
        found: dict[tuple[Any, ...], GroupStats] = {}
        n = len(groups)
        for row in self.raw.aggregate(query, groups):
            key = tuple(_group_value(g, v) for g, v in zip(groups, row[:n], strict=True))
            stats = found.get(key)
            if stats is None:
                stats = found[key] = GroupStats(dict(zip(groups, key, strict=True)))
            model, count, ups, downs, s_sum, s_count, l_sum, l_count = row[n : n + 8]
            p_tok, c_tok, first, last, total, unsplit = row[n + 8 :]
            stats.add(
                model,
                int(count),
                int(ups or 0),
                int(downs or 0),
                float(s_sum or 0.0),
                int(s_count),
                float(l_sum or 0.0),
                int(l_count),
                int(p_tok or 0),
                int(c_tok or 0),
                int(first),
                int(last),
                table,
                int(total or 0),
                int(unsplit or 0),
            )
        ranks: dict[tuple[Any, ...], tuple[int, dict[int, float]]] = {}
        for row in self.raw.latency_ranks(query, groups, _PERCENTILES):
            key = tuple(_group_value(g, v) for g, v in zip(groups, row[:n], strict=True))
            count, rank, value = int(row[n]), int(row[n + 1]), float(row[n + 2])
            ranks.setdefault(key, (count, {}))[1][rank] = value
        for key, (count, values) in ranks.items():
            stats = found.get(key)
            if stats is not None:
                stats.latency_p50 = percentile_from_ranks(count, 50, values)
                stats.latency_p95 = percentile_from_ranks(count, 95, values)
        return sorted(found.values(), key=lambda s: (-s.count, [str(v) for v in s.group.values()]))

    # -- erasure -----------------------------------------------------------------------
    @operation("writer")
    def delete(
        self,
        ids: list[str] | None = None,
        filter: str | None = None,
        since: Any = None,
        until: Any = None,
        *,
        all: bool = False,  # noqa: A002 - the request's word (--all)
        dry_run: bool = False,
        who: str = "",
        reason: str = "request",
    ) -> ErasureReport:
        """Erase conversations: by ``ids`` (every record of those conversations), or the records
        a ``filter`` and time range match (``"metadata.user_id = 'u-42'"``, ``until='30d'``).

        Their feedback goes with them; one audit row stays (who, when, the filter or the
        number of ids, the counts; never the content), and the database is scrubbed so the
        erased text cannot be read back from its files (see docs/erasure.md). Counts are
        records (a conversation logged in several turns holds several).

        Refused, with nothing deleted: an unknown id (NotFound), a filter or time range that
        matches every record unless ``all`` (no filter at all needs ``all`` too), ids mixed
        with a filter. ``dry_run`` only counts and lists the dataset versions made from the
        matching records (``derived``: not rewritten, versions are immutable).
        """
        listed = check_request("conversations", ids, filter, since, until, reason)
        query: Query | None = None
        if listed is not None:
            missing = self.raw.missing_ids(listed)
            if missing:
                raise unknown_ids("conversations", missing)
        else:
            if filter is None and since is None and until is None and not all:
                raise InvalidInput(
                    "no conversations named: give ids, a filter or a time range; nothing was deleted",
                    "pass all=True (--all) to erase every conversation",
                )
            query = self.query(filter, since, until)

        def decide(found: Found) -> list[dict[str, str]]:
            if listed is None:
                refuse_everything("conversation", found.matched, found.total, all)
            return derived_datasets(self.store, found.earliest, found.ids, _example_conversation)

        if dry_run:
            if query is None:
                matched, earliest = self.raw.ids_scope(listed or ())
                found = Found(matched, matched, earliest, lambda: iter(listed or ()))
            else:
                matched, total, earliest = self.raw.erasure_scope(query)
                found = Found(matched, total, earliest, functools.partial(self.raw.matching_ids, query))
            return ErasureReport("conversations", matched, 0, dry_run=True, derived=decide(found))
        text = describe_request(listed, filter, since, until)

        def audit(conn: Any, matched: int, deleted: int) -> int:
            return erasures.record(
                conn,
                kind="conversations",
                actor=audit_who(who),
                filter=text,
                ids=len(listed or ()),
                matched=matched,
                deleted=deleted,
                reason=reason,
            )

        deleted, audit_id, derived = self.raw.erase(decide, audit, query=query, ids=listed)
        self.store.db.scrub()
        return ErasureReport("conversations", deleted, deleted, derived=derived, audit_id=audit_id)

    def export(
        self,
        path: str | os.PathLike[str],
        filter: str | None = None,
        since: Any = None,
        until: Any = None,
        limit: int | None = None,
        all_records: bool = False,
    ) -> int:
        """Write matching conversations as an eval dataset (JSON Lines); returns the line count.

        One line per conversation (its newest matching record) unless
        ``all_records``: ``{"conversation_id", "input": [messages before the
        final answer], "output": final assistant content, "feedback": {...},
        "metadata": {..., "model", "prompt_version", "timestamp", "run_id"}}``.
        The file is written atomically (a temporary file, then a rename).
        """
        target = Path(path)
        if target.is_dir():
            raise InvalidInput(f"{target} is a folder", "give a file name, e.g. dataset.jsonl")
        if not target.parent.is_dir():
            raise NotFound(f"folder {target.parent} does not exist", "create it first")
        return write_examples(target, self.iter_examples(filter, since, until, limit, all_records))

    @operation("reader")
    def examples(
        self,
        filter: str | None = None,
        since: Any = None,
        until: Any = None,
        limit: int | None = None,
        all_records: bool = False,
    ) -> list[dict[str, Any]]:
        """What :meth:`export` writes, as a list (a remote client writes the file itself)."""
        return list(self.iter_examples(filter, since, until, limit, all_records))

    def iter_examples(
        self,
        filter: str | None = None,
        since: Any = None,
        until: Any = None,
        limit: int | None = None,
        all_records: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Matching conversations as eval examples (see :meth:`export`), newest record per
        conversation unless ``all_records``."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidInput(f"invalid limit {limit!r}", "give a whole number >= 1")
        query = self.query(filter, since, until)
        written = 0
        seen: set[str] = set()
        for record in self.raw.iterate(query):
            if not all_records:
                if record.conversation_id in seen:
                    continue
                seen.add(record.conversation_id)
            yield record.to_example()
            written += 1
            if limit is not None and written >= limit:
                return


def write_examples(target: Path, examples: Iterable[Mapping[str, Any]]) -> int:
    """Write ``examples`` as JSON Lines to ``target`` atomically (:func:`keel.fileio.atomic_write`:
    a temporary file of its own, then a rename, so two exports to one file never mix); the line count."""

    def write(out: TextIO) -> int:
        written = 0
        for example in examples:
            out.write(dumps(example) + "\n")
            written += 1
        return written

    try:
        return atomic_write(target, write, text=True)
    except OSError as exc:
        raise StoreError(
            f"cannot write {target}: {exc.strerror or exc}", "check the folder and its permissions"
        ) from exc


def _group_value(group: str, value: Any) -> Any:
    if group == "day" and value is not None:
        return format_time(int(value) * 86_400_000)[:10]
    if group == "feedback.thumb":
        return None if value is None else ("up" if int(value) > 0 else "down")
    return value


def _example_conversation(line: Any) -> Any:
    """The conversation id an exported example carries (``keel conversations export``)."""
    return line.get("conversation_id") if isinstance(line, dict) else None
