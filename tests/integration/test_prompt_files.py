"""Prompts kept as files (prompts/prompt_config.yaml + templates + CHANGELOG.md), synced with the registry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import keel
from keel.sdk.session import get_session
from keel.services.prompt_files import (
    FilePrompt,
    Problem,
    PromptFilesRejected,
    check_prompt_dir,
    export_prompt,
    read_prompt_dir,
    sync_prompt_dir,
)

CONFIG = """\
# prompt_config.yaml
chat:
  version: "1.3"
  model: "gpt-4"
  temperature: 0.7
  system_prompt: "prompts/chat/system_prompt.txt"
  few_shot: "prompts/chat/few_shot_examples.json"

classification:
  version: "2.1"
  model: "gpt-3.5-turbo"
  temperature: 0.0
  system_prompt: "prompts/classification/system_prompt.txt"
"""
CHAT_VERSION_LINE = 3
CLASSIFICATION_LINE = 9
CHAT_TEMPLATE = "You are a support agent for {{ company }}.\nAnswer the question: {{ question }}\n"
FEW_SHOT = [{"question": "How do refunds work?", "answer": "Within 30 days, no questions asked."}]
CLASSIFICATION_TEMPLATE = "Classify the ticket as billing, bug or other:\n{{ ticket }}\n"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _reference_layout(root: Path) -> Path:
    """The layout of the reference (prompts/ under ``root``); returns the prompts folder."""
    prompts = root / "prompts"
    _write(prompts / "prompt_config.yaml", CONFIG)
    _write(prompts / "chat" / "system_prompt.txt", CHAT_TEMPLATE)
    _write(prompts / "chat" / "few_shot_examples.json", json.dumps(FEW_SHOT, indent=2))
    _write(prompts / "chat" / "CHANGELOG.md", "# Changelog\n\n## 1.3\n\nShorter answers.\n\n## 1.2\n\nFirst draft.\n")
    _write(prompts / "classification" / "system_prompt.txt", CLASSIFICATION_TEMPLATE)
    _write(prompts / "classification" / "CHANGELOG.md", "## [2.1.0] - 2026-01-02\n### Added\n- The 'bug' label.\n")
    return prompts


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _registry() -> dict[str, list[str]]:
    return {name: [v.version for v in keel.prompts.versions(name)] for name, _latest in keel.prompts.list_prompts()}


@pytest.fixture
def prompts(ws: Path) -> Path:
    return _reference_layout(ws)


# -- reading --------------------------------------------------------------------
def test_read_the_reference_layout(tmp_path):
    folder = _reference_layout(tmp_path)
    chat, classification = read_prompt_dir(folder)
    assert isinstance(chat, FilePrompt)
    assert (chat.name, chat.version, chat.version_line) == ("chat", "1.3.0", CHAT_VERSION_LINE)
    assert chat.content.template == CHAT_TEMPLATE and chat.content.model == "gpt-4"
    assert chat.content.parameters == {"temperature": 0.7}
    assert chat.content.few_shot == tuple(FEW_SHOT) and chat.content.variables == ("company", "question")
    assert chat.changelog == "Shorter answers."
    assert chat.few_shot_path == folder / "chat" / "few_shot_examples.json"
    assert chat.changelog_path == folder / "chat" / "CHANGELOG.md"
    assert (classification.version, classification.line) == ("2.1.0", CLASSIFICATION_LINE)
    assert classification.content.parameters == {"temperature": 0.0}
    assert classification.changelog == "### Added\n- The 'bug' label."
    # the folder holding prompts/ works too, and so do paths relative to prompts/ itself
    assert [p.content_hash for p in read_prompt_dir(tmp_path)] == [chat.content_hash, classification.content_hash]
    _edit(folder / "prompt_config.yaml", '"prompts/chat/system_prompt.txt"', "chat/system_prompt.txt")
    assert read_prompt_dir(folder)[0].content_hash == chat.content_hash


def test_unquoted_versions_are_read_as_written(tmp_path):
    folder = _reference_layout(tmp_path)
    _edit(folder / "prompt_config.yaml", 'version: "1.3"', "version: 1.10")
    _edit(folder / "chat" / "CHANGELOG.md", "## 1.3", "## v1.10.0 (2026-02-01)")
    chat = read_prompt_dir(folder)[0]
    assert (chat.version, chat.changelog) == ("1.10.0", "Shorter answers.")


@pytest.mark.parametrize(
    ("edit", "error", "pattern"),
    [
        (
            ("temperature: 0.7\n", "temperature: 0.7\n bad: [\n"),
            keel.InvalidInput,
            r"prompt_config\.yaml:6: malformed YAML",
        ),
        (
            ('chat:\n  version: "1.3"\n', 'chat: "1.3"\nother:\n  version: "1.3"\n'),
            keel.InvalidInput,
            r"prompt_config\.yaml:2: chat: the entry must be a mapping",
        ),
        (('  version: "1.3"\n', ""), keel.InvalidInput, r"prompt_config\.yaml:2: chat: has no version"),
        (
            ('  system_prompt: "prompts/chat/system_prompt.txt"\n', ""),
            keel.InvalidInput,
            r"prompt_config\.yaml:2: chat: has no system_prompt",
        ),
        (
            ('version: "1.3"', 'version: "1.x"'),
            keel.InvalidInput,
            r"prompt_config\.yaml:3: chat\.version: invalid version '1\.x'",
        ),
        (
            ("chat/few_shot_examples.json", "chat/examples.json"),
            keel.NotFound,
            r"prompt_config\.yaml:7: chat\.few_shot: 'prompts/chat/examples\.json' does not exist",
        ),
        (
            ('  model: "gpt-4"\n', '  model: "gpt-4"\n  model: "gpt-4o"\n'),
            keel.InvalidInput,
            r"prompt_config\.yaml:5: chat: key 'model' is defined twice \(first on line 4\)",
        ),
        (
            ("temperature: 0.7", "temperature: .nan"),
            keel.InvalidInput,
            r"prompt_config\.yaml:5: chat\.temperature: parameters\['temperature'\] is nan",
        ),
    ],
    ids=["yaml", "not-a-mapping", "no-version", "no-system-prompt", "bad-version", "missing-path", "duplicate", "nan"],
)
def test_errors_name_the_file_and_line(tmp_path, edit, error, pattern):
    folder = _reference_layout(tmp_path)
    _edit(folder / "prompt_config.yaml", *edit)
    with pytest.raises(error, match=pattern) as info:
        read_prompt_dir(folder)
    assert info.value.hint


def test_bad_json_and_template_errors_name_their_file_and_line(tmp_path):
    folder = _reference_layout(tmp_path)
    _write(folder / "chat" / "few_shot_examples.json", '[\n  {"question": "Hi?",\n   "answer": }\n]\n')
    with pytest.raises(keel.InvalidInput, match=r"few_shot_examples\.json:3: invalid JSON .*prompt_config\.yaml:7"):
        read_prompt_dir(folder)
    _write(folder / "chat" / "few_shot_examples.json", "[1,\n NaN]")
    with pytest.raises(keel.InvalidInput, match=r"few_shot_examples\.json:2: NaN is not valid JSON"):
        read_prompt_dir(folder)
    _write(folder / "chat" / "few_shot_examples.json", "[]")
    _write(folder / "chat" / "system_prompt.txt", "Hello.\nAnswer {{ question \n")
    with pytest.raises(keel.InvalidInput, match=r"chat/system_prompt\.txt: template syntax error at line 2"):
        read_prompt_dir(folder)


def test_no_config_and_inline_templates(tmp_path):
    with pytest.raises(keel.NotFound, match="no prompt_config.yaml"):
        read_prompt_dir(tmp_path)
    folder = _reference_layout(tmp_path)
    _edit(folder / "prompt_config.yaml", '  model: "gpt-4"\n', '  model: "gpt-4"\n  template: "Hi {{ name }}"\n')
    with pytest.raises(keel.InvalidInput, match=r"prompt_config\.yaml:5: chat\.template: .*not written inline"):
        read_prompt_dir(folder)


# -- sync and check -------------------------------------------------------------------
def test_the_reference_layout_syncs_once(prompts):
    service = get_session().prompts
    # nothing registered yet: both are pending (the fix is a sync), none blocks it
    pending = check_prompt_dir(service, prompts)
    assert [(p.prompt, p.pending) for p in pending] == [("chat", True), ("classification", True)]
    assert "not registered yet" in pending[0].message and "keel prompts sync" in pending[0].hint
    results = sync_prompt_dir(service, prompts, author="ada")
    assert [(r.name, r.version, r.created) for r in results] == [
        ("chat", "1.3.0", True),
        ("classification", "2.1.0", True),
    ]
    chat = keel.prompts.get("chat@1.3")
    assert chat.changelog == "Shorter answers." and chat.author == "ada"
    assert chat.content.model == "gpt-4" and chat.content.parameters == {"temperature": 0.7}
    rendered = keel.prompts.load("chat").render(company="Acme", question="Hi?")
    assert rendered.startswith("You are a support agent for Acme")
    classification = keel.prompts.get("classification")
    assert classification.version == "2.1.0" and classification.content.parameters == {"temperature": 0.0}
    assert classification.changelog == "### Added\n- The 'bug' label."

    again = sync_prompt_dir(service, prompts)
    assert [(r.name, r.version, r.created) for r in again] == [
        ("chat", "1.3.0", False),
        ("classification", "2.1.0", False),
    ]
    assert _registry() == {"chat": ["1.3.0"], "classification": ["2.1.0"]}
    assert check_prompt_dir(service, prompts) == []


def test_an_edit_without_a_bump_is_reported_at_the_version_line(prompts):
    service = get_session().prompts
    sync_prompt_dir(service, prompts)
    _edit(prompts / "chat" / "system_prompt.txt", "Answer the question", "Answer briefly")
    [problem] = check_prompt_dir(service, prompts)
    assert isinstance(problem, Problem)
    assert (problem.prompt, problem.file.name, problem.line) == ("chat", "prompt_config.yaml", CHAT_VERSION_LINE)
    assert "the content changed since chat@1.3.0" in problem.message and "still 1.3.0" in problem.message
    assert 'set version: "1.3.1"' in problem.hint
    assert re.match(r"prompts/prompt_config\.yaml:3: chat: ", str(problem))

    _edit(prompts / "prompt_config.yaml", 'version: "1.3"', 'version: "1.3.1"')
    [problem] = check_prompt_dir(service, prompts)  # bumped: now the changelog entry is missing
    assert (problem.file.name, problem.line) == ("CHANGELOG.md", None)
    assert "no entry for version 1.3.1" in problem.message and "## 1.3.1" in problem.hint

    _edit(prompts / "chat" / "CHANGELOG.md", "## 1.3\n", "## 1.3.1\n\nTerser.\n\n## 1.3\n")
    [pending] = check_prompt_dir(service, prompts)  # nothing blocks the sync; it is what remains
    assert pending.pending and "version 1.3.1 of the files is not registered yet" in pending.message
    [chat, classification] = sync_prompt_dir(service, prompts)
    assert (chat.version, chat.created, classification.created) == ("1.3.1", True, False)
    assert keel.prompts.get("chat").changelog == "Terser."


def test_a_bump_without_a_change(prompts):
    service = get_session().prompts
    sync_prompt_dir(service, prompts)
    _edit(prompts / "prompt_config.yaml", 'version: "2.1"', 'version: "2.2"')
    _edit(prompts / "classification" / "CHANGELOG.md", "## [2.1.0]", "## 2.2\nNothing.\n## [2.1.0]")
    [problem] = check_prompt_dir(service, prompts)
    assert (problem.prompt, problem.line) == ("classification", CLASSIFICATION_LINE + 1)
    assert "bumped without a content change" in problem.message and "classification@2.1.0" in problem.message
    assert 'set version: "2.1.0"' in problem.hint


def test_a_bump_smaller_than_the_change_needs(prompts):
    service = get_session().prompts
    sync_prompt_dir(service, prompts)
    _edit(prompts / "prompt_config.yaml", 'model: "gpt-4"', 'model: "gpt-4o"')
    _edit(prompts / "prompt_config.yaml", 'version: "1.3"', 'version: "1.3.1"')
    _edit(prompts / "chat" / "CHANGELOG.md", "## 1.3\n", "## 1.3.1\n\nMove to gpt-4o.\n\n## 1.3\n")
    [problem] = check_prompt_dir(service, prompts)
    assert problem.line == CHAT_VERSION_LINE
    assert "1.3.1 is a patch bump from 1.3.0, but this change needs a minor bump" in problem.message
    assert "the model changed from 'gpt-4' to 'gpt-4o'" in problem.message
    assert 'set version: "1.4.0"' in problem.hint

    # a new variable needs a major bump
    _edit(prompts / "prompt_config.yaml", 'version: "1.3.1"', 'version: "1.4"')
    _edit(prompts / "chat" / "system_prompt.txt", "{{ question }}", "{{ question }} in {{ language }}")
    _edit(prompts / "chat" / "CHANGELOG.md", "## 1.3.1", "## 1.4")
    [problem] = check_prompt_dir(service, prompts)
    assert "needs a major bump (variables added: language" in problem.message and '"2.0.0"' in problem.hint


def test_a_new_prompt_needs_a_changelog_entry(prompts):
    service = get_session().prompts
    (prompts / "classification" / "CHANGELOG.md").unlink()
    [problem] = [p for p in check_prompt_dir(service, prompts) if not p.pending]
    assert (problem.prompt, problem.file, problem.line) == (
        "classification",
        prompts / "classification" / "CHANGELOG.md",
        None,
    )
    assert "does not exist" in problem.message
    _write(prompts / "classification" / "CHANGELOG.md", "## 2.1\n\n")  # a heading without text is no entry
    [problem] = [p for p in check_prompt_dir(service, prompts) if not p.pending]
    assert "has no entry for version 2.1.0" in problem.message


def test_a_failed_sync_registers_nothing(prompts):
    service = get_session().prompts
    sync_prompt_dir(service, prompts)
    before = _registry()
    # one prompt fine to register, one edited without a bump: neither is registered
    _write(prompts / "summary" / "system_prompt.txt", "Summarise: {{ text }}")
    _write(prompts / "summary" / "CHANGELOG.md", "## 1.0\nFirst version.\n")
    summary = 'summary:\n  version: "1.0"\n  system_prompt: "prompts/summary/system_prompt.txt"\n'
    _write(prompts / "prompt_config.yaml", CONFIG + summary)
    _edit(prompts / "classification" / "system_prompt.txt", "billing, bug", "billing, bug, feature")
    _edit(prompts / "chat" / "system_prompt.txt", "support agent", "friendly support agent")
    with pytest.raises(PromptFilesRejected) as info:
        sync_prompt_dir(service, prompts)
    assert isinstance(info.value, keel.Conflict)
    lines = [(p.prompt, p.line) for p in info.value.problems]
    assert lines == [("chat", CHAT_VERSION_LINE), ("classification", CLASSIFICATION_LINE + 1)]
    assert "2 problems in the prompt files, so nothing was registered" in info.value.message
    assert "prompts/prompt_config.yaml:3: chat: " in info.value.message
    assert _registry() == before


# -- export ----------------------------------------------------------------------------
def _register_history() -> None:
    keel.prompts.register(
        "support",
        template="Answer: {{ question }}\n",
        model="gpt-4o",
        parameters={
            "temperature": 0.2,
            "max_tokens": 256,
            "stop": ["\n\n"],
            "seed": 7,
            "logit_bias": {"50256": -100},
            "json_mode": True,
            "top_p": 1.0,
            "user": "yes",
        },
        few_shot=[{"q": "Hi", "a": "Hello"}],
        response_schema={"type": "object", "required": ["answer"]},
        changelog="First version",
    )
    keel.prompts.register(
        "support",
        template="Answer briefly: {{ question }}\n",
        model="gpt-4o",
        parameters={
            "temperature": 0.2,
            "max_tokens": 256,
            "stop": ["\n\n"],
            "seed": 7,
            "logit_bias": {"50256": -100},
            "json_mode": True,
            "top_p": 1.0,
            "user": "yes",
        },
        few_shot=[{"q": "Hi", "a": "Hello"}],
        response_schema={"type": "object", "required": ["answer"]},
        changelog="Shorter answers\n\n- asked by support",
    )


def test_export_then_sync_is_a_no_op(ws):
    service = get_session().prompts
    _register_history()
    latest = keel.prompts.get("support")
    folder = ws / "prompts"
    written = export_prompt(service, "support", folder)
    assert sorted(p.relative_to(folder).as_posix() for p in written) == [
        "prompt_config.yaml",
        "support/CHANGELOG.md",
        "support/few_shot_examples.json",
        "support/response_schema.json",
        "support/system_prompt.txt",
    ]
    assert (folder / "support" / "system_prompt.txt").read_text() == "Answer briefly: {{ question }}\n"
    config = (folder / "prompt_config.yaml").read_text()
    assert 'version: "1.0.1"' in config and 'system_prompt: "prompts/support/system_prompt.txt"' in config
    changelog = (folder / "support" / "CHANGELOG.md").read_text()
    assert changelog.index("## [1.0.1] - ") < changelog.index("Shorter answers\n\n- asked by support")
    assert changelog.index("- asked by support") < changelog.index("## [1.0.0] - ") < changelog.index("First version")

    [read] = read_prompt_dir(folder)
    assert (read.version, read.content_hash) == ("1.0.1", latest.content_hash)
    assert read.changelog == "Shorter answers\n\n- asked by support"
    assert check_prompt_dir(service, folder) == []
    [result] = sync_prompt_dir(service, folder)
    assert (result.version, result.created) == ("1.0.1", False)
    assert _registry() == {"support": ["1.0.1", "1.0.0"]}
    # exporting again changes nothing
    before = {p: p.read_bytes() for p in written}
    export_prompt(service, "support", folder)
    assert {p: p.read_bytes() for p in written} == before


def test_export_merges_into_an_existing_config(prompts):
    service = get_session().prompts
    sync_prompt_dir(service, prompts)
    keel.prompts.register(
        "chat",
        template="Be brief. {{ company }} {{ question }}\n",
        model="gpt-4",
        parameters={"temperature": 0.7},
        few_shot=FEW_SHOT,
        changelog="Be brief.",
    )
    config = prompts / "prompt_config.yaml"
    _edit(config, '  model: "gpt-4"\n', '  model: "gpt-4"\n  description: "Support chat"\n')
    export_prompt(service, "chat", prompts)
    text = config.read_text()
    assert text.startswith("# prompt_config.yaml\nchat:\n")
    assert text.endswith(CONFIG[CONFIG.index("\nclassification:") :])  # the other entry, byte for byte
    assert 'version: "1.3.1"' in text and 'description: "Support chat"' in text
    chat = read_prompt_dir(prompts)[0]
    assert (chat.version, chat.description, chat.changelog) == ("1.3.1", "Support chat", "Be brief.")
    changelog = (prompts / "chat" / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog\n\n## [1.3.1] - ")
    assert "## 1.3\n\nShorter answers.\n\n## 1.2\n\nFirst draft.\n" in changelog  # the user's entries stay
    assert [(r.version, r.created) for r in sync_prompt_dir(service, prompts)] == [("1.3.1", False), ("2.1.0", False)]


def test_export_an_older_version(ws):
    service = get_session().prompts
    _register_history()
    first = keel.prompts.get("support@1.0.0")
    folder = ws / "prompts"
    export_prompt(service, "support", folder, version="1.0.0")
    assert (folder / "support" / "system_prompt.txt").read_text() == "Answer: {{ question }}\n"
    changelog = (folder / "support" / "CHANGELOG.md").read_text()
    assert "## [1.0.0] - " in changelog and "1.0.1" not in changelog
    [read] = read_prompt_dir(folder)
    assert (read.version, read.content_hash) == ("1.0.0", first.content_hash)
    # The files now hold 1.0.0 while load("support") serves 1.0.1: they do not agree. Syncing
    # them is a revert, and (as in git) a revert is a new version above the latest.
    [pending] = check_prompt_dir(service, folder)
    assert pending.pending and "the latest version is support@1.0.1" in pending.message
    assert "support@1.0.2" in pending.hint
    assert [(r.version, r.created) for r in sync_prompt_dir(service, folder)] == [("1.0.2", True)]
    assert _registry() == {"support": ["1.0.2", "1.0.1", "1.0.0"]}
    assert keel.prompts.get("support").content_hash == first.content_hash
    assert check_prompt_dir(service, folder) == []  # the files say 1.0.0, whose content 1.0.2 serves
    assert [(r.version, r.created) for r in sync_prompt_dir(service, folder)] == [("1.0.2", False)]


def test_chat_templates_cannot_be_exported(ws):
    keel.prompts.register("assistant", template=[{"role": "user", "content": "{{ question }}"}], changelog="chat")
    with pytest.raises(keel.InvalidInput, match="assistant@1.0.0 is a chat template"):
        export_prompt(get_session().prompts, "assistant", ws / "prompts")
    assert not (ws / "prompts").exists()
    with pytest.raises(keel.NotFound):
        export_prompt(get_session().prompts, "nothing", ws / "prompts")


def test_export_into_a_malformed_config_writes_nothing(ws):
    keel.prompts.register("support", template="Answer: {{ question }}", changelog="First version")
    config = _write(ws / "prompts" / "prompt_config.yaml", "chat:\n  version: [1.0\n")
    with pytest.raises(keel.InvalidInput, match=r"prompts/prompt_config\.yaml:\d+: malformed YAML"):
        export_prompt(get_session().prompts, "support", ws / "prompts")
    assert config.read_text() == "chat:\n  version: [1.0\n"
    assert not (ws / "prompts" / "support").exists()
