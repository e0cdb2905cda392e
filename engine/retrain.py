"""Retraining a chosen architecture from scratch, as the paper does after the search.

`retrain` builds the derived network of an architecture (`engine.network.build_model`,
the same function the SMASH network computed) with freely learned weights and trains
it with SGD, Nesterov momentum and a per-step cosine schedule, evaluating the
validation split after every epoch and the test split once at the end.

The loop keeps the data on the device (`DeviceImages`), counts errors and sums losses
there, and copies them to the host once per epoch. It checkpoints at epoch ends and,
when `should_stop` asks, in the middle of an epoch; a resumed run ends in exactly the
weights and numbers of an uninterrupted one (on the CPU, where kernels are deterministic).

Trainability: the derived network has no BatchNorm inside its blocks, and banks sum
the outputs of every op that writes into them, so under plain Kaiming init a bank's
variance grows with each write (at init, blocks of sampled paper-preset networks hand
their transition an RMS of up to 231). `reinitialise` (recipe "banks", the default)
scales the last conv of every op path so that each bank starts with the variance of
one write (RMS 1 to 2); together with a one-epoch warmup this is what made residual-
style networks train reliably in our measurements. It changes the initial weights
only, never what the network computes.

Example:
    data = load_dataset(DataConfig("cifar10"))
    result = retrain(arch, data, RetrainConfig(epochs=30), device="cuda",
                     on_epoch=print, checkpoint_path="runs/a.pt")
    torch.save(result.model.state_dict(), "a-weights.pt")
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.arch import Architecture, Block
from engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    set_torch_rng_state,
    torch_rng_state,
)
from engine.config import INIT_RECIPES, RetrainConfig
from engine.data import Dataset, DeviceImages
from engine.errors import InvalidRetrainConfig, RetrainError, first_line
from engine.network import DerivedNet, OpModule, build_model

CHECKPOINT_KIND = "retrain"
EVAL_BATCH_SIZE = 500  # evaluation batch; fixed so a re-evaluation sums in the same order
# Config fields that may differ between a checkpoint and the run resuming from it:
# they change when checkpoints are written, not what is computed.
_RESUMABLE_CHANGES = frozenset({"checkpoint_every_epochs"})


class RetrainDiverged(RetrainError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class RetrainEpoch:
    """Progress after one epoch. Accuracies are in percent."""

    epoch: int  # epochs done, 1-based
    epochs: int  # epochs of the whole run
    train_loss: float  # mean training loss over the epoch (with label smoothing, if any)
    train_acc: float  # training accuracy over the epoch, on augmented images
    val_acc: float | None  # validation accuracy after the epoch; None without a validation split
    lr: float  # learning rate of the epoch's last step
    images_per_s: float  # training throughput of the epoch (evaluation excluded)
    elapsed_s: float  # wall time of the whole run so far, earlier sessions included
    eta_s: float  # estimated wall time to the end of training, at this epoch's pace


@dataclass(frozen=True)
class RetrainResult:
    """The outcome of a finished retraining run. Accuracies are in percent."""

    best_val_acc: float | None  # best validation accuracy over the epochs; None without a validation split
    test_acc: float  # test accuracy of the final weights, measured once
    epochs: int  # epochs trained
    curve: tuple[dict[str, Any], ...]  # per epoch: epoch, train_loss, train_acc, val_acc, val_loss, lr
    seconds: float  # wall time of the whole run, earlier sessions included
    test_loss: float = math.nan  # mean test cross-entropy of the final weights
    # The trained network, in eval mode on the training device; its state_dict rebuilds with
    # build_model(arch, ...) and reproduces test_acc under `evaluate`. Left out of to_dict().
    model: DerivedNet | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The numbers, JSON-ready (without the model)."""
        return {
            "best_val_acc": self.best_val_acc,
            "test_acc": self.test_acc,
            "test_loss": self.test_loss,
            "epochs": self.epochs,
            "curve": [dict(point) for point in self.curve],
            "seconds": self.seconds,
        }


