"""Retraining a chosen architecture from scratch, as the paper does after the search.

`retrain` builds the derived network of an architecture through its space kind
(`engine.kinds`: for banks, `engine.network.build_model`, the same function the SMASH
network computed) with freely learned weights and trains it with SGD, Nesterov
momentum and a per-step cosine schedule, evaluating the validation split after every
epoch and the test split once at the end. It is written like HyperNet training
(`engine.train`): one loop reading top to bottom, everything a resume needs in one
value (`RetrainState`), the same precision policy (`engine.device.autocast_context`
and channels-last whenever the config asks, on every device).

The loop keeps the data on the device (`DeviceImages`), counts errors and sums losses
there, and copies them to the host once per epoch. It checkpoints at epoch ends and,
when `should_stop` asks, in the middle of an epoch; a resumed run ends in exactly the
weights and numbers of an uninterrupted one (on the CPU, where kernels are deterministic).

Trainability: the banks derived network has no BatchNorm inside its blocks, and banks
sum the outputs of every op that writes into them, so under plain Kaiming init a bank's
variance grows with each write (at init, blocks of sampled paper-preset networks hand
their transition an RMS of up to 231). `reinitialise` (recipe "banks", the default)
scales the last conv of every op path so that each bank starts with the variance of
one write (RMS 1 to 2); together with a one-epoch warmup this is what made residual-
style networks train reliably in our measurements. It changes the initial weights
only, never what the network computes. Kinds without that recipe (`SpaceKind.init_recipes`)
start from plain Kaiming init ("kaiming").

Example:
    data = load_dataset(DataConfig("cifar10"))
    result = retrain(arch, data, RetrainConfig(epochs=30), device="cuda",
                     on_epoch=print, checkpoint_path="runs/a.pt")
    torch.save(result.model.state_dict(), "a-weights.pt")
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.arch import Block
from engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    set_torch_rng_state,
    torch_rng_state,
)
from engine.config import INIT_RECIPES, RetrainConfig
from engine.data import Dataset, DeviceImages, device_images
from engine.device import autocast_context, memory_format
from engine.errors import InvalidRetrainConfig, RetrainError, first_line
from engine.kinds import BANKS, Arch, DerivedModule, Space, SpaceKind
from engine.network import DerivedNet, OpModule

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
    # the kind's build_model(arch, ...) and reproduces test_acc under `evaluate`. Left out of to_dict().
    model: DerivedModule | None = field(default=None, repr=False, compare=False)

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
def reinitialise(model: DerivedModule, recipe: str = "banks") -> DerivedModule:
    """Re-draws a derived network's initial weights; what it computes is unchanged.

    Every conv is drawn Kaiming-normal (fan-in, ReLU gain), linear layers (the
    classifier) keep PyTorch's default with a zero bias, BatchNorm layers start at
    identity. Recipe "kaiming" stops there; it suits a derived network of any kind.
    Recipe "banks", for banks networks (`engine.network.DerivedNet`), then scales the
    last conv of each op path: a bank that receives k writes (its input counts as one)
    gets each write scaled by 1/sqrt(k), and an op with two parallel paths scales each
    by 1/sqrt(2), so every bank starts with roughly the variance of a single write
    instead of k of them. Without BatchNorm inside blocks nothing else would undo that growth.

    Draws from torch's global generator (seed it, or fork it, for a reproducible init).

    Args:
        model: a derived network (`SpaceKind.build_model`); modified in place.
        recipe: one of INIT_RECIPES.

    Returns:
        The same model.

    Raises:
        InvalidRetrainConfig: an unknown recipe, or "banks" for a network of another kind.
    """
    if recipe not in INIT_RECIPES:
        raise InvalidRetrainConfig(f"unknown init recipe {recipe!r}: expected one of {', '.join(INIT_RECIPES)}")
    if recipe == "banks" and not isinstance(model, DerivedNet):
        raise InvalidRetrainConfig(f"init recipe 'banks' is for banks networks, not {type(model).__name__}")
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()
    for module in model.modules():  # after the convs: a banks network draws its classifier last
        if isinstance(module, nn.Linear):
            module.reset_parameters()
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    if recipe == "kaiming":
        return model
    assert isinstance(model, DerivedNet)
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
    model: DerivedModule,
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
        model: the network, already on `device`; set to eval mode and left there, its
            weights converted in place to the layout `channels_last` asks for.
        split_images: the split, normalised with the training split's statistics.
        device: where to run; None: where `split_images` lives.
        bf16: bfloat16 autocast, one of BF16_MODES (see `engine.device.autocast_context`).
        channels_last: channels-last images and weights.
        batch_size: images per forward pass.
    """
    device = split_images.device if device is None else torch.device(device)
    if len(split_images) == 0:
        raise RetrainError("cannot evaluate on an empty split")
    model.eval()
    model.to(memory_format=memory_format(channels_last))
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)  # no float64 on MPS
    for x, y in split_images.batches(batch_size, channels_last=channels_last):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast_context(device, bf16):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    n = len(split_images)
    # Host sync: once per evaluation.
    return 100.0 * correct.item() / n, loss_sum.item() / n


