"""A fast, windowed row table for the architecture browser (Textual's line API).

Textual's DataTable renders every cell through Rich, which costs tenths of a
millisecond per cell: replacing a 40-line window after a sort took longer than
the 100 ms the browser is allowed. ``Grid`` draws each visible line straight
into one ``Strip`` from pre-formatted cell text, caches the strips, and only
ever draws the rows on screen, so a new window costs a few milliseconds
however many rows are loaded.

Cells are ``(text, style)`` pairs; the header stays on the first line while
the rows scroll. Keys: up/down, page up/down, home/end; a click on a row moves
the cursor there, a click on a header posts ``HeaderSelected``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cell = tuple[str, str]  # (text, Rich style such as "bold green" or "")
GridRow = tuple[str, Sequence[Cell]]  # (key, cells)


@dataclass(frozen=True)
class GridColumn:
    """One column of a Grid."""

    key: str  # identifies the column in HeaderSelected
    label: str  # header text
    width: int  # cells of text (a space of padding is added on each side)
    right: bool = False  # right-align the text (numbers)


class Grid(ScrollView, can_focus=True):
    """Rows of pre-formatted cells with a row cursor and a fixed header line.

    Args:
        columns: The columns, left to right.
        id: The widget id.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "grid--header",
        "grid--cursor",
        "grid--even-row",
        "grid--odd-row",
    }
    DEFAULT_CSS = """
    Grid {
        background: $surface;
        color: $foreground;
        scrollbar-gutter: stable;
    }
    Grid > .grid--header { background: $panel; color: $foreground; text-style: bold; }
    Grid > .grid--cursor { background: $block-cursor-blurred-background; color: $foreground; }
    Grid:focus > .grid--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
        text-style: bold;
    }
    Grid > .grid--even-row { background: $surface; }
    Grid > .grid--odd-row { background: $surface-lighten-1 30%; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "first", "First row", show=False),
        Binding("end", "last", "Last row", show=False),
    ]

    cursor_row: reactive[int] = reactive(0, init=False, always_update=False)

    class RowHighlighted(Message):
        """The cursor moved to another row (or the rows under it changed)."""

        def __init__(self, grid: Grid, index: int, key: str | None) -> None:
            super().__init__()
            self.grid = grid
            self.index = index
            self.key = key

        @property
        def control(self) -> Grid:
            return self.grid

    class HeaderSelected(Message):
        """A column header was clicked."""

        def __init__(self, grid: Grid, column: str) -> None:
            super().__init__()
            self.grid = grid
            self.column = column

        @property
        def control(self) -> Grid:
            return self.grid

    class NearEnd(Message):
        """The visible rows reach close to the last loaded one."""

        def __init__(self, grid: Grid) -> None:
            super().__init__()
            self.grid = grid

        @property
        def control(self) -> Grid:
            return self.grid

    def __init__(self, columns: Sequence[GridColumn], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns = list(columns)
        self.labels = [column.label for column in self.columns]
        self._keys: list[str] = []
        self._cells: list[Sequence[Cell]] = []
        self._index: dict[str, int] = {}
        self._strips: dict[tuple[int, bool], Strip] = {}
        self._header: Strip | None = None
        self._styles: dict[str, Style] = {}
        self.near_end_rows = 60

    # --- content ----------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        """Rows loaded."""
        return len(self._keys)

    @property
    def keys(self) -> list[str]:
        """Row keys, top to bottom."""
        return list(self._keys)

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, or None without rows."""
        if 0 <= self.cursor_row < len(self._keys):
            return self._keys[self.cursor_row]
        return None

    def row_index(self, key: str) -> int | None:
        """The index of the row with this key, or None."""
        return self._index.get(key)

    def set_labels(self, labels: Sequence[str]) -> None:
        """Replace the header texts (e.g. to show the sort arrow)."""
        self.labels = list(labels)
        self._header = None
        self.refresh(self._header_region())

    def set_rows(
        self, rows: Sequence[GridRow], *, cursor: int = 0, scroll_y: float | None = None
    ) -> None:
        """Replace every row.

        Args:
            rows: (key, cells) per row.
            cursor: Where the cursor goes (clamped to the rows).
            scroll_y: The scroll offset to keep; None scrolls to show the cursor.
        """
        self._keys = [key for key, _ in rows]
        self._cells = [cells for _, cells in rows]
        self._index = {key: index for index, key in enumerate(self._keys)}
        self._strips.clear()
        self._update_virtual_size()
        target = min(max(cursor, 0), max(len(self._keys) - 1, 0))
        if scroll_y is not None:
            self.scroll_to(y=scroll_y, animate=False, immediate=True, force=True)
        if self.cursor_row == target:
            self._announce()
        else:
            self.cursor_row = target
        if scroll_y is None:
            self._show_cursor()
        self.refresh()

    def append_rows(self, rows: Sequence[GridRow]) -> None:
        """Add rows at the end (the next window of the same listing)."""
        for key, cells in rows:
            self._index[key] = len(self._keys)
            self._keys.append(key)
            self._cells.append(cells)
        self._update_virtual_size()
        self.refresh()

    def update_row(self, key: str, cells: Sequence[Cell]) -> None:
        """Replace the cells of one row (e.g. its mark)."""
        index = self._index.get(key)
        if index is None:
            return
        self._cells[index] = cells
        self._strips.pop((index, False), None)
        self._strips.pop((index, True), None)
        self._refresh_row(index)

    def _update_virtual_size(self) -> None:
        width = sum(column.width + 2 for column in self.columns) + 1
        self.virtual_size = Size(width, len(self._keys) + 1)

    # --- cursor -----------------------------------------------------------------------------

    def validate_cursor_row(self, value: int) -> int:
        return min(max(value, 0), max(len(self._keys) - 1, 0))

    def watch_cursor_row(self, old: int, new: int) -> None:
        self._refresh_row(old)
        self._refresh_row(new)
        self._show_cursor()
        self._announce()

    def _announce(self) -> None:
        self.post_message(self.RowHighlighted(self, self.cursor_row, self.cursor_key))
        self._check_near_end()

    def _show_cursor(self) -> None:
        visible = max(self.scrollable_content_region.height - 1, 1)
        top = round(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True, force=True)
        elif self.cursor_row >= top + visible:
            self.scroll_to(
                y=self.cursor_row - visible + 1, animate=False, immediate=True, force=True
            )

    def action_cursor(self, step: int) -> None:
        """Move the cursor by ``step`` rows."""
        self.cursor_row += step

    def action_page(self, direction: int) -> None:
        """Move the cursor by a screenful of rows."""
        self.cursor_row += direction * max(self.scrollable_content_region.height - 2, 1)

    def action_first(self) -> None:
        """Move the cursor to the first row."""
        self.cursor_row = 0

    def action_last(self) -> None:
        """Move the cursor to the last loaded row."""
        self.cursor_row = len(self._keys) - 1

    # --- scrolling and mouse ----------------------------------------------------------------

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._check_near_end()

    def _check_near_end(self) -> None:
        bottom = round(self.scroll_y) + self.scrollable_content_region.height
        if self._keys and bottom >= len(self._keys) - self.near_end_rows:
            self.post_message(self.NearEnd(self))

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            x = event.x + round(self.scroll_x) - 1
            for column in self.columns:
                if 0 <= x < column.width + 2:
                    self.post_message(self.HeaderSelected(self, column.key))
                    return
                x -= column.width + 2
            return
        index = round(self.scroll_y) + event.y - 1
        if 0 <= index < len(self._keys):
            self.cursor_row = index

    def on_resize(self) -> None:
        self._strips.clear()
        self._header = None

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()
        self._styles.clear()
        self._header = None

    # --- drawing ----------------------------------------------------------------------------

    def _header_region(self):  # type: ignore[no-untyped-def]
        return self.size.region.crop_size((self.size.width, 1))

    def _refresh_row(self, index: int) -> None:
        line = index - round(self.scroll_y) + 1
        if 1 <= line < self.size.height:
            self.refresh(self.size.region.translate((0, line)).crop_size((self.size.width, 1)))

    def _style(self, text: str) -> Style:
        style = self._styles.get(text)
        if style is None:
            style = Style.parse(text) if text else Style()
            self._styles[text] = style
        return style

    def _line(self, cells: Sequence[tuple[str, Style]], base: Style, plain: bool) -> Strip:
        segments = [Segment(" ", base)]
        for column, (text, style) in zip(self.columns, cells):
            width = column.width
            if len(text) > width:
                text = text[: width - 1] + "…" if width > 1 else text[:width]
            padded = text.rjust(width) if column.right else text.ljust(width)
            segments.append(Segment(f" {padded} ", base if plain else base + style))
        return Strip(segments)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x = round(self.scroll_x)
        if y == 0:
            if self._header is None:
                style = self.get_component_rich_style("grid--header")
                self._header = self._line([(label, Style()) for label in self.labels], style, True)
            base = self.get_component_rich_style("grid--header")
            return self._header.crop_extend(scroll_x, scroll_x + width, base)
        index = round(self.scroll_y) + y - 1
        if index >= len(self._keys):
            return Strip.blank(width, self.rich_style)
        cursor = index == self.cursor_row
        strip = self._strips.get((index, cursor))
        if strip is None:
            if cursor:
                base = self.get_component_rich_style("grid--cursor")
            else:
                base = self.get_component_rich_style(
                    "grid--odd-row" if index % 2 else "grid--even-row"
                )
            cells = [(text, self._style(style)) for text, style in self._cells[index]]
            strip = self._line(cells, base, cursor)
            self._strips[(index, cursor)] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style)
