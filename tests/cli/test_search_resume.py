"""A search stopped and resumed reports the best of all its scores, not only the new ones."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from engine.config import ScoreConfig, SearchConfig
from engine.params import SearchParams, is_full_score
from smash_tui.runner.worker import Worker, WorkerConfig
from storage.db import open_database
from storage.models import Event, Job, Score
from storage.queue import enqueue

pytestmark = pytest.mark.xdist_group("demo")


class _StopAfter:
    """An observer that stops the worker once a job has reported ``count`` results."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0
        self.worker: Worker | None = None

    def job_progress(self, _job_id: int, _fraction: float, _text: str) -> None:
        self.seen += 1
        if self.seen >= self.count and self.worker is not None:
            self.worker.stop()

    def __getattr__(self, _name: str) -> Any:
        return lambda *_args: None


def test_a_resumed_search_reports_the_best_of_all_its_full_scores(run_db: str) -> None:
    db = open_database(run_db)
    with db.session() as session:
        train_id = session.scalars(select(Job.id).where(Job.kind == "train")).one()
        experiment_id = session.get(Job, train_id).experiment_id
        params = SearchParams(
            # The run scored 6 architectures with this seed: 8 more are new.
            search=SearchConfig(architectures=14, batch=2),
            score=ScoreConfig(images=50, bn_recalibration_batches=0),
            commit_every=2,
        )
        search_id = enqueue(
            session, experiment_id, "search", params.to_params(), depends_on=train_id
        ).id
        session.commit()
    config = WorkerConfig(device="cpu", job_ids=(search_id,), heartbeat_s=0.2, threads=1)

    # 1. Stopped after a few committed scores (as SIGTERM would): back in the queue.
    stopper = _StopAfter(3)
    stopper.worker = Worker(db, config, observer=stopper)
    assert stopper.worker.run() == 0
    with db.session() as session:
        assert session.get(Job, search_id).state == "queued"
        before = session.scalars(select(Score).where(Score.job_id == search_id)).all()
        assert 3 <= len(before) < 8
        # The best score of all comes before the stop (made so, to leave no doubt).
        session.execute(update(Score).where(Score.id == before[0].id).values(error=0.5))
        session.commit()

    # 2. Resumed: the new scores are all worse than the one scored before the stop.
    assert Worker(db, config).run() == 0
    with db.session() as session:
        job = session.get(Job, search_id)
        assert job.state == "done" and job.attempts == 2
        scores = session.execute(
            select(Score.method, Score.error).where(Score.job_id == search_id)
        ).all()
        assert len(scores) == 8
        best = min(error for method, error in scores if is_full_score(method))
        assert best == 0.5
        assert job.progress_text == f"14/14 scored · best {best:.2f}%"
        done = session.scalars(
            select(Event.message)
            .where(Event.job_id == search_id, Event.message.startswith("search done:"))
        ).one()
    assert done.endswith(f"; best error {best:.2f}%"), done
    db.dispose()
