"""Prompts kept as files in a repository, synced with the prompt registry.

The layout (as in most teams' repositories)::

    prompts/
      prompt_config.yaml            # one entry per prompt
      chat/system_prompt.txt        # the template: text with {{ variables }}
      chat/few_shot_examples.json   # optional, any JSON
      chat/CHANGELOG.md             # "## 1.3" or "## [1.3.0] - 2026-01-02", then what changed and why
      classification/...

    # prompt_config.yaml
    chat:
      version: "1.3"                # MAJOR.MINOR[.PATCH]
      model: "gpt-4"
      temperature: 0.7              # every key not listed here is a model parameter
      system_prompt: "prompts/chat/system_prompt.txt"
      few_shot: "prompts/chat/few_shot_examples.json"
      response_schema: "prompts/chat/response_schema.json"   # optional, JSON
      description: "Support chat"   # optional, not part of the content

Paths are relative to the folder that holds ``prompts/`` (paths relative to
``prompts/`` itself are accepted too). A prompt's ``CHANGELOG.md`` sits next
to its ``system_prompt`` file.

- :func:`read_prompt_dir` reads and checks the files; errors name the file and line.
- :func:`check_prompt_dir` compares them with the registry: a changed prompt needs a
  version bump at least as large as :data:`~keel.core.prompt_content.BUMP_RULE`
  requires, and a ``CHANGELOG.md`` entry for that version; content not yet the
  registry's latest is reported as *pending* (the fix: ``keel prompts sync``).
- :func:`sync_prompt_dir` registers what is new: all of it, or nothing if any check fails.
  Files reverted (in git) to an older version's content register it as a new version
  above the latest, as git makes a revert a new commit.
- :func:`export_prompt` writes a registered version as files; syncing them back is a no-op.

Example::

    service = get_session().prompts
    for problem in check_prompt_dir(service, "prompts"):
        print(problem)      # prompts/prompt_config.yaml:2: chat: the content changed ... (set version: "1.3.1" ...)
    sync_prompt_dir(service, "prompts")
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from keel.core.names import check_name
from keel.core.prompt_content import PromptContent, diff_prompts, required_bump
from keel.core.semver import SemVer
from keel.core.templates import template_variables
from keel.core.yaml_safe import SafeYamlLoader, compose_yaml, load_yaml, yaml_error
from keel.errors import InvalidInput, KeelError, NotFound, PromptFilesRejected, StoreError
from keel.fileio import atomic_write_text
from keel.services.prompts import PromptService, PromptVersion

__all__ = [
    "CONFIG_NAME",
    "RESERVED_KEYS",
    "FilePrompt",
    "Problem",
    "PromptFilesRejected",
    "SyncResult",
    "check_prompt_dir",
    "export_prompt",
    "read_prompt_dir",
    "sync_prompt_dir",
]

CONFIG_NAME = "prompt_config.yaml"
CHANGELOG_NAME = "CHANGELOG.md"
SYSTEM_PROMPT_NAME = "system_prompt.txt"
FEW_SHOT_NAME = "few_shot_examples.json"
RESPONSE_SCHEMA_NAME = "response_schema.json"
#: Keys of a prompt_config.yaml entry that are not model parameters.
RESERVED_KEYS = ("version", "model", "system_prompt", "few_shot", "response_schema", "template", "description")

_ORDER = {"patch": 0, "minor": 1, "major": 2}
_PATH_HINT = 'paths are relative to the folder holding prompts/, e.g. system_prompt: "prompts/chat/system_prompt.txt"'
_MERGE_TAG = "tag:yaml.org,2002:merge"


# -- results -------------------------------------------------------------------
@dataclass(frozen=True)
class FilePrompt:
    """A prompt as the files describe it.

    Attributes:
        name: the prompt's name (its key in prompt_config.yaml).
        version: the version, normalised (``"1.3"`` -> ``"1.3.0"``).
        content: template, model, parameters, few-shot examples and response schema.
        changelog: the CHANGELOG.md text for ``version``, or None if there is none.
        config_path: the prompt_config.yaml file.
        line: the line of the prompt's entry in it.
        version_line: the line of its ``version`` key.
        system_prompt_path: the template file.
        changelog_path: where its CHANGELOG.md is (or would be).
        few_shot_path: the few-shot examples file, if any.
        response_schema_path: the response schema file, if any.
        description: the optional ``description`` (not part of the content).
    """

    name: str
    version: str
    content: PromptContent
    changelog: str | None
    config_path: Path
    line: int
    version_line: int
    system_prompt_path: Path
    changelog_path: Path
    few_shot_path: Path | None = None
    response_schema_path: Path | None = None
    description: str | None = None

    @property
    def content_hash(self) -> str:
        """The hash the registry would give this content."""
        return self.content.content_hash()


@dataclass(frozen=True)
class Problem:
    """Why a prompt in the files cannot be synced as it is.

    Attributes:
        prompt: the prompt's name.
        file: the file to fix.
        line: the line to fix (None when the whole file is meant, e.g. a missing entry).
        message: what is wrong.
        hint: what to do about it.
        pending: True when ``keel prompts sync`` is the fix (the files hold content the registry's
            latest version does not: a new version, or a revert); such a problem does not stop a sync.
    """

    prompt: str
    file: Path
    line: int | None
    message: str
    hint: str
    pending: bool = False

    def __str__(self) -> str:
        return f"{_at(self.file, self.line)}: {self.prompt}: {self.message} ({self.hint})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "prompt": self.prompt,
            "file": str(self.file),
            "line": self.line,
            "message": self.message,
            "hint": self.hint,
            "pending": self.pending,
        }


@dataclass(frozen=True)
class SyncResult:
    """What :func:`sync_prompt_dir` did with one prompt.

    Attributes:
        name: the prompt's name.
        version: its version in the registry.
        created: True if this sync registered it; False if it was registered already.
        prompt: the registered version.
    """

    name: str
    version: str
    created: bool
    prompt: PromptVersion

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "content_hash": self.prompt.content_hash,
        }


# -- paths and messages ------------------------------------------------------------
def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the current folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


def _at(path: Path, line: int | None) -> str:
    return f"{_shown(path)}:{line}" if line else _shown(path)


def _find_config(directory: str | os.PathLike[str]) -> Path:
    """prompt_config.yaml of ``directory``: the prompts folder, the folder holding ``prompts/``, or the file."""
    folder = Path(directory).absolute()
    if folder.is_file():
        return folder
    for candidate in (folder / CONFIG_NAME, folder / "prompts" / CONFIG_NAME):
        if candidate.is_file():
            return candidate
    return folder / CONFIG_NAME


def _read_text(path: Path) -> str:
    try:
        # newline="": the template is taken byte for byte (a "\r\n" stays), so hashes match an export.
        with open(path, encoding="utf-8", newline="") as handle:
            return handle.read()
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{_shown(path)} is not UTF-8 text (byte {exc.start})", "save the file as UTF-8") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {_shown(path)}: {exc.strerror}", "check the file's permissions") from None


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (a temporary file in the same folder, then a rename); skip if unchanged."""
    if path.is_file() and _read_text(path) == text:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    except OSError as exc:
        message = f"cannot write {_shown(path)}: {exc.strerror or exc}"
        raise StoreError(message, "check the folder's permissions") from None


