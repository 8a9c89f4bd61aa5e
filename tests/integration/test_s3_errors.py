"""The S3 object store's errors, against the suite's real S3-protocol server (moto).

Every failure is one KeelError whose hint says what to set or run: a missing bucket,
no credentials, an unknown profile, credentials the server refuses (moto checks them
against its IAM users while ``checked_credentials`` is on), access denied, a closed
port (Unavailable: the team server answers 503), a malformed endpoint or region. No
message names a credential. Codes the local server cannot produce (throttling, a
skewed clock, a bucket in another region) go through botocore's Stubber.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from botocore.stub import Stubber

from keel.errors import InvalidInput, KeelError, NotFound, StoreError, Unavailable
from keel.objects import open_object_store
from keel.objects import s3 as s3_module
from keel.objects.s3 import S3ObjectStore
from servers import S3Server, free_port

pytestmark = pytest.mark.s3

OID = "ab" * 32
KEY_ID = "keel-test-id"
SECRET = "s3cr3t-never-shown"


def _oids(n: int) -> list[str]:
    return [f"{i:02x}" * 32 for i in range(n)]


@pytest.fixture
def aws(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean AWS setup: no AWS_* variable but a region, empty config and credentials
    files, no instance metadata, one try per request, and a fresh shared boto3 session
    (another test's cached credentials must not answer for these)."""
    assert s3_server.client is not None  # the suite's own client keeps the server's dummy credentials
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setattr(s3_module, "_SESSION", None)
    return monkeypatch