# Initialisation ------------------------------------------------------------------------


@torch.no_grad()
def reinitialise(model: DerivedNet, recipe: str = "banks") -> DerivedNet:
    """Re-draws a derived network's initial weights; what it computes is unchanged.

    Every conv is drawn Kaiming-normal (fan-in, ReLU gain), the classifier keeps
    PyTorch's default with a zero bias, BatchNorm layers start at identity. Recipe
    "kaiming" stops there. Recipe "banks" then scales the last conv of each op path:
    a bank that receives k writes (its input counts as one) gets each write scaled by
    1/sqrt(k), and an op with two parallel paths scales each by 1/sqrt(2), so every
    bank starts with roughly the variance of a single write instead of k of them.
    Without BatchNorm inside blocks nothing else would undo that growth.

    Draws from torch's global generator (seed it, or fork it, for a reproducible init).

    Args:
        model: a network from `build_model`; modified in place.
        recipe: one of INIT_RECIPES.

    Returns:
        The same model.
    """
    if recipe not in INIT_RECIPES:
        raise InvalidRetrainConfig(f"unknown init recipe {recipe!r}: expected one of {', '.join(INIT_RECIPES)}")
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()
    model.classifier.reset_parameters()
    nn.init.zeros_(model.classifier.bias)
    if recipe == "kaiming":
        return model
    op_modules = iter(model.ops)
    for block in model.arch.blocks:
        for scale in _write_scales(block):
            module = next(op_modules)
            assert isinstance(module, OpModule)
            for last in _path_ends(module):
                last.weight.mul_(scale.view(-1, 1, 1, 1))  # (units, in/groups, kh, kw), per output row
    return model


def _write_scales(block: Block) -> list[torch.Tensor]:
    """Per op of `block`, a (units,) scale for its output channels (see `reinitialise`)."""
    writes_into = [1] * block.initial_banks  # the block's input is the first write
    for op in block.ops:
        for bank in op.writes:
            if bank < len(writes_into):
                writes_into[bank] += 1
            else:
                writes_into.append(1)
    scales = []
    for op in block.ops:
        chunks = op.units // block.bank_size
        chunk_scale = [1.0] * chunks
        for j, bank in enumerate(op.writes):
            # Write j carries chunk j mod chunks; a chunk written twice takes the smaller scale.
            chunk_scale[j % chunks] = min(chunk_scale[j % chunks], writes_into[bank] ** -0.5)
        paths = 2 if op.convs[2] is not None else 1
        per_channel = torch.tensor(chunk_scale).repeat_interleave(block.bank_size) / math.sqrt(paths)
        scales.append(per_channel)
    return scales


def _path_ends(module: OpModule) -> list[nn.Conv2d]:
    """The convs whose outputs leave the op: the last of path A and, if active, of path B."""
    convs = module.convs
    ends = [convs["1"] if "1" in convs else convs["0"]]
    if "2" in convs:
        ends.append(convs["3"] if "3" in convs else convs["2"])
    return [conv for conv in ends if isinstance(conv, nn.Conv2d)]


# Evaluation ----------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split_images: DeviceImages,
    device: torch.device | str | None = None,
    *,
    bf16: str = "auto",
    channels_last: bool = True,
    batch_size: int = EVAL_BATCH_SIZE,
) -> tuple[float, float]:
    """Accuracy (percent) and mean cross-entropy of `model` on a split, in eval mode.

    With the defaults this evaluates exactly as `retrain` does with a default config, so
    a network rebuilt from an exported state_dict reproduces the reported test accuracy.

    Args:
        model: the network, already on `device`; set to eval mode and left there. On CUDA
            with `channels_last` its weights are converted to channels-last in place.
        split_images: the split, normalised with the training split's statistics.
        device: where to run; None: where `split_images` lives.
        bf16: bfloat16 autocast; "auto": on for CUDA only.
        channels_last: channels-last tensors on CUDA; ignored elsewhere.
        batch_size: images per forward pass.
    """
    device = split_images.device if device is None else torch.device(device)
    if len(split_images) == 0:
        raise RetrainError("cannot evaluate on an empty split")
    use_bf16, layout = _precision(device, bf16, channels_last)
    model.eval()
    if layout:
        model.to(memory_format=torch.channels_last)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)  # no float64 on MPS
    for x, y in split_images.batches(batch_size, channels_last=layout):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    n = len(split_images)
    # Host sync: once per evaluation.
    return 100.0 * correct.item() / n, loss_sum.item() / n


