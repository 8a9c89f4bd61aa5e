"""``keel NOUN VERB``: parse arguments, call the SDK, render.

The command line starts like a native tool: this module knows every command's name
and the first paragraph of its help (:data:`COMMANDS`), and imports the module that
defines a command only when that command runs or its ``--help`` is asked for. So
``keel --help`` imports no command module, and ``keel data status`` builds the
parser of ``keel data`` alone. Heavy modules (the SDK, the database layer, rich
tables) load inside the commands that use them. A :class:`~keel.errors.KeelError`
becomes one ``error: ...`` line on stderr and the error's exit code; never a
traceback.
"""

from __future__ import annotations

import copy
import functools
import importlib
import sys
from collections.abc import Callable, Iterator, MutableMapping
from typing import Annotated, Any

import typer
from typer import _click  # the click that typer vendors (typer is pinned to 0.28)
from typer._click.utils import make_default_short_help
from typer.core import TyperGroup
from typer.models import TyperInfo

from keel._version import __version__
from keel.errors import KeelError

__all__ = ["COMMANDS", "app", "main"]

# Every top-level command, in the order ``keel --help`` lists them:
# name -> (module, attribute: a typer.Typer group or a command function, the first
# paragraph of its help as ``keel --help`` shortens it). tests/unit/test_cli_lazy.py
# checks the help against the loaded command, so the two cannot drift apart.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("keel.cli.workspace", "init_cmd", "Create a .keel/ workspace (config, SQLite database, object store)."),
    "info": ("keel.cli.workspace", "info_cmd", "Show which store this folder uses."),
    "verify": (
        "keel.cli.workspace",
        "verify_cmd",
        "Check everything keel stores: objects against their hashes, the database file, and the digest "
        "of every finished run, prompt and model version and reflog entry (exit 5 if anything is wrong).",
    ),
    "reproduce": (
        "keel.cli.eval",
        "reproduce_command",
        "Re-create a run's inputs and re-execute its evaluation (replayed, or --live); report differences.",
    ),
    "ui": (
        "keel.cli.ui",
        "ui_command",
        "Browse this workspace in a web UI, and serve MLflow clients, on 127.0.0.1 (one user, no sign-in, no token).",
    ),
    "login": (
        "keel.cli.login",
        "login_command",
        "Check an API token against a keel server and remember it for that server.",
    ),
    "logout": ("keel.cli.login", "logout_command", "Forget the stored token of a keel server."),
    "backup": (
        "keel.cli.backup",
        "backup_command",
        "Back up this workspace (SQLite + local objects) while it is in use: a consistent database "
        "snapshot (SQLite's online backup API), its objects, config and a manifest.",
    ),
    "restore": (
        "keel.cli.backup",
        "restore_command",
        "Make a workspace from a backup, then check it as 'keel verify' does (exit 5 if anything is wrong).",
    ),
    "gc": (
        "keel.cli.gc",
        "gc_command",
        "Remove objects that no live record references, from the local store or S3, safely while other "
        "processes write (objects younger than --grace are kept); print what went and the space freed.",
    ),
    "sync": (
        "keel.cli.sync",
        "sync_command",
        "Deliver logged records that wait in the spool (left by processes that ended before the store "
        "or server took them) to the current store; exit 1 if some could not be delivered.",
    ),
    "gate": (
        "keel.cli.gate",
        "gate_command",
        "Fail (exit 1) when an evaluation is significantly worse than what an alias points at; print Markdown.",
    ),
    "erase": (
        "keel.cli.erasures",
        "erase_command",
        "Erase everything keel holds about one end user: conversations, traces (every project), recorded LLM calls.",
    ),
    "runs": ("keel.cli.runs", "runs_app", "List, show, compare, delete, restore and purge runs."),
    "artifacts": ("keel.cli.runs", "artifacts_app", "List and download run artifacts."),
    "projects": ("keel.cli.runs", "projects_app", "List, create and rename projects."),
    "prompts": ("keel.cli.prompts", "prompts_app", "Versioned prompts: register, load, alias, diff, sync with files."),
    "data": (
        "keel.cli.data",
        "data_app",
        "Version data next to code: pointer files in git, bytes in keel's store and remotes.",
    ),
    "remote": ("keel.cli.data", "remote_app", "Remotes that data is pushed to and pulled from (folders or S3)."),
    "models": (
        "keel.cli.models",
        "models_app",
        "Registered models: versions, stages, aliases, model cards, history.",
    ),
    "eval": ("keel.cli.eval", "eval_app", "Evaluate prompt x model grids on a dataset."),
    "server": (
        "keel.cli.server",
        "server_app",
        "Run the team server (REST API, web UI with sign-in, MLflow API) and administer its users, "
        "tokens and role grants. See docs/server.md.",
    ),
    "flags": ("keel.cli.flags", "flags_app", "Feature flags: list, show, set, roll out, kill, history, evaluate."),
    "hooks": ("keel.cli.hooks", "hooks_app", "Webhooks: subscribe URLs to events, test them, see deliveries."),
    "retention": (
        "keel.cli.retention",
        "retention_app",
        "Retention periods for conversations, recorded LLM calls and traces: show, set, unset, apply.",
    ),
    "erasures": (
        "keel.cli.erasures",
        "erasures_app",
        "The erasure audit: who erased which records, when, with which filter, how many.",
    ),
    "review": (
        "keel.cli.review",
        "review_app",
        "Protected aliases and change requests: protect, request, list, show, approve, reject, break-glass.",
    ),
    "ab": ("keel.cli.flags", "ab_app", "A/B tests: create, start, stop, status, analyze."),
    "config": (
        "keel.cli.config",
        "config_app",
        "Environment configuration: show (with where each value came from), diff, history.",
    ),
    "llm": (
        "keel.cli.llm",
        "llm_app",
        "Recorded LLM calls (list, show, export, import cassettes, delete) and the stand-in model server.",
    ),
    "kb": (
        "keel.cli.kb",
        "kb_app",
        "Knowledge bases: stage documents, commit versions, diff, search and export them.",
    ),
    "conversations": (
        "keel.cli.conversations",
        "conversations_app",
        "Logged conversations: list, show, record feedback, stats per prompt version, export as an eval dataset, "
        "delete.",
    ),
    "traces": (
        "keel.cli.traces",
        "traces_app",
        "Traces of your LLM app (trees of spans): list, show one, stats per model / prompt / day, export, delete.",
    ),
    "import": (
        "keel.cli.imports",
        "import_app",
        "Import runs, models, prompts and data from MLflow, W&B or DVC (idempotent, resumable).",
    ),
}


