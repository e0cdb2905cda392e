"""Training the SMASH HyperNet: a fresh random architecture every minibatch.

`train_hypernet` is one top-to-bottom loop, airbench-style: the training split lives on
the device, batches are normalised, cropped and flipped there, and the host waits for
the device only at progress reports, checkpoints and epoch ends (each marked below).
The loop reaches the search space only through its kind (`engine.kinds`): the kind
samples every step's architecture, given the fraction of training done so that kinds
that anneal can (banks widens its budget and kernel limits to the full space over the
first half), and builds the SMASH module. The learning rate follows a per-step cosine;
bf16 autocast follows `engine.device.autocast_context`, as in every loop.

Everything a resume needs besides weights and optimiser is one value, `TrainState`
(position, every random generator, the validation history); checkpoints hold it with
the model, the optimiser and the module's `checkpoint_meta()`, so a resumed run ends
exactly where an uninterrupted one would, and `load_smash` rebuilds the module of any
kind. A non-finite loss stops the run with `TrainingDiverged` and leaves the last good
checkpoint in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.checkpoint import (
    CheckpointError,
    cpu_generator_from_state,
    load_checkpoint,
    numpy_rng_from_state,
    numpy_rng_state,
    save_checkpoint,
    set_torch_rng_state,
    torch_rng_state,
)
from engine.config import HyperNetConfig, TrainConfig
from engine.data import Dataset, DeviceImages, device_images
from engine.device import autocast_context, host_sync_allowed, module_device
from engine.distributed import SINGLE, World
from engine.errors import TrainingDiverged, first_line
from engine.events import CheckpointSaved, TrainEval, TrainProgress
from engine.kinds import BANKS, Arch, SmashModule, Space, SpaceKind, get_kind, kind_of
from engine.score import ScoreConfig, Scorer

CHECKPOINT_KIND = "hypernet"
# What a checkpoint written before space kinds held instead of "smash": a banks network.
_LEGACY_META_KEYS = ("space", "hypernet", "num_classes", "in_channels")


@dataclass(frozen=True)
class TrainOutcome:
    """How a call to `train_hypernet` ended."""

    finished: bool  # False: stopped on request, resumable from the checkpoint
    step: int
    total_steps: int
    checkpoint: str | None  # the last checkpoint written
    last_eval: TrainEval | None


@dataclass
class TrainState:
    """Where a HyperNet training run is: what its checkpoint holds besides weights and optimiser."""

    arch_rng: np.random.Generator  # draws every step's architecture
    z_rng: torch.Generator  # draws the HyperNet's z; a CPU generator on every device (see engine.device.draw_z)
    data_rng: torch.Generator  # batch order and augmentation
    epoch_data_state: torch.Tensor  # data_rng's state at the start of the current epoch
    step: int = 0  # optimiser steps done
    epoch: int = 0  # epochs done
    batch_in_epoch: int = 0  # batches of the current epoch done
    history: list[dict[str, float]] = field(default_factory=list)  # validation at each epoch end

    @classmethod
    def start(cls, seed: int, device: torch.device) -> TrainState:
        """A fresh run: all randomness from one seed, in CPU generators whatever `device` is."""
        del device  # the same values on every device: z is drawn on the CPU (engine.device.draw_z)
        data_rng = torch.Generator().manual_seed(seed)
        return cls(
            arch_rng=np.random.default_rng([seed, 1]),
            z_rng=torch.Generator().manual_seed(seed + 1),
            data_rng=data_rng,
            epoch_data_state=torch_rng_state(data_rng),
        )

    def end_epoch(self) -> None:
        """Moves to the start of the next epoch, whose batches the data generator now draws."""
        self.epoch += 1
        self.batch_in_epoch = 0
        self.epoch_data_state = torch_rng_state(self.data_rng)

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "arch_rng": numpy_rng_state(self.arch_rng),
            "z_rng": torch_rng_state(self.z_rng),
            "epoch_data_rng": self.epoch_data_state,
            "history": self.history,
        }

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any], device: torch.device) -> TrainState:
        """The state `to_checkpoint` wrote (KeyError, ValueError or CheckpointError if it cannot be).

        Every generator comes back as a CPU generator, whichever device wrote the
        checkpoint and whichever resumes it (`device` is where the run goes on). A
        checkpoint written before z moved to the CPU may hold a CUDA generator's state
        instead (`cpu_generator_from_state` reseeds a CPU generator from it).
        """
        del device  # generators live on the CPU on every device
        return cls(
            arch_rng=numpy_rng_from_state(state["arch_rng"]),
            z_rng=cpu_generator_from_state(state["z_rng"]),
            data_rng=torch.Generator(),  # set to epoch_data_state when the epoch's batches are drawn
            epoch_data_state=state["epoch_data_rng"].cpu(),
            step=state["step"],
            epoch=state["epoch"],
            batch_in_epoch=state["batch_in_epoch"],
            history=list(state.get("history", [])),
        )


def make_optimizer(net: SmashModule, config: TrainConfig) -> torch.optim.Adam:
    """Adam with weight decay on the shared weights and none on the HyperNet.

    Fused wherever torch has the kernel (CUDA and CPU): one multi-tensor update per
    group instead of about ten ops per parameter, the largest single cut in the ops a
    training step dispatches (host overhead bounds a SMASH step on a GPU).
    """
    fused = module_device(net).type in ("cuda", "cpu")
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
    net: SmashModule,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    arch: Arch,
    z_generator: torch.Generator | None,
    autocast: contextlib.AbstractContextManager[None],
    world: World = SINGLE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate weights for `arch`, forward, backward, Adam. Returns (loss, correct) on the device.

    With several ranks (`world`), `x` is this rank's slice of the batch, BatchNorm sees
    the global batch, and the gradients are averaged over the ranks before Adam.
    """
    with autocast, world.global_batch_norm():
        weights = net.generate(arch, generator=z_generator)
        logits = net(x, arch, weights)
    loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    world.all_reduce_gradients([p for group in optimizer.param_groups for p in group["params"]])
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(1) == y).sum()


