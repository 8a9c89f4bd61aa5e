"""An object store on S3 or any S3-compatible server (boto3).

Keys are ``prefix/ab/cdef...``. Uploads of files stream from disk
(multipart for large files); downloads stream and are verified by hash.
``endpoint_url`` (or ``AWS_ENDPOINT_URL``) selects a non-AWS server. Retries follow
``AWS_MAX_ATTEMPTS`` / ``AWS_RETRY_MODE`` when they are set (else 5 retries, standard
mode); a connection gets ``CONNECT_TIMEOUT_S`` seconds.

Errors: nothing boto3, botocore or the HTTP stack under them raises leaves this module
as itself; each becomes one :class:`~keel.errors.KeelError` whose hint names what to set
or run:

- a missing key is :class:`~keel.errors.NotFound`;
- a server that cannot be reached (connection refused, reset or timed out, after
  botocore's own retries), or that answers 5xx, ``SlowDown`` or another throttling
  code, is :class:`~keel.errors.Unavailable` (``dependency="objects"``: the team server
  answers 503 with ``Retry-After``);
- a malformed bucket name or endpoint URL is :class:`~keel.errors.InvalidInput`;
- the rest is a :class:`~keel.errors.StoreError`: no credentials (or an unknown
  ``AWS_PROFILE``), credentials the server refuses, access denied, a missing bucket, a
  bucket in another region, a skewed clock, a TLS failure, anything else.

No message names a credential, and none but a malformed endpoint's names the endpoint
(clients of the team server see them); URLs are rendered with :func:`keel.core.urls.mask_url`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from keel.core.hashing import is_oid
from keel.core.urls import mask_url, mask_urls_in
from keel.errors import InvalidInput, KeelError, NotFound, StoreError, Unavailable
from keel.objects.base import CHUNK, Capabilities, ObjectInfo, ObjectStore, check_oid

__all__ = ["S3ObjectStore"]

FRESH_ENOUGH_S = 600.0  # a freshen copies only objects older than this (gc's grace period is longer)
DELETE_BATCH = 1000  # keys per DeleteObjects request (S3's limit)
RETRY_AFTER_S = 2  # Retry-After of an object-store outage
CONNECT_TIMEOUT_S = 10  # botocore's 60 s per attempt makes a silent network look like a hang
MAX_RETRIES = 5  # after the first attempt, unless AWS_MAX_ATTEMPTS (which counts that one) is set
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
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchUpload"})
# The server does not accept the credentials themselves.
_REFUSED_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "AuthFailure",
        "InvalidSecurity",
    }
)
# The credentials are accepted but may not do this (a HEAD's 403 has no code: either).
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "Forbidden", "403"})
_REGION_CODES = frozenset(
    {"PermanentRedirect", "301", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
)
_CLOCK_CODES = frozenset({"RequestTimeTooSkewed", "RequestExpired"})
# botocore errors raised while finding or loading credentials (by name: some are newer than others).
_CREDENTIAL_ERRORS = frozenset(
    {
        "NoAuthTokenError",
        "TokenRetrievalError",
        "CredentialRetrievalError",
        "MetadataRetrievalError",
        "UnknownCredentialError",
        "RefreshWithMFAUnsupportedError",
        "SSOError",
        "SSOTokenLoadError",
        "UnauthorizedSSOTokenError",
        "PendingAuthorizationExpiredError",
        "LoginError",
        "LoginTokenLoadError",
        "LoginRefreshRequired",
        "LoginInsufficientPermissions",
        "LoginAuthorizationCodeError",
        "InvalidConfigError",
        "InfiniteLoopConfigError",
        "ConfigParseError",
        "ConfigNotFound",
    }
)
_REGION_ERRORS = frozenset({"InvalidRegionError", "NoRegionError", "UnknownRegionError", "UnknownEndpointError"})
_SET_CREDENTIALS = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
_SET_ANY_CREDENTIALS = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE to a profile of ~/.aws/credentials)"
)
_CHECK_ENDPOINT = "check the endpoint (endpoint_url= in the store's URL, or AWS_ENDPOINT_URL)"
# Where botocore found the credentials in use (``Credentials.method``), for messages.
_SOURCES = {
    "env": "from the environment (AWS_ACCESS_KEY_ID)",
    "shared-credentials-file": "from ~/.aws/credentials",
    "config-file": "from ~/.aws/config",
    "iam-role": "of the instance role",
    "container-role": "of the container role",
    "assume-role": "of the profile's role",
    "sso": "of the SSO session",
    "custom-process": "from the profile's credential_process",
}


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


def _retries() -> dict[str, Any]:
    """botocore's retry settings: AWS_MAX_ATTEMPTS and AWS_RETRY_MODE win when set (a
    value given here would override them), else 5 retries in standard mode."""
    retries: dict[str, Any] = {}
    if not os.environ.get("AWS_MAX_ATTEMPTS"):
        retries["max_attempts"] = MAX_RETRIES
    if not os.environ.get("AWS_RETRY_MODE"):
        retries["mode"] = "standard"
    return retries


class S3ObjectStore(ObjectStore):
    """Objects under ``s3://bucket/prefix/ab/cdef...``."""

    capabilities = Capabilities(multipart_put=True, presign=True, transfer_jobs=16)

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
        self._endpoint_url = endpoint_url
        self._probe: Any = None  # a client that tries once, for ping()
        self._client: Any = self._new_client(
            boto3,
            Config(retries=_retries(), connect_timeout=CONNECT_TIMEOUT_S, max_pool_connections=32),
        )
        self._errors = self._client.exceptions

    def _new_client(self, boto3: Any, config: Any) -> Any:
        """A client for this store; a setting botocore refuses (an unknown AWS_PROFILE, a
        malformed region or endpoint, a broken ~/.aws/config) is a KeelError at once."""
        try:
            return _new_client(boto3, endpoint_url=self._endpoint_url, config=config)
        except Exception as exc:
            if isinstance(exc, ValueError) and str(exc).startswith("Invalid endpoint"):
                raise InvalidInput(
                    f"the S3 endpoint of {mask_url(self.url)} is not a URL: {mask_url(self._endpoint_url)!r}",
                    "write it with its scheme, e.g. endpoint_url=http://host:9000 (or AWS_ENDPOINT_URL)",
                ) from None
            self._raise("opening the store", exc)
            if isinstance(exc, ValueError):  # botocore reads some settings with int() and the like
                raise StoreError(
                    self._failed("opening the store", f"an AWS setting is not valid: {_reason(exc)}"),
                    "check the AWS_* variables (AWS_MAX_ATTEMPTS is a number) and ~/.aws/config",
                ) from None
            raise

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
        """The KeelError an exception of boto3, botocore, s3transfer (or of the HTTP stack
        under them) stands for; None for anything else (a bug: let it through)."""
        from botocore.exceptions import ClientError

        if isinstance(exc, KeelError):
            return exc
        cause = _boto_cause(exc)
        if cause is None:
            return None
        if isinstance(cause, ClientError):
            return self._client_error(what, cause, key)
        return self._local_error(what, cause)

    def _failed(self, what: str, problem: str) -> str:
        return f"{what} failed on {mask_url(self.url)}: {problem}"

    def _client_error(self, what: str, exc: Any, key: str) -> KeelError:
        """What the server's answer (a ClientError) means."""
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        url = mask_url(self.url)
        if code in _NOT_FOUND_CODES:
            return NotFound(f"{what}: s3://{self.bucket}/{key} not found", "check the id, or push the object")
        if code == "NoSuchBucket":
            return StoreError(
                f"{what} failed: bucket {self.bucket!r} does not exist",
                f"create it (aws s3 mb s3://{self.bucket}) or fix the bucket in the s3:// URL",
            )
        if code == "InvalidBucketName":
            return _bad_bucket(self.bucket)
        if code in _BUSY_CODES or status >= 500:
            return self._unavailable(self._failed(what, f"the object store answered {code or status}"))
        if code in _REFUSED_CODES:
            expired = "Expired" in code or "Refresh" in code
            return StoreError(
                self._failed(what, f"the object store refused {self._credentials()}: {code}"),
                ("renew them (aws sso login, or new session credentials), or " if expired else "")
                + f"{_SET_CREDENTIALS} to keys this object store accepts",
            )
        if code in _DENIED_CODES:
            return StoreError(
                self._failed(what, f"access denied to {self._credentials()}: {code}"),
                f"ask for permission to list, read and write {url}, or {_SET_CREDENTIALS} to credentials that have it",
            )
        if code in _REGION_CODES:
            return StoreError(
                self._failed(what, f"the bucket is in another region than the one configured ({code})"),
                "set AWS_DEFAULT_REGION (or AWS_REGION) to the bucket's region",
            )
        if code in _CLOCK_CODES:
            return StoreError(
                self._failed(what, f"the object store refused the request's time ({code})"),
                "set this machine's clock right (enable NTP time sync)",
            )
        said = mask_urls_in(" ".join(str(error.get("Message", "")).split())[:200])
        answer = f"the object store answered {code or status or 'an error'}" + (f": {said}" if said else "")
        return StoreError(
            self._failed(what, answer),
            f"{_CHECK_ENDPOINT}, the credentials ({_SET_CREDENTIALS}) and the bucket",
        )

    def _local_error(self, what: str, exc: BaseException) -> KeelError:
        """What an error raised on this side (settings, credentials, network) means."""
        name = type(exc).__name__
        names = {klass.__name__ for klass in type(exc).__mro__}
        kwargs = getattr(exc, "kwargs", None) or {}
        if name == "NoCredentialsError":
            return StoreError(
                self._failed(what, "no AWS credentials were found"),
                _SET_ANY_CREDENTIALS,
            )
        if name == "PartialCredentialsError":
            missing = str(kwargs.get("cred_var", "a key"))
            return StoreError(
                self._failed(what, f"the AWS credentials {_source_text(kwargs.get('provider'))} lack {missing}"),
                _SET_CREDENTIALS,
            )
        if name == "ProfileNotFound":
            return StoreError(
                self._failed(what, f"AWS profile {kwargs.get('profile', '')!r} does not exist"),
                "set AWS_PROFILE to a profile of ~/.aws/config or ~/.aws/credentials (aws configure list-profiles),"
                " or unset it",
            )
        if names & _CREDENTIAL_ERRORS:
            # A credential provider's own words may come from a credential_process: only its name is shown.
            provider = kwargs.get("provider") if name in ("CredentialRetrievalError", "TokenRetrievalError") else None
            reason = f"{provider} failed" if provider else _reason(exc)
            return StoreError(
                self._failed(what, f"the AWS credentials could not be loaded: {reason}"),
                "check AWS_PROFILE and ~/.aws/config (for an SSO profile: aws sso login); or " + _SET_CREDENTIALS,
            )
        if names & _REGION_ERRORS:
            return StoreError(
                self._failed(what, f"the AWS region is not valid: {_reason(exc)}"),
                "set AWS_DEFAULT_REGION (or AWS_REGION) to the bucket's region, e.g. us-east-1",
            )
        if name in ("ParamValidationError", "InvalidDNSNameError") and "bucket" in str(exc).lower():
            return _bad_bucket(self.bucket)
        if name == "SSLError":
            return StoreError(
                self._failed(what, "the TLS connection to the object store failed (its certificate is not trusted)"),
                f"if it uses a private CA, set AWS_CA_BUNDLE to its certificate bundle; {_CHECK_ENDPOINT}",
            )
        if name == "ProxyConnectionError":
            return self._unavailable(
                self._failed(what, "the object store cannot be reached through the proxy"),
                "check HTTPS_PROXY, HTTP_PROXY and NO_PROXY (set NO_PROXY=host to reach it directly)",
            )
        if _unreachable(exc):  # no endpoint in the message: clients see it (the log has the cause)
            reason = "no answer in time" if "timeout" in name.lower() else "connection failed"
            return self._unavailable(self._failed(what, f"the object store cannot be reached ({reason})"))
        return StoreError(
            self._failed(what, _reason(exc)),
            f"{_CHECK_ENDPOINT}, the AWS_* variables and ~/.aws/config",
        )

    def _credentials(self) -> str:
        """The credentials in use, as words: "the credentials from the environment
        (AWS_ACCESS_KEY_ID)" (where they came from, when known). Never a key."""
        try:
            credentials = _SESSION.get_credentials() if _SESSION is not None else None
        except Exception:  # noqa: BLE001 - only for a message; never hide the error being reported
            credentials = None
        source = _source_text(getattr(credentials, "method", None))
        return f"the credentials {source}" if source else "the credentials"

    def _unavailable(self, message: str, hint: str | None = None) -> Unavailable:
        return Unavailable(
            message,
            hint or f"retry in a few seconds; if it persists, {_CHECK_ENDPOINT} and that the object store is running",
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
        import boto3
        from botocore.config import Config

        start = f"{self.prefix}/" if self.prefix else ""
        try:
            if self._probe is None:
                self._probe = self._new_client(
                    boto3,
                    Config(
                        retries={"max_attempts": 1, "mode": "standard"},
                        connect_timeout=timeout,
                        read_timeout=timeout,
                        max_pool_connections=2,
                    ),
                )
            self._probe.list_objects_v2(Bucket=self.bucket, Prefix=start, MaxKeys=1)
        except Exception as exc:
            error = self._error("listing", exc)
            if error is None or isinstance(error, Unavailable):
                raise (error or self._unavailable(self._failed("listing", type(exc).__name__))) from exc
            # a missing bucket, refused credentials...: what to fix stays in the hint
            raise self._unavailable(error.message, error.hint) from exc

    def exists(self, oid: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self.key(oid))
            return True
        except Exception as exc:
            error = self._error("lookup", exc, self.key(oid))
            if isinstance(error, NotFound):
                return False
            if _status(exc) in (301, 400, 403):  # a HEAD's error has no body: a listing says why
                self._list_one("lookup")
            if error is not None:
                raise error from (exc if isinstance(error, Unavailable) else None)
            raise

    def exists_many(self, oids: Iterable[str]) -> set[str]:
        wanted = set(oids)
        if len(wanted) < 8:
            found = {oid for oid in wanted if self.exists(oid)}
            if wanted and not found:  # a missing bucket answers a HEAD with a bare 404 too
                self._list_one("lookup")
            return found
        # Listing a prefix costs one request per 1,000 keys: far fewer than a HEAD each.
        return wanted & set(self.iter_oids())

    def _list_one(self, what: str) -> None:
        """List at most one key of the prefix: raises what a missing bucket or refused
        credentials stand for, which a HEAD's bodiless answer cannot tell."""
        start = f"{self.prefix}/" if self.prefix else ""
        self._call(what, self._client.list_objects_v2, Bucket=self.bucket, Prefix=start, MaxKeys=1)

    def _write(self, oid: str, data: bytes) -> None:
        self._call("upload", self._client.put_object, Bucket=self.bucket, Key=self.key(oid), Body=data)

    def _write_file(self, oid: str, path: Path) -> None:
        self._call("upload", self._client.upload_file, Filename=str(path), Bucket=self.bucket, Key=self.key(oid))

    def _read(self, oid: str) -> bytes:
        response = self._call(
            f"reading object {oid}", self._client.get_object, Bucket=self.bucket, Key=self.key(check_oid(oid))
        )
        return b"".join(self._chunks(f"reading object {oid}", response["Body"], CHUNK))

    def _copy_to(self, oid: str, out: BinaryIO) -> None:
        response = self._call(
            f"reading object {oid}", self._client.get_object, Bucket=self.bucket, Key=self.key(check_oid(oid))
        )
        self._copy_verified(oid, self._chunks(f"reading object {oid}", response["Body"], CHUNK), out)

    def open_chunks(self, oid: str, size: int = CHUNK) -> Iterator[bytes]:
        """The stored bytes of ``oid`` as they arrive, unverified (the reader checks the
        hash). Raises NotFound at once, before the first chunk, if it is absent."""
        return self.open_stream(oid, size)[1]

    def open_stream(self, oid: str, size: int = CHUNK) -> tuple[int | None, Iterator[bytes]]:
        """``(stored size, chunks)``: the bytes of ``oid`` as they arrive from the bucket,
        unverified (the reader hashes them), no copy anywhere. Raises NotFound at once if it
        is absent; the response body is closed when the chunks end or are closed."""
        response = self._call(
            f"reading object {oid}", self._client.get_object, Bucket=self.bucket, Key=self.key(check_oid(oid))
        )
        body = response["Body"]
        length = response.get("ContentLength")

        def chunks() -> Iterator[bytes]:
            try:
                yield from self._chunks(f"reading object {oid}", body, size)
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
        pages = self._call("listing", paginator.paginate, Bucket=self.bucket, Prefix=start)
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    rest = item["Key"][len(start) :]
                    fan, _, name = rest.partition("/")
                    if len(fan) == 2 and name:
                        yield fan + name
        except Exception as exc:
            self._raise("listing", exc)
            raise

    # -- listing, freshening and deleting ----------------------------------------------------
    def _listing(self, prefix: str) -> Iterator[ObjectInfo]:
        """The objects whose keys start with ``prefix`` (under the store's), with the size and
        LastModified of each, a page of 1,000 per request."""
        start = f"{self.prefix}/" if self.prefix else ""
        paginator = self._client.get_paginator("list_objects_v2")
        pages = self._call("listing", paginator.paginate, Bucket=self.bucket, Prefix=start + prefix)
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    fan, _, name = item["Key"][len(start) :].partition("/")
                    if len(fan) == 2 and name and is_oid(fan + name):
                        yield ObjectInfo(fan + name, int(item.get("Size", 0)), item["LastModified"].timestamp())
        except Exception as exc:
            self._raise("listing", exc)
            raise

    def iter_objects(self) -> Iterator[ObjectInfo]:
        return self._listing("")

    def freshened(self, oid: str) -> bool:
        """A HEAD: absent is False; stored and younger than :data:`FRESH_ENOUGH_S` is True at
        once (inside any grace period of ten minutes or more already); older, it is copied
        onto itself (new metadata, so S3 accepts the copy), which sets its LastModified to now.
        Objects over 5 GB cannot be copied in one request: those are reported stored, not
        fresh. A copy refused for another reason (a missing bucket, a copy the credentials
        may not make) answers False: the caller's upload reports it, or stores it anew."""
        if not is_oid(oid):
            return False
        head = self._head(oid)
        if head is None:
            return False
        modified = head.get("LastModified")
        if modified is not None and modified.timestamp() >= time.time() - FRESH_ENOUGH_S:
            return True
        key = self.key(oid)
        try:
            self._client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                MetadataDirective="REPLACE",
                Metadata={"keel-freshened": "1"},
            )
        except Exception as exc:
            error = self._error("freshening", exc, key)
            if isinstance(error, NotFound):
                return False
            if _status(exc) == 400:  # too large to copy in one request
                return True
            if error is None:
                raise
            if isinstance(error, Unavailable):
                raise error from exc
            return False
        return True

    def freshen(self, oid: str) -> None:
        self.freshened(oid)

    def freshen_many(self, oids: Iterable[str]) -> set[str]:
        """The stored subset of ``oids``: one listing (as :meth:`exists_many`), then a copy onto
        itself of each one older than :data:`FRESH_ENOUGH_S` only (a younger one is inside any
        grace period of ten minutes or more already), in parallel."""
        from concurrent.futures import ThreadPoolExecutor

        wanted = set(oids)
        if len(wanted) < 8:
            return {oid for oid in wanted if self.freshened(oid)}
        listed = {info.oid: info.mtime for info in self.iter_objects() if info.oid in wanted}
        stale = [oid for oid, mtime in listed.items() if mtime < time.time() - FRESH_ENOUGH_S]
        if not stale:
            return set(listed)
        with ThreadPoolExecutor(min(16, len(stale))) as pool:
            gone = {oid for oid, there in zip(stale, pool.map(self.freshened, stale), strict=True) if not there}
        return set(listed) - gone

    def _head(self, oid: str) -> dict[str, Any] | None:
        """The HEAD answer of ``oid``, None if it is absent (as :meth:`exists` reads errors)."""
        try:
            head: dict[str, Any] = self._client.head_object(Bucket=self.bucket, Key=self.key(oid))
        except Exception as exc:
            error = self._error("lookup", exc, self.key(oid))
            if isinstance(error, NotFound):
                return None
            if _status(exc) in (301, 400, 403):  # a HEAD's error has no body: a listing says why
                self._list_one("lookup")
            if error is not None:
                raise error from (exc if isinstance(error, Unavailable) else None)
            raise
        return head

    def _size(self, oid: str) -> int | None:
        """The stored size of ``oid`` (a HEAD), None if absent."""
        head = self._head(oid)
        return None if head is None else int(head.get("ContentLength", 0))

    def _delete_keys(self, oids: list[str]) -> None:
        """DeleteObjects, :data:`DELETE_BATCH` keys per request; a key the server could not
        delete is a StoreError (absent keys count as deleted: S3 answers them so)."""
        for i in range(0, len(oids), DELETE_BATCH):
            batch = oids[i : i + DELETE_BATCH]
            reply = self._call(
                "deleting objects",
                self._client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": self.key(oid)} for oid in batch], "Quiet": True},
            )
            errors = [e for e in reply.get("Errors", []) if e.get("Code") not in _NOT_FOUND_CODES]
            if errors:
                first = errors[0]
                raise StoreError(
                    self._failed(
                        "deleting objects",
                        f"{len(errors)} key(s) not deleted, e.g. {first.get('Key')}: {first.get('Code')}",
                    ),
                    "check that the credentials may delete objects in the bucket (s3:DeleteObject), then retry",
                )

    def delete_many(self, oids: Iterable[str]) -> int:
        """Delete ``oids`` in DeleteObjects batches of 1,000; the bytes freed (each size is
        read with a HEAD first, in parallel: this is for the few objects an erasure orphans;
        gc deletes what it listed through :meth:`prune`, which knows the sizes)."""
        from concurrent.futures import ThreadPoolExecutor

        wanted = list(dict.fromkeys(check_oid(oid) for oid in oids))
        if not wanted:
            return 0
        with ThreadPoolExecutor(min(16, len(wanted))) as pool:
            sizes = dict(zip(wanted, pool.map(self._size, wanted), strict=True))
        present = [oid for oid in wanted if sizes[oid] is not None]
        self._delete_keys(present)
        return sum(sizes[oid] or 0 for oid in present)

    def prune(self, infos: Iterable[ObjectInfo], fresh_after: float) -> list[ObjectInfo]:
        """Delete the listed objects not written or freshened after ``fresh_after``. Their
        fan-out folder (``ab/``) is listed again just before its objects are deleted, so a
        writer that freshened one since gc's listing keeps it; S3 has no conditional
        delete, so a freshen in the moment between that listing and the delete request is
        the one window left (docs/gc.md)."""
        by_fan: dict[str, list[str]] = {}
        for info in infos:
            by_fan.setdefault(info.oid[:2], []).append(check_oid(info.oid))
        removed: list[ObjectInfo] = []
        for fan in sorted(by_fan):
            now = {info.oid: info for info in self._listing(fan + "/")}
            stale = [now[oid] for oid in by_fan[fan] if oid in now and now[oid].mtime <= fresh_after]
            self._delete_keys([info.oid for info in stale])
            removed += stale
        return removed

    def close(self) -> None:
        self._client.close()
        if self._probe is not None:
            self._probe.close()


