"""The browser's line-API Grid on its own: drawing, cursor keys, clicks, windows."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.message import Message

from smash_tui.tui.grid import Grid, GridColumn

COLUMNS = [GridColumn("id", "id", 4), GridColumn("err", "err %", 6, right=True)]


def rows(start: int, count: int) -> list[tuple[str, list[tuple[str, str]]]]:
    return [
        (str(n), [(str(n), ""), (f"{n / 10:.2f}", "green")]) for n in range(start, start + count)
    ]


class GridApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Message] = []

    def compose(self) -> ComposeResult:
        yield Grid(COLUMNS, id="grid")

    def on_grid_row_highlighted(self, message: Grid.RowHighlighted) -> None:
        self.seen.append(message)

    def on_grid_header_selected(self, message: Grid.HeaderSelected) -> None:
        self.seen.append(message)

    def on_grid_near_end(self, message: Grid.NearEnd) -> None:
        self.seen.append(message)


def line(grid: Grid, y: int) -> str:
    return grid.render_line(y).text


async def test_grid_draws_header_rows_and_moves_the_cursor() -> None:
    app = GridApp()
    async with app.run_test(size=(30, 10)) as pilot:
        grid = app.query_one(Grid)
        grid.near_end_rows = 5
        grid.set_rows(rows(0, 50))
        grid.focus()
        await pilot.pause()
        assert line(grid, 0).startswith("  id     err %")
        assert line(grid, 1).startswith("  0       0.00")  # numbers align right
        await pilot.press("down", "down")
        assert grid.cursor_row == 2 and grid.cursor_key == "2"
        highlighted = [m for m in app.seen if isinstance(m, Grid.RowHighlighted)]
        assert highlighted[-1].key == "2"
        await pilot.press("end")
        await pilot.pause()
        assert grid.cursor_key == "49"
        assert round(grid.scroll_y) == grid.max_scroll_y  # the cursor row is in view
        assert any(isinstance(m, Grid.NearEnd) for m in app.seen)
        await pilot.press("home")
        assert grid.cursor_row == 0 and round(grid.scroll_y) == 0
        await pilot.press("pagedown")
        assert grid.cursor_row > 2
        grid.append_rows(rows(50, 10))
        assert grid.row_count == 60 and grid.row_index("55") == 55
        grid.update_row("0", [("0", ""), ("9.99", "")])
        await pilot.pause()
        grid.cursor_row = 0
        await pilot.pause()
        assert "9.99" in line(grid, 1)


async def test_grid_clicks_select_rows_and_headers() -> None:
    app = GridApp()
    async with app.run_test(size=(30, 10)) as pilot:
        grid = app.query_one(Grid)
        grid.set_rows(rows(0, 5))
        await pilot.pause()
        await pilot.click(Grid, offset=(3, 3))
        assert grid.cursor_row == 2
        await pilot.click(Grid, offset=(10, 0))
        headers = [m.column for m in app.seen if isinstance(m, Grid.HeaderSelected)]
        assert headers == ["err"]
        grid.set_labels(["id", "err %▼"])
        await pilot.pause()
        assert "err %▼" in line(grid, 0)


async def test_set_rows_keeps_a_given_cursor_and_scroll() -> None:
    app = GridApp()
    async with app.run_test(size=(30, 10)) as pilot:
        grid = app.query_one(Grid)
        grid.set_rows(rows(0, 100))
        grid.cursor_row = 40
        await pilot.pause()
        scroll = grid.scroll_y
        grid.set_rows(rows(0, 100), cursor=39, scroll_y=scroll)
        await pilot.pause()
        assert grid.cursor_row == 39 and grid.scroll_y == scroll == 32
        grid.set_rows([], cursor=5)
        assert grid.cursor_key is None and grid.row_count == 0
        assert line(grid, 1).strip() == ""