def _precision(device: torch.device, bf16: str, channels_last: bool) -> tuple[bool, bool]:
    """(bfloat16 autocast on, channels-last on) for a device and a config's settings."""
    cuda = device.type == "cuda"
    return (cuda if bf16 == "auto" else bf16 == "on"), (channels_last and cuda)


# Retraining ----------------------------------------------------------------------------


@dataclass
class _Position:
    """Where a run is: everything besides weights and optimiser that a resume needs."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch completed
    epoch_rng: torch.Tensor | None = None  # generator state at the start of the current epoch
    loss_sum: torch.Tensor | None = None  # the current epoch's summed training loss so far
    correct: torch.Tensor | None = None  # the current epoch's correct training predictions so far
    seen: int = 0  # training images of the current epoch so far
    curve: list[dict[str, Any]] = field(default_factory=list)  # one entry per completed epoch
    seconds: float = 0.0  # wall time of earlier sessions


def retrain(
    arch: Architecture,
    data: Dataset,
    config: RetrainConfig = RetrainConfig(),
    *,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[RetrainEpoch], None] | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
    should_stop: Callable[[], bool] | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
) -> RetrainResult | None:
    """Trains `arch`'s derived network from scratch and measures its test accuracy once.

    Args:
        arch: the architecture to build.
        data: train, validation (may be empty) and test splits.
        config: optimiser, schedule, init and precision settings.
        device: where to train.
        on_epoch: called after every epoch (after its checkpoint is written).
        checkpoint_path: where to checkpoint; None: no checkpoints, no resume.
        resume: continue from `checkpoint_path` if it exists (else start over and overwrite it).
        should_stop: polled before every step; when it returns true the run checkpoints
            its exact position and returns None (pause or cancel).
        num_classes: classifier outputs; None: the data set's class count.
        in_channels: image channels; None: the data set's.

    Returns:
        The result with the trained model, or None when `should_stop` stopped the run.

    Raises:
        InvalidRetrainConfig: the data or arguments do not fit the config.
        CheckpointError: the checkpoint to resume from is unusable or belongs to another run.
        RetrainDiverged: the training loss became NaN or infinite.
    """
    device = torch.device(device)
    num_classes = data.num_classes if num_classes is None else num_classes
    in_channels = data.in_channels if in_channels is None else in_channels
    _check_inputs(data, config, num_classes, in_channels)
    use_bf16, layout = _precision(device, config.bf16, config.channels_last)
    memory_format = torch.channels_last if layout else torch.contiguous_format

    # The initial weights depend on the seed alone, and the caller's global RNG is left alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = reinitialise(build_model(arch, num_classes, in_channels), config.init)
    model.to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    generator = torch.Generator().manual_seed(config.seed)  # batch order and augmentation
    train = DeviceImages(data.train, device, data.mean, data.std)
    val = DeviceImages(data.val, device, data.mean, data.std) if len(data.val) else None
    steps_per_epoch = train.num_batches(config.batch_size, drop_last=True)
    identity = _run_identity(arch, data, config, num_classes, in_channels)

    position = _Position()
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    if path is not None and resume and path.exists():
        position = _restore(path, identity, model, optimizer, generator, device)

    def checkpoint(at: _Position) -> None:
        if path is None:
            return
        save_checkpoint(
            {
                "kind": CHECKPOINT_KIND,
                **identity,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": at.epoch,
                "batch": at.batch,
                "epoch_rng": at.epoch_rng if at.epoch_rng is not None else torch_rng_state(generator),
                "loss_sum": at.loss_sum,
                "correct": at.correct,
                "seen": at.seen,
                "curve": at.curve,
                "seconds": at.seconds,
            },
            path,
        )

    session_start = time.perf_counter()

    def elapsed() -> float:
        return position.seconds + time.perf_counter() - session_start

    while position.epoch < config.epochs:
        epoch_start = time.perf_counter()
        if position.batch == 0:
            position.epoch_rng = torch_rng_state(generator)
            # float32, not float64: Apple's MPS backend has no float64.
            position.loss_sum = torch.zeros((), dtype=torch.float32, device=device)
            position.correct = torch.zeros((), dtype=torch.int64, device=device)
            position.seen = 0
        else:
            # Mid-epoch resume: redraw the whole epoch from its start and skip what was done.
            assert position.epoch_rng is not None
            set_torch_rng_state(generator, position.epoch_rng)
        assert position.loss_sum is not None and position.correct is not None
        batches = train.batches(
            config.batch_size,
            shuffle=True,
            augment=config.augment,
            generator=generator,
            drop_last=True,
            channels_last=layout,
            start_batch=position.batch,
        )
        trained = 0
        lr = config.learning_rate(position.epoch * steps_per_epoch + position.batch, steps_per_epoch)
        model.train()
        for x, y in batches:
            if should_stop is not None and should_stop():
                _check_finite(position, "before pausing")
                position.seconds = elapsed()
                checkpoint(position)
                return None
            lr = config.learning_rate(position.epoch * steps_per_epoch + position.batch, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(x)
            logits = logits.float()
            loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            # Device-side sums: no host sync inside the epoch.
            position.loss_sum += loss.detach() * y.shape[0]
            position.correct += (logits.detach().argmax(1) == y).sum()
            position.seen += y.shape[0]
            position.batch += 1
            trained += y.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # so the epoch's training time is real, not queued
        train_seconds = time.perf_counter() - epoch_start

        _check_finite(position, f"in epoch {position.epoch + 1}")  # host sync: once per epoch
        train_loss = position.loss_sum.item() / position.seen
        train_acc = 100.0 * position.correct.item() / position.seen
        val_acc = val_loss = None
        if val is not None:
            val_acc, val_loss = evaluate(model, val, device, bf16=config.bf16, channels_last=config.channels_last)
        position.curve.append(
            {
                "epoch": position.epoch + 1,
                "train_loss": train_loss,
                "train_acc": train_acc,
                "val_acc": val_acc,
                "val_loss": val_loss,
                "lr": lr,
            }
        )
        position.epoch += 1
        position.batch = 0
        position.epoch_rng = None  # the generator now holds the next epoch's start
        position.loss_sum = position.correct = None
        position.seen = 0
        if position.epoch % config.checkpoint_every_epochs == 0 or position.epoch == config.epochs:
            checkpoint(dataclasses.replace(position, seconds=elapsed()))
        if on_epoch is not None:
            epoch_seconds = time.perf_counter() - epoch_start
            on_epoch(
                RetrainEpoch(
                    epoch=position.epoch,
                    epochs=config.epochs,
                    train_loss=train_loss,
                    train_acc=train_acc,
                    val_acc=val_acc,
                    lr=lr,
                    images_per_s=trained / train_seconds if train_seconds > 0 else 0.0,
                    elapsed_s=elapsed(),
                    eta_s=epoch_seconds * (config.epochs - position.epoch),
                )
            )

    test = DeviceImages(data.test, device, data.mean, data.std)
    test_acc, test_loss = evaluate(model, test, device, bf16=config.bf16, channels_last=config.channels_last)
    val_accs = [point["val_acc"] for point in position.curve if point["val_acc"] is not None]
    return RetrainResult(
        best_val_acc=max(val_accs) if val_accs else None,
        test_acc=test_acc,
        epochs=config.epochs,
        curve=tuple(position.curve),
        seconds=elapsed(),
        test_loss=test_loss,
        model=model,
    )


def _check_inputs(data: Dataset, config: RetrainConfig, num_classes: int, in_channels: int) -> None:
    if len(data.train) < config.batch_size:
        raise InvalidRetrainConfig(
            f"the training split has {len(data.train)} images, fewer than one batch of {config.batch_size}"
        )
    if num_classes < data.num_classes:
        raise InvalidRetrainConfig(f"num_classes is {num_classes} but the data set has {data.num_classes} classes")
    if in_channels != data.in_channels:
        raise InvalidRetrainConfig(f"in_channels is {in_channels} but the images have {data.in_channels} channels")


def _check_finite(position: _Position, when: str) -> None:
    """Raises RetrainDiverged if the epoch's loss sum is NaN or infinite (a host sync)."""
    assert position.loss_sum is not None
    if not torch.isfinite(position.loss_sum).item():
        raise RetrainDiverged(
            f"retraining diverged {when}: the training loss is {position.loss_sum.item()}; "
            "try a lower lr, a longer warmup or grad_clip (the last good checkpoint is kept)"
        )