def build_smash(
    space: Space,
    num_classes: int,
    in_channels: int,
    hypernet: HyperNetConfig,
    device: torch.device | str,
    weights: str = "hypernet",
) -> SmashModule:
    """The SMASH module of `space`'s kind on `device`, in channels-last layout (the format its convolutions prefer).

    Args:
        space: the search space; its kind builds the module.
        num_classes: classifier outputs.
        in_channels: image channels.
        hypernet: HyperNet capacity.
        device: where the module lives.
        weights: "hypernet" (SMASH) or "shared" (plain weight sharing, for kinds that have it).
    """
    net = kind_of(space).build_smash(space, num_classes, in_channels, hypernet, weights)
    return net.to(device=device, memory_format=torch.channels_last)


def load_smash(path: str | Path, device: torch.device | str = "cpu") -> tuple[SmashModule, dict[str, Any]]:
    """The SMASH module stored in a HyperNet checkpoint, in eval mode, and the checkpoint dict.

    The checkpoint names its space kind ("space_kind"; none: banks, as every checkpoint
    written before kinds existed) and holds the module's `checkpoint_meta()`.

    Raises:
        CheckpointError: the file is no HyperNet checkpoint, or of a kind or shape this engine cannot build.
    """
    state = load_checkpoint(path, map_location=device, expected_kind=CHECKPOINT_KIND)
    try:
        kind = get_kind(state.get("space_kind", BANKS.name))
        meta = state["smash"] if "smash" in state else {key: state[key] for key in _LEGACY_META_KEYS}
        net = kind.smash_from_meta(meta).to(device=device, memory_format=torch.channels_last)
        net.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not hold a usable SMASH network: {first_line(exc)}") from None
    return net.eval(), state


@dataclass(frozen=True)
class _Run:
    """The fixed parts of one `train_hypernet` call, read by its steps, reports and checkpoints."""

    net: SmashModule
    kind: SpaceKind
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    device: torch.device
    total: int  # steps of the whole run
    path: Path | None  # the checkpoint file
    on_progress: Callable[[TrainProgress], None] | None
    on_eval: Callable[[TrainEval], None] | None
    on_checkpoint: Callable[[CheckpointSaved], None] | None
    world: World = SINGLE  # the ranks training together; rank 0 alone writes checkpoints


@dataclass
class _Session:
    """What this call tracks besides `TrainState`, never checkpointed: sums since the last report, timing."""

    sums: torch.Tensor  # (loss sum, correct, images) since the last report, on the device
    nonfinite: torch.Tensor  # whether any loss of this session was NaN or infinite, on the device
    reported_step: int  # step and wall time of the last report
    reported_time: float
    first_step: int  # step and wall time at which this session began, for the ETA
    start_time: float
    checkpoint: str | None  # the last checkpoint written
    last_eval: TrainEval | None = None
    loss: float = math.nan  # the last report's mean loss and accuracy, sent with each checkpoint
    accuracy: float = math.nan

    @classmethod
    def start(cls, state: TrainState, device: torch.device, checkpoint: str | None) -> _Session:
        now = time.perf_counter()
        sums = torch.zeros(3, device=device)
        nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        return cls(sums, nonfinite, state.step, now, state.step, now, checkpoint)

    def add(self, loss: torch.Tensor, correct: torch.Tensor, images: int) -> None:
        """One step's numbers, added on the device: no host sync."""
        self.sums[0] += loss
        self.sums[1] += correct
        self.sums[2] += images
        self.nonfinite |= ~torch.isfinite(loss)


