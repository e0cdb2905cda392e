"""The worker: failures, several workers side by side, pause/resume/cancel, SIGTERM, kill -9."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select

from engine.plans import SearchRequest
from engine.spaces import PRESETS
from smash_tui.cli.search import create_search
from smash_tui.runner.launch import ALIVE_WITHIN_S
from smash_tui.runner.worker import Worker, WorkerConfig
from smash_tui.submit import queue_retrain, queue_score
from storage.db import Database, normalize_url, open_database
from storage.models import Architecture, Checkpoint, Event, Job, Metric, Retrain, Score
from storage.queue import enqueue
from storage.workers import alive_workers
from tests.cli.support import (
    retrain_args,
    retrain_experiment,
    smash,
    start_worker,
    stop,
    wait_for,
)


@contextmanager
def _opened(db: Database | str) -> Iterator[Database]:
    """The database itself, or a short-lived one for a URL.

    Tests that run CLI commands in this process read through short-lived handles:
    a second engine on the same SQLite file, closed while the first stays open,
    checkpoints and deletes the WAL under the first, which then misses what other
    processes write.
    """
    if isinstance(db, Database):
        yield db
        return
    database = open_database(db)
    try:
        yield database
    finally:
        database.dispose()


def _job(db: Database | str, job_id: int) -> Job:
    with _opened(db) as database, database.session() as session:
        job = session.get(Job, job_id, populate_existing=True)
        assert job is not None
        return job


def _events(db: Database | str, job_id: int) -> list[str]:
    with _opened(db) as database, database.session() as session:
        return list(
            session.scalars(select(Event.message).where(Event.job_id == job_id).order_by(Event.id))
        )


def test_failures_become_failed_jobs_with_one_line_errors(tmp_path: Path) -> None:
    db = open_database(str(tmp_path / "smash.db"))
    experiment_id, archs = retrain_experiment(db, 2)
    with db.session() as session:
        bad_params = enqueue(
            session,
            experiment_id,
            "retrain",
            {"architecture_id": archs[0], "retrain": {"epochs": -1}},
        ).id
        corrupt = queue_retrain(session, archs[1], {"epochs": 1, "batch_size": 25}).id
        unknown = enqueue(session, experiment_id, "retrain", {"architecture_id": 999}).id
        no_hypernet = queue_score(session, archs, {"images": 10}).id
        session.commit()
    garbage = db.checkpoints_dir / f"experiment-{experiment_id}" / f"retrain-{corrupt}.pt"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"not a checkpoint at all")

    worker = Worker(db, WorkerConfig(device="cpu", once=True, heartbeat_s=0.2))
    assert worker.run() == 0

    expected = {
        bad_params: "retrain: invalid retrain config: epochs must be at least 1, got -1",
        corrupt: f"checkpoint {garbage} is unreadable or not a checkpoint",
        unknown: "no architecture with id 999",
        no_hypernet: f"experiment {experiment_id} has no trained HyperNet yet",
    }
    for job_id, message in expected.items():
        job = _job(db, job_id)
        assert job.state == "failed" and job.error is not None, job_id
        assert job.error.startswith(message) and "\n" not in job.error, job.error
        assert any(
            m.startswith(f"job {job_id} ({job.kind}) failed: {message}")
            for m in _events(db, job_id)
        )
    with db.session() as session:
        retrain = session.scalars(select(Retrain).where(Retrain.job_id == corrupt)).one()
        assert retrain.finished_at is not None and retrain.test_acc is None
        assert session.get(Architecture, archs[1]).retrain_state == "failed"
    assert worker.log_path is not None and "Traceback" in worker.log_path.read_text()
    db.dispose()

    # The user removes the corrupt checkpoint and retries the job: it now succeeds, and the
    # failed attempt stays on record beside the finished one.
    garbage.unlink()
    url = str(tmp_path / "smash.db")
    retried = smash(url, "retry", str(corrupt))
    assert retried.exit_code == 0, retried.stderr
    assert retried.stdout.strip() == f"job {corrupt} (retrain) is queued again"
    refused = smash(url, "retry", str(corrupt))
    assert refused.exit_code == 1
    assert refused.stderr.strip() == (
        f"error: cannot retry job {corrupt}: it is queued "
        "(only failed or cancelled jobs can be retried)"
    )
    db = open_database(url)
    with db.session() as session:
        assert session.get(Architecture, archs[1]).retrain_state == "queued"
    assert Worker(db, WorkerConfig(device="cpu", once=True, heartbeat_s=0.2)).run() == 0
    assert _job(db, corrupt).state == "done" and _job(db, corrupt).error is None
    with db.session() as session:
        query = select(Retrain.test_acc).where(Retrain.job_id == corrupt).order_by(Retrain.id)
        failed_attempt, success = session.scalars(query).all()
        assert failed_attempt is None and success is not None
        architecture = session.get(Architecture, archs[1])
        assert (architecture.retrain_state, architecture.best_test_acc) == ("done", success)
    db.dispose()


def test_two_workers_drain_a_queue_without_running_a_job_twice(tmp_path: Path) -> None:
    db = open_database(str(tmp_path / "smash.db"))
    _, archs = retrain_experiment(db, 4)
    with db.session() as session:
        job_ids = [queue_retrain(session, a, {"epochs": 1, "batch_size": 25}).id for a in archs]
        session.commit()
    workers = [start_worker(db.url, tmp_path / f"worker-{i}.out", "--once") for i in range(2)]
    try:
        codes = [process.wait(timeout=240) for process in workers]
    finally:
        for process in workers:
            stop(process)
    logs = "".join((tmp_path / f"worker-{i}.out").read_text() for i in range(2))
    assert codes == [0, 0], logs
    with db.session() as session:
        retrains = session.scalars(select(Retrain)).all()
        assert sorted(r.job_id for r in retrains) == job_ids
        assert all(r.test_acc is not None for r in retrains)
    for job_id in job_ids:
        job = _job(db, job_id)
        assert (job.state, job.attempts) == ("done", 1)
        assert sum("started by worker" in m for m in _events(db, job_id)) == 1
    db.dispose()


def test_pause_resume_cancel_and_sigterm_through_the_cli_while_a_worker_runs(
    tmp_path: Path,
) -> None:
    url = normalize_url(str(tmp_path / "smash.db"))
    with _opened(url) as db:
        _, archs = retrain_experiment(db, 2)
    first = smash(
        url, *retrain_args(archs[0], 200, "--detach", "--json", "--device", "cpu", "--threads", "1")
    )
    assert first.exit_code == 0, first.stderr
    launched = json.loads(first.stdout)
    job_id, pid = launched["job_id"], launched["worker_pid"]
    assert pid is not None
    try:
        # Running, with at least one epoch (and its checkpoint) behind it.
        wait_for(lambda: _job(url, job_id).progress_text.startswith("epoch"), 90, "the first epoch")
        paused = smash(url, "pause", str(job_id))
        assert paused.exit_code == 0 and "pause requested" in paused.stdout
        wait_for(lambda: _job(url, job_id).state == "paused", 60, "the pause")
        checkpoint = tmp_path / f"smash-files/checkpoints/experiment-1/retrain-{job_id}.pt"
        assert checkpoint.is_file()
        with _opened(url) as db, db.session() as session:
            assert session.scalar(select(func.count()).where(Checkpoint.job_id == job_id)) >= 1
            retrain = session.scalars(select(Retrain).where(Retrain.job_id == job_id)).one()
            assert retrain.finished_at is None
            assert session.get(Architecture, archs[0]).retrain_state == "queued"

        assert smash(url, "resume", str(job_id)).exit_code == 0
        wait_for(
            lambda: "resuming the retrain from its checkpoint" in _events(url, job_id),
            60,
            "the resume",
        )
        job = _job(url, job_id)
        assert (job.state, job.attempts) == ("running", 2)

        cancelled = smash(url, "cancel", str(job_id))
        assert cancelled.exit_code == 0 and "cancel requested" in cancelled.stdout
        wait_for(lambda: _job(url, job_id).state == "cancelled", 60, "the cancel")
        with _opened(url) as db, db.session() as session:
            retrains = session.scalars(select(Retrain).where(Retrain.job_id == job_id)).all()
            assert len(retrains) == 1 and retrains[0].finished_at is not None
            assert retrains[0].test_acc is None
            assert session.get(Architecture, archs[0]).retrain_state is None

        # A second job goes to the worker that is alive; SIGTERM gives it back to the queue.
        second = smash(url, *retrain_args(archs[1], 200, "--detach", "--json", "--device", "cpu"))
        assert second.exit_code == 0 and json.loads(second.stdout)["worker_pid"] is None
        second_id = json.loads(second.stdout)["job_id"]
        wait_for(lambda: _job(url, second_id).state == "running", 60, "the second job to start")
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        pid = None
        assert os.waitstatus_to_exitcode(status) == 0
        job = _job(url, second_id)
        assert (job.state, job.worker_id, job.attempts) == ("queued", None, 1)
        assert f"job {second_id} requeued" in _events(url, second_id)
        with _opened(url) as db, db.session() as session:
            assert session.get(Architecture, archs[1]).retrain_state == "queued"
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _scores(db: Database) -> dict[int, tuple[str, float, datetime]]:
    with db.session() as session:
        rows = session.execute(
            select(Score.id, Architecture.hash, Score.error, Score.created_at).join(
                Architecture, Architecture.id == Score.architecture_id
            )
        ).all()
    return {ident: (hash_, error, created) for ident, hash_, error, created in rows}


@pytest.mark.parametrize("preset", ["tiny", "nb201-tiny"])
def test_kill_9_loses_nothing_committed_and_the_jobs_resume(tmp_path: Path, preset: str) -> None:
    db = open_database(str(tmp_path / "smash.db"))
    request = SearchRequest(
        preset=preset,
        hypernet="compact",
        epochs=2,
        max_steps=16,
        batch_size=25,
        checkpoint_every=4,
        eval_archs=1,
        archs=16,
        score_images=50,
        bn_recalibration=0,  # crash semantics, not score quality: keep scoring cheap
        commit_every=2,
        val_size=100,
        synthetic_train=300,
        synthetic_test=100,
        name="crash",
    )
    assert PRESETS[request.preset].name == preset
    created = create_search(db, request)
    url = normalize_url(str(tmp_path / "smash.db"))
    stale = ("--stale-after", "2", "--once")

    def killed_heartbeat_is_stale(job_id: int) -> bool:
        beat = _job(db, job_id).heartbeat_at
        return beat is not None and (datetime.now(timezone.utc) - beat).total_seconds() > 2.5

    # 1. Kill during HyperNet training, after a checkpoint.
    worker = start_worker(url, tmp_path / "w1.out", *stale)
    try:

        def checkpointed() -> int | None:
            with db.session() as session:
                step = session.scalar(
                    select(func.max(Checkpoint.step)).where(
                        Checkpoint.job_id == created.train_job_id
                    )
                )
            return step if step and _job(db, created.train_job_id).state == "running" else None

        wait_for(checkpointed, 120, "a HyperNet checkpoint", every=0.02)
        worker.kill()
        worker.wait()
        killed_at = datetime.now(timezone.utc)
    finally:
        stop(worker)
    with db.session() as session:
        saved_step = session.scalar(
            select(func.max(Checkpoint.step)).where(Checkpoint.job_id == created.train_job_id)
        )
    assert _job(db, created.train_job_id).state == "running" and 4 <= saved_step < 16

    # 2. Restart: training resumes at the checkpoint; kill again once some scores are in.
    wait_for(lambda: killed_heartbeat_is_stale(created.train_job_id), 30, "a stale heartbeat")
    worker = start_worker(url, tmp_path / "w2.out", *stale)
    try:

        def some_scores() -> bool:
            return len(_scores(db)) >= 4 and _job(db, created.search_job_id).state == "running"

        wait_for(some_scores, 180, "scores of the search", every=0.02)
        worker.kill()
        worker.wait()
    finally:
        stop(worker)
    before = _scores(db)
    assert 4 <= len(before) < 16
    train = _job(db, created.train_job_id)
    assert (train.state, train.attempts) == ("done", 2)
    assert f"resuming HyperNet training from its checkpoint at step {saved_step}" in _events(
        db, train.id
    )
    with db.session() as session:
        # Steps up to the checkpoint were not run again: their points date from before the kill.
        points = session.execute(
            select(Metric.step, Metric.created_at).where(
                Metric.job_id == train.id, Metric.name == "loss"
            )
        ).all()
        assert sorted(step for step, _ in points) == list(range(1, 17))
        assert all(created_at < killed_at for step, created_at in points if step <= saved_step)
        assert (
            session.scalar(select(func.max(Checkpoint.step)).where(Checkpoint.job_id == train.id))
            == 16
        )

    # 3. Restart again: the search continues with what it has and finishes.
    wait_for(lambda: killed_heartbeat_is_stale(created.search_job_id), 30, "a stale heartbeat")
    worker = start_worker(url, tmp_path / "w3.out", *stale)
    try:
        assert worker.wait(timeout=180) == 0, (tmp_path / "w3.out").read_text()
    finally:
        stop(worker)
    after = _scores(db)
    assert all(after[ident] == value for ident, value in before.items())  # nothing lost or redone
    hashes = [hash_ for hash_, _, _ in after.values()]
    assert len(hashes) == len(set(hashes)) == 16  # one score per architecture, none twice
    search = _job(db, created.search_job_id)
    assert (search.state, search.attempts) == ("done", 2)
    resumed = [m for m in _events(db, search.id) if m.startswith("resuming search:")]
    assert len(resumed) == 1 and int(resumed[0].split()[2]) >= len(before)
    db.dispose()


def test_ctrl_c_in_the_foreground_checkpoints_requeues_and_exits_130(tmp_path: Path) -> None:
    url = normalize_url(str(tmp_path / "smash.db"))
    with _opened(url) as db:
        _, archs = retrain_experiment(db, 1)
    checkpoint = tmp_path / "smash-files/checkpoints/experiment-1/retrain-1.pt"

    def interrupt_after_the_first_epoch() -> None:
        # The file system, not the database: see _opened.
        wait_for(checkpoint.is_file, 120, "the first epoch's checkpoint")
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt_after_the_first_epoch, daemon=True)
    thread.start()
    result = smash(url, *retrain_args(archs[0], 200, "--device", "cpu"))
    thread.join(timeout=5)
    assert result.exit_code == 130, result.stderr
    assert "error: interrupted: the running job was checkpointed and requeued" in result.stderr
    assert "Traceback" not in result.stderr
    job = _job(url, 1)
    assert (job.state, job.worker_id, job.attempts) == ("queued", None, 1)
    with _opened(url) as db, db.session() as session:
        retrain = session.scalars(select(Retrain)).one()
        assert retrain.finished_at is None and len(retrain.curve) == 0
        assert session.get(Architecture, archs[0]).retrain_state == "queued"


def test_a_worker_killed_outright_leaves_no_job_stranded(tmp_path: Path) -> None:
    """kill -9: its job goes to the next worker at once, not after the heartbeat timeout.

    Its heartbeat is fresh (``ALIVE_WITHIN_S``, and 60 s before any job of it is stale),
    yet ``--detach`` launches a worker instead of trusting the dead one, and
    ``smash worker --once`` takes its job instead of exiting without a word.
    """
    url = normalize_url(str(tmp_path / "smash.db"))
    with _opened(url) as db:
        _, archs = retrain_experiment(db, 3)
        with db.session() as session:
            stranded = queue_retrain(session, archs[0], {"epochs": 2, "batch_size": 25}).id
            session.commit()
    checkpoint = tmp_path / f"smash-files/checkpoints/experiment-1/retrain-{stranded}.pt"
    # 1. A worker dies outright after the first epoch's checkpoint.
    worker = start_worker(url, tmp_path / "killed.out", "--stale-after", "60")
    try:
        wait_for(checkpoint.is_file, 120, "the first epoch's checkpoint", every=0.02)
        worker.kill()
        worker.wait()
    finally:
        stop(worker)
    killed_at = time.monotonic()
    assert _job(url, stranded).state == "running"

    # 2. --detach does not count the dead worker: it launches one, which takes both jobs.
    queued = smash(url, *retrain_args(archs[1], 1, "--detach", "--json", "--device", "cpu", "--threads", "1"))
    assert queued.exit_code == 0, queued.stderr
    assert "launched a background worker" in queued.stderr
    launched = json.loads(queued.stdout)
    pid = launched["worker_pid"]
    try:
        wait_for(
            lambda: {_job(url, stranded).state, _job(url, launched["job_id"]).state} == {"done"},
            120,
            "both jobs to finish",
        )
        assert time.monotonic() - killed_at < 60  # sooner than any heartbeat timeout
        job = _job(url, stranded)
        assert (job.attempts, job.workers_lost) == (2, 1)
        assert any(
            message.startswith(f"job {stranded} requeued: worker ")
            and message.endswith(" is gone (its process ended without stopping)")
            for message in _events(url, stranded)
        )
        assert "resuming the retrain from its checkpoint" in _events(url, stranded)

        # 3. The launched worker dies outright too, running a third job; `--once` takes it.
        with _opened(url) as db, db.session() as session:
            third = queue_retrain(session, archs[2], {"epochs": 1, "batch_size": 25}).id
            session.commit()
        wait_for(lambda: _job(url, third).state == "running", 60, "the third job to start")
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pid = None
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    once = smash(url, "worker", "--once", "--device", "cpu", "--threads", "1")
    assert once.exit_code == 0, once.stderr
    job = _job(url, third)
    assert (job.state, job.attempts, job.workers_lost) == ("done", 2, 1)
    with _opened(url) as db:
        assert alive_workers(db, ALIVE_WITHIN_S) == []  # the dead are recorded as stopped

    # 4. Nothing left: --once says so in one line instead of exiting without a word.
    idle = smash(url, "worker", "--once", "--device", "cpu")
    assert idle.exit_code == 0
    assert idle.stderr.strip() == "nothing to do: no job is queued"
