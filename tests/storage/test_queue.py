"""The job queue and worker registry, on both backends."""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from storage.control import request_cancel, request_pause, resume, retry
from storage.db import Database
from storage.errors import JobStateError, NotFoundError, StorageError
from storage.models import Event, Job, Worker, utcnow
from storage.queue import (
    MAX_WORKERS_LOST,
    claim,
    enqueue,
    fail,
    finish,
    heartbeat,
    latest_checkpoint,
    mark_cancelled,
    mark_paused,
    requeue,
)
from storage.records import (
    ArchitectureIn,
    add_architectures,
    add_checkpoint,
    get_architecture,
    get_retrain,
    start_retrain,
)
from storage.workers import (
    alive_workers,
    hold_worker_lock,
    lock_path,
    register_worker,
    requeue_gone_workers,
    requeue_stale,
    stop_worker,
    worker_heartbeat,
)


def _enqueue(db: Database, experiment_id: int, kind: str = "train", **kwargs: object) -> int:
    with db.session() as session:
        job = enqueue(session, experiment_id, kind, {"steps": 10}, **kwargs)  # type: ignore[arg-type]
        session.commit()
        return job.id


def _job(db: Database, job_id: int) -> Job:
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _events(db: Database, job_id: int) -> list[str]:
    with db.session() as session:
        query = select(Event.message).where(Event.job_id == job_id).order_by(Event.id)
        return list(session.scalars(query))


def _age_heartbeat(db: Database, job_id: int, seconds: float) -> None:
    with db.session() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )
        session.commit()


def test_claim_order_priority_then_id(db: Database, experiment_id: int) -> None:
    low = _enqueue(db, experiment_id, priority=0)
    high = _enqueue(db, experiment_id, priority=5)
    high_later = _enqueue(db, experiment_id, priority=5)
    worker = register_worker(db, device="cpu")
    assert [claim(db, worker) for _ in range(4)] == [high, high_later, low, None]
    job = _job(db, high)
    assert (job.state, job.worker_id, job.attempts) == ("running", worker, 1)
    assert job.started_at is not None and job.heartbeat_at is not None
    assert job.started_at.tzinfo is not None


def test_claim_filters_kinds(db: Database, experiment_id: int) -> None:
    train = _enqueue(db, experiment_id, "train")
    retrain = _enqueue(db, experiment_id, "retrain")
    assert claim(db, "w", kinds=["retrain"]) == retrain
    assert claim(db, "w", kinds=["retrain", "score"]) is None
    assert claim(db, "w") == train
    with pytest.raises(StorageError, match="unknown job kind 'trian'"):
        claim(db, "w", kinds=["trian"])


def test_enqueue_validates(db: Database, experiment_id: int) -> None:
    with db.session() as session:
        with pytest.raises(StorageError, match="unknown job kind 'fly'"):
            enqueue(session, experiment_id, "fly", {})
        with pytest.raises(NotFoundError, match="no experiment with id 999"):
            enqueue(session, 999, "train", {})
        with pytest.raises(NotFoundError, match="no job with id 999"):
            enqueue(session, experiment_id, "search", {}, depends_on=999)
        # JSON has no NaN: stored, it would turn into null, which means "the default".
        with pytest.raises(StorageError, match="not finite at params.retrain.lr$"):
            enqueue(session, experiment_id, "retrain", {"retrain": {"lr": float("nan")}})
        with pytest.raises(StorageError, match=r"not finite at params.ids.1$"):
            enqueue(session, experiment_id, "score", {"ids": [1, float("-inf")]})
        # The browser reads a retrain job's architecture_id as an integer column.
        for bad in (2**31, 10**30, 0, True, "1", None):
            with pytest.raises(StorageError, match="architecture_id must be an id from 1 to"):
                enqueue(session, experiment_id, "retrain", {"architecture_id": bad})


def test_dependency_waits_until_done(db: Database, experiment_id: int) -> None:
    train = _enqueue(db, experiment_id, "train")
    search = _enqueue(db, experiment_id, "search", depends_on=train, priority=10)
    assert claim(db, "w") == train  # the search outranks it but must wait
    assert claim(db, "w") is None
    with db.session() as session:
        finish(session, train, worker_id="w")
        session.commit()
    assert claim(db, "w") == search


