"""The `smash` command line.

``app`` is the Typer application; each command lives in a module of this package and
is registered here, so a new command is one more ``app.command(...)`` line. Every
command that touches the database takes ``--db URL`` (else ``$SMASH_DB``, else a
SQLite file in the user data folder). Exit codes: 0 ok, 1 failure, 2 usage,
130 interrupted; errors are one line on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from smash_tui import __version__
from smash_tui.cli import browse, export, jobs, retrain, search, system, worker


class _OneLineErrors(TyperGroup):
    """The `smash` group, printing click's usage errors as one line instead of a box.

    Typer renders a mistyped option or command as a multi-line panel; scripts and
    users grepping logs get the same one-line ``error: ...`` as every other failure.
    """

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            # Not standalone: click raises its errors here instead of printing them.
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as error:  # click's errors, vendored by Typer
            message = " ".join(error.format_message().split())
            context = getattr(error, "ctx", None)  # usage errors know the command
            hint = f" (try '{context.command_path} -h')" if context is not None else ""
            typer.echo(f"error: {message}{hint}", err=True)
            sys.exit(error.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        # A command that returns normally gives None; typer.Exit(code) gives its code.
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="smash",
    cls=_OneLineErrors,
    help="One-shot neural architecture search with SMASH HyperNets.",
    add_completion=False,
    # Errors are one line (see smash_tui.cli.common); never a pretty traceback.
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"smash {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def root(
    context: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """One-shot neural architecture search with SMASH HyperNets.

    Without a command, opens the terminal command center (`smash tui`) when run in a
    terminal, and prints this help otherwise.
    """
    if context.invoked_subcommand is None:
        if sys.stdin.isatty() and sys.stdout.isatty():
            system.tui(db=None)
            raise typer.Exit()
        typer.echo(context.get_help())
        raise typer.Exit()


app.command(rich_help_panel="Run")(search.search)
app.command(rich_help_panel="Run")(search.demo)
app.command(rich_help_panel="Run")(retrain.retrain)
app.command(rich_help_panel="Run")(retrain.score)
app.command(rich_help_panel="Run")(worker.worker)
app.command(rich_help_panel="Run")(worker.workers)
app.command(rich_help_panel="Browse")(browse.experiments)
app.command(rich_help_panel="Browse")(browse.ls)
app.command(rich_help_panel="Browse")(browse.show)
app.command(rich_help_panel="Browse")(export.export)
app.command(rich_help_panel="Jobs")(jobs.jobs)
app.command(rich_help_panel="Jobs")(jobs.pause)
app.command(rich_help_panel="Jobs")(jobs.resume)
app.command(rich_help_panel="Jobs")(jobs.cancel)
app.command(rich_help_panel="Jobs")(jobs.retry)
app.command(rich_help_panel="System")(system.info)
app.command(rich_help_panel="System")(system.tui)


def main() -> None:
    """Entry point of the ``smash`` script."""
    app()
