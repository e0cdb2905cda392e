"""`JobContext`: the engine's `JobReporter` for one running job, written to the database."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from engine.distributed import World
from engine.jobs import ScoredArchitecture
from storage import queue, records
from storage.models import Job
from storage.records import ArchitectureIn, MetricIn, ScoreIn

if TYPE_CHECKING:
    from smash_tui.runner.worker import Worker

log = logging.getLogger("smash.worker")


class JobContext:
    """One running job: the engine's `JobReporter`, backed by the database.

    The main thread reports through it; the heartbeat thread reads the latest
    progress and hands back the user's requests.
    """

    def __init__(self, worker: Worker, job: Job, parent: JobContext | None = None) -> None:
        self.worker = worker
        self.db = worker.db
        self.job_id = job.id
        self.kind = job.kind
        self.experiment_id = job.experiment_id
        # A chunk run by its own search's worker (`Worker.run_nested`): it stops with the
        # search, and tells the foreground observer nothing (the search reports for it).
        self.parent = parent
        # Scores are the search's: a chunk records them under its parent job.
        self.score_job_id = job.parent_id if job.parent_id is not None else job.id
        self.checkpoint_id: int | None = None  # HyperNet checkpoint scores are recorded against
        self.retrain_id: int | None = None  # the retrain row of a retrain job
        self._lock = threading.Lock()
        self._progress: tuple[float, str, float | None] | None = None
        self._request = "none"
        self._taken_away = False
        self._metrics: list[MetricIn] = []
        self._metrics_written = time.monotonic()

    # --- the heartbeat thread's side ---

    def pending_progress(self) -> tuple[float | None, str | None, float | None]:
        with self._lock:
            if self._progress is None:
                return None, None, None
            return self._progress

    def apply(self, control: queue.Control) -> None:
        with self._lock:
            if control.taken_away:
                self._taken_away = True
            self._request = control.request

    @property
    def taken_away(self) -> bool:
        with self._lock:
            return self._taken_away

    @property
    def world(self) -> World:
        """The ranks this worker trains with (`smash worker --ddp`), or this process alone."""
        return self.worker.world

    @property
    def request(self) -> str:
        """The user's pending request for this job: none, pause or cancel."""
        with self._lock:
            return self._request

    # --- JobReporter ---

    def progress(self, fraction: float, text: str, eta_s: float | None = None) -> None:
        with self._lock:
            self._progress = (fraction, text, eta_s)
        if self.parent is None:
            self.worker.notify("job_progress", self.job_id, fraction, text)

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        self._metrics.extend(
            MetricIn(self.job_id, step, name, float(value)) for name, value in values.items()
        )
        if time.monotonic() - self._metrics_written >= self.worker.config.metrics_every_s:
            self.flush_metrics()

    def flush_metrics(self) -> None:
        if self._metrics:
            with self.db.session() as session:
                records.add_metrics(session, self._metrics)
                session.commit()
            self._metrics = []
        self._metrics_written = time.monotonic()

    def event(self, message: str, level: str = "info") -> None:
        log.info("job %d: %s", self.job_id, message)
        with self.db.session() as session:
            records.add_event(
                session, message, level=level, job_id=self.job_id, experiment_id=self.experiment_id
            )
            session.commit()

    def checkpoint(self, step: int, path: str, metrics: Mapping[str, float]) -> None:
        # Points up to the checkpoint go in first, so a resumed run's curve has no gap.
        self.flush_metrics()
        with self.db.session() as session:
            # Relative to the files root: hosts that mount it elsewhere find it too.
            records.add_checkpoint(session, self.job_id, step, self.db.stored_path(path), dict(metrics))
            session.commit()
        log.info("job %d: checkpoint at step %d: %s", self.job_id, step, path)

    def scored(self, results: Sequence[ScoredArchitecture]) -> None:
        with self.db.session() as session:
            ids = records.add_architectures(
                session,
                self.experiment_id,
                [
                    ArchitectureIn(
                        hash=item.hash,
                        spec=item.spec,
                        params=item.params,
                        flops=item.flops,
                        depth=item.depth,
                        num_ops=item.num_ops,
                        source=item.source,
                        bench_acc=item.bench_acc,
                    )
                    for item in results
                ],
            )
            records.add_scores(
                session,
                [
                    ScoreIn(
                        architecture_id=ids[item.hash],
                        error=item.error,
                        loss=item.loss,
                        images=item.images,
                        z_draws=item.z_draws,
                        method=item.method,
                        checkpoint_id=self.checkpoint_id,
                        job_id=self.score_job_id,
                        rungs=item.rungs,
                    )
                    for item in results
                ],
            )
            session.commit()
        log.info("job %d: committed %d scored architectures", self.job_id, len(results))

    def should_stop(self) -> bool:
        with self._lock:
            asked = self._taken_away or self._request != "none"
        if self.parent is not None and self.parent.should_stop():
            return True
        return asked or self.worker.stopping
