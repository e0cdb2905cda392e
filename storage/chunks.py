"""Chunk jobs: the parts of a search's scoring that any worker claims.

A search job is a coordinator: it cuts its candidates into chunks, queues each as a
``chunk`` job whose ``parent_id`` is the search, and waits for their scores while its
own worker claims chunks too (``storage.queue.claim`` with the chunks' ids). Any other
worker claims them like any job; a worker that dies gives its chunk back through the
queue's usual ways (``storage.workers.requeue_stale``, ``requeue_gone_workers``). What the coordinator
asks of its chunks is here: queue one, see them all, stop them with the search, queue
again those an earlier attempt of the search left stopped. Every change of state is
one conditional ``UPDATE``, as in ``storage.queue``; functions take the caller's
``Session`` and only flush.

A chunk's ``params`` hold ``index`` (its number within the search) and ``hashes`` (its
architectures'), besides what the engine reads (``engine.params.ChunkParams``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import Session

from storage.clock import now_sql
from storage.errors import StorageError
from storage.models import Job, Score
from storage.queue import enqueue, jobs
from storage.records import get_job

# States of a chunk that an earlier attempt of its search stopped, which a new attempt
# queues again rather than cutting its architectures into new chunks.
STOPPED = ("paused", "cancelled", "failed")


@dataclass(frozen=True)
class ChunkInfo:
    """One chunk job of a search, as its coordinator sees it."""

    id: int  # the chunk job's id
    index: int  # its number within the search, from 0
    state: str  # queued, running, paused, done, failed or cancelled
    hashes: tuple[str, ...]  # its architectures' hashes
    worker_id: str | None  # the worker running it, if any
    error: str | None  # why it failed


def queue_chunk(session: Session, search_id: int, params: Mapping[str, Any]) -> Job:
    """Queue a chunk of a search; it runs before the queue's other jobs of the same priority.

    Args:
        session: The caller's session (flushed, not committed).
        search_id: The search job.
        params: The chunk's parameters, with ``index`` and ``hashes``.
    """
    search = get_job(session, search_id)
    if search.kind != "search":
        raise StorageError(f"job {search_id} is a {search.kind} job, not a search")
    return enqueue(
        session,
        search.experiment_id,
        "chunk",
        dict(params),
        priority=search.priority + 1,
        parent=search.id,
    )


def chunks_of(session: Session, search_id: int) -> list[ChunkInfo]:
    """Every chunk of a search, in index order, read fresh."""
    rows = session.execute(
        select(jobs.c.id, jobs.c.state, jobs.c.params, jobs.c.worker_id, jobs.c.error)
        .where(jobs.c.parent_id == search_id)
        .order_by(jobs.c.id)
    ).all()
    found = [
        ChunkInfo(
            id=ident,
            index=int(params.get("index", -1)),
            state=state,
            hashes=tuple(params.get("hashes", ())),
            worker_id=worker_id,
            error=error,
        )
        for ident, state, params, worker_id, error in rows
        if isinstance(params, dict)
    ]
    return sorted(found, key=lambda chunk: (chunk.index, chunk.id))


def chunk_states(session: Session, chunk_ids: Iterable[int]) -> dict[int, tuple[str, str | None]]:
    """(state, error) of each of the given chunk jobs."""
    ids = sorted(set(chunk_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(jobs.c.id, jobs.c.state, jobs.c.error).where(jobs.c.id.in_(ids))
    ).all()
    return {ident: (state, error) for ident, state, error in rows}


def queue_again(session: Session, search_id: int, chunk_ids: Iterable[int]) -> list[int]:
    """Queue again chunks of a search that an earlier attempt left paused, cancelled or failed.

    Returns:
        The ids of the chunks queued again.
    """
    ids = sorted(set(chunk_ids))
    if not ids:
        return []
    again = session.execute(
        update(jobs)
        .where(jobs.c.id.in_(ids), jobs.c.parent_id == search_id, jobs.c.state.in_(STOPPED))
        .values(
            state="queued",
            requested=None,
            worker_id=None,
            error=None,
            finished_at=None,
            eta_seconds=None,
            workers_lost=0,
        )
        .returning(jobs.c.id)
    ).scalars()
    return sorted(again)


def stop_chunks(session: Session, search_id: int, how: Literal["pause", "cancel"]) -> None:
    """Stop a search's unfinished chunks with it: waiting ones at once, running ones at
    their worker's next check (a running chunk keeps the scores it committed)."""
    state = "paused" if how == "pause" else "cancelled"
    ended = {"finished_at": now_sql(session)} if how == "cancel" else {}
    session.execute(
        update(jobs)
        .where(jobs.c.parent_id == search_id, jobs.c.state.in_(("queued", "paused")))
        .where(jobs.c.state != state)
        .values(state=state, requested=None, **ended)
    )
    session.execute(
        update(jobs)
        .where(jobs.c.parent_id == search_id, jobs.c.state == "running")
        .where(or_(jobs.c.requested.is_(None), jobs.c.requested != "cancel"))
        .values(requested=how)
    )


def search_tally(session: Session, search_id: int) -> tuple[int, float | None]:
    """How many architectures a search's chunks scored, and the lowest full error among them.

    A racing drop's partial error is no "best" (``storage.records.is_partial``).
    """
    full = or_(Score.method == "full", Score.method.like("full+%"))
    count, best = session.execute(
        select(func.count(Score.id), func.min(case((full, Score.error)))).where(
            Score.job_id == search_id
        )
    ).one()
    return int(count), None if best is None else float(best)
