"""The dashboard shows every alive worker's GPU, on any host, as its heartbeat reports it."""

from __future__ import annotations

import socket
from typing import Any

from textual.widgets import Static

from smash_tui.gpus import GpuStatus
from smash_tui.tui import dashboard
from smash_tui.tui.widgets import StatusLine
from storage.db import open_database
from storage.workers import GpuIdentity, GpuReading, register_worker, worker_heartbeat
from tests.tui.conftest import FakeLauncher, FakeRunner, make_app, settle
from tests.tui.fixtures import Fixture

H100 = "NVIDIA H100 80GB HBM3"


def _plain(widget: Any) -> str:
    if isinstance(widget, StatusLine):
        return widget.text.plain
    assert isinstance(widget, Static)
    return str(widget.render())


async def test_the_dashboard_shows_a_remote_workers_gpu_from_its_heartbeat(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner, monkeypatch: Any
) -> None:
    db = open_database(fixture.url)
    remote = register_worker(db, device="cuda:1", host="gpu-host-2", pid=77, gpu=GpuIdentity(3, "GPU-dddd", H100))
    worker_heartbeat(db, remote, gpu=GpuReading(40960.0, 81559.0, 97.0))
    register_worker(db, device="cpu", host="cpu-host", pid=78)
    db.dispose()
    asked: list[bool] = []
    monkeypatch.setattr(dashboard, "gpu_status", lambda: asked.append(True) or [])
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        stats = _plain(app.screen.query_one("#dash-stats", StatusLine))
        pane = app.screen.query_one("#dash-workers", Static)
        workers = _plain(pane)
        assert pane.display
    assert f"device cuda:1 {H100} · 40.0/80 GiB · 97 % busy" in stats and "2 workers alive" in stats
    assert f"gpu-host-2:77 cuda:1 {H100} · 40.0/80 GiB · 97 % busy · idle" in workers
    assert "cpu-host:78 cpu · idle" in workers
    assert not asked  # nothing to read on this host: the worker sent its figures


async def test_a_local_worker_under_cuda_visible_devices_shows_its_own_gpu(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner, monkeypatch: Any
) -> None:
    # Its cuda:0 is the driver's GPU 1 (CUDA_VISIBLE_DEVICES=1), and it sent no figures.
    db = open_database(fixture.url)
    register_worker(db, device="cuda:0", host=socket.gethostname(), pid=1, gpu=GpuIdentity(1, "GPU-bbbb", H100))
    db.dispose()
    local = [GpuStatus(0, H100, 1024.0, 81559.0, 5.0, "GPU-aaaa"), GpuStatus(1, H100, 61440.0, 81559.0, 88.0, "GPU-bbbb")]
    monkeypatch.setattr(dashboard, "gpu_status", lambda: local)
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        stats = _plain(app.screen.query_one("#dash-stats", StatusLine))
    assert f"device cuda:0 {H100} · 60.0/80 GiB · 88 % busy" in stats  # not GPU 0's 1.0 GiB


async def test_without_alive_workers_the_worker_lines_stay_hidden(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert not app.screen.query_one("#dash-workers", Static).display
