"""The architecture browser: a sorted, filtered, windowed table and the detail pane.

Sorting and filtering happen in the database: a key press starts a worker
that reads the first window (``PAGE`` rows) of the new order, and the table
is replaced when it arrives. Moving towards the end of what is loaded reads
the next window through the keyset cursor, so even 100,000 rows cost one
small query per window. While a search scores, a change of the database's
marker re-reads the loaded window and keeps the cursor on its row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.timer import Timer
from textual.widgets import Input, Static

from smash_tui.tui.base import SmashScreen
from smash_tui.tui.format import STATE_STYLES, clock, fixed, human, state_text
from smash_tui.tui.grid import Grid, GridColumn
from smash_tui.tui.messages import (
    ActionFailed,
    CountLoaded,
    DetailLoaded,
    MarkerPolled,
    PageLoaded,
    PageRequest,
)
from smash_tui.tui.spec_view import spec_diagram
from smash_tui.tui.widgets import Chart, Series, StatusLine

if TYPE_CHECKING:
    from storage.queries import ArchitectureDetail, ArchitectureRow, Filter, PageCursor
    from storage.summaries import ChangeMarker

# Rows per window read from the database.
PAGE = 200
# Read the next window when the cursor gets this close to the end of what is loaded.
PREFETCH = 60
# Live refreshes re-read at most this many rows; beyond, the user refreshes with ctrl+r.
LIVE_ROWS = 1000
# Coalesce detail reads while the cursor moves quickly (seconds).
DETAIL_DELAY = 0.05

# (column key, header, width, sort field or None); widths leave room for the sort arrow.
COLUMNS: tuple[tuple[str, str, int, str | None], ...] = (
    ("mark", " ", 1, None),
    ("id", "id", 6, "id"),
    ("err", "err %", 6, "err"),
    ("loss", "loss", 5, "loss"),
    ("params", "params", 7, "params"),
    ("flops", "FLOPs", 6, "flops"),
    ("depth", "depth", 6, "depth"),
    ("ops", "ops", 4, "ops"),
    ("acc", "acc %", 6, "acc"),
    ("state", "retrain", 7, None),
)
# Numbers align right, like in a spreadsheet.
GRID_COLUMNS = [
    GridColumn(key, label, width, right=field not in (None, "id"))
    for key, label, width, field in COLUMNS
]
SORT_FIELDS: tuple[str, ...] = tuple(field for *_, field in COLUMNS if field is not None)
# Upper-case key -> sort field; pressing it again reverses the order.
SORT_KEYS: dict[str, str] = {
    "I": "id",
    "E": "err",
    "L": "loss",
    "P": "params",
    "F": "flops",
    "D": "depth",
    "O": "ops",
    "A": "acc",
}


def row_cells(row: ArchitectureRow, marked: bool) -> list[tuple[str, str]]:
    """The browser cells of one architecture: (text, style) per column."""
    state = row.retrain_state
    return [
        ("●", "bold magenta") if marked else (" ", ""),
        (str(row.id), ""),
        # A partial error (racing dropped the candidate early) is dimmed; it sorts last.
        (fixed(row.err, 2), "dim" if row.partial else ""),
        (fixed(row.loss, 3), ""),
        (human(row.params), ""),
        (human(row.flops), ""),
        (str(row.depth), ""),
        (str(row.ops), ""),
        (fixed(row.acc, 2), "bold green" if row.acc is not None else "dim"),
        (state or "-", STATE_STYLES.get(state or "", "dim")),
    ]


def detail_renderable(detail: ArchitectureDetail) -> Group:
    """The detail pane's text: identity, figures, diagram, scores and retrains."""
    row = detail.row
    head = Text()
    head.append(f"Architecture {row.id}", style="bold")
    head.append(f" · {row.source} · {row.hash[:12]}\n", style="dim")
    head.append("SMASH err ")
    head.append(f"{fixed(row.err)} %", style="bold")
    if row.partial and detail.scores:
        head.append(f" partial ({detail.scores[-1].images} images)", style="dim")
    scores = len(detail.scores)
    head.append(f"  loss {fixed(row.loss, 3)}  ({scores} score{'s' if scores != 1 else ''})\n")
    head.append(
        f"params {human(row.params)}  FLOPs {human(row.flops)}  depth {row.depth}  ops {row.ops}\n"
    )
    finished = [r for r in detail.retrains if r.test_acc is not None]
    if finished:
        best = max(finished, key=lambda r: r.test_acc or 0.0)
        head.append("retrained ")
        head.append(f"{fixed(best.test_acc)} % test", style="bold green")
        head.append(f" (val {fixed(best.best_val_acc)} %, {best.epochs} epochs)\n")
    elif row.retrain_state:
        head.append("retrain ")
        head.append_text(state_text(row.retrain_state))
        head.append("\n")
    else:
        head.append("not retrained yet (r queues a retrain)\n", style="dim")
    if row.bench is not None:  # as `smash show` says it: a truth beside the retrain, never mixed
        head.append("benchmark ")
        head.append(f"{fixed(row.bench)} %", style="bold magenta")
        head.append(" (the experiment's table; not trained here)\n", style="dim")
    parts: list[Any] = [head, Text("Diagram", style="bold underline"), spec_diagram(detail.spec)]
    if detail.scores:
        scores = Table(title="Scores", title_justify="left", box=None, pad_edge=False)
        for column in ("err %", "loss", "images", "method", "at"):
            scores.add_column(column, no_wrap=True)
        for score in detail.scores[-8:]:
            scores.add_row(
                fixed(score.err),
                fixed(score.loss, 3),
                f"{score.images}×{score.z_draws}" if score.z_draws != 1 else str(score.images),
                score.method,
                clock(score.created_at),
            )
        parts += [Text(""), scores]
    if detail.retrains:
        retrains = Table(title="Retrains", title_justify="left", box=None, pad_edge=False)
        for column in ("job", "epochs", "test %", "val %", "finished"):
            retrains.add_column(column, no_wrap=True)
        for retrain in detail.retrains:
            retrains.add_row(
                str(retrain.job_id),
                f"{len(retrain.curve)}/{retrain.epochs}",
                fixed(retrain.test_acc),
                fixed(retrain.best_val_acc),
                clock(retrain.finished_at) if retrain.finished_at else "running",
            )
        parts += [Text(""), retrains]
    return Group(*parts)


