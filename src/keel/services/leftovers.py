"""No leftovers: the server's spool files, and what an interrupted upload leaves in a store.

A request that uploads an artifact or object is spooled to a temporary file first (its
hash must be checked before it may be stored), then stored; a process killed in the
middle (``kill -9``, an out-of-memory kill) leaves the spool file behind, and, on S3,
the multipart upload it had started (its parts are billed until it is aborted). This
module names those files so they can be recognised, and sweeps what nobody owns:

- Spool files live in one folder per OS user, :func:`spool_dir` =
  ``$TMPDIR/keel-server-<uid>/`` (mode 0700, refused if another user owns it or it is a
  symlink), named ``<kind>-<pid>-<random>.part``. :func:`sweep_spool` removes those
  older than ``older_than`` seconds (by modification time: a file being written stays
  fresh) whose process is gone (the pid in the name; a file of a live process is kept).
- :func:`sweep_store`: on S3, multipart uploads under the store's prefix started more
  than ``older_than`` seconds ago are aborted; in a local store, temporary files of
  ``objects/tmp/`` untouched for that long are removed.

The server runs both when it starts (:mod:`keel.server.__main__`; each worker also
sweeps the spool folder now and then), and ``keel server sweep`` runs them on demand.
Thresholds: :data:`SPOOL_AGE_S` (1 hour) and :data:`UPLOAD_AGE_S` (24 hours), or
``KEEL_SERVER_SWEEP_TMP_AGE`` / ``KEEL_SERVER_SWEEP_UPLOAD_AGE`` (seconds).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from keel.errors import InvalidInput, StoreError
from keel.fileio import pid_alive
from keel.objects import ObjectStore

__all__ = [
    "ENV_SPOOL_AGE",
    "ENV_UPLOAD_AGE",
    "SPOOL_AGE_S",
    "UPLOAD_AGE_S",
    "SweepReport",
    "age_from_env",
    "new_spool_file",
    "spool_dir",
    "sweep",
    "sweep_spool",
    "sweep_store",
]

log = logging.getLogger("keel.server")

SPOOL_AGE_S = 3600.0  # a spool file untouched this long, whose process is gone, is a leftover
UPLOAD_AGE_S = 86_400.0  # a multipart upload started this long ago is abandoned
ENV_SPOOL_AGE = "KEEL_SERVER_SWEEP_TMP_AGE"
ENV_UPLOAD_AGE = "KEEL_SERVER_SWEEP_UPLOAD_AGE"
_SPOOL_NAME = re.compile(r"^[a-z][a-z0-9]*-(\d+)-[A-Za-z0-9_]+\.part$")


@dataclass
class SweepReport:
    """What a sweep removed: spool files, local temporary files, aborted multipart uploads."""

    spool_files: int = 0
    spool_bytes: int = 0
    store_files: int = 0
    store_bytes: int = 0
    uploads: list[str] = field(default_factory=list)  # keys of the aborted multipart uploads

    @property
    def total(self) -> int:
        """How many things were removed."""
        return self.spool_files + self.store_files + len(self.uploads)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "spool_files": self.spool_files,
            "spool_bytes": self.spool_bytes,
            "store_files": self.store_files,
            "store_bytes": self.store_bytes,
            "aborted_uploads": list(self.uploads),
        }


def age_from_env(name: str, default: float) -> float:
    """Seconds from the environment variable ``name`` (``default`` when unset)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{name}={raw!r} is not a number of seconds", f"set {name} to e.g. 3600") from None
    if not value >= 0:
        raise InvalidInput(f"{name}={raw!r} is negative", f"set {name} to 0 or more seconds")
    return value


# -- the spool folder ----------------------------------------------------------------------------
def spool_dir(base: str | os.PathLike[str] | None = None) -> Path:
    """This OS user's spool folder under ``base`` (default: the system's temporary folder),
    created 0700. Raises StoreError if it cannot be made, or if what is there is not a
    folder this user owns (a symlink, another user's folder), which could be a trap."""
    folder = Path(base or tempfile.gettempdir()) / f"keel-server-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(folder)
    except OSError as exc:
        raise StoreError(
            f"cannot create the spool folder {folder}: {exc.strerror or exc}", "check TMPDIR and its permissions"
        ) from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise StoreError(
            f"{folder} is not a folder owned by this user (uid {os.getuid()})",
            "remove it, or point TMPDIR at a folder only the server's user can write",
        )
    if info.st_mode & 0o077:
        os.chmod(folder, 0o700)
    return folder


def new_spool_file(folder: Path, kind: str) -> tuple[int, str]:
    """A new spool file in ``folder`` for ``kind`` (``upload``, ``object``, ...): an open
    descriptor and its path, ``<kind>-<pid>-<random>.part`` (the caller removes it)."""
    return tempfile.mkstemp(dir=folder, prefix=f"{kind}-{os.getpid()}-", suffix=".part")


def sweep_spool(folder: str | os.PathLike[str], older_than: float = SPOOL_AGE_S) -> tuple[int, int]:
    """Remove the spool files in ``folder`` untouched for ``older_than`` seconds whose
    process is gone; ``(files, bytes)`` removed. Files not named as spool files are left."""
    folder = Path(folder)
    removed = size = 0
    now = time.time()
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0, 0
    for name in names:
        match = _SPOOL_NAME.match(name)
        if match is None:
            continue
        path = folder / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode) or now - info.st_mtime < older_than:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or pid_alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed += 1
            size += info.st_size
    if removed:
        log.warning("removed %d leftover spool file(s), %d bytes, from %s", removed, size, folder)
    return removed, size


def sweep_store(objects: ObjectStore, older_than: float = UPLOAD_AGE_S) -> SweepReport:
    """Abort the store's abandoned multipart uploads (S3) or remove its stale temporary
    files (a local folder), older than ``older_than`` seconds. Other stores keep nothing."""
    report = SweepReport()
    if objects.capabilities.multipart_put:
        report.uploads = objects.abort_stale_uploads(older_than)
        if report.uploads:
            log.warning(
                "aborted %d abandoned multipart upload(s) in %s: %s",
                len(report.uploads),
                objects.url,
                ", ".join(report.uploads[:10]) + (" ..." if len(report.uploads) > 10 else ""),
            )
    elif objects.capabilities.local_path:
        report.store_files, report.store_bytes = objects.sweep_tmp(older_than)
        if report.store_files:
            log.warning(
                "removed %d leftover temporary file(s), %d bytes, from %s",
                report.store_files,
                report.store_bytes,
                objects.tmp_folder(),
            )
    return report


def sweep(
    objects: ObjectStore | None,
    tmp_dir: str | os.PathLike[str] | None = None,
    *,
    spool_age: float | None = None,
    upload_age: float | None = None,
) -> SweepReport:
    """Both sweeps: the spool folder under ``tmp_dir`` and, when given, the object store.
    Ages default to the environment (``KEEL_SERVER_SWEEP_TMP_AGE``,
    ``KEEL_SERVER_SWEEP_UPLOAD_AGE``), else 1 hour and 24 hours."""
    spool_age = age_from_env(ENV_SPOOL_AGE, SPOOL_AGE_S) if spool_age is None else spool_age
    upload_age = age_from_env(ENV_UPLOAD_AGE, UPLOAD_AGE_S) if upload_age is None else upload_age
    spooled = sweep_spool(spool_dir(tmp_dir), spool_age)  # first: local, it cannot fail on the store
    report = sweep_store(objects, upload_age) if objects is not None else SweepReport()
    report.spool_files, report.spool_bytes = spooled
    return report