# -- prompt_config.yaml ---------------------------------------------------------------
@dataclass
class _Entry:
    """One top-level entry of prompt_config.yaml, with the lines of its keys."""

    name: Any
    line: int
    key_node: Any
    value_node: Any
    value: Any
    lines: dict[Any, int] = field(default_factory=dict)
    raw: dict[Any, str] = field(default_factory=dict)  # the text of scalar values, as written


def _refuse_duplicates(path: Path, node: Any, what: str) -> None:
    seen: dict[str, int] = {}
    for key, _value in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
            continue
        line = key.start_mark.line + 1
        if key.value in seen:
            raise InvalidInput(
                f"{_at(path, line)}: {what}{key.value!r} is defined twice (first on line {seen[key.value]})",
                "remove or rename one of them",
            )
        seen[key.value] = line


def _compose(path: Path, text: str) -> tuple[Any, list[_Entry]]:
    """The root node of prompt_config.yaml and its entries; malformed YAML names the line.

    Read by keel's bounded safe loader (libyaml's parser when present): an alias bomb, a
    recursive alias, an unknown tag or a 100,000-digit number is refused with its line.
    """
    source = _shown(path)
    root = compose_yaml(text, source, SafeYamlLoader, syntax="malformed YAML")
    if root is None:
        return None, []
    if not isinstance(root, yaml.MappingNode):
        raise InvalidInput(
            f"{_at(path, root.start_mark.line + 1)}: {CONFIG_NAME} must map prompt names to their settings",
            "write the name, then its indented settings: 'chat:' / '  version: \"1.0\"' / '  system_prompt: ...'",
        )
    loader = SafeYamlLoader("")
    try:
        _refuse_duplicates(path, root, "prompt ")
        loader.flatten_mapping(root)
        entries = []
        for key_node, value_node in root.value:
            name = loader.construct_object(key_node, deep=True)
            if isinstance(value_node, yaml.MappingNode):
                _refuse_duplicates(path, value_node, f"{name}: key ")  # before merge keys (<<) are flattened
            entry = _Entry(
                name, key_node.start_mark.line + 1, key_node, value_node, loader.construct_object(value_node, deep=True)
            )
            if isinstance(value_node, yaml.MappingNode):
                for field_key, field_value in value_node.value:
                    key = loader.construct_object(field_key, deep=True)
                    entry.lines[key] = field_key.start_mark.line + 1
                    if isinstance(field_value, yaml.ScalarNode):
                        entry.raw[key] = field_value.value
            entries.append(entry)
        return root, entries
    except yaml.YAMLError as exc:
        raise yaml_error(source, exc, syntax="malformed YAML") from None
    finally:
        loader.dispose()


