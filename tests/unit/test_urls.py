"""keel.core.urls: every URL and connection string in a message or a log line, credentials masked."""

from __future__ import annotations

import string
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.urls import MASK, is_secret_parameter, mask_url, mask_urls_in


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+psycopg://keel:s3cr3t@127.0.0.1:5432/keel",
            "postgresql+psycopg://keel:***@127.0.0.1:5432/keel",
        ),
        ("postgresql://keel@db/keel", "postgresql://keel@db/keel"),  # no password: unchanged
        ("postgresql://keel:@db/keel", "postgresql://keel:***@db/keel"),
        ("postgresql://keel:p/w@rd@db:5/k?x=1", "postgresql://keel:***@db:5/k?x=1"),  # unencoded '/' and '@'
        ("postgresql://keel:p%40ss@db/k", "postgresql://keel:***@db/k"),
        (
            "postgresql://keel@db/keel?sslpassword=abc&application_name=app&sslmode=require",
            "postgresql://keel@db/keel?sslpassword=***&application_name=app&sslmode=require",
        ),
        ("sqlite:////home/me/project/.keel/keel.db", "sqlite:////home/me/project/.keel/keel.db"),
        ("sqlite:///a@b/keel.db", "sqlite:///a@b/keel.db"),
        ("/srv/keel/objects", "/srv/keel/objects"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        (
            "s3://bucket/prefix?endpoint_url=http://minio:pw@host:9000",
            "s3://bucket/prefix?endpoint_url=http://minio:***@host:9000",
        ),
        (
            "s3://bucket/p?endpoint_url=" + quote("http://minio:pw@host:9000", safe=""),
            "s3://bucket/p?endpoint_url=http://minio:***@host:9000",
        ),
        ("https://KEY123@o0.ingest.example.io/7", "https://***@o0.ingest.example.io/7"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA/x&X-Amz-Signature=abc"
            "&X-Amz-Security-Token=tok&X-Amz-Expires=300",
            "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4&X-Amz-Credential=***&X-Amz-Signature=***"
            "&X-Amz-Security-Token=***&X-Amz-Expires=300",
        ),
        ("http://host/x?token=t&page=2#access_token=zz", "http://host/x?token=***&page=2#access_token=***"),
        ("host=db port=5432 user=keel password=s3cr3t dbname=k", "host=db port=5432 user=keel password=*** dbname=k"),
        ("host=db password='a b c' user=k", "host=db password='***' user=k"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_url(url: str | None, expected: str) -> None:
    assert mask_url(url) == expected


def test_mask_url_never_raises_on_odd_input() -> None:
    for odd in ("http://[::1:80/", "://", "a://b:c@", "postgresql://:@", "x" * 10_000, "\x00://\x00:\x00@"):
        assert isinstance(mask_url(odd), str)
    assert MASK in mask_url("a://b:c@d")


def test_mask_urls_in_a_message() -> None:
    message = (
        "database error on postgresql+psycopg://keel:s3cr3t@127.0.0.1:5/keel: duplicate key value violates "
        'unique constraint "uq" DETAIL: Key (name, version)=(chat, 3) already exists; dsn: host=x password=hunter2'
    )
    masked = mask_urls_in(message)
    assert "s3cr3t" not in masked and "hunter2" not in masked
    assert "postgresql+psycopg://keel:***@127.0.0.1:5/keel:" in masked
    assert "Key (name, version)=(chat, 3)" in masked  # what is not a credential is kept


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("sslpassword", True),
        ("api_key", True),
        ("apiKey", True),
        ("X-Amz-Signature", True),
        ("X-Amz-Date", False),
        ("access_token", True),
        ("sig", True),
        ("endpoint_url", False),
        ("application_name", False),
        ("max_tokens", False),
        ("sslmode", False),
    ],
)
def test_which_parameters_are_secret(name: str, secret: bool) -> None:
    assert is_secret_parameter(name) is secret


PASSWORDS = st.text(alphabet=string.ascii_letters + string.digits + "!$%&()*+,;=-._~/@", min_size=4, max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["postgresql+psycopg", "postgresql", "mysql", "https", "s3"]),
    st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=12),
    PASSWORDS,
    st.sampled_from(["", "/keel", "/keel?sslmode=require", "/db?application_name=x#frag"]),
)
def test_a_password_never_survives_masking(scheme: str, user: str, password: str, rest: str) -> None:
    password = f"PW{password}"  # told apart from the user name and the rest of the URL
    url = f"{scheme}://{user}:{password}@db.internal:5432{rest}"
    masked = mask_url(url)
    assert password not in masked
    assert masked.startswith(f"{scheme}://{user}:{MASK}@")
    assert password not in mask_urls_in(f"cannot connect to {url}: refused ({url})")