def _run_identity(
    arch: Architecture, data: Dataset, config: RetrainConfig, num_classes: int, in_channels: int
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed by this run."""
    return {
        "arch": arch.to_json(),
        "config": dataclasses.asdict(config),
        "data": {
            "name": data.name,
            "train": len(data.train),
            "val": len(data.val),
            "test": len(data.test),
            "num_classes": num_classes,
            "in_channels": in_channels,
        },
    }


def _restore(
    path: Path,
    identity: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    device: torch.device,
) -> _Position:
    """Loads a retrain checkpoint into the model, optimiser and generator; returns its position."""
    state = load_checkpoint(path, expected_kind=CHECKPOINT_KIND)
    if state.get("arch") != identity["arch"]:
        raise CheckpointError(f"checkpoint {path} belongs to another architecture; pass resume=False to start over")
    if state.get("data") != identity["data"]:
        raise CheckpointError(
            f"checkpoint {path} was trained on other data ({state.get('data')}); pass resume=False to start over"
        )
    saved_config = state.get("config")
    if not isinstance(saved_config, dict):
        raise CheckpointError(f"checkpoint {path} has no retrain config")
    changed = sorted(
        name
        for name, value in identity["config"].items()
        if name not in _RESUMABLE_CHANGES and saved_config.get(name) != value
    )
    if changed:
        fields = ", ".join(f"{n}={saved_config.get(n)!r}" for n in changed)
        raise CheckpointError(
            f"checkpoint {path} was written with another config ({fields}); pass resume=False to start over"
        )
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        epoch_rng = state["epoch_rng"]
        set_torch_rng_state(generator, epoch_rng)
        batch = int(state["batch"])
        loss_sum, correct = state["loss_sum"], state["correct"]
        return _Position(
            epoch=int(state["epoch"]),
            batch=batch,
            epoch_rng=epoch_rng if batch > 0 else None,
            loss_sum=loss_sum.to(device) if batch > 0 else None,
            correct=correct.to(device) if batch > 0 else None,
            seen=int(state["seen"]),
            curve=list(state["curve"]),
            seconds=float(state["seconds"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, CheckpointError) as exc:
        detail = first_line(exc, 160)
        raise CheckpointError(f"checkpoint {path} is not a usable retrain checkpoint: {detail}") from None


__all__ = [
    "CHECKPOINT_KIND",
    "INIT_RECIPES",
    "InvalidRetrainConfig",
    "RetrainConfig",
    "RetrainDiverged",
    "RetrainEpoch",
    "RetrainError",
    "RetrainResult",
    "evaluate",
    "reinitialise",
    "retrain",
]
