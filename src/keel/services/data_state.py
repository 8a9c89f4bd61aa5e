"""The workspace's data state: a stat cache and an index of data objects.

``.keel/data/state.db`` is a SQLite file of its own, local to this checkout and
never shared; its SQL is :mod:`keel.meta.data_state`. Everything in it can be
rebuilt, so it runs with ``synchronous=OFF`` and is deleted and recreated if it
is ever found corrupt. Tables:

- ``stat``: workspace path -> (inode, size, mtime_ns, oid, recorded_ns). A file
  whose inode, size and mtime are unchanged since it was hashed is not read
  again. Timestamps have a granularity, so an entry is trusted only when the
  file's mtime is older than when the entry was recorded by more than the file
  system's timestamp step (git's "racily clean" rule:
  :func:`keel.services.data_cache.racy_ns`, :data:`RACY_NS` for whole-second
  timestamps); a racy entry is re-hashed once and then recorded again.
- ``loc``: file oid -> (pack oid, offset, size) for packed small files, so the
  same content added again (in any directory) reuses the pack.
- ``objects``: every object the data layer wrote or fetched into the cache,
  with its kind (``pack``, ``loose``, ``tree``): what ``keel data gc`` may
  remove. Objects of runs or other registries are never listed.
- ``checked``: cache object oid -> (inode, size, mtime_ns) when it was last
  known good, so a checkout can link a large object without re-hashing it, and
  re-hashes it if anything (say, an in-place edit through a hard link) touched it.
"""

from __future__ import annotations

from keel.meta.data_state import StateRows, StatRow

__all__ = ["RACY_NS", "DataState", "StatRow"]

RACY_NS = 1_000_000_000  # files modified within 1 s of being recorded are re-checked once


class DataState(StateRows):
    """The stat cache and object index of one workspace (its SQL: :class:`keel.meta.data_state.StateRows`)."""
