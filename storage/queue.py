"""The job queue: enqueue, claim, heartbeat, and the transitions a worker makes.

Job states::

    queued --claim--> running --finish--> done
      |  ^              |  |---fail-----> failed (also requeue_stale, the MAX_WORKERS_LOST-th time)
      |  |              |  |---mark_cancelled / requeue_stale with a cancel request--> cancelled
      |  +--requeue-----+  +---mark_paused / requeue_stale with a pause request-----> paused
      +--request_pause--> paused --resume--> queued
      +--request_cancel-> cancelled <--request_cancel-- paused
    failed, cancelled --retry--> queued (with the dependants its end cancelled)

A running job is never changed by the UI directly: ``request_pause`` and
``request_cancel`` (in ``storage.control``, with ``resume`` and ``retry``) set
``requested`` and the worker honours it between steps
(``heartbeat`` tells it). Every transition is one conditional ``UPDATE``, so
concurrent workers and UIs cannot both win. The transitions write the
activity-log events themselves; workers need not log them again.

A ``chunk`` job is a part of a search's scoring (``parent_id`` names the search, see
``storage.chunks``): any worker claims it while its search is queued or running, never
while the search is paused or over, and its routine transitions write no activity-log
line (a search of 500 architectures is one job to its user, not 60).

Jobs whose worker is lost (silent, or known dead) are taken back by
``storage.workers.requeue_stale`` and ``requeue_gone_workers``, with the liveness
code they depend on.

Functions that are a unit of work of their own (``claim``, ``heartbeat``, and the
registry and requeueing in ``storage.workers``) take the ``Database`` (or an engine) and commit. The others take the caller's ``Session`` and only flush.

Times that decide liveness (heartbeats, staleness) come from the database
server on PostgreSQL, so workers on hosts with skewed clocks agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    Engine,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from storage.clock import Executor, engine_of, now_sql
from storage.db import Database
from storage.errors import JobStateError, NotFoundError, StorageError, first_line
from storage.models import (
    ID_MAX,
    JOB_KINDS,
    Checkpoint,
    Event,
    Job,
    Retrain,
    Worker,
    utcnow,
)
from storage.records import get_experiment, get_job, refresh_retrain_states

jobs = Job.__table__
workers = Worker.__table__
events = Event.__table__
retrains = Retrain.__table__

# How many queued candidates a SQLite claim tries before looking again.
CLAIM_BATCH = 8
# A SQLite claim gives up after losing this many rounds in a row to other workers.
CLAIM_ROUNDS = 50
UNFINISHED_DEPENDENCY_STATES = ("queued", "paused")
# A job whose workers stop responding this many times fails instead of being requeued
# again: it most likely kills them (host out of memory, a crash in native code), and
# requeueing it forever would take down every worker that claims it.
MAX_WORKERS_LOST = 3


@dataclass(frozen=True)
class Control:
    """What a worker must do after a heartbeat."""

    request: Literal["none", "pause", "cancel"]  # what the user asked for, if anything
    taken_away: bool  # the job is no longer this worker's: stop without writing results

    @property
    def should_stop(self) -> bool:
        """True when the worker must stop the job now (after saving, unless taken away)."""
        return self.taken_away or self.request != "none"


_REQUESTS: dict[str | None, Literal["pause", "cancel"]] = {"pause": "pause", "cancel": "cancel"}


def log_event(
    executor: Executor,
    job_id: int,
    experiment_id: int,
    message: str,
    level: str = "info",
) -> None:
    executor.execute(
        insert(events).values(
            job_id=job_id,
            experiment_id=experiment_id,
            level=level,
            message=message,
            created_at=utcnow(),
        )
    )


def release_worker(executor: Executor, job_id: int) -> None:
    """The worker that ran a job it no longer holds has no current job."""
    executor.execute(
        update(workers).where(workers.c.current_job_id == job_id).values(current_job_id=None)
    )


def retrain_jobs_moved(executor: Executor, job_ids: Iterable[int]) -> None:
    """Keep retrains and the browser's ``retrain_state`` in step with retrain jobs that moved.

    A retrain job that ended without finishing (cancelled or failed, perhaps with no
    worker involved) closes the retrain it had started, so none stays open forever;
    its architecture then shows the state of its retrain jobs. Other kinds are ignored.
    """
    ids = list(job_ids)
    if not ids:
        return
    moved = executor.execute(
        select(jobs.c.id, jobs.c.state, jobs.c.params).where(
            jobs.c.id.in_(ids), jobs.c.kind == "retrain"
        )
    ).all()
    ended = [job_id for job_id, state, _ in moved if state in ("failed", "cancelled")]
    if ended:
        executor.execute(
            update(retrains)
            .where(retrains.c.job_id.in_(ended), retrains.c.finished_at.is_(None))
            .values(finished_at=now_sql(executor))
        )
    refresh_retrain_states(
        executor,
        [
            params["architecture_id"]
            for _, _, params in moved
            if isinstance(params, dict) and _is_id(params.get("architecture_id"))
        ],
    )


def _non_finite(value: Any, where: str = "params") -> str | None:
    """Where a JSON-able value holds NaN or an infinity, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}")
        if found is not None:
            return found
    return None


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= ID_MAX