def test_failed_dependency_cancels_dependants_transitively(
    db: Database, experiment_id: int
) -> None:
    train = _enqueue(db, experiment_id, "train")
    search = _enqueue(db, experiment_id, "search", depends_on=train)
    retrain = _enqueue(db, experiment_id, "retrain", depends_on=search)
    assert claim(db, "w") == train
    with db.session() as session:
        fail(session, train, "CUDA out of memory\ntraceback...", worker_id="w")
        session.commit()
    for job_id, reason in ((search, f"job {train}"), (retrain, f"job {search}")):
        job = _job(db, job_id)
        assert job.state == "cancelled"
        assert job.error is not None and reason in job.error
    assert "failed" in (_job(db, search).error or "")
    assert claim(db, "w") is None
    assert any("failed: CUDA out of memory" in line for line in _events(db, train))


def test_claim_sweeps_dependants_of_a_cancelled_job(db: Database, experiment_id: int) -> None:
    train = _enqueue(db, experiment_id, "train")
    search = _enqueue(db, experiment_id, "search", depends_on=train)
    # Cancel behind the API's back: claim itself must still not let the search wait forever.
    with db.session() as session:
        session.execute(update(Job).where(Job.id == train).values(state="cancelled"))
        session.commit()
    assert claim(db, "w") is None
    assert _job(db, search).state == "cancelled"


def test_pause_resume_cancel_of_waiting_jobs(db: Database, experiment_id: int) -> None:
    job_id = _enqueue(db, experiment_id)
    with db.session() as session:
        assert request_pause(session, job_id).state == "paused"
        assert request_pause(session, job_id).state == "paused"  # idempotent
        session.commit()
    assert claim(db, "w") is None  # paused jobs are not claimed
    with db.session() as session:
        assert resume(session, job_id).state == "queued"
        assert resume(session, job_id).state == "queued"  # idempotent
        job = request_cancel(session, job_id)
        assert (job.state, job.finished_at is not None) == ("cancelled", True)
        assert request_cancel(session, job_id).state == "cancelled"
        with pytest.raises(JobStateError, match=f"cannot resume job {job_id}: it is cancelled"):
            resume(session, job_id)
        with pytest.raises(JobStateError, match="it is cancelled"):
            request_pause(session, job_id)
        session.commit()
    assert claim(db, "w") is None


def test_pause_and_cancel_requests_reach_the_running_worker(
    db: Database, experiment_id: int
) -> None:
    job_id = _enqueue(db, experiment_id)
    assert claim(db, "w") == job_id
    control = heartbeat(db, job_id, "w", progress=0.25, progress_text="step 3/10", eta=12.0)
    assert (control.request, control.taken_away, control.should_stop) == ("none", False, False)
    job = _job(db, job_id)
    assert (job.progress, job.progress_text, job.eta_seconds) == (0.25, "step 3/10", 12.0)

    with db.session() as session:
        job = request_pause(session, job_id)
        assert (job.state, job.requested) == ("running", "pause")
        request_pause(session, job_id)  # a second click changes nothing
        session.commit()
    assert _events(db, job_id).count(f"pause of job {job_id} requested") == 1
    assert heartbeat(db, job_id, "w").request == "pause"
    with db.session() as session:
        assert resume(session, job_id).requested is None  # withdrawn before the worker saw it
        session.commit()
    assert heartbeat(db, job_id, "w").request == "none"

    with db.session() as session:
        request_pause(session, job_id)
        session.commit()
    with db.session() as session:
        job = mark_paused(session, job_id, worker_id="w")
        assert (job.state, job.requested, job.worker_id) == ("paused", None, None)
        resume(session, job_id)
        session.commit()
    assert claim(db, "w2") == job_id
    assert _job(db, job_id).attempts == 2

    with db.session() as session:
        assert request_cancel(session, job_id).requested == "cancel"
        assert request_cancel(session, job_id).requested == "cancel"
        with pytest.raises(JobStateError, match="being cancelled"):
            request_pause(session, job_id)
        session.commit()
    control = heartbeat(db, job_id, "w2")
    assert (control.request, control.should_stop) == ("cancel", True)
    with db.session() as session:
        job = mark_cancelled(session, job_id, worker_id="w2")
        assert (job.state, job.requested) == ("cancelled", None)
        session.commit()


