"""What the worker records: experiments, architectures, scores, metrics, events,
checkpoints and retrains.

Every function takes a caller-owned ``Session`` and never commits: a worker
groups one step's writes into one transaction. Batch writes are idempotent, so
re-running a step after a crash neither fails nor duplicates rows: they use
``INSERT ... ON CONFLICT`` of the session's dialect.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, Table, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.errors import NotFoundError, StorageError
from storage.models import (
    EVENT_LEVELS,
    EXPERIMENT_STATUSES,
    RETRAIN_STATES,
    Architecture,
    Base,
    Checkpoint,
    Event,
    Experiment,
    Job,
    Metric,
    Retrain,
    Score,
    utcnow,
)

# Ids per IN (...) list; well below SQLite's bound-parameter limit.
CHUNK = 500

_T = TypeVar("_T")


@dataclass(frozen=True)
class ArchitectureIn:
    """One architecture to record, as the engine describes it."""

    hash: str  # canonical hash of the architecture; unique within an experiment
    spec: str  # the architecture as JSON text, stored exactly as given
    params: int  # trainable parameters of the derived network
    flops: int  # floating point operations of one forward pass of one image
    depth: int  # number of layers on the longest path
    num_ops: int  # number of operations in the graph
    source: str = "random"  # how it was found: random, perturb, evolution, manual...
    bench_acc: float | None = None  # a published benchmark's accuracy of it (percent), if any


@dataclass(frozen=True)
class ScoreIn:
    """The proxy error of one architecture with generated weights."""

    architecture_id: int  # id returned by add_architectures
    error: float  # validation error in percent, 0..100
    loss: float | None  # mean validation loss; NaN is stored as NULL
    images: int  # validation images the error was measured on
    z_draws: int  # random codes drawn to generate the weights
    method: str = "full"  # how it was measured: full, racing...
    checkpoint_id: int | None = None  # HyperNet checkpoint that generated the weights
    job_id: int | None = None  # the score or search job that measured it
    rungs: Sequence[Sequence[float]] | None = None  # a racing survivor's (images, wrong, loss) per rung


@dataclass(frozen=True)
class MetricIn:
    """One point of a job's time series."""

    job_id: int  # the job it belongs to
    step: int  # training step (or epoch) of the point
    name: str  # series name, e.g. "train/loss"
    value: float | None  # the value; NaN is stored as NULL