def orphan_reason(dependency_id: int) -> str:
    """How the error of a job cancelled because its dependency ended begins."""
    return f"cancelled: job {dependency_id}, which it depends on, "


def cancel_orphans(executor: Executor) -> list[int]:
    """Cancel waiting jobs whose dependency failed or was cancelled, transitively,
    and the waiting chunks of searches that ended."""
    dependency = jobs.alias("dependency")
    cancelled: list[int] = []
    parent = jobs.alias("parent")
    executor.execute(
        update(jobs)
        .where(jobs.c.state.in_(UNFINISHED_DEPENDENCY_STATES), jobs.c.parent_id.is_not(None))
        .where(
            exists().where(
                parent.c.id == jobs.c.parent_id,
                parent.c.state.in_(("done", "failed", "cancelled")),
            )
        )
        .values(state="cancelled", requested=None, finished_at=now_sql(executor))
    )
    while True:
        orphans = executor.execute(
            select(jobs.c.id, jobs.c.experiment_id, dependency.c.id, dependency.c.state)
            .join(dependency, dependency.c.id == jobs.c.depends_on_id)
            .where(jobs.c.state.in_(UNFINISHED_DEPENDENCY_STATES))
            .where(dependency.c.state.in_(("failed", "cancelled")))
        ).all()
        if not orphans:
            retrain_jobs_moved(executor, cancelled)
            return cancelled
        for job_id, experiment_id, dependency_id, dependency_state in orphans:
            error = orphan_reason(dependency_id) + dependency_state
            result = executor.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state.in_(UNFINISHED_DEPENDENCY_STATES))
                .values(
                    state="cancelled",
                    requested=None,
                    error=error,
                    finished_at=now_sql(executor),
                )
            )
            if result.rowcount == 1:
                cancelled.append(job_id)
                log_event(executor, job_id, experiment_id, f"job {job_id} {error}", "warning")


def enqueue(
    session: Session,
    experiment_id: int,
    kind: str,
    params: dict[str, Any],
    *,
    priority: int = 0,
    depends_on: int | None = None,
    parent: int | None = None,
) -> Job:
    """Add a queued job.

    Args:
        session: The caller's session (flushed, not committed).
        experiment_id: The experiment the job works on.
        kind: train, score, search or retrain.
        params: Kind-specific parameters as a JSON-able dict.
        priority: Higher runs first; ties run in enqueue order.
        depends_on: Id of a job that must be done before this one may start.
        parent: The search a chunk job belongs to (``storage.chunks`` queues chunks).

    Raises:
        StorageError: An unknown kind, params with NaN or an infinity (JSON has neither),
            or a retrain job whose ``architecture_id`` is no id. Everything else about
            the params is the engine's to check (``smash_tui.submit`` before queueing,
            the worker again before running).
    """
    if kind not in JOB_KINDS:
        raise StorageError(f"unknown job kind {kind!r} (one of {', '.join(JOB_KINDS)})")
    where = _non_finite(params)
    if where is not None:
        # Stored JSON cannot hold it: it would become null and mean "the default".
        raise StorageError(f"job params hold a number that is not finite at {where}")
    if kind == "retrain" and "architecture_id" in params:
        # The browser's retrain state reads it as an integer column of every retrain job.
        architecture_id = params["architecture_id"]
        if not _is_id(architecture_id):
            raise StorageError(
                f"a retrain job's architecture_id must be an id from 1 to {ID_MAX}, "
                f"got {architecture_id!r:.60}"
            )
    get_experiment(session, experiment_id)
    if depends_on is not None:
        get_job(session, depends_on)
    if (kind == "chunk") != (parent is not None):
        raise StorageError("a chunk job, and only a chunk job, belongs to a parent search")
    job = Job(
        experiment_id=experiment_id,
        kind=kind,
        params=params,
        state="queued",
        priority=priority,
        depends_on_id=depends_on,
        parent_id=parent,
    )
    session.add(job)
    session.flush()
    if parent is None:
        log_event(session, job.id, experiment_id, f"job {job.id} ({kind}) queued")
    retrain_jobs_moved(session, [job.id])
    return job