def test_illegal_transitions(db: Database, experiment_id: int) -> None:
    job_id = _enqueue(db, experiment_id)
    with db.session() as session:
        with pytest.raises(JobStateError, match=f"cannot finish job {job_id}: it is queued"):
            finish(session, job_id)
        with pytest.raises(JobStateError, match="cannot fail"):
            fail(session, job_id, "x")
        with pytest.raises(NotFoundError, match="no job with id 999"):
            request_pause(session, 999)
    assert claim(db, "w") == job_id
    with db.session() as session:
        with pytest.raises(JobStateError, match="running on worker w, not intruder"):
            finish(session, job_id, worker_id="intruder")
        finish(session, job_id, worker_id="w")
        session.commit()
    with db.session() as session:
        for action in (request_pause, request_cancel, resume):
            with pytest.raises(JobStateError, match="it is done"):
                action(session, job_id)
        with pytest.raises(JobStateError, match="it is done"):
            requeue(session, job_id)
    job = _job(db, job_id)
    assert (job.state, job.progress, job.finished_at is not None) == ("done", 1.0, True)


def test_requeue_on_shutdown_honours_requests(db: Database, experiment_id: int) -> None:
    plain = _enqueue(db, experiment_id)
    asked_to_pause = _enqueue(db, experiment_id)
    assert claim(db, "w") == plain
    assert claim(db, "w") == asked_to_pause
    with db.session() as session:
        request_pause(session, asked_to_pause)
        job = requeue(session, plain, worker_id="w")
        assert (job.state, job.worker_id) == ("queued", None)
        assert requeue(session, asked_to_pause, worker_id="w").state == "paused"
        session.commit()
    assert claim(db, "w2") == plain


def test_stale_job_is_requeued_and_reclaimable(db: Database, experiment_id: int) -> None:
    stale = _enqueue(db, experiment_id)
    fresh = _enqueue(db, experiment_id)
    assert claim(db, "dead") == stale
    assert claim(db, "alive") == fresh
    with db.session() as session:
        add_checkpoint(session, stale, 100, "ckpt/100.pt")
        add_checkpoint(session, stale, 200, "ckpt/200.pt")
        session.commit()
    _age_heartbeat(db, stale, 600)
    assert requeue_stale(db, timeout_s=300) == [stale]
    assert requeue_stale(db, timeout_s=300) == []
    job = _job(db, stale)
    assert (job.state, job.worker_id) == ("queued", None)
    assert _job(db, fresh).state == "running"
    assert any("no heartbeat from worker dead" in line for line in _events(db, stale))

    # The old worker learns it lost the job; a new one resumes from the last checkpoint.
    assert heartbeat(db, stale, "dead").taken_away
    assert claim(db, "new") == stale
    assert _job(db, stale).attempts == 2
    with db.session() as session:
        checkpoint = latest_checkpoint(session, stale)
        assert checkpoint is not None and checkpoint.step == 200
        with pytest.raises(JobStateError, match="running on worker new, not dead"):
            finish(session, stale, worker_id="dead")
        finish(session, stale, worker_id="new")
        session.commit()


