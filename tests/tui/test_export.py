"""The export dialog passes the folder to `smash export` as a folder, whatever its name.

A folder named like an option (``--help``) used to reach the CLI as that option:
`smash export` printed its help, exited 0, and the app said it had exported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input

from smash_tui.tui.processes import run_smash
from tests.tui.conftest import FakeLauncher, FakeRunner, make_app, settle
from tests.tui.fixtures import Fixture


async def _export_to(pilot: Any, folder: str) -> None:
    """Open the browser, ask to export the highlighted architecture to ``folder``."""
    await settle(pilot)
    await pilot.press("2")
    await settle(pilot)
    await pilot.press("e")
    await settle(pilot)
    pilot.app.screen.query_one("#folder", Input).value = folder
    await pilot.press("enter")
    await settle(pilot)


@pytest.mark.parametrize("folder", ["--help", "-h", "--db=elsewhere", "plain"])
async def test_the_folder_follows_the_end_of_options(
    folder: str, fixture: Fixture, launcher: FakeLauncher
) -> None:
    runner = FakeRunner(output="")
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await _export_to(pilot, folder)
    [(args, _)] = runner.calls
    assert args == ["export", "--", str(fixture.retrained_ids[0]), folder]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="`smash export` needs torch")
async def test_the_real_cli_takes_a_folder_named_help_as_a_folder(
    fixture: Fixture, launcher: FakeLauncher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A non-empty folder named --help: `smash export` refuses it by name, before
    # touching anything, so the test needs no trained weights.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "--help").mkdir()
    (tmp_path / "--help" / "keep.txt").write_text("mine\n")
    app = make_app(fixture, launcher, FakeRunner())
    app.runner = run_smash  # the real CLI, in a subprocess
    async with app.run_test(size=(120, 40)) as pilot:
        await _export_to(pilot, "--help")
        await settle(pilot)
        for _ in range(600):  # the subprocess imports torch: a few seconds
            if any("export" in n.message and "…" not in n.message for n in app._notifications):
                break
            await pilot.pause(0.05)
        messages = [(n.severity, n.message) for n in app._notifications]
    failed = [message for severity, message in messages if severity == "error"]
    assert failed == [
        f"export of architecture {fixture.retrained_ids[0]} failed: "
        "--help exists and is not an empty folder"
    ], messages
    assert not any(message.startswith("exported") for _, message in messages)
    assert (tmp_path / "--help" / "keep.txt").read_text() == "mine\n"
