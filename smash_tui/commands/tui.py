"""``smash tui`` (and bare ``smash``): the terminal command center."""

from __future__ import annotations

from smash_tui.commands.common import DbOption, command


@command
def tui(db: DbOption = None) -> None:
    """Open the terminal command center on the database (what bare `smash` does)."""
    from smash_tui.app import run_app  # Textual loads only when the app is wanted

    run_app(db)
