"""The worker registry: which worker processes exist, where, and whether they are alive.

A worker registers when it starts, sends a heartbeat every few seconds (even while
idle) and records its stop; the UI and ``smash info`` list the alive ones. A GPU
worker records which physical GPU it computes on when it registers (``GpuIdentity``)
and sends that GPU's memory and load with each heartbeat (``GpuReading``), so they
show for workers on any host.

A worker killed outright (``kill -9``, out of memory) records no stop, and its
heartbeat only goes stale after a timeout. On its own host it is known dead at once:
a running worker holds an exclusive lock on a file of its own under the database's
files folder (``workers/<id>.lock``), and the kernel releases the lock when the
process ends, however it ends. A lock file that anyone can lock belongs to a worker
that is gone (``gone_workers``). The lock, not the pid, is the test: a pid is reused
by later processes, and a process with the same host name may live in another PID
namespace (a container), where this host cannot see it. A worker whose lock file is
missing (another host, or another files folder) is judged by its heartbeat alone.

The running jobs of a lost worker go back to the queue here too (``requeue_stale`` for
a silent worker, ``requeue_gone_workers`` for one known dead), by the same transition
as the queue's others: one conditional UPDATE per job, so a heartbeat that lands in
between wins.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, insert, or_, select, update

try:
    import fcntl
except ImportError:  # Windows: no lock files; the heartbeat timeout decides there
    fcntl = None  # type: ignore[assignment]

from storage.clock import db_now, engine_of, now_sql
from storage.db import Database
from storage.errors import NotFoundError
from storage.models import Job, Worker
from storage.queue import (
    MAX_WORKERS_LOST,
    cancel_orphans,
    log_event,
    release_worker,
    retrain_jobs_moved,
)

workers = Worker.__table__
jobs = Job.__table__


@dataclass(frozen=True)
class GpuIdentity:
    """The physical GPU behind a worker's device, as the driver (nvidia-smi, NVML) names it."""

    index: int | None = None  # nvidia-smi's index (not the worker's cuda:N under CUDA_VISIBLE_DEVICES)
    uuid: str | None = None  # "GPU-..." (a MIG instance: "MIG-...")
    name: str | None = None  # e.g. "NVIDIA H100 80GB HBM3"


@dataclass(frozen=True)
class GpuReading:
    """A worker's GPU at one heartbeat."""

    memory_used_mib: float | None = None  # memory in use on the whole GPU, MiB
    memory_total_mib: float | None = None  # memory on the GPU, MiB
    utilization_pct: float | None = None  # busy share over the driver's last sample, percent


@dataclass(frozen=True)
class WorkerInfo:
    """A registered worker process, for display."""

    id: str  # "host:pid:uuid8"
    host: str  # host name it runs on
    pid: int  # its process id on that host
    device: str  # e.g. "cuda:0" or "cpu"
    started_at: datetime  # when it registered (UTC)
    heartbeat_at: datetime  # its last sign of life (UTC)
    current_job_id: int | None  # the job it is running, if any
    gpu_index: int | None = None  # its GPU as nvidia-smi numbers it (None: a CPU worker, or unknown)
    gpu_uuid: str | None = None  # its GPU's UUID
    gpu_name: str | None = None  # its GPU's name
    gpu_memory_used_mib: float | None = None  # at its last heartbeat
    gpu_memory_total_mib: float | None = None
    gpu_utilization_pct: float | None = None

    @property
    def gpu_reported(self) -> bool:
        """Whether its heartbeat carries its GPU's memory (workers before this did not send it)."""
        return self.gpu_memory_total_mib is not None


def register_worker(
    engine_or_db: Engine | Database,
    *,
    device: str,
    host: str | None = None,
    pid: int | None = None,
    gpu: GpuIdentity | None = None,
) -> str:
    """Register a worker process and return its id ("host:pid:uuid8").

    Args:
        engine_or_db: The database.
        device: What it computes on, e.g. "cuda:0" or "cpu".
        host: Host name; defaults to this host.
        pid: Process id; defaults to this process.
        gpu: The physical GPU behind ``device``, when it is one.
    """
    host = host or socket.gethostname()
    pid = os.getpid() if pid is None else pid
    worker_id = f"{host}:{pid}:{uuid.uuid4().hex[:8]}"
    gpu = gpu or GpuIdentity()
    with engine_of(engine_or_db).begin() as connection:
        now = db_now(connection)
        connection.execute(
            insert(workers).values(
                id=worker_id,
                host=host,
                pid=pid,
                device=device,
                started_at=now,
                heartbeat_at=now,
                gpu_index=gpu.index,
                gpu_uuid=gpu.uuid,
                gpu_name=gpu.name,
            )
        )
    return worker_id


