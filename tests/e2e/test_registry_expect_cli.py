"""``--expect``: alias and stage moves from the command line that refuse to clobber a move
made meanwhile (exit 4, naming where the ref points). The CLI runs in-process (see
``tests/cli_inprocess.py``)."""

from pathlib import Path

import pytest

from cli_inprocess import Result
from cli_inprocess import keel as run_keel


def keel(*args: str, cwd: Path, code: int = 0) -> Result:
    out = run_keel(*args, cwd=cwd)
    assert out.returncode == code, f"keel {' '.join(args)}: exit {out.returncode}: {out.stdout}{out.stderr}"
    return out


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    keel("init", cwd=tmp_path)
    for i in range(3):
        (tmp_path / f"v{i}.txt").write_text(f"Answer ({i}): {{{{ question }}}}\n")
        keel("prompts", "register", "chat", "-f", f"v{i}.txt", "-m", f"v{i}", cwd=tmp_path)
        keel("models", "register", "clf", "--source", f"s3://models/clf/{i}", cwd=tmp_path)
    return tmp_path


def test_prompt_alias_moves_with_expect(folder: Path) -> None:
    out = keel("prompts", "alias", "set", "chat", "production", "1.0.0", "--expect", "unset", cwd=folder)
    assert out.stdout.strip() == "chat@production: (unset) -> 1.0.0"
    refused = keel("prompts", "alias", "set", "chat", "production", "1.0.2", "--expect", "1.0.1", cwd=folder, code=4)
    assert "points at 1.0.0, not 1.0.1" in refused.stderr
    keel("prompts", "alias", "set", "chat", "production", "1.0.1", "--expect", "1.0.0", cwd=folder)
    keel("prompts", "rollback", "chat", "production", "--expect", "1.0.0", cwd=folder, code=4)
    assert "1.0.1 -> 1.0.0" in keel("prompts", "rollback", "chat", "production", "--expect", "1.0.1", cwd=folder).stdout
    keel("prompts", "alias", "rm", "chat", "production", "--expect", "1.0.1", cwd=folder, code=4)
    keel("prompts", "alias", "rm", "chat", "production", "--expect", "1.0.0", cwd=folder)
    keel("prompts", "alias", "set", "chat", "production", "1.0.2", "--expect", "1.0.0", cwd=folder, code=4)


def test_model_alias_and_stage_moves_with_expect(folder: Path) -> None:
    keel("models", "alias", "clf", "champion", "1", "--expect", "unset", cwd=folder)
    refused = keel("models", "alias", "clf", "champion", "2", "--expect", "unset", cwd=folder, code=4)
    assert "points at 1, not unset" in refused.stderr
    assert "1 -> 2" in keel("models", "alias", "clf", "champion", "2", "--expect", "1", cwd=folder).stdout
    keel("models", "alias", "clf", "champion", "--delete", "--expect", "1", cwd=folder, code=4)
    keel("models", "alias", "clf", "champion", "--delete", "--expect", "2", cwd=folder)
    refused = keel("models", "stage", "clf", "3", "Production", "--expect", "Staging", cwd=folder, code=4)
    assert "is in None, not Staging" in refused.stderr
    out = keel("models", "stage", "clf", "3", "Production", "--expect", "none", cwd=folder)
    assert out.stdout.strip() == "clf@3: None -> Production"
