"""Processes the app starts: background workers and `smash` commands that need torch.

The app never imports torch; anything that does (training, exporting,
creating an experiment from a preset) runs in a `smash` subprocess. This host's
GPUs (`gpu_status`: NVML, else `nvidia-smi`) come from `smash_tui.gpus`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from smash_tui.gpus import GpuStatus, gpu_status, parse_nvidia_smi

if TYPE_CHECKING:
    from storage.db import Database

__all__ = [
    "COMMAND_TIMEOUT_S",
    "CommandError",
    "GpuStatus",
    "Launched",
    "gpu_status",
    "launch_worker",
    "parse_nvidia_smi",
    "run_smash",
    "smash_command",
]

# How long a `smash` command the app runs may take before it is given up on.
COMMAND_TIMEOUT_S: Final = 600.0


class CommandError(Exception):
    """A `smash` subprocess failed; the message is its one-line reason."""


def smash_command() -> list[str]:
    """The argv prefix that runs the `smash` CLI of this very installation.

    The same interpreter runs the Typer app directly (as ``smash_tui.runner.launch``
    does for workers), so it works from a source checkout and never picks up
    another `smash` on PATH.
    """
    return [sys.executable, "-c", "from smash_tui.cli import main; main()"]


@dataclass(frozen=True)
class Launched:
    """The worker processes the app started: one, or one per GPU on a GPU host."""

    pid: int  # the first one's process id
    log_path: Path  # where the first one's output goes
    others: tuple[int, ...] = ()  # the process ids of the others


def launch_worker(db: Database) -> Launched:
    """Start `smash worker` for ``db`` detached, one per GPU on a GPU host (see
    ``smash_tui.runner.launch``, which finds GPUs without torch): they outlive the app.

    Args:
        db: The database the workers serve; their output goes under ``db.logs_dir``.
    """
    # Imported here: it loads SQLAlchemy, which the app keeps off its start-up path.
    from smash_tui.runner import launch

    first, *others = launch.host_workers(db)
    return Launched(first.pid, first.output_path, tuple(worker.pid for worker in others))


def run_smash(args: Sequence[str], db_url: str, *, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
    """Run a `smash` command on a database to completion and return its standard output.

    Args:
        args: The arguments after `smash`, e.g. ["export", "12", "out/"].
        db_url: The database, passed as ``SMASH_DB`` so a password stays out of ``ps``.
        timeout_s: Seconds before giving up.

    Raises:
        CommandError: With the command's last stderr line when it fails or times out.
    """
    try:
        result = subprocess.run(
            [*smash_command(), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=dict(os.environ, SMASH_DB=db_url),
        )
    except subprocess.TimeoutExpired:
        raise CommandError(f"smash {args[0]} took longer than {timeout_s:.0f} s") from None
    except OSError as exc:
        raise CommandError(f"cannot run smash: {exc.strerror or exc}") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise CommandError(reason.removeprefix("error: "))
    return result.stdout