def _read_config(directory: str | os.PathLike[str]) -> tuple[Path, list[_Entry]]:
    config = _find_config(directory)
    if not config.is_file():
        raise NotFound(
            f"no {CONFIG_NAME} in {_shown(config.parent)}",
            f"create prompts/{CONFIG_NAME}, or write one with 'keel prompts export NAME'",
        )
    return config, _compose(config, _read_text(config))[1]


class _EntryReader:
    """Turns one entry into a :class:`FilePrompt`; every error names the file, the key and the line."""

    def __init__(self, config: Path, entry: _Entry) -> None:
        self.config = config
        self.entry = entry
        self.name = str(entry.name)

    def error(self, key: Any, message: str, hint: str, kind: type[KeelError] = InvalidInput) -> KeelError:
        line = self.entry.lines.get(key, self.entry.line) if key else self.entry.line
        where = f"{self.name}.{key}" if key else self.name
        return kind(f"{_at(self.config, line)}: {where}: {message}", hint)

    def read(self) -> FilePrompt:
        entry = self.entry
        if not isinstance(entry.name, str):
            raise self.error("", "a prompt name must be a string", "write the name as text: chat:")
        try:
            check_name(entry.name, "prompt name")
        except InvalidInput as exc:
            raise self.error("", exc.message, exc.hint or "") from None
        fields = entry.value
        if not isinstance(fields, dict):
            raise self.error(
                "",
                f"the entry must be a mapping of settings, not a {type(fields).__name__}",
                "indent its settings under the name: version, model, system_prompt, ...",
            )
        if "template" in fields:
            raise self.error(
                "template",
                "templates are not written inline in prompt_config.yaml",
                f'put the text in a file and name it: system_prompt: "prompts/{self.name}/{SYSTEM_PROMPT_NAME}"',
            )
        for key in ("version", "system_prompt"):
            if fields.get(key) is None:
                example = '"1.0"' if key == "version" else f'"prompts/{self.name}/{SYSTEM_PROMPT_NAME}"'
                raise self.error("", f"has no {key}", f"add '{key}: {example}' to the entry")
        version = self.version(fields["version"])
        model = fields.get("model")
        if model is None:
            model = ""
        if not isinstance(model, str):
            raise self.error("model", f"must be a string, not {model!r}", 'quote it: model: "gpt-4"')
        description = fields.get("description")
        if description is not None and not isinstance(description, str):
            raise self.error("description", "must be a string", 'e.g. description: "Support chat"')
        system_prompt = self.locate("system_prompt")
        template = _read_text(system_prompt)
        try:
            template_variables(template)
        except InvalidInput as exc:
            raise InvalidInput(f"{_shown(system_prompt)}: {exc.message}", exc.hint) from None
        few_shot_path = self.locate("few_shot") if fields.get("few_shot") is not None else None
        schema_path = self.locate("response_schema") if fields.get("response_schema") is not None else None
        parameters = {key: value for key, value in fields.items() if key not in RESERVED_KEYS}
        content = self.content(
            template,
            model,
            parameters,
            self.json(few_shot_path, "few_shot") if few_shot_path else None,
            self.json(schema_path, "response_schema") if schema_path else None,
        )
        changelog_path = system_prompt.parent / CHANGELOG_NAME
        return FilePrompt(
            name=self.name,
            version=version,
            content=content,
            changelog=_changelog_entry(changelog_path, version),
            config_path=self.config,
            line=entry.line,
            version_line=entry.lines.get("version", entry.line),
            system_prompt_path=system_prompt,
            changelog_path=changelog_path,
            few_shot_path=few_shot_path,
            response_schema_path=schema_path,
            description=description,
        )

    def version(self, value: Any) -> str:
        # The text as written: an unquoted `version: 1.10` is read by YAML as the float 1.1.
        try:
            return str(SemVer.parse(self.entry.raw.get("version", value)))
        except InvalidInput as exc:
            raise self.error("version", exc.message, exc.hint or "") from None

    def locate(self, key: str) -> Path:
        value = self.entry.value[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a path, not {value!r}", _PATH_HINT)
        given = Path(value)
        root = self.config.parent.parent
        candidates = [given] if given.is_absolute() else [root / given, self.config.parent / given]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        if any(candidate.exists() for candidate in candidates):
            raise self.error(key, f"{value!r} is not a file", _PATH_HINT)
        looked = " or ".join(_shown(candidate) for candidate in dict.fromkeys(candidates))
        raise self.error(key, f"{value!r} does not exist (looked for {looked})", _PATH_HINT, NotFound)

    def json(self, path: Path, key: str) -> Any:
        text = _read_text(path)
        source = f"{key} of {self.name!r} ({_at(self.config, self.entry.lines.get(key))})"
        try:
            return json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                f"{_at(path, exc.lineno)}: invalid JSON (column {exc.colno}): {exc.msg}, in the {source}",
                "fix the JSON at that line",
            ) from None
        except ValueError as exc:  # NaN / Infinity: Python accepts them, JSON does not
            match = re.search(r"-?\b(?:NaN|Infinity)\b", text)
            line = text.count("\n", 0, match.start()) + 1 if match else None
            raise InvalidInput(f"{_at(path, line)}: {exc}, in the {source}", "use a finite number or null") from None

    def content(
        self, template: str, model: str, parameters: dict[Any, Any], few_shot: Any, schema: Any
    ) -> PromptContent:
        try:
            return PromptContent.create(template, model, parameters, few_shot, schema)
        except InvalidInput as exc:
            for key, value in parameters.items():  # find the parameter at fault, to name its line
                try:
                    PromptContent.create("", parameters={key: value})
                except InvalidInput as bad:
                    raise self.error(key, bad.message, bad.hint or "") from None
            raise self.error("", exc.message, exc.hint or "") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# -- CHANGELOG.md ------------------------------------------------------------------------