def worker_heartbeat(
    engine_or_db: Engine | Database, worker_id: str, *, gpu: GpuReading | None = None
) -> None:
    """Record that a worker is alive (call it even while idle), with its GPU's figures if given."""
    values: dict[str, object] = {}
    if gpu is not None:
        values = {
            "gpu_memory_used_mib": gpu.memory_used_mib,
            "gpu_memory_total_mib": gpu.memory_total_mib,
            "gpu_utilization_pct": gpu.utilization_pct,
        }
    with engine_of(engine_or_db).begin() as connection:
        result = connection.execute(
            update(workers)
            .where(workers.c.id == worker_id)
            .values(heartbeat_at=now_sql(connection), **values)
        )
    if result.rowcount != 1:
        raise NotFoundError(f"no worker with id {worker_id}")


def set_current_job(engine_or_db: Engine | Database, worker_id: str, job_id: int) -> None:
    """Record the job a worker runs again (a search, after a chunk of it ran there)."""
    with engine_of(engine_or_db).begin() as connection:
        connection.execute(
            update(workers).where(workers.c.id == worker_id).values(current_job_id=job_id)
        )


def stop_worker(engine_or_db: Engine | Database, worker_id: str) -> None:
    """Record that a worker exited cleanly."""
    with engine_of(engine_or_db).begin() as connection:
        result = connection.execute(
            update(workers)
            .where(workers.c.id == worker_id)
            .values(stopped_at=now_sql(connection), current_job_id=None)
        )
    if result.rowcount != 1:
        raise NotFoundError(f"no worker with id {worker_id}")


_INFO_COLUMNS = (
    workers.c.id,
    workers.c.host,
    workers.c.pid,
    workers.c.device,
    workers.c.started_at,
    workers.c.heartbeat_at,
    workers.c.current_job_id,
    workers.c.gpu_index,
    workers.c.gpu_uuid,
    workers.c.gpu_name,
    workers.c.gpu_memory_used_mib,
    workers.c.gpu_memory_total_mib,
    workers.c.gpu_utilization_pct,
)


def alive_workers(engine_or_db: Engine | Database, within_s: float) -> list[WorkerInfo]:
    """Workers that have not stopped and sent a heartbeat in the last ``within_s`` seconds.

    Given the ``Database``, workers of this host whose process is gone (see
    ``gone_workers``) are not counted, however recent their last heartbeat.
    """
    with engine_of(engine_or_db).connect() as connection:
        cutoff = db_now(connection) - timedelta(seconds=within_s)
        rows = connection.execute(
            select(*_INFO_COLUMNS)
            .where(workers.c.stopped_at.is_(None), workers.c.heartbeat_at >= cutoff)
            .order_by(workers.c.started_at, workers.c.id)
        ).all()
    found = [WorkerInfo(*row) for row in rows]
    if isinstance(engine_or_db, Database):
        gone = {info.id for info in found if _gone_here(engine_or_db, info)}
        found = [info for info in found if info.id not in gone]
    return found


# --- liveness on this host -------------------------------------------------------------------


class WorkerLock:
    """The lock a running worker holds on its lock file until it stops or dies."""

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path = path
        self._handle = handle

    def release(self) -> None:
        """Remove the lock file and let the lock go (a clean stop)."""
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self._handle.close()


def lock_path(db: Database, worker_id: str) -> Path:
    """The lock file of a worker under the database's files folder."""
    return db.files_dir / "workers" / f"{re.sub(r'[^A-Za-z0-9._-]', '_', worker_id)}.lock"


def hold_worker_lock(db: Database, worker_id: str) -> WorkerLock | None:
    """Take the lock that tells other processes on this host that the worker lives.

    Returns:
        The held lock, or None where there can be none (no ``fcntl``, a files folder
        that cannot be written): the worker is then judged by its heartbeat alone.
    """
    if fcntl is None:
        return None
    path = lock_path(db, worker_id)
    staging = path.with_name(path.name + ".new")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(staging, "w", encoding="utf-8")  # noqa: SIM115 - held until release
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        # Renamed into place already locked: no one can find the file unlocked and
        # take a worker that is only starting for a dead one.
        os.replace(staging, path)
    except OSError:
        handle.close()
        staging.unlink(missing_ok=True)
        return None
    return WorkerLock(path, handle)


def _gone_here(db: Database, info: WorkerInfo) -> bool:
    """True when the worker ran on this host and its process has ended, however it ended."""
    if fcntl is None or info.host != socket.gethostname():
        return False
    try:
        handle = open(lock_path(db, info.id), encoding="utf-8")  # never creates it
    except OSError:
        return False  # no lock file: nothing is known here; the heartbeat decides
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: the worker lives
        return True  # nobody held it: its holder is gone (the lock goes with the handle)


def gone_workers(db: Database) -> list[WorkerInfo]:
    """Workers of this host not recorded as stopped whose process has ended (e.g. ``kill -9``)."""
    with db.engine.connect() as connection:
        rows = connection.execute(
            select(*_INFO_COLUMNS)
            .where(workers.c.stopped_at.is_(None), workers.c.host == socket.gethostname())
            .order_by(workers.c.started_at, workers.c.id)
        ).all()
    return [info for info in (WorkerInfo(*row) for row in rows) if _gone_here(db, info)]


