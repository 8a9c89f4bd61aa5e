"""The foreign formats the importers read: DVC files, the W&B run-file framing, names and ids."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from keel.errors import InvalidInput
from keel.services.importers.dvc_files import cache_path, parse_outs
from keel.services.importers.mlflow import keel_run_id, project_name
from keel.services.importers.naming import safe_name
from keel.services.importers.wandb_records import read_run, wandb_proto

_BLOCK = 32 * 1024


def _log(records: list[bytes]) -> bytes:
    """``records`` framed as the LevelDB log wandb writes (checksums are not checked on read)."""
    out = bytearray(b":W&B\xe1\xbe\x00")
    for record in records:
        rest, first = record, True
        while True:
            left = _BLOCK - len(out) % _BLOCK
            if left < 7:
                out += b"\x00" * left
                left = _BLOCK
            piece, rest = rest[: left - 7], rest[left - 7 :]
            kind = (1 if not rest else 2) if first else (4 if not rest else 3)
            out += struct.pack("<IHB", 0, len(piece), kind) + piece
            first = False
            if not rest:
                break
    return bytes(out)


def _records() -> list[bytes]:
    pb = wandb_proto()
    run = pb.Record()
    run.run.run_id, run.run.project, run.run.display_name = "abc123", "proj", "long run"
    item = run.run.config.update.add()
    item.key, item.value_json = "prompt", '"' + "x" * 50_000 + '"'  # spans two blocks
    rows = []
    for step in range(3):
        row = pb.Record()
        for key, value in (("loss", str(1 / (step + 1))), ("_step", str(step)), ("_timestamp", "1700000000.5")):
            entry = row.history.item.add()
            entry.key, entry.value_json = key, value
        rows.append(row)
    done = pb.Record()
    done.exit.exit_code = 0
    return [r.SerializeToString() for r in (run, *rows, done)]


def test_a_run_file_is_read_across_block_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "run-abc123.wandb"
    path.write_bytes(_log(_records()))
    run = read_run(path)
    assert (run.run_id, run.project, run.name, run.exit_code) == ("abc123", "proj", "long run", 0)
    assert len(run.config["prompt"]) == 50_000
    assert [(row["_step"], row["loss"]) for row in run.history] == [(0, 1.0), (1, 0.5), (2, 1 / 3)]


def test_a_run_file_cut_off_mid_record_yields_what_came_before(tmp_path: Path) -> None:
    whole = _log(_records())
    path = tmp_path / "run-abc123.wandb"
    path.write_bytes(whole[: len(whole) - 5])  # the exit record is cut
    run = read_run(path)
    assert run.exit_code is None and len(run.history) == 3
    path.write_bytes(b"PK\x03\x04 not wandb")
    with pytest.raises(InvalidInput, match="is not a W&B run file"):
        read_run(path)


def test_dvc_files_and_dvc_lock_outs() -> None:
    dvc = "outs:\n- md5: abc.dir\n  size: 10\n  nfiles: 2\n  hash: md5\n  path: kb\n- path: uncached\n"
    (out,) = parse_outs(dvc, "data/kb.dvc")
    assert (out.path, out.md5, out.is_dir, out.nfiles, out.legacy) == ("data/kb", "abc.dir", True, 2, False)
    lock = "stages:\n  prep:\n    cmd: x\n    outs:\n    - path: data/out.txt\n      md5: 0a1b\n      size: 2\n"
    (out,) = parse_outs(lock, "dvc.lock")
    assert (out.path, out.legacy, out.declared_in) == ("data/out.txt", True, "dvc.lock")
    with pytest.raises(InvalidInput, match="outside the repository"):
        parse_outs("outs:\n- md5: abc\n  path: ../../etc/passwd\n", "data/x.dvc")
    with pytest.raises(InvalidInput, match="not a DVC file"):
        parse_outs("- just a list\n", "x.dvc")
    cache = Path("/c")
    assert cache_path(cache, "abcdef", legacy=False) == Path("/c/files/md5/ab/cdef")
    assert cache_path(cache, "abcdef.dir", legacy=True) == Path("/c/ab/cdef.dir")


def test_names_and_ids_follow_keel_rules() -> None:
    assert project_name("Default") == "default" and project_name("/Users/ada@x.com/evals") == "Users/ada-x.com/evals"
    assert safe_name("***", "fallback") == "fallback"
    assert keel_run_id("0123456789ABCDEF0123456789abcdef") == "0123456789abcdef0123456789abcdef"
    derived = keel_run_id("databricks-run-7")
    assert len(derived) == 32 and derived == keel_run_id("databricks-run-7")