_HEADING = re.compile(r"^(#{1,6})\s")
_VERSION_HEADING = re.compile(r"^(#{1,6})[ \t]+\[?v?(\d+\.\d+(?:\.\d+)?)\]?(?=[\s\-:(,]|$)")


def _version_headings(lines: Sequence[str]) -> list[tuple[int, int, str]]:
    """``(index, level, version)`` of each version heading (``## 1.3``, ``## [1.3.0] - 2026-01-02``)."""
    found = []
    for index, line in enumerate(lines):
        match = _VERSION_HEADING.match(line)
        if match:
            try:
                found.append((index, len(match.group(1)), str(SemVer.parse(match.group(2)))))
            except InvalidInput:
                continue
    return found


def _changelog_text(text: str, version: str) -> str | None:
    """The text under the heading of ``version`` (up to the next heading of its level or above)."""
    lines = text.splitlines()
    for index, level, found in _version_headings(lines):
        if found != version:
            continue
        body = []
        for line in lines[index + 1 :]:
            heading = _HEADING.match(line)
            if heading and (len(heading.group(1)) <= level or _VERSION_HEADING.match(line)):
                break
            body.append(line)
        return "\n".join(body).strip() or None
    return None


def _changelog_entry(path: Path, version: str) -> str | None:
    return _changelog_text(_read_text(path), version) if path.is_file() else None


