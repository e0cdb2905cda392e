"""``smash worker``: claim queued jobs and run them until stopped."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from smash_tui.cli.common import DbOption, DeviceOption, ThreadsOption, command, open_db
from smash_tui.cli.render import plural
from smash_tui.runner.config import WorkerConfig
from storage.db import Database
from storage.queries import list_jobs

WORKER = WorkerConfig()


def _kinds(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(part.strip() for part in value.split(",") if part.strip())


@command
def worker(
    device: DeviceOption = "auto",
    once: Annotated[bool, typer.Option(help="Exit when no claimable job is left.")] = False,
    kinds: Annotated[
        str | None,
        typer.Option(help="Only these job kinds, comma-separated: train,score,search,retrain."),
    ] = None,
    poll: Annotated[float, typer.Option(help="Seconds between looks at an empty queue.")] = WORKER.poll_s,
    heartbeat: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = WORKER.heartbeat_s,
    stale_after: Annotated[
        float, typer.Option(help="Requeue running jobs silent for this many seconds.")
    ] = WORKER.stale_after_s,
    threads: ThreadsOption = None,
    ddp: Annotated[
        bool,
        typer.Option(
            "--ddp",
            help="Be one process of a torchrun launch that trains HyperNets data-parallel: "
            "torchrun --standalone --nproc_per_node N --no-python smash worker --ddp.",
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Claim queued jobs and run them until stopped (SIGTERM or Ctrl-C requeues the current one)."""
    # Settings first: a bad option is refused before torch loads or the database opens.
    config = WorkerConfig(
        device=device,
        kinds=_kinds(kinds),
        once=once,
        poll_s=poll,
        heartbeat_s=heartbeat,
        stale_after_s=stale_after,
        threads=threads,
    )
    database = open_db(db)
    if ddp:
        from smash_tui.runner.ddp import run_ddp_worker

        raise typer.Exit(run_ddp_worker(database, config))
    from smash_tui.cli.render import JobProgress
    from smash_tui.runner.worker import Worker

    interactive = sys.stderr.isatty()
    console = Console(stderr=True)
    progress = JobProgress(console) if interactive else None
    runner = Worker(database, config, observer=progress)
    restore = runner.install_signal_handlers()
    try:
        if progress is not None:
            with progress:
                code = runner.run()
        else:
            code = runner.run()
    finally:
        restore()
    if interactive:
        console.print(f"[dim]worker log: {runner.log_path}[/dim]")
    if once and runner.jobs_run == 0 and code == 0:
        typer.echo(_nothing_to_do(database), err=True)
    raise typer.Exit(code)


def _nothing_to_do(database: Database) -> str:
    """One line for a ``--once`` worker that found no job: what the queue holds instead."""
    with database.session() as session:
        states = [job.state for job in list_jobs(session, states=("queued", "running"))]
    queued, running = states.count("queued"), states.count("running")
    if not queued:
        elsewhere = f" ({plural(running, 'job')} running on other workers)" if running else ""
        return f"nothing to do: no job is queued{elsewhere}"
    verb, be = ("waits", "is") if queued == 1 else ("wait", "are")
    return (
        f"nothing to do: {plural(queued, 'queued job')} {verb} for another job to finish "
        f"or {be} of a kind this worker does not take"
    )