def _claimable(
    kinds: Sequence[str] | None, job_ids: Sequence[int] | None = None, parent: int | None = None
) -> Any:
    dependency = jobs.alias("dependency")
    dependency_done = exists().where(
        dependency.c.id == jobs.c.depends_on_id, dependency.c.state == "done"
    )
    search = jobs.alias("search")
    # A chunk waits while its search is paused: pausing a search pauses its scoring.
    parent_active = exists().where(
        search.c.id == jobs.c.parent_id, search.c.state.in_(("queued", "running"))
    )
    query = (
        select(jobs.c.id)
        .where(jobs.c.state == "queued")
        .where(or_(jobs.c.depends_on_id.is_(None), dependency_done))
        .where(or_(jobs.c.parent_id.is_(None), parent_active))
        .order_by(jobs.c.priority.desc(), jobs.c.id)
    )
    if kinds is not None:
        query = query.where(jobs.c.kind.in_(kinds))
    if job_ids is not None:
        query = query.where(jobs.c.id.in_(job_ids))
    if parent is not None:
        query = query.where(jobs.c.parent_id == parent)
    return query


def _take(connection: Connection, job_id: int, worker_id: str) -> bool:
    now = now_sql(connection)
    result = connection.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state == "queued")
        .values(
            state="running",
            worker_id=worker_id,
            started_at=func.coalesce(jobs.c.started_at, now),
            heartbeat_at=now,
            attempts=jobs.c.attempts + 1,
            requested=None,
            error=None,
            finished_at=None,
        )
        .returning(jobs.c.kind, jobs.c.experiment_id, jobs.c.attempts)
    ).first()
    if result is None:
        return False
    kind, experiment_id, attempts = result
    connection.execute(
        update(workers)
        .where(workers.c.id == worker_id)
        .values(current_job_id=job_id, heartbeat_at=now)
    )
    if kind == "chunk" and attempts == 1:
        return True  # routine: only a chunk taken again after a lost worker is logged
    log_event(
        connection,
        job_id,
        experiment_id,
        f"job {job_id} ({kind}) started by worker {worker_id}, attempt {attempts}",
    )
    return True


