"""The smash command center: a Textual app over the smash database.

The app reads and writes the database through ``storage`` only, in worker
threads, and starts processes (``smash worker``, ``smash export``, ``smash
search --detach``) for anything that needs torch, which it never imports.
SQLAlchemy itself is imported after the first paint, in the worker that
opens the database, so the window appears at once.

Entry point: ``run_app(db_url)``. An error nothing in the app handles ends it:
its traceback goes to ``tui-crash.log`` in the database's logs folder (or the
smash data folder), and ``run_app`` raises ``AppCrashed``, which names it and
the log, once the terminal is restored.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import traceback
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import Console
from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from smash_tui.errors import AppCrashed
from smash_tui.tui.base import SmashScreen
from smash_tui.tui.dashboard import DashboardScreen
from smash_tui.tui.forms import (
    RETRAIN_DEFAULTS,
    SCORE_DEFAULTS,
    SEARCH_DEFAULTS,
    RetrainSettings,
    ScoreSettings,
    SearchSettings,
)
from smash_tui.tui.messages import ActionDone, ActionFailed, StoreFailed, StoreOpened
from smash_tui.tui.processes import Launched, launch_worker, run_smash
from smash_tui.tui.widgets import VIEWS, ViewBar
from storage.errors import first_line

if TYPE_CHECKING:
    from smash_tui.tui.data import Store
    from storage.db import Database

DARK_THEME = "textual-dark"
LIGHT_THEME = "textual-light"
# Keys of the data tables, listed in the help (the DataTable binds them).
TABLE_KEYS = [
    ("↑ ↓ pgup pgdn", "move the cursor"),
    ("home end", "first / last row (the browser then reads the next rows)"),
]

# Where each view lives: (module, class).
SCREENS: dict[str, tuple[str, str]] = {
    "dashboard": ("smash_tui.tui.dashboard", "DashboardScreen"),
    "architectures": ("smash_tui.tui.architectures", "ArchitecturesScreen"),
    "jobs": ("smash_tui.tui.jobs", "JobsScreen"),
    "proxy": ("smash_tui.tui.analysis", "ProxyScreen"),
    "pareto": ("smash_tui.tui.analysis", "ParetoScreen"),
}


def screen_class(mode: str) -> type[SmashScreen]:
    """The view class of a mode, importing its module on first use."""
    module, name = SCREENS[mode]
    found = getattr(importlib.import_module(module), name)
    assert issubclass(found, SmashScreen)
    return found


# Where an unexpected error's traceback goes, in the logs folder.
CRASH_LOG = "tui-crash.log"

Launcher = Callable[["Database"], Launched]
Runner = Callable[[Sequence[str], str], str]
# Queues what a dialog's settings ask for (in a thread) and says what it queued.
Queuer = Callable[["Store", int, object], str]


class SmashApp(App[None]):
    """The smash command center.

    Args:
        db_url: Database URL or path; None uses ``SMASH_DB`` or the default database.
        poll_interval: Seconds between refreshes of the visible view; None: no polling
            (tests and snapshots refresh explicitly).
        now: The clock used for ages ("12s ago"); tests freeze it.
        launcher: Starts a detached worker for a database; tests pass a fake.
        runner: Runs a `smash` command (args, database URL) and returns its output; tests
            pass a fake.
    """

    TITLE = "smash"
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {
        "dashboard": DashboardScreen,
        # The other views are imported when first shown: a faster first paint.
        **{
            mode: partial(lambda mode: screen_class(mode)(), mode)
            for mode in SCREENS
            if mode != "dashboard"
        },
    }
    DEFAULT_MODE = "dashboard"
    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(key, f"switch_mode('{mode}')", label, show=False) for mode, key, label in VIEWS),
        Binding("question_mark", "help", "Help"),
        Binding("n", "new_search", "New", tooltip="start a new search (form)"),
        Binding("t", "toggle_theme", "Light/dark", show=False),
        Binding("ctrl+r", "reload", "Refresh", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        db_url: str | None = None,
        *,
        poll_interval: float | None = 1.0,
        now: Callable[[], datetime] | None = None,
        launcher: Launcher | None = None,
        runner: Runner | None = None,
    ) -> None:
        super().__init__()
        self.db_url = db_url
        self.poll_interval = poll_interval
        self.now = now or (lambda: datetime.now(timezone.utc))
        self.launcher = launcher or launch_worker
        self.runner = runner or run_smash
        self.store: Store | None = None
        # Workers this app started: it reaps them when they exit (they outlive the app).
        self._launched: list[int] = []
        self.error: BaseException | None = None
        # The first error nothing handled: it ended the app (return code 1).
        self.crash: Exception | None = None
        # Textual prints such an error's traceback, local variables included, on the
        # restored terminal; run_app saves it to a file and reports one line instead.
        self.error_console = Console(file=io.StringIO(), stderr=True)
        self.experiment_id: int | None = None
        self.experiment_label = ""
        self.theme = DARK_THEME

    # --- the database -----------------------------------------------------------------------

    def on_mount(self) -> None:
        self._open_store()
        self.set_interval(5.0, self._reap)

    def _reap(self) -> None:
        """Collect the exit status of workers this app started, so none lingers as a zombie."""
        for pid in list(self._launched):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not our child (a fake launcher) or already collected
                done = pid
            if done:
                self._launched.remove(pid)

    @work(thread=True, exclusive=True, group="open", exit_on_error=False)
    def _open_store(self) -> None:
        # Importing storage pulls in SQLAlchemy and Alembic: done here, after the first paint.
        try:
            from smash_tui.tui.data import Store

            self.post_message(StoreOpened(Store.open(self.db_url)))
        except Exception as exc:  # StorageError, NewerDatabaseError: shown as they are
            self.post_message(StoreFailed(exc))

    def _handle_exception(self, error: Exception) -> None:
        # Textual's hook for an exception nothing handled; it then ends the app.
        if self.crash is None:
            self.crash = error
        super()._handle_exception(error)

    @on(StoreOpened)
    def _store_opened(self, message: StoreOpened) -> None:
        self.store = message.store
        self.sub_title = message.store.db.redacted_url
        self._reload_current()

    @on(StoreFailed)
    def _store_failed(self, message: StoreFailed) -> None:
        self.error = message.error
        self.exit(return_code=1)

    def on_unmount(self) -> None:
        if self.store is not None:
            self.store.close()

    def _reload_current(self) -> None:
        if isinstance(self.screen, SmashScreen):
            self.screen.reload()

    # --- the current experiment -------------------------------------------------------------

    def select_experiment(self, experiment_id: int, name: str) -> None:
        """Make an experiment the one the views show.

        Args:
            experiment_id: Its id.
            name: Its name, for the view bar.
        """
        self.experiment_id = experiment_id
        self.experiment_label = f"exp {experiment_id} {name}".strip()
        if isinstance(self.screen, SmashScreen):
            self.screen.query_one(ViewBar).experiment = self.experiment_label

    # --- actions --------------------------------------------------------------------------

    def action_help(self) -> None:
        """Show every key."""
        from smash_tui.tui.dialogs import HelpScreen

        self.push_screen(HelpScreen(self.help_sections()))

    def help_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """(view, [(key, description)]) for the help screen, from the bindings themselves."""

        def keys(bindings: Iterable[BindingType]) -> list[tuple[str, str]]:
            found = []
            for binding in bindings:
                if isinstance(binding, Binding):
                    found.append(
                        (self.get_key_display(binding), binding.tooltip or binding.description)
                    )
            return found

        everywhere = [(key, f"show {label}") for _, key, label in VIEWS]
        view_keys = {key for _, key, _ in VIEWS}
        everywhere += [(key, text) for key, text in keys(self.BINDINGS) if key not in view_keys]
        everywhere += [("ctrl+p", "command palette: every action by name"), ("tab", "next pane")]
        sections = [("Everywhere", everywhere)]
        for mode, _, label in VIEWS:
            own = keys(screen_class(mode).BINDINGS)
            if mode == "dashboard":
                own.insert(0, ("↑ ↓", "pick the experiment every view shows"))
            sections.append((label, own + TABLE_KEYS))
        sections.append(
            (
                "Dialogs",
                [
                    ("enter", "confirm / submit"),
                    ("esc", "cancel"),
                    ("y / n", "answer a confirmation"),
                ],
            )
        )
        return sections

    def action_toggle_theme(self) -> None:
        """Switch between the light and the dark theme."""
        self.theme = LIGHT_THEME if self.theme == DARK_THEME else DARK_THEME

    def action_reload(self) -> None:
        """Read everything the view shows again."""
        self._reload_current()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for mode, key, label in VIEWS:
            yield SystemCommand(
                f"View: {label}",
                f"show the {label} view (key {key})",
                partial(self.switch_mode, mode),
            )
        yield SystemCommand(
            "New search", "create an experiment and queue its jobs (n)", self.action_new_search
        )
        yield SystemCommand("Help", "list every key (?)", self.action_help)
        yield SystemCommand(
            "Light/dark theme",
            "switch between the light and dark theme (t)",
            self.action_toggle_theme,
        )
        yield SystemCommand("Refresh", "read the view's data again (ctrl+r)", self.action_reload)
        if isinstance(screen, SmashScreen):
            for binding in screen.BINDINGS:
                if isinstance(binding, Binding):
                    yield SystemCommand(
                        binding.description,
                        f"{screen.MODE} view: key {self.get_key_display(binding)}",
                        partial(screen.run_action, binding.action),
                    )

    # --- retrain, export, new search -------------------------------------------------------

    def ask_retrain(
        self, architecture_ids: list[int], *, on_queued: Callable[[], None] | None = None
    ) -> None:
        """Open the retrain dialog and queue one retrain job per architecture on confirm.

        Args:
            architecture_ids: What to retrain.
            on_queued: Called on the event loop once the jobs are in the database.
        """
        from smash_tui.tui.dialogs import RetrainDialog

        def queue(store: Store, experiment_id: int, settings: object) -> str:
            assert isinstance(settings, RetrainSettings)
            jobs = store.queue_retrains(experiment_id, architecture_ids, settings)
            what = f"job {jobs[0]}" if len(jobs) == 1 else f"jobs {jobs[0]}-{jobs[-1]}"
            return (
                f"queued {len(jobs)} retrain{'s' if len(jobs) != 1 else ''} "
                f"({settings.epochs} epochs, batch {settings.batch_size}, lr {settings.lr:g}): {what}"
            )

        def ask(train_images: int | None) -> None:
            dialog = RetrainDialog(architecture_ids, RETRAIN_DEFAULTS, train_images)
            self._ask_and_queue(dialog, queue, on_queued)

        if self.store is not None and self.experiment_id is not None:
            self._read_training_images(self.store, self.experiment_id, ask)

    @work(thread=True, group="actions", exit_on_error=False)
    def _read_training_images(
        self, store: Store, experiment_id: int, then: Callable[[int | None], None]
    ) -> None:
        # The retrain dialog refuses a batch larger than the training split beside its
        # field, as the CLI does; the split is a database read (a probe for an old
        # experiment), so it is read here and the dialog opens with it.
        try:
            images = store.training_images(experiment_id)
        except Exception:  # noqa: BLE001 - unknown: queueing checks again and says why
            images = None
        self.call_from_thread(then, images)

    def ask_rescore(self, architecture_ids: list[int], *, on_queued: Callable[[], None] | None = None) -> None:
        """Open the score-again dialog and queue one score job on confirm (`smash score`).

        Args:
            architecture_ids: What to score again.
            on_queued: Called on the event loop once the job is in the database.
        """
        from smash_tui.tui.dialogs import ScoreDialog

        def queue(store: Store, experiment_id: int, settings: object) -> str:
            assert isinstance(settings, ScoreSettings)
            job = store.queue_score(experiment_id, architecture_ids, settings)
            count = len(architecture_ids)
            return f"queued job {job}: score {count} architecture{'s' if count != 1 else ''} again"

        self._ask_and_queue(ScoreDialog(architecture_ids, SCORE_DEFAULTS), queue, on_queued)

    def _ask_and_queue(
        self, dialog: Screen[Any], queue: Queuer, on_queued: Callable[[], None] | None
    ) -> None:
        """Show a settings dialog; on confirm, queue in a thread, say what was queued, start a worker."""
        store, experiment_id = self.store, self.experiment_id
        if store is None or experiment_id is None:
            return

        def answered(settings: object) -> None:
            if settings is not None:
                self._queue(store, experiment_id, settings, queue, on_queued)

        self.push_screen(dialog, answered)

    @work(thread=True, group="actions", exit_on_error=False)
    def _queue(
        self,
        store: Store,
        experiment_id: int,
        settings: object,
        queue: Queuer,
        on_queued: Callable[[], None] | None,
    ) -> None:
        try:
            done = queue(store, experiment_id, settings)
        except Exception as exc:
            self.post_message(ActionFailed(f"nothing queued: {exc}"))
            return
        self.post_message(ActionDone(done))
        self._ensure_worker(store)
        if on_queued is not None:
            self.call_from_thread(on_queued)

    def ensure_worker(self) -> None:
        """Start a detached worker if none is alive (after queueing work)."""
        if self.store is not None:
            self._start_worker(self.store)

    @work(thread=True, group="actions", exit_on_error=False)
    def _start_worker(self, store: Store) -> None:
        self._ensure_worker(store)

    def _ensure_worker(self, store: Store) -> None:
        # Runs in a worker thread.
        try:
            if store.workers():
                return
            launched = self.launcher(store.db)
        except Exception as exc:
            self.post_message(
                ActionFailed(f"no worker is running and none could be started: {exc}")
            )
            return
        self._launched += [launched.pid, *launched.others]
        started = (
            f"started {1 + len(launched.others)}, one per GPU (pids "
            f"{', '.join(map(str, [launched.pid, *launched.others]))}, logs in {launched.log_path.parent})"
            if launched.others
            else f"started one (pid {launched.pid}, log {launched.log_path})"
        )
        self.post_message(ActionDone(f"no worker was running: {started}"))

    def ask_export(self, architecture_id: int) -> None:
        """Ask for a folder and export an architecture there with `smash export`."""
        store = self.store
        if store is None:
            return
        default = str(Path.cwd() / f"smash-arch-{architecture_id}")

        def answered(folder: object) -> None:
            if isinstance(folder, str):
                self.notify(f"exporting architecture {architecture_id} to {folder}…")
                self._export(store, architecture_id, folder)

        from smash_tui.tui.dialogs import ExportDialog

        self.push_screen(ExportDialog(architecture_id, default), answered)

    @work(thread=True, group="actions", exit_on_error=False)
    def _export(self, store: Store, architecture_id: int, folder: str) -> None:
        try:
            # "--" ends the options: a folder named like one ("--help", "-x") stays a folder.
            output = self.runner(["export", "--", str(architecture_id), folder], store.db.url)
        except Exception as exc:
            self.post_message(
                ActionFailed(f"export of architecture {architecture_id} failed: {exc}")
            )
            return
        lines = [line for line in output.strip().splitlines() if line.strip()]
        detail = f": {lines[-1]}" if lines else ""
        self.post_message(
            ActionDone(f"exported architecture {architecture_id} to {folder}{detail}")
        )

    def action_new_search(self) -> None:
        """Open the new-search form; on submit, create the experiment with `smash search --detach`."""
        store = self.store
        if store is None:
            self.notify("the database is not open yet", severity="warning")
            return

        def answered(settings: object) -> None:
            if isinstance(settings, SearchSettings):
                self.notify("creating the experiment…")
                self._start_search(store, settings)

        from smash_tui.tui.dialogs import NewSearchDialog

        self.push_screen(NewSearchDialog(SEARCH_DEFAULTS), answered)

    @work(thread=True, group="actions", exit_on_error=False)
    def _start_search(self, store: Store, settings: SearchSettings) -> None:
        try:
            output = self.runner(
                ["search", "--detach", "--json", *settings.cli_args()], store.db.url
            )
            created = json.loads(output.strip().splitlines()[-1])
            experiment_id, name = int(created["experiment_id"]), str(created["name"])
        except Exception as exc:
            self.post_message(ActionFailed(f"search not started: {exc}"))
            return
        # `smash search --detach` starts a worker itself when none is alive.
        pid = created.get("worker_pid")
        worker = f"started a worker (pid {pid})" if pid else "a running worker will take it"
        self.post_message(
            ActionDone(f"experiment {experiment_id} ({name}) queued: train, then search; {worker}")
        )
        self.call_from_thread(self._show_experiment, experiment_id, name)

    def _show_experiment(self, experiment_id: int, name: str) -> None:
        self.select_experiment(experiment_id, name)
        self._reload_current()

    # --- notifications ---------------------------------------------------------------------

    @on(ActionDone)
    def _action_done(self, message: ActionDone) -> None:
        self.notify(message.text, timeout=6)

    @on(ActionFailed)
    def _action_failed(self, message: ActionFailed) -> None:
        self.notify(message.text, severity="error", timeout=10)


def crash_log_dir(app: SmashApp) -> Path:
    """Where a crash's traceback goes: the database's logs folder, else the smash data folder's."""
    if app.store is not None:
        return app.store.db.logs_dir
    from storage.db import data_dir  # loads SQLAlchemy: only after a crash

    folder = data_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def crash_error(app: SmashApp) -> AppCrashed:
    """The error ``run_app`` raises for an app that ended on an unhandled error.

    The traceback is appended to ``CRASH_LOG`` (the message says where, or why not).

    Args:
        app: The app, after it has stopped with a non-zero return code.
    """
    crash = app.crash
    if crash is None:
        return AppCrashed(f"the app stopped with exit status {app.return_code}")
    what = f"{type(crash).__name__}: {first_line(crash)}"
    try:
        path = crash_log_dir(app) / CRASH_LOG
        with path.open("a", encoding="utf-8") as log:
            log.write(f"--- {datetime.now(timezone.utc).isoformat(timespec='seconds')} ---\n")
            log.write("".join(traceback.format_exception(crash)))
    except Exception as exc:  # noqa: BLE001 - reporting the crash matters more than its log
        return AppCrashed(f"{what} (traceback not saved: {first_line(exc)})")
    return AppCrashed(f"{what} (traceback in {path})")


def run_app(db_url: str | None) -> None:
    """Run the command center until the user quits.

    Args:
        db_url: Database URL or path; None uses ``SMASH_DB`` or the default database.

    Raises:
        StorageError: When the database cannot be opened (after the terminal is restored).
        AppCrashed: When an unexpected error ended the app (after the terminal is restored),
            chained to that error.
    """
    app = SmashApp(db_url)
    app.run()
    if app.error is not None:
        raise app.error
    if app.return_code:
        raise crash_error(app) from app.crash