def _add_changelog_entries(text: str, entries: Sequence[tuple[str, str, str]]) -> str:
    """Insert ``(version, heading, body)`` entries for the versions ``text`` lacks, keeping versions newest first.

    Entries already in the file are left as they are: the file is the user's, the registry only fills gaps.
    """
    lines = text.splitlines()
    for version, heading, body in sorted(entries, key=lambda item: SemVer.parse(item[0]), reverse=True):
        headings = _version_headings(lines)
        if any(found == version for _index, _level, found in headings):
            continue
        level = headings[0][1] if headings else 2
        block = [f"{'#' * level} {heading}", "", *body.strip().splitlines(), ""]
        older = [index for index, _level, found in headings if SemVer.parse(found) < SemVer.parse(version)]
        at = older[0] if older else len(lines)
        if at == len(lines) and lines and lines[-1].strip():
            block.insert(0, "")
        lines[at:at] = block
    return "\n".join(lines).rstrip("\n") + "\n"


# -- reading -------------------------------------------------------------------------------
def read_prompt_dir(directory: str | os.PathLike[str]) -> list[FilePrompt]:
    """Read every prompt of a prompts folder, in the order of prompt_config.yaml.

    Args:
        directory: the folder holding prompt_config.yaml (or the folder holding ``prompts/``,
            or the prompt_config.yaml file itself).

    Raises:
        NotFound: there is no prompt_config.yaml, or a file it names does not exist.
        InvalidInput: malformed YAML or JSON, an entry that is not a mapping, a missing or invalid
            ``version``, a missing ``system_prompt``, a template syntax error. The message starts
            with ``file:line:``.
    """
    config, entries = _read_config(directory)
    return [_EntryReader(config, entry).read() for entry in entries]


# -- checking and syncing ----------------------------------------------------------------------
def _what_changed(old: PromptContent, new: PromptContent) -> str:
    diff = diff_prompts(old, new)
    changes = []
    if diff.variables_added:
        changes.append(f"variables added: {', '.join(diff.variables_added)}")
    if diff.variables_removed:
        changes.append(f"variables removed: {', '.join(diff.variables_removed)}")
    if isinstance(old.template, str) != isinstance(new.template, str):
        changes.append("the template switched between chat and text")
    if diff.response_schema_changed:
        changes.append("the response schema changed")
    if diff.model:
        changes.append(f"the model changed from {diff.model[0]!r} to {diff.model[1]!r}")
    parameters = sorted({*diff.parameters_added, *diff.parameters_removed, *diff.parameters_changed})
    if parameters:
        changes.append(f"parameters changed: {', '.join(parameters)}")
    if diff.few_shot_changed:
        changes.append("the few-shot examples changed")
    if diff.template_diff and not (diff.variables_added or diff.variables_removed):
        changes.append("the template text changed")
    return "; ".join(changes) or "the content changed"


@dataclass(frozen=True)
class _Review:
    """What the registry holds for one prompt of the files, and what a sync would do."""

    registered: PromptVersion | None  # the version that already agrees with the files
    problems: list[Problem]  # blocking problems and pending notes alike
    version: str | None = None  # the version a sync registers (None: the files' own)
    changelog: str | None = None  # its changelog entry (None: the files' CHANGELOG.md entry)


