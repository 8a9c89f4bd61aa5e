"""Allocation schemes from the command line: a flag imported from a file keeps the scheme it
was evaluated with, a new flag gets blake2b, ``--set bucketing=blake2b`` moves one, and
``keel flags show`` says which."""

import json

from cli_inprocess import keel as run_keel

OTHER_FILE = "flags:\n  banner: {rollout: 40}\n  fresh: {rollout: 40, bucketing: blake2b}\n"


def keel(*args, cwd):
    out = run_keel(*args, cwd=cwd)
    assert out.returncode == 0, f"keel {' '.join(args)} failed ({out.returncode}): {out.stderr}"
    return out.stdout


def shown(key, folder):
    return json.loads(keel("flags", "show", key, "--json", cwd=folder))


def test_import_new_flag_and_move_keep_or_change_the_scheme_as_asked(tmp_path):
    keel("init", cwd=tmp_path)
    (tmp_path / "other.yaml").write_text(OTHER_FILE)
    keel("flags", "set", "--file", "other.yaml", cwd=tmp_path)
    assert shown("banner", tmp_path)["bucketing"] == "crc32"  # evaluated from that file by crc32 so far
    assert shown("fresh", tmp_path)["bucketing"] == "blake2b"  # the file named it

    keel("flags", "set", "brand_new", "--rollout", "5", cwd=tmp_path)
    assert shown("brand_new", tmp_path)["bucketing"] == "blake2b"
    keel("flags", "rollout", "banner", "60", cwd=tmp_path)
    assert shown("banner", tmp_path)["bucketing"] == "crc32"

    out = keel(
        "flags", "set", "banner", "--set", "bucketing=blake2b", "--reason", "independent allocation", cwd=tmp_path
    )
    assert "rollout 60%" in out
    assert shown("banner", tmp_path)["bucketing"] == "blake2b"
    history = json.loads(keel("flags", "history", "banner", "--json", cwd=tmp_path))
    assert history[-1]["reason"] == "independent allocation"
    assert [h["definition"]["bucketing"] for h in history] == ["crc32", "crc32", "blake2b"]