# Retraining ----------------------------------------------------------------------------


@dataclass
class RetrainState:
    """Where a retraining run is: what its checkpoint holds besides weights and optimiser."""

    generator: torch.Generator  # batch order and augmentation
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch completed
    epoch_rng: torch.Tensor | None = None  # generator state at the start of the current epoch, while in one
    loss_sum: torch.Tensor | None = None  # the current epoch's summed training loss so far, on the device
    correct: torch.Tensor | None = None  # the current epoch's correct training predictions so far, on the device
    seen: int = 0  # training images of the current epoch so far
    curve: list[dict[str, Any]] = field(default_factory=list)  # one entry per completed epoch
    seconds: float = 0.0  # wall time of earlier sessions

    def start_epoch(self, device: torch.device) -> None:
        """Zero sums at an epoch's start; mid-epoch (resumed), the generator goes back to the epoch's start."""
        if self.batch == 0:
            self.epoch_rng = torch_rng_state(self.generator)
            # float32, not float64: Apple's MPS backend has no float64.
            self.loss_sum = torch.zeros((), dtype=torch.float32, device=device)
            self.correct = torch.zeros((), dtype=torch.int64, device=device)
            self.seen = 0
        else:
            # Mid-epoch resume: the whole epoch is redrawn from its start and what was done is skipped.
            assert self.epoch_rng is not None
            set_torch_rng_state(self.generator, self.epoch_rng)

    def end_epoch(self, point: dict[str, Any]) -> None:
        """Records the finished epoch's curve point; the generator now holds the next epoch's start."""
        self.curve.append(point)
        self.epoch += 1
        self.batch = 0
        self.epoch_rng = None
        self.loss_sum = self.correct = None
        self.seen = 0

    def to_checkpoint(self, seconds: float) -> dict[str, Any]:
        """The state as checkpoint values, with `seconds` of wall time so far."""
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "epoch_rng": self.epoch_rng if self.epoch_rng is not None else torch_rng_state(self.generator),
            "loss_sum": self.loss_sum,
            "correct": self.correct,
            "seen": self.seen,
            "curve": self.curve,
            "seconds": seconds,
        }

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any], generator: torch.Generator, device: torch.device) -> RetrainState:
        """The state `to_checkpoint` wrote; sets `generator` to the saved epoch start."""
        epoch_rng = state["epoch_rng"]
        set_torch_rng_state(generator, epoch_rng)
        batch = int(state["batch"])
        mid_epoch = batch > 0
        return cls(
            generator=generator,
            epoch=int(state["epoch"]),
            batch=batch,
            epoch_rng=epoch_rng if mid_epoch else None,
            loss_sum=state["loss_sum"].to(device) if mid_epoch else None,
            correct=state["correct"].to(device) if mid_epoch else None,
            seen=int(state["seen"]),
            curve=list(state["curve"]),
            seconds=float(state["seconds"]),
        )


