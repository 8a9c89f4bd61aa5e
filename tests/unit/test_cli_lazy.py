"""The ``keel`` group lists its commands from a static table (``keel.cli.main.COMMANDS``) and
builds one only when it runs: the table must say what the commands themselves say."""

import contextlib
import io

import pytest
import typer
import typer.main

from cli_inprocess import keel
from keel.cli import main as cli_main


def _first_paragraph(text: str) -> str:
    return " ".join(text.split("\n\n")[0].split())


@pytest.mark.parametrize("name", list(cli_main.COMMANDS))
def test_the_table_has_each_commands_own_help(name):
    command = cli_main.load_command(name)
    assert command.name == name
    assert _first_paragraph(command.help or "") == _first_paragraph(cli_main.COMMANDS[name][2])
    assert not command.hidden and not command.deprecated and not command.short_help


def _help(group, args):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        group.main(args, prog_name="keel", standalone_mode=False)
    return out.getvalue()


def test_root_help_is_what_typer_prints_with_every_command_built(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    eager = typer.Typer(
        name="keel",
        help=cli_main.app.info.help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    eager.callback()(cli_main._root)
    for name, (module, attribute, _help_text) in cli_main.COMMANDS.items():
        target = getattr(__import__(module, fromlist=[attribute]), attribute)
        if isinstance(target, typer.Typer):
            eager.add_typer(target, name=name)
        else:
            eager.command(name)(target)
    built = typer.main.get_command(eager)
    lazy = typer.main.get_command(cli_main.app)
    assert list(built.commands) == list(lazy.commands) == list(cli_main.COMMANDS)  # type: ignore[attr-defined]
    assert _help(lazy, ["--help"]) == _help(built, ["--help"])
    for name in cli_main.COMMANDS:  # each group's sub-commands are built on first lookup too
        assert _help(lazy, [name, "--help"]) == _help(built, [name, "--help"]), name
    for path in (["prompts", "alias", "--help"], ["server", "token", "create", "--help"], ["data", "add", "--help"]):
        assert _help(lazy, path) == _help(built, path)


def test_a_mistyped_command_is_answered_as_before(tmp_path):
    out = keel("prmpts", cwd=tmp_path)
    assert out.returncode == 2
    assert "No such command 'prmpts'. Did you mean 'prompts'?" in out.stderr
    out = keel("nosuch", cwd=tmp_path)
    assert out.returncode == 2 and "No such command 'nosuch'." in out.stderr
    out = keel(cwd=tmp_path)  # no command: the help, on stderr, exit 2
    assert out.returncode == 2 and "import         Import runs" in out.stderr
