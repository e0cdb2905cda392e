"""The app's door to the database: each method is one unit of work, run in a worker thread.

Everything returned is a frozen value (or a storage dataclass), never an ORM
object bound to a session, so results can cross from the worker thread to the
event loop safely. This module imports SQLAlchemy through ``storage``; the
app imports it lazily, after its first paint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from engine.truth import TruthConfig
from smash_tui.runner.launch import ALIVE_WITHIN_S
from smash_tui.submit import queue_retrain, queue_score, training_images
from smash_tui.tui.forms import RetrainSettings, ScoreSettings
from smash_tui.tui.stats import Correlation, correlation, pareto_front, ranks
from storage.control import request_cancel, request_pause, resume, retry
from storage.db import Database, one_line_errors, open_database
from storage.errors import StorageError
from storage.queries import (
    ArchitectureDetail,
    ArchitecturePage,
    ArchitectureRow,
    Filter,
    PageCursor,
    architecture_detail,
    count_architectures,
    job_labels,
    list_architectures,
    list_jobs,
    metric_series,
    recent_events,
)
from storage.records import get_experiment
from storage.summaries import (
    ChangeMarker,
    ExperimentSummary,
    TruthCounts,
    architecture_rows,
    bench_pairs,
    change_marker,
    experiment_summaries,
    latest_metrics,
    proxy_pairs,
    scored_costs,
    truth_counts,
)
from storage.workers import WorkerInfo, alive_workers

# Points drawn behind the Pareto front: a stride sample of all scored architectures.
PARETO_BACKGROUND_POINTS: Final = 2000
# Events shown on the dashboard.
EVENT_LINES: Final = 200
# The truths SMASH error is compared with: a benchmark table's accuracy (measured
# elsewhere, for every scored cell it lists) and a retrain's test accuracy (measured here).
BENCHMARK: Final = "benchmark"
RETRAINED: Final = "retrained"
# Points the proxy chart draws of a larger comparison: an even sample (tau and rho use all).
PROXY_DRAWN_POINTS: Final = 1500
# Rows of the proxy table: the lowest SMASH errors.
PROXY_TABLE_ROWS: Final = 100


@dataclass(frozen=True)
class JobView:
    """One job, as the dashboard and the Jobs view show it."""

    id: int  # job id
    experiment_id: int  # its experiment
    kind: str  # train, score, search or retrain
    state: str  # queued, running, paused, done, failed or cancelled
    requested: str | None  # a pending pause or cancel request
    progress: float  # fraction done
    progress_text: str  # e.g. "step 120/900"
    eta_seconds: float | None  # estimated seconds left
    attempts: int  # claims so far
    worker_id: str | None  # the worker running it
    error: str | None  # why it failed
    depends_on_id: int | None  # job it waits for
    params: dict[str, Any]  # kind-specific parameters
    created_at: datetime  # when it was queued (UTC)
    started_at: datetime | None  # first start (UTC)
    finished_at: datetime | None  # end (UTC)


@dataclass(frozen=True)
class EventView:
    """One line of the activity log."""

    id: int  # event id
    level: str  # info, warning or error
    message: str  # the text
    job_id: int | None  # the job it concerns
    created_at: datetime  # when (UTC)


@dataclass(frozen=True)
class Curves:
    """The metric series of one job, for the dashboard plots."""

    job_id: int | None  # the job they belong to; None when there is none yet
    series: dict[str, tuple[tuple[int, float | None], ...]]  # name -> (step, value) points
    latest: dict[str, tuple[int, float | None]]  # name -> its newest (step, value)


@dataclass(frozen=True)
class DashboardData:
    """Everything the dashboard shows for one experiment."""

    experiments: tuple[ExperimentSummary, ...]  # all experiments, newest first
    experiment_id: int | None  # the experiment the rest is about
    jobs: tuple[JobView, ...]  # its jobs
    curves: Curves  # HyperNet training curves of its newest train job
    workers: tuple[WorkerInfo, ...]  # workers alive now
    events: tuple[EventView, ...]  # its newest activity-log lines, oldest first
    marker: ChangeMarker | None = None  # the database's marker when this was read
    worker_jobs: dict[int, str] = field(default_factory=dict)  # current job id -> how it is shown


@dataclass(frozen=True)
class ProxyPoint:
    """One architecture of the Proxy view: its SMASH error beside the shown truth's accuracy."""

    id: int  # architecture id
    err: float  # SMASH error of its newest score, percent
    acc: float  # the shown truth's accuracy (ProxyData.truth says which; never a mix), percent
    partial: bool  # the error is racing's, measured on part of the validation images
    err_rank: float  # rank of its error among all points (1: the lowest)
    acc_rank: float  # rank of its accuracy among all points (1: the highest)