def _review(service: PromptService, prompt: FilePrompt) -> _Review:  # noqa: PLR0911 - one answer per case
    """Compare one prompt of the files with the registry (see :func:`check_prompt_dir`)."""
    try:
        registered = service.versions(prompt.name)
    except NotFound:
        registered = []
    version = SemVer.parse(prompt.version)
    chosen = f'set version: "{{}}" in {_shown(prompt.config_path)}'

    def problem(message: str, hint: str, pending: bool = False) -> Problem:
        return Problem(prompt.name, prompt.config_path, prompt.version_line, message, hint, pending)

    latest = registered[0] if registered else None
    if latest is not None and latest.content_hash == prompt.content_hash:
        if latest.version == prompt.version:
            return _Review(latest, [])
        named = next((known for known in registered if known.version == prompt.version), None)
        if named is not None and named.content_hash == prompt.content_hash:
            # e.g. the files were reverted to 1.3 and a sync registered that content as 1.4.1
            return _Review(latest, [])
        if version > SemVer.parse(latest.version):
            return _Review(
                latest,
                [
                    problem(
                        f"version {prompt.version} was bumped without a content change: "
                        f"the files are identical to {latest.ref}",
                        f"make the change this version is for, or {chosen.format(latest.version)}",
                    )
                ],
            )
        return _Review(
            latest,
            [
                problem(
                    f"the files are identical to the registered {latest.ref}, but the version says {prompt.version}",
                    chosen.format(latest.version),
                )
            ],
        )
    older = next((known for known in registered if known.content_hash == prompt.content_hash), None)
    problems = []
    if latest is not None:
        current = SemVer.parse(latest.version)
        needed = required_bump(latest.content, prompt.content) or "patch"
        minimum = current.bump(needed)
        why = _what_changed(latest.content, prompt.content)
        if older is not None and version <= current:
            # A revert (git revert / checkout of older files): as in git, a new version.
            return _Review(
                None,
                [
                    problem(
                        f"the files hold the content of {older.ref}, but the latest version is {latest.ref} "
                        f"(what load({prompt.name!r}) serves)",
                        f"run 'keel prompts sync' to register it as {prompt.name}@{minimum} "
                        "(a revert is a new version)"
                        + ("" if older.version == prompt.version else f", then {chosen.format(minimum)}"),
                        pending=True,
                    )
                ],
                str(minimum),
                f"Revert to {older.version} (the prompt files' content)",
            )
        kind = version.kind_of_change(current)
        if kind is None:
            said = "is still" if version == current else "is not above it:"
            problems.append(
                problem(
                    f"the content changed since {latest.ref} ({why}) but the version {said} {prompt.version}",
                    f"{chosen.format(minimum)} (this change needs a {needed} bump) and add a '## {minimum}' entry to "
                    f"{_shown(prompt.changelog_path)}",
                )
            )
        elif _ORDER[kind] < _ORDER[needed]:
            problems.append(
                problem(
                    f"{prompt.version} is a {kind} bump from {latest.version}, but this change needs a {needed} bump "
                    f"({why})",
                    f"{chosen.format(minimum)} or higher",
                )
            )
    if prompt.changelog is None:
        missing = "has no entry" if prompt.changelog_path.is_file() else "does not exist, so it has no entry"
        problems.append(
            Problem(
                prompt.name,
                prompt.changelog_path,
                None,
                f"{CHANGELOG_NAME} {missing} for version {prompt.version}",
                f"add a '## {prompt.version}' heading to {_shown(prompt.changelog_path)}, then what changed and why",
            )
        )
    if not problems:
        serves = "nothing yet" if latest is None else latest.ref
        problems.append(
            problem(
                f"version {prompt.version} of the files is not registered yet (load({prompt.name!r}) serves {serves})",
                "run 'keel prompts sync' to register it",
                pending=True,
            )
        )
    return _Review(None, problems)


def check_prompt_dir(service: PromptService, directory: str | os.PathLike[str]) -> list[Problem]:
    """Where the prompt files and the registry disagree; an empty list means they agree:
    ``load(name)`` serves what the files say, under a version that holds that content.

    Each prompt is compared with the registry's versions of that name: changed content needs a
    version above the latest, bumped at least as much as the change requires
    (:func:`~keel.core.prompt_content.required_bump`), and a CHANGELOG.md entry for it; an
    unchanged one must keep its version. Those problems stop :func:`sync_prompt_dir`. Content a
    sync would register (a new version, or a revert to an older version's content, which as in
    git becomes a new version above the latest) is reported too, as a *pending* problem
    (``problem.pending``) whose fix is ``keel prompts sync``. Registers nothing.

    Args:
        service: the prompt registry.
        directory: as for :func:`read_prompt_dir`.

    Raises:
        NotFound, InvalidInput: the files cannot be read (see :func:`read_prompt_dir`).
    """
    return [problem for prompt in read_prompt_dir(directory) for problem in _review(service, prompt).problems]