def test_a_job_that_keeps_losing_its_worker_fails(db: Database, experiment_id: int) -> None:
    job_id = _enqueue(db, experiment_id)
    after = _enqueue(db, experiment_id, "search", depends_on=job_id)
    for lost in range(1, MAX_WORKERS_LOST + 1):
        worker = f"killed-{lost}"
        assert claim(db, worker, kinds=["train"]) == job_id
        if lost == 2:
            # A worker shut down politely (SIGTERM) gives the job back: not a lost worker.
            with db.session() as session:
                requeue(session, job_id, worker_id=worker)
                session.commit()
            assert claim(db, worker, kinds=["train"]) == job_id
        _age_heartbeat(db, job_id, 600)
        assert requeue_stale(db, timeout_s=300) == [job_id]
        job = _job(db, job_id)
        assert job.workers_lost == lost
        assert job.state == ("failed" if lost == MAX_WORKERS_LOST else "queued")
    assert job.attempts == MAX_WORKERS_LOST + 1 and job.finished_at is not None
    assert job.error is not None and job.error.startswith(
        f"its worker stopped responding {MAX_WORKERS_LOST} times while running it"
    )
    assert _events(db, job_id)[-1].startswith(f"job {job_id} failed after 3 lost workers")
    assert claim(db, "next") is None  # neither it nor the job waiting on it runs again
    assert _job(db, after).state == "cancelled"


def test_stale_job_with_cancel_request_is_cancelled(db: Database, experiment_id: int) -> None:
    job_id = _enqueue(db, experiment_id)
    assert claim(db, "dead") == job_id
    with db.session() as session:
        request_cancel(session, job_id)
        session.commit()
    _age_heartbeat(db, job_id, 600)
    assert requeue_stale(db, timeout_s=60) == [job_id]
    assert _job(db, job_id).state == "cancelled"


def _architecture(db: Database, experiment_id: int, name: str) -> int:
    with db.session() as session:
        row = ArchitectureIn(name, json.dumps({"name": name}), 1000, 10**6, 3, 4)
        ident = add_architectures(session, experiment_id, [row])[name]
        session.commit()
        return ident


def _retrain_job(db: Database, experiment_id: int, architecture_id: int, **kwargs: object) -> int:
    with db.session() as session:
        params = {"architecture_id": architecture_id, "retrain": {"epochs": 2}}
        job = enqueue(session, experiment_id, "retrain", params, **kwargs)  # type: ignore[arg-type]
        session.commit()
        return job.id


def _retrain_state(db: Database, architecture_id: int) -> str | None:
    with db.session() as session:
        return get_architecture(session, architecture_id).retrain_state


def test_retrain_state_follows_retrain_jobs_that_end_without_a_worker(
    db: Database, experiment_id: int
) -> None:
    # Cancelled while queued: the browser must not show "queued" forever.
    waiting = _architecture(db, experiment_id, "waiting")
    job_id = _retrain_job(db, experiment_id, waiting)
    assert _retrain_state(db, waiting) == "queued"
    with db.session() as session:
        request_cancel(session, job_id)
        session.commit()
    assert _retrain_state(db, waiting) is None

    # Paused halfway (its retrain row stays open to be resumed), then cancelled: the row closes.
    paused = _architecture(db, experiment_id, "paused")
    job_id = _retrain_job(db, experiment_id, paused)
    assert claim(db, "w", kinds=["retrain"]) == job_id
    with db.session() as session:
        retrain_id = start_retrain(session, paused, job_id, epochs=2).id
        request_pause(session, job_id)
        mark_paused(session, job_id, worker_id="w")
        session.commit()
    assert _retrain_state(db, paused) == "queued"
    with db.session() as session:
        request_cancel(session, job_id)
        session.commit()
        assert get_retrain(session, retrain_id).finished_at is not None
    assert _retrain_state(db, paused) is None

    # Its worker died three times: failed, and the open retrain row is closed.
    crashing = _architecture(db, experiment_id, "crashing")
    job_id = _retrain_job(db, experiment_id, crashing)
    for lost in range(1, MAX_WORKERS_LOST + 1):
        assert claim(db, f"dead-{lost}", kinds=["retrain"]) == job_id
        if lost == 1:
            with db.session() as session:
                retrain_id = start_retrain(session, crashing, job_id, epochs=2).id
                session.commit()
        _age_heartbeat(db, job_id, 600)
        assert requeue_stale(db, timeout_s=60) == [job_id]
        assert _retrain_state(db, crashing) == ("failed" if lost == MAX_WORKERS_LOST else "queued")
    with db.session() as session:
        assert get_retrain(session, retrain_id).finished_at is not None

    # Cancelled because the job it waited for failed; a second, running retrain wins.
    orphan = _architecture(db, experiment_id, "orphan")
    train_id = _enqueue(db, experiment_id)
    _retrain_job(db, experiment_id, orphan, depends_on=train_id)
    other = _retrain_job(db, experiment_id, orphan)
    assert claim(db, "w", kinds=["retrain"]) == other
    assert claim(db, "w", kinds=["train"]) == train_id
    with db.session() as session:
        fail(session, train_id, "boom", worker_id="w")
        session.commit()
    assert _retrain_state(db, orphan) == "running"
    with db.session() as session:
        request_cancel(session, other)
        mark_cancelled(session, other, worker_id="w")
        session.commit()
    assert _retrain_state(db, orphan) is None