def _chunks(items: Sequence[_T], size: int = CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert(session: Session, model: type[Base]) -> Any:
    """The dialect's INSERT (with ON CONFLICT support) for a model's table."""
    table = model.__table__
    assert isinstance(table, Table)
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _finite(value: float | None) -> float | None:
    # SQLite silently stores NaN as NULL; do the same on PostgreSQL so that
    # both backends sort and filter a diverged run the same way.
    if value is None or math.isnan(value):
        return None
    return float(value)


def _get(session: Session, model: type[_T], ident: int | str, noun: str) -> _T:
    # populate_existing: bulk UPDATEs in this module bypass the identity map.
    row = session.get(model, ident, populate_existing=True)
    if row is None:
        raise NotFoundError(f"no {noun} with id {ident}")
    return row


def get_experiment(session: Session, experiment_id: int) -> Experiment:
    """The experiment with this id; NotFoundError when there is none."""
    return _get(session, Experiment, experiment_id, "experiment")


def find_experiment(session: Session, name: str) -> Experiment:
    """The experiment with this name; NotFoundError when there is none."""
    experiment = session.scalars(select(Experiment).where(Experiment.name == name)).first()
    if experiment is None:
        raise NotFoundError(f"no experiment named {name!r}")
    return experiment


def get_job(session: Session, job_id: int) -> Job:
    """The job with this id; NotFoundError when there is none."""
    return _get(session, Job, job_id, "job")


def get_architecture(session: Session, architecture_id: int) -> Architecture:
    """The architecture with this id; NotFoundError when there is none."""
    return _get(session, Architecture, architecture_id, "architecture")


def get_checkpoint(session: Session, checkpoint_id: int) -> Checkpoint:
    """The checkpoint with this id; NotFoundError when there is none."""
    return _get(session, Checkpoint, checkpoint_id, "checkpoint")


def get_retrain(session: Session, retrain_id: int) -> Retrain:
    """The retrain with this id; NotFoundError when there is none."""
    return _get(session, Retrain, retrain_id, "retrain")


def _require_ids(session: Session, column: Any, ids: Iterable[int], noun: str) -> None:
    """Raise NotFoundError naming the first id that has no row (instead of an FK error)."""
    wanted = sorted(set(ids))
    for chunk in _chunks(wanted):
        found = set(session.scalars(select(column).where(column.in_(chunk))))
        missing = [ident for ident in chunk if ident not in found]
        if missing:
            raise NotFoundError(f"no {noun} with id {missing[0]}")


def create_experiment(
    session: Session,
    name: str,
    *,
    dataset: str,
    preset: str,
    search_space: dict[str, Any],
    config: dict[str, Any],
    seed: int,
) -> Experiment:
    """Add a new experiment.

    Args:
        session: The caller's session (flushed, not committed).
        name: Unique, human-chosen name.
        dataset: Data set id, e.g. "synthetic", "cifar10" or "npz:/path/to/file.npz".
        preset: Name of the preset the configs came from.
        search_space: The search space as a JSON-able dict.
        config: The train/score/search/retrain configs as a JSON-able dict.
        seed: Seed of every random choice in the experiment.

    Raises:
        StorageError: An experiment with this name exists.
    """
    if not name.strip():
        raise StorageError("an experiment needs a non-empty name")
    existing = session.scalars(select(Experiment.id).where(Experiment.name == name)).first()
    if existing is not None:
        raise StorageError(f"an experiment named {name!r} already exists (id {existing})")
    experiment = Experiment(
        name=name,
        dataset=dataset,
        preset=preset,
        search_space=search_space,
        config=config,
        seed=seed,
        status="created",
    )
    session.add(experiment)
    session.flush()
    return experiment


def set_experiment_status(session: Session, experiment_id: int, status: str) -> Experiment:
    """Set an experiment's status (created, running, done, failed or cancelled)."""
    if status not in EXPERIMENT_STATUSES:
        raise StorageError(
            f"unknown experiment status {status!r} (one of {', '.join(EXPERIMENT_STATUSES)})"
        )
    experiment = get_experiment(session, experiment_id)
    experiment.status = status
    session.flush()
    return experiment


def add_architectures(
    session: Session, experiment_id: int, rows: Iterable[ArchitectureIn]
) -> dict[str, int]:
    """Insert architectures that are new to the experiment; return the id of every hash given.

    Args:
        session: The caller's session.
        experiment_id: The experiment they belong to.
        rows: Architectures; a hash seen before (in this batch or earlier) keeps its first row.

    Returns:
        hash -> architecture id, for every distinct hash in ``rows``.
    """
    unique: dict[str, ArchitectureIn] = {}
    for row in rows:
        unique.setdefault(row.hash, row)
    if not unique:
        return {}
    get_experiment(session, experiment_id)
    now = utcnow()
    values = []
    for row in unique.values():
        if not isinstance(row.spec, str):
            raise StorageError(
                f"architecture {row.hash}: spec must be JSON text, got {type(row.spec).__name__}"
            )
        try:
            json.loads(row.spec)
        except ValueError as exc:
            raise StorageError(f"architecture {row.hash}: spec is not valid JSON ({exc})") from None
        values.append(
            {
                "experiment_id": experiment_id,
                "hash": row.hash,
                "spec": row.spec,
                "params": int(row.params),
                "flops": int(row.flops),
                "depth": int(row.depth),
                "num_ops": int(row.num_ops),
                "source": row.source,
                "bench_acc": _finite(row.bench_acc),
                "created_at": now,
            }
        )
    statement = _insert(session, Architecture).on_conflict_do_nothing(
        index_elements=["experiment_id", "hash"]
    )
    session.execute(statement, values)
    ids: dict[str, int] = {}
    for chunk in _chunks(list(unique)):
        query = select(Architecture.hash, Architecture.id).where(
            Architecture.experiment_id == experiment_id, Architecture.hash.in_(chunk)
        )
        ids.update((hash_, ident) for hash_, ident in session.execute(query))
    return ids


def add_scores(session: Session, rows: Iterable[ScoreIn]) -> None:
    """Insert scores, skipping any (architecture, checkpoint, method) already scored.

    Also refreshes the architectures' ``latest_error``, ``latest_loss`` and
    ``latest_partial`` from their newest score.

    Args:
        session: The caller's session.
        rows: The scores to record.
    """
    rows = list(rows)
    if not rows:
        return
    _require_ids(session, Architecture.id, (row.architecture_id for row in rows), "architecture")
    _require_ids(
        session,
        Checkpoint.id,
        (row.checkpoint_id for row in rows if row.checkpoint_id is not None),
        "checkpoint",
    )
    _require_ids(session, Job.id, (row.job_id for row in rows if row.job_id is not None), "job")
    now = utcnow()
    values = []
    for row in rows:
        error = _finite(row.error)
        if error is None:
            raise StorageError(
                f"architecture {row.architecture_id}: error must be a number, got NaN"
            )
        values.append(
            {
                "architecture_id": row.architecture_id,
                "checkpoint_id": row.checkpoint_id,
                "job_id": row.job_id,
                "error": error,
                "loss": _finite(row.loss),
                "images": int(row.images),
                "z_draws": int(row.z_draws),
                "method": row.method,
                "rungs": None if row.rungs is None else [[float(v) for v in rung] for rung in row.rungs],
                "created_at": now,
            }
        )
    # No conflict target: the key is either the unique constraint or, for
    # scores without a checkpoint, the partial unique index.
    session.execute(_insert(session, Score).on_conflict_do_nothing(), values)
    _refresh_latest_scores(session, sorted({row.architecture_id for row in rows}))


def _refresh_latest_scores(session: Session, architecture_ids: Sequence[int]) -> None:
    def newest(column: Any) -> Any:
        return (
            select(column)
            .where(Score.architecture_id == Architecture.id)
            .order_by(Score.id.desc())
            .limit(1)
            .scalar_subquery()
        )

    for chunk in _chunks(architecture_ids):
        session.execute(
            update(Architecture)
            .where(Architecture.id.in_(chunk))
            .values(
                latest_error=newest(Score.error),
                latest_loss=newest(Score.loss),
                latest_partial=newest(is_partial(Score.method)),
            )
            .execution_options(synchronize_session=False)
        )


def is_partial(method: Any) -> ColumnElement[bool]:
    """Whether a score's method marks it partial: racing dropped the candidate early.

    Racing's dropped candidates are labelled "racing", or "racing+..." when the
    scoring differed from one plain pass (``engine.params.score_method``); its
    survivors, scored on every image, are labelled "full" like any complete score.
    """
    return or_(method == "racing", method.like("racing+%"))


def scored_hashes(
    session: Session, experiment_id: int, checkpoint_id: int | None, *, method: str | None = None
) -> set[str]:
    """Hashes of the experiment's architectures already scored against a checkpoint.

    Args:
        session: The caller's session.
        experiment_id: The experiment.
        checkpoint_id: The checkpoint; None means scores recorded without one.
        method: Only count scores of this method; None counts any.
    """
    query = (
        select(Architecture.hash)
        .join(Score, Score.architecture_id == Architecture.id)
        .where(Architecture.experiment_id == experiment_id)
        .where(
            Score.checkpoint_id.is_(None)
            if checkpoint_id is None
            else Score.checkpoint_id == checkpoint_id
        )
    )
    if method is not None:
        query = query.where(Score.method == method)
    return set(session.scalars(query))


def scores_by_hash(
    session: Session,
    experiment_id: int,
    checkpoint_id: int | None,
    hashes: Iterable[str] | None = None,
) -> dict[str, Score]:
    """The newest score of each of the experiment's architectures against a checkpoint.

    A resumed search passes these to the engine as what it already knows, so
    nothing is scored twice.

    Args:
        session: The caller's session.
        experiment_id: The experiment.
        checkpoint_id: The checkpoint; None means scores recorded without one.
        hashes: Only these architectures (a search's chunk); None reads them all.
    """
    if hashes is not None:
        found: dict[str, Score] = {}
        for chunk in _chunks(sorted(set(hashes))):
            found.update(_scores_by_hash(session, experiment_id, checkpoint_id, chunk))
        return found
    return _scores_by_hash(session, experiment_id, checkpoint_id, None)


def _scores_by_hash(
    session: Session, experiment_id: int, checkpoint_id: int | None, hashes: Sequence[str] | None
) -> dict[str, Score]:
    query = (
        select(Architecture.hash, Score)
        .join(Score, Score.architecture_id == Architecture.id)
        .where(Architecture.experiment_id == experiment_id)
        .where(
            Score.checkpoint_id.is_(None)
            if checkpoint_id is None
            else Score.checkpoint_id == checkpoint_id
        )
        .order_by(Score.id)
    )
    if hashes is not None:
        query = query.where(Architecture.hash.in_(hashes))
    # Ascending ids: a newer score of the same architecture overwrites an older one.
    return {hash_: score for hash_, score in session.execute(query)}


def count_without_truth(session: Session, job_id: int) -> int:
    """Architectures a job scored that carry no benchmark accuracy (``bench_acc`` NULL).

    In an experiment with a benchmark table these are the cells the table lacks.
    """
    query = (
        select(func.count(func.distinct(Score.architecture_id)))
        .join(Architecture, Architecture.id == Score.architecture_id)
        .where(Score.job_id == job_id, Architecture.bench_acc.is_(None))
    )
    return int(session.scalar(query) or 0)


def add_metrics(session: Session, rows: Iterable[MetricIn]) -> None:
    """Record metric points; a point recorded again (a re-run step) replaces the old value.

    Args:
        session: The caller's session.
        rows: The points; within one batch the last point for a key wins.
    """
    latest: dict[tuple[int, str, int], MetricIn] = {}
    for row in rows:
        latest[(row.job_id, row.name, row.step)] = row
    if not latest:
        return
    _require_ids(session, Job.id, (row.job_id for row in latest.values()), "job")
    now = utcnow()
    values = [
        {
            "job_id": row.job_id,
            "step": int(row.step),
            "name": row.name,
            "value": _finite(row.value),
            "created_at": now,
        }
        for row in latest.values()
    ]
    statement = _insert(session, Metric)
    statement = statement.on_conflict_do_update(
        index_elements=["job_id", "name", "step"],
        set_={"value": statement.excluded.value, "created_at": statement.excluded.created_at},
    )
    session.execute(statement, values)


def add_event(
    session: Session,
    message: str,
    *,
    level: str = "info",
    job_id: int | None = None,
    experiment_id: int | None = None,
) -> Event:
    """Append a line to the activity log.

    Args:
        session: The caller's session.
        message: What happened, for people.
        level: info, warning or error.
        job_id: The job it concerns, if any.
        experiment_id: The experiment it concerns, if any (taken from the job when omitted).
    """
    if level not in EVENT_LEVELS:
        raise StorageError(f"unknown event level {level!r} (one of {', '.join(EVENT_LEVELS)})")
    if job_id is not None and experiment_id is None:
        experiment_id = get_job(session, job_id).experiment_id
    event = Event(job_id=job_id, experiment_id=experiment_id, level=level, message=message)
    session.add(event)
    session.flush()
    return event


def add_checkpoint(
    session: Session,
    job_id: int,
    step: int,
    path: str,
    metrics: dict[str, Any] | None = None,
) -> Checkpoint:
    """Record a checkpoint file; saving the same job and step again updates it in place.

    Args:
        session: The caller's session.
        job_id: The job that saved it.
        step: Training step it was saved at.
        path: Where the file is (usually under ``Database.checkpoints_dir``).
        metrics: Figures at that step, e.g. {"loss": 1.2}.
    """
    get_job(session, job_id)
    statement = _insert(session, Checkpoint).values(
        job_id=job_id, step=int(step), path=str(path), metrics=metrics or {}, created_at=utcnow()
    )
    statement = statement.on_conflict_do_update(
        index_elements=["job_id", "step"],
        set_={
            "path": statement.excluded.path,
            "metrics": statement.excluded.metrics,
            "created_at": statement.excluded.created_at,
        },
    )
    session.execute(statement)
    query = select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step)
    return session.scalars(query.execution_options(populate_existing=True)).one()


