"""Training the SMASH HyperNet: a fresh random architecture every minibatch.

`train_hypernet` is one top-to-bottom loop, airbench-style: the training split lives on
the device, batches are normalised, cropped and flipped there, and the host waits for
the device only at progress reports, checkpoints and epoch ends (each marked below).
Over the first half of training the sampler's budget and kernel limits are annealed
up to the full space; the learning rate follows a per-step cosine. Checkpoints hold the
model, optimiser, schedule position and every random generator, so a resumed run ends
exactly where an uninterrupted one would. A non-finite loss stops the run with
`TrainingDiverged` and leaves the last good checkpoint in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.arch import Architecture
from engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    numpy_rng_from_state,
    numpy_rng_state,
    save_checkpoint,
    set_torch_rng_state,
    torch_rng_state,
)
from engine.config import TrainConfig
from engine.data import Dataset, DeviceImages
from engine.device import autocast_context, host_sync_allowed
from engine.errors import TrainingDiverged, first_line
from engine.events import CheckpointSaved, TrainEval, TrainProgress
from engine.hypernet import HyperNetConfig
from engine.network import SmashNet
from engine.sampler import FULL_SPACE, sample
from engine.score import ScoreConfig, Scorer
from engine.space import SamplingLimits, SearchSpace

CHECKPOINT_KIND = "hypernet"




@dataclass(frozen=True)
class TrainOutcome:
    """How a call to `train_hypernet` ended."""

    finished: bool  # False: stopped on request, resumable from the checkpoint
    step: int
    total_steps: int
    checkpoint: str | None  # the last checkpoint written
    last_eval: TrainEval | None


def make_optimizer(net: SmashNet, config: TrainConfig) -> torch.optim.Adam:
    """Adam with weight decay on the shared weights and none on the HyperNet."""
    fused = net.stem_weight.device.type == "cuda"
    return torch.optim.Adam(
        [
            {"params": net.shared_parameters(), "weight_decay": config.weight_decay},
            {"params": net.hypernet_parameters(), "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        fused=fused or None,
    )


def cosine_lr(base: float, step: int, total: int) -> float:
    """Per-step cosine decay from `base` to 0 over `total` steps."""
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def train_step(
    net: SmashNet,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    arch: Architecture,
    z_generator: torch.Generator | None,
    autocast: contextlib.AbstractContextManager[None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate weights for `arch`, forward, backward, Adam. Returns (loss, correct) on the device."""
    with autocast:
        weights = net.generate(arch, generator=z_generator)
        logits = net(x, arch, weights)
    loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(1) == y).sum()


def build_smash(
    space: SearchSpace, num_classes: int, in_channels: int, hypernet: HyperNetConfig, device: torch.device | str
) -> SmashNet:
    """A SmashNet on `device`, in channels-last layout (the format its convolutions prefer)."""
    net = SmashNet(space, num_classes=num_classes, in_channels=in_channels, hypernet=hypernet)
    return net.to(device=device, memory_format=torch.channels_last)


def load_smash(path: str | Path, device: torch.device | str = "cpu") -> tuple[SmashNet, dict[str, Any]]:
    """The SMASH network stored in a HyperNet checkpoint, in eval mode, and the checkpoint dict."""
    state = load_checkpoint(path, map_location=device, expected_kind=CHECKPOINT_KIND)
    try:
        space = SearchSpace.from_dict(state["space"])
        hyper = HyperNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["hypernet"].items()})
        net = build_smash(space, state["num_classes"], state["in_channels"], hyper, device)
        net.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not hold a usable SMASH network: {first_line(exc)}") from None
    return net.eval(), state