def test_retry_requeues_the_job_and_the_dependants_its_end_cancelled(
    db: Database, experiment_id: int
) -> None:
    train_id = _enqueue(db, experiment_id)
    search_id = _enqueue(db, experiment_id, "search", depends_on=train_id)
    architecture = _architecture(db, experiment_id, "picked")
    retrain_id = _retrain_job(db, experiment_id, architecture, depends_on=search_id)
    user_cancelled = _enqueue(db, experiment_id, "score", depends_on=train_id)
    with db.session() as session:
        request_cancel(session, user_cancelled)
        session.commit()
    for lost in range(1, MAX_WORKERS_LOST + 1):
        assert claim(db, f"dead-{lost}", kinds=["train"]) == train_id
        _age_heartbeat(db, train_id, 600)
        requeue_stale(db, timeout_s=60)
    states = [_job(db, job_id).state for job_id in (train_id, search_id, retrain_id)]
    assert states == ["failed", "cancelled", "cancelled"]
    assert _retrain_state(db, architecture) is None

    # A job waiting for a failed one cannot run: retry the failed one instead.
    waiting_for_failed = f"retry job {search_id}: job {train_id}, which it waits for, failed"
    with db.session() as session, pytest.raises(JobStateError, match=waiting_for_failed):
        retry(session, search_id)

    with db.session() as session:
        retried = retry(session, train_id)
        session.commit()
    assert [job.id for job in retried] == [train_id, search_id, retrain_id]
    for job_id in (train_id, search_id, retrain_id):
        job = _job(db, job_id)
        assert (job.state, job.error, job.finished_at, job.workers_lost) == ("queued", None, None, 0)
    assert _job(db, user_cancelled).state == "cancelled"  # the user's own cancel stands
    assert _retrain_state(db, architecture) == "queued"
    assert _events(db, train_id)[-1] == f"job {train_id} (train) queued again (retry)"
    assert _events(db, retrain_id)[-1] == (
        f"job {retrain_id} queued again: job {search_id}, which it waits for, was retried"
    )
    # It runs again: the claim takes the retried job and its dependants in order.
    assert claim(db, "alive", kinds=["train"]) == train_id
    assert _job(db, train_id).attempts == MAX_WORKERS_LOST + 1

    # Only ended jobs can be retried; a cancelled one can.
    with db.session() as session:
        with pytest.raises(JobStateError, match=f"cannot retry job {train_id}: it is running"):
            retry(session, train_id)
        with pytest.raises(JobStateError, match=f"cannot retry job {search_id}: it is queued"):
            retry(session, search_id)
        with pytest.raises(NotFoundError):
            retry(session, 999_999)
        assert [job.id for job in retry(session, user_cancelled)] == [user_cancelled]
        session.commit()
    assert _job(db, user_cancelled).state == "queued"


def test_worker_registry(db: Database, experiment_id: int) -> None:
    first = register_worker(db, device="cuda:0")
    second = register_worker(db, device="cpu", host="other", pid=42)
    assert second.startswith("other:42:")
    assert [w.id for w in alive_workers(db, within_s=60)] == [first, second]
    job_id = _enqueue(db, experiment_id)
    assert claim(db, first) == job_id
    (info,) = [w for w in alive_workers(db, within_s=60) if w.id == first]
    assert (info.current_job_id, info.device) == (job_id, "cuda:0")
    with db.session() as session:
        finish(session, job_id, worker_id=first)
        session.commit()
    assert [w.current_job_id for w in alive_workers(db, within_s=60)] == [None, None]

    stop_worker(db, second)
    assert [w.id for w in alive_workers(db, within_s=60)] == [first]
    with db.engine.begin() as connection:
        connection.execute(
            update(Job.metadata.tables["workers"]).values(
                heartbeat_at=utcnow() - timedelta(seconds=120)
            )
        )
    assert alive_workers(db, within_s=60) == []
    worker_heartbeat(db, first)
    assert [w.id for w in alive_workers(db, within_s=60)] == [first]
    with pytest.raises(NotFoundError, match="no worker with id nobody"):
        worker_heartbeat(db, "nobody")