def claim(
    engine_or_db: Engine | Database,
    worker_id: str,
    *,
    kinds: Iterable[str] | None = None,
    job_ids: Iterable[int] | None = None,
    parent: int | None = None,
) -> int | None:
    """Atomically take the best runnable queued job for a worker.

    The best job has the highest priority, then the lowest id, among queued
    jobs whose dependency (if any) is done. Jobs whose dependency failed or
    was cancelled are cancelled first, so nothing waits forever.

    Args:
        engine_or_db: The database.
        worker_id: The claiming worker's id (see register_worker).
        kinds: Only claim jobs of these kinds; None claims any.
        job_ids: Only claim among these jobs (a foreground run of one experiment's
            jobs); None claims any.
        parent: Only claim chunks of this search (its coordinator, while it waits).

    Returns:
        The claimed job id, now running and owned by the worker, or None.
    """
    engine = engine_of(engine_or_db)
    kind_list = None if kinds is None else tuple(kinds)
    for kind in kind_list or ():
        if kind not in JOB_KINDS:
            raise StorageError(f"unknown job kind {kind!r} (one of {', '.join(JOB_KINDS)})")
    id_list = None if job_ids is None else tuple(int(job_id) for job_id in job_ids)
    candidates_query = _claimable(kind_list, id_list, parent)
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            cancel_orphans(connection)
            job_id = connection.execute(
                candidates_query.limit(1).with_for_update(skip_locked=True, of=jobs)
            ).scalar()
            if job_id is None:
                return None
            taken = _take(connection, job_id, worker_id)
            assert taken, "a row locked FOR UPDATE cannot be taken by anyone else"
            return int(job_id)
    # SQLite has no row locks: read candidates outside a write transaction, then
    # compare-and-set each; whoever's UPDATE matches the queued row wins it.
    with engine.begin() as connection:
        cancel_orphans(connection)
    for _ in range(CLAIM_ROUNDS):
        with engine.connect() as connection:
            candidates = list(connection.execute(candidates_query.limit(CLAIM_BATCH)).scalars())
        if not candidates:
            return None
        for job_id in candidates:
            with engine.begin() as connection:
                if _take(connection, job_id, worker_id):
                    return int(job_id)
    return None


def heartbeat(
    engine_or_db: Engine | Database,
    job_id: int,
    worker_id: str,
    *,
    progress: float | None = None,
    progress_text: str | None = None,
    eta: float | None = None,
) -> Control:
    """Record that a worker is still running a job, with its progress.

    Args:
        engine_or_db: The database.
        job_id: The running job.
        worker_id: The worker that claimed it.
        progress: Fraction done, 0..1 (clamped); None leaves it unchanged.
        progress_text: Short text such as "step 120/900"; None leaves it unchanged.
        eta: Estimated seconds to completion; None leaves it unchanged.

    Returns:
        The user's request and whether the job was taken away from this worker.
    """
    engine = engine_of(engine_or_db)
    with engine.begin() as connection:
        values: dict[str, Any] = {"heartbeat_at": now_sql(connection)}
        if progress is not None:
            values["progress"] = min(max(float(progress), 0.0), 1.0)
        if progress_text is not None:
            values["progress_text"] = progress_text
        if eta is not None:
            values["eta_seconds"] = max(float(eta), 0.0)
        row = connection.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.worker_id == worker_id, jobs.c.state == "running")
            .values(**values)
            .returning(jobs.c.requested)
        ).first()
    if row is None:
        return Control(request="none", taken_away=True)
    return Control(request=_REQUESTS.get(row[0], "none"), taken_away=False)


def latest_checkpoint(session: Session, job_id: int) -> Checkpoint | None:
    """The job's checkpoint with the highest step, to resume from; None if it has none."""
    query = (
        select(Checkpoint)
        .where(Checkpoint.job_id == job_id)
        .order_by(Checkpoint.step.desc(), Checkpoint.id.desc())
        .limit(1)
    )
    return session.scalars(query).first()


# --- transitions on the caller's session --------------------------------------------------------


def fresh_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise NotFoundError(f"no job with id {job_id}")
    return job


def set_state(
    session: Session,
    job_id: int,
    from_states: Sequence[str],
    values: dict[str, Any],
    *conditions: Any,
) -> bool:
    result = session.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state.in_(from_states), *conditions)
        .values(**values)
    )
    return result.rowcount == 1


def refuse(job: Job, action: str, allowed: str) -> JobStateError:
    return JobStateError(f"cannot {action} job {job.id}: it is {job.state} ({allowed})")


def _worker_transition(
    session: Session,
    job_id: int,
    worker_id: str | None,
    values: dict[str, Any],
    action: str,
) -> Job:
    """Move a running job on behalf of its worker, checking the worker still owns it."""
    owner = [] if worker_id is None else [jobs.c.worker_id == worker_id]
    if not set_state(session, job_id, ["running"], values, *owner):
        job = fresh_job(session, job_id)
        if job.state == "running":
            raise JobStateError(
                f"cannot {action} job {job_id}: it is running on worker {job.worker_id}, "
                f"not {worker_id}"
            )
        raise refuse(job, action, "only running jobs can be")
    release_worker(session, job_id)
    retrain_jobs_moved(session, [job_id])
    return fresh_job(session, job_id)