def train_hypernet(
    net: SmashModule,
    data: Dataset,
    config: TrainConfig = TrainConfig(),
    *,
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
    on_progress: Callable[[TrainProgress], None] | None = None,
    on_eval: Callable[[TrainEval], None] | None = None,
    on_checkpoint: Callable[[CheckpointSaved], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    world: World = SINGLE,
) -> TrainOutcome:
    """Train `net` (HyperNet and shared weights) on `data.train`.

    Args:
        net: the SMASH module (see `build_smash`), already on its device.
        data: the data set; its validation split is used for the epoch-end evaluation.
        config: training settings.
        checkpoint_path: where checkpoints go; an existing file is resumed from when `resume`.
        resume: continue from `checkpoint_path` if it exists.
        on_progress: periodic training reports.
        on_eval: validation with generated weights at each epoch end and at the end.
        on_checkpoint: called after each checkpoint is written.
        should_stop: polled between steps; True checkpoints and returns (pause / cancel).
        world: the ranks of a data-parallel run (`engine.distributed`): each takes its
            slice of every batch of `config.batch_size` images; rank 0 alone writes
            checkpoints and evaluates, and a stop asked of any rank stops them all.

    Raises:
        TrainingDiverged: the loss became NaN or infinite; the last good checkpoint is kept.
        CheckpointError: the checkpoint to resume from is unusable.
    """
    device = module_device(net)
    with host_sync_allowed(device):  # setup: the data set moves to the device once per process
        train_images = device_images(data.train, device, data.mean, data.std)
    per_epoch = train_images.num_batches(config.batch_size, drop_last=True)
    if per_epoch == 0:
        raise ValueError(f"the training split has {len(train_images)} images, fewer than one batch of {config.batch_size}")
    total = per_epoch * config.epochs if config.max_steps is None else min(per_epoch * config.epochs, config.max_steps)
    world.check_batch(config.batch_size)
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    optimizer = make_optimizer(net, config)
    run = _Run(net, kind_of(net.space), optimizer, config, device, total, path, on_progress, on_eval, on_checkpoint, world)
    state = TrainState.start(config.seed, device)
    if path is not None and resume and path.exists():
        state = _restore(run)
    world.broadcast_parameters(net)
    with host_sync_allowed(device):
        evaluator = _EpochEvaluator(run, data) if len(data.val) and config.eval_archs and world.is_main else None
    session = _Session.start(state, device, str(path) if path is not None and state.step > 0 else None)

    net.train()
    while state.step < run.total:
        for x, y in _epoch_batches(train_images, config, state):
            anneal = state.step / run.total if config.anneal else 1.0  # fraction of training done
            arch = run.kind.sample(net.space, state.arch_rng, anneal)
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(config.lr, state.step, run.total)
            x, y = world.shard(x, y)
            loss, correct = train_step(net, optimizer, x, y, arch, state.z_rng, autocast_context(device, config.bf16), world)
            session.add(loss, correct, y.shape[0])
            state.step += 1
            state.batch_in_epoch += 1
            if state.step % config.report_interval(run.total) == 0 or state.step == run.total:
                _report(run, state, session)
            if state.step >= run.total:
                break
            if world.agree(should_stop is not None and should_stop()):
                if state.step > session.reported_step:  # an empty report would read as loss 0
                    _report(run, state, session)
                _save(run, state, session)
                return TrainOutcome(False, state.step, run.total, session.checkpoint, session.last_eval)
            if state.step % config.checkpoint_every == 0:
                _save(run, state, session)
        if state.batch_in_epoch == per_epoch:  # a whole epoch is done
            state.end_epoch()
            _evaluate(run, state, session, evaluator)
            _save(run, state, session)
    if state.batch_in_epoch:  # a step budget ended mid-epoch: still evaluate the final state
        _evaluate(run, state, session, evaluator)
        _save(run, state, session)
    return TrainOutcome(True, state.step, run.total, session.checkpoint, session.last_eval)


def _epoch_batches(
    images: DeviceImages, config: TrainConfig, state: TrainState
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The current epoch's remaining batches: the whole epoch redrawn from its start, the done ones skipped."""
    set_torch_rng_state(state.data_rng, state.epoch_data_state)
    return images.batches(
        config.batch_size,
        shuffle=True,
        augment=config.augment,
        generator=state.data_rng,
        drop_last=True,
        start_batch=state.batch_in_epoch,
        channels_last=config.channels_last,
    )


def _restore(run: _Run) -> TrainState:
    """Loads the checkpoint at `run.path` into the module and optimiser; returns its state."""
    assert run.path is not None
    with host_sync_allowed(run.device):  # setup: resuming reads the checkpoint into the device
        state = load_checkpoint(run.path, map_location=run.device, expected_kind=CHECKPOINT_KIND)
        try:
            run.net.load_state_dict(state["model"])
            run.optimizer.load_state_dict(state["optimizer"])
            return TrainState.from_checkpoint(state, run.device)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot resume from {run.path}: {first_line(exc)}") from None


def _save(run: _Run, state: TrainState, session: _Session) -> None:
    """Writes the checkpoint (never of weights touched by a NaN) and reports it: rank 0's work."""
    if run.path is None or not run.world.is_main:
        return
    with host_sync_allowed(run.device):  # host sync: the NaN check, and the copy to disk
        if bool(session.nonfinite):
            raise TrainingDiverged(_diverged_message(state.step, session.checkpoint))
        save_checkpoint(
            {
                "kind": CHECKPOINT_KIND,
                "space_kind": run.kind.name,
                "smash": run.net.checkpoint_meta(),  # what load_smash rebuilds the module from
                "total_steps": run.total,
                "model": run.net.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "config": dataclasses.asdict(run.config),
                **state.to_checkpoint(),
            },
            run.path,
        )
    session.checkpoint = str(run.path)
    if run.on_checkpoint is not None:
        run.on_checkpoint(CheckpointSaved(state.step, str(run.path), {"loss": session.loss, "accuracy": session.accuracy}))


def _report(run: _Run, state: TrainState, session: _Session) -> None:
    """Mean loss, accuracy and throughput since the last report (raises if a loss was not finite)."""
    with host_sync_allowed(run.device):
        # Every rank's sums (the losses are means over a slice: averaged, the rest added).
        sums = run.world.sum(torch.cat([session.sums, session.nonfinite.float().view(1)]))
        loss_sum, correct, images, nonfinite = sums.tolist()  # host sync: one copy per report
        loss_sum /= run.world.size
        if nonfinite:
            raise TrainingDiverged(_diverged_message(state.step, session.checkpoint))
    now = time.perf_counter()
    session.loss = loss_sum / max(state.step - session.reported_step, 1)
    session.accuracy = 100.0 * correct / max(images, 1)
    rate = (state.step - session.first_step) / max(now - session.start_time, 1e-9)
    if run.on_progress is not None:
        run.on_progress(
            TrainProgress(
                step=state.step,
                total_steps=run.total,
                epoch=state.epoch,
                loss=session.loss,
                accuracy=session.accuracy,
                images_per_s=images / max(now - session.reported_time, 1e-9),
                lr=run.optimizer.param_groups[0]["lr"],
                elapsed_s=now - session.start_time,
                eta_s=(run.total - state.step) / max(rate, 1e-9),
            )
        )
    session.sums.zero_()
    session.reported_step, session.reported_time = state.step, now


def _evaluate(run: _Run, state: TrainState, session: _Session, evaluator: _EpochEvaluator | None) -> None:
    """Validation with generated weights, added to the history and reported."""
    if evaluator is None:
        return
    with host_sync_allowed(run.device):
        session.last_eval = evaluator(state.step, state.epoch)
    state.history.append(
        {"step": state.step, "epoch": state.epoch, "error": session.last_eval.error, "loss": session.last_eval.loss}
    )
    if run.on_eval is not None:
        run.on_eval(session.last_eval)


def _diverged_message(step: int, checkpoint: str | None) -> str:
    kept = f"; the last good checkpoint is {checkpoint}" if checkpoint else "; no checkpoint was written yet"
    return f"training diverged: the loss became NaN or infinite by step {step}{kept}"


class _EpochEvaluator:
    """Mean validation error of a fixed set of random architectures, with generated weights."""

    def __init__(self, run: _Run, data: Dataset) -> None:
        config, device = run.config, run.device
        val = device_images(data.val, device, data.mean, data.std)
        train = device_images(data.train, device, data.mean, data.std) if config.eval_bn_batches else None  # the loop's own
        images = min(config.eval_images, len(val))
        score_config = ScoreConfig(
            images=images, seed=config.seed, bf16=config.bf16, bn_recalibration_batches=config.eval_bn_batches
        )
        self.scorer = Scorer(run.net, val, score_config, train=train)
        rng = np.random.default_rng([config.seed, 2])
        self.archs = [run.kind.sample(run.net.space, rng) for _ in range(config.eval_archs)]
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


__all__ = [
    "CHECKPOINT_KIND",
    "TrainConfig",
    "TrainOutcome",
    "TrainState",
    "TrainingDiverged",
    "build_smash",
    "cosine_lr",
    "load_smash",
    "make_optimizer",
    "train_hypernet",
    "train_step",
]
