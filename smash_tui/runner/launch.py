"""Start a detached worker process for a database (``smash search --detach``, the TUI).

The worker outlives whoever started it: it runs in its own session, reads nothing
from the terminal and writes its output to a file under the database's logs folder
(its own log file opens there too). The database URL travels in the environment,
not on the command line, so that a PostgreSQL password does not show in ``ps``.

Nothing here imports torch or the engine: the Textual app uses it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from storage.db import Database
from storage.workers import alive_workers

# A worker counts as alive if it sent a heartbeat this recently (it sends one every few seconds).
ALIVE_WITHIN_S = 20.0


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
    db: Database, *, device: str = "auto", threads: int | None = None, extra: tuple[str, ...] = ()
) -> LaunchedWorker:
    """Start ``smash worker`` for ``db`` as a detached background process.

    Args:
        db: The database the worker takes jobs from.
        device: Its ``--device``.
        threads: Its ``--threads``, if any.
        extra: Further ``smash worker`` options.

    Returns:
        Its pid and output file. The process registers itself within seconds;
        ``storage.workers.alive_workers`` then lists it.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output_path = db.logs_dir / f"worker-launch-{stamp}-{uuid.uuid4().hex[:6]}.out"
    environment = dict(os.environ, SMASH_DB=db.url)
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


def ensure_worker(
    db: Database, *, device: str = "auto", threads: int | None = None
) -> LaunchedWorker | None:
    """Launch a worker unless one is alive for ``db``.

    A worker of this host whose process is gone (``kill -9``) does not count, however
    recent its last heartbeat (``storage.workers.alive_workers``); the launched worker
    requeues its jobs as it starts.

    Returns:
        The launched worker, or None when one was already alive.
    """
    if alive_workers(db, ALIVE_WITHIN_S):
        return None
    return launch_worker(db, device=device, threads=threads)
