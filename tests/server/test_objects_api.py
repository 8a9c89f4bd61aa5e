"""``/api/v1/objects`` through the ASGI app: upload, download, batch existence checks,
hash mismatch, size limit, roles, bad ids; and presigned downloads on S3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from keel.core.hashing import hash_bytes
from keel.server import create_app
from keel.server.routers.objects import presigned_download
from keel.services.auth import AuthStore

API = "/api/v1/objects"
LIMIT = 4096


class Clients:
    """One app with an admin, a writer, a reader and a user with no role."""

    def __init__(self, client: TestClient, tokens: dict[str, str]) -> None:
        self.client = client
        self.tokens = tokens

    def as_(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}


def _clients(app: object) -> Iterator[Clients]:
    auth = AuthStore(app.state.keel.store.db)  # type: ignore[attr-defined]
    auth.create_user("root", is_admin=True)
    tokens = {"root": auth.create_token("root")[0]}
    for user, scope, role in (("wendy", "vision", "writer"), ("rita", "@registries", "reader"), ("nobody", "", "")):
        auth.create_user(user)
        if role:
            auth.grant(user, scope, role, actor="root")
        tokens[user] = auth.create_token(user)[0]
    with TestClient(app, raise_server_exceptions=False) as client:  # type: ignore[arg-type]
        yield Clients(client, tokens)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clients]:
    folder = tmp_path_factory.mktemp("objects-api")
    app = create_app(f"sqlite:///{folder / 'keel.db'}", str(folder / "objects"), max_upload=LIMIT)
    yield from _clients(app)


def test_upload_then_download_and_check(api: Clients) -> None:
    data = b"some data file\n" * 100
    oid = hash_bytes(data)
    c, writer = api.client, api.as_("wendy")
    assert c.head(f"{API}/{oid}", headers=writer).status_code == 404
    assert c.post(f"{API}/missing", json={"oids": [oid]}, headers=writer).json() == {"missing": [oid]}

    put = c.put(f"{API}/{oid}", content=data, headers=writer)
    assert put.status_code == 201, put.text
    assert put.json() == {"oid": oid, "size": len(data)}
    again = c.put(f"{API}/{oid}", content=iter([data[:10], data[10:]]), headers=writer)  # chunked, already there
    assert again.status_code == 201

    got = c.get(f"{API}/{oid}", headers=api.as_("rita"))
    assert got.status_code == 200 and got.content == data and got.headers["x-keel-oid"] == oid
    assert c.head(f"{API}/{oid}", headers=api.as_("rita")).status_code == 200
    other = hash_bytes(b"never pushed")
    missing = c.post(f"{API}/missing", json={"oids": [oid, other, other]}, headers=api.as_("rita"))
    assert missing.json() == {"missing": [other]}
    # Not S3: asking for a presigned URL just streams the bytes.
    assert c.get(f"{API}/{oid}", params={"presign": "1"}, headers=writer).content == data


def test_a_body_that_does_not_match_its_oid_is_refused_and_not_stored(api: Clients) -> None:
    claimed = hash_bytes(b"the real content")
    response = api.client.put(f"{API}/{claimed}", content=b"something else", headers=api.as_("wendy"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_input" and "hashes to" in response.json()["error"]["message"]
    streamed = api.client.put(f"{API}/{claimed}", content=iter([b"some", b"thing"]), headers=api.as_("wendy"))
    assert streamed.status_code == 400  # the same check when the body is streamed to a spool file
    assert api.client.head(f"{API}/{claimed}", headers=api.as_("wendy")).status_code == 404
    assert list(Path(api.client.app.state.keel.tmp_dir).glob("keel-object-*")) == []  # type: ignore[attr-defined]


def test_uploads_over_the_limit_are_refused(api: Clients) -> None:
    data = b"x" * (LIMIT + 1)
    oid = hash_bytes(data)
    declared = api.client.put(f"{API}/{oid}", content=data, headers=api.as_("wendy"))
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "too_large"
    streamed = api.client.put(
        f"{API}/{oid}", content=iter([data[:LIMIT], data[LIMIT:]]), headers=api.as_("wendy")
    )  # chunked: no length declared, refused while streaming
    assert streamed.status_code == 413
    assert api.client.head(f"{API}/{oid}", headers=api.as_("root")).status_code == 404


def test_roles(api: Clients) -> None:
    data = b"role test"
    oid = hash_bytes(data)
    c = api.client
    assert c.put(f"{API}/{oid}", content=data).status_code == 401
    assert c.put(f"{API}/{oid}", content=data, headers={"Authorization": "Bearer keel_forged"}).status_code == 401
    refused = c.put(f"{API}/{oid}", content=data, headers=api.as_("rita"))  # a reader cannot write
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    for method, kwargs in (("GET", {}), ("HEAD", {}), ("POST", {"json": {"oids": [oid]}})):
        url = f"{API}/missing" if method == "POST" else f"{API}/{oid}"
        assert c.request(method, url, headers=api.as_("nobody"), **kwargs).status_code == 403  # type: ignore[arg-type]
    assert c.head(f"{API}/{oid}", headers=api.as_("root")).status_code == 404  # nothing was written
    assert c.put(f"{API}/{oid}", content=data, headers=api.as_("wendy")).status_code == 201
    # Listing every oid is for site admins only.
    assert c.get(API, headers=api.as_("wendy")).status_code == 403
    listed = c.get(API, params={"limit": 1000}, headers=api.as_("root")).json()
    assert oid in listed["oids"] and listed["next"] is None


def test_bad_ids_and_bodies(api: Clients) -> None:
    c, writer = api.client, api.as_("wendy")
    for bad in ("abc", "A" * 64, "../" + "a" * 61, "g" * 64):
        assert c.get(f"{API}/{bad}", headers=writer).status_code in (400, 404)
        assert c.put(f"{API}/{bad}", content=b"x", headers=writer).status_code in (400, 404)
    assert c.get(f"{API}/{'A' * 64}", headers=writer).json()["error"]["code"] == "invalid_input"
    assert c.post(f"{API}/missing", json={"oids": ["nope"]}, headers=writer).status_code == 400
    assert c.post(f"{API}/missing", json={"oids": [], "extra": 1}, headers=writer).status_code == 422
    assert c.post(f"{API}/missing", content=b"{not json", headers=writer).status_code == 422
    too_many = {"oids": ["a" * 64] * 10_001}
    assert c.post(f"{API}/missing", json=too_many, headers=writer).status_code == 413


@pytest.mark.s3
def test_presigned_downloads_on_s3(tmp_path: Path, s3_url: str) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", s3_url, max_upload=LIMIT)
    for api in _clients(app):
        data = b"stored in the bucket"
        oid = hash_bytes(data)
        c, writer = api.client, api.as_("wendy")
        assert c.put(f"{API}/{oid}", content=data, headers=writer).status_code == 201
        assert c.get(f"{API}/{oid}", headers=writer).content == data  # relayed by the server
        redirect = c.get(f"{API}/{oid}", headers={**writer, "Prefer": "presigned"}, follow_redirects=False)
        assert redirect.status_code == 307
        location = redirect.headers["location"]
        assert "Signature" in location and "Authorization" not in redirect.headers
        assert httpx.get(location).content == data  # no keel token needed: the URL carries the signature
        as_json = c.get(f"{API}/{oid}", params={"presign": "json"}, headers=writer).json()
        assert as_json["expires_in"] == 300 and httpx.get(as_json["url"]).content == data
        missing = hash_bytes(b"absent")
        assert c.get(f"{API}/{missing}", params={"presign": "1"}, headers=writer).status_code == 404
        assert c.get(f"{API}/{missing}", headers=writer).status_code == 404
        store = app.state.keel.store.objects
        url = presigned_download(store, oid, filename="report final.txt")
        assert url is not None and "report%20final.txt" in url
        assert httpx.get(url).headers["content-disposition"].startswith("attachment")
        # A run artifact hands out the same kind of URL, after the run's own role check.
        run = c.post("/api/v1/runs", json={"project": "vision"}, headers=writer).json()["run_id"]
        art = f"/api/v1/runs/{run}/artifacts/eval/report.txt"
        assert c.put(art, content=data, headers=writer).status_code == 201
        moved = c.get(art, params={"presign": "1"}, headers=writer, follow_redirects=False)
        assert moved.status_code == 307 and httpx.get(moved.headers["location"]).content == data
        assert c.get(art, headers=writer).content == data  # streamed through the server by default
        assert c.get(art, params={"presign": "1"}, headers=api.as_("rita")).status_code == 404
