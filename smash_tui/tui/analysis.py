"""Proxy vs truth (SMASH error against a benchmark's or a retrain's accuracy) and the Pareto front views."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable

from smash_tui.tui.architectures import row_cells
from smash_tui.tui.base import SmashScreen
from smash_tui.tui.format import fixed, human
from smash_tui.tui.messages import ActionFailed, MarkerPolled, ParetoLoaded, ProxyLoaded
from smash_tui.tui.tables import RowTable, sync_rows
from smash_tui.tui.widgets import Chart, Series, StatusLine

if TYPE_CHECKING:
    from smash_tui.tui.data import ParetoData, ProxyData
    from storage.summaries import ChangeMarker

# What each truth is called (the view must not import smash_tui.tui.data: it loads SQLAlchemy).
TRUTH_NAMES = {"benchmark": "benchmark accuracy", "retrained": "retrained test accuracy"}


def error_cell(err: float | None, partial: bool) -> Text:
    """A SMASH error for a table, dimmed when racing measured it on part of the images."""
    return Text(fixed(err), style="dim" if partial else "")


def append_partial_note(text: Text, partial: int, separator: str) -> None:
    """Say how many of the shown errors are partial (racing dropped them early), if any."""
    if partial:
        text.append(f"{separator}{partial} partial (dimmed)", style="yellow")


def correlation_text(data: ProxyData) -> Text:
    """ "Kendall τ -0.80 · Spearman ρ -0.90 · 5 pairs" with a reading of the sign (one line at 120 columns)."""
    corr = data.correlation
    text = Text()
    text.append("Kendall τ ", style="bold")
    text.append(fixed(corr.kendall_tau), style="bold cyan")
    text.append(" · Spearman ρ ", style="bold")
    text.append(fixed(corr.spearman_rho), style="bold cyan")
    text.append(f" · {corr.pairs:,} pair{'s' if corr.pairs != 1 else ''}")
    if corr.tau_chance_sd is not None:
        # How far tau strays from 0 by chance alone over this many pairs.
        text.append(f" · chance alone ±{corr.tau_chance_sd:.2f}")
    append_partial_note(text, data.partial, " · ")
    if corr.pairs < 2:
        if data.truth == "benchmark":
            text.append("  (wait for at least two scored cells the table lists)", style="dim")
        else:
            text.append("  (retrain at least two architectures to compare the rankings)", style="dim")
    elif corr.kendall_tau is not None:
        text.append("  (negative: ranks agree)", style="dim")
    return text


def truth_text(data: ProxyData) -> Text:
    """Which truth the view shows, and how much of it the chart and the table show."""
    text = Text()
    text.append("truth: ", style="bold")
    if data.truth == "benchmark":
        text.append(data.table or "a benchmark table", style="bold magenta")
        text.append(" (benchmark, not trained here)")
        missing = data.scored - data.points
        if missing > 0:
            text.append(f" · {missing:,} scored not in the table", style="dim")
    else:
        text.append("retrained test accuracy", style="bold magenta")
        text.append(" (trained here; the best finished retrain of each)")
    if len(data.drawn) < data.points:
        text.append(f" · drawn: {len(data.drawn):,} of {data.points:,}, τ and ρ over all", style="yellow")
    if len(data.head) < data.points:
        text.append(f" · table: the {len(data.head)} lowest errors", style="dim")
    return text


RETRAINED_EMPTY = "no retrained architectures yet: mark some in Architectures (space) and press r"
BENCHMARK_EMPTY = "no scored cell with a benchmark accuracy yet: the search fills this as it scores"


def staircase(data: ParetoData, cost_of: Any) -> tuple[list[float], list[float]]:
    """The front as a step line: from each point right at its error, then down to the next."""
    xs: list[float] = []
    ys: list[float] = []
    for row in data.front:
        cost, err = float(cost_of(row)), float(row.err or 0.0)
        if xs:
            xs.append(cost)
            ys.append(ys[-1])
        xs.append(cost)
        ys.append(err)
    return xs, ys


class _Polled(SmashScreen):
    """A view that re-reads when the database's change marker moves."""

    def __init__(self) -> None:
        super().__init__()
        self._marker: ChangeMarker | None = None
        self._shown_for: int | None = None

    def refresh_data(self, force: bool = False) -> None:
        store = self.store
        experiment_id = self.smash.experiment_id
        if store is None or experiment_id is None:
            self.show_nothing()
            return
        if force or experiment_id != self._shown_for:
            self._shown_for = experiment_id
            self.read(store, experiment_id)
        else:
            self._poll(store)

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def _poll(self, store: Any) -> None:
        try:
            self.post_message(MarkerPolled(store.marker()))
        except Exception:
            return  # a busy database: the next tick tries again

    @on(MarkerPolled)
    def _changed(self, message: MarkerPolled) -> None:
        changed = self._marker is not None and self._marker != message.marker
        self._marker = message.marker
        store, experiment_id = self.store, self.smash.experiment_id
        if changed and store is not None and experiment_id is not None:
            self.read(store, experiment_id)

    def read(self, store: Any, experiment_id: int) -> None:
        """Start the worker that reads the view's data."""

    def show_nothing(self) -> None:
        """Show that there is no experiment yet."""


