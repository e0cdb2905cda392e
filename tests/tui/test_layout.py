"""Every view fits the small (80x24) and the usual (120x40) terminal: nothing overflows."""

from __future__ import annotations

import pytest
from textual.containers import ScrollableContainer
from textual.widget import Widget
from textual.widgets import DataTable

from smash_tui.tui.grid import Grid
from tests.tui.conftest import FakeLauncher, FakeRunner, make_app, settle
from tests.tui.fixtures import Fixture

VIEWS = (("1", "dashboard"), ("2", "architectures"), ("3", "jobs"), ("4", "proxy"), ("5", "pareto"))


def _scrolled(widget: Widget) -> bool:
    """True inside a scrolling container, where content may extend past the view by design."""
    return any(isinstance(node, ScrollableContainer) for node in widget.ancestors[:-2])


def _problems(screen: Widget) -> list[str]:
    problems = []
    region = screen.region
    for widget in screen.query("*"):
        if not widget.display or not widget.region.area:
            continue
        if not _scrolled(widget) and not region.contains_region(widget.region):
            problems.append(f"{widget!r} at {widget.region} sticks out of {region}")
        # Vertical scrolling is what tables and panes are for; sideways scrolling is overflow.
        if isinstance(widget, (DataTable, Grid, ScrollableContainer)) and widget.max_scroll_x > 0:
            problems.append(f"{widget!r} is {widget.max_scroll_x} cells too wide")
    return problems


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
async def test_every_view_fits(
    size: tuple[int, int], fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        for key, mode in VIEWS:
            await pilot.press(key)
            await settle(pilot)
            assert app.current_mode == mode
            assert _problems(app.screen) == [], mode
        # The help and the dialogs fit too.
        for keys in (("question_mark",), ("n",), ("2", "r")):
            await pilot.press("escape", *keys)
            await settle(pilot)
            assert _problems(app.screen) == [], keys
            await pilot.press("escape")
