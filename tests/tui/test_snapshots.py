"""Snapshots of the main screens on the fixture database (pytest-textual-snapshot).

The fixture's timestamps are pinned, the app's clock is frozen, clocks print
in UTC and nothing polls, so a screen looks the same on every run. After an
intended change of the look, review and accept the new pictures with
``pytest tests/tui/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.tui.conftest import FakeLauncher, FakeRunner, make_app, settle
from tests.tui.fixtures import Fixture


def _settled(*keys: str) -> Callable[[Any], Any]:
    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        # The detail pane waits a moment before reading, so quick cursor moves coalesce.
        await pilot.pause(0.1)
        await settle(pilot)

    return run_before


@pytest.mark.parametrize(
    ("keys", "size"),
    [
        ((), (120, 40)),
        (("2",), (120, 40)),
        (("2", "down", "down"), (80, 24)),
        (("3",), (120, 40)),
        (("4",), (120, 40)),
        (("5",), (120, 40)),
        (("question_mark",), (120, 40)),
        ((), (80, 24)),
    ],
    ids=[
        "dashboard",
        "architectures",
        "architectures-80x24",
        "jobs",
        "proxy",
        "pareto",
        "help",
        "dashboard-80x24",
    ],
)
def test_screens_look_as_accepted(
    snap_compare: Any,
    fixture: Fixture,
    launcher: FakeLauncher,
    runner: FakeRunner,
    keys: tuple[str, ...],
    size: tuple[int, int],
) -> None:
    app = make_app(fixture, launcher, runner)
    assert snap_compare(app, terminal_size=size, run_before=_settled(*keys))
