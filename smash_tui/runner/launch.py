"""Start detached worker processes for a database (``smash workers``, ``--detach``, the TUI).

A worker outlives whoever started it: it runs in its own session, reads nothing from
the terminal and writes its output to a file under the database's logs folder (its own
log file opens there too). The database URL travels in the environment, not on the
command line, so that a PostgreSQL password does not show in ``ps``.

On a GPU host one worker runs per GPU, each seeing only its own GPU
(``CUDA_VISIBLE_DEVICES``), as ``cuda:0``. GPUs are found without torch: the GPUs that
``nvidia-smi -L`` lists, narrowed to those ``CUDA_VISIBLE_DEVICES`` names when it is set
("GPU N" is then the Nth of them, as CUDA programs number them).

Nothing here imports torch or the engine: the Textual app uses it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from storage.db import Database
from storage.workers import alive_workers

# A worker counts as alive if it sent a heartbeat this recently (it sends one every few seconds).
ALIVE_WITHIN_S = 20.0
# Most workers one command starts (more is a typo: a host has at most a few dozen GPUs or cores).
MAX_WORKERS = 256


class WorkerPlanError(ValueError):
    """A ``--gpus`` list or worker count that cannot be; the message is one line."""


@dataclass(frozen=True)
class LaunchedWorker:
    """A worker process started in the background."""

    pid: int  # its process id
    output_path: Path  # where its stdout and stderr go (start-up errors land here)


def worker_command(
    *, device: str = "auto", threads: int | None = None, extra: tuple[str, ...] = ()
) -> list[str]:
    """The command line of a worker process run by this Python.

    Args:
        device: The worker's ``--device``.
        threads: The worker's ``--threads``, if any.
        extra: Further ``smash worker`` options.
    """
    command = [
        sys.executable,
        "-c",
        "from smash_tui.cli import main; main()",
        "worker",
        "--device",
        device,
    ]
    if threads is not None:
        command += ["--threads", str(threads)]
    return command + list(extra)


def launch_worker(
    db: Database,
    *,
    device: str = "auto",
    threads: int | None = None,
    extra: tuple[str, ...] = (),
    environment: Mapping[str, str] | None = None,
) -> LaunchedWorker:
    """Start ``smash worker`` for ``db`` as a detached background process.

    Args:
        db: The database the worker takes jobs from.
        device: Its ``--device``.
        threads: Its ``--threads``, if any.
        extra: Further ``smash worker`` options.
        environment: Variables to set for it (``CUDA_VISIBLE_DEVICES`` of its GPU).

    Returns:
        Its pid and output file. The process registers itself within seconds;
        ``storage.workers.alive_workers`` then lists it.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output_path = db.logs_dir / f"worker-launch-{stamp}-{uuid.uuid4().hex[:6]}.out"
    environment = {**os.environ, **(environment or {}), "SMASH_DB": db.url}
    options: dict[str, object] = {}
    if os.name == "nt":
        options["creationflags"] = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    else:
        options["start_new_session"] = True  # no terminal signals (Ctrl-C) reach it
    with open(output_path, "ab") as output:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            worker_command(device=device, threads=threads, extra=extra),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            close_fds=True,
            **options,  # type: ignore[arg-type]
        )
    return LaunchedWorker(pid=process.pid, output_path=output_path)


def ensure_workers(
    db: Database, *, device: str = "auto", threads: int | None = None
) -> list[LaunchedWorker]:
    """Launch workers for this host unless one is alive for ``db`` (see ``host_workers``).

    A worker of this host whose process is gone (``kill -9``) does not count, however
    recent its last heartbeat (``storage.workers.alive_workers``); the launched workers
    requeue its jobs as they start.

    Returns:
        The launched workers; none when one was already alive.
    """
    if alive_workers(db, ALIVE_WITHIN_S):
        return []
    return host_workers(db, device=device, threads=threads)


def host_workers(
    db: Database, *, device: str = "auto", threads: int | None = None
) -> list[LaunchedWorker]:
    """The workers a host runs for ``device``: one per GPU for ``auto`` or ``cuda`` on a GPU
    host, else one on ``device``."""
    gpus = visible_gpus()
    if device in ("auto", "cuda") and gpus:
        return launch_workers(db, gpus=range(len(gpus)), threads=threads)
    return [launch_worker(db, device=device, threads=threads)]


