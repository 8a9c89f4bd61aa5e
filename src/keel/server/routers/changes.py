"""``/changes``: the change feed, how running sdk processes learn that a registry changed.

- ``GET /api/v1/changes``: 200 ``{"counters": {"prompt": 12, "model": 3, "flag": 40,
  "experiment": 2}, "token": "9f2c..."}`` with ``ETag: "<token>"``. A counter grows with
  every change of its kind (an alias or stage moved, a version registered, a flag
  changed, an experiment started or stopped: :mod:`keel.meta.changes`).
- ``?since=TOKEN&wait=S`` (or ``If-None-Match: "TOKEN"``): a long poll. The reply comes
  as soon as the counters differ from ``TOKEN``; after ``S`` seconds (at most
  :data:`MAX_WAIT`) without a change it is ``304 Not Modified`` with no body.

Needs the reader role on the registries (what the caches it refreshes read). The
route is async: a waiting client holds no worker thread, and the counters are read
from the database at most four times a second per server process however many
clients wait (:class:`keel.services.changes.SharedCounters`). The sdk waits
:data:`keel.sdk.live.REMOTE_WAIT` seconds per request, so a graceful stop of the
server waits at most that long for the feed's requests to end.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Annotated

from fastapi import Header, Response
from fastapi.concurrency import run_in_threadpool

from keel.core.auth import REGISTRIES
from keel.errors import InvalidInput
from keel.server.auth import Caller, Context, require
from keel.server.errors import KeelJSONResponse
from keel.server.routers import Router
from keel.services.changes import SharedCounters

__all__ = ["MAX_WAIT", "router"]

router = Router(tags=["meta"])

MAX_WAIT = 20.0  # seconds a long poll may wait
_STEP = 0.25  # seconds between two looks at the counters while waiting


def _feed(context: Context) -> SharedCounters:
    found: SharedCounters | None = context.__dict__.get("_keel_changes")
    if found is None:
        found = context.__dict__.setdefault("_keel_changes", SharedCounters(context.store, _STEP))
    return found


def _etag_value(header: str | None) -> str | None:
    if not header:
        return None
    return header.strip().removeprefix("W/").strip('"') or None


@router.get("/changes", summary="Per-kind change counters of the registries (long poll with since= and wait=)")
async def changes(
    caller: Caller,
    context: Context,
    since: str | None = None,
    wait: float = 0.0,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    require(caller, REGISTRIES, "reader")
    if not math.isfinite(wait) or wait < 0:
        raise InvalidInput(
            f"wait must be a number of seconds >= 0, not {wait!r}", f"e.g. wait=5 (at most {MAX_WAIT:g})"
        )
    known = since or _etag_value(if_none_match)
    if known is not None and len(known) > 64:
        raise InvalidInput("since is not a token this server gave", "send the token of the last reply")
    feed = _feed(context)
    deadline = time.monotonic() + min(wait, MAX_WAIT)
    while True:
        found = feed.fresh()
        value, tag = found if found is not None else await run_in_threadpool(feed.current)
        headers = {"ETag": f'"{tag}"', "Cache-Control": "no-cache"}
        if tag != known:
            return KeelJSONResponse({"counters": value, "token": tag}, headers=headers)
        left = deadline - time.monotonic()
        if left <= 0:
            return Response(status_code=304, headers=headers)
        await asyncio.sleep(min(_STEP, left))