def latest_train_checkpoint(session: Session, experiment_id: int) -> Checkpoint | None:
    """The newest checkpoint of the experiment's finished HyperNet training jobs.

    What scoring and exports use when no particular checkpoint is asked for:
    the highest step of the most recent train job that is done.

    Args:
        session: The caller's session.
        experiment_id: The experiment.
    """
    query = (
        select(Checkpoint)
        .join(Job, Job.id == Checkpoint.job_id)
        .where(Job.experiment_id == experiment_id, Job.kind == "train", Job.state == "done")
        .order_by(Job.id.desc(), Checkpoint.step.desc(), Checkpoint.id.desc())
        .limit(1)
    )
    return session.scalars(query).first()


def set_retrain_state(session: Session, architecture_ids: Iterable[int], state: str | None) -> None:
    """Set the browse column ``retrain_state`` (e.g. "queued" when a retrain job is enqueued).

    Args:
        session: The caller's session.
        architecture_ids: The architectures.
        state: queued, running, done, failed, or None to clear.
    """
    if state is not None and state not in RETRAIN_STATES:
        raise StorageError(f"unknown retrain state {state!r} (one of {', '.join(RETRAIN_STATES)})")
    ids = sorted(set(architecture_ids))
    _require_ids(session, Architecture.id, ids, "architecture")
    _write_retrain_state(session, ids, state)


