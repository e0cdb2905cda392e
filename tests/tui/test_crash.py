"""An error nothing in the app handles: exit status 1, one line, the traceback in a file.

Textual ends the app on such an error and used to print a traceback (with local
variables) on the restored terminal, after which `smash tui` exited 0.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path

import pytest

from smash_tui.tui.app import CRASH_LOG, AppCrashed, SmashApp, crash_error
from storage.db import open_database
from tests.tui.conftest import FakeLauncher, FakeRunner, make_app, settle
from tests.tui.fixtures import Fixture


def _broken(self: SmashApp) -> None:
    raise ValueError("math domain error")


async def test_an_unhandled_error_ends_the_app_with_its_traceback_in_a_file(
    fixture: Fixture,
    launcher: FakeLauncher,
    runner: FakeRunner,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(SmashApp, "action_toggle_theme", _broken)
    app = make_app(fixture, launcher, runner)
    with pytest.raises(ValueError, match="math domain error"):  # run_test re-raises it
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await pilot.press("t")
            await pilot.pause()
    assert app.return_code == 1
    assert isinstance(app.crash, ValueError)
    # Nothing on the terminal: Textual's traceback went nowhere.
    assert "Traceback" not in capfd.readouterr().err
    error = crash_error(app)
    db = open_database(fixture.url)
    log = db.logs_dir / CRASH_LOG
    db.dispose()
    assert isinstance(error, AppCrashed)
    assert str(error) == f"ValueError: math domain error (traceback in {log})"
    saved = log.read_text()
    assert "Traceback (most recent call last)" in saved
    assert "_broken" in saved
    assert saved.rstrip().endswith("ValueError: math domain error")


def _run_in_terminal(
    args: list[str], env: dict[str, str], size: tuple[int, int]
) -> tuple[int, str]:
    """Run a command on a pseudo-terminal of ``size`` (columns, rows): its exit status, output."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its stdin/stdout/stderr
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        os.execve(args[0], args, env)
    output = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode("utf-8", "replace")


@pytest.mark.slow
def test_smash_tui_says_one_line_and_exits_1_when_the_app_crashes(
    fixture: Fixture, tmp_path: Path
) -> None:
    # `smash tui` in a real terminal, with the dashboard broken on purpose: it fails
    # once the database is open and it reads it.
    script = (
        "from smash_tui.tui.dashboard import DashboardScreen\n"
        "def broken(self, force=False):\n"
        "    raise ValueError('math domain error')\n"
        "DashboardScreen.refresh_data = broken\n"
        "from smash_tui.cli import main\n"
        "main()\n"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TERM": "xterm-256color",
        "SMASH_HOME": str(tmp_path / "home"),
        "PYTHONPATH": os.getcwd(),
        "TZ": "UTC",
    }
    code, output = _run_in_terminal(
        [sys.executable, "-c", script, "tui", "--db", fixture.url], env, (100, 30)
    )
    assert code == 1, output[-2000:]
    # After the app leaves its alternate screen and restores the terminal: one line.
    # (Escape sequences and control characters, such as the crash's bell, left out.)
    after = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.rsplit("\x1b[?1049l", 1)[-1])
    after = re.sub(r"[\x00-\x09\x0b-\x1f]", "", after)
    lines = [line for line in after.split("\n") if line.strip()]
    assert len(lines) == 1, after
    assert lines[0].startswith("error: the app crashed: ")
    db = open_database(fixture.url)
    log = db.logs_dir / CRASH_LOG
    db.dispose()
    assert f"ValueError: math domain error (traceback in {log})" in lines[0]
    assert "Traceback" not in after
    assert "math domain error" in log.read_text()
