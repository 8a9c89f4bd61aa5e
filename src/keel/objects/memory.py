"""An in-memory object store for tests and throw-away sessions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator

from keel.errors import NotFound
from keel.objects.base import ObjectInfo, ObjectStore

__all__ = ["MemoryObjectStore"]


class MemoryObjectStore(ObjectStore):
    """Objects in a dict (with the time each was written or freshened); lost when the process ends."""

    def __init__(self) -> None:
        self.url = "memory://"
        self._objects: dict[str, bytes] = {}
        self._mtimes: dict[str, float] = {}
        self._lock = threading.Lock()

    def _write(self, oid: str, data: bytes) -> None:
        with self._lock:
            self._objects.setdefault(oid, bytes(data))
            self._mtimes[oid] = time.time()

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

    def iter_objects(self) -> Iterator[ObjectInfo]:
        with self._lock:
            listed = [ObjectInfo(oid, len(data), self._mtimes[oid]) for oid, data in self._objects.items()]
        return iter(listed)

    def freshen(self, oid: str) -> None:
        with self._lock:
            if oid in self._objects:
                self._mtimes[oid] = time.time()

    def delete_many(self, oids: Iterable[str]) -> int:
        freed = 0
        with self._lock:
            for oid in oids:
                data = self._objects.pop(oid, None)
                self._mtimes.pop(oid, None)
                freed += len(data) if data is not None else 0
        return freed

    def prune(self, infos: Iterable[ObjectInfo], fresh_after: float) -> list[ObjectInfo]:
        removed = []
        with self._lock:  # the check and the delete are one step here
            for info in infos:
                if info.oid in self._objects and self._mtimes[info.oid] <= fresh_after:
                    data = self._objects.pop(info.oid)
                    removed.append(ObjectInfo(info.oid, len(data), self._mtimes.pop(info.oid)))
        return removed
