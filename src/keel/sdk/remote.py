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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from keel.core.wire import Codec, core_types, type_list
from keel.errors import InvalidInput, NotFound, StoreError, Unauthenticated

__all__ = [
    "RemoteService",
    "RemoteStore",
    "is_server_url",
    "login",
    "logout",
    "open_remote",
    "remote_service",
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
keel.services.abtests: ABBatch
keel.services.config: ConfigSnapshot LoadedConfig
keel.services.conversations: ConversationDetail
keel.services.data_versions: DatasetVersion
keel.services.flags: FlagChange FlagHistoryEntry FlagSet
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
class RemoteService:
    """A service on a keel server: ``proxy.method(*args, **kwargs)`` calls it over HTTP.

    Args:
        transport: an :class:`keel.objects.http.HttpTransport` to the server.
        name: the service (``tracking``, ``prompts``, ``models``, ``kb``, ``conversations``,
            ``llm``, ``config``, ``flags``, ``abtests``).
        store: the :class:`RemoteStore` (for the client-side methods that need ``store``/``objects``).
    """

    def __init__(self, transport: Any, name: str, store: RemoteStore | None = None) -> None:
        self._transport = transport
        self._name = name
        self._codec = wire_codec()
        if store is not None:
            self.store = store
            self.objects = store.objects

    def __repr__(self) -> str:
        return f"<RemoteService {self._name} at {self._transport.base_url}>"

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` on the server; its result, or the KeelError it raised."""
        payload = {"args": self._codec.encode(list(args)), "kwargs": self._codec.encode(kwargs)}
        reply = self._transport.call("POST", f"{SVC}/{self._name}/{method}", payload)
        if not isinstance(reply, dict) or "result" not in reply:
            raise StoreError(f"{self._transport.base_url} sent an invalid reply", "is this URL a keel server?")
        return self._codec.decode(reply["result"])

    def write_batch(self, batch: Any) -> None:
        """Send a background writer's batch, in requests of at most :data:`BATCH_ROWS` rows
        (fewer for recorded LLM calls), so a large backlog never meets the server's size limit."""
        for part in split_batch(batch, BATCH_ROWS.get(self._name, BATCH_ROWS["*"])):
            self.call("write_batch", part)

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.call(method, *args, **kwargs)

        call.__name__ = method
        return call


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


def _borrow(cls: type, *names: str) -> dict[str, Any]:
    """The local service's own code for methods that must run on the client."""
    return {name: cls.__dict__[name] for name in names}


def _tracking_class() -> type:
    from keel.services.tracking import TrackingService

    def maintain(self: Any) -> None:
        """Nothing to do on the client: the server keeps its database."""

    return type(
        "RemoteTracking",
        (RemoteService,),
        {
            "__doc__": "Runs on a server; run context, artifact files and downloads handled here.",
            "maintain": maintain,
            **_borrow(
                TrackingService, "new_run", "store_file", "store_bytes", "collect_artifacts",
                "read_artifact", "download_artifacts", "read_table",
            ),
        },
    )  # fmt: skip


def _flags_class() -> type:
    from keel.services.flags import FlagService

    def init(self: Any, transport: Any, name: str, store: RemoteStore | None = None) -> None:
        RemoteService.__init__(self, transport, name, store)
        self._file_cache = None

    return type(
        "RemoteFlags",
        (RemoteService,),
        {
            "__doc__": "Flags on a server; flags.yaml read here.",
            "__init__": init,
            **_borrow(FlagService, "default_file", "file_flags", "snapshot", "get"),
        },
    )


def _conversations_class() -> type:
    from keel.services.conversations import DEFAULT_PRICES, ConversationService, load_redactor, write_examples

    def init(self: Any, transport: Any, name: str, store: RemoteStore | None = None) -> None:
        RemoteService.__init__(self, transport, name, store)
        config = ConversationService._config(self)  # the workspace's [conversations] section, if any
        self.configured_redactor = load_redactor(config.get("redact"))
        self.prices = dict(DEFAULT_PRICES)

    def export(self: Any, path: Any, *args: Any, **kwargs: Any) -> int:
        """Fetch the matching examples from the server and write the file here."""
        target = Path(path)
        if target.is_dir():
            raise InvalidInput(f"{target} is a folder", "give a file name, e.g. dataset.jsonl")
        if not target.parent.is_dir():
            raise NotFound(f"folder {target.parent} does not exist", "create it first")
        return write_examples(target, self.call("examples", *args, **kwargs))

    return type(
        "RemoteConversations",
        (RemoteService,),
        {
            "__doc__": "Conversations on a server; records validated and redacted here.",
            "__init__": init,
            "export": export,
            **_borrow(ConversationService, "prepare", "feedback_row"),
        },
    )


def _kb_class() -> type:
    from keel.services.kb import KBService, _source_of
    from keel.services.kb_results import SkippedDocument

    def add_documents(
        self: Any,
        name: str,
        items: Any,
        base: Any = None,
        max_document_bytes: int | None = None,
        data_source: Any = None,
    ) -> Any:
        """Stage documents: files are read here and sent as text (their source relative to ``base``)."""
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
        report = self.call("add_documents", name, documents, None, max_document_bytes, data_source)
        report.skipped[:0] = skipped
        return report

    return type(
        "RemoteKB",
        (RemoteService,),
        {
            "__doc__": "Knowledge bases on a server; document files read here.",
            "add_documents": add_documents,
            **_borrow(KBService, "add_directory"),
        },
    )


def _llm_class() -> type:
    from collections import OrderedDict

    from keel.core.llm import normalize
    from keel.services.llm import CallBatch, LlmService

    def init(self: Any, transport: Any, name: str, store: RemoteStore | None = None) -> None:
        RemoteService.__init__(self, transport, name, store)
        self._known_lock = threading.Lock()
        self._packs = OrderedDict()

    def write_batch(self: Any, batch: Any) -> None:
        """Send recorded calls: the SDK's response objects are turned into JSON data here."""
        calls = [
            dataclasses.replace(
                call,
                response=normalize(call.response),
                chunks=None if call.chunks is None else [normalize(c) for c in call.chunks],
                context=normalize(call.context),
            )
            for call in batch.calls
        ]
        RemoteService.write_batch(self, CallBatch(calls))

    return type(
        "RemoteLlm",
        (RemoteService,),
        {
            "__doc__": "Recorded LLM calls on a server; packs read through the object store.",
            "__init__": init,
            "write_batch": write_batch,
            **_borrow(LlmService, "pack", "read", "_remember"),
        },
    )


def _config_class() -> type:
    def record(self: Any, loaded: Any) -> Any:
        """Record a snapshot (a pydantic instance it was validated with stays here)."""
        return self.call("record", dataclasses.replace(loaded, validated=None))

    return type("RemoteConfig", (RemoteService,), {"__doc__": "Config snapshots on a server.", "record": record})


def _abtests_class() -> type:
    from keel.services.abtests import ABService

    return type(
        "RemoteAB",
        (RemoteService,),
        {"__doc__": "A/B tests on a server; assignment done here.", "assigner": ABService.__dict__["assigner"]},
    )


_SPECIAL: dict[str, Callable[[], type]] = {
    "tracking": _tracking_class,
    "flags": _flags_class,
    "conversations": _conversations_class,
    "config": _config_class,
    "kb": _kb_class,
    "llm": _llm_class,
    "abtests": _abtests_class,
}
_CLASSES: dict[str, type] = {}
_CLASSES_LOCK = threading.Lock()


def remote_service(transport: Any, name: str, store: RemoteStore | None = None) -> Any:
    """The proxy of service ``name``: a :class:`RemoteService`, with client-side methods where needed."""
    with _CLASSES_LOCK:
        cls = _CLASSES.get(name)
        if cls is None:
            factory = _SPECIAL.get(name)
            cls = _CLASSES[name] = factory() if factory is not None else RemoteService
    return cls(transport, name, store)


# -- the store ---------------------------------------------------------------------------------
class RemoteStore:
    """What the sdk sees as its store when it talks to a server: the server's objects, no database.

    Args:
        transport: the :class:`~keel.objects.http.HttpTransport` to the server.
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
        found = {"server": self.url, "user": me["user"]["name"]}
        if self.root is not None:
            found["workspace"] = f"{self.root} (local: keel data, flags.yaml)"
        return found


def open_remote(url: str, token: str | None = None) -> RemoteStore:
    """A :class:`RemoteStore` for the server at ``url`` (token: given, ``KEEL_TOKEN`` or ``keel login``'s)."""
    from keel.objects.http import HttpObjectStore, HttpTransport, token_for

    token = token or token_for(url)
    if not token:
        raise Unauthenticated(f"no token for {url}", f"run 'keel login {url}' or set KEEL_TOKEN")
    from keel.services.workspace import find_workspace

    transport = HttpTransport(url, token)
    return RemoteStore(transport, HttpObjectStore(url, transport=transport), find_workspace())


# -- login -------------------------------------------------------------------------------------
def whoami_with(transport: Any) -> dict[str, Any]:
    """The server's ``/auth/whoami`` for the transport's token: user, token and grants."""
    found: dict[str, Any] = transport.call("GET", "/api/v1/auth/whoami")
    return found


def whoami(url: str, token: str | None = None) -> dict[str, Any]:
    """Who the token (given, ``KEEL_TOKEN`` or stored) is on the server at ``url``."""
    from keel.objects.http import HttpTransport, token_for

    token = token or token_for(url)
    if not token:
        raise Unauthenticated(f"not logged in to {url}", f"run 'keel login {url}' or set KEEL_TOKEN")
    with HttpTransport(url, token) as transport:
        return whoami_with(transport)


def login(url: str, token: str) -> dict[str, Any]:
    """Check ``token`` against the server at ``url`` and remember it; returns ``whoami`` and the file.

    Raises Unauthenticated (nothing saved) when the server refuses the token.
    """
    from keel.objects.http import HttpTransport, normalize_base_url, save_token

    url = normalize_base_url(url)
    with HttpTransport(url, token.strip()) as transport:
        me = whoami_with(transport)
    path = save_token(url, token)
    return {**me, "server": url, "credentials": str(path)}


def logout(url: str) -> bool:
    """Forget the stored token of ``url``; True if there was one."""
    from keel.objects.http import forget_token

    return forget_token(url)