def sync_prompt_dir(
    service: PromptService, directory: str | os.PathLike[str], author: str | None = None
) -> list[SyncResult]:
    """Register every prompt of the files whose content is not the latest version's; all or nothing.

    Each new version gets the version number from prompt_config.yaml and the CHANGELOG.md entry
    for it. Files reverted to an older version's content (their version not above the latest)
    register that content as a new version above the latest, bumped by the usual rules (a patch
    when nothing else differs), so ``load(name)`` serves what the files say. Running it again
    registers nothing.

    Args:
        service: the prompt registry.
        directory: as for :func:`read_prompt_dir`.
        author: recorded as the author of new versions (default: the current user).

    Returns:
        One result per prompt, in the order of prompt_config.yaml.

    Raises:
        PromptFilesRejected: a check failed (see :func:`check_prompt_dir`); nothing was registered.
        NotFound, InvalidInput: the files cannot be read.
    """
    prompts = read_prompt_dir(directory)
    reviews = [_review(service, prompt) for prompt in prompts]
    problems = [problem for review in reviews for problem in review.problems if not problem.pending]
    if problems:
        raise PromptFilesRejected(problems)
    results = []
    for prompt, review in zip(prompts, reviews, strict=True):
        if review.registered is not None:
            results.append(SyncResult(prompt.name, review.registered.version, False, review.registered))
            continue
        content = prompt.content
        new, created = service.register(
            prompt.name,
            template=content.template,
            model=content.model,
            parameters=content.parameters,
            few_shot=content.few_shot,
            response_schema=content.response_schema,
            changelog=review.changelog or prompt.changelog or "",
            version=review.version or prompt.version,
            author=author,
        )
        results.append(SyncResult(prompt.name, new.version, created, new))
    return results


# -- exporting --------------------------------------------------------------------------------
class _Quoted(str):
    """A string written in double quotes (versions and paths, as in the usual prompt_config.yaml)."""

    __slots__ = ()


class _Dumper(yaml.SafeDumper):
    def represent_str(self, data: str) -> Any:
        # Double quotes for versions and paths, and for text with line breaks or other unprintable characters
        # ("\n\n" rather than a folded block, which would not read back the same).
        quoted = isinstance(data, _Quoted) or not data.isprintable()
        return self.represent_scalar("tag:yaml.org,2002:str", str(data), style='"' if quoted else None)


_Dumper.add_representer(str, _Dumper.represent_str)
_Dumper.add_representer(_Quoted, _Dumper.represent_str)


def _dump(data: dict[str, Any]) -> str:
    return str(yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True))


def _entry_span(text: str, entry: _Entry) -> tuple[int, int]:
    """Where an entry is in the text: from its key's line to its last line (comments after it stay put)."""
    start = text.rfind("\n", 0, entry.key_node.start_mark.index) + 1
    end = entry.value_node.end_mark.index
    # A block mapping ends where the next key starts: give the blank and comment lines before it back.
    lines = text[start:end].splitlines(keepends=True)
    while len(lines) > 1 and (not lines[-1].strip() or lines[-1].lstrip().startswith("#")):
        lines.pop()
    end = start + sum(len(line) for line in lines)
    if not text[start:end].endswith("\n"):  # a value on one line: take the rest of that line
        newline = text.find("\n", end)
        end = len(text) if newline < 0 else newline + 1
    return start, end


def _merged_config(config: Path, name: str, entry: dict[str, Any]) -> str:
    """prompt_config.yaml with ``entry`` under ``name``, the other entries (and comments) left as written."""
    text = _read_text(config) if config.is_file() else ""
    root, entries = _compose(config, text)
    old = next((known for known in entries if known.name == name), None)
    if old is not None and isinstance(old.value, dict) and isinstance(old.value.get("description"), str):
        entry["description"] = _Quoted(old.value["description"])
    block = _dump({name: entry})
    expected = {known.name: known.value for known in entries}
    expected[name] = entry
    if root is not None and root.flow_style:
        new_text = None
    elif old is not None:
        start, end = _entry_span(text, old)
        new_text = text[:start] + block + text[end:]
    else:
        separator = "" if not text.strip() else ("\n" if text.endswith("\n") else "\n\n")
        new_text = text + separator + block
    try:
        if new_text is None or load_yaml(new_text, CONFIG_NAME) != expected:
            new_text = None
    except InvalidInput:  # e.g. another entry used an anchor of the replaced one
        new_text = None
    if new_text is None:  # rewrite the whole file: same data, but comments and layout are lost
        new_text = _dump(expected)
    return new_text