@dataclass(frozen=True)
class ProxyData:
    """SMASH error against one truth (a benchmark's accuracy or a retrain's), with the rank correlations."""

    truth: str  # BENCHMARK or RETRAINED: what every point's ``acc`` is
    truths: tuple[str, ...]  # the truths this experiment has (BENCHMARK first); empty: none yet
    table: str | None  # the benchmark table and column, as the engine names it; None without one
    scored: int  # scored architectures of the experiment
    correlation: Correlation  # of SMASH error with the truth, over every point
    partial: int  # points whose error is partial
    drawn: tuple[ProxyPoint, ...]  # what the chart draws: every point, or an even sample of them
    head: tuple[ProxyPoint, ...]  # the table's rows: the lowest errors, by (error, id)

    @property
    def points(self) -> int:
        """How many architectures are compared (and counted in tau and rho)."""
        return self.correlation.pairs


def table_label(table: dict[str, Any] | None) -> str | None:
    """An experiment config's benchmark table as the engine names it ("t.csv: CIFAR10...")."""
    if table is None:
        return None
    path, column = str(table.get("path", "?")), str(table.get("column", "?"))
    try:
        return TruthConfig(path, column).label
    except KeyError:  # a column this smash does not know: name it as stored
        return f"{Path(path).name}: {column}"


def available_truths(counts: TruthCounts) -> tuple[str, ...]:
    """The truths an experiment's errors can be compared with, the benchmark's first.

    An experiment with a benchmark table has that truth from the start (its cells
    get their accuracies as they are scored); retrains are a truth once one finished.
    """
    found = []
    if counts.benchmark or counts.table is not None:
        found.append(BENCHMARK)
    if counts.retrained:
        found.append(RETRAINED)
    return tuple(found)


def proxy_data(
    counts: TruthCounts, truth: str, pairs: Sequence[tuple[int, float, float, bool]]
) -> ProxyData:
    """Rank the pairs of one truth, correlate them and pick what the view shows.

    Args:
        counts: The experiment's truths.
        truth: BENCHMARK or RETRAINED, what the pairs' accuracies are.
        pairs: (id, SMASH error, accuracy, partial) of every architecture compared.
    """
    errors = [err for _, err, _, _ in pairs]
    accuracies = [acc for _, _, acc, _ in pairs]
    # Accuracy ranked best first, so agreeing ranks read the same.
    points = [
        ProxyPoint(ident, err, acc, partial, err_rank, acc_rank)
        for (ident, err, acc, partial), err_rank, acc_rank in zip(
            pairs, ranks(errors), ranks([-acc for acc in accuracies])
        )
    ]
    by_id = sorted(points, key=lambda point: point.id)
    # Every stride-th by id: a point once drawn stays drawn while new (higher) ids arrive.
    stride = max(1, math.ceil(len(by_id) / PROXY_DRAWN_POINTS))
    return ProxyData(
        truth=truth,
        truths=available_truths(counts),
        table=table_label(counts.table),
        scored=counts.scored,
        correlation=correlation(errors, accuracies),
        partial=sum(1 for point in points if point.partial),
        drawn=tuple(by_id[::stride]),
        head=tuple(sorted(points, key=lambda point: (point.err, point.id))[:PROXY_TABLE_ROWS]),
    )


@dataclass(frozen=True)
class ParetoData:
    """The trade-off of SMASH error against a cost."""

    cost: str  # "params" or "flops"
    scored: int  # scored architectures considered
    background: tuple[tuple[int, float], ...]  # (cost, err) sample of all of them
    front: tuple[ArchitectureRow, ...]  # the front, by increasing cost