def _write_retrain_state(
    executor: Session | Connection, architecture_ids: Sequence[int], state: str | None
) -> None:
    for chunk in _chunks(architecture_ids):
        executor.execute(
            update(Architecture)
            .where(Architecture.id.in_(chunk))
            .values(retrain_state=state)
            .execution_options(synchronize_session=False)
        )


def refresh_retrain_states(
    executor: Session | Connection, architecture_ids: Iterable[int]
) -> None:
    """Recompute the browse column ``retrain_state`` from the architectures' retrain jobs.

    "running" while one of its retrain jobs runs, "queued" while one waits (queued or
    paused); otherwise the outcome of its newest retrain job that was not cancelled
    ("done" or "failed"), as if the cancelled ones had never been asked for; None when
    there is none. The job queue calls this on every transition of a retrain job, so a
    job cancelled or failed without its worker (while queued, or after its worker died)
    leaves no stale state behind.

    Args:
        executor: The caller's session or connection.
        architecture_ids: The architectures; unknown ids are ignored.
    """
    ids = sorted({int(ident) for ident in architecture_ids})
    if not ids:
        return
    retrained: Any = Job.params["architecture_id"].as_integer()
    bind = executor.get_bind() if isinstance(executor, Session) else executor
    if bind.dialect.name == "sqlite":
        # SQLite stores JSON as text, which something other than smash may have broken
        # (NaN is no JSON): one such job must not stop every retrain from being recorded.
        retrained = case((func.json_valid(Job.params) == 1, retrained))
    job_states: dict[int, list[tuple[int, str]]] = {ident: [] for ident in ids}
    for chunk in _chunks(ids):
        query = select(retrained, Job.id, Job.state).where(
            Job.kind == "retrain", retrained.in_(chunk)
        )
        for architecture_id, job_id, state in executor.execute(query):
            job_states[architecture_id].append((job_id, state))
    by_state: dict[str | None, list[int]] = {}
    for ident, found in job_states.items():
        states = {state for _, state in found}
        newest_outcome = max(
            ((job_id, state) for job_id, state in found if state in ("done", "failed")),
            default=None,
        )
        if "running" in states:
            retrain_state: str | None = "running"
        elif states & {"queued", "paused"}:
            retrain_state = "queued"
        else:
            retrain_state = newest_outcome[1] if newest_outcome else None
        by_state.setdefault(retrain_state, []).append(ident)
    for state, members in by_state.items():
        _write_retrain_state(executor, members, state)