class ProxyScreen(_Polled):
    """SMASH error against a truth (a benchmark's accuracy or a retrain's), with tau and rho.

    The two truths are never mixed: the view shows one, says which, and ``b``
    switches to the other when the experiment has both.
    """

    MODE = "proxy"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "b",
            "toggle_truth",
            "Bench/retrained",
            tooltip="compare with the benchmark's accuracy or the retrained one (when both exist)",
        ),
    ]
    DEFAULT_CSS = """
    ProxyScreen #proxy-stats { height: 1; padding: 0 1; background: $boost; }
    ProxyScreen #proxy-truth { height: 1; padding: 0 1; background: $boost; }
    ProxyScreen #proxy-main { height: 1fr; }
    ProxyScreen #proxy-chart { width: 1fr; }
    ProxyScreen #proxy-table { width: 41; height: 1fr; }
    ProxyScreen.-narrow #proxy-table { display: none; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.truth: str | None = None  # the truth asked for with b; None: the experiment's first
        self.data: ProxyData | None = None

    def compose_body(self) -> ComposeResult:
        yield StatusLine(id="proxy-stats")
        yield StatusLine(id="proxy-truth")
        with Horizontal(id="proxy-main"):
            yield Chart("SMASH error vs test accuracy", RETRAINED_EMPTY, id="proxy-chart")
            yield RowTable(id="proxy-table")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#proxy-table", DataTable)
        for key, label, width in (
            ("id", "id", 7),
            ("err", "err %", 6),
            ("acc", "acc %", 7),
            ("rank", "ranks", 11),
        ):
            table.add_column(label, key=key, width=width)

    def read(self, store: Any, experiment_id: int) -> None:
        self._read(store, experiment_id, self.truth)

    @work(thread=True, exclusive=True, group="proxy", exit_on_error=False)
    def _read(self, store: Any, experiment_id: int, truth: str | None) -> None:
        try:
            self.post_message(ProxyLoaded(experiment_id, store.proxy(experiment_id, truth)))
        except Exception as exc:
            self.post_message(ActionFailed(f"cannot read the proxy's truths: {exc}"))

    def show_nothing(self) -> None:
        self.query_one("#proxy-stats", StatusLine).text = Text(
            "no experiment yet: press n to start a search", style="dim"
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # b only where there is another truth to switch to (hidden from the footer otherwise).
        if action == "toggle_truth":
            return self.data is not None and len(self.data.truths) > 1
        return True

    def action_toggle_truth(self) -> None:
        """Compare with the other truth: the benchmark's accuracy or the retrained one."""
        data = self.data
        if data is None or len(data.truths) < 2:
            self.notify("this experiment has only one truth to compare with", severity="warning")
            return
        self.truth = next(truth for truth in data.truths if truth != data.truth)
        self.reload()

    @on(ProxyLoaded)
    def _show(self, message: ProxyLoaded) -> None:
        data = message.data
        if message.experiment_id != self.smash.experiment_id:
            return
        if self.truth is not None and data.truth != self.truth and self.truth in data.truths:
            return  # read before b switched the truth
        self.data = data
        self.refresh_bindings()
        self.query_one("#proxy-stats", StatusLine).text = correlation_text(data)
        self.query_one("#proxy-truth", StatusLine).text = truth_text(data)
        name = TRUTH_NAMES[data.truth]
        chart = self.query_one("#proxy-chart", Chart)
        chart.empty = BENCHMARK_EMPTY if data.truth == "benchmark" else RETRAINED_EMPTY
        complete = [point for point in data.drawn if not point.partial]
        partial = [point for point in data.drawn if point.partial]
        series = [
            Series(
                "complete" if partial else "",
                [point.err for point in complete],
                [point.acc for point in complete],
                "cyan",
                scatter=True,
                marker="dot",
            )
        ]
        if partial:
            series.append(
                Series(
                    "partial",
                    [point.err for point in partial],
                    [point.acc for point in partial],
                    "gray",
                    scatter=True,
                    marker="dot",
                )
            )
        chart.draw(series, xlabel="SMASH error %", title=f"{name} % (y) against SMASH error % (x)")
        table = self.query_one("#proxy-table", DataTable)
        column = next(key for key in table.columns if key.value == "acc")
        table.columns[column].label = Text("bench %" if data.truth == "benchmark" else "acc %")
        sync_rows(
            table,
            [
                (
                    str(point.id),
                    [
                        str(point.id),
                        error_cell(point.err, point.partial),
                        fixed(point.acc),
                        f"{point.err_rank:g} / {point.acc_rank:g}",
                    ],
                )
                for point in data.head
            ],
        )


