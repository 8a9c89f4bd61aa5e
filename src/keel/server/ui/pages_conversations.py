"""Conversations: the logged records with filters (feedback thumb, prompt version, model,
and any expression of keel's filter language), the figures per prompt version, and one
conversation's messages and feedback. Message text is user content: always escaped."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from keel.errors import InvalidInput, KeelError
from keel.server.auth import Context
from keel.server.ui.registry_views import filter_literal
from keel.server.ui.render import add_nav, render
from keel.server.ui.routing import UIRouter
from keel.server.ui.sessions import Viewer
from keel.services.auth import REGISTRIES

__all__ = ["combined_filter", "message_text", "picker_choices", "router"]

router = UIRouter()
add_nav("Conversations", "/conversations", order=50)

PAGE_SIZES = (50, 100, 500)
THUMBS = ("up", "down")
MAX_CHOICES = 200  # prompt versions / models offered in the pickers


def combined_filter(expression: str, thumb: str, prompt_version: str, model: str) -> str:
    """One filter-language expression from the page's pickers and its free-text filter."""
    parts = []
    if expression.strip():
        parts.append(f"({expression.strip()})")
    if thumb:
        if thumb not in THUMBS:
            raise InvalidInput(f"invalid thumb {thumb!r}", "choose up or down")
        parts.append(f"feedback.thumb = {filter_literal(thumb)}")
    if prompt_version:
        parts.append(f"prompt_version = {filter_literal(prompt_version)}")
    if model:
        parts.append(f"model = {filter_literal(model)}")
    return " and ".join(parts)


def message_text(content: Any) -> str:
    """A message's content as text (structured content, e.g. parts or tool calls, as JSON)."""
    if isinstance(content, str):
        return content
    return json.dumps(content, indent=2, ensure_ascii=False, default=str)


def picker_choices(service: Any) -> tuple[list[str], list[str]]:
    """The prompt versions and models of every record, most frequent first: one grouped
    count over the table (the full per-group stats would also rank latencies)."""
    versions: dict[str, int] = {}
    models: dict[str, int] = {}
    for version, model, count, *_rest in service.raw.aggregate(service.query(None), ["prompt_version"]):
        if version:
            versions[version] = versions.get(version, 0) + int(count)
        if model:
            models[model] = models.get(model, 0) + int(count)
    ranked = [sorted(found, key=lambda k: (-found[k], k))[:MAX_CHOICES] for found in (versions, models)]
    return ranked[0], ranked[1]


def _first_user(messages: list[Any]) -> str:
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


@router.get("/conversations")
def conversations_page(
    request: Request,
    viewer: Viewer,
    context: Context,
    filter: str = "",  # noqa: A002 - the query parameter users see
    thumb: str = "",
    prompt_version: str = "",
    model: str = "",
    size: int = 100,
) -> HTMLResponse:
    """Records, newest first, matching the pickers and the filter; stats by prompt version."""
    viewer.require(REGISTRIES, "reader")
    if size not in PAGE_SIZES:
        raise InvalidInput(f"invalid page size {size}", f"use one of {', '.join(map(str, PAGE_SIZES))}")
    service = context.conversations
    versions, models = picker_choices(service)
    query = combined_filter(filter, thumb, prompt_version, model)
    error = ""
    try:
        records = service.search(query or None, limit=size)
        matched = service.count(query or None)
        stats = service.stats(by="prompt_version", filter=query or None)
    except KeelError as exc:
        error = exc.message + (f" ({exc.hint})" if exc.hint else "")
        records, matched, stats = [], 0, []
    return render(
        request,
        "conversations.html",
        status_code=400 if error else 200,
        title="Conversations",
        records=records,
        previews={r.id: _first_user(r.messages) for r in records},
        matched=matched,
        stats=stats,
        prompt_versions=versions,
        models=models,
        filter=filter,
        thumb=thumb,
        prompt_version=prompt_version,
        model=model,
        size=size,
        sizes=PAGE_SIZES,
        error=error,
    )


@router.get("/conversations/{conversation_id}")
def conversation_page(request: Request, conversation_id: str, viewer: Viewer, context: Context) -> HTMLResponse:
    """One conversation: every stored record with its messages, and the feedback events."""
    viewer.require(REGISTRIES, "reader")
    detail = context.conversations.get(conversation_id)
    return render(
        request,
        "conversation.html",
        title=f"Conversation {detail.conversation_id}",
        detail=detail,
        message_text=message_text,
        metadata={r.id: json.dumps(r.metadata, indent=2, ensure_ascii=False, default=str) for r in detail.records},
    )
