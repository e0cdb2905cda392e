"""Benchmark of the command center: key press to repaint for sort and filter, and start-up.

Builds (or reuses) a database with ``--n`` scored architectures through the
storage API (the generator of ``benchmarks/storage.py``: specs of 2-4 KB, 95 %
scored), then:

- sort: in the Architectures view (120x40, headless), a sort key (P, F, E, D, L...)
  is pressed and the time to the first frame that shows the new first window is
  taken; the median over ``--repeats`` presses;
- filter: a filter is typed, then the time from pressing enter to the first frame
  showing the filtered window; the median over ``--repeats`` filters;
- start-up: ``python -c`` of a child that runs the app headless; the time from
  spawning the process to the app's first frame (``startup_s``) and to the first
  frame with the dashboard's data (``startup_data_s``); the median of three.

A "frame" is the compositor update the app hands its driver, rendered to the
terminal's escape codes here (headless drivers skip that step), so the figures
include producing what a terminal would receive, but not the terminal itself.

    python benchmarks/tui.py [--n 100000] [--db PATH] [--repeats 15] [--out FILE]

``--db PATH`` keeps the database there and reuses it on the next run (building
100,000 architectures takes a while on a small CPU). Targets: sort and filter
< 100 ms, start-up < 1.5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script, this folder would shadow nothing here, but the repository root
# must come first so the app and storage import without an installed smash.
_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))

from rich.console import Console  # noqa: E402
from textual._compositor import CompositorUpdate  # noqa: E402

from smash_tui.tui.app import SmashApp  # noqa: E402
from smash_tui.tui.architectures import ArchitecturesScreen  # noqa: E402
from smash_tui.tui.dashboard import DashboardScreen  # noqa: E402

TARGET_SORT_MS = 100.0
TARGET_FILTER_MS = 100.0
TARGET_STARTUP_S = 1.5
SIZE = (120, 40)
SORT_KEYS = ("P", "F", "E", "D", "L", "O", "P", "A", "E")
FILTERS = (
    "err<40 params<2e6",
    "params<1e6",
    "flops>1e8 err<30",
    "depth>=20 ops<15",
    "err<25",
)


def _bench_storage() -> Any:
    """benchmarks/storage.py as a module (it holds the 100k-row generator)."""
    path = Path(__file__).with_name("storage.py")
    spec = importlib.util.spec_from_file_location("smash_bench_storage", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def prepare(db_path: Path, n: int) -> int:
    """Make sure ``db_path`` holds an experiment with ``n`` architectures; return its id."""
    from sqlalchemy import func, select

    from storage.db import open_database
    from storage.models import Architecture

    bench = _bench_storage()
    db = open_database(str(db_path))
    try:
        with db.session() as session:
            counts = session.execute(
                select(Architecture.experiment_id, func.count()).group_by(
                    Architecture.experiment_id
                )
            ).all()
        for experiment_id, count in counts:
            if count == n:
                print(f"reusing {db_path}: experiment {experiment_id} has {n:,} architectures")
                return int(experiment_id)
        print(f"building {n:,} architectures in {db_path} (once; --db keeps them)…")
        config = bench.BenchConfig(n=n, batch=1000, repeats=1, scored_fraction=0.95, seed=0)
        experiment_id, seconds, _ = bench.insert(db, config)
        print(f"built in {seconds:.0f} s")
        return int(experiment_id)
    finally:
        db.dispose()


class FrameClock:
    """Wraps ``App._display`` to time every frame, rendering it to escape codes first."""

    def __init__(self, app: SmashApp) -> None:
        self.frames: list[tuple[float, int]] = []  # (time, generation shown) per frame
        self._console = Console(width=SIZE[0], height=SIZE[1], force_terminal=True, file=_Sink())
        original = app._display

        def display(screen: Any, renderable: Any) -> None:
            if isinstance(renderable, CompositorUpdate):
                renderable.render_segments(self._console)
            elif renderable is not None:
                self._console.print(renderable)
            original(screen, renderable)
            if renderable is not None:
                shown = getattr(app.screen, "shown_generation", -1)
                self.frames.append((time.perf_counter(), shown))

        app._display = display  # type: ignore[method-assign]

    async def first_frame_showing(
        self, generation: int, after: float, timeout: float = 10.0
    ) -> float:
        """When the first frame showing ``generation`` was made (waits for it)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            for moment, shown in self.frames:
                if moment >= after and shown >= generation:
                    return moment
            await asyncio.sleep(0.0005)
        raise TimeoutError(f"no frame showed request {generation} within {timeout:.0f} s")


class _Sink:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


async def _quiet(app: SmashApp, pilot: Any) -> None:
    for _ in range(2000):
        await pilot.pause(0.01)
        if not any(worker.is_running for worker in app.workers):
            await pilot.pause(0.05)
            if not any(worker.is_running for worker in app.workers):
                return


