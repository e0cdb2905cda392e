"""What users ask of the job queue: pause, resume, cancel and retry.

A running job is never changed here directly: ``request_pause`` and
``request_cancel`` set ``requested``, and its worker honours the request between
steps. Each function takes the caller's ``Session`` and only flushes; the state
machine is drawn in ``storage.queue``.
"""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from storage.clock import now_sql
from storage.errors import JobStateError
from storage.models import Job
from storage.queue import (
    cancel_orphans,
    fresh_job,
    jobs,
    log_event,
    orphan_reason,
    refuse,
    retrain_jobs_moved,
    set_state,
)


def _not_a_chunk(session: Session, job_id: int, action: str) -> None:
    """Refuse a user's action on a chunk: its search owns it (``storage.chunks``)."""
    job = fresh_job(session, job_id)
    if job.parent_id is not None:
        raise JobStateError(
            f"cannot {action} job {job_id}: it is a chunk of search job {job.parent_id}; "
            f"{action} the search instead"
        )


def request_pause(session: Session, job_id: int) -> Job:
    """Pause a job: a queued job at once, a running one when its worker next checks.

    Pausing a paused job does nothing.
    """
    _not_a_chunk(session, job_id, "pause")
    if set_state(session, job_id, ["queued"], {"state": "paused"}):
        job = fresh_job(session, job_id)
        log_event(session, job_id, job.experiment_id, f"job {job_id} paused")
        retrain_jobs_moved(session, [job_id])
        return job
    if set_state(session, job_id, ["running"], {"requested": "pause"}, jobs.c.requested.is_(None)):
        job = fresh_job(session, job_id)
        log_event(session, job_id, job.experiment_id, f"pause of job {job_id} requested")
        return job
    job = fresh_job(session, job_id)
    if job.state == "paused" or (job.state == "running" and job.requested == "pause"):
        return job
    if job.state == "running":
        raise JobStateError(f"cannot pause job {job_id}: it is being cancelled")
    raise refuse(job, "pause", "only queued or running jobs can be paused")


def resume(session: Session, job_id: int) -> Job:
    """Queue a paused job again, or withdraw a pause request a running job has not honoured yet.

    Resuming a queued job does nothing.
    """
    _not_a_chunk(session, job_id, "resume")
    if set_state(session, job_id, ["paused"], {"state": "queued"}):
        job = fresh_job(session, job_id)
        log_event(session, job_id, job.experiment_id, f"job {job_id} resumed")
        retrain_jobs_moved(session, [job_id])
        return job
    if set_state(session, job_id, ["running"], {"requested": None}, jobs.c.requested == "pause"):
        job = fresh_job(session, job_id)
        log_event(session, job_id, job.experiment_id, f"pause request of job {job_id} withdrawn")
        return job
    job = fresh_job(session, job_id)
    if job.state == "queued" or (job.state == "running" and job.requested is None):
        return job
    raise refuse(job, "resume", "only paused jobs can be resumed")


def request_cancel(session: Session, job_id: int) -> Job:
    """Cancel a job: a queued or paused job at once, a running one when its worker next checks.

    Cancelling a cancelled job does nothing. Jobs that depend on a cancelled
    job are cancelled too.
    """
    _not_a_chunk(session, job_id, "cancel")
    cancelled = {"state": "cancelled", "requested": None, "finished_at": now_sql(session)}
    if set_state(session, job_id, ["queued", "paused"], cancelled):
        job = fresh_job(session, job_id)
        log_event(session, job_id, job.experiment_id, f"job {job_id} cancelled")
        retrain_jobs_moved(session, [job_id])
        cancel_orphans(session)
        return job
    not_yet = or_(jobs.c.requested.is_(None), jobs.c.requested != "cancel")
    if set_state(session, job_id, ["running"], {"requested": "cancel"}, not_yet):
        job = fresh_job(session, job_id)
        log_event(session, job_id, job.experiment_id, f"cancel of job {job_id} requested")
        return job
    job = fresh_job(session, job_id)
    if job.state == "cancelled" or (job.state == "running" and job.requested == "cancel"):
        return job
    raise refuse(job, "cancel", "it has already ended")


def retry(session: Session, job_id: int) -> list[Job]:
    """Queue a failed or cancelled job again, with the jobs that were cancelled because it ended.

    The job keeps its progress and checkpoints, so the next worker resumes from the
    latest checkpoint (a failure that is deterministic, such as a loss that diverges
    at the same step, will recur). Its error, end time and count of lost workers are
    cleared. Jobs that wait for it and were cancelled only because it ended are
    queued again too, transitively; jobs the user cancelled stay cancelled. A job
    whose own dependency failed or was cancelled cannot run, so it is refused: retry
    the dependency instead.

    Returns:
        The jobs queued again, the retried job first.
    """
    _not_a_chunk(session, job_id, "retry")
    job = fresh_job(session, job_id)
    if job.state not in ("failed", "cancelled"):
        raise refuse(job, "retry", "only failed or cancelled jobs can be retried")
    if job.depends_on_id is not None:
        dependency = fresh_job(session, job.depends_on_id)
        if dependency.state in ("failed", "cancelled"):
            raise JobStateError(
                f"cannot retry job {job_id}: job {dependency.id}, which it waits for, "
                f"{dependency.state}; retry that one instead"
            )
    again = {
        "state": "queued",
        "requested": None,
        "worker_id": None,
        "error": None,
        "finished_at": None,
        "eta_seconds": None,
        "workers_lost": 0,
    }
    if not set_state(session, job_id, ["failed", "cancelled"], again):
        raise refuse(fresh_job(session, job_id), "retry", "it changed in the meantime")
    log_event(session, job_id, job.experiment_id, f"job {job_id} ({job.kind}) queued again (retry)")
    retried = [job_id]
    waiting = [job_id]
    while waiting:
        dependency_id = waiting.pop(0)
        cancelled_with_it = [
            jobs.c.depends_on_id == dependency_id,
            jobs.c.error.startswith(orphan_reason(dependency_id), autoescape=True),
        ]
        dependants = session.execute(
            select(jobs.c.id, jobs.c.experiment_id).where(
                jobs.c.state == "cancelled", *cancelled_with_it
            )
        ).all()
        for dependant_id, experiment_id in dependants:
            if set_state(session, dependant_id, ["cancelled"], again, *cancelled_with_it):
                log_event(
                    session,
                    dependant_id,
                    experiment_id,
                    f"job {dependant_id} queued again: job {dependency_id}, "
                    "which it waits for, was retried",
                )
                retried.append(dependant_id)
                waiting.append(dependant_id)
    retrain_jobs_moved(session, retried)
    return [fresh_job(session, ident) for ident in retried]
