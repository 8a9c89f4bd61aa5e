"""An object store on S3 or any S3-compatible server (boto3).

Keys are ``prefix/ab/cdef...``. Uploads of files stream from disk
(multipart for large files); downloads stream and are verified by hash.
``endpoint_url`` (or ``AWS_ENDPOINT_URL``) selects a non-AWS server.

Errors: a missing key is :class:`~keel.errors.NotFound`; a server that cannot be
reached (connection refused, reset or timed out, after botocore's own retries), or
that answers 5xx, ``SlowDown`` or another throttling code, is
:class:`~keel.errors.Unavailable` (``dependency="objects"``: the team server answers
503 with ``Retry-After``); anything else (credentials, a missing bucket) is a
:class:`~keel.errors.StoreError`. Messages render URLs with
:func:`keel.core.urls.mask_url`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from keel.core.urls import mask_url, mask_urls_in
from keel.errors import KeelError, NotFound, StoreError, Unavailable
from keel.objects.base import CHUNK, ObjectStore, check_oid

__all__ = ["S3ObjectStore"]

RETRY_AFTER_S = 2  # Retry-After of an object-store outage
# Error codes that mean "busy or away, retry later" whatever their HTTP status.
_BUSY_CODES = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "503",
        "500",
        "502",
        "504",
    }
)


_SESSION: Any = None
_SESSION_LOCK = threading.Lock()


def _new_client(boto3: Any, **kwargs: Any) -> Any:
    """An S3 client from one shared boto3 session (creating a session costs ~0.1 s;
    sessions are not thread-safe, so clients are made under a lock)."""
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            _SESSION = boto3.session.Session()
        return _SESSION.client("s3", **kwargs)


class S3ObjectStore(ObjectStore):
    """Objects under ``s3://bucket/prefix/ab/cdef...``."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise StoreError("the S3 object store needs boto3", "install it: pip install 'keel[s3]'") from exc
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        self._client: Any = _new_client(
            boto3,
            endpoint_url=endpoint_url,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32),
        )
        self._errors = self._client.exceptions
        self._endpoint_url = endpoint_url
        self._probe: Any = None  # a client that tries once, for ping()

    def key(self, oid: str) -> str:
        """The S3 key that holds ``oid``."""
        name = f"{oid[:2]}/{oid[2:]}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def describe(self, oid: str) -> str:
        return f"s3://{self.bucket}/{self.key(oid)}"

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as exc:
            self._raise(what, exc, kwargs.get("Key", ""))
            raise

    def _raise(self, what: str, exc: BaseException, key: str = "") -> None:
        """Raise the KeelError ``exc`` stands for (an outage keeps it as its cause, for the
        server log); return when it is not boto3's (the caller re-raises it)."""
        error = self._error(what, exc, key)
        if error is not None:
            raise error from (exc if isinstance(error, Unavailable) else None)

    def _error(self, what: str, exc: BaseException, key: str = "") -> KeelError | None:
        """The KeelError an exception of boto3 (or of the HTTP stack under it) stands for;
        None for anything else (a bug: let it through)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, KeelError):
            return exc
        cause = _boto_cause(exc)
        if cause is None:
            return None
        where = mask_url(self.url)
        if isinstance(cause, ClientError):
            error = cause.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in ("404", "NoSuchKey", "NotFound", "NoSuchUpload"):
                return NotFound(f"{what}: s3://{self.bucket}/{key} not found", "check the id, or push the object")
            if code == "NoSuchBucket":
                return StoreError(f"bucket {self.bucket!r} does not exist", "create it or fix the s3:// URL")
            if code in _BUSY_CODES or status >= 500:
                return self._unavailable(f"{what} failed on {where}: the object store answered {code or status}")
            return StoreError(
                f"{what} failed on {where}: {code or status or 'error'}", "check credentials and endpoint"
            )
        assert isinstance(cause, BotoCoreError | OSError)
        if _unreachable(cause):  # no endpoint in the message: clients see it (the log has the cause)
            reason = "no answer in time" if "timeout" in type(cause).__name__.lower() else "connection failed"
            return self._unavailable(f"{what} failed on {where}: the object store cannot be reached ({reason})")
        reason = mask_urls_in(" ".join(str(cause).split())[:300]) or type(cause).__name__
        return StoreError(f"{what} failed on {where}: {reason}", "check the endpoint and network")

    def _unavailable(self, message: str) -> Unavailable:
        return Unavailable(
            message,
            "retry in a few seconds; if it persists, check the endpoint (endpoint_url= or AWS_ENDPOINT_URL)"
            " and that the object store is running and reachable",
            dependency="objects",
            retry_after=RETRY_AFTER_S,
        )

    def _chunks(self, what: str, body: Any, size: int) -> Iterator[bytes]:
        """The chunks of a response body; a connection lost mid-way is Unavailable, not a raw error."""
        try:
            yield from body.iter_chunks(size)
        except Exception as exc:
            self._raise(what, exc)
            raise

    def ping(self, timeout: float = 2.0) -> None:
        """Raise :class:`~keel.errors.Unavailable` unless the bucket answers a one-key
        listing now (one try, ``timeout`` seconds to connect and to read)."""
        from botocore.config import Config

        if self._probe is None:
            import boto3

            self._probe = _new_client(
                boto3,
                endpoint_url=self._endpoint_url,
                config=Config(
                    retries={"max_attempts": 1, "mode": "standard"},
                    connect_timeout=timeout,
                    read_timeout=timeout,
                    max_pool_connections=2,
                ),
            )
        start = f"{self.prefix}/" if self.prefix else ""
        try:
            self._probe.list_objects_v2(Bucket=self.bucket, Prefix=start, MaxKeys=1)
        except Exception as exc:
            error = self._error("list", exc)
            if error is None or isinstance(error, Unavailable):
                raise (error or self._unavailable(f"list failed on {mask_url(self.url)}")) from exc
            raise self._unavailable(error.message) from exc  # a missing bucket, refused credentials...

    def exists(self, oid: str) -> bool:
        try:
            self._call("head", self._client.head_object, Bucket=self.bucket, Key=self.key(oid))
            return True
        except NotFound:
            return False

    def exists_many(self, oids: Iterable[str]) -> set[str]:
        wanted = set(oids)
        if len(wanted) < 8:
            return {oid for oid in wanted if self.exists(oid)}
        # Listing a prefix costs one request per 1,000 keys: far fewer than a HEAD each.
        return wanted & set(self.iter_oids())

    def _write(self, oid: str, data: bytes) -> None:
        self._call("upload", self._client.put_object, Bucket=self.bucket, Key=self.key(oid), Body=data)

    def _write_file(self, oid: str, path: Path) -> None:
        self._call("upload", self._client.upload_file, Filename=str(path), Bucket=self.bucket, Key=self.key(oid))

    def _read(self, oid: str) -> bytes:
        response = self._call(
            f"object {oid}", self._client.get_object, Bucket=self.bucket, Key=self.key(check_oid(oid))
        )
        return b"".join(self._chunks(f"object {oid}", response["Body"], CHUNK))

    def _copy_to(self, oid: str, out: BinaryIO) -> None:
        response = self._call(
            f"object {oid}", self._client.get_object, Bucket=self.bucket, Key=self.key(check_oid(oid))
        )
        self._copy_verified(oid, self._chunks(f"object {oid}", response["Body"], CHUNK), out)

    def open_chunks(self, oid: str, size: int = CHUNK) -> Iterator[bytes]:
        """The stored bytes of ``oid`` as they arrive, unverified (the reader checks the
        hash). Raises NotFound at once, before the first chunk, if it is absent."""
        return self.open_stream(oid, size)[1]

    def open_stream(self, oid: str, size: int = CHUNK) -> tuple[int | None, Iterator[bytes]]:
        """``(stored size, chunks)``: the bytes of ``oid`` as they arrive from the bucket,
        unverified (the reader hashes them), no copy anywhere. Raises NotFound at once if it
        is absent; the response body is closed when the chunks end or are closed."""
        response = self._call(
            f"object {oid}", self._client.get_object, Bucket=self.bucket, Key=self.key(check_oid(oid))
        )
        body = response["Body"]
        length = response.get("ContentLength")

        def chunks() -> Iterator[bytes]:
            try:
                yield from self._chunks(f"object {oid}", body, size)
            finally:
                body.close()

        return (int(length) if length is not None else None), chunks()

    def abort_stale_uploads(self, older_than: float) -> list[str]:
        """Abort the multipart uploads under this store's prefix that were started more than
        ``older_than`` seconds ago (a process killed mid-upload leaves one, and its parts
        are kept and billed until it is aborted); the keys of those aborted. An upload that
        another process completes or aborts meanwhile is skipped."""
        import datetime

        start = f"{self.prefix}/" if self.prefix else ""
        cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=older_than)
        paginator = self._client.get_paginator("list_multipart_uploads")
        stale: list[tuple[str, str]] = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
                for upload in page.get("Uploads", []):
                    initiated = upload.get("Initiated")
                    if isinstance(initiated, datetime.datetime) and initiated.tzinfo is None:
                        initiated = initiated.replace(tzinfo=datetime.UTC)
                    if isinstance(initiated, datetime.datetime) and initiated <= cutoff:
                        stale.append((upload["Key"], upload["UploadId"]))
        except Exception as exc:
            self._raise("list multipart uploads", exc)
            raise
        aborted = []
        for key, upload_id in stale:
            try:
                self._call(
                    "abort multipart upload",
                    self._client.abort_multipart_upload,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                )
            except NotFound:  # completed or aborted by someone else meanwhile
                continue
            aborted.append(key)
        return aborted

    def presigned_url(self, oid: str, expires_in: int = 300, filename: str | None = None) -> str:
        """A URL that downloads ``oid`` straight from the bucket, with no credentials,
        for ``expires_in`` seconds (``filename`` names the download). Signing is local:
        no request is sent, so this does not check that the object exists."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(check_oid(oid))}
        if filename:
            params["ResponseContentDisposition"] = _attachment(filename)
        sign = self._client.generate_presigned_url
        url: str = self._call("presign", sign, ClientMethod="get_object", Params=params, ExpiresIn=expires_in)
        return url

    def iter_oids(self) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        start = f"{self.prefix}/" if self.prefix else ""
        pages = self._call("list", paginator.paginate, Bucket=self.bucket, Prefix=start)
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    rest = item["Key"][len(start) :]
                    fan, _, name = rest.partition("/")
                    if len(fan) == 2 and name:
                        yield fan + name
        except Exception as exc:
            self._raise("list", exc)
            raise

    def close(self) -> None:
        self._client.close()
        if self._probe is not None:
            self._probe.close()


def _boto_cause(exc: BaseException) -> BaseException | None:
    """The botocore (or urllib3/socket) error in ``exc`` or its causes: boto3's transfer
    manager wraps a ClientError in S3UploadFailedError, a streamed body raises urllib3's."""
    from botocore.exceptions import BotoCoreError, ClientError

    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ClientError | BotoCoreError | OSError):
            return seen
        if type(seen).__module__.startswith("urllib3"):
            return ConnectionError(str(seen))
        seen = seen.__cause__ or seen.__context__
    return None


def _unreachable(exc: BaseException) -> bool:
    """Whether a transport error means the server is away (not a bad request or credentials)."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    return isinstance(exc, BotoConnectionError | HTTPClientError | ConnectionError | TimeoutError)


def _attachment(filename: str) -> str:
    """A Content-Disposition naming ``filename`` (RFC 6266; non-ASCII via ``filename*``)."""
    from urllib.parse import quote

    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
