"""Commands on the job queue: ``jobs``, ``pause``, ``resume``, ``cancel`` and ``retry``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.config import INT_MAX
from smash_tui.cli.common import (
    EXIT_USAGE,
    DbOption,
    ExperimentOption,
    JsonOption,
    command,
    fail,
    open_db,
    parse_id,
    resolve_experiment,
    stdout,
)
from smash_tui.cli.render import job_dict, jobs_table
from storage.control import request_cancel, request_pause
from storage.control import resume as resume_job
from storage.control import retry as retry_job
from storage.models import JOB_STATES, Experiment, Job
from storage.queries import list_jobs

JobArgument = Annotated[str, typer.Argument(help="Job id (see `smash jobs`).")]
_Result = TypeVar("_Result")


@command
def jobs(
    experiment: ExperimentOption = None,
    all_experiments: Annotated[
        bool, typer.Option("--all", "-a", help="Jobs of every experiment.")
    ] = False,
    state: Annotated[
        str | None,
        typer.Option(help=f"Only jobs in these states, comma-separated: {','.join(JOB_STATES)}."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=INT_MAX, help="Newest jobs to show.")
    ] = 50,
    json_: JsonOption = False,
    db: DbOption = None,
) -> None:
    """List jobs with their state, progress and errors (the newest experiment's by default)."""
    states = None
    if state is not None:
        states = tuple(part.strip() for part in state.split(",") if part.strip())
        if not states:
            fail(f"--state names no state (any of {', '.join(JOB_STATES)})", EXIT_USAGE)
        unknown = sorted(set(states) - set(JOB_STATES))
        if unknown:
            fail(
                f"unknown job state(s) {', '.join(unknown)} (one of {', '.join(JOB_STATES)})",
                EXIT_USAGE,
            )
    database = open_db(db)
    with database.session() as session:
        experiment_id = None
        if not all_experiments and (experiment is not None or _any_experiment(session)):
            experiment_id = resolve_experiment(session, experiment).id
        found = list_jobs(session, experiment_id, states=states)[-limit:]
    if json_:
        typer.echo(json.dumps([job_dict(job) for job in found]))
        return
    stdout().print(jobs_table(found))


def _any_experiment(session: Session) -> bool:
    return session.scalars(select(Experiment.id).limit(1)).first() is not None


def _report(job: Job, asked: str) -> None:
    if job.state == "running":
        stdout().print(
            f"job {job.id} ({job.kind}): {asked} requested; its worker acts on it after the current step"
        )
    else:
        stdout().print(f"job {job.id} ({job.kind}) is {job.state}")


def _apply(
    job: str, db: str | None, transition: Callable[[Session, int], _Result]
) -> _Result:
    """Run one queue transition on job JOB and commit it."""
    job_id = parse_id(job, "job")
    with open_db(db).session() as session:
        result = transition(session, job_id)
        session.commit()
    return result


@command
def pause(job: JobArgument, db: DbOption = None) -> None:
    """Pause a job: a queued one at once, a running one after its current step (checkpointed)."""
    _report(_apply(job, db, request_pause), "pause")


@command
def resume(job: JobArgument, db: DbOption = None) -> None:
    """Queue a paused job again (it resumes from its checkpoint)."""
    _report(_apply(job, db, resume_job), "resume")


@command
def cancel(job: JobArgument, db: DbOption = None) -> None:
    """Cancel a job (and the jobs waiting for it): at once, or after a running job's current step."""
    _report(_apply(job, db, request_cancel), "cancel")


@command
def retry(job: JobArgument, db: DbOption = None) -> None:
    """Queue a failed or cancelled job again (from its last checkpoint), with the jobs its end cancelled."""
    for found in _apply(job, db, retry_job):
        waits = f", after job {found.depends_on_id}" if found.depends_on_id is not None else ""
        stdout().print(f"job {found.id} ({found.kind}) is queued again{waits}")
