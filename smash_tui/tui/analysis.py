"""Proxy vs truth (SMASH error against retrained accuracy) and the Pareto front views."""

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
from smash_tui.tui.stats import ranks
from smash_tui.tui.tables import RowTable, sync_rows
from smash_tui.tui.widgets import Chart, Series, StatusLine

if TYPE_CHECKING:
    from smash_tui.tui.data import ParetoData, ProxyData
    from storage.summaries import ChangeMarker


def error_cell(err: float | None, partial: bool) -> Text:
    """A SMASH error for a table, dimmed when racing measured it on part of the images."""
    return Text(fixed(err), style="dim" if partial else "")


def append_partial_note(text: Text, partial: int, separator: str) -> None:
    """Say how many of the shown errors are partial (racing dropped them early), if any."""
    if partial:
        text.append(f"{separator}{partial} partial (dimmed)", style="yellow")


def correlation_text(data: ProxyData) -> Text:
    """ "Kendall τ -0.80 · Spearman ρ -0.90 · 5 pairs" with a reading of the sign."""
    corr = data.correlation
    text = Text()
    text.append("Kendall τ ", style="bold")
    text.append(fixed(corr.kendall_tau), style="bold cyan")
    text.append("  ·  Spearman ρ ", style="bold")
    text.append(fixed(corr.spearman_rho), style="bold cyan")
    text.append(f"  ·  {corr.pairs} pair{'s' if corr.pairs != 1 else ''}")
    if corr.tau_chance_sd is not None:
        # How far tau strays from 0 by chance alone over this many pairs.
        text.append(f"  ·  chance alone ±{corr.tau_chance_sd:.2f}")
    append_partial_note(text, sum(1 for pair in data.pairs if pair.partial), "  ·  ")
    if corr.pairs < 2:
        text.append("  (retrain at least two architectures to compare the rankings)", style="dim")
    elif corr.kendall_tau is not None:
        text.append("  (negative: lower SMASH error ↔ higher accuracy, as hoped)", style="dim")
    return text


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
    """SMASH error against retrained test accuracy, with Kendall tau and Spearman rho."""

    MODE = "proxy"
    DEFAULT_CSS = """
    ProxyScreen #proxy-stats { height: 1; padding: 0 1; background: $boost; }
    ProxyScreen #proxy-main { height: 1fr; }
    ProxyScreen #proxy-chart { width: 1fr; }
    ProxyScreen #proxy-table { width: 38; height: 1fr; }
    ProxyScreen.-narrow #proxy-table { display: none; }
    """

    def compose_body(self) -> ComposeResult:
        yield StatusLine(id="proxy-stats")
        with Horizontal(id="proxy-main"):
            yield Chart(
                "SMASH error vs test accuracy",
                "no retrained architectures yet: mark some in Architectures (space) and press r",
                id="proxy-chart",
            )
            yield RowTable(id="proxy-table")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#proxy-table", DataTable)
        for key, label, width in (
            ("id", "id", 7),
            ("err", "err %", 6),
            ("acc", "acc %", 6),
            ("rank", "ranks", 9),
        ):
            table.add_column(label, key=key, width=width)

    def read(self, store: Any, experiment_id: int) -> None:
        self._read(store, experiment_id)

    @work(thread=True, exclusive=True, group="proxy", exit_on_error=False)
    def _read(self, store: Any, experiment_id: int) -> None:
        try:
            self.post_message(ProxyLoaded(experiment_id, store.proxy(experiment_id)))
        except Exception as exc:
            self.post_message(ActionFailed(f"cannot read retrain results: {exc}"))

    def show_nothing(self) -> None:
        self.query_one("#proxy-stats", StatusLine).text = Text(
            "no experiment yet: press n to start a search", style="dim"
        )

    @on(ProxyLoaded)
    def _show(self, message: ProxyLoaded) -> None:
        if message.experiment_id != self.smash.experiment_id:
            return
        data = message.data
        self.query_one("#proxy-stats", StatusLine).text = correlation_text(data)
        pairs = data.pairs
        self.query_one("#proxy-chart", Chart).draw(
            [
                Series(
                    "",
                    [pair.err for pair in pairs],
                    [pair.acc for pair in pairs],
                    "cyan",
                    scatter=True,
                    marker="dot",
                )
            ],
            xlabel="SMASH error %",
            title="test accuracy % (y) against SMASH error % (x)",
        )
        err_ranks = ranks([pair.err for pair in pairs])
        # Accuracy ranked best first, so agreeing ranks read the same.
        acc_ranks = ranks([-pair.acc for pair in pairs])
        ordered = sorted(
            zip(pairs, err_ranks, acc_ranks), key=lambda item: (item[0].err, item[0].id)
        )
        sync_rows(
            self.query_one("#proxy-table", DataTable),
            [
                (
                    str(pair.id),
                    [
                        str(pair.id),
                        error_cell(pair.err, pair.partial),
                        fixed(pair.acc),
                        f"{er:g} / {ar:g}",
                    ],
                )
                for pair, er, ar in ordered
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
