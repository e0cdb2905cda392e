"""The dashboard: experiments, their jobs, live HyperNet curves, throughput, devices, events."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, RichLog, Static

from smash_tui.gpus import GpuStatus, gpu_text, worker_gpu
from smash_tui.gpus import gpu_of as gpu_of  # where the app's tests found it
from smash_tui.tui.base import SmashScreen
from smash_tui.tui.format import clock, duration, human, progress_bar, state_text
from smash_tui.tui.messages import ActionFailed, DashboardLoaded
from smash_tui.tui.processes import gpu_status
from smash_tui.tui.tables import RowTable, highlighted_key, row_index, sync_rows
from smash_tui.tui.widgets import Chart, Series, StatusLine

if TYPE_CHECKING:
    from smash_tui.tui.data import Curves, DashboardData, JobView, Store

LEVEL_STYLES = {"info": "", "warning": "yellow", "error": "bold red"}
# Plot colours, one per series, in order.
COLORS = ("cyan", "magenta", "green", "yellow", "blue", "red")


def curve_series(curves: Curves, words: tuple[str, ...]) -> list[Series]:
    """The series whose names contain one of ``words``, as chart series."""
    series = []
    for name, points in curves.series.items():
        if not any(word in name.lower() for word in words):
            continue
        kept = [(step, value) for step, value in points if value is not None]
        series.append(
            Series(
                name,
                [step for step, _ in kept],
                [value for _, value in kept],
                COLORS[len(series) % len(COLORS)],
            )
        )
    return series


def job_cells(job: JobView, *, with_experiment: bool = False) -> list[str | Text]:
    """The cells of a job row: id, kind, state, progress, text, ETA (and the experiment)."""
    cells: list[str | Text] = [str(job.id)]
    if with_experiment:
        cells.append(str(job.experiment_id))
    eta = duration(job.eta_seconds) if job.state == "running" else "-"
    cells += [
        job.kind,
        state_text(job.state, job.requested),
        progress_bar(job.progress, 10),
        job.progress_text or (job.error or "").strip().split("\n")[0],
        eta,
    ]
    return cells


# Workers listed one a line under the status line; more are counted.
WORKER_LINES = 8


def worker_lines(data: DashboardData, gpus: list[GpuStatus]) -> Text:
    """The alive workers on any host, one a line: where, its device and GPU, the job it runs."""
    host = socket.gethostname()
    text = Text()
    shown = sorted(data.workers, key=lambda w: (w.host, w.device, w.pid))
    for number, worker in enumerate(shown[:WORKER_LINES]):
        if number:
            text.append("\n")
        text.append(f"{worker.host}:{worker.pid}", style="bold")
        text.append(f" {worker.device}")
        gpu = worker_gpu(worker, gpus, host)
        if gpu is not None:
            text.append(f" {gpu_text(gpu)}")
        job = worker.current_job_id
        label = "idle" if job is None else data.worker_jobs.get(job, f"job {job}")
        text.append(f" · {label}", style="dim" if job is None else "")
    if len(shown) > WORKER_LINES:
        text.append(f"\n+{len(shown) - WORKER_LINES} more workers (smash info lists them)", style="dim")
    return text


class DashboardScreen(SmashScreen):
    """Experiments (pick one with the cursor), its jobs and curves, the workers and the log."""

    MODE = "dashboard"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "browse", "Browse", tooltip="browse the experiment's architectures"),
    ]
    DEFAULT_CSS = """
    DashboardScreen #dash-top { height: 2fr; min-height: 6; }
    DashboardScreen #dash-experiments-pane { width: 45; }
    DashboardScreen #dash-jobs-pane { width: 1fr; }
    DashboardScreen.-narrow #dash-top { layout: vertical; height: auto; }
    DashboardScreen.-narrow #dash-experiments-pane { width: 1fr; height: 4; }
    DashboardScreen.-narrow #dash-jobs-pane { width: 1fr; height: 5; }
    DashboardScreen.-narrow .pane-title { display: none; }
    DashboardScreen.-narrow #dash-jobs-title { display: block; }
    DashboardScreen .pane-title { height: 1; color: $text-muted; text-style: bold; padding: 0 1; }
    DashboardScreen DataTable { height: 1fr; }
    DashboardScreen #dash-charts { height: 3fr; min-height: 6; }
    DashboardScreen #dash-stats { height: 1; padding: 0 1; background: $boost; }
    DashboardScreen #dash-workers { display: none; height: auto; max-height: 9; padding: 0 1; }
    DashboardScreen #dash-events { height: 1fr; min-height: 3; border-top: solid $panel-lighten-2; }
    DashboardScreen.-narrow #dash-charts { height: 1fr; }
    DashboardScreen.-narrow #dash-events { height: 2; min-height: 2; }
    """

    def __init__(self) -> None:
        super().__init__()
        self._last_event_id = 0
        self._events_for: int | None = None
        self._placeholder = False
        self._data: DashboardData | None = None
        self._workers_text: Text | None = None

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="dash-top"):
            with Vertical(id="dash-experiments-pane"):
                yield Static("Experiments (↑↓ pick, enter browse, n new)", classes="pane-title")
                yield RowTable(id="dash-experiments")
            with Vertical(id="dash-jobs-pane"):
                yield Static("Jobs", classes="pane-title", id="dash-jobs-title")
                yield RowTable(id="dash-jobs", zebra_stripes=False)
        with Horizontal(id="dash-charts"):
            yield Chart("HyperNet loss", "no training curve yet", id="dash-loss")
            yield Chart("HyperNet %", "no training curve yet", id="dash-acc")
        yield StatusLine(id="dash-stats")
        yield Static(id="dash-workers")
        yield RichLog(id="dash-events", max_lines=500, wrap=True, markup=False)

    def on_mount(self) -> None:
        super().on_mount()
        experiments = self.query_one("#dash-experiments", DataTable)
        for key, label, width in (
            ("id", "id", 3),
            ("name", "name", 14),
            ("status", "status", 9),
            ("archs", "scored", 9),
        ):
            experiments.add_column(label, key=key, width=width)
        jobs = self.query_one("#dash-jobs", DataTable)
        for key, label, width in (
            ("id", "job", 4),
            ("kind", "kind", 7),
            ("state", "state", 14),
            ("progress", "progress", 15),
            ("text", "", 14),
            ("eta", "ETA", 6),
        ):
            jobs.add_column(label, key=key, width=width)
        self.query_one("#dash-stats", StatusLine).text = Text(
            "opening the database…" if self.store is None else "", style="dim"
        )
        if self.store is not None:
            self.refresh_data(force=True)

    def refresh_data(self, force: bool = False) -> None:
        store = self.store
        if store is not None:
            self._load(store, self.smash.experiment_id, None if force else self._data)

    @work(thread=True, exclusive=True, group="dashboard", exit_on_error=False)
    def _load(
        self, store: Store, experiment_id: int | None, previous: DashboardData | None
    ) -> None:
        try:
            data = store.dashboard(experiment_id, previous)
        except Exception as exc:  # shown in a notification; polling goes on
            self.post_message(ActionFailed(f"cannot read the dashboard: {exc}"))
            return
        # Workers send their GPU's figures with their heartbeat; this host's GPUs are read
        # here only for a CUDA worker of this host that sent none.
        host = socket.gethostname()
        local_cuda = any(
            w.device.startswith("cuda") and w.host == host and not w.gpu_reported for w in data.workers
        )
        self.post_message(DashboardLoaded(data, gpu_status() if local_cuda else []))

    @on(DashboardLoaded)
    def _show(self, message: DashboardLoaded) -> None:
        data = message.data
        wanted = self.smash.experiment_id
        if wanted is not None and data.experiment_id != wanted:
            return  # an answer for an experiment the user has moved away from
        self._data = data
        experiments = self.query_one("#dash-experiments", DataTable)
        rows = [
            (
                str(summary.id),
                [
                    str(summary.id),
                    summary.name,
                    state_text(summary.status),
                    f"{human(summary.scored)}/{human(summary.architectures)}",
                ],
            )
            for summary in data.experiments
        ]
        rebuilt = sync_rows(experiments, rows)
        if data.experiment_id is not None:
            summary = next(s for s in data.experiments if s.id == data.experiment_id)
            if wanted is None:
                self.smash.select_experiment(summary.id, summary.name)
            if rebuilt or highlighted_key(experiments) != str(summary.id):
                index = row_index(experiments, str(summary.id))
                if index is not None:
                    experiments.move_cursor(row=index, animate=False)
        title = self.query_one("#dash-jobs-title", Static)
        summary_now = next((s for s in data.experiments if s.id == data.experiment_id), None)
        title.update(
            f"Jobs ({summary_now.dataset}/{summary_now.preset}, {summary_now.retrained} retrained)"
            if summary_now is not None
            else "Jobs: no experiment yet, press n to start a search"
        )
        sync_rows(
            self.query_one("#dash-jobs", DataTable),
            [(str(job.id), job_cells(job)) for job in data.jobs],
        )
        self._draw_curves(data)
        self._show_stats(data, message.gpus)
        self._show_workers(data, message.gpus)
        self._show_events(data)

    def _draw_curves(self, data: DashboardData) -> None:
        curves = data.curves
        step = f"step (job {curves.job_id})" if curves.job_id is not None else "step"
        self.query_one("#dash-loss", Chart).draw(curve_series(curves, ("loss",)), xlabel=step)
        self.query_one("#dash-acc", Chart).draw(curve_series(curves, ("acc", "err")), xlabel=step)

    def _show_stats(self, data: DashboardData, gpus: list[GpuStatus]) -> None:
        text = Text()
        latest = data.curves.latest
        speed = [value for name, (_, value) in latest.items() if "images_per_s" in name]
        if speed and speed[-1] is not None:
            text.append(f"{speed[-1]:,.0f} img/s", style="bold")
            text.append(" · ")
        running = {job.id for job in data.jobs if job.state == "running"}
        busy = [w for w in data.workers if w.current_job_id in running]
        device = (busy or list(data.workers) or [None])[0]
        if device is not None:
            text.append(f"device {device.device}")
            gpu = worker_gpu(device, gpus, socket.gethostname())
            if gpu is not None:
                text.append(f" {gpu_text(gpu)}")
            text.append(" · ")
        for name, (_, value) in sorted(latest.items()):
            lowered = name.lower()
            if lowered.startswith(("gpu", "cuda", "device")) and value is not None:
                text.append(f"{name} {human(value)} · ")
        count = len(data.workers)
        style = "green" if count else "yellow"
        text.append(
            f"{count} worker{'s' if count != 1 else ''} alive" if count else "no worker running",
            style=style,
        )
        if not count and any(job.state == "queued" for job in data.jobs):
            text.append(" · r or n starts one for the queued jobs", style="dim")
        self.query_one("#dash-stats", StatusLine).text = text

    def _show_workers(self, data: DashboardData, gpus: list[GpuStatus]) -> None:
        """Every alive worker, one a line (hidden without any)."""
        text = worker_lines(data, gpus)
        if text == self._workers_text:
            return  # an update lays the screen out again: only when the workers changed
        self._workers_text = text
        pane = self.query_one("#dash-workers", Static)
        pane.display = bool(data.workers)
        pane.update(text)

    def _show_events(self, data: DashboardData) -> None:
        log = self.query_one("#dash-events", RichLog)
        if self._events_for != data.experiment_id:
            log.clear()
            self._last_event_id = 0
            self._placeholder = False
            self._events_for = data.experiment_id
        fresh = [event for event in data.events if event.id > self._last_event_id]
        if fresh and self._placeholder:
            log.clear()  # drop the "no events yet" line
            self._placeholder = False
        for event in fresh:
            line = Text(f"{clock(event.created_at)} ", style="dim")
            line.append(event.message, style=LEVEL_STYLES.get(event.level, ""))
            log.write(line)
            self._last_event_id = event.id
        if not self._last_event_id and not self._placeholder:
            log.write(Text("no events yet", style="dim"))
            self._placeholder = True

    @on(DataTable.RowHighlighted, "#dash-experiments")
    def _pick(self, event: DataTable.RowHighlighted) -> None:
        if self._data is None or event.row_key.value is None:
            return
        experiment_id = int(event.row_key.value)
        if experiment_id == self.smash.experiment_id:
            return
        name = next((s.name for s in self._data.experiments if s.id == experiment_id), "")
        self.smash.select_experiment(experiment_id, name)
        self.reload()

    @on(DataTable.RowSelected, "#dash-experiments")
    def _open(self, event: DataTable.RowSelected) -> None:
        self.action_browse()

    def action_browse(self) -> None:
        """Open the Architectures view of the highlighted experiment."""
        if self.smash.experiment_id is not None:
            self.app.switch_mode("architectures")
