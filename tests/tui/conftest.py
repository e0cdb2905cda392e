"""Fixtures of the app's tests: a fixture database per test, fake processes, settling.

The fixture database is built once per test process through the storage API
(see ``fixtures.build_fixture``) and copied for each test. The app under test
never polls (``poll_interval=None``), its clock is frozen, and it starts
no processes: ``FakeLauncher`` and ``FakeRunner`` record what it asked for.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from smash_tui.tui.app import SmashApp
from smash_tui.tui.processes import Launched
from storage.db import Database, normalize_url
from tests.tui.fixtures import FIXED_NOW, Fixture, build_fixture


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests in a fresh event loop (no async plugin needed for pilots)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**arguments))
    return True


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The developer's database stays out of every test; clocks print in UTC.
    monkeypatch.setenv("SMASH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SMASH_DB", raising=False)
    monkeypatch.delenv("SMASH_FILES", raising=False)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(scope="session")
def fixture_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Fixture]:
    """The fixture database, built once per test process."""
    path = tmp_path_factory.mktemp("tui-template") / "smash.db"
    return path, build_fixture(path)


@pytest.fixture
def fixture(fixture_template: tuple[Path, Fixture], tmp_path: Path) -> Fixture:
    """A fresh copy of the fixture database for one test."""
    template, made = fixture_template
    path = tmp_path / "smash.db"
    shutil.copyfile(template, path)
    return replace(made, url=normalize_url(str(path)))


@dataclass
class FakeLauncher:
    """Stands in for launching a worker process; records the databases it was asked for."""

    calls: list[str] = field(default_factory=list)

    def __call__(self, db: Database) -> Launched:
        self.calls.append(db.url)
        return Launched(4321, db.files_dir / "logs" / "worker.out")


@dataclass
class FakeRunner:
    """Stands in for `smash` subprocesses; records (args, database URL) and answers ``output``."""

    output: str = ""
    error: Exception | None = None
    calls: list[tuple[list[str], str]] = field(default_factory=list)

    def __call__(self, args: Sequence[str], db_url: str) -> str:
        self.calls.append((list(args), db_url))
        if self.error is not None:
            raise self.error
        return self.output


@pytest.fixture
def launcher() -> FakeLauncher:
    """A launcher that starts nothing."""
    return FakeLauncher()


@pytest.fixture
def runner() -> FakeRunner:
    """A `smash` runner that runs nothing; answers like `smash search --json`."""
    return FakeRunner(
        output=json.dumps(
            {"experiment_id": 2, "name": "cifar-run", "job_ids": [1, 2], "worker_pid": None}
        )
    )


def make_app(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner, **options: Any
) -> SmashApp:
    """The app on the fixture database, with a frozen clock and fake processes."""
    options.setdefault("poll_interval", None)
    return SmashApp(fixture.url, now=lambda: FIXED_NOW, launcher=launcher, runner=runner, **options)


async def settle(pilot: Pilot[Any], rounds: int = 3) -> None:
    """Wait until no worker runs and no message is pending, a few times in a row.

    Workers post messages whose handlers start more workers (a page, then its
    count; a dashboard, then its experiment), so one quiet moment is not enough.
    """
    quiet = 0
    for _ in range(400):
        await pilot.pause()
        if any(worker.is_running for worker in pilot.app.workers):
            quiet = 0
            await pilot.pause(0.01)
            continue
        quiet += 1
        if quiet >= rounds:
            return
    raise AssertionError("the app did not settle: a worker kept running")
