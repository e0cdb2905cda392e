"""End to end: the app starts a search with the real `smash` CLI and a real worker.

The new-search form runs `smash search --detach`, which queues the jobs and
launches a worker; the app, polling, shows the HyperNet curve points and then
the scored architectures as the worker records them. The test's runner adds
the tiny budgets the form does not ask for (steps, image counts, a small
HyperNet), so the whole run takes tens of seconds on two cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from smash_tui.tui.app import SmashApp
from smash_tui.tui.architectures import ArchitecturesScreen
from smash_tui.tui.dashboard import DashboardScreen
from smash_tui.tui.dialogs import NewSearchDialog
from smash_tui.tui.grid import Grid
from smash_tui.tui.processes import Launched, launch_worker, run_smash
from storage.db import Database, normalize_url, open_database
from storage.workers import alive_workers
from tests.tui.conftest import settle

pytest.importorskip("torch")  # the worker needs it; the app itself does not

# Budgets of `smash search` that the form leaves at their defaults.
TINY = [
    "--max-steps", "6",
    "--hypernet", "compact",
    "--batch-size", "25",
    "--synthetic-train", "300",
    "--synthetic-test", "100",
    "--val-size", "100",
    "--score-images", "50",
    "--eval-archs", "1",
    "--device", "cpu",
    "--threads", "1",
]  # fmt: skip


async def _wait_for(pilot: Any, condition: Any, what: str, timeout: float = 150.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await pilot.pause(0.25)
    raise AssertionError(f"waited {timeout:.0f} s for {what}")


@pytest.mark.slow
async def test_a_real_worker_fills_the_open_app(tmp_path: Path) -> None:
    url = normalize_url(str(tmp_path / "smash.db"))
    open_database(url).dispose()
    workers: list[int] = []

    def runner(args: Sequence[str], db_url: str) -> str:
        extra = TINY if args and args[0] == "search" else []
        output = run_smash([*args, *extra], db_url, timeout_s=180)
        pid = json.loads(output.strip().splitlines()[-1]).get("worker_pid")
        if pid:
            workers.append(int(pid))
        return output

    def launcher(db: Database) -> Launched:
        launched = launch_worker(db)
        workers.append(launched.pid)
        return launched

    app = SmashApp(url, poll_interval=0.3, runner=runner, launcher=launcher)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("n")
            await settle(pilot)
            dialog = app.screen
            assert isinstance(dialog, NewSearchDialog)
            dialog.query_one("#epochs").value = "1"  # type: ignore[attr-defined]
            dialog.query_one("#archs").value = "6"  # type: ignore[attr-defined]
            dialog.query_one("#name").value = "e2e"  # type: ignore[attr-defined]
            await pilot.click("#ok")
            await _wait_for(
                pilot,
                lambda: bool(workers) and app.experiment_label.endswith("e2e"),
                "the experiment and its worker",
                timeout=60,
            )
            dashboard = app.screen
            assert isinstance(dashboard, DashboardScreen)
            await _wait_for(
                pilot,
                lambda: dashboard._data is not None and bool(dashboard._data.curves.series),
                "HyperNet curve points on the dashboard",
            )
            assert not dashboard.query_one("#dash-loss").has_class("-empty")
            await pilot.press("2")
            browser = app.screen
            assert isinstance(browser, ArchitecturesScreen)
            grid = browser.query_one("#arch-table", Grid)
            await _wait_for(
                pilot,
                lambda: grid.row_count >= 6 and all(row.err is not None for row in browser.rows),
                "six scored architectures in the browser",
            )
            assert browser.total == grid.row_count
    finally:
        # Every worker registered on this database, even one started after a failure here.
        db = open_database(url)
        try:
            workers += [w.pid for w in alive_workers(db, 300) if w.host == socket.gethostname()]
        finally:
            db.dispose()
        for pid in set(workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for pid in set(workers):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break  # not our child (smash search launched it) or already reaped
                if done:
                    break
                time.sleep(0.2)