def load_command(name: str) -> _click.Command:
    """The click command of ``keel NAME``, from the module that defines it, as
    ``Typer.add_typer`` / ``Typer.command`` on the root would have built it (a group's
    own sub-commands are built when first looked up, see :func:`_group`)."""
    module, attribute, _help = COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
    holder = typer.Typer()
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
        return _group(holder.registered_groups[0])
    holder.command(name)(target)
    return typer.main.get_command_from_info(
        holder.registered_commands[0],
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=app.rich_markup_mode,
    )


def _group(info: TyperInfo) -> _click.Command:
    """What ``typer.main.get_group_from_info`` builds, but each sub-command is converted
    (its signature read, its parameters made) on first lookup: ``keel data status`` builds
    one command of ``keel data``, not twelve. Listing them (``--help``) builds them all."""
    sub = info.typer_instance
    assert sub is not None
    builders: dict[str, Callable[[], _click.Command]] = {}
    for command in sub.registered_commands:
        assert command.callback is not None
        builders[command.name or typer.main.get_command_name(command.callback.__name__)] = functools.partial(
            typer.main.get_command_from_info,
            command,
            pretty_exceptions_short=app.pretty_exceptions_short,
            rich_markup_mode=app.rich_markup_mode,
        )
    for sub_group in sub.registered_groups:
        sub_name = typer.main.solve_typer_info_defaults(sub_group).name
        if not sub_name:  # pragma: no cover - its commands would merge into this group: build as typer does
            return typer.main.get_group_from_info(
                info,
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
                suggest_commands=app.suggest_commands,
            )
        builders[sub_name] = functools.partial(_group, sub_group)
    shell = copy.copy(sub)  # the group itself (name, help, callback, options), without its commands
    shell.registered_commands, shell.registered_groups = [], []
    shell_info = copy.copy(info)
    shell_info.typer_instance = shell
    group = typer.main.get_group_from_info(
        shell_info,
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=app.rich_markup_mode,
        suggest_commands=app.suggest_commands,
    )
    group.commands = LazyCommands(builders)
    return group


class LazyCommands(MutableMapping[str, _click.Command]):
    """A group's sub-commands by name, in order, each built by its builder on first access."""

    def __init__(self, builders: dict[str, Callable[[], _click.Command]]) -> None:
        self._builders = builders
        self._built: dict[str, _click.Command] = {}

    def __getitem__(self, name: str) -> _click.Command:
        if name not in self._built:
            self._built[name] = self._builders[name]()  # KeyError for an unknown name, as a dict
        return self._built[name]

    def __setitem__(self, name: str, command: _click.Command) -> None:
        self._builders.setdefault(name, lambda: command)
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._builders[name]
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders


class LazyGroup(TyperGroup):
    """The ``keel`` group: lists every command from :data:`COMMANDS` without importing it,
    and builds a command only when it is looked up to run (or to print its own help)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands({name: functools.partial(load_command, name) for name in COMMANDS})

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return list(COMMANDS)

    def format_commands(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        # As TyperGroup lists them (click's get_short_help_str of each), from the help each
        # command will have, without building it.
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, make_default_short_help(help_, limit).strip()) for name, (_, _, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(  # the complete CLI, also for tests and documentation tools
    name="keel",
    cls=LazyGroup,
    help="Experiment management and version control for LLM applications.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"keel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Experiment management and version control for LLM applications."""


_root_group: _click.Command | None = None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``keel`` command; returns the exit code."""
    global _root_group
    try:
        if _root_group is None:  # built once per process (tests call main many times)
            _root_group = typer.main.get_command(app)
        result = _root_group.main(args=argv, prog_name="keel", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except KeelError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except typer.TyperException as exc:  # usage errors: typer prints them as click would
        exc.show()  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", 2))
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