def launch_workers(
    db: Database,
    *,
    gpus: Sequence[int] = (),
    cpus: int = 0,
    threads: int | None = None,
    extra: tuple[str, ...] = (),
) -> list[LaunchedWorker]:
    """One detached worker per GPU of ``gpus`` (numbers of ``visible_gpus``), then ``cpus`` on the CPU.

    Each GPU worker sees its GPU alone, as ``cuda:0``. CPU workers share the cores:
    ``threads`` each, or the cores divided among them.
    """
    gpu_ids = visible_gpus()
    launched = [
        launch_worker(
            db,
            device="cuda:0",
            threads=threads,
            extra=extra,
            environment={"CUDA_VISIBLE_DEVICES": gpu_ids[gpu]},
        )
        for gpu in gpus
    ]
    if cpus:
        each = threads or max(1, (os.cpu_count() or 1) // cpus)
        launched += [
            launch_worker(db, device="cpu", threads=each, extra=extra, environment={"CUDA_VISIBLE_DEVICES": ""})
            for _ in range(cpus)
        ]
    return launched


# --- GPUs, without torch ---------------------------------------------------------------------


def nvidia_smi_gpus(timeout_s: float = 5.0) -> list[tuple[str, str]]:
    """(index, UUID) of every GPU ``nvidia-smi -L`` lists; none without it."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return []
    try:
        result = subprocess.run(
            [executable, "-L"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    return re.findall(r"^GPU (\d+):.*\(UUID: (\S+?)\)", result.stdout, re.MULTILINE)


def visible_gpus(
    environ: Mapping[str, str] | None = None, listed: Sequence[tuple[str, str]] | None = None
) -> list[str]:
    """The GPUs CUDA programs started from here see, in CUDA's order, as ``CUDA_VISIBLE_DEVICES`` ids.

    Args:
        environ: The environment (this process's by default).
        listed: ``nvidia_smi_gpus()``'s answer (asked by default).
    """
    environ = os.environ if environ is None else environ
    listed = nvidia_smi_gpus() if listed is None else listed
    indices = [index for index, _ in listed]
    if "CUDA_VISIBLE_DEVICES" not in environ:
        return indices
    visible: list[str] = []
    for entry in (part.strip() for part in environ["CUDA_VISIBLE_DEVICES"].split(",")):
        # CUDA stops at the first entry that names no GPU ("-1", "" hide them all).
        known = entry in indices or any(uuid_.startswith(entry) for _, uuid_ in listed if entry.startswith("GPU-"))
        if not entry or not known or entry in visible:
            break
        visible.append(entry)
    return visible


def parse_gpus(text: str, count: int) -> list[int]:
    """The GPU numbers of ``--gpus`` (``all`` or a list like ``0,1,3``) on a host with ``count`` GPUs.

    Raises:
        WorkerPlanError: A list that is empty, malformed, repeats a GPU or names one the
            host lacks (one line).
    """
    value = text.strip()
    have = "none" if count == 0 else f"{count} (0-{count - 1})" if count > 1 else "1 (0)"
    if value.lower() == "all":
        if count == 0:
            raise WorkerPlanError("--gpus all: this host has no GPU")
        return list(range(count))
    parts = [part.strip() for part in value.split(",")]
    if not value or any(not part for part in parts):
        raise WorkerPlanError(f"--gpus {text!r}: give all, or GPU numbers separated by commas (0,1,3)")
    numbers = []
    for part in parts:
        if not (part.isascii() and part.isdigit()) or len(part) > 6:
            raise WorkerPlanError(f"--gpus {text!r}: {part!r} is no GPU number (0, 1, 2, ...)")
        number = int(part)
        if number in numbers:
            raise WorkerPlanError(f"--gpus {text!r}: GPU {number} is named twice")
        if number >= count:
            raise WorkerPlanError(f"no GPU {number}: this host has {have}")
        numbers.append(number)
    return numbers
