"""Keeping a DataTable in step with fresh rows without losing the user's place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist, RowKey

Cell = str | Text
Rows = Sequence[tuple[str, Sequence[Cell]]]


class RowTable(DataTable[Any]):
    """A row-cursor table where home and end go to the first and last row.

    DataTable's own home/end move between columns, which a row cursor does not have.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]

    def __init__(self, *, id: str | None = None, zebra_stripes: bool = True) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=zebra_stripes)


def highlighted_key(table: DataTable[Cell]) -> str | None:
    """The key of the row under the cursor, or None for an empty table."""
    if table.row_count == 0:
        return None
    try:
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
    except Exception:  # the cursor can sit past the rows for a moment after a clear
        return None
    return key.value


def sync_rows(table: DataTable[Cell], rows: Rows) -> bool:
    """Show ``rows`` (key, cells) in ``table``, keeping the cursor on the same row key.

    When the keys are unchanged (in order), only changed cells are updated, so
    the cursor and the scroll position do not move and no highlight events
    fire. Otherwise the table is rebuilt and the cursor put back on its row
    (or kept at the same index when that row is gone).

    Args:
        table: A table whose columns were added with keys.
        rows: The rows to show, in order.

    Returns:
        True when the table was rebuilt.
    """
    keys = [key for key, _ in rows]
    current = [key.value for key in table.rows]
    column_keys = [column.key for column in table.ordered_columns]
    if keys == current:
        for key, cells in rows:
            old = table.get_row(key)
            for column, new, previous in zip(column_keys, cells, old):
                if _differs(new, previous):
                    table.update_cell(key, column, new)
        return False
    keep = highlighted_key(table)
    index = table.cursor_row
    scroll_y = table.scroll_y
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if keep is not None and keep in keys:
        index = keys.index(keep)
    if table.row_count:
        table.move_cursor(row=min(max(index, 0), table.row_count - 1), animate=False, scroll=False)
        table.scroll_to(y=scroll_y, animate=False, immediate=True)
    return True


def row_index(table: DataTable[Cell], key: str) -> int | None:
    """The index of the row with this key, or None."""
    try:
        return table.get_row_index(RowKey(key))
    except RowDoesNotExist:
        return None


def _differs(new: Cell, old: object) -> bool:
    if isinstance(new, Text) and isinstance(old, Text):
        return new.plain != old.plain or new.spans != old.spans or new.style != old.style
    return new != old
