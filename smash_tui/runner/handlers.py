"""One handler per job kind: read what the job needs, run its engine runner, finalise.

A handler returns None when the job stopped on request (it has checkpointed), else a
`Finalizer`: what to write in the transaction that marks the job done.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from sqlalchemy.orm import Session

from engine.errors import ConfigError
from engine.jobs import run_chunk_job, run_retrain_job, run_score_job, run_search_job, run_train
from engine.kinds import kind_of
from engine.params import (
    ChunkParams,
    ExperimentSpec,
    RetrainParams,
    ScoreParams,
    SearchParams,
    TrainParams,
    is_full_score,
    score_method,
)
from smash_tui.runner.chunks import JobBoard, landed
from smash_tui.runner.reporter import JobContext
from storage import chunks, queue, records
from storage.db import Database
from storage.models import Checkpoint, Experiment, Job

Finalizer = Callable[[Session], None]
Handler = Callable[[Database, torch.device, JobContext, Job, Experiment], "Finalizer | None"]


def job_dir(db: Database, experiment_id: int) -> Path:
    """The experiment's folder of checkpoints and weights (created)."""
    path = db.checkpoints_dir / f"experiment-{experiment_id}"
    path.mkdir(parents=True, exist_ok=True)
    return path

def experiment_spec(experiment: Experiment) -> ExperimentSpec:
    """The engine's view of a stored experiment."""
    return ExperimentSpec.from_record(
        experiment.search_space, experiment.config, experiment.seed
    )

def train(
    db: Database, device: torch.device, context: JobContext, job: Job, experiment: Experiment
) -> Finalizer | None:
    spec = experiment_spec(experiment)
    params = TrainParams.from_params(job.params)
    path = job_dir(db, experiment.id) / f"train-{job.id}.pt"
    if path.exists():
        with db.session() as session:
            saved = queue.latest_checkpoint(session, job.id)
        step = "an unrecorded step" if saved is None else f"step {saved.step}"
        context.event(f"resuming HyperNet training from its checkpoint at {step}")
    world = context.world
    if world.size > 1:
        context.event(f"training data-parallel on {world.size} processes ({device.type})")
    finished = run_train(spec, params, context, device=device, checkpoint_path=path, world=world)
    if not finished:
        return None

    def finalize(session: Session) -> None:
        saved = queue.latest_checkpoint(session, job.id)
        step = "?" if saved is None else saved.step
        records.add_event(session, f"HyperNet trained: {step} steps", job_id=job.id)

    return finalize

def hypernet_checkpoint(session: Session, job: Job, experiment: Experiment) -> Checkpoint:
    """The HyperNet checkpoint a search job scores with: its train job's latest, else the experiment's."""
    if job.depends_on_id is not None:
        dependency = records.get_job(session, job.depends_on_id)
        if dependency.kind == "train":
            saved = queue.latest_checkpoint(session, dependency.id)
            if saved is None:
                raise ConfigError(f"train job {dependency.id} has no checkpoint to search with")
            return saved
    saved = records.latest_train_checkpoint(session, experiment.id)
    if saved is None:
        raise ConfigError(f"experiment {experiment.id} has no trained HyperNet yet")
    return saved

def search(
    db: Database, device: torch.device, context: JobContext, job: Job, experiment: Experiment
) -> Finalizer | None:
    """Coordinate a search: its batches go out as chunk jobs that any worker scores."""
    spec = experiment_spec(experiment)
    params = SearchParams.from_params(job.params)
    with db.session() as session:
        saved = hypernet_checkpoint(session, job, experiment)
        rows = records.scores_by_hash(session, experiment.id, saved.id)
    context.checkpoint_id = saved.id
    survivor = score_method("full", params.score)  # a racing survivor's label
    # This search's survivors lead its next rounds again after a restart.
    known = {hash_: landed(row, job.id, survivor) for hash_, row in rows.items()}
    if known:
        context.event(
            f"resuming search: {len(known)} architectures already scored against "
            f"checkpoint {saved.id} are not scored again"
        )
    board = JobBoard(
        context,
        checkpoint_id=saved.id,
        budget=params.search.budget,
        known={
            hash_: (
                row.error if is_full_score(row.method) else math.nan,
                row.job_id == job.id,
            )
            for hash_, row in rows.items()
        },
    )
    finished = False
    try:
        finished = run_search_job(
            spec, params, context, board=board, checkpoint_id=saved.id, device=device, known=known
        )
    finally:
        if not finished:
            board.stop(context.request)
    if not finished:
        return None
    board.report(final=True)
    with db.session() as session:
        scored, _ = chunks.search_tally(session, job.id)
    mine_before = sum(1 for row in rows.values() if row.job_id == job.id)

    def finalize(session: Session) -> None:
        best = "" if math.isinf(board.best_error) else f"; best error {board.best_error:.2f}%"
        # Cells the benchmark table lacks are stored without a truth: say how many.
        missing = (
            ""
            if spec.truth is None
            else f"; {records.count_without_truth(session, job.id)} not in the benchmark table"
        )
        records.add_event(
            session,
            f"search done: {scored - mine_before} architectures scored by this run "
            f"({len(known)} known before{missing}){best}",
            job_id=job.id,
        )

    return finalize


