"""Processes the app starts: background workers and `smash` commands that need torch.

The app never imports torch; anything that does (training, exporting,
creating an experiment from a preset) runs in a `smash` subprocess.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from storage.db import Database

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


@dataclass(frozen=True)
class GpuStatus:
    """One GPU as ``nvidia-smi`` reports it."""

    index: int  # nvidia-smi's index (CUDA_VISIBLE_DEVICES may renumber it for a worker)
    name: str  # e.g. "NVIDIA H100 80GB HBM3"
    memory_used_mib: float  # memory in use, MiB
    memory_total_mib: float  # memory on the card, MiB
    utilization_pct: float | None  # GPU utilisation over the last sample; None if not reported


NVIDIA_SMI_QUERY: Final = (
    "--query-gpu=index,name,memory.used,memory.total,utilization.gpu",
    "--format=csv,noheader,nounits",
)


def parse_nvidia_smi(text: str) -> list[GpuStatus]:
    """The GPUs in ``nvidia-smi --query-gpu=... --format=csv,noheader,nounits`` output.

    Lines that cannot be read (a driver message, "[N/A]" memory) are skipped.
    """
    gpus = []
    for line in text.strip().splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 5:
            continue
        index, name, used, total, utilization = fields
        try:
            gpus.append(
                GpuStatus(
                    int(index),
                    name,
                    float(used),
                    float(total),
                    float(utilization) if utilization.replace(".", "", 1).isdigit() else None,
                )
            )
        except ValueError:
            continue
    return gpus


def gpu_status(timeout_s: float = 2.0) -> list[GpuStatus]:
    """This host's GPUs from ``nvidia-smi`` (no torch needed); empty without it or on error."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return []
    try:
        result = subprocess.run(
            [executable, *NVIDIA_SMI_QUERY],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(result.stdout) if result.returncode == 0 else []
