"""Read-only queries for the command center's dashboard, proxy and Pareto views.

Like ``storage.queries`` these take the caller's session and return plain
frozen values, so the Textual app can read them in a worker thread and hand
them to its event loop without lazy loads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.errors import StorageError
from storage.models import Architecture, Event, Experiment, Job, Metric, Retrain, Score
from storage.queries import _ROW_COLUMNS, ArchitectureRow

# Costs a Pareto front can be drawn against.
COST_FIELDS: Final = ("params", "flops")
# Ids per IN (...) list; well below SQLite's bound-parameter limit.
_CHUNK = 500


@dataclass(frozen=True)
class ChangeMarker:
    """The newest row of each table the UI watches; a new value means something happened.

    Comparing markers tells a poller whether to re-read anything, in five
    primary-key lookups. Updates in place (job progress) are not covered:
    every transition of a job writes an event, and progress is polled directly.
    """

    architecture_id: int  # newest architecture id (0 when none)
    score_id: int  # newest score id
    retrain_id: int  # newest retrain id
    event_id: int  # newest activity-log line id
    metric_id: int  # newest metric point id (a re-recorded step updates in place: not seen)


def change_marker(session: Session) -> ChangeMarker:
    """The current ``ChangeMarker`` of the database."""
    row = session.execute(
        select(
            select(func.max(Architecture.id)).scalar_subquery(),
            select(func.max(Score.id)).scalar_subquery(),
            select(func.max(Retrain.id)).scalar_subquery(),
            select(func.max(Event.id)).scalar_subquery(),
            select(func.max(Metric.id)).scalar_subquery(),
        )
    ).one()
    return ChangeMarker(*(int(value or 0) for value in row))


@dataclass(frozen=True)
class ExperimentSummary:
    """One experiment with the counts the dashboard shows."""

    id: int  # experiment id
    name: str  # its unique name
    dataset: str  # data set id, e.g. "synthetic"
    preset: str  # search-space preset
    status: str  # created, running, done, failed or cancelled
    created_at: datetime  # when it was created (UTC)
    architectures: int  # architectures recorded
    scored: int  # of which have a SMASH score
    retrained: int  # of which have a finished retrain
    jobs: dict[str, int]  # job state -> number of jobs in it


def experiment_summaries(session: Session) -> list[ExperimentSummary]:
    """Every experiment with its counts, newest first."""
    counts = {
        experiment_id: (total, scored, retrained)
        for experiment_id, total, scored, retrained in session.execute(
            select(
                Architecture.experiment_id,
                func.count(),
                func.count(Architecture.latest_error),
                func.count(Architecture.best_test_acc),
            ).group_by(Architecture.experiment_id)
        )
    }
    jobs: dict[int, dict[str, int]] = {}
    for experiment_id, state, number in session.execute(
        select(Job.experiment_id, Job.state, func.count()).group_by(Job.experiment_id, Job.state)
    ):
        jobs.setdefault(experiment_id, {})[state] = int(number)
    experiments = session.execute(
        select(
            Experiment.id,
            Experiment.name,
            Experiment.dataset,
            Experiment.preset,
            Experiment.status,
            Experiment.created_at,
        ).order_by(Experiment.id.desc())
    ).all()
    return [
        ExperimentSummary(
            *row,
            *(int(value) for value in counts.get(row[0], (0, 0, 0))),
            jobs=jobs.get(row[0], {}),
        )
        for row in experiments
    ]


@dataclass(frozen=True)
class ProxyPair:
    """A retrained architecture: its SMASH error beside its true accuracy."""

    id: int  # architecture id
    err: float  # SMASH error of its newest score, percent
    acc: float  # best test accuracy of a finished retrain, percent
    partial: bool = False  # the error is racing's, measured on part of the validation images


def proxy_pairs(session: Session, experiment_id: int) -> list[ProxyPair]:
    """The experiment's architectures that have both a score and a finished retrain, by id."""
    rows = session.execute(
        select(
            Architecture.id,
            Architecture.latest_error,
            Architecture.best_test_acc,
            Architecture.latest_partial,
        )
        .where(Architecture.experiment_id == experiment_id)
        .where(Architecture.best_test_acc.is_not(None), Architecture.latest_error.is_not(None))
        .order_by(Architecture.id)
    )
    return [
        ProxyPair(ident, float(err), float(acc), bool(partial))
        for ident, err, acc, partial in rows
    ]


