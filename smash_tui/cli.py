"""The `smash` command line."""

from __future__ import annotations

from typing import Annotated

import typer

from smash_tui import __version__

app = typer.Typer(
    name="smash",
    help="One-shot neural architecture search with SMASH HyperNets.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"smash {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """One-shot neural architecture search with SMASH HyperNets."""


@app.command()
def info() -> None:
    """Print the version."""
    typer.echo(f"smash {__version__}")


def main() -> None:
    app()
