"""The Jobs view: every job with its state and progress; pause, resume, cancel and retry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from smash_tui.tui.base import SmashScreen
from smash_tui.tui.dashboard import job_cells
from smash_tui.tui.dialogs import ConfirmDialog
from smash_tui.tui.format import ago, first_line
from smash_tui.tui.messages import ActionDone, ActionFailed, JobsLoaded
from smash_tui.tui.tables import RowTable, highlighted_key, sync_rows

if TYPE_CHECKING:
    from smash_tui.tui.data import JobView


class JobsScreen(SmashScreen):
    """All jobs (or the current experiment's), with pause (p), resume or retry (r) and cancel (x)."""

    MODE = "jobs"
    AUTO_FOCUS = "#jobs-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "pause", "Pause", tooltip="pause the job (a running one at its next check)"),
        Binding(
            "r",
            "resume",
            "Resume/retry",
            tooltip="queue a paused job again, or retry a failed or cancelled one",
        ),
        Binding("x", "cancel", "Cancel", tooltip="cancel the job, after a confirmation"),
        Binding(
            "a", "toggle_all", "All/one", tooltip="all experiments' jobs, or the current one's"
        ),
    ]
    DEFAULT_CSS = """
    JobsScreen #jobs-table { height: 1fr; }
    JobsScreen #jobs-info { height: auto; max-height: 6; padding: 0 1; background: $boost; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.all_experiments = True
        self.jobs: list[JobView] = []
        self._loads = 0  # loads started; only the newest may show its rows

    def compose_body(self) -> ComposeResult:
        yield RowTable(id="jobs-table")
        yield Static("", id="jobs-info")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#jobs-table", DataTable)
        for key, label, width in (
            ("id", "job", 4),
            ("experiment", "exp", 3),
            ("kind", "kind", 7),
            ("state", "state", 14),
            ("progress", "progress", 15),
            ("text", "", 14),
            ("eta", "ETA", 6),
        ):
            table.add_column(label, key=key, width=width)

    def refresh_data(self, force: bool = False) -> None:
        store = self.store
        if store is not None:
            scope = None if self.all_experiments else self.smash.experiment_id
            self._loads += 1
            self._load(store, scope, self._loads)

    @work(thread=True, exclusive=True, group="jobs", exit_on_error=False)
    def _load(self, store: Any, experiment_id: int | None, number: int) -> None:
        try:
            jobs = store.jobs(experiment_id)
        except Exception as exc:
            self.post_message(ActionFailed(f"cannot read jobs: {exc}"))
            return
        # A thread cannot be cancelled: a poll that read the database before an action
        # committed may finish after the load the action started. Only the newest load
        # may show its rows, or a cancelled job would show as queued until the next poll.
        if number == self._loads:
            self.post_message(JobsLoaded(jobs))

    @on(JobsLoaded)
    def _show(self, message: JobsLoaded) -> None:
        # Newest first: what is running now is near the top.
        self.jobs = list(reversed(message.jobs))
        table = self.query_one("#jobs-table", DataTable)
        sync_rows(table, [(str(job.id), job_cells(job, with_experiment=True)) for job in self.jobs])
        self._show_info()

    @on(DataTable.RowHighlighted, "#jobs-table")
    def _highlighted(self) -> None:
        self._show_info()

    def _current(self) -> JobView | None:
        key = highlighted_key(self.query_one("#jobs-table", DataTable))
        return next((job for job in self.jobs if str(job.id) == key), None)

    def _show_info(self) -> None:
        info = self.query_one("#jobs-info", Static)
        scope = "all experiments" if self.all_experiments else self.smash.experiment_label
        job = self._current()
        text = Text(f"{len(self.jobs)} jobs of {scope} (a toggles)", style="dim")
        if job is not None:
            now = self.smash.now()
            text.append(f"\njob {job.id}: {job.kind} of experiment {job.experiment_id}, ")
            text.append(f"queued {ago(job.created_at, now)}, attempts {job.attempts}")
            if job.worker_id:
                text.append(f", worker {job.worker_id}")
            if job.depends_on_id:
                text.append(f", after job {job.depends_on_id}")
            params = ", ".join(f"{k}={v}" for k, v in job.params.items())
            if params:
                text.append(f"\nparams: {first_line(params, 200)}", style="dim")
            if job.error:
                text.append(f"\n{first_line(job.error, 200)}", style="red")
        info.update(text)

    def action_toggle_all(self) -> None:
        """Show every experiment's jobs, or only the current experiment's."""
        self.all_experiments = not self.all_experiments
        self.reload()

    def action_pause(self) -> None:
        """Pause the highlighted job (a running one stops at its next checkpoint)."""
        job = self._current()
        if job is not None and self.store is not None:
            self._change(self.store, "pause", job.id)

    def action_resume(self) -> None:
        """Queue the highlighted paused job again, or retry it when it failed or was cancelled."""
        job = self._current()
        if job is not None and self.store is not None:
            if job.state in ("failed", "cancelled"):
                self._retry(self.store, job.id)
            else:
                self._change(self.store, "resume", job.id)
            self.smash.ensure_worker()

    def action_cancel(self) -> None:
        """Cancel the highlighted job, after a confirmation."""
        job = self._current()
        store = self.store
        if job is None or store is None:
            return
        if job.state in ("done", "failed", "cancelled"):
            self.notify(f"job {job.id} has already ended ({job.state})", severity="warning")
            return

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self._change(store, "cancel", job.id)

        dependants = "; jobs that wait for it are cancelled too" if job.kind == "train" else ""
        self.app.push_screen(
            ConfirmDialog(
                f"Cancel job {job.id} ({job.kind}, {job.state}){dependants}?", "Cancel job"
            ),
            answered,
        )

    @work(thread=True, group="job-actions", exit_on_error=False)
    def _change(self, store: Any, action: str, job_id: int) -> None:
        try:
            job = getattr(store, action)(job_id)
        except Exception as exc:  # JobStateError and friends: one line each
            self.post_message(ActionFailed(str(exc)))
            return
        pending = (
            f" ({job.requested} requested: the worker stops at its next check)"
            if job.requested
            else ""
        )
        self.post_message(ActionDone(f"job {job.id} is {job.state}{pending}", payload=job))

    @work(thread=True, group="job-actions", exit_on_error=False)
    def _retry(self, store: Any, job_id: int) -> None:
        try:
            retried = store.retry(job_id)
        except Exception as exc:  # JobStateError and friends: one line each
            self.post_message(ActionFailed(str(exc)))
            return
        job, *dependants = retried
        also = f", with {len(dependants)} job(s) waiting for it" if dependants else ""
        self.post_message(ActionDone(f"job {job.id} is queued again{also}", payload=job))

    @on(ActionDone)
    def _done(self, message: ActionDone) -> None:
        # Let the app notify too, then show the new state at once.
        self.refresh_data(force=True)