class ParetoScreen(_Polled):
    """SMASH error against params or FLOPs; the front is highlighted and can be retrained."""

    MODE = "pareto"
    AUTO_FOCUS = "#pareto-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "c", "toggle_cost", "Params/FLOPs", tooltip="draw the front against params or FLOPs"
        ),
        Binding("r", "retrain_front", "Retrain front", tooltip="retrain the front (dialog)"),
    ]
    DEFAULT_CSS = """
    ParetoScreen #pareto-stats { height: 1; padding: 0 1; background: $boost; }
    ParetoScreen #pareto-main { height: 1fr; }
    ParetoScreen #pareto-chart { width: 1fr; }
    ParetoScreen #pareto-table { width: 47; height: 1fr; }
    ParetoScreen.-narrow #pareto-main { layout: vertical; }
    ParetoScreen.-narrow #pareto-table { width: 1fr; height: 40%; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.cost = "params"
        self.data: ParetoData | None = None

    def compose_body(self) -> ComposeResult:
        yield StatusLine(id="pareto-stats")
        with Horizontal(id="pareto-main"):
            yield Chart("Pareto front", "no scored architectures yet", id="pareto-chart")
            yield RowTable(id="pareto-table")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#pareto-table", DataTable)
        for key, label, width in (
            ("mark", " ", 1),
            ("id", "id", 7),
            ("err", "err %", 6),
            ("cost", "cost", 6),
            ("acc", "acc %", 6),
            ("state", "retrain", 8),
        ):
            table.add_column(label, key=key, width=width)

    def read(self, store: Any, experiment_id: int) -> None:
        self._read(store, experiment_id, self.cost)

    @work(thread=True, exclusive=True, group="pareto", exit_on_error=False)
    def _read(self, store: Any, experiment_id: int, cost: str) -> None:
        try:
            self.post_message(ParetoLoaded(experiment_id, store.pareto(experiment_id, cost)))
        except Exception as exc:
            self.post_message(ActionFailed(f"cannot read the Pareto front: {exc}"))

    def show_nothing(self) -> None:
        self.query_one("#pareto-stats", StatusLine).text = Text(
            "no experiment yet: press n to start a search", style="dim"
        )

    @on(ParetoLoaded)
    def _show(self, message: ParetoLoaded) -> None:
        data = message.data
        if message.experiment_id != self.smash.experiment_id or data.cost != self.cost:
            return
        self.data = data
        label = "params" if data.cost == "params" else "FLOPs"
        stats = Text()
        stats.append(f"{len(data.front)} on the front", style="bold")
        stats.append(f" of {data.scored:,} scored · SMASH error against {label}")
        append_partial_note(stats, sum(1 for row in data.front if row.partial), " · ")
        stats.append(" · c: params/FLOPs · r: retrain the front", style="dim")
        self.query_one("#pareto-stats", StatusLine).text = stats
        cost_of = (lambda row: row.params) if data.cost == "params" else (lambda row: row.flops)
        self.query_one("#pareto-chart", Chart).draw(
            [
                Series(
                    "scored",
                    [float(cost) for cost, _ in data.background],
                    [err for _, err in data.background],
                    "gray",
                    scatter=True,
                    marker="dot",
                ),
                Series("front", *staircase(data, cost_of), "red", marker="hd"),
            ],
            xlabel=f"{label} (log)",
            title=f"SMASH error % against {label}",
            xlog=True,
        )
        table = self.query_one("#pareto-table", DataTable)
        table.columns[next(k for k in table.columns if k.value == "cost")].label = Text(label)
        sync_rows(
            table,
            [
                (
                    str(row.id),
                    [
                        " ",
                        str(row.id),
                        error_cell(row.err, row.partial),
                        human(cost_of(row)),
                        fixed(row.acc),
                        Text(*row_cells(row, False)[-1]),  # the retrain state, styled as in the browser
                    ],
                )
                for row in data.front
            ],
        )

    def action_toggle_cost(self) -> None:
        """Draw the front against FLOPs instead of params, or back."""
        self.cost = "flops" if self.cost == "params" else "params"
        self.reload()

    def action_retrain_front(self) -> None:
        """Queue retrains of every architecture on the front (after the retrain dialog)."""
        if self.data is None or not self.data.front:
            self.notify("the front is empty: nothing to retrain", severity="warning")
            return
        self.smash.ask_retrain([row.id for row in self.data.front], on_queued=self.reload)