def finish(session: Session, job_id: int, *, worker_id: str | None = None) -> Job:
    """Mark a running job done.

    Args:
        session: The caller's session.
        job_id: The job.
        worker_id: When given, refuse unless this worker still owns the job.
    """
    values = {
        "state": "done",
        "requested": None,
        "progress": 1.0,
        "eta_seconds": None,
        "finished_at": now_sql(session),
    }
    job = _worker_transition(session, job_id, worker_id, values, "finish")
    if job.kind != "chunk":
        log_event(session, job_id, job.experiment_id, f"job {job_id} ({job.kind}) done")
    return job


def fail(session: Session, job_id: int, error: str, *, worker_id: str | None = None) -> Job:
    """Mark a running job failed; jobs that depend on it are cancelled.

    Args:
        session: The caller's session.
        job_id: The job.
        error: Why, for people (first line shown in lists, the rest in details).
        worker_id: When given, refuse unless this worker still owns the job.
    """
    values = {
        "state": "failed",
        "requested": None,
        "error": error,
        "eta_seconds": None,
        "finished_at": now_sql(session),
    }
    job = _worker_transition(session, job_id, worker_id, values, "fail")
    summary = first_line(error, "no reason given")
    log_event(
        session, job_id, job.experiment_id, f"job {job_id} ({job.kind}) failed: {summary}", "error"
    )
    cancel_orphans(session)
    return job


def mark_paused(session: Session, job_id: int, *, worker_id: str | None = None) -> Job:
    """Record that a worker stopped a job on a pause request (after checkpointing)."""
    values = {"state": "paused", "requested": None, "worker_id": None, "eta_seconds": None}
    job = _worker_transition(session, job_id, worker_id, values, "pause")
    log_event(session, job_id, job.experiment_id, f"job {job_id} paused")
    return job


def mark_cancelled(session: Session, job_id: int, *, worker_id: str | None = None) -> Job:
    """Record that a worker stopped a job on a cancel request; dependants are cancelled."""
    values = {
        "state": "cancelled",
        "requested": None,
        "eta_seconds": None,
        "finished_at": now_sql(session),
    }
    job = _worker_transition(session, job_id, worker_id, values, "cancel")
    log_event(session, job_id, job.experiment_id, f"job {job_id} cancelled")
    cancel_orphans(session)
    return job


def requeue(session: Session, job_id: int, *, worker_id: str | None = None) -> Job:
    """Give a running job back to the queue (a worker shutting down on SIGTERM).

    A pending request wins: a job asked to pause becomes paused, one asked to
    cancel becomes cancelled.
    """
    job = fresh_job(session, job_id)
    state = {"cancel": "cancelled", "pause": "paused"}.get(job.requested or "", "queued")
    values: dict[str, Any] = {
        "state": state,
        "requested": None,
        "worker_id": None,
        "eta_seconds": None,
    }
    if state == "cancelled":
        values["finished_at"] = now_sql(session)
    request_unchanged = (
        jobs.c.requested.is_(None) if job.requested is None else jobs.c.requested == job.requested
    )
    owner = [] if worker_id is None else [jobs.c.worker_id == worker_id]
    if not set_state(session, job_id, ["running"], values, request_unchanged, *owner):
        job = fresh_job(session, job_id)
        if job.state == "running":
            # The request changed in between, or another worker owns it now.
            if worker_id is not None and job.worker_id != worker_id:
                raise JobStateError(
                    f"cannot requeue job {job_id}: it is running on worker {job.worker_id}, "
                    f"not {worker_id}"
                )
            return requeue(session, job_id, worker_id=worker_id)
        raise refuse(job, "requeue", "only running jobs can be")
    release_worker(session, job_id)
    retrain_jobs_moved(session, [job_id])
    job = fresh_job(session, job_id)
    log_event(
        session,
        job_id,
        job.experiment_id,
        f"job {job_id} {'requeued' if state == 'queued' else state}",
    )
    if state == "cancelled":
        cancel_orphans(session)
    return job
