"""The sdk against a keel server: service proxies over HTTP, the wire codec, login and logout.

With ``KEEL_URI=http(s)://host:port`` (or ``database=`` such a URL) the sdk's
session holds :class:`RemoteService` proxies instead of in-process services:
calling ``proxy.get_run(run_id)`` sends ``POST /api/v1/svc/tracking/get_run``
(see :mod:`keel.server.routers.rpc`) and returns what the server's service
returned. The sdk code above is the same in both modes.

What must happen where the user is runs on the client, with the services' own
code: a run's context (git, host) is captured here; artifact files are hashed
here and uploaded to the server's object store
(:class:`keel.objects.http.HttpObjectStore`), then recorded through the RPC;
downloads are written here; ``flags.yaml`` is read here. The token comes from
``KEEL_TOKEN`` or the credentials file ``keel login`` writes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from keel.core.urls import mask_url
from keel.core.wire import Codec, core_types, type_list
from keel.errors import InvalidInput, NotFound, StoreError, Unauthenticated

__all__ = [
    "RemoteService",
    "RemoteStore",
    "is_server_url",
    "login",
    "logout",
    "open_remote",
    "proxy_class",
    "remote",
    "service_types",
    "split_batch",
    "whoami",
    "wire_codec",
]

SVC = "/api/v1/svc"


def is_server_url(uri: str | None) -> bool:
    """True for ``http://`` and ``https://`` URLs (a keel server), False for database URLs."""
    return bool(uri) and str(uri).lower().startswith(("http://", "https://"))


_SERVICE_TYPES = """
keel.meta.llm: CallRow
keel.meta.refs: RefMove
keel.meta.reviews: ChangeRequestRow ReviewRow RuleRow
keel.services.abtests: ABBatch
keel.services.config: ConfigSnapshot LoadedConfig
keel.services.conversations: ConversationDetail
keel.services.data_versions: DatasetVersion
keel.services.flags: FlagChange FlagHistoryEntry FlagSet
keel.services.hooks: Delivery DeliveryAttempt Subscription
keel.services.hooks_delivery: QueueRun
keel.services.kb_index: SearchHit
keel.services.kb_results: AddReport KBDiff KBInfo KBStatus KBVersion SkippedDocument
keel.services.llm: CallBatch Cassette Closest PendingCall StoredCall
keel.services.models: MetricChange ModelComparison ModelLineage ModelVersion RegisteredModel
keel.services.prompts: PromptVersion
"""


def service_types() -> list[str]:
    """Every dataclass the service API carries (keel.core's and the services' results), as ``module:Name``."""
    return [*core_types(), *type_list(_SERVICE_TYPES)]


@functools.cache
def wire_codec() -> Codec:
    """The codec of the service API (shared by the remote sdk and the server)."""
    return Codec(service_types())


# -- the proxies -------------------------------------------------------------------------------
S = TypeVar("S")


class _ServerSide:
    """Stands in for a service's database access on the client: any use says where it is."""

    def __init__(self, url: str) -> None:
        self._url = url

    def __getattr__(self, name: str) -> Any:
        raise InvalidInput(
            f"this operation needs direct database access; KEEL_URI points at the server {self._url}",
            "run it against a local workspace (unset KEEL_URI), or on the server's host",
        )