def chunk(
    db: Database, device: torch.device, context: JobContext, job: Job, experiment: Experiment
) -> Finalizer | None:
    """Score a chunk of a search (on whichever worker claimed it)."""
    spec = experiment_spec(experiment)
    params = ChunkParams.from_params(job.params)
    with db.session() as session:
        saved = records.get_checkpoint(session, params.checkpoint_id)
        scored = set(records.scores_by_hash(session, experiment.id, saved.id, params.hashes))
    context.checkpoint_id = saved.id
    finished = run_chunk_job(
        spec,
        params,
        context,
        device=device,
        hypernet_path=db.readable_file(saved.path, "HyperNet checkpoint"),
        scored=scored,
    )
    return (lambda _session: None) if finished else None


def score(
    db: Database, device: torch.device, context: JobContext, job: Job, experiment: Experiment
) -> Finalizer | None:
    spec = experiment_spec(experiment)
    params = ScoreParams.from_params(job.params)
    with db.session() as session:
        if params.checkpoint_id is not None:
            saved: Checkpoint | None = records.get_checkpoint(session, params.checkpoint_id)
        else:
            saved = records.latest_train_checkpoint(session, experiment.id)
        if saved is None:
            raise ConfigError(f"experiment {experiment.id} has no trained HyperNet yet")
        if records.get_job(session, saved.job_id).experiment_id != experiment.id:
            raise ConfigError(
                f"checkpoint {saved.id} belongs to another experiment than {experiment.id}"
            )
        rows = [records.get_architecture(session, ident) for ident in params.architecture_ids]
        method = score_method("full", params.score)
        done = records.scored_hashes(session, experiment.id, saved.id, method=method)
    for row in rows:
        if row.experiment_id != experiment.id:
            raise ConfigError(
                f"architecture {row.id} belongs to experiment {row.experiment_id}, "
                f"not {experiment.id}"
            )
    context.checkpoint_id = saved.id
    todo = [kind_of(spec.space).parse(row.spec) for row in rows if row.hash not in done]
    if len(todo) < len(rows):
        context.event(
            f"{len(rows) - len(todo)} of {len(rows)} architectures already have a "
            f"{method} score against checkpoint {saved.id}"
        )
    finished = run_score_job(
        spec,
        params,
        context,
        device=device,
        hypernet_path=db.readable_file(saved.path, "HyperNet checkpoint"),
        architectures=todo,
    )
    return (lambda _session: None) if finished else None


def retrain(
    db: Database, device: torch.device, context: JobContext, job: Job, experiment: Experiment
) -> Finalizer | None:
    spec = experiment_spec(experiment)
    params = RetrainParams.from_params(job.params)
    with db.session() as session:
        row = records.get_architecture(session, params.architecture_id)
        if row.experiment_id != experiment.id:
            raise ConfigError(
                f"architecture {row.id} belongs to experiment {row.experiment_id}, "
                f"not {experiment.id}"
            )
        retrain = records.unfinished_retrain(session, job.id)
        if retrain is None:
            retrain = records.start_retrain(
                session, row.id, job.id, epochs=params.retrain.epochs
            )
        else:
            records.set_retrain_state(session, [row.id], "running")
        session.commit()
    context.retrain_id = retrain.id
    arch = kind_of(spec.space).parse(row.spec)
    folder = job_dir(db, experiment.id)
    checkpoint_path = folder / f"retrain-{job.id}.pt"
    weights_path = folder / f"retrain-{job.id}-weights.pt"
    if checkpoint_path.exists():
        context.event("resuming the retrain from its checkpoint")
    result = run_retrain_job(
        spec,
        params,
        arch,
        context,
        device=device,
        checkpoint_path=checkpoint_path,
        weights_path=weights_path,
    )
    if result is None:
        return None

    def finalize(session: Session) -> None:
        records.finish_retrain(
            session,
            retrain.id,
            test_acc=result.test_acc,
            best_val_acc=result.best_val_acc,
            curve=[dict(point) for point in result.curve],
            weights_path=db.stored_path(weights_path),
        )
        records.add_event(
            session,
            f"architecture {row.id} retrained for {result.epochs} epochs: "
            f"test accuracy {result.test_acc:.2f}%",
            job_id=job.id,
        )

    return finalize


HANDLERS: dict[str, Handler] = {
    "train": train,
    "search": search,
    "chunk": chunk,
    "score": score,
    "retrain": retrain,
}
