"""The base of every view: the view bar, the footer and periodic refreshes."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer

from smash_tui.tui.widgets import ViewBar

if TYPE_CHECKING:
    from smash_tui.tui.app import SmashApp
    from smash_tui.tui.data import Store


class SmashScreen(Screen[None]):
    """A view of the app: reads the database in workers, refreshed while it is shown.

    Subclasses compose their body in ``compose_body`` and read the database
    in ``refresh_data`` (which must only start workers, never query itself).
    """

    MODE: ClassVar[str] = ""
    # Below this width, views switch to their narrow layout (class "-narrow").
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [
        (0, "-narrow"),
        (110, "-wide"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._timer: Timer | None = None

    @property
    def smash(self) -> SmashApp:
        """The app, typed."""
        return cast("SmashApp", self.app)

    @property
    def store(self) -> Store | None:
        """The open database; None until it has been opened."""
        return self.smash.store

    def compose(self) -> ComposeResult:
        yield ViewBar(self.MODE)
        yield from self.compose_body()
        yield Footer(compact=True)

    def compose_body(self) -> ComposeResult:
        """The view's own widgets."""
        return iter(())

    def on_mount(self) -> None:
        self.query_one(ViewBar).experiment = self.smash.experiment_label
        interval = self.smash.poll_interval
        if interval:
            self._timer = self.set_interval(interval, self._tick)

    def on_screen_resume(self) -> None:
        self.query_one(ViewBar).experiment = self.smash.experiment_label
        if self._timer is not None:
            self._timer.resume()
        self.reload()

    def on_screen_suspend(self) -> None:
        if self._timer is not None:
            self._timer.pause()

    def _tick(self) -> None:
        if self.is_current and self.store is not None:
            self.refresh_data()

    def reload(self) -> None:
        """Read everything again now (on showing the view, ctrl+r, a new experiment)."""
        self.query_one(ViewBar).experiment = self.smash.experiment_label
        if self.store is not None:
            self.refresh_data(force=True)

    def refresh_data(self, force: bool = False) -> None:
        """Start the workers that read what the view shows.

        Args:
            force: Re-read even when nothing seems to have changed.
        """