def _job_view(job: Any) -> JobView:
    return JobView(
        id=job.id,
        experiment_id=job.experiment_id,
        kind=job.kind,
        state=job.state,
        requested=job.requested,
        progress=float(job.progress or 0.0),
        progress_text=job.progress_text or "",
        eta_seconds=job.eta_seconds,
        attempts=job.attempts,
        worker_id=job.worker_id,
        error=job.error,
        depends_on_id=job.depends_on_id,
        params=dict(job.params or {}),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


class Store:
    """Units of work on one database, for worker threads.

    Each method opens its own session and closes it before returning, so
    methods may run concurrently in different threads.

    Args:
        db: The open database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(cls, url: str | None) -> Store:
        """Open (creating or upgrading) the database at a URL or path; None: the default."""
        return cls(open_database(url))

    def close(self) -> None:
        """Release the database's connections."""
        self.db.dispose()

    # --- reads -----------------------------------------------------------------------------

    def marker(self) -> ChangeMarker:
        """The newest row ids, to tell whether anything changed since the last poll."""
        with self.db.session() as session:
            return change_marker(session)

    def experiments(self) -> list[ExperimentSummary]:
        """Every experiment with its counts, newest first."""
        with self.db.session() as session:
            return experiment_summaries(session)

    def page(
        self,
        experiment_id: int,
        *,
        sort: str,
        descending: bool,
        filter: Filter | None,
        after: PageCursor | None,
        limit: int,
    ) -> ArchitecturePage:
        """One page of the architecture browser (see ``storage.queries.list_architectures``)."""
        with self.db.session() as session, one_line_errors():
            return list_architectures(
                session,
                experiment_id,
                sort=sort,
                descending=descending,
                filter=filter,
                after=after,
                limit=limit,
            )

    def count(self, experiment_id: int, filter: Filter | None) -> int:
        """How many of the experiment's architectures match the filter."""
        with self.db.session() as session, one_line_errors():
            return count_architectures(session, experiment_id, filter=filter)

    def training_images(self, experiment_id: int) -> int | None:
        """The experiment's training split, which a retrain batch must fit (None: unknown)."""
        with self.db.session() as session:
            return training_images(get_experiment(session, experiment_id))

    def detail(self, architecture_id: int) -> ArchitectureDetail:
        """One architecture with its spec, scores and retrains."""
        with self.db.session() as session:
            return architecture_detail(session, architecture_id)

    def jobs(self, experiment_id: int | None = None) -> list[JobView]:
        """Jobs in enqueue order, of one experiment or of all."""
        with self.db.session() as session:
            return [_job_view(job) for job in list_jobs(session, experiment_id)]

    def workers(self) -> list[WorkerInfo]:
        """Workers that sent a heartbeat recently."""
        return alive_workers(self.db, ALIVE_WITHIN_S)

    def dashboard(
        self, experiment_id: int | None, previous: DashboardData | None = None
    ) -> DashboardData:
        """The dashboard of an experiment; None picks the newest one.

        Args:
            experiment_id: The experiment, or None for the newest.
            previous: The last answer for the same view: when no row was added
                since, only the jobs (their progress) and the workers are read again.
        """
        with self.db.session() as session:
            marker = change_marker(session)
            if (
                previous is not None
                and previous.marker == marker
                and previous.experiment_id == experiment_id
                and experiment_id is not None
            ):
                jobs = tuple(_job_view(job) for job in list_jobs(session, experiment_id))
                workers = tuple(self.workers())
                return replace(
                    previous, jobs=jobs, workers=workers, worker_jobs=self._worker_jobs(session, workers)
                )
            experiments = experiment_summaries(session)
            known = {summary.id for summary in experiments}
            if experiment_id not in known:
                experiment_id = experiments[0].id if experiments else None
            jobs: list[JobView] = []
            events: list[EventView] = []
            curves = Curves(None, {}, {})
            if experiment_id is not None:
                jobs = [_job_view(job) for job in list_jobs(session, experiment_id)]
                train = [job for job in jobs if job.kind == "train"]
                if train:
                    job_id = train[-1].id
                    latest = latest_metrics(session, job_id)
                    series = {
                        name: tuple(metric_series(session, job_id, name)) for name in sorted(latest)
                    }
                    curves = Curves(job_id, series, latest)
                events = [
                    EventView(event.id, event.level, event.message, event.job_id, event.created_at)
                    for event in recent_events(
                        session, experiment_id=experiment_id, limit=EVENT_LINES
                    )
                ]
            workers = tuple(self.workers())
            worker_jobs = self._worker_jobs(session, workers)
        return DashboardData(
            experiments=tuple(experiments),
            experiment_id=experiment_id,
            jobs=tuple(jobs),
            curves=curves,
            workers=workers,
            events=tuple(events),
            marker=marker,
            worker_jobs=worker_jobs,
        )

    @staticmethod
    def _worker_jobs(session: Any, workers: Sequence[WorkerInfo]) -> dict[int, str]:
        return job_labels(session, (worker.current_job_id for worker in workers))

    def proxy(self, experiment_id: int, truth: str | None = None) -> ProxyData:
        """SMASH error against one truth of the experiment, with tau and rho over every pair.

        Args:
            experiment_id: The experiment.
            truth: BENCHMARK or RETRAINED; None, or one the experiment lacks: its
                benchmark table's when it has one, else retrains'.
        """
        with self.db.session() as session:
            counts = truth_counts(session, experiment_id)
            truths = available_truths(counts)
            if truth not in truths:
                truth = truths[0] if truths else RETRAINED
            if truth == BENCHMARK:
                pairs = [(p.id, p.err, p.bench, p.partial) for p in bench_pairs(session, experiment_id)]
            else:
                pairs = [(p.id, p.err, p.acc, p.partial) for p in proxy_pairs(session, experiment_id)]
        return proxy_data(counts, truth, pairs)

    def pareto(self, experiment_id: int, cost: str) -> ParetoData:
        """The error/cost front of an experiment and a sample of the points behind it."""
        with self.db.session() as session:
            points = scored_costs(session, experiment_id, cost)
            front = pareto_front([(value, err, ident) for ident, value, err in points])
            rows = architecture_rows(session, [ident for _, _, ident in front])
        stride = max(1, len(points) // PARETO_BACKGROUND_POINTS)
        background = tuple((value, err) for _, value, err in points[::stride])
        return ParetoData(cost, len(points), background, tuple(rows))

    # --- writes ----------------------------------------------------------------------------

    def queue_retrains(
        self, experiment_id: int, architecture_ids: Sequence[int], settings: RetrainSettings
    ) -> list[int]:
        """Queue one retrain job per architecture and mark them queued; return the job ids.

        All or nothing: one transaction, refused when an architecture belongs to
        another experiment than the one shown.
        """
        with self.db.session() as session:
            jobs = [queue_retrain(session, ident, settings.config()) for ident in architecture_ids]
            strangers = [job.id for job in jobs if job.experiment_id != experiment_id]
            if strangers:
                session.rollback()
                raise StorageError(
                    f"architectures of another experiment than {experiment_id}: nothing queued"
                )
            session.commit()
            return [job.id for job in jobs]

    def queue_score(self, experiment_id: int, architecture_ids: Sequence[int], settings: ScoreSettings) -> int:
        """Queue one job scoring the architectures again (newest checkpoint); return its id."""
        with self.db.session() as session:
            job = queue_score(session, architecture_ids, settings.config())
            if job.experiment_id != experiment_id:
                session.rollback()
                raise StorageError(f"architectures of another experiment than {experiment_id}: nothing queued")
            session.commit()
            return job.id

    def pause(self, job_id: int) -> JobView:
        """Pause a job (a running one when its worker next checks)."""
        with self.db.session() as session:
            job = _job_view(request_pause(session, job_id))
            session.commit()
        return job

    def resume(self, job_id: int) -> JobView:
        """Queue a paused job again."""
        with self.db.session() as session:
            job = _job_view(resume(session, job_id))
            session.commit()
        return job

    def cancel(self, job_id: int) -> JobView:
        """Cancel a job (a running one when its worker next checks)."""
        with self.db.session() as session:
            job = _job_view(request_cancel(session, job_id))
            session.commit()
        return job

    def retry(self, job_id: int) -> list[JobView]:
        """Queue a failed or cancelled job again, with the jobs its end cancelled (it first)."""
        with self.db.session() as session:
            jobs = [_job_view(job) for job in retry(session, job_id)]
            session.commit()
        return jobs
