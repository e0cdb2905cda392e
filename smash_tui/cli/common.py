"""What every command shares: options, one-line errors and exit codes, the foreground worker.

Exit codes: 0 ok, 1 failure, 2 usage (a bad option or setting), 130 interrupted.
Errors print one line, ``error: ...``, on stderr; set ``SMASH_DEBUG=1`` to get the
traceback of an unexpected one.

The engine (and torch) is imported inside the commands that need it, so that
``smash ls``, ``smash jobs`` and friends start quickly.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from engine.arch import InvalidArchitecture
from engine.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    InvalidRetrainConfig,
    RetrainError,
    TrainingDiverged,
)
from engine.params import parse_id as engine_parse_id
from engine.space import InvalidSearchSpace
from smash_tui.errors import AppCrashed
from smash_tui.runner.config import MAX_THREADS, WorkerConfig
from storage.db import Database, open_database
from storage.errors import (
    DatabaseURLError,
    FilterError,
    NotFoundError,
    StorageError,
    first_line,
)
from storage.models import Experiment, Job
from storage.queries import list_experiments
from storage.records import find_experiment, get_experiment

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL or SQLite file [default: $SMASH_DB, else smash.db in the user data folder].",
        show_default=False,
    ),
]
DeviceOption = Annotated[
    str, typer.Option("--device", help="Where to compute: auto, cpu, cuda or cuda:N.")
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads", min=1, max=MAX_THREADS, help="Torch CPU threads [default: torch's choice]."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ExperimentOption = Annotated[
    str | None,
    typer.Option(
        "--experiment",
        "-e",
        help="Experiment id or name [default: the newest].",
        show_default=False,
    ),
]

_F = TypeVar("_F", bound=Callable[..., Any])


class CliError(Exception):
    """An error for the user: its message is printed as one line, then the command exits.

    Args:
        message: What went wrong and, where possible, what to do.
        code: The exit code (EXIT_FAILURE or EXIT_USAGE).
    """

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


# Engine errors meant for the user, most specific first (their modules are torch-free).
_ENGINE_ERRORS: tuple[tuple[type[BaseException], int], ...] = (
    (ConfigError, EXIT_USAGE),
    (InvalidRetrainConfig, EXIT_USAGE),
    (InvalidSearchSpace, EXIT_USAGE),
    (DatasetError, EXIT_FAILURE),
    (CheckpointError, EXIT_FAILURE),
    (InvalidArchitecture, EXIT_FAILURE),
    (RetrainError, EXIT_FAILURE),
    (TrainingDiverged, EXIT_FAILURE),
)


def error_code(exc: BaseException) -> int | None:
    """The exit code of an error meant for the user, or None for an unexpected one."""
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, AppCrashed):
        return EXIT_FAILURE
    if isinstance(exc, (FilterError, DatabaseURLError)):
        return EXIT_USAGE
    if isinstance(exc, (StorageError, DBAPIError, OSError)):
        return EXIT_FAILURE
    for error_type, code in _ENGINE_ERRORS:
        if isinstance(exc, error_type):
            return code
    return None


def error_message(exc: BaseException) -> str:
    """The one line shown for an error meant for the user.

    A database error shows the driver's reason only: SQLAlchemy's own message goes on
    with the SQL statement and its parameters, which are no business of the user.
    """
    if isinstance(exc, DBAPIError):
        return f"database error: {first_line(exc.orig)}"
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return first_line(exc)


def print_error(message: str) -> None:
    """Print ``error: message`` on stderr (one line)."""
    typer.echo(f"error: {message}", err=True)


def command(function: _F) -> _F:
    """Turn errors of a command into one line on stderr and its exit code."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            print_error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
            code = error_code(exc)
            if code is None:
                if os.environ.get("SMASH_DEBUG") == "1":
                    raise
                print_error(
                    f"internal error: {type(exc).__name__}: {first_line(exc)} "
                    "(run with SMASH_DEBUG=1 for the traceback)"
                )
                raise typer.Exit(EXIT_FAILURE) from None
            prefix = "the app crashed: " if isinstance(exc, AppCrashed) else ""
            print_error(prefix + error_message(exc))
            raise typer.Exit(code) from None
        finally:
            _close_databases()

    return wrapper  # type: ignore[return-value]


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Stop the command with a one-line error."""
    raise CliError(message, code)


def stdout() -> Console:
    """The console for results (tables, JSON)."""
    return Console(soft_wrap=False)


def stderr() -> Console:
    """The console for progress and notes, keeping stdout for results."""
    return Console(stderr=True)


_opened: list[Database] = []


def open_db(url: str | None) -> Database:
    """Open (and migrate) the database of ``--db``; StorageError when it cannot be used.

    The command's wrapper closes it when the command ends (so a SQLite file is
    checkpointed and complete on its own afterwards).
    """
    database = open_database(url)
    _opened.append(database)
    return database


def _close_databases() -> None:
    while _opened:
        _opened.pop().dispose()


def resolve_experiment(session: Session, value: str | None) -> Experiment:
    """The experiment named by ``--experiment`` (an id or a name), or the newest one.

    Raises:
        NotFoundError: No such experiment, or none at all.
        ConfigError: An id that is not one (non-ASCII digits, out of range).
    """
    if value is None:
        experiments = list_experiments(session)
        if not experiments:
            raise NotFoundError("no experiments yet: start one with `smash search` or `smash demo`")
        return experiments[0]
    if value.strip().isdigit():  # '²' and '٣' too: refused as ids, not looked up as names
        return get_experiment(session, engine_parse_id(value, "experiment"))
    return find_experiment(session, value)


def parse_id(value: str, noun: str) -> int:
    """A positive integer id from the command line: ASCII digits (usage error otherwise)."""
    return engine_parse_id(value, noun)


def check_device(device: str, threads: int | None = None) -> None:
    """Refuse a device this machine lacks, or worker settings that cannot work, before
    anything is queued (loads torch, after every torch-free check)."""
    WorkerConfig(device=device, threads=threads)
    from engine.device import resolve_device

    resolve_device(device)


def jobs_by_id(session: Session, job_ids: Sequence[int]) -> list[Job]:
    """The given jobs in id order, read fresh."""
    query = select(Job).where(Job.id.in_(job_ids)).order_by(Job.id)
    return list(session.scalars(query.execution_options(populate_existing=True)))


def run_foreground(
    db: Database,
    job_ids: Sequence[int],
    *,
    device: str,
    threads: int | None,
    console: Console,
) -> None:
    """Run a worker in this process for the given jobs, with progress bars, until they end.

    Ctrl-C (or SIGTERM) checkpoints the running job and gives it back to the queue,
    where ``smash worker`` picks it up again.

    Raises:
        CliError: A job failed, was cancelled or paused.
        typer.Exit: 130 when interrupted.
    """
    from smash_tui.cli.render import JobProgress
    from smash_tui.runner.worker import Worker

    config = WorkerConfig(device=device, threads=threads, job_ids=tuple(job_ids), poll_s=1.0)
    with JobProgress(console) as progress:
        worker = Worker(db, config, observer=progress)
        restore = worker.install_signal_handlers()
        try:
            code = worker.run()
        finally:
            restore()
    if worker.log_path is not None:
        console.print(f"[dim]worker log: {worker.log_path}[/dim]")
    if worker.device_failure is not None:  # a sticky CUDA error: the job waits in the queue
        fail(f"{worker.device_failure}; `smash worker` resumes it")
    if code == EXIT_INTERRUPTED or worker.stopping:
        print_error(
            "interrupted: the running job was checkpointed and requeued; `smash worker` resumes it"
        )
        raise typer.Exit(EXIT_INTERRUPTED if code == EXIT_INTERRUPTED else 0)
    with db.session() as session:
        jobs = jobs_by_id(session, job_ids)
    for job in jobs:
        if job.state == "failed":
            fail(f"job {job.id} ({job.kind}) failed: {first_line(job.error, 'no reason given')}")
    for job in jobs:
        if job.state == "cancelled":
            reason = f": {first_line(job.error, 'no reason given')}" if job.error else ""
            fail(f"job {job.id} ({job.kind}) was cancelled{reason}")
        if job.state == "paused":
            fail(f"job {job.id} ({job.kind}) is paused; `smash resume {job.id}` queues it again")


def hand_over(
    db: Database, job_ids: Sequence[int], *, detach_: bool, device: str, threads: int | None, console: Console
) -> int | None:
    """Leave queued jobs to a background worker (``--detach``) or run them here until they end.

    Returns:
        The pid of a worker launched for them, or None.
    """
    if detach_:
        return detach(db, device=device, threads=threads, console=console)
    run_foreground(db, job_ids, device=device, threads=threads, console=console)
    return None


DetachOption = Annotated[
    bool, typer.Option("--detach", help="Queue the job(s) for a background worker and return at once.")
]


def detach(db: Database, *, device: str, threads: int | None, console: Console) -> int | None:
    """Make sure background workers will run the queued jobs (one per GPU on a GPU host).

    Returns:
        The pid of the first newly launched worker, or None when one was already alive.
    """
    from smash_tui.runner.launch import ensure_workers

    launched = ensure_workers(db, device=device, threads=threads)
    if not launched:
        console.print("a worker is alive for this database and will take the jobs")
        return None
    for worker in launched:
        console.print(
            f"launched a background worker (pid {worker.pid}; output in {worker.output_path})"
        )
    return launched[0].pid
