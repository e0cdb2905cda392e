"""Queue retrain and score jobs the worker understands, without torch.

The CLI and the Textual app both queue work through these, so the job parameters
stay in one format (see ``engine.params`` for every kind's params). Settings are
passed as partial config dicts: fields left out take the engine's defaults, and the
worker refuses (fails the job with a one-line message) what cannot work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from storage.errors import StorageError
from storage.models import Job
from storage.queue import enqueue
from storage.records import get_architecture


def enqueue_retrain(
    session: Session,
    architecture_id: int,
    retrain: Mapping[str, Any],
    *,
    priority: int = 0,
) -> Job:
    """Queue a from-scratch retrain of an architecture and mark it queued in the browser.

    Args:
        session: The caller's session (flushed, not committed).
        architecture_id: The architecture to retrain.
        retrain: RetrainConfig fields, e.g. {"epochs": 20, "batch_size": 50, "lr": 0.1}.
        priority: Higher runs first.

    Raises:
        NotFoundError: No architecture has this id.
    """
    architecture = get_architecture(session, architecture_id)
    job = enqueue(
        session,
        architecture.experiment_id,
        "retrain",
        {"architecture_id": architecture_id, "retrain": dict(retrain)},
        priority=priority,
    )  # the queue marks the architecture's retrain queued in the browser
    return job


def enqueue_score(
    session: Session,
    architecture_ids: Sequence[int],
    score: Mapping[str, Any],
    *,
    checkpoint_id: int | None = None,
    priority: int = 0,
) -> Job:
    """Queue a (re)scoring of architectures of one experiment, e.g. with more z draws.

    Args:
        session: The caller's session (flushed, not committed).
        architecture_ids: The architectures, all of one experiment.
        score: ScoreConfig fields, e.g. {"z_draws": 4, "bn_recalibration_batches": 8}.
        checkpoint_id: The HyperNet checkpoint; None uses the experiment's latest.
        priority: Higher runs first.

    Raises:
        NotFoundError: An architecture does not exist.
        StorageError: No architectures, or architectures of several experiments.
    """
    if not architecture_ids:
        raise StorageError("a score job needs at least one architecture")
    experiments = {get_architecture(session, ident).experiment_id for ident in architecture_ids}
    if len(experiments) != 1:
        raise StorageError("a score job scores architectures of one experiment only")
    return enqueue(
        session,
        experiments.pop(),
        "score",
        {
            "architecture_ids": [int(ident) for ident in architecture_ids],
            "score": dict(score),
            "checkpoint_id": checkpoint_id,
        },
        priority=priority,
    )