def retrain_series(detail: ArchitectureDetail) -> list[Series]:
    """The newest retrain's accuracy curves (per epoch), for the detail chart."""
    with_curve = [r for r in detail.retrains if r.curve]
    if not with_curve:
        return []
    curve = with_curve[-1].curve
    series = []
    for name, color in (("train_acc", "cyan"), ("val_acc", "green")):
        points = [
            (float(point.get("epoch", index + 1)), float(point[name]))
            for index, point in enumerate(curve)
            if isinstance(point.get(name), (int, float))
        ]
        if points:
            series.append(Series(name, [x for x, _ in points], [y for _, y in points], color))
    return series


class ArchitecturesScreen(SmashScreen):
    """Browse, sort, filter, mark, retrain and export the experiment's architectures."""

    MODE = "architectures"
    AUTO_FOCUS = "#arch-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", tooltip="filter rows, e.g. err<35 params<2e6"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("s", "next_sort", "Sort", tooltip="sort by the next column"),
        Binding("S", "reverse_sort", "Reverse", show=False, tooltip="reverse the sort order"),
        *(
            Binding(
                key,
                f"sort('{field}')",
                f"Sort by {field}",
                show=False,
                tooltip=f"sort by {field} (again: reverse)",
            )
            for key, field in SORT_KEYS.items()
        ),
        Binding("space", "mark", "Mark", tooltip="mark or unmark the row (r retrains all marked)"),
        Binding("u", "unmark", "Unmark all", show=False),
        Binding("r", "retrain", "Retrain", tooltip="retrain the marked rows, or this one (dialog)"),
        Binding("e", "export", "Export", tooltip="export this architecture (smash export)"),
        Binding(
            "z",
            "rescore",
            "Score again",
            show=False,  # the footer is full at 80 columns; the help and ctrl+p list it
            tooltip="score the marked rows, or this one, again (more z draws...)",
        ),
        Binding("d", "toggle_detail", "Detail", show=False, tooltip="show or hide the detail pane"),
    ]
    DEFAULT_CSS = """
    ArchitecturesScreen #arch-main { height: 1fr; }
    ArchitecturesScreen #arch-browser { width: 77; }
    ArchitecturesScreen #arch-filter { display: none; height: 3; }
    ArchitecturesScreen #arch-filter.-shown { display: block; }
    ArchitecturesScreen #arch-filter-error { display: none; color: $error; height: auto; padding: 0 1; }
    ArchitecturesScreen #arch-filter-error.-shown { display: block; }
    ArchitecturesScreen #arch-table { height: 1fr; }
    ArchitecturesScreen #arch-status { height: 1; padding: 0 1; background: $boost; color: $text-muted; }
    ArchitecturesScreen #arch-detail { width: 1fr; border-left: solid $panel-lighten-2; padding: 0 1; }
    ArchitecturesScreen #arch-detail.-hidden { display: none; }
    ArchitecturesScreen #arch-detail-text { height: auto; }
    ArchitecturesScreen #arch-retrain-chart { height: 12; }
    ArchitecturesScreen.-narrow #arch-main { layout: vertical; }
    ArchitecturesScreen.-narrow #arch-browser { width: 1fr; }
    ArchitecturesScreen.-narrow #arch-detail { width: 1fr; max-width: 100%; height: 45%; border-left: none; border-top: solid $panel-lighten-2; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.sort = "err"
        self.descending = False
        self.filter_text = ""
        self.filter: Filter | None = None
        self.rows: list[ArchitectureRow] = []
        self.next_after: PageCursor | None = None
        self.total: int | None = None
        self._recount = True
        self.marks: set[int] = set()
        self.generation = 0
        # The request whose first window the table shows (benchmarks wait for it).
        self.shown_generation = 0
        # Focus the table once this request's rows are shown (after a filter is applied).
        self._focus_table_after: int | None = None
        self._loading_more = False
        self._listed_for: int | None = None
        self._marker: ChangeMarker | None = None
        self._detail_id: int | None = None
        self._detail_timer: Timer | None = None
        self._stale = False

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="arch-main"):
            with Vertical(id="arch-browser"):
                yield Input(
                    placeholder="filter, e.g. err<35 params<2e6 (enter applies, esc clears)",
                    id="arch-filter",
                )
                yield Static("", id="arch-filter-error")
                yield Grid(GRID_COLUMNS, id="arch-table")
                yield StatusLine(id="arch-status")
            with VerticalScroll(id="arch-detail"):
                yield Static(Text("select an architecture", style="dim"), id="arch-detail-text")
                yield Chart("Retrain accuracy %", "no retrain curve yet", id="arch-retrain-chart")

    def on_mount(self) -> None:
        super().on_mount()
        self._show_labels()
        self._show_status()

    # --- columns and status -----------------------------------------------------------------

    def _show_labels(self) -> None:
        labels = []
        for _, label, _, field in COLUMNS:
            if field is not None and field == self.sort:
                label += "▼" if self.descending else "▲"
            labels.append(label)
        self.query_one(Grid).set_labels(labels)

    def _show_status(self) -> None:
        text = Text()
        if self.smash.experiment_id is None:
            text.append("no experiment yet: press n to start a search")
        else:
            total = "…" if self.total is None else f"{self.total:,}"
            text.append(f"{len(self.rows):,} of {total} loaded")
            text.append(f" · sort {'-' if self.descending else ''}{self.sort}")
            if self.filter_text:
                text.append(f" · filter {self.filter_text}")
            if self.marks:
                text.append(f" · {len(self.marks)} marked", style="magenta")
            if self._stale:
                text.append(" · new results: ctrl+r", style="yellow")
        self.query_one("#arch-status", StatusLine).text = text

    # --- loading ------------------------------------------------------------------------------

    def refresh_data(self, force: bool = False) -> None:
        store = self.store
        experiment_id = self.smash.experiment_id
        if store is None:
            return
        if experiment_id is None:
            self._show_status()
            return
        if force or experiment_id != self._listed_for:
            if experiment_id != self._listed_for:
                self.marks.clear()
            self._listed_for = experiment_id
            self._stale = False
            self.reload_window(keep_cursor=not force or bool(self.rows))
        else:
            self._poll(store)

    def reload_window(
        self, *, keep_cursor: bool, limit: int | None = None, recount: bool = True
    ) -> None:
        """Read the first window of the current order and filter again.

        Args:
            keep_cursor: Keep the highlighted row (a refresh); False starts at the top.
            limit: Rows to read; by default one window.
            recount: Count the matching rows again once the window is shown (a new
                sort leaves the count as it is).
        """
        store = self.store
        experiment_id = self.smash.experiment_id
        if store is None or experiment_id is None:
            return
        self.generation += 1
        self._loading_more = False
        self._recount = self._recount or recount
        if recount and not keep_cursor:
            self.total = None  # a new filter: the old count is wrong until the new one comes
        request = self._request(experiment_id, append=False, keep_cursor=keep_cursor)
        self._read_page(store, request, None, limit or PAGE)

    def _request(self, experiment_id: int, *, append: bool, keep_cursor: bool) -> PageRequest:
        return PageRequest(
            self.generation,
            experiment_id,
            self.sort,
            self.descending,
            self.filter,
            append=append,
            keep_cursor=keep_cursor,
        )

    @work(thread=True, exclusive=True, group="arch-page", exit_on_error=False)
    def _read_page(
        self, store: Any, request: PageRequest, after: PageCursor | None, limit: int
    ) -> None:
        self._fetch_page(store, request, after, limit)

    def _fetch_page(
        self, store: Any, request: PageRequest, after: PageCursor | None, limit: int
    ) -> None:
        # Runs in a worker thread: everything it needs travels in the request.
        try:
            page = store.page(
                request.experiment_id,
                sort=request.sort,
                descending=request.descending,
                filter=request.filter,
                after=after,
                limit=limit,
            )
        except Exception as exc:
            self.post_message(ActionFailed(f"cannot read architectures: {exc}"))
            return
        self.post_message(PageLoaded(request, page))

    @work(thread=True, exclusive=True, group="arch-count", exit_on_error=False)
    def _read_count(
        self, store: Any, generation: int, experiment_id: int, filter: Filter | None
    ) -> None:
        try:
            count = store.count(experiment_id, filter)
        except Exception as exc:
            self.post_message(ActionFailed(f"cannot count architectures: {exc}"))
            return
        self.post_message(CountLoaded(generation, count))

    @work(thread=True, exclusive=True, group="arch-poll", exit_on_error=False)
    def _poll(self, store: Any) -> None:
        try:
            self.post_message(MarkerPolled(store.marker()))
        except Exception:
            return  # a busy database: the next tick tries again

    @on(MarkerPolled)
    def _changed(self, message: MarkerPolled) -> None:
        if self._marker == message.marker:
            return
        first = self._marker is None
        self._marker = message.marker
        if first:
            return
        if len(self.rows) > LIVE_ROWS:
            self._stale = True
            self._show_status()
            return
        self.reload_window(keep_cursor=True, limit=max(PAGE, len(self.rows)))

    @on(PageLoaded)
    def _page_loaded(self, message: PageLoaded) -> None:
        request = message.request
        if request.generation != self.generation:
            return  # an answer to an older sort or filter
        grid = self.query_one(Grid)
        page = message.page
        cells = [(str(row.id), row_cells(row, row.id in self.marks)) for row in page.rows]
        if request.append:
            self._loading_more = False
            self.rows.extend(page.rows)
            grid.append_rows(cells)
            self.next_after = page.next_after
            self._show_status()
            return
        keep = grid.cursor_key if request.keep_cursor else None
        index = grid.cursor_row
        self.rows = list(page.rows)
        self.next_after = page.next_after
        self._show_labels()
        if request.keep_cursor:
            found = {key: i for i, (key, _) in enumerate(cells)}.get(keep or "")
            grid.set_rows(
                cells, cursor=found if found is not None else index, scroll_y=grid.scroll_y
            )
        else:
            grid.set_rows(cells, cursor=0, scroll_y=0)
        self.shown_generation = request.generation
        if self._recount and self.store is not None:
            # Counted after the window is read, not beside it: on a small CPU the
            # count (a scan of every match) would slow down the window the user waits for.
            self._recount = False
            self._read_count(self.store, request.generation, request.experiment_id, request.filter)
        self._show_status()
        if self._focus_table_after == request.generation:
            self._focus_table_after = None
            self.call_after_refresh(grid.focus)
        if not self.rows:
            self._show_detail(None)

    @on(CountLoaded)
    def _count_loaded(self, message: CountLoaded) -> None:
        if message.generation == self.generation:
            self.total = message.count
            self._show_status()

    def _load_more(self) -> None:
        store = self.store
        if store is None or self.next_after is None or self._loading_more:
            return
        experiment_id = self.smash.experiment_id
        if experiment_id is None:
            return
        self._loading_more = True
        request = self._request(experiment_id, append=True, keep_cursor=True)
        self._read_more(store, request, self.next_after)

    @work(thread=True, exclusive=True, group="arch-more", exit_on_error=False)
    def _read_more(self, store: Any, request: PageRequest, after: PageCursor) -> None:
        self._fetch_page(store, request, after, PAGE)

    @on(Grid.NearEnd, "#arch-table")
    def _near_end(self) -> None:
        self._load_more()

    # --- detail -------------------------------------------------------------------------------

    @on(Grid.RowHighlighted, "#arch-table")
    def _highlighted(self, event: Grid.RowHighlighted) -> None:
        if event.index >= len(self.rows) - PREFETCH:
            self._load_more()
        self._show_detail(int(event.key) if event.key is not None else None)

    def _show_detail(self, architecture_id: int | None) -> None:
        if architecture_id == self._detail_id:
            return
        self._detail_id = architecture_id
        if architecture_id is None:
            self.query_one("#arch-detail-text", Static).update(Text("no architecture", style="dim"))
            self.query_one("#arch-retrain-chart", Chart).draw([])
            return
        if self._detail_timer is not None:
            self._detail_timer.stop()
        self._detail_timer = self.set_timer(DETAIL_DELAY, self._fetch_detail)

    def _fetch_detail(self) -> None:
        store = self.store
        if store is not None and self._detail_id is not None:
            self._read_detail(store, self._detail_id)

    @work(thread=True, exclusive=True, group="arch-detail", exit_on_error=False)
    def _read_detail(self, store: Any, architecture_id: int) -> None:
        try:
            self.post_message(DetailLoaded(store.detail(architecture_id)))
        except Exception as exc:
            self.post_message(ActionFailed(f"cannot read architecture {architecture_id}: {exc}"))

    @on(DetailLoaded)
    def _detail_loaded(self, message: DetailLoaded) -> None:
        detail = message.detail
        if detail.row.id != self._detail_id:
            return
        self.query_one("#arch-detail-text", Static).update(detail_renderable(detail))
        self.query_one("#arch-retrain-chart", Chart).draw(
            retrain_series(detail),
            xlabel="epoch",
            title=f"Retrain accuracy % (arch {detail.row.id})",
        )

    def refresh_detail(self) -> None:
        """Read the highlighted architecture's detail again (after queueing work on it)."""
        if self._detail_id is not None and self.store is not None:
            self._read_detail(self.store, self._detail_id)

    # --- sorting and filtering ---------------------------------------------------------------

    def set_sort(self, field: str, descending: bool) -> None:
        """Sort by ``field`` and read the first window of the new order."""
        self.sort, self.descending = field, descending
        self.reload_window(keep_cursor=False, recount=False)

    def action_sort(self, field: str) -> None:
        """Sort by a column; the same column again reverses the order."""
        if field == self.sort:
            self.set_sort(field, not self.descending)
        else:
            # Accuracy reads best first; everything else smallest first.
            self.set_sort(field, field == "acc")

    def action_next_sort(self) -> None:
        """Sort by the next column."""
        index = (SORT_FIELDS.index(self.sort) + 1) % len(SORT_FIELDS)
        field = SORT_FIELDS[index]
        self.set_sort(field, field == "acc")

    def action_reverse_sort(self) -> None:
        """Reverse the sort order."""
        self.set_sort(self.sort, not self.descending)

    @on(Grid.HeaderSelected, "#arch-table")
    def _header(self, event: Grid.HeaderSelected) -> None:
        field = {key: field for key, _, _, field in COLUMNS}.get(event.column)
        if field is not None:
            self.action_sort(field)

    def action_filter(self) -> None:
        """Show the filter line and focus it."""
        line = self.query_one("#arch-filter", Input)
        line.add_class("-shown")
        line.value = self.filter_text
        line.focus()

    def action_clear_filter(self) -> None:
        """Drop the filter (and hide its line)."""
        line = self.query_one("#arch-filter", Input)
        line.remove_class("-shown")
        self._filter_error(None)
        self.query_one(Grid).focus()
        if self.filter_text:
            self.filter_text, self.filter = "", None
            self.reload_window(keep_cursor=False)

    @on(Input.Submitted, "#arch-filter")
    def _apply_filter(self, event: Input.Submitted) -> None:
        from storage.errors import FilterError
        from storage.queries import parse_filter

        text = event.value.strip()
        try:
            parsed = parse_filter(text)
        except FilterError as error:
            self._filter_error(str(error))
            return
        self._filter_error(None)
        self.filter_text = " ".join(text.split()) if parsed.terms else ""
        self.filter = parsed if parsed.terms else None
        # The query starts first; the focus moves to the table once the rows are
        # shown (a focus change re-lays out the footer, which would delay them).
        self.reload_window(keep_cursor=False)
        self._focus_table_after = self.generation
        if not parsed.terms:
            event.input.remove_class("-shown")

    @on(Input.Changed, "#arch-filter")
    def _typing(self) -> None:
        self._filter_error(None)

    def _filter_error(self, message: str | None) -> None:
        error = self.query_one("#arch-filter-error", Static)
        if message is None and not error.has_class("-shown"):
            return  # nothing to clear: an update would lay the screen out again
        error.update(message or "")
        error.set_class(message is not None, "-shown")
        self.query_one("#arch-filter", Input).set_class(message is not None, "-invalid")

    # --- marks and actions --------------------------------------------------------------------

    def _current(self) -> ArchitectureRow | None:
        key = self.query_one(Grid).cursor_key
        if key is None:
            return None
        return next((row for row in self.rows if row.id == int(key)), None)

    def action_mark(self) -> None:
        """Mark or unmark the highlighted row, then move down."""
        grid = self.query_one(Grid)
        row = self._current()
        if row is None:
            return
        if row.id in self.marks:
            self.marks.discard(row.id)
        else:
            self.marks.add(row.id)
        grid.update_row(str(row.id), row_cells(row, row.id in self.marks))
        grid.action_cursor(1)
        self._show_status()

    def action_unmark(self) -> None:
        """Clear every mark."""
        grid = self.query_one(Grid)
        marked, self.marks = self.marks, set()
        for row in self.rows:
            if row.id in marked:
                grid.update_row(str(row.id), row_cells(row, False))
        self._show_status()

    def _chosen(self, action: str) -> list[int]:
        """The marked rows, else the highlighted one; says so when there is neither."""
        current = self._current()
        ids = sorted(self.marks) if self.marks else ([current.id] if current else [])
        if not ids:
            self.notify(f"nothing to {action}: no architecture selected", severity="warning")
        return ids

    def action_retrain(self) -> None:
        """Retrain the marked rows, or the highlighted one."""
        ids = self._chosen("retrain")
        if ids:
            self.smash.ask_retrain(ids, on_queued=self._after_retrain)

    def _after_retrain(self) -> None:
        self.action_unmark()
        self.reload_window(keep_cursor=True, limit=max(PAGE, len(self.rows)))
        self.refresh_detail()

    def action_rescore(self) -> None:
        """Score the marked rows, or the highlighted one, again against the newest checkpoint."""
        ids = self._chosen("score")
        if ids:
            self.smash.ask_rescore(ids, on_queued=self.action_unmark)

    def action_export(self) -> None:
        """Export the highlighted architecture (as `smash export`)."""
        current = self._current()
        if current is None:
            self.notify("nothing to export: no architecture selected", severity="warning")
            return
        self.smash.ask_export(current.id)

    def action_toggle_detail(self) -> None:
        """Show or hide the detail pane."""
        self.query_one("#arch-detail").toggle_class("-hidden")