def train_hypernet(
    net: SmashNet,
    data: Dataset,
    config: TrainConfig = TrainConfig(),
    *,
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
    on_progress: Callable[[TrainProgress], None] | None = None,
    on_eval: Callable[[TrainEval], None] | None = None,
    on_checkpoint: Callable[[CheckpointSaved], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainOutcome:
    """Train `net` (HyperNet and shared weights) on `data.train`.

    Args:
        net: the SMASH network, already on its device.
        data: the data set; its validation split is used for the epoch-end evaluation.
        config: training settings.
        checkpoint_path: where checkpoints go; an existing file is resumed from when `resume`.
        resume: continue from `checkpoint_path` if it exists.
        on_progress: periodic training reports.
        on_eval: validation with generated weights at each epoch end and at the end.
        on_checkpoint: called after each checkpoint is written.
        should_stop: polled between steps; True checkpoints and returns (pause / cancel).

    Raises:
        TrainingDiverged: the loss became NaN or infinite; the last good checkpoint is kept.
        CheckpointError: the checkpoint to resume from is unusable.
    """
    device = net.stem_weight.device
    space = net.space
    with host_sync_allowed(device):  # setup: the data set moves to the device once
        train_images = DeviceImages(data.train, device, data.mean, data.std)
    per_epoch = train_images.num_batches(config.batch_size, drop_last=True)
    if per_epoch == 0:
        raise ValueError(f"the training split has {len(train_images)} images, fewer than one batch of {config.batch_size}")
    total = per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    optimizer = make_optimizer(net, config)
    layout = dict(channels_last=config.channels_last)

    # All randomness, from one seed: architectures, z, and the data order / augmentation.
    arch_rng = np.random.default_rng([config.seed, 1])
    data_rng = torch.Generator().manual_seed(config.seed)
    z_rng = torch.Generator(device=device).manual_seed(config.seed + 1)
    step = epoch = batch_in_epoch = 0
    epoch_data_state = torch_rng_state(data_rng)
    history: list[dict[str, float]] = []
    with host_sync_allowed(device):  # setup: resuming reads the checkpoint into the device
        if checkpoint_path is not None and resume and Path(checkpoint_path).exists():
            state = load_checkpoint(checkpoint_path, map_location=device, expected_kind=CHECKPOINT_KIND)
            try:
                net.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                arch_rng = numpy_rng_from_state(state["arch_rng"])
                set_torch_rng_state(z_rng, state["z_rng"].cpu())
                epoch_data_state = state["epoch_data_rng"].cpu()
                step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
                history = list(state.get("history", []))
            except (KeyError, ValueError, RuntimeError) as exc:
                raise CheckpointError(f"cannot resume from {checkpoint_path}: {first_line(exc)}") from None

    with host_sync_allowed(device):
        evaluator = _EpochEvaluator(net, data, config, device) if len(data.val) and config.eval_archs else None
    resumed = checkpoint_path is not None and step > 0
    last_checkpoint: str | None = str(checkpoint_path) if resumed else None
    last_eval: TrainEval | None = None
    running = torch.zeros(3, device=device)  # loss sum, correct, images since the last report
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    reported_step, reported_time = step, time.perf_counter()
    session_start, session_first_step = reported_time, step
    last_loss = last_acc = float("nan")

    def checkpoint() -> None:
        nonlocal last_checkpoint
        if checkpoint_path is None:
            return
        with host_sync_allowed(device):  # host sync: the NaN check, and the copy to disk
            if bool(nonfinite):  # never save weights touched by a NaN
                raise TrainingDiverged(_diverged_message(step, last_checkpoint))
            save_checkpoint(
                {
                    "kind": CHECKPOINT_KIND,
                    "step": step,
                    "epoch": epoch,
                    "batch_in_epoch": batch_in_epoch,
                    "total_steps": total,
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "arch_rng": numpy_rng_state(arch_rng),
                    "z_rng": torch_rng_state(z_rng),
                    "epoch_data_rng": epoch_data_state,
                    "config": dataclasses.asdict(config),
                    "space": space.to_dict(),
                    "hypernet": dataclasses.asdict(net.hypernet.config),
                    "num_classes": net.num_classes,
                    "in_channels": net.in_channels,
                    "history": history,
                },
                checkpoint_path,
            )
        last_checkpoint = str(checkpoint_path)
        if on_checkpoint is not None:
            on_checkpoint(CheckpointSaved(step, str(checkpoint_path), {"loss": last_loss, "accuracy": last_acc}))

    def report() -> None:
        nonlocal reported_step, reported_time, last_loss, last_acc
        with host_sync_allowed(device):
            loss_sum, correct, images = running.tolist()  # host sync: one copy per report
            if bool(nonfinite):
                raise TrainingDiverged(_diverged_message(step, last_checkpoint))
        now = time.perf_counter()
        steps = step - reported_step
        last_loss = loss_sum / max(steps, 1)
        last_acc = 100.0 * correct / max(images, 1)
        rate = (step - session_first_step) / max(now - session_start, 1e-9)
        if on_progress is not None:
            on_progress(
                TrainProgress(
                    step=step,
                    total_steps=total,
                    epoch=epoch,
                    loss=last_loss,
                    accuracy=last_acc,
                    images_per_s=images / max(now - reported_time, 1e-9),
                    lr=optimizer.param_groups[0]["lr"],
                    elapsed_s=now - session_start,
                    eta_s=(total - step) / max(rate, 1e-9),
                )
            )
        running.zero_()
        reported_step, reported_time = step, now

    def evaluate() -> None:
        nonlocal last_eval
        if evaluator is None:
            return
        with host_sync_allowed(device):
            last_eval = evaluator(step, epoch)
        history.append({"step": step, "epoch": epoch, "error": last_eval.error, "loss": last_eval.loss})
        if on_eval is not None:
            on_eval(last_eval)

    net.train()
    while step < total:
        set_torch_rng_state(data_rng, epoch_data_state)
        batches = train_images.batches(
            config.batch_size, shuffle=True, augment=config.augment, generator=data_rng,
            drop_last=True, start_batch=batch_in_epoch, **layout,
        )
        for x, y in batches:
            limits = SamplingLimits.annealed(space, step / total) if config.anneal else FULL_SPACE
            arch = sample(space, arch_rng, limits)
            lr = cosine_lr(config.lr, step, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, correct = train_step(net, optimizer, x, y, arch, z_rng, autocast_context(device, config.bf16))
            running[0] += loss
            running[1] += correct
            running[2] += y.shape[0]
            nonfinite |= ~torch.isfinite(loss)
            step += 1
            batch_in_epoch += 1
            if step % config.report_interval(total) == 0 or step == total:
                report()
            if step >= total:
                break
            if should_stop is not None and should_stop():
                report()
                checkpoint()
                return TrainOutcome(False, step, total, last_checkpoint, last_eval)
            if step % config.checkpoint_every == 0:
                checkpoint()
        if batch_in_epoch == per_epoch:  # a whole epoch is done
            epoch += 1
            batch_in_epoch = 0
            epoch_data_state = torch_rng_state(data_rng)
            evaluate()
            checkpoint()
    if batch_in_epoch:  # a step budget ended mid-epoch: still evaluate the final state
        evaluate()
        checkpoint()
    return TrainOutcome(True, step, total, last_checkpoint, last_eval)


def _diverged_message(step: int, checkpoint: str | None) -> str:
    kept = f"; the last good checkpoint is {checkpoint}" if checkpoint else "; no checkpoint was written yet"
    return f"training diverged: the loss became NaN or infinite by step {step}{kept}"


class _EpochEvaluator:
    """Mean validation error of a fixed set of random architectures, with generated weights."""

    def __init__(self, net: SmashNet, data: Dataset, config: TrainConfig, device: torch.device) -> None:
        val = DeviceImages(data.val, device, data.mean, data.std)
        train = DeviceImages(data.train, device, data.mean, data.std) if config.eval_bn_batches else None
        images = min(config.eval_images, len(val))
        score_config = ScoreConfig(
            images=images, seed=config.seed, bf16=config.bf16, bn_recalibration_batches=config.eval_bn_batches
        )
        self.scorer = Scorer(net, val, score_config, train=train)
        rng = np.random.default_rng([config.seed, 2])
        self.archs = [sample(net.space, rng) for _ in range(config.eval_archs)]
        self.images = images

    def __call__(self, step: int, epoch: int) -> TrainEval:
        scores = [self.scorer.score(a) for a in self.archs]
        return TrainEval(
            step=step,
            epoch=epoch,
            error=float(np.mean([s.error for s in scores])),
            loss=float(np.mean([s.loss for s in scores])),
            architectures=len(scores),
            images=self.images,
        )
