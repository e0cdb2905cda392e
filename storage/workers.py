"""The worker registry: which worker processes exist, where, and whether they are alive.

A worker registers when it starts, sends a heartbeat every few seconds (even while
idle) and records its stop; the UI and ``smash info`` list the alive ones.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, insert, select, update

from storage.clock import db_now, engine_of, now_sql
from storage.db import Database
from storage.errors import NotFoundError
from storage.models import Worker

workers = Worker.__table__


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


def register_worker(
    engine_or_db: Engine | Database,
    *,
    device: str,
    host: str | None = None,
    pid: int | None = None,
) -> str:
    """Register a worker process and return its id ("host:pid:uuid8").

    Args:
        engine_or_db: The database.
        device: What it computes on, e.g. "cuda:0" or "cpu".
        host: Host name; defaults to this host.
        pid: Process id; defaults to this process.
    """
    host = host or socket.gethostname()
    pid = os.getpid() if pid is None else pid
    worker_id = f"{host}:{pid}:{uuid.uuid4().hex[:8]}"
    with engine_of(engine_or_db).begin() as connection:
        now = db_now(connection)
        connection.execute(
            insert(workers).values(
                id=worker_id, host=host, pid=pid, device=device, started_at=now, heartbeat_at=now
            )
        )
    return worker_id


def worker_heartbeat(engine_or_db: Engine | Database, worker_id: str) -> None:
    """Record that a worker is alive (call it even while idle)."""
    with engine_of(engine_or_db).begin() as connection:
        result = connection.execute(
            update(workers).where(workers.c.id == worker_id).values(heartbeat_at=now_sql(connection))
        )
    if result.rowcount != 1:
        raise NotFoundError(f"no worker with id {worker_id}")


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


def alive_workers(engine_or_db: Engine | Database, within_s: float) -> list[WorkerInfo]:
    """Workers that have not stopped and sent a heartbeat in the last ``within_s`` seconds."""
    with engine_of(engine_or_db).connect() as connection:
        cutoff = db_now(connection) - timedelta(seconds=within_s)
        rows = connection.execute(
            select(
                workers.c.id,
                workers.c.host,
                workers.c.pid,
                workers.c.device,
                workers.c.started_at,
                workers.c.heartbeat_at,
                workers.c.current_job_id,
            )
            .where(workers.c.stopped_at.is_(None), workers.c.heartbeat_at >= cutoff)
            .order_by(workers.c.started_at, workers.c.id)
        ).all()
    return [WorkerInfo(*row) for row in rows]
