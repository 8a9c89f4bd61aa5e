"""``keel data push/pull`` against S3 remotes that fail, as a user runs them: one line on
stderr saying what to do, a non-zero exit, no traceback, no secret (issue 17).

The workspace is set up in-process (fast); only the commands under test run as
processes, with a clean AWS environment (no AWS_* variable but those given, empty
config files, no instance metadata, one try per request).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest

from servers import S3Server, free_port

KEEL = Path(sys.executable).with_name("keel")
SECRET = "s3cr3t-never-shown"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    from keel.sdk import data, session
    from keel.sdk.workspace import init_workspace

    root = tmp_path / "ws"
    root.mkdir()
    init_workspace(root)
    (root / "notes.txt").write_text("some data\n")
    try:
        data.add([str(root / "notes.txt")], root=root)
    finally:
        session.reset()
    return root


def keel(root: Path, *args: str, **aws: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEEL_"))}
    empty = root.parent / "aws-empty"
    empty.write_text("")
    env.update(
        AWS_CONFIG_FILE=str(empty),
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_MAX_ATTEMPTS="1",
        **aws,
    )
    return subprocess.run([str(KEEL), *args], cwd=root, capture_output=True, text=True, timeout=60, env=env)


def one_error_line(out: subprocess.CompletedProcess[str], code: int) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == code, out.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr and SECRET not in out.stderr + out.stdout
    return lines[0]


def test_push_without_credentials_is_one_line_naming_the_variables(workspace: Path) -> None:
    added = keel(workspace, "remote", "add", "r", "s3://bucket/x")
    assert added.returncode == 0, added.stderr
    line = one_error_line(keel(workspace, "data", "push"), 6)
    assert "remote 'r'" in line and "no AWS credentials were found" in line
    assert "AWS_ACCESS_KEY_ID" in line and "AWS_SECRET_ACCESS_KEY" in line and "AWS_PROFILE" in line


def test_push_to_a_closed_port_is_one_line_pointing_at_the_remote_list(workspace: Path) -> None:
    from keel.sdk import data

    data.add_remote("r", f"s3://bucket/x?endpoint_url=http://127.0.0.1:{free_port()}", root=workspace)
    out = keel(workspace, "data", "push", AWS_ACCESS_KEY_ID="keel-test-id", AWS_SECRET_ACCESS_KEY=SECRET)
    line = one_error_line(out, 6)
    assert "cannot be reached" in line and "keel remote list" in line and "keel remote add --force r" in line


@pytest.mark.s3
def test_pull_from_a_missing_bucket_is_one_line_naming_it(workspace: Path, s3_server: S3Server) -> None:
    from keel.sdk import data

    query = urlencode({"endpoint_url": s3_server.endpoint_url})
    data.add_remote("r", f"s3://no-such-bucket/x?{query}", root=workspace)
    for path in (workspace / ".keel" / "objects").glob("??/*"):
        path.unlink()  # so the pull has to ask the remote
    out = keel(workspace, "data", "pull", AWS_ACCESS_KEY_ID="keel-test-id", AWS_SECRET_ACCESS_KEY=SECRET)
    line = one_error_line(out, 6)
    assert "bucket 'no-such-bucket' does not exist" in line and "aws s3 mb" in line