def test_a_worker_whose_process_ended_is_dead_at_once(db: Database, experiment_id: int) -> None:
    dead = register_worker(db, device="cpu")
    dead_lock = hold_worker_lock(db, dead)
    alive = register_worker(db, device="cpu")
    alive_lock = hold_worker_lock(db, alive)
    unknown = register_worker(db, device="cpu")  # no lock file: an older smash, another folder
    elsewhere = register_worker(db, device="cpu", host="other-host", pid=os.getpid())
    lock_path(db, elsewhere).touch()  # an unlocked file, but not this host's worker
    assert dead_lock is not None and alive_lock is not None and dead_lock.path.is_file()
    jobs = {worker: _enqueue(db, experiment_id) for worker in (dead, alive, unknown, elsewhere)}
    for worker, job_id in jobs.items():
        assert claim(db, worker, job_ids=[job_id]) == job_id
    assert requeue_gone_workers(db) == []  # every lock is held

    # The process ends (kill -9 included): the kernel lets the lock go, the file stays.
    dead_lock._handle.close()
    # Its heartbeat is fresh, yet it no longer counts as alive, and its job is taken now.
    assert [w.id for w in alive_workers(db, within_s=60)] == [alive, unknown, elsewhere]
    assert requeue_gone_workers(db) == [jobs[dead]]
    assert requeue_gone_workers(db) == []
    job = _job(db, jobs[dead])
    assert (job.state, job.worker_id, job.workers_lost) == ("queued", None, 1)
    assert _events(db, jobs[dead])[-1] == (
        f"job {jobs[dead]} requeued: worker {dead} is gone (its process ended without stopping)"
    )
    assert not dead_lock.path.exists()
    with db.session() as session:
        assert session.get(Worker, dead).stopped_at is not None
        assert session.get(Worker, alive).stopped_at is None
    for worker in (alive, unknown, elsewhere):  # left to their heartbeats
        assert (_job(db, jobs[worker]).state, _job(db, jobs[worker]).worker_id) == ("running", worker)

    # A clean stop removes the file; a later worker of the same host is not fooled by it.
    alive_lock.release()
    assert not alive_lock.path.exists()
    assert requeue_gone_workers(db) == []


def test_two_processes_race_for_200_jobs(
    db: Database, experiment_id: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_ids = []
    with db.session() as session:
        for index in range(200):
            job_ids.append(enqueue(session, experiment_id, "score", {"index": index}).id)
        session.commit()

    # A top-level module name, importable by the spawned children (they inherit
    # sys.path) whatever name pytest gave this test module.
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    race_worker = importlib.import_module("race_worker")
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    outputs = [tmp_path / f"claimed-{index}.json" for index in range(2)]
    processes = [
        context.Process(target=race_worker.drain, args=(db.url, start, str(out))) for out in outputs
    ]
    for process in processes:
        process.start()
    start.set()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0, f"racer exited with {process.exitcode}"

    claimed = [json.loads(out.read_text()) for out in outputs]
    assert all(claimed), f"one racer claimed nothing: {[len(c) for c in claimed]}"
    assert not set(claimed[0]) & set(claimed[1]), "a job was claimed twice"
    assert sorted(claimed[0] + claimed[1]) == sorted(job_ids)
    with db.session() as session:
        states = {
            state: count
            for state, count in session.execute(select(Job.state, func.count()).group_by(Job.state))
        }
        attempts = set(session.scalars(select(Job.attempts)))
    assert states == {"done": 200}
    assert attempts == {1}