def export_prompt(
    service: PromptService, name: str, directory: str | os.PathLike[str], version: str | None = None
) -> list[Path]:
    """Write a registered version as files of a prompts folder.

    Writes ``<name>/system_prompt.txt`` (and ``few_shot_examples.json``, ``response_schema.json``
    if the version has them), puts the prompt's entry in prompt_config.yaml (created if needed;
    other entries are left as written, and the entry's ``description`` is kept), and adds to
    ``<name>/CHANGELOG.md`` the entries it lacks for this version and the ones before it, newest
    first. Syncing the folder afterwards registers nothing.

    Args:
        service: the prompt registry.
        name: the prompt to export.
        directory: the prompts folder (created if needed), or a folder holding ``prompts/prompt_config.yaml``.
        version: a version or an alias (default: the latest version).

    Returns:
        The files of the exported prompt, prompt_config.yaml included.

    Raises:
        NotFound: no such prompt, version or alias.
        InvalidInput: the version is a chat template (this layout holds text templates), or a
            parameter has the name of a prompt_config.yaml key.
    """
    chosen = service.get(name, version)
    content = chosen.content
    if not isinstance(content.template, str):
        raise InvalidInput(
            f"{chosen.ref} is a chat template (a list of messages); the prompts/ file layout holds text templates "
            f"only ({SYSTEM_PROMPT_NAME})",
            "keep chat prompts in the registry and load them with keel.prompts.load, or export a text prompt",
        )
    clashing = sorted(set(content.parameters) & set(RESERVED_KEYS))
    if clashing:
        raise InvalidInput(
            f"{chosen.ref} has parameter(s) named {', '.join(clashing)}, which {CONFIG_NAME} reads as its own keys",
            "register a version with the parameter(s) renamed, then export that",
        )
    config = _find_config(directory)
    prompts_dir = config.parent
    folder = prompts_dir / name
    if not folder.resolve().is_relative_to(prompts_dir.resolve()):
        raise InvalidInput(f"prompt name {name!r} would be written outside {_shown(prompts_dir)}", "rename the prompt")

    def relative(path: Path) -> _Quoted:  # as the config writes paths: from the folder holding prompts/
        return _Quoted(path.relative_to(prompts_dir.parent).as_posix())

    plain = content.to_dict()
    files = {SYSTEM_PROMPT_NAME: content.template}
    entry: dict[str, Any] = {"version": _Quoted(chosen.version)}
    if content.model:
        entry["model"] = _Quoted(content.model)
    entry.update(plain["parameters"])
    entry["system_prompt"] = relative(folder / SYSTEM_PROMPT_NAME)
    for key, file_name in (("few_shot", FEW_SHOT_NAME), ("response_schema", RESPONSE_SCHEMA_NAME)):
        if plain[key] is not None:
            files[file_name] = json.dumps(plain[key], indent=2, ensure_ascii=False) + "\n"
            entry[key] = relative(folder / file_name)
    selected = SemVer.parse(chosen.version)
    history = [known for known in service.versions(name) if SemVer.parse(known.version) <= selected]
    changelog = folder / CHANGELOG_NAME
    existing = _read_text(changelog) if changelog.is_file() else f"# Changelog: {name}\n"
    entries = [(known.version, f"[{known.version}] - {_day(known.created_at)}", known.changelog) for known in history]
    # Everything is prepared (and the existing config parsed) before the first file is written.
    texts = {folder / file_name: text for file_name, text in files.items()}
    texts[config] = _merged_config(config, name, entry)
    texts[changelog] = _add_changelog_entries(existing, entries)
    for path, text in texts.items():
        _write_text(path, text)
    return list(texts)


def _day(created_at_ms: int) -> str:
    return datetime.fromtimestamp(created_at_ms / 1000, tz=UTC).date().isoformat()
