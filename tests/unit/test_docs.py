"""The README is a contract: every keel command it shows exists, and every CLI command is in it."""

import contextlib
import io
import re
from pathlib import Path

from keel.cli.main import app

README = (Path(__file__).parents[2] / "README.md").read_text()


def _readme_commands() -> set[tuple[str, ...]]:
    commands = set()
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            for part in re.split(r"\s*(?:&&|/)\s*(?=keel )", line.split("#")[0]):
                words = part.strip().split()
                if words[:1] == ["keel"] or (words and words[0].endswith("/keel")):
                    names = []
                    for word in words[1:3]:  # the command path ends at the first option or argument
                        if not re.fullmatch(r"[a-z][a-z-]*", word):
                            break
                        names.append(word)
                    if names:
                        commands.add(tuple(names))
    return commands


def _cli_commands() -> set[tuple[str, ...]]:
    import typer.main

    group = typer.main.get_command(app)
    found = set()
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        subcommands = getattr(command, "commands", None)
        if subcommands:
            found.update((name, sub) for sub in subcommands)
        else:
            found.add((name,))
    return found


def test_every_readme_command_exists():
    import typer.main

    group = typer.main.get_command(app)  # once: CliRunner.invoke builds it again for every call (60 ms)
    cli = _cli_commands()
    for command in _readme_commands():
        assert command in cli or command[:1] in cli, f"README shows 'keel {' '.join(command)}', which does not exist"
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = group.main([*command, "--help"], prog_name="keel", standalone_mode=False)
        assert code == 0 and f"Usage: keel {command[0]}" in out.getvalue(), out.getvalue()


def test_every_cli_command_is_documented():
    documented = _readme_commands()
    for command in _cli_commands():
        assert command in documented, f"'keel {' '.join(command)}' is missing from the README"


def test_make_targets_in_readme_exist():
    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    for target in re.findall(r"^make (\w+)", README, re.M):
        assert re.search(rf"^{target}:", makefile, re.M), f"README shows 'make {target}'"


def _readme_exit_codes() -> dict[int, set[str]]:
    """The README's exit-code table: exit code -> the error classes it names."""
    section = README[README.index("| exit | meaning | errors |") :]
    table = {}
    for line in section.splitlines()[2:]:
        if not line.startswith("|"):
            break
        code, _meaning, errors = (cell.strip() for cell in line.strip("|").split("|"))
        table[int(code)] = set(re.findall(r"`(\w+)`", errors))
    return table


def test_readme_exit_code_table_matches_the_code():
    import keel.errors

    expected: dict[int, set[str]] = {0: set()}
    for name in [*keel.errors.__all__, "KeelError"]:
        cls = getattr(keel.errors, name)
        if isinstance(cls, type) and issubclass(cls, keel.errors.KeelError):
            expected.setdefault(cls.exit_code, set()).add(name)
    # Exits the CLI gives without an error class: checks that found problems, and Ctrl-C.
    cli = Path(__file__).parents[2] / "src" / "keel" / "cli"
    for source in cli.glob("*.py"):
        for code in re.findall(r"typer\.Exit\((\d+)\)", source.read_text()):
            expected.setdefault(int(code), set())
    main = (cli / "main.py").read_text()
    assert "except typer.Abort:" in main and "return 130" in main
    expected.setdefault(130, set())
    assert _readme_exit_codes() == expected
