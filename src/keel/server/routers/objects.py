"""``/objects``: the server's content-addressed objects, so a keel server is a data remote.

- ``POST /objects/missing`` ``{"oids": [...]}`` → ``{"missing": [...]}``: one batched
  existence check (at most :data:`MAX_BATCH` oids).
- ``PUT /objects/{oid}``: the body is streamed to a spool file and hashed as it
  arrives (a declared body of at most 1 MiB is taken in memory); a body that
  does not hash to ``oid`` is refused (400) and nothing is stored; over the
  server's ``max_upload``: 413. Then it is stored with the store's streaming
  ``put_file``; the spool file is removed whatever happens
  (:mod:`keel.server.transfer`). Storing an object that exists is a no-op.
- ``GET /objects/{oid}``: the bytes, streamed from the store while they are hashed
  (no temporary copy; a corrupt object breaks the response off, see
  :func:`keel.server.transfer.stream_object`). When the store is S3 and the
  client asks (``?presign=1`` or ``Prefer: presigned``) the answer is a 307
  redirect to a presigned S3 URL valid for :data:`PRESIGN_SECONDS`
  (``?presign=json`` answers ``{"url", "expires_in"}`` instead).
- ``HEAD /objects/{oid}``: 200 if stored, else 404.
- ``GET /objects?after=&limit=``: list oids (site admins only).

Pins: an object a data push stores (``PUT ...?pin=1``) or finds present (``missing`` with
``"pin": true``, by a writer) is recorded in ``object_pins``: the versions naming it live in
the pushing client's database, so without a pin this server's ``keel gc`` would see nothing
reference it. Other uploads (the remote sdk's artifacts, recordings...) are named by rows the
client records here, so they stay collectable.

Authorization: objects are shared, immutable, content-addressed blobs (a data
file pushed from one project and an artifact of another may be the same object),
so they are not owned by a project. Reading (GET, HEAD, missing) needs the reader
role on some scope (any project, ``@registries`` or ``*``); writing (PUT) needs
the writer role on some scope. An object can only be fetched by someone who
knows its hash, and hashes are only learnt from versions the caller can read;
listing every oid is for site admins.

Uploads are proxied rather than presigned: the server must read every byte
anyway to check the hash before an object may appear under its name (a
presigned PUT would land unverified bytes in the bucket, then cost a second full
read of them from S3), so proxying is the cheaper of the two honest options.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response, status
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from keel.core.hashing import hash_bytes
from keel.errors import Forbidden, InvalidInput, NotFound, TooLarge
from keel.objects.base import CHUNK, ObjectStore, check_oid
from keel.server.auth import Caller, Context, require_site_admin
from keel.server.errors import KeelJSONResponse
from keel.server.routers import Router
from keel.server.transfer import spooled_body, stream_object
from keel.services.auth import RANK, Principal
from keel.services.gc import pin_pushed

__all__ = ["MAX_BATCH", "PRESIGN_SECONDS", "presigned_download", "router", "wants_presigned"]

router = Router(tags=["objects"])

MAX_BATCH = 10_000  # oids per existence check
PRESIGN_SECONDS = 300  # how long a presigned download URL stays valid
_OCTETS = {"requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}}


class MissingRequest(BaseModel):
    """A batch of object ids to check."""

    model_config = ConfigDict(extra="forbid")
    oids: list[str]
    pin: bool = False  # a data push asks: the present ones are pinned (docs/gc.md)


def _may_write(caller: Principal) -> bool:
    return caller.user.is_admin or any(RANK.get(r, 0) >= RANK["writer"] for r in caller.grants.values())


def require_any(caller: Principal, role: str) -> None:
    """Raise Forbidden unless ``caller`` holds at least ``role`` on some scope."""
    if caller.user.is_admin or any(RANK.get(r, 0) >= RANK[role] for r in caller.grants.values()):
        return
    raise Forbidden(
        f"{caller.name} needs the {role} role on a project to {'read' if role == 'reader' else 'write'} objects",
        "ask an admin to grant it",
    )


def presigned_download(objects: ObjectStore, oid: str, filename: str | None = None) -> str | None:
    """A short-lived URL that downloads ``oid`` straight from S3, or None when the
    store is not S3. For any route that hands out stored content (e.g. artifacts),
    after its own authorization check; raises NotFound if the object is absent."""
    if not objects.capabilities.presign:
        return None
    if not objects.exists(oid):
        raise NotFound(f"object {oid} is not stored", "check the id, or push the object")
    return objects.presigned_url(oid, PRESIGN_SECONDS, filename)


def wants_presigned(request: Request, presign: str | None) -> bool:
    """Whether the client asked for a presigned URL (``?presign=1|json`` or ``Prefer: presigned``)."""
    if presign is not None:
        return presign.lower() in ("1", "true", "yes", "json")
    prefer = request.headers.get("prefer", "")
    return any(part.strip().lower() == "presigned" for part in prefer.split(","))


@router.post("/objects/missing", summary="Which of these objects the server lacks")
def missing_objects(body: MissingRequest, caller: Caller, context: Context) -> dict[str, Any]:
    require_any(caller, "reader")
    if len(body.oids) > MAX_BATCH:
        raise TooLarge(f"{len(body.oids)} oids in one check; at most {MAX_BATCH}", "split the batch")
    wanted = [check_oid(oid) for oid in body.oids]
    present = context.store.objects.exists_many(wanted)
    if body.pin and present and _may_write(caller):  # a push will rely on them: gc keeps them (docs/gc.md)
        pin_pushed(context.store, sorted(present))
    return {"missing": [oid for oid in dict.fromkeys(wanted) if oid not in present]}


@router.get("/objects", summary="List stored object ids, in pages (site admins)")
def list_objects(caller: Caller, context: Context, after: str = "", limit: int = 1000) -> dict[str, Any]:
    require_site_admin(caller)
    if not 1 <= limit <= MAX_BATCH:
        raise InvalidInput(f"limit {limit} is out of range", f"use 1 to {MAX_BATCH}")
    oids = sorted(oid for oid in context.store.objects.iter_oids() if oid > after)[:limit]
    return {"oids": oids, "next": oids[-1] if len(oids) == limit else None}


@router.head("/objects/{oid}", summary="Whether an object is stored (200 or 404)")
def head_object(oid: str, caller: Caller, context: Context) -> Response:
    require_any(caller, "reader")
    if not context.store.objects.exists(check_oid(oid)):
        raise NotFound(f"object {oid} is not stored", "push it first")
    return Response(status_code=200, headers={"X-Keel-Oid": oid})


@router.put(
    "/objects/{oid}",
    status_code=status.HTTP_201_CREATED,
    summary="Upload one object (the request body, streamed, checked against its hash)",
    openapi_extra=_OCTETS,
)
async def put_object(oid: str, request: Request, caller: Caller, context: Context, pin: bool = False) -> dict[str, Any]:
    check_oid(oid)
    require_any(caller, "writer")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > context.max_upload:
        raise TooLarge(f"upload of {declared} bytes is over the limit of {context.max_upload}", "split it")
    if declared and declared.isdigit() and int(declared) <= CHUNK:  # small: no spool file, one thread hop
        data = await request.body()
        _check_hash(oid, hash_bytes(data))
        await run_in_threadpool(context.store.objects.put_bytes, data)
        if pin:  # a data push: no row of this server names it
            await run_in_threadpool(pin_pushed, context.store, [oid])
        return {"oid": oid, "size": len(data)}
    async with spooled_body(request, context, "object", hash_it=True) as body:
        _check_hash(oid, body.digest or "")
        stored, _ = await run_in_threadpool(context.store.objects.put_file, body.path)
    assert stored == oid  # hashed twice, from the same file
    if pin:
        await run_in_threadpool(pin_pushed, context.store, [oid])
    return {"oid": oid, "size": body.size}


def _check_hash(oid: str, got: str) -> None:
    if got != oid:
        raise InvalidInput(
            f"the uploaded content hashes to {got}, not to {oid}; it was not stored",
            "send the object's exact bytes (the oid is their BLAKE3 hex digest)",
        )


@router.get("/objects/{oid}", summary="Download one object (streamed, or a presigned S3 URL)")
def get_object(oid: str, request: Request, caller: Caller, context: Context, presign: str | None = None) -> Response:
    check_oid(oid)
    require_any(caller, "reader")
    objects = context.store.objects
    headers = {"X-Keel-Oid": oid}
    if wants_presigned(request, presign):
        url = presigned_download(objects, oid)
        if url is not None:
            if presign is not None and presign.lower() == "json":
                return KeelJSONResponse({"url": url, "expires_in": PRESIGN_SECONDS}, headers=headers)
            return RedirectResponse(url, status_code=307, headers={**headers, "Cache-Control": "no-store"})
    return stream_object(objects, oid, headers=headers)
