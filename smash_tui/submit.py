"""Queue work: check what the user asked for with the engine's rules, then write the jobs.

The command line and the app both queue through these functions, so one action has
one rule set: a setting is refused here, with a one-line message, before anything is
written. The rules themselves live in the engine's torch-free modules
(`engine.params`, `engine.probe`); the worker checks the stored JSON again before it
runs. Nothing here imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.config import ScoreConfig
from engine.errors import ConfigError, DatasetError
from engine.params import ExperimentSpec, ScoreParams, config_from_dict, config_to_dict
from engine.plans import SearchPlan, SearchRequest, plan_retrain
from engine.probe import DataShape, check_searchable, probe_dataset
from storage.db import Database
from storage.errors import StorageError
from storage.models import Experiment, Job
from storage.queue import enqueue
from storage.records import (
    create_experiment,
    get_architecture,
    get_checkpoint,
    get_experiment,
    get_job,
)


@dataclass(frozen=True)
class CreatedSearch:
    """What `queue_search` wrote."""

    experiment_id: int  # the new experiment
    name: str  # its name
    train_job_id: int  # the HyperNet training job
    search_job_id: int  # the search job, depending on the training job

    @property
    def job_ids(self) -> tuple[int, int]:
        return (self.train_job_id, self.search_job_id)


def queue_search(db: Database, request: SearchRequest, plan: SearchPlan, shape: DataShape) -> CreatedSearch:
    """Create an experiment and queue its train and search jobs, in one transaction.

    Args:
        db: The open database.
        request: What the user asked for (its name, preset and data set are stored).
        plan: `engine.plans.plan_search(request)`.
        shape: The data set's shape (`engine.probe.probe_dataset`), stored on the experiment.

    Raises:
        ConfigError: The data set cannot be searched with these settings.
        DatasetError: Its validation split is too small to rank architectures on.
        StorageError: E.g. the name is taken.
    """
    check_search(plan, shape)
    spec = ExperimentSpec(
        space=plan.space,
        data=plan.data,
        hypernet=plan.hypernet,
        seed=request.seed,
        **shape.to_dict(),
        weights=plan.weights,
        truth=plan.truth,
    )
    with db.session() as session:
        name = request.name
        if name is None:
            base = f"{plan.data.kind}-{request.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
            name = unique_name(session, base)
        experiment = create_experiment(
            session,
            name,
            dataset=plan.data.dataset,
            preset=request.preset,
            search_space=plan.space.to_dict(),
            config={**spec.config(), "hypernet_size": request.hypernet},
            seed=request.seed,
        )
        train_job = enqueue(session, experiment.id, "train", plan.train.to_params())
        search_job = enqueue(
            session, experiment.id, "search", plan.search.to_params(), depends_on=train_job.id
        )
        session.commit()
        return CreatedSearch(experiment.id, experiment.name, train_job.id, search_job.id)


def check_search(plan: SearchPlan, shape: DataShape) -> None:
    """Refuse a search its data set cannot serve; needs no database.

    The command line calls it before it opens the database, so that a refused search
    creates no database file (nor a schema on a server).

    Raises:
        ConfigError: The validation split is too small to rank architectures on, or not
            one training batch fits.
    """
    check_searchable(shape, plan.data)
    batch = plan.train.train.batch_size
    if batch > shape.train_images:
        raise ConfigError(
            f"--batch-size {batch} is more than the {shape.train_images} training images of "
            f"{plan.data.dataset}",
            "batch_size",
        )


def unique_name(session: Session, base: str) -> str:
    """`base`, or `base-2`, `base-3`... whichever no experiment has yet."""
    taken = set(session.scalars(select(Experiment.name).where(Experiment.name.like(f"{base}%"))))
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"


def experiment_spec(experiment: Experiment) -> ExperimentSpec:
    """The engine's view of a stored experiment (ConfigError when it cannot be read)."""
    return ExperimentSpec.from_record(experiment.search_space, experiment.config, experiment.seed)


def training_images(experiment: Experiment) -> int | None:
    """The experiment's training split size, if it can be known without loading the data.

    Experiments keep it since their data set was first probed; for one stored before,
    the data set's headers are read now. None when even that fails (the worker, with
    the data in hand, then checks and refuses what cannot work).
    """
    stored = experiment.config.get("train_images") if isinstance(experiment.config, dict) else None
    if isinstance(stored, int):
        return stored
    try:
        shape = probe_dataset(experiment_spec(experiment).data)
    except (ConfigError, DatasetError):
        return None
    return None if shape is None else shape.train_images


def queue_retrain(
    session: Session, architecture_id: int, settings: Mapping[str, Any], *, priority: int = 0
) -> Job:
    """Queue a from-scratch retrain of an architecture and mark it queued in the browser.

    Args:
        session: The caller's session (flushed, not committed).
        architecture_id: The architecture to retrain.
        settings: RetrainConfig fields, e.g. {"epochs": 20, "batch_size": 50, "lr": 0.1};
            the rest take the engine's defaults.
        priority: Higher runs first.

    Raises:
        ConfigError: A setting cannot work (a batch larger than the training split...).
        NotFoundError: No architecture has this id.
    """
    architecture = get_architecture(session, architecture_id)
    config = plan_retrain(settings, training_images(get_experiment(session, architecture.experiment_id)))
    # The whole config is stored: the job keeps what was asked even if a default changes.
    return enqueue(
        session,
        architecture.experiment_id,
        "retrain",
        {"architecture_id": architecture_id, "retrain": config_to_dict(config)},
        priority=priority,
    )  # the queue marks the architecture's retrain queued in the browser


def queue_score(
    session: Session,
    architecture_ids: Sequence[int],
    settings: Mapping[str, Any],
    *,
    checkpoint_id: int | None = None,
    priority: int = 0,
) -> Job:
    """Queue a (re)scoring of architectures of one experiment, e.g. with more z draws.

    Args:
        session: The caller's session (flushed, not committed).
        architecture_ids: The architectures, all of one experiment.
        settings: ScoreConfig fields, e.g. {"z_draws": 4, "bn_recalibration_batches": 8}.
        checkpoint_id: The HyperNet checkpoint; None: the experiment's newest when the job runs.
        priority: Higher runs first.

    Raises:
        ConfigError: A setting cannot work.
        NotFoundError: An architecture or the checkpoint does not exist.
        StorageError: No architectures, architectures of several experiments, or a
            checkpoint of another experiment.
    """
    if not architecture_ids:
        raise StorageError("a score job needs at least one architecture")
    score = config_from_dict(ScoreConfig, settings, "score")
    experiments = {get_architecture(session, ident).experiment_id for ident in architecture_ids}
    if len(experiments) != 1:
        raise StorageError("a score job scores architectures of one experiment only")
    experiment_id = experiments.pop()
    if checkpoint_id is not None:
        checkpoint = get_checkpoint(session, checkpoint_id)
        owner = get_job(session, checkpoint.job_id)
        if owner.experiment_id != experiment_id or owner.kind != "train":
            raise StorageError(
                f"checkpoint {checkpoint_id} is not a HyperNet checkpoint of experiment {experiment_id}"
            )
    params = ScoreParams(tuple(int(i) for i in architecture_ids), score, checkpoint_id)
    return enqueue(session, experiment_id, "score", params.to_params(), priority=priority)


__all__ = [
    "CreatedSearch",
    "check_search",
    "experiment_spec",
    "queue_retrain",
    "queue_score",
    "queue_search",
    "training_images",
    "unique_name",
]