@pytest.fixture
def keys(aws: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """``aws`` with credentials in the environment (moto takes any while it does not check them)."""
    aws.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    aws.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    return aws


def _url(s3_server: S3Server, bucket: str) -> str:
    return f"s3://{bucket}/objects?{urlencode({'endpoint_url': s3_server.endpoint_url})}"


@contextlib.contextmanager
def _opened(url: str) -> Iterator[S3ObjectStore]:
    store = open_object_store(url)
    assert isinstance(store, S3ObjectStore)
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def checked_credentials(s3_server: S3Server) -> Iterator[None]:
    """moto checks every request's credentials against its IAM users while inside."""

    def set_auth(count: str) -> str:
        request = urllib.request.Request(
            f"{s3_server.endpoint_url}/moto-api/reset-auth",
            data=count.encode(),
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return str(json.loads(response.read())["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])

    before = set_auth("0")
    try:
        yield
    finally:
        set_auth(before)


def _iam_user(s3_server: S3Server, name: str, policy: dict[str, Any] | None) -> tuple[str, str]:
    """A new IAM user of the local server with ``policy`` (None: no permission at all); its keys."""
    import boto3

    iam = boto3.session.Session().client(
        "iam",
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        iam.create_user(UserName=name)
        if policy is not None:
            iam.put_user_policy(UserName=name, PolicyName="keel-test", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
    finally:
        iam.close()
    return str(key["AccessKeyId"]), str(key["SecretAccessKey"])


def _one_line(error: KeelError) -> str:
    text = str(error)
    assert "\n" not in text and error.hint, text
    for secret in (SECRET, "AWS_SECRET_ACCESS_KEY=", "Signature="):
        assert secret not in text
    return text


# Every call that reaches the bucket, by the path that makes it.
Operation = Callable[[S3ObjectStore, Path], object]
OPERATIONS: dict[str, Operation] = {
    "exists (HEAD)": lambda store, _: store.exists(OID),
    "exists_many, few (HEADs)": lambda store, _: store.exists_many([OID]),
    "exists_many, many (listing)": lambda store, _: store.exists_many(_oids(10)),
    "put_bytes": lambda store, _: store.put_bytes(b"some data"),
    "put_file, multipart": lambda store, big: store.put_file(big),
    "get_bytes": lambda store, _: store.get_bytes(OID),
    "open_stream": lambda store, _: store.open_stream(OID),
    "iter_oids": lambda store, _: list(store.iter_oids()),
    "abort_stale_uploads": lambda store, _: store.abort_stale_uploads(0),
}


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Past boto3's 8 MiB multipart threshold: put_file uploads it in parts."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    path.write_bytes(os.urandom(9 << 20))
    return path


# -- a missing bucket -----------------------------------------------------------------------
def _each_fails(store: S3ObjectStore, operations: list[str], big_file: Path) -> dict[str, KeelError]:
    """The error each operation raises (each must raise a KeelError, nothing else)."""
    errors: dict[str, KeelError] = {}
    for operation in operations:
        try:
            OPERATIONS[operation](store, big_file)
        except KeelError as exc:
            errors[operation] = exc
        else:
            raise AssertionError(f"{operation} did not fail")
    return errors


def test_a_missing_bucket_is_named_on_every_path(keys: pytest.MonkeyPatch, s3_server: S3Server, big_file: Path) -> None:
    # (A lone exists() is False: a HEAD answers a missing bucket as a missing key, and the
    # write that follows names the bucket; exists_many checks the bucket when it finds nothing.)
    operations = [op for op in OPERATIONS if op != "exists (HEAD)"]
    with _opened(_url(s3_server, "no-such-bucket")) as store:
        errors = _each_fails(store, operations, big_file)
    for operation, error in errors.items():
        assert type(error) is StoreError, operation
        assert "bucket 'no-such-bucket' does not exist" in _one_line(error), operation
        assert "aws s3 mb s3://no-such-bucket" in str(error.hint), operation
    # boto3's transfer manager raised S3UploadFailedError for the multipart upload
    assert "CreateMultipartUpload" in str(errors["put_file, multipart"].__context__)


def test_ping_reports_a_missing_bucket_as_unavailable_with_what_to_fix(
    keys: pytest.MonkeyPatch, s3_server: S3Server
) -> None:
    with _opened(_url(s3_server, "no-such-bucket")) as store, pytest.raises(Unavailable) as raised:
        store.ping(timeout=1)
    assert "does not exist" in _one_line(raised.value) and "aws s3 mb" in str(raised.value.hint)


# -- no credentials ----------------------------------------------------------------------------
def test_no_credentials_say_which_variables_to_set(
    aws: pytest.MonkeyPatch, s3_server: S3Server, big_file: Path
) -> None:
    bucket = s3_server.create_bucket()
    with _opened(_url(s3_server, bucket)) as store:
        errors = _each_fails(store, list(OPERATIONS), big_file)
        with pytest.raises(StoreError) as raised:
            store.presigned_url(OID)  # signing is local: no request, but no key to sign with
    errors["presigned_url"] = raised.value
    for operation, error in errors.items():
        assert type(error) is StoreError, operation
        assert "no AWS credentials were found" in _one_line(error), operation
        assert "AWS_ACCESS_KEY_ID" in str(error.hint) and "AWS_PROFILE" in str(error.hint), operation


def test_half_the_credentials_name_the_missing_one(aws: pytest.MonkeyPatch, s3_server: S3Server) -> None:
    aws.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    with pytest.raises(StoreError) as raised:
        open_object_store(_url(s3_server, "any"))
    assert "lack AWS_SECRET_ACCESS_KEY" in _one_line(raised.value)


def test_an_unknown_profile_is_named_when_the_store_opens(aws: pytest.MonkeyPatch, s3_server: S3Server) -> None:
    aws.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(StoreError) as raised:
        open_object_store(_url(s3_server, "any"))
    assert "AWS profile 'no-such-profile' does not exist" in _one_line(raised.value)
    assert "AWS_PROFILE" in str(raised.value.hint)


def test_a_failing_credential_process_is_named_but_not_quoted(
    aws: pytest.MonkeyPatch, s3_server: S3Server, tmp_path: Path
) -> None:
    config = tmp_path / "aws-config"
    config.write_text(f'[default]\ncredential_process = /bin/sh -c "echo token={SECRET} >&2; exit 1"\n')
    aws.setenv("AWS_CONFIG_FILE", str(config))
    with pytest.raises(StoreError) as raised:
        open_object_store(_url(s3_server, "any"))
    assert "could not be loaded: custom-process failed" in _one_line(raised.value)
    assert "AWS_PROFILE" in str(raised.value.hint)


def test_a_malformed_setting_is_named(aws: pytest.MonkeyPatch, s3_server: S3Server) -> None:
    aws.setenv("AWS_MAX_ATTEMPTS", "many")
    with pytest.raises(StoreError) as raised:
        open_object_store(_url(s3_server, "any"))
    assert "an AWS setting is not valid" in _one_line(raised.value) and "AWS_MAX_ATTEMPTS" in str(raised.value.hint)


# -- credentials the server refuses, access denied -------------------------------------------
def test_unknown_keys_are_refused_and_a_head_says_why(
    keys: pytest.MonkeyPatch, s3_server: S3Server, big_file: Path
) -> None:
    bucket = s3_server.create_bucket()
    operations = ["exists (HEAD)", "exists_many, few (HEADs)", "put_bytes", "get_bytes", "iter_oids"]
    with _opened(_url(s3_server, bucket)) as store, checked_credentials(s3_server):
        errors = _each_fails(store, operations, big_file)
    for operation, error in errors.items():
        text = _one_line(error)
        # A HEAD's 403 has no body; one listing tells refused keys from missing permissions.
        assert "refused the credentials from the environment (AWS_ACCESS_KEY_ID): InvalidAccessKeyId" in text, text
        assert "AWS_SECRET_ACCESS_KEY" in str(error.hint) and KEY_ID not in text, operation


def test_a_wrong_secret_is_refused(keys: pytest.MonkeyPatch, s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    key_id, _ = _iam_user(s3_server, "keel-wrong-secret", None)
    keys.setenv("AWS_ACCESS_KEY_ID", key_id)
    with _opened(_url(s3_server, bucket)) as store, checked_credentials(s3_server), pytest.raises(StoreError) as raised:
        store.exists_many(_oids(10))
    assert "refused the credentials" in _one_line(raised.value) and "SignatureDoesNotMatch" in str(raised.value)
    assert key_id not in str(raised.value)


def test_access_denied_says_which_permissions_are_needed(keys: pytest.MonkeyPatch, s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    key_id, secret = _iam_user(s3_server, "keel-no-rights", None)
    keys.setenv("AWS_ACCESS_KEY_ID", key_id)
    keys.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with _opened(_url(s3_server, bucket)) as store, checked_credentials(s3_server):
        for call in (lambda: store.exists(OID), lambda: list(store.iter_oids())):
            with pytest.raises(StoreError) as raised:
                call()
            assert "access denied to the credentials from the environment" in _one_line(raised.value)
            assert "list, read and write" in str(raised.value.hint) and secret not in str(raised.value)


def test_read_only_credentials_are_denied_uploads(
    keys: pytest.MonkeyPatch, s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = s3_server.create_bucket()
    read_only = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "*"},
        ],
    }
    key_id, secret = _iam_user(s3_server, "keel-read-only", read_only)
    keys.setenv("AWS_ACCESS_KEY_ID", key_id)
    keys.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with _opened(_url(s3_server, bucket)) as store, checked_credentials(s3_server):
        assert store.exists_many([OID]) == set()  # reading is allowed
        small = tmp_path / "small.txt"
        small.write_text("small")
        for call in (lambda: store.put_bytes(b"x"), lambda: store.put_file(small)):
            with pytest.raises(StoreError) as raised:
                call()
            assert raised.value.message.startswith("upload failed on s3://")
            assert "access denied" in _one_line(raised.value)


# -- the endpoint, the region -------------------------------------------------------------------
def test_a_closed_port_is_unavailable_without_its_address(keys: pytest.MonkeyPatch, big_file: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens
    with _opened(f"s3://bucket/prefix?endpoint_url={endpoint}") as store:
        errors = _each_fails(store, list(OPERATIONS), big_file)
        with pytest.raises(Unavailable) as raised:
            store.ping(timeout=0.5)
    errors["ping"] = raised.value
    for operation, error in errors.items():
        assert isinstance(error, Unavailable), operation
        assert error.dependency == "objects" and error.http_status == 503 and error.retry_after >= 1
        assert "cannot be reached" in _one_line(error) and endpoint.split("//")[1] not in str(error), operation
        assert "AWS_ENDPOINT_URL" in str(error.hint), operation


def test_aws_max_attempts_is_obeyed(keys: pytest.MonkeyPatch, s3_server: S3Server) -> None:
    with _opened(_url(s3_server, "any")) as store:
        assert store._client.meta.config.retries["total_max_attempts"] == 1
    keys.delenv("AWS_MAX_ATTEMPTS")
    with _opened(_url(s3_server, "any")) as store:
        assert store._client.meta.config.retries["total_max_attempts"] == s3_module.MAX_RETRIES + 1


def test_an_endpoint_without_a_scheme_is_invalid_input(keys: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInput) as raised:
        open_object_store("s3://bucket/prefix?endpoint_url=localhost:9000")
    assert "'localhost:9000'" in _one_line(raised.value) and "http://" in str(raised.value.hint)


def test_a_malformed_region_is_named(keys: pytest.MonkeyPatch, s3_server: S3Server) -> None:
    keys.setenv("AWS_DEFAULT_REGION", "not a region")
    with pytest.raises(StoreError) as raised:
        open_object_store(_url(s3_server, "any"))
    assert "region" in _one_line(raised.value) and "AWS_DEFAULT_REGION" in str(raised.value.hint)


# -- answers the local server cannot give -----------------------------------------------------
ANSWERS = [
    ("SlowDown", 503, Unavailable, "answered SlowDown"),
    ("ServiceUnavailable", 503, Unavailable, "answered ServiceUnavailable"),
    ("InternalError", 500, Unavailable, "answered InternalError"),
    ("SomethingNew", 502, Unavailable, "answered SomethingNew"),
    ("NoSuchKey", 404, NotFound, "not found"),
    ("AccessDenied", 403, StoreError, "access denied"),
    ("NoSuchBucket", 404, StoreError, "does not exist"),
    ("ExpiredToken", 400, StoreError, "refused the credentials"),
    ("RequestTimeTooSkewed", 403, StoreError, "request's time"),
    ("PermanentRedirect", 301, StoreError, "another region"),
    ("InvalidBucketName", 400, InvalidInput, "not a valid S3 bucket name"),
    ("SomethingElse", 400, StoreError, "answered SomethingElse"),
]


def test_each_answer_is_mapped(keys: pytest.MonkeyPatch) -> None:
    with _opened(f"s3://bucket/prefix?endpoint_url=http://127.0.0.1:{free_port()}") as store:
        for code, status, expected, words in ANSWERS:
            with Stubber(store._client) as stub:
                stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
                with pytest.raises(expected) as raised:
                    store.get_bytes(OID)
            error = raised.value
            assert type(error) is expected and words in _one_line(error), code
            if isinstance(error, Unavailable):
                assert error.dependency == "objects" and error.retry_after >= 1 and error.http_status == 503


def test_any_other_boto3_error_is_a_store_error(keys: pytest.MonkeyPatch) -> None:
    from boto3.exceptions import S3UploadFailedError

    with _opened("s3://bucket/prefix?endpoint_url=http://127.0.0.1:9") as store:
        error = store._error("upload", S3UploadFailedError("Failed to upload x: something new"))
    assert type(error) is StoreError and "something new" in _one_line(error)


# -- data remotes: push, fetch and repair name the remote --------------------------------------
@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    """A keel workspace tracking two small files (their objects in the cache)."""
    from keel.sdk import data, session
    from keel.sdk.workspace import init_workspace

    root = tmp_path / "ws"
    root.mkdir()
    init_workspace(root)
    os.chdir(root)
    (root / "a.txt").write_text("first file\n")
    (root / "b.txt").write_text("second file\n")
    data.add(["a.txt", "b.txt"])
    yield root
    session.reset()


def _drop_cache(root: Path) -> None:
    """Forget the cached objects, so a fetch has to ask the remote."""
    for path in (root / ".keel" / "objects").glob("??/*"):
        path.unlink()


def test_push_and_fetch_of_a_missing_bucket_name_the_remote(
    keys: pytest.MonkeyPatch, s3_server: S3Server, workspace: Path
) -> None:
    from keel.sdk import data

    data.add_remote("r", _url(s3_server, "no-such-bucket"), default=True)
    with pytest.raises(StoreError) as raised:
        data.push()
    assert raised.value.message.startswith("remote 'r': ") and "does not exist" in _one_line(raised.value)
    _drop_cache(workspace)
    with pytest.raises(StoreError) as raised:  # not "the remote lacks a.txt, b.txt": the bucket is missing
        data.fetch()
    assert raised.value.message.startswith("remote 'r': ") and "does not exist" in _one_line(raised.value)


def test_an_unreachable_remote_points_at_keel_remote_list(keys: pytest.MonkeyPatch, workspace: Path) -> None:
    from keel.sdk import data

    data.add_remote("backup", f"s3://bucket/x?endpoint_url=http://127.0.0.1:{free_port()}", default=True)
    with pytest.raises(Unavailable) as raised:
        data.push()
    text = _one_line(raised.value)
    assert raised.value.message.startswith("remote 'backup': ") and "cannot be reached" in text
    assert "keel remote list" in str(raised.value.hint) and "keel remote add --force backup" in str(raised.value.hint)
    assert [s.state for s in data.status()] == ["ok", "ok"]  # nothing local changed


def test_a_remote_without_credentials_says_what_to_set(aws: pytest.MonkeyPatch, workspace: Path) -> None:
    from keel.sdk import data

    data.add_remote("r", "s3://bucket/x", default=True)  # AWS itself: no request leaves before signing
    with pytest.raises(StoreError) as raised:
        data.push()
    assert raised.value.message.startswith("remote 'r': ") and "no AWS credentials" in _one_line(raised.value)
    aws.setenv("AWS_PROFILE", "nowhere")
    aws.setattr(s3_module, "_SESSION", None)
    with pytest.raises(StoreError) as raised:  # the store cannot even be opened
        data.push()
    assert raised.value.message.startswith("remote 'r': ") and "'nowhere' does not exist" in _one_line(raised.value)
