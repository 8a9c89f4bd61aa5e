"""The S3 object store's errors: throttling, 5xx and unreachable endpoints are Unavailable
(503 on the server), a missing key NotFound, the rest StoreError; no message names a credential."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from botocore.stub import Stubber

from keel.errors import NotFound, StoreError, Unavailable
from keel.objects.s3 import S3ObjectStore
from servers import free_port

OID = "ab" * 32


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3ObjectStore]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "keel-test-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    found = S3ObjectStore("bucket", "prefix", endpoint_url=f"http://127.0.0.1:{free_port()}")  # nothing listens
    yield found
    found.close()


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("SlowDown", 503, Unavailable),
        ("ServiceUnavailable", 503, Unavailable),
        ("InternalError", 500, Unavailable),
        ("SomethingNew", 502, Unavailable),
        ("NoSuchKey", 404, NotFound),
        ("AccessDenied", 403, StoreError),
        ("NoSuchBucket", 404, StoreError),
    ],
)
def test_client_errors_are_mapped(store: S3ObjectStore, code: str, status: int, expected: type) -> None:
    with Stubber(store._client) as stub:
        stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
        with pytest.raises(expected) as raised:
            store.get_bytes(OID)
    error = raised.value
    assert type(error) is expected
    if isinstance(error, Unavailable):
        assert error.dependency == "objects" and error.retry_after >= 1 and error.http_status == 503
    assert "s3cr3t" not in str(error)


def test_an_unreachable_endpoint_is_unavailable_without_its_address(store: S3ObjectStore) -> None:
    import boto3
    from botocore.config import Config

    store._client.close()  # one try, no waiting: botocore's own retries are not under test
    endpoint = store._endpoint_url
    store._client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, config=Config(retries={"max_attempts": 1}, connect_timeout=1)
    )
    with pytest.raises(Unavailable) as raised:
        store.put_bytes(b"data")
    assert raised.value.dependency == "objects"
    assert str(endpoint) not in raised.value.message and "cannot be reached" in raised.value.message
    with pytest.raises(Unavailable):
        store.ping(timeout=0.5)
    with pytest.raises(Unavailable):
        list(store.iter_oids())
