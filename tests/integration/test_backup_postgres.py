"""The PostgreSQL + S3 backup procedure of docs/operations.md, done for real (issue 26).

A store on the suite's PostgreSQL and S3 (moto) server is filled; then, as the docs say:
``pg_dump -Fc`` of its database, ``pg_restore`` into a new database, every object of its
bucket prefix copied to a new bucket; keel opened on the restored pair must pass
``keel verify`` (the service function) and hold every run, metric, artifact and prompt.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlencode

import pytest

from backup_helpers import check_restored, seed
from keel.services.workspace import open_store
from servers import PG_BIN, PostgresServer, S3Server

pytestmark = [pytest.mark.postgres, pytest.mark.s3]


def _pg(program: str, server: PostgresServer, *args: str) -> None:
    command = [str(PG_BIN / program), "-h", "127.0.0.1", "-p", str(server.port), "-U", server.user, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{program} failed: {result.stdout}{result.stderr}"


def _copy_bucket(client: object, source: str, target: str, prefix: str) -> int:
    """Copy every object under ``prefix`` from ``source`` to ``target`` (server-side copies)."""
    copied = 0
    paginator = client.get_paginator("list_objects_v2")  # type: ignore[attr-defined]
    for page in paginator.paginate(Bucket=source, Prefix=prefix):
        for item in page.get("Contents", []):
            client.copy_object(  # type: ignore[attr-defined]
                Bucket=target, Key=item["Key"], CopySource={"Bucket": source, "Key": item["Key"]}
            )
            copied += 1
    return copied


def test_pg_dump_restore_and_bucket_copy_verify(
    postgres_server: PostgresServer, s3_server: S3Server, pg_url: str, tmp_path: Path
) -> None:
    bucket = s3_server.create_bucket()
    endpoint = urlencode({"endpoint_url": s3_server.endpoint_url})
    store = open_store(pg_url, f"s3://{bucket}/keel?{endpoint}", cached=False)
    try:
        seeded = seed(store, runs=4, big=100_000)
    finally:
        store.close()

    # 1. the database: pg_dump -Fc, then pg_restore into a new, empty database
    source_db = pg_url.rsplit("/", 1)[1]
    dump = tmp_path / "keel.dump"
    _pg("pg_dump", postgres_server, "-Fc", "--no-owner", "-f", str(dump), source_db)
    assert dump.stat().st_size > 0
    restored_name, restored_url = postgres_server.create_database()
    try:
        _pg("pg_restore", postgres_server, "--no-owner", "--exit-on-error", "-d", restored_name, str(dump))

        # 2. the objects: every key under the store's prefix, into a new bucket
        target = s3_server.create_bucket()
        copied = _copy_bucket(s3_server.client, bucket, target, "keel/")
        assert copied == len(set(seeded.artifacts.values()))
        for key in [i["Key"] for i in s3_server.client.list_objects_v2(Bucket=bucket).get("Contents", [])]:
            s3_server.client.delete_object(Bucket=bucket, Key=key)  # the restored pair stands alone

        # 3. keel on the restored pair: verify, and everything is there
        restored = open_store(restored_url, f"s3://{target}/keel?{endpoint}", cached=False)
        try:
            check_restored(restored, seeded)
        finally:
            restored.close()
    finally:
        postgres_server.drop_database(restored_name)