def retrain_step(
    model: DerivedModule,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    config: RetrainConfig,
    autocast: contextlib.AbstractContextManager[None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, loss (label smoothing as configured), backward, clipping, SGD. Returns (loss, correct) on the device."""
    with autocast:
        logits = model(x)
    logits = logits.float()
    loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(1) == y).sum()


@dataclass(frozen=True)
class _Run:
    """The fixed parts of one `retrain` call, read by its epochs and checkpoints."""

    model: DerivedModule
    optimizer: torch.optim.Optimizer
    config: RetrainConfig
    device: torch.device
    train: DeviceImages
    val: DeviceImages | None
    steps_per_epoch: int
    identity: dict[str, Any]  # what a checkpoint must match to be resumed (see _run_identity)
    path: Path | None  # the checkpoint file


def retrain(
    arch: Arch,
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
    kind: SpaceKind = BANKS,
    space: Space | None = None,
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
        kind: the space kind of `arch`, which builds its derived network.
        space: the search space `arch` came from, for kinds whose derived network it sizes.

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
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    run = _prepare(kind, arch, space, data, config, device, num_classes, in_channels, path)
    state = RetrainState(generator=torch.Generator().manual_seed(config.seed))  # batch order and augmentation
    if path is not None and resume and path.exists():
        state = _restore(run, state.generator)
    session_start = time.perf_counter()

    def elapsed() -> float:
        """Wall time of the whole run so far, earlier sessions included."""
        return state.seconds + time.perf_counter() - session_start

    while state.epoch < config.epochs:
        epoch_start, seen_before = time.perf_counter(), state.seen
        if not _run_epoch(run, state, should_stop):
            _check_finite(state, "before pausing")
            _save(run, state, elapsed())
            return None
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # so the epoch's training time is real, not queued
        train_seconds = time.perf_counter() - epoch_start
        images_per_s = (state.seen - seen_before) / train_seconds if train_seconds > 0 else 0.0
        state.end_epoch(_epoch_point(run, state))
        if state.epoch % config.checkpoint_every_epochs == 0 or state.epoch == config.epochs:
            _save(run, state, elapsed())
        if on_epoch is not None:
            on_epoch(_epoch_event(state, config, images_per_s, elapsed(), time.perf_counter() - epoch_start))

    test = device_images(data.test, device, data.mean, data.std)
    test_acc, test_loss = evaluate(run.model, test, device, bf16=config.bf16, channels_last=config.channels_last)
    val_accs = [point["val_acc"] for point in state.curve if point["val_acc"] is not None]
    return RetrainResult(
        best_val_acc=max(val_accs) if val_accs else None,
        test_acc=test_acc,
        epochs=config.epochs,
        curve=tuple(state.curve),
        seconds=elapsed(),
        test_loss=test_loss,
        model=run.model,
    )


def _prepare(
    kind: SpaceKind,
    arch: Arch,
    space: Space | None,
    data: Dataset,
    config: RetrainConfig,
    device: torch.device,
    num_classes: int,
    in_channels: int,
    path: Path | None,
) -> _Run:
    """The network with its initial weights, its optimiser and the splits, all on `device`."""
    model = _initial_model(kind, arch, space, num_classes, in_channels, config)
    model.to(device, memory_format=memory_format(config.channels_last))
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    train = device_images(data.train, device, data.mean, data.std)
    return _Run(
        model=model,
        optimizer=optimizer,
        config=config,
        device=device,
        train=train,
        val=device_images(data.val, device, data.mean, data.std) if len(data.val) else None,
        steps_per_epoch=train.num_batches(config.batch_size, drop_last=True),
        identity=_run_identity(kind, arch, data, config, num_classes, in_channels),
        path=path,
    )


def _initial_model(
    kind: SpaceKind, arch: Arch, space: Space | None, num_classes: int, in_channels: int, config: RetrainConfig
) -> DerivedModule:
    """The derived network with its initial weights, which depend on the seed alone.

    The init recipe is the config's where the kind has it, else "kaiming"; the
    caller's global RNG is left alone.
    """
    recipe = config.init if config.init in kind.init_recipes else "kaiming"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return reinitialise(kind.build_model(arch, num_classes, in_channels, space), recipe)


def _run_epoch(run: _Run, state: RetrainState, should_stop: Callable[[], bool] | None) -> bool:
    """Trains the current epoch's remaining batches; False when `should_stop` stopped it first."""
    config = run.config
    state.start_epoch(run.device)
    assert state.loss_sum is not None and state.correct is not None
    batches = run.train.batches(
        config.batch_size,
        shuffle=True,
        augment=config.augment,
        generator=state.generator,
        drop_last=True,
        channels_last=config.channels_last,
        start_batch=state.batch,
    )
    run.model.train()
    for x, y in batches:
        if should_stop is not None and should_stop():
            return False
        for group in run.optimizer.param_groups:
            group["lr"] = config.learning_rate(state.epoch * run.steps_per_epoch + state.batch, run.steps_per_epoch)
        loss, correct = retrain_step(run.model, run.optimizer, x, y, config, autocast_context(run.device, config.bf16))
        # Device-side sums: no host sync inside the epoch.
        state.loss_sum += loss * y.shape[0]
        state.correct += correct
        state.seen += y.shape[0]
        state.batch += 1
    return True


def _epoch_point(run: _Run, state: RetrainState) -> dict[str, Any]:
    """The finished epoch's curve point: training loss and accuracy, validation, the last step's lr."""
    _check_finite(state, f"in epoch {state.epoch + 1}")  # host sync: once per epoch
    assert state.loss_sum is not None and state.correct is not None
    val_acc = val_loss = None
    if run.val is not None:
        val_acc, val_loss = evaluate(
            run.model, run.val, run.device, bf16=run.config.bf16, channels_last=run.config.channels_last
        )
    return {
        "epoch": state.epoch + 1,
        "train_loss": state.loss_sum.item() / state.seen,
        "train_acc": 100.0 * state.correct.item() / state.seen,
        "val_acc": val_acc,
        "val_loss": val_loss,
        "lr": run.config.learning_rate((state.epoch + 1) * run.steps_per_epoch - 1, run.steps_per_epoch),
    }


def _epoch_event(
    state: RetrainState, config: RetrainConfig, images_per_s: float, elapsed_s: float, epoch_seconds: float
) -> RetrainEpoch:
    """The report of the epoch `state` just finished."""
    point = state.curve[-1]
    return RetrainEpoch(
        epoch=state.epoch,
        epochs=config.epochs,
        train_loss=point["train_loss"],
        train_acc=point["train_acc"],
        val_acc=point["val_acc"],
        lr=point["lr"],
        images_per_s=images_per_s,
        elapsed_s=elapsed_s,
        eta_s=epoch_seconds * (config.epochs - state.epoch),
    )


def _save(run: _Run, state: RetrainState, seconds: float) -> None:
    """Writes the checkpoint, with `seconds` of wall time so far (no checkpoint path: nothing)."""
    if run.path is None:
        return
    save_checkpoint(
        {
            "kind": CHECKPOINT_KIND,
            **run.identity,
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            **state.to_checkpoint(seconds),
        },
        run.path,
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


def _check_finite(state: RetrainState, when: str) -> None:
    """Raises RetrainDiverged if the epoch's loss sum is NaN or infinite (a host sync)."""
    assert state.loss_sum is not None
    if not torch.isfinite(state.loss_sum).item():
        raise RetrainDiverged(
            f"retraining diverged {when}: the training loss is {state.loss_sum.item()}; "
            "try a lower lr, a longer warmup or grad_clip (the last good checkpoint is kept)"
        )


def _run_identity(
    kind: SpaceKind, arch: Arch, data: Dataset, config: RetrainConfig, num_classes: int, in_channels: int
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed by this run (the space kind is recorded, not compared:
    two kinds' architecture JSON never coincide)."""
    return {
        "space_kind": kind.name,
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


def _restore(run: _Run, generator: torch.Generator) -> RetrainState:
    """Loads the checkpoint at `run.path` into the model, optimiser and generator; returns its state."""
    assert run.path is not None
    path, identity = run.path, run.identity
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
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        return RetrainState.from_checkpoint(state, generator, run.device)
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
    "RetrainState",
    "evaluate",
    "reinitialise",
    "retrain",
    "retrain_step",
]