def forget_lock(db: Database, worker_id: str) -> None:
    """Remove the lock file a dead worker left behind (its stop is recorded)."""
    try:
        lock_path(db, worker_id).unlink(missing_ok=True)
    except OSError:
        pass


# --- jobs of lost workers ---


def requeue_stale(
    engine_or_db: Engine | Database, timeout_s: float, max_lost: int = MAX_WORKERS_LOST
) -> list[int]:
    """Put running jobs whose worker stopped sending heartbeats back in the queue.

    A pending pause or cancel request is honoured instead (the job becomes
    paused or cancelled). The next worker resumes from
    ``latest_checkpoint``. A job that has now lost ``max_lost`` workers fails
    (and the jobs that depend on it are cancelled).

    Args:
        engine_or_db: The database.
        timeout_s: Seconds without a heartbeat after which a job is stale.
        max_lost: Lost workers after which a job fails instead of being requeued.

    Returns:
        Ids of the jobs taken away from their worker.
    """
    engine = engine_of(engine_or_db)
    with engine.begin() as connection:
        now = db_now(connection)
        cutoff = now - timedelta(seconds=timeout_s)
        stale_condition = or_(jobs.c.heartbeat_at.is_(None), jobs.c.heartbeat_at < cutoff)

        def why(worker_id: str | None, heartbeat_at: Any) -> str:
            silent = (
                "ever"
                if heartbeat_at is None
                else f"for {(now - heartbeat_at).total_seconds():.0f} s"
            )
            return f"no heartbeat from worker {worker_id} {silent} (timeout {timeout_s:g} s)"

        # Re-checked in each UPDATE: a heartbeat that lands in between wins.
        return take_from_lost_workers(connection, now, stale_condition, why, max_lost)


def requeue_gone_workers(db: Database, max_lost: int = MAX_WORKERS_LOST) -> list[int]:
    """Record the stop of this host's workers whose process is gone, and requeue their jobs now.

    A worker killed outright (``kill -9``, out of memory) records no stop; on its own
    host that is known at once (``gone_workers``), without waiting for
    its heartbeat to go stale. Its running jobs take the same way as in
    ``requeue_stale``, and count as having lost a worker.

    Returns:
        Ids of the jobs taken away from the gone workers.
    """
    gone = [info.id for info in gone_workers(db)]
    if not gone:
        return []
    with db.engine.begin() as connection:
        now = db_now(connection)
        connection.execute(
            update(workers)
            .where(workers.c.id.in_(gone), workers.c.stopped_at.is_(None))
            .values(stopped_at=now, current_job_id=None)
        )

        def why(worker_id: str | None, _heartbeat_at: Any) -> str:
            return f"worker {worker_id} is gone (its process ended without stopping)"

        taken = take_from_lost_workers(
            connection, now, jobs.c.worker_id.in_(gone), why, max_lost
        )
    for worker_id in gone:
        forget_lock(db, worker_id)
    return taken


def take_from_lost_workers(
    connection: Connection,
    now: Any,
    lost_condition: Any,
    why: Any,
    max_lost: int,
) -> list[int]:
    """Take running jobs matching ``lost_condition`` from their worker: the one transition.

    Each becomes queued again, or paused or cancelled when that was asked for, or failed
    once it has lost ``max_lost`` workers. ``why(worker_id, heartbeat_at)`` says in the
    activity log what was lost.
    """
    lost_jobs = connection.execute(
        select(
            jobs.c.id,
            jobs.c.experiment_id,
            jobs.c.worker_id,
            jobs.c.heartbeat_at,
            jobs.c.requested,
            jobs.c.workers_lost,
        ).where(jobs.c.state == "running", lost_condition)
    ).all()
    taken: list[int] = []
    for job_id, experiment_id, worker_id, heartbeat_at, requested, lost in lost_jobs:
        lost += 1
        again = "failed" if lost >= max_lost else "queued"
        state = {"cancel": "cancelled", "pause": "paused"}.get(requested or "", again)
        values: dict[str, Any] = {
            "state": state,
            "worker_id": None,
            "requested": None,
            "workers_lost": lost,
        }
        if state in ("cancelled", "failed"):
            values["finished_at"] = now
        if state == "failed":
            values["eta_seconds"] = None
            values["error"] = (
                f"its worker stopped responding {lost} times while running it "
                "(killed, out of memory or crashed?); see the worker logs"
            )
        result = connection.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == "running", lost_condition)
            .where(jobs.c.worker_id == worker_id)
            .values(**values)
        )
        if result.rowcount != 1:
            continue
        taken.append(job_id)
        release_worker(connection, job_id)
        retrain_jobs_moved(connection, [job_id])
        outcome = {"queued": "requeued", "failed": f"failed after {lost} lost workers"}
        log_event(
            connection,
            job_id,
            experiment_id,
            f"job {job_id} {outcome.get(state, state)}: {why(worker_id, heartbeat_at)}",
            "error" if state == "failed" else "warning",
        )
    if taken:
        cancel_orphans(connection)
    return taken