def start_retrain(session: Session, architecture_id: int, job_id: int, *, epochs: int) -> Retrain:
    """Record that a retrain of an architecture has started; marks it running.

    Args:
        session: The caller's session.
        architecture_id: The architecture being retrained.
        job_id: The retrain job doing it.
        epochs: Planned number of epochs.
    """
    get_architecture(session, architecture_id)
    get_job(session, job_id)
    retrain = Retrain(architecture_id=architecture_id, job_id=job_id, epochs=epochs, curve=[])
    session.add(retrain)
    session.flush()
    set_retrain_state(session, [architecture_id], "running")
    return retrain


def unfinished_retrain(session: Session, job_id: int) -> Retrain | None:
    """The retrain a job started and has not finished (a paused or crashed run), if any."""
    query = (
        select(Retrain)
        .where(Retrain.job_id == job_id, Retrain.finished_at.is_(None))
        .order_by(Retrain.id.desc())
        .limit(1)
    )
    return session.scalars(query.execution_options(populate_existing=True)).first()


def _unfinished_retrain(session: Session, retrain_id: int) -> Retrain:
    retrain = get_retrain(session, retrain_id)
    if retrain.finished_at is not None:
        raise StorageError(f"retrain {retrain_id} already finished")
    return retrain


def finish_retrain(
    session: Session,
    retrain_id: int,
    *,
    test_acc: float,
    best_val_acc: float | None,
    curve: list[dict[str, Any]],
    weights_path: str | None = None,
) -> Retrain:
    """Record a finished retrain and update the architecture's ``best_test_acc``.

    Args:
        session: The caller's session.
        retrain_id: Id from start_retrain.
        test_acc: Test accuracy in percent.
        best_val_acc: Best validation accuracy in percent, if measured.
        curve: One dict per epoch (e.g. {"epoch": 1, "train_loss": ..., "val_acc": ...}).
        weights_path: Where the trained weights were saved, if they were.
    """
    retrain = _unfinished_retrain(session, retrain_id)
    retrain.test_acc = _finite(test_acc)
    retrain.best_val_acc = _finite(best_val_acc)
    retrain.curve = list(curve)
    retrain.weights_path = weights_path
    retrain.finished_at = utcnow()
    session.flush()
    best = (
        select(func.max(Retrain.test_acc))
        .where(Retrain.architecture_id == retrain.architecture_id)
        .where(Retrain.finished_at.is_not(None))
        .scalar_subquery()
    )
    session.execute(
        update(Architecture)
        .where(Architecture.id == retrain.architecture_id)
        .values(best_test_acc=best, retrain_state="done")
        .execution_options(synchronize_session=False)
    )
    return retrain


def fail_retrain(
    session: Session, retrain_id: int, *, curve: list[dict[str, Any]] | None = None
) -> Retrain:
    """Record that a retrain stopped without a result; marks the architecture failed.

    Args:
        session: The caller's session.
        retrain_id: Id from start_retrain.
        curve: The epochs that did complete, if any.
    """
    retrain = _unfinished_retrain(session, retrain_id)
    if curve is not None:
        retrain.curve = list(curve)
    retrain.finished_at = utcnow()
    session.flush()
    set_retrain_state(session, [retrain.architecture_id], "failed")
    return retrain
