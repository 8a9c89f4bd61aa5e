"""Content-addressed object stores: local directory, S3, memory.

Every object is immutable bytes named by its BLAKE3 hex digest (its *oid*).
Stores share one interface (:class:`ObjectStore`); :func:`open_object_store`
turns a URL into one:

- a path or ``file://`` URL: :class:`LocalObjectStore`, fan-out ``ab/cdef...``,
  written to a temp file in the store then renamed, made read-only;
- ``s3://bucket/prefix``: :class:`S3ObjectStore` (``endpoint_url`` from the
  URL's ``?endpoint_url=`` or ``AWS_ENDPOINT_URL``), keys ``prefix/ab/cdef...``;
- ``memory://``: :class:`MemoryObjectStore`, for tests.

Each store states what it can do beyond the common interface in its
:class:`Capabilities` (local files, renaming files in, multipart uploads,
presigned URLs, how many parallel transfers suit it): callers ask it, never
the store's class. Beside the stores: :mod:`.packs` (many small files stored as
one object, written and read in place) and :mod:`.trees` (parsed tree
manifests kept beside a local store).
"""

from keel.objects.base import Capabilities, ObjectInfo, ObjectStore
from keel.objects.local import LocalObjectStore
from keel.objects.memory import MemoryObjectStore
from keel.objects.url import open_object_store

__all__ = ["Capabilities", "LocalObjectStore", "MemoryObjectStore", "ObjectInfo", "ObjectStore", "open_object_store"]

# S3ObjectStore is imported lazily by open_object_store: boto3 is an extra.
