"""``keel kb ...`` as a user runs it: two versions, their diff, search, export, bad input
(the CLI in-process: see ``tests/cli_inprocess.py``)."""

import json

import pytest

from cli_inprocess import keel as run_keel


def keel(*args, cwd, check=True):
    out = run_keel(*args, cwd=cwd)
    if check and out.returncode != 0:
        raise AssertionError(f"keel {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out


def _workspace(folder):
    keel("init", cwd=folder)
    docs = folder / "docs"
    docs.mkdir()
    (docs / "refunds.md").write_text("# Refunds\n\nRefunds take 5 days. Ask support for a refund.\n")
    (docs / "shipping.md").write_text("# Shipping\n\nShipping is free over 50 euros.\n")
    (docs / "binary.dat").write_bytes(b"\xff\xfe\x00\x01")
    return folder


@pytest.fixture
def folder(tmp_path):
    return _workspace(tmp_path)


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    """A workspace whose knowledge base docs-kb has v1 (the bad-input cases change nothing)."""
    folder = _workspace(tmp_path_factory.mktemp("kb"))
    keel("kb", "create", "docs-kb", cwd=folder)
    keel("kb", "add", "docs-kb", "docs/refunds.md", cwd=folder)
    keel("kb", "commit", "docs-kb", cwd=folder)
    return folder


def test_two_versions_diff_search_export(folder):
    cwd = folder
    out = keel("kb", "create", "support-docs", "--splitter", "markdown", "--chunk-size", "200", "--chunk-overlap", "0",
               cwd=cwd)  # fmt: skip
    assert out.stdout.strip() == "created knowledge base support-docs (hashing-384, markdown chunks of 200, overlap 0)"
    out = keel("kb", "add", "support-docs", "docs", cwd=cwd)
    assert "staged 2 documents (2 new, 0 changed)" in out.stdout
    assert "docs/binary.dat (not UTF-8" in out.stdout and "skipped 1" in out.stdout
    out = keel("kb", "commit", "support-docs", "-m", "first import", cwd=cwd)
    assert out.stdout.strip() == "committed support-docs@v1: 2 documents, 2 chunks (2 embedded, 0 reused)"

    (cwd / "docs" / "refunds.md").write_text("# Refunds\n\nRefunds now take 10 days.\n")
    (cwd / "policy.md").write_text("# Refund policy\n\nHow do refunds work? Ask within 30 days.\n")
    keel("kb", "add", "support-docs", "docs", "policy.md", cwd=cwd)
    out = keel("kb", "remove", "support-docs", "docs/shipping.md", cwd=cwd)
    assert out.stdout.strip() == "staged the removal of 1 documents: docs/shipping.md"
    keel("kb", "commit", "support-docs", "-m", "add refund policy", cwd=cwd)

    log = json.loads(keel("kb", "log", "support-docs", "--json", cwd=cwd).stdout)
    assert [(v["version"], v["parent"], v["message"]) for v in log] == [
        ("v2", "v1", "add refund policy"),
        ("v1", None, "first import"),
    ]
    diff = json.loads(keel("kb", "diff", "support-docs@v1", "support-docs@v2", "--json", cwd=cwd).stdout)
    assert [d["key"] for d in diff["documents"]["added"]] == ["policy.md"]
    assert [d["key"] for d in diff["documents"]["removed"]] == ["docs/shipping.md"]
    assert [d["key"] for d in diff["documents"]["modified"]] == ["docs/refunds.md"]
    text = keel("kb", "diff", "support-docs@v1", "v2", cwd=cwd).stdout
    assert "+ policy.md" in text and "- docs/shipping.md" in text and "~ docs/refunds.md" in text

    first = keel("kb", "search", "support-docs@v2", "how do refunds work?", "-k", "2", "--json", cwd=cwd).stdout
    second = keel("kb", "search", "support-docs@v2", "how do refunds work?", "-k", "2", "--json", cwd=cwd).stdout
    assert first == second and json.loads(first)[0]["source"] == "policy.md"
    listed = json.loads(keel("kb", "list", "--json", cwd=cwd).stdout)
    assert listed[0]["latest_version"] == "v2"

    out = keel("kb", "export", "support-docs@v1", "--format", "jsonl", cwd=cwd)
    assert out.stdout.strip() == "exported support-docs@v1 (2 chunks) to support-docs-v1.jsonl"
    rows = [json.loads(line) for line in (cwd / "support-docs-v1.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and len(rows[0]["embedding"]) == 384
    keel("kb", "export", "support-docs@v2", "--format", "parquet", "-o", "out/v2.parquet", cwd=cwd)
    assert (cwd / "out" / "v2.parquet").stat().st_size > 0

    out = keel("kb", "configure", "support-docs", "--chunk-size", "100", cwd=cwd)
    assert "the next commit re-embeds every chunk" in out.stdout
    assert "config:    chunk_size 200 -> 100" in keel("kb", "status", "support-docs", cwd=cwd).stdout
    refused = keel("kb", "commit", "support-docs", "-m", "smaller", cwd=cwd, check=False)
    assert refused.returncode == 4 and "would re-embed 2 of 2 chunks" in refused.stderr
    out = keel("kb", "commit", "support-docs", "-m", "smaller", "--reembed", cwd=cwd)
    assert out.stdout.startswith("committed support-docs@v3")
    assert keel("kb", "commit", "support-docs", cwd=cwd).stdout.strip() == (
        "nothing to commit: support-docs@v3 is up to date"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["kb", "search", "nope@v1", "q"], "no knowledge base named 'nope'"),
        (["kb", "search", "docs-kb@v9", "q"], "has no version v9"),
        (["kb", "diff", "docs-kb@v1", "other@v2"], "diff compares two versions of one knowledge base"),
        (["kb", "create", "x", "--chunk-size", "10", "--chunk-overlap", "20"], "chunk_overlap must be"),
        (["kb", "create", "docs-kb"], "already exists"),
        (["kb", "add", "docs-kb", "missing.md"], "no file"),
        (["kb", "export", "docs-kb@v1", "--format", "csv"], "unknown export format"),
        (["kb", "configure", "docs-kb"], "nothing to configure"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(committed, args, message):
    out = keel(*args, cwd=committed, check=False)
    assert out.returncode != 0
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_outside_a_workspace_nothing_is_created(tmp_path):
    out = keel("kb", "list", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "no keel workspace here" in out.stderr
    assert not (tmp_path / ".keel").exists()