class RemoteService:
    """The HTTP half of every remote proxy: :meth:`_rpc` calls a declared operation on the server.

    A proxy is a subclass of the service class itself (see :func:`remote`), so its
    type is the service's: the sdk is checked by mypy against the services' own
    signatures in both modes. Each declared operation
    (:func:`keel.services.contract.operations`) is replaced by a call over HTTP;
    the service's other methods (run context, file hashing, reading ``flags.yaml``)
    run here, on the client, and anything that would need the database raises
    InvalidInput naming the server.
    """

    _transport: Any
    _service_name: str
    _reads: frozenset[str] = frozenset()

    def _rpc(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` on the server; its result, or the KeelError it raised.

        Reads (operations declared for the reader role) are retried on a dropped
        connection or a 502/503/504 like any idempotent request; writes are not, except a
        ``write_batch`` with a ``batch_id`` (the server stores a batch id once).
        """
        codec = wire_codec()
        payload = {"args": codec.encode(list(args)), "kwargs": codec.encode(kwargs)}
        path = f"{SVC}/{self._service_name}/{method}"
        idempotent = method in self._reads or (method == "write_batch" and kwargs.get("batch_id") is not None)
        reply = self._transport.call("POST", path, payload, idempotent=idempotent)
        if not isinstance(reply, dict) or "result" not in reply:
            raise StoreError(f"{self._transport.base_url} sent an invalid reply", "is this URL a keel server?")
        return codec.decode(reply["result"])

    def _send_batch(self, batch: Any, batch_id: str | None = None) -> None:
        """Send a background writer's batch, in requests of at most :data:`BATCH_ROWS` rows
        (fewer for recorded LLM calls), so a large backlog never meets the server's size limit.
        Each request of a batch with an id carries its own id (``<id>.<n>`` when it is cut, the
        same cut every time), so a retried batch skips the requests already stored."""
        parts = split_batch(batch, BATCH_ROWS.get(self._service_name, BATCH_ROWS["*"]))
        for index, part in enumerate(parts):
            if batch_id is None:
                self._rpc("write_batch", part)
            else:
                self._rpc("write_batch", part, batch_id=batch_id if len(parts) == 1 else f"{batch_id}.{index}")

    def __repr__(self) -> str:
        return f"<remote {self._service_name} service at {self._transport.base_url}>"


BATCH_ROWS = {"*": 20_000, "llm": 200}  # rows per write_batch request, per service


def split_batch(batch: Any, rows: int) -> list[Any]:
    """``batch`` (a dataclass of row lists) cut into batches of at most ``rows`` rows.

    Rows keep their order across fields as declared (a WriteBatch's new runs first,
    its run ends last), so the parts can be written one after the other.
    """
    if len(batch) <= rows:
        return [batch]
    names = [f.name for f in dataclasses.fields(batch)]
    parts: list[Any] = []
    current: dict[str, list[Any]] = {name: [] for name in names}
    room = rows
    for name in names:
        values = getattr(batch, name)
        start = 0
        while start < len(values):
            take = values[start : start + room]
            current[name].extend(take)
            start += len(take)
            room -= len(take)
            if room == 0:
                parts.append(dataclasses.replace(batch, **current))
                current = {n: [] for n in names}
                room = rows
    if room < rows:
        parts.append(dataclasses.replace(batch, **current))
    return parts


def _operation_stub(name: str) -> Callable[..., Any]:
    def call(self: RemoteService, *args: Any, **kwargs: Any) -> Any:
        return self._rpc(name, *args, **kwargs)

    call.__name__ = name
    return call


def _write_batch(self: RemoteService, batch: Any, batch_id: str | None = None) -> None:
    self._send_batch(batch, batch_id)


# What runs on the client for each service, beyond its declared operations: state the
# inherited client-side methods read, and the few operations whose arguments must be
# prepared here (files read, SDK objects turned into data) before they travel.
def _init_flags(self: Any) -> None:
    self._prompts = None
    self._file_cache = None
    self._stored_cache = {}


def _init_conversations(self: Any) -> None:
    from keel.services.conversations import DEFAULT_PRICES, ConversationService, load_redactor

    config = ConversationService._config(self)  # the workspace's [conversations] section, if any
    self.configured_redactor = load_redactor(config.redact)
    self.prices = dict(DEFAULT_PRICES)


def _init_llm(self: Any) -> None:
    from collections import OrderedDict

    self.tracking = None
    self._known = {}
    self._known_lock = threading.Lock()
    self._packs = OrderedDict()


def _init_kb(self: Any) -> None:
    self._remote = True


def _init_config(self: Any) -> None:
    self._recorded = set()


def _init_links(self: Any) -> None:
    self._tracking = None
    self._prompts = None
    self._models = None


def _conversations_export(self: Any, path: Any, *args: Any, **kwargs: Any) -> int:
    """Fetch the matching examples from the server and write the file here."""
    from keel.services.conversations import write_examples

    target = Path(path)
    if target.is_dir():
        raise InvalidInput(f"{target} is a folder", "give a file name, e.g. dataset.jsonl")
    if not target.parent.is_dir():
        raise NotFound(f"folder {target.parent} does not exist", "create it first")
    return write_examples(target, self._rpc("examples", *args, **kwargs))


def _kb_add_documents(
    self: Any,
    name: str,
    items: Any,
    base: Any = None,
    max_document_bytes: int | None = None,
    data_source: Any = None,
) -> Any:
    """Stage documents: files are read here and sent as text (their source relative to ``base``)."""
    from keel.services.kb import _source_of
    from keel.services.kb_results import SkippedDocument

    if isinstance(items, str | os.PathLike | Mapping):
        items = [items]
    base_path = Path(base or os.getcwd())
    documents: list[Any] = []
    skipped: list[Any] = []
    for item in items:
        if not isinstance(item, str | os.PathLike):
            documents.append(item)
            continue
        path = Path(item)
        source = _source_of(path, base_path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no file {str(path)!r}", "check the path (pass text as {'text': ...})") from None
        except IsADirectoryError:
            raise InvalidInput(f"{path} is a directory", "use add_directory (CLI: keel kb add NAME DIR)") from None
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror}", "check the file's permissions") from None
        try:
            documents.append({"text": raw.decode("utf-8-sig"), "source": source})
        except UnicodeDecodeError as exc:
            reason = f"not UTF-8: byte 0x{raw[exc.start]:02x} at {exc.start}"
            skipped.append(SkippedDocument(source, reason))
    report = self._rpc("add_documents", name, documents, None, max_document_bytes, data_source)
    report.skipped[:0] = skipped
    return report


def _llm_write_batch(self: Any, batch: Any, batch_id: str | None = None) -> None:
    """Send recorded calls: the SDK's response objects are turned into JSON data here."""
    from keel.core.llm import normalize
    from keel.services.llm import CallBatch

    calls = [
        dataclasses.replace(
            call,
            response=normalize(call.response),
            chunks=None if call.chunks is None else [normalize(c) for c in call.chunks],
            context=normalize(call.context),
        )
        for call in batch.calls
    ]
    self._send_batch(CallBatch(calls), batch_id)


def _config_record(self: Any, loaded: Any) -> Any:
    """Record a snapshot (a pydantic instance it was validated with stays here)."""
    return self._rpc("record", dataclasses.replace(loaded, validated=None))


def _tracking_maintain(self: Any) -> None:
    """Nothing to do on the client: the server keeps its database."""


_CLIENT_INIT: dict[str, Callable[[Any], None]] = {
    "flags": _init_flags,
    "conversations": _init_conversations,
    "llm": _init_llm,
    "kb": _init_kb,
    "config": _init_config,
    "models": _init_links,
    "abtests": _init_links,
}
_CLIENT_METHODS: dict[str, dict[str, Callable[..., Any]]] = {
    "tracking": {"maintain": _tracking_maintain},
    "conversations": {"export": _conversations_export},
    "kb": {"add_documents": _kb_add_documents},
    "llm": {"write_batch": _llm_write_batch},
    "config": {"record": _config_record},
}
_CLASSES: dict[type, type] = {}
_CLASSES_LOCK = threading.Lock()


def proxy_class(cls: type) -> type:
    """The remote proxy class of service class ``cls`` (built once)."""
    from keel.services.contract import service_operations

    with _CLASSES_LOCK:
        found = _CLASSES.get(cls)
        if found is not None:
            return found
        name: str = getattr(cls, "__keel_service__", "")
        if not name:
            raise TypeError(f"{cls.__name__} declares no service operations")
        declared = service_operations(cls)
        namespace: dict[str, Any] = {
            "__doc__": f"{cls.__name__} on a keel server.",
            "__module__": __name__,
            "_reads": frozenset(n for n, op in declared.items() if op.role == "reader"),
        }
        for op_name in declared:
            namespace[op_name] = _write_batch if op_name == "write_batch" else _operation_stub(op_name)
        namespace.update(_CLIENT_METHODS.get(name, {}))
        found = _CLASSES[cls] = type(f"Remote{cls.__name__}", (RemoteService, cls), namespace)
        return found


def remote(cls: type[S], store: RemoteStore) -> S:
    """The service ``cls`` on the keel server ``store`` talks to, typed as ``cls``.

    Args:
        cls: a service class with declared operations (e.g. :class:`keel.services.prompts.PromptService`).
        store: the :class:`RemoteStore` of the server.
    """
    proxy: Any = object.__new__(proxy_class(cls))
    proxy._transport = store.transport
    proxy._service_name = cls.__keel_service__  # type: ignore[attr-defined]
    proxy.store = store
    proxy.objects = store.objects
    server_side = _ServerSide(store.url)
    for attribute in ("db", "repo", "raw"):
        setattr(proxy, attribute, server_side)
    init = _CLIENT_INIT.get(proxy._service_name)
    if init is not None:
        init(proxy)
    return typing.cast(S, proxy)


# -- the store ---------------------------------------------------------------------------------
class RemoteStore:
    """What the sdk sees as its store when it talks to a server: the server's objects, no database.

    Args:
        transport: the :class:`~keel.transport.HttpClient` to the server.
        objects: the server's object store (:class:`~keel.objects.http.HttpObjectStore`).
        root: the local workspace folder found here, if any.
    """

    def __init__(self, transport: Any, objects: Any, root: Path | None = None) -> None:
        self.transport = transport
        self.objects = objects
        self.url = transport.base_url
        self.root = root  # a local workspace folder, for what stays local (flags.yaml, [conversations] config)

    @property
    def db(self) -> Any:
        """There is none on the client: the operation needs a local workspace."""
        raise InvalidInput(
            f"this operation needs direct database access; KEEL_URI points at the server {self.url}",
            "run it against a local workspace (unset KEEL_URI), or on the server's host",
        )

    def close(self) -> None:
        """Close the connections to the server."""
        self.objects.close()
        self.transport.close()

    def describe(self) -> dict[str, Any]:
        """The server and the user the token belongs to (for ``keel info``)."""
        me = whoami_with(self.transport)
        found = {"server": mask_url(self.url), "user": me["user"]["name"]}
        if self.root is not None:
            found["workspace"] = f"{self.root} (local: keel data, flags.yaml)"
        return found


def open_remote(url: str, token: str | None = None) -> RemoteStore:
    """A :class:`RemoteStore` for the server at ``url`` (token: given, ``KEEL_TOKEN`` or ``keel login``'s)."""
    from keel.objects.http import HttpObjectStore
    from keel.transport import HttpClient, token_for

    token = token or token_for(url)
    if not token:
        raise Unauthenticated(f"no token for {url}", f"run 'keel login {url}' or set KEEL_TOKEN")
    from keel.services.redaction import use_workspace_keys
    from keel.services.workspace import find_workspace

    transport = HttpClient(url, token)
    root = find_workspace()
    use_workspace_keys(root)  # the workspace's [redaction] keys apply before anything is sent
    return RemoteStore(transport, HttpObjectStore(url, transport=transport), root)


# -- login -------------------------------------------------------------------------------------
def whoami_with(transport: Any) -> dict[str, Any]:
    """The server's ``/auth/whoami`` for the transport's token: user, token and grants."""
    found: dict[str, Any] = transport.call("GET", "/api/v1/auth/whoami")
    return found


def whoami(url: str, token: str | None = None) -> dict[str, Any]:
    """Who the token (given, ``KEEL_TOKEN`` or stored) is on the server at ``url``."""
    from keel.transport import HttpClient, token_for

    token = token or token_for(url)
    if not token:
        raise Unauthenticated(f"not logged in to {url}", f"run 'keel login {url}' or set KEEL_TOKEN")
    with HttpClient(url, token) as transport:
        return whoami_with(transport)


def login(url: str, token: str) -> dict[str, Any]:
    """Check ``token`` against the server at ``url`` and remember it; returns ``whoami`` and the file.

    Raises Unauthenticated (nothing saved) when the server refuses the token.
    """
    from keel.transport import HttpClient, normalize_base_url, save_token

    url = normalize_base_url(url)
    with HttpClient(url, token.strip()) as transport:
        me = whoami_with(transport)
    path = save_token(url, token)
    return {**me, "server": url, "credentials": str(path)}


def logout(url: str) -> bool:
    """Forget the stored token of ``url``; True if there was one."""
    from keel.transport import forget_token

    return forget_token(url)