@dataclass(frozen=True)
class BenchPair:
    """A scored architecture: its SMASH error beside a published benchmark's accuracy of it.

    A separate type from ``ProxyPair``: a benchmark's accuracy was measured by
    someone else, with another protocol, and is never mixed with a retrain's.
    """

    id: int  # architecture id
    err: float  # SMASH error of its newest score, percent
    bench: float  # the benchmark table's accuracy of it, percent
    partial: bool = False  # the error is racing's, measured on part of the validation images


def bench_pairs(session: Session, experiment_id: int) -> list[BenchPair]:
    """The experiment's architectures that have both a score and a benchmark accuracy.

    Ordered as the engine ranks them (complete scores first, then by error, then
    id); one scan of the error's browse index, which holds every column read.
    """
    rows = session.execute(
        select(
            Architecture.id,
            Architecture.latest_error,
            Architecture.bench_acc,
            Architecture.latest_partial,
        )
        .where(Architecture.experiment_id == experiment_id)
        .where(Architecture.latest_error.is_not(None), Architecture.bench_acc.is_not(None))
        .order_by(Architecture.latest_partial, Architecture.latest_error, Architecture.id)
    )
    return [
        BenchPair(ident, float(err), float(bench), bool(partial))
        for ident, err, bench, partial in rows
    ]


@dataclass(frozen=True)
class TruthCounts:
    """What an experiment's SMASH errors can be compared with."""

    scored: int  # architectures with a SMASH error
    benchmark: int  # of which have a benchmark accuracy
    retrained: int  # of which have a finished retrain
    table: dict[str, Any] | None  # the experiment config's "truth" ({"path", "column"}), if any


def truth_counts(session: Session, experiment_id: int) -> TruthCounts:
    """How many scored architectures have each kind of truth, and which table gave benchmarks.

    Raises:
        StorageError: The experiment does not exist.
    """
    config = session.scalar(select(Experiment.config).where(Experiment.id == experiment_id))
    if config is None:
        raise StorageError(f"experiment {experiment_id} does not exist")
    scored, benchmark, retrained = session.execute(
        select(
            func.count(),
            func.count(Architecture.bench_acc),
            func.count(Architecture.best_test_acc),
        )
        .where(Architecture.experiment_id == experiment_id)
        .where(Architecture.latest_error.is_not(None))
    ).one()
    table = config.get("truth") if isinstance(config, dict) else None
    return TruthCounts(
        int(scored), int(benchmark), int(retrained), table if isinstance(table, dict) else None
    )


def scored_costs(
    session: Session, experiment_id: int, cost: str = "params"
) -> list[tuple[int, int, float]]:
    """(id, cost, SMASH error) of every scored architecture, by increasing cost then error.

    One scan of the cost's browse index, which also holds the error, so the
    (large) rows are never read.

    Args:
        session: The caller's session.
        experiment_id: The experiment.
        cost: "params" or "flops".

    Raises:
        StorageError: For another cost field.
    """
    if cost not in COST_FIELDS:
        raise StorageError(f"unknown cost {cost!r} (one of {', '.join(COST_FIELDS)})")
    column = Architecture.params if cost == "params" else Architecture.flops
    rows = session.execute(
        select(Architecture.id, column, Architecture.latest_error)
        .where(Architecture.experiment_id == experiment_id)
        .where(Architecture.latest_error.is_not(None))
        .order_by(column, Architecture.latest_error, Architecture.id)
    )
    return [(ident, int(value), float(err)) for ident, value, err in rows]


def architecture_rows(session: Session, ids: Iterable[int]) -> list[ArchitectureRow]:
    """Browser rows of the given architectures, in the order given; unknown ids are left out."""
    wanted = list(dict.fromkeys(ids))
    found: dict[int, ArchitectureRow] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        for row in session.execute(select(*_ROW_COLUMNS).where(Architecture.id.in_(chunk))):
            found[row[0]] = ArchitectureRow(*row)
    return [found[ident] for ident in wanted if ident in found]


def metric_names(session: Session, job_id: int) -> list[str]:
    """The names of a job's metric series, sorted."""
    query = select(Metric.name).where(Metric.job_id == job_id).distinct().order_by(Metric.name)
    return list(session.scalars(query))


def latest_metrics(session: Session, job_id: int) -> dict[str, tuple[int, float | None]]:
    """Each of a job's metrics at its highest step: name -> (step, value)."""
    newest = (
        select(Metric.name, func.max(Metric.step).label("step"))
        .where(Metric.job_id == job_id)
        .group_by(Metric.name)
        .subquery()
    )
    rows = session.execute(
        select(Metric.name, Metric.step, Metric.value)
        .join(newest, (newest.c.name == Metric.name) & (newest.c.step == Metric.step))
        .where(Metric.job_id == job_id)
    )
    return {name: (int(step), value) for name, step, value in rows}
