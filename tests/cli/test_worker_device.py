"""A worker whose GPU fails for good: the job is requeued, not failed, and the worker exits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select

from smash_tui.runner.handlers import HANDLERS
from smash_tui.runner.worker import EXIT_DEVICE_FAILED, Worker, WorkerConfig
from smash_tui.submit import queue_retrain
from storage.db import open_database
from storage.models import Event, Job
from storage.workers import alive_workers
from tests.cli.support import retrain_experiment, smash


def test_a_sticky_cuda_error_requeues_the_job_and_ends_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = open_database(str(tmp_path / "smash.db"))
    experiment_id, archs = retrain_experiment(db, 2)
    with db.session() as session:
        first = queue_retrain(session, archs[0], {"epochs": 1, "batch_size": 25}).id
        second = queue_retrain(session, archs[1], {"epochs": 1, "batch_size": 25}).id
        session.commit()
    ran: list[int] = []

    def broken_gpu(*args: Any) -> None:
        ran.append(args[3].id)
        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setitem(HANDLERS, "retrain", broken_gpu)
    worker = Worker(db, WorkerConfig(device="cpu", once=True, heartbeat_s=0.2))
    assert worker.run() == EXIT_DEVICE_FAILED != 0
    assert ran == [first]  # it stopped at once instead of failing the next job the same way
    with db.session() as session:
        job = session.get(Job, first)
        assert job is not None
        # Queued again, not failed, and the lost worker does not count against the job.
        assert (job.state, job.error, job.worker_id, job.workers_lost) == ("queued", None, None, 0)
        events = list(session.scalars(select(Event.message).where(Event.job_id == first)))
    assert any("requeued, not failed" in line and "illegal memory access" in line for line in events)
    assert worker.device_failure is not None and "\n" not in worker.device_failure
    assert worker.log_path is not None and "illegal memory access" in worker.log_path.read_text()
    assert alive_workers(db, 60) == []  # it recorded its stop

    # A fresh worker (a fresh CUDA context) takes both jobs.
    monkeypatch.setitem(HANDLERS, "retrain", lambda *args: ran.append(args[3].id) or (lambda session: None))
    assert Worker(db, WorkerConfig(device="cpu", once=True, heartbeat_s=0.2)).run() == 0
    assert ran == [first, first, second]
    with db.session() as session:
        assert [session.get(Job, i).state for i in (first, second)] == ["done", "done"]  # type: ignore[union-attr]
    db.dispose()

    # `smash worker` says why in one line and exits non-zero.
    with db.session() as session:
        queue_retrain(session, archs[0], {"epochs": 1, "batch_size": 25})
        session.commit()
    monkeypatch.setitem(HANDLERS, "retrain", broken_gpu)
    result = smash(str(tmp_path / "smash.db"), "worker", "--once", "--device", "cpu")
    assert result.exit_code == EXIT_DEVICE_FAILED
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "CUDA error" in lines[0] and "went back to the queue" in lines[0]
    del experiment_id
