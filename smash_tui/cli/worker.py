"""``smash worker``: claim queued jobs and run them until stopped."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from smash_tui.cli.common import (
    EXIT_USAGE,
    DbOption,
    DeviceOption,
    JsonOption,
    ThreadsOption,
    command,
    fail,
    open_db,
    print_error,
)
from smash_tui.cli.render import plural
from smash_tui.runner.config import WorkerConfig
from smash_tui.runner.launch import MAX_WORKERS
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
        typer.Option(help="Only these job kinds, comma-separated: train,score,search,retrain,chunk."),
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
    if runner.device_failure is not None:
        print_error(runner.device_failure)
    if once and runner.jobs_run == 0 and code == 0:
        typer.echo(_nothing_to_do(database), err=True)
    raise typer.Exit(code)


@command
def workers(
    gpus: Annotated[
        str | None,
        typer.Option(help="Start one worker per GPU: all, or GPU numbers such as 0,1,3."),
    ] = None,
    cpu: Annotated[
        int, typer.Option("--cpu", min=0, max=MAX_WORKERS, help="Start this many CPU workers.")
    ] = 0,
    threads: ThreadsOption = None,
    kinds: Annotated[
        str | None,
        typer.Option(help="Only these job kinds, comma-separated: train,score,search,retrain,chunk."),
    ] = None,
    json_: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Start detached workers on this host: one per GPU (--gpus) and --cpu N on the CPU.

    Each GPU worker sees its own GPU alone. Run it on every host that shares the
    database (and its files root, SMASH_FILES); stop a worker with SIGTERM (its job is
    checkpointed and requeued).
    """
    from smash_tui.runner.launch import launch_workers, parse_gpus, visible_gpus

    if gpus is None and not cpu:
        fail("say which workers to start: --gpus all|0,1,... and/or --cpu N", EXIT_USAGE)
    chosen: list[int] = []
    if gpus is not None:
        try:
            chosen = parse_gpus(gpus, len(visible_gpus()))
        except ValueError as exc:
            fail(str(exc), EXIT_USAGE)
    WorkerConfig(device="cpu", kinds=_kinds(kinds), threads=threads)  # refused before anything starts
    extra = ("--kinds", kinds) if kinds else ()
    database = open_db(db)
    launched = launch_workers(database, gpus=chosen, cpus=cpu, threads=threads, extra=extra)
    places = [f"GPU {gpu}" for gpu in chosen] + ["CPU"] * cpu
    if json_:
        typer.echo(
            json.dumps(
                [
                    {"pid": worker.pid, "device": place, "output": str(worker.output_path)}
                    for worker, place in zip(launched, places)
                ]
            )
        )
        return
    for worker, place in zip(launched, places):
        typer.echo(f"started a worker on {place} (pid {worker.pid}; output in {worker.output_path})")


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
