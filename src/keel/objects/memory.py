"""An in-memory object store for tests and throw-away sessions."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from keel.errors import NotFound
from keel.objects.base import ObjectStore

__all__ = ["MemoryObjectStore"]


class MemoryObjectStore(ObjectStore):
    """Objects in a dict; lost when the process ends."""

    def __init__(self) -> None:
        self.url = "memory://"
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def _write(self, oid: str, data: bytes) -> None:
        with self._lock:
            self._objects.setdefault(oid, bytes(data))

    def _read(self, oid: str) -> bytes:
        try:
            return self._objects[oid]
        except KeyError:
            raise NotFound(f"object {oid} is not in the store", "check the id") from None

    def exists(self, oid: str) -> bool:
        return oid in self._objects

    def iter_oids(self) -> Iterator[str]:
        return iter(list(self._objects))

    def describe(self, oid: str) -> str:
        return f"memory://{oid}"