def _boto_cause(exc: BaseException) -> BaseException | None:
    """The botocore (or urllib3/socket) error in ``exc`` or its causes: boto3's transfer
    manager wraps a ClientError in S3UploadFailedError, a streamed body raises urllib3's.
    A boto3 or s3transfer error with no such cause is its own; None for anything else."""
    from botocore.exceptions import BotoCoreError, ClientError

    own: BaseException | None = None
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, ClientError | BotoCoreError | OSError):
            return seen
        module = type(seen).__module__
        if module.startswith("urllib3"):
            return ConnectionError(str(seen))
        if own is None and module.startswith(("boto3", "botocore", "s3transfer")):
            own = seen
        seen = seen.__cause__ or seen.__context__
    return own


def _status(exc: BaseException) -> int:
    """The HTTP status of the server's answer in ``exc`` (0 if it is not one)."""
    from botocore.exceptions import ClientError

    cause = _boto_cause(exc)
    if not isinstance(cause, ClientError):
        return 0
    return int(cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _reason(exc: BaseException) -> str:
    """``exc`` as one short line with any URL's secrets masked (its class name if it says nothing)."""
    text = mask_urls_in(" ".join(str(exc).split())[:300]).rstrip(".")
    return text or type(exc).__name__


def _source_text(method: object) -> str:
    """Words for where credentials came from (botocore's ``Credentials.method``)."""
    if not isinstance(method, str) or not method:
        return ""
    return _SOURCES.get(method, f"from {method}")


def _bad_bucket(bucket: str) -> InvalidInput:
    return InvalidInput(
        f"{bucket!r} is not a valid S3 bucket name",
        "bucket names are 3-63 lowercase letters, digits, dots and hyphens: fix the s3://BUCKET/prefix URL",
    )


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
