"""An object store on S3 or any S3-compatible server (boto3).

Keys are ``prefix/ab/cdef...``. Uploads of files stream from disk
(multipart for large files); downloads stream and are verified by hash.
``endpoint_url`` (or ``AWS_ENDPOINT_URL``) selects a non-AWS server.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from keel.errors import NotFound, StoreError
from keel.objects.base import CHUNK, ObjectStore, check_oid

__all__ = ["S3ObjectStore"]


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

    def key(self, oid: str) -> str:
        """The S3 key that holds ``oid``."""
        name = f"{oid[:2]}/{oid[2:]}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def describe(self, oid: str) -> str:
        return f"s3://{self.bucket}/{self.key(oid)}"

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                key = kwargs.get("Key", "")
                raise NotFound(
                    f"{what}: s3://{self.bucket}/{key} not found", "check the id, or push the object"
                ) from None
            if code == "NoSuchBucket":
                raise StoreError(f"bucket {self.bucket!r} does not exist", "create it or fix the s3:// URL") from None
            raise StoreError(f"{what} failed on {self.url}: {code or exc}", "check credentials and endpoint") from None
        except BotoCoreError as exc:
            raise StoreError(f"{what} failed on {self.url}: {exc}", "check the endpoint and network") from None

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
        return response["Body"].read()

    def _copy_to(self, oid: str, out: BinaryIO) -> None:
        response = self._call(
            f"object {oid}", self._client.get_object, Bucket=self.bucket, Key=self.key(check_oid(oid))
        )
        self._copy_verified(oid, response["Body"].iter_chunks(CHUNK), out)

    def open_chunks(self, oid: str, size: int = CHUNK) -> Iterator[bytes]:
        """The stored bytes of ``oid`` as they arrive, unverified (the reader checks the
        hash). Raises NotFound at once, before the first chunk, if it is absent."""
        response = self._call(
            f"object {oid}", self._client.get_object, Bucket=self.bucket, Key=self.key(check_oid(oid))
        )
        return iter(response["Body"].iter_chunks(size))

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
        except self._errors.NoSuchBucket:
            raise StoreError(f"bucket {self.bucket!r} does not exist", "create it or fix the s3:// URL") from None

    def close(self) -> None:
        self._client.close()


def _attachment(filename: str) -> str:
    """A Content-Disposition naming ``filename`` (RFC 6266; non-ASCII via ``filename*``)."""
    from urllib.parse import quote

    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
