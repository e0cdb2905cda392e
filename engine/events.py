"""Typed events the engine loops report through callbacks.

The loops know nothing of databases or terminals: a worker turns these into rows,
the CLI into progress bars. Every number is a plain Python value (already copied off
the device), so a callback never triggers a device synchronisation of its own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainProgress:
    """A periodic report from HyperNet training (the loop's only host sync point)."""

    step: int  # optimiser steps done
    total_steps: int  # steps the run will take
    epoch: int  # current epoch, from 0
    loss: float  # mean training loss since the last report
    accuracy: float  # mean training accuracy (percent) since the last report
    images_per_s: float  # throughput since the last report
    lr: float  # learning rate of the last step
    elapsed_s: float  # wall time of this run so far (resumed runs count from resume)
    eta_s: float  # estimated seconds to finish


@dataclass(frozen=True)
class TrainEval:
    """Validation with generated weights at the end of an epoch."""

    step: int
    epoch: int
    error: float  # mean validation error (percent) over the evaluation architectures
    loss: float  # mean validation loss
    architectures: int  # how many random architectures were evaluated
    images: int  # validation images per architecture


@dataclass(frozen=True)
class CheckpointSaved:
    """A checkpoint was written atomically."""

    step: int  # optimiser steps it holds (HyperNet) or epochs (retrain)
    path: str
    metrics: dict[str, float]  # latest loss / accuracy at save time


__all__ = ["CheckpointSaved", "TrainEval", "TrainProgress"]
