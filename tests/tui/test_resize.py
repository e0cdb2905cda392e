"""Every view, the help and the dialogs survive resizes from 60x20 to 200x60 and back.

Each test drives the real app on the fixture database, notes what a view
shows (table rows and cursor, chart data, texts, field values), resizes the
terminal through small and large sizes, and checks after each resize that
the app still runs, that the view shows the same content, and that every
chart drew its points at the new size. The state is read from the widgets
(and a chart's own render), not from pixels.
"""

from __future__ import annotations

from typing import Any

import pytest
from textual.screen import Screen
from textual.widgets import DataTable, Input, RichLog, Select, Static
from textual_plotext import PlotextPlot

from smash_tui.tui.app import SmashApp
from smash_tui.tui.dialogs import ExportDialog, HelpScreen, NewSearchDialog, RetrainDialog
from smash_tui.tui.grid import Grid
from smash_tui.tui.widgets import Chart, StatusLine
from tests.tui.conftest import FakeLauncher, FakeRunner, make_app, settle
from tests.tui.fixtures import Fixture
from tests.tui.reading import chart_marks, plain

START = (100, 30)
# From the start size down to the smallest, up to the largest, and back.
SIZES = ((80, 24), (60, 20), (200, 60), (100, 30))


def content(screen: Screen[Any]) -> dict[str, Any]:
    """What a screen shows, read from its widgets: tables, charts, texts and fields."""
    shown: dict[str, Any] = {}
    for table in screen.query(DataTable):
        rows = [row.key.value for row in table.ordered_rows]
        shown[f"table #{table.id}"] = (rows, table.cursor_row)
    # (By type: the query "Grid" also finds Textual's grid containers.)
    for grid in (widget for widget in screen.query("*") if isinstance(widget, Grid)):
        shown[f"grid #{grid.id}"] = (grid.keys, grid.cursor_row)
    for chart in screen.query(Chart):
        shown[f"chart #{chart.id}"] = chart.plotted
        shown[f"chart #{chart.id} title"] = plain(chart.query_one(".chart-title", Static).content)
    for index, static in enumerate(screen.query(Static)):
        if static.id or static.has_class("dialog-title"):
            shown[f"static {index} #{static.id}"] = plain(static.content)
    for status in screen.query(StatusLine):
        shown[f"status #{status.id}"] = status.text.plain
    for field in screen.query(Input):
        shown[f"input #{field.id}"] = field.value
    for select in screen.query(Select):
        shown[f"select #{select.id}"] = select.value
    for log in screen.query(RichLog):
        # Lines wrap at the width, so compare the words.
        shown[f"log #{log.id}"] = "".join(strip.text for strip in log.lines).split()
    return shown


def assert_charts_drawn(screen: Screen[Any]) -> None:
    """Every shown chart with data draws points over the whole height of its plot."""
    for chart in screen.query(Chart):
        if not chart.display or not chart.plotted.points:
            continue
        marks, lines = chart_marks(chart)
        plot = chart.query_one(PlotextPlot)
        assert lines == plot.size.height, f"#{chart.id} drew {lines} lines in {plot.size}"
        assert marks > 0, f"#{chart.id} is blank at {plot.size}"


async def resize_and_check(pilot: Any, screen: Screen[Any], before: dict[str, Any]) -> None:
    """Resize through SIZES; after each, the app runs and ``screen`` shows ``before``."""
    app: SmashApp = pilot.app
    for size in SIZES:
        await pilot.resize_terminal(*size)
        await settle(pilot)
        assert app.return_code is None, f"the app ended at {size}"
        assert app.screen is screen
        assert app.size == size
        assert content(screen) == before, size
        assert_charts_drawn(screen)


VIEWS = [
    # (keys that open the view and move its cursor, mode)
    (("1",), "dashboard"),
    (("2", "down"), "architectures"),
    (("3", "down", "down"), "jobs"),
    (("4", "down", "down"), "proxy"),
    (("5", "down", "down"), "pareto"),
]


@pytest.mark.parametrize(("keys", "mode"), VIEWS, ids=[mode for _, mode in VIEWS])
async def test_a_view_keeps_its_content_through_resizes(
    keys: tuple[str, ...],
    mode: str,
    fixture: Fixture,
    launcher: FakeLauncher,
    runner: FakeRunner,
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=START) as pilot:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        await pilot.pause(0.1)  # the detail pane reads after a short delay
        await settle(pilot)
        assert app.current_mode == mode
        screen = app.screen
        before = content(screen)
        # The fixture fills every view: the check below is about something.
        assert any(chart.plotted.points for chart in screen.query(Chart)) or mode == "jobs"
        assert any(rows for key, (rows, *_) in _tables(before).items()), before
        assert_charts_drawn(screen)
        await resize_and_check(pilot, screen, before)
        # ctrl+r reads everything again and the view still draws the same at the last size.
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert content(screen) == before
        assert_charts_drawn(screen)


async def test_the_pareto_chart_survives_resizing_back_and_forth(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    # The hostile tester's steps. The log axis used to be logged again at every redraw:
    # blank after the first resize, a math domain error that ended the app a few later.
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        for size in ((80, 24), (100, 30), (80, 24), (100, 30), (80, 24), (100, 30)):
            await pilot.resize_terminal(*size)
            await settle(pilot)
            assert app.return_code is None, f"the app ended at {size}"
        chart = app.screen.query_one("#pareto-chart", Chart)
        assert chart_marks(chart)[0] > 0, "the chart is blank"
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert chart_marks(chart)[0] > 0, "the chart is blank after ctrl+r"
        # A theme change redraws the plot too.
        await pilot.press("t")
        await settle(pilot)
        assert chart_marks(chart)[0] > 0, "the chart is blank after a theme change"


def _tables(shown: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in shown.items() if key.startswith(("table", "grid"))}


DIALOGS = [
    # (keys that open it, its class, a field to change first and its new value)
    (("question_mark",), HelpScreen, None, None),
    (("n",), NewSearchDialog, "#name", "resized"),
    (("2", "down", "r"), RetrainDialog, "#epochs", "7"),
    (("2", "e"), ExportDialog, "#folder", "out-dir"),
]


@pytest.mark.parametrize(
    ("keys", "dialog", "field", "value"),
    DIALOGS,
    ids=["help", "new-search", "retrain", "export"],
)
async def test_a_dialog_keeps_its_fields_through_resizes(
    keys: tuple[str, ...],
    dialog: type[Screen[Any]],
    field: str | None,
    value: str | None,
    fixture: Fixture,
    launcher: FakeLauncher,
    runner: FakeRunner,
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=START) as pilot:
        await settle(pilot)
        for key in keys[:-1]:
            await pilot.press(key)
            await settle(pilot)
        await pilot.pause(0.1)
        await settle(pilot)
        view = app.screen
        under = content(view)
        await pilot.press(keys[-1])
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, dialog)
        if field is not None:
            screen.query_one(field, Input).value = value  # type: ignore[arg-type]
        await resize_and_check(pilot, screen, content(screen))
        # Every field and button is on screen at the last size, also after the smallest.
        for widget in screen.query("Input, Select, Button"):
            assert screen.region.contains_region(widget.region), widget
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is view
        assert content(view) == under
        assert_charts_drawn(view)


async def test_a_dialog_opened_large_fits_once_the_terminal_shrinks(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(200, 60)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, NewSearchDialog)
        for size in ((60, 20), (200, 60), (80, 24)):
            await pilot.resize_terminal(*size)
            await settle(pilot)
            for widget in screen.query("Input, Select, Button"):
                assert screen.region.contains_region(widget.region), (size, widget)