async def measure_interaction(url: str, repeats: int) -> dict[str, Any]:
    """Sort and filter latencies (ms) in the Architectures view."""
    app = SmashApp(url, poll_interval=None)
    sort_ms: list[float] = []
    filter_ms: list[float] = []
    async with app.run_test(size=SIZE) as pilot:
        clock = FrameClock(app)
        await _quiet(app, pilot)
        await pilot.press("2")
        await _quiet(app, pilot)
        screen = app.screen
        assert isinstance(screen, ArchitecturesScreen)
        assert screen.rows, "the browser shows no rows"
        # Warm-up: the first sort of each column pays for SQLite's page cache.
        for key in SORT_KEYS:
            await pilot.press(key)
            await _quiet(app, pilot)
        for index in range(repeats):
            key = SORT_KEYS[index % len(SORT_KEYS)]
            started = time.perf_counter()
            await pilot.press(key)
            target = screen.generation
            shown = await clock.first_frame_showing(target, started)
            sort_ms.append((shown - started) * 1000)
            await _quiet(app, pilot)
        await pilot.press("E")  # back to error order for the filters
        await _quiet(app, pilot)
        for index in range(repeats + len(FILTERS)):
            text = FILTERS[index % len(FILTERS)]
            await pilot.press("slash", "ctrl+u", *text)
            await _quiet(app, pilot)
            started = time.perf_counter()
            await pilot.press("enter")
            target = screen.generation
            shown = await clock.first_frame_showing(target, started)
            if index >= len(FILTERS):  # the first round warms the cache
                filter_ms.append((shown - started) * 1000)
            await _quiet(app, pilot)
        rows = len(screen.rows)
        total = screen.total
    return {
        "sort_ms": statistics.median(sort_ms),
        "sort_ms_max": max(sort_ms),
        "filter_ms": statistics.median(filter_ms),
        "filter_ms_max": max(filter_ms),
        "sort_samples": [round(value, 2) for value in sort_ms],
        "filter_samples": [round(value, 2) for value in filter_ms],
        "last_filter_rows_loaded": rows,
        "last_filter_total": total,
    }


def startup_child(url: str) -> None:
    """Run in a child process: time the app's first frame and first frame with data."""
    spawned = float(os.environ["SMASH_BENCH_SPAWNED"])
    times: dict[str, float] = {}
    app = SmashApp(url, poll_interval=None)
    original = app._display

    def display(screen: Any, renderable: Any) -> None:
        original(screen, renderable)
        if renderable is None:
            return
        now = time.time()
        times.setdefault("first_paint", now - spawned)
        current = app.screen
        if isinstance(current, DashboardScreen) and current._data is not None:
            times.setdefault("first_data", now - spawned)
            app.exit()

    app._display = display  # type: ignore[method-assign]
    app.run(headless=True, size=SIZE)
    print(json.dumps(times))


def measure_startup(url: str, runs: int = 3) -> dict[str, Any]:
    """Median time from spawning a process to the first frame, and to the first data frame."""
    firsts, datas = [], []
    for _ in range(runs):
        environment = dict(os.environ, SMASH_BENCH_SPAWNED=repr(time.time()))
        result = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--startup-child", url],
            capture_output=True,
            text=True,
            env=environment,
            timeout=120,
            check=True,
        )
        times = json.loads(result.stdout.strip().splitlines()[-1])
        firsts.append(times["first_paint"])
        datas.append(times["first_data"])
    return {
        "startup_s": statistics.median(firsts),
        "startup_data_s": statistics.median(datas),
        "startup_samples": [round(value, 3) for value in firsts],
        "startup_data_samples": [round(value, 3) for value in datas],
    }


def _line(name: str, value: float, unit: str, target: float) -> str:
    verdict = "ok" if value < target else "OVER TARGET"
    return f"{name:22s} {value:8.2f} {unit}   (target < {target:g} {unit}: {verdict})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="architectures in the experiment")
    parser.add_argument("--db", type=Path, help="database file to build once and reuse")
    parser.add_argument("--repeats", type=int, default=15, help="timed presses per measurement")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--startup-child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.startup_child:
        startup_child(args.startup_child)
        return 0

    scratch = None if args.db else Path(tempfile.mkdtemp(prefix="smash-tui-bench-"))
    db_path: Path = args.db or scratch / "bench.db"  # type: ignore[operator]
    try:
        prepare(db_path, args.n)
        url = str(db_path.resolve())
        measured: dict[str, Any] = {}
        measured.update(asyncio.run(measure_interaction(url, args.repeats)))
        measured.update(measure_startup(url))
        print(_line("sort: key to repaint", measured["sort_ms"], "ms", TARGET_SORT_MS))
        print(_line("filter: enter to repaint", measured["filter_ms"], "ms", TARGET_FILTER_MS))
        print(_line("start-up to first paint", measured["startup_s"], "s", TARGET_STARTUP_S))
        print(f"{'start-up to data':22s} {measured['startup_data_s']:8.2f} s")
        print(
            f"(medians of {args.repeats}; worst sort {measured['sort_ms_max']:.1f} ms, "
            f"worst filter {measured['filter_ms_max']:.1f} ms; {os.cpu_count()} CPUs, "
            f"load {os.getloadavg()[0]:.1f})"
        )
        result = {
            "n": args.n,
            "size": list(SIZE),
            "repeats": args.repeats,
            **{
                key: round(value, 3) if isinstance(value, float) else value
                for key, value in measured.items()
            },
            "targets": {
                "sort_ms": TARGET_SORT_MS,
                "filter_ms": TARGET_FILTER_MS,
                "startup_s": TARGET_STARTUP_S,
            },
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_1min": round(os.getloadavg()[0], 2),
        }
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
            print(f"wrote {args.out}")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
