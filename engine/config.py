"""Every setting of the engine, as frozen dataclasses that own their defaults.

One home per setting: the command line, the app's forms and the job JSON all take
their defaults from these classes (a test fails when they drift) and validate with
them. Nothing here imports torch or numpy, so the front ends can read and check
settings without loading the engine. The loops re-export the class they use
(`engine.train.TrainConfig` is `engine.config.TrainConfig`).

Example:
    config = dataclasses.replace(TrainConfig(), epochs=10)
    json.dumps(dataclasses.asdict(config))
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ConfigError, DatasetError, InvalidRetrainConfig

# bf16 autocast: "auto" where bf16 is native (CUDA, CPUs with bf16 instructions), or forced.
BF16_MODES = ("auto", "on", "off")
# Search strategies; "staged" is the paper's sequence: random, perturb the best, Markov chain.
STRATEGIES = ("random", "perturb", "markov", "evolution", "staged")
# Names that stored jobs may still use for a strategy renamed since.
LEGACY_STRATEGIES = {"paper": "staged"}
# Candidates a racing search hands the scorer at once (racing needs many to drop any).
RACING_BATCH = 64
# The HyperNet capacity a new experiment gets (a key of HYPERNET_SIZES).
DEFAULT_HYPERNET = "standard"
# Weight-init recipes of a retrained network (see engine.retrain.reinitialise).
INIT_RECIPES = ("kaiming", "banks")
# The largest integer a setting may hold: ids, seeds and counts end up in 32-bit
# database columns (PostgreSQL's integer), and torch and numpy seeds must accept them.
INT_MAX = 2**31 - 1
# The largest number a float setting may hold: the loops compute in float32 (and bf16),
# where anything larger overflows to infinity.
FLOAT_MAX = 3.4028234663852886e38
# Fewest validation images a search scores on: fewer cannot tell architectures apart.
MIN_VALIDATION_IMAGES = 10
# Data sets the engine knows by name, and the kinds that take a path (`npz:PATH`).
BUILT_IN_KINDS = ("synthetic", "cifar10", "cifar100", "stl10")
PATH_KINDS = ("npz", "folder")
# Validation sizes the literature uses, where a data set has one (SMASH: 5,000 for CIFAR).
_USUAL_VAL_SIZE: dict[str, float] = {"cifar10": 5000, "cifar100": 5000}
_DEFAULT_VAL_SIZE = 0.1


def _check(owner: str, rules: Iterable[tuple[str, bool, str]]) -> None:
    """Raise ConfigError for the first rule that fails: (field, holds, what it must be).

    Rules are written so that NaN fails them too (`not x > 0` rather than `x <= 0`).
    """
    for field, holds, must in rules:
        if not holds:
            raise ConfigError(f"{owner}.{field} {must}", field)


def _check_bf16(owner: str, value: object) -> None:
    _check(owner, [("bf16", value in BF16_MODES, f"must be one of {', '.join(BF16_MODES)}, got {value!r}")])


@dataclass(frozen=True)
class DataConfig:
    """Which data set to load and how to split it."""

    dataset: str = "synthetic"  # synthetic, cifar10, cifar100, stl10, npz:PATH or folder:PATH
    root: str | None = None  # download cache; None: $SMASH_DATA, else the user cache dir
    val_size: float | None = None  # <1: fraction of train, >=1: count; None: the set's usual
    split_seed: int = 0  # seed of the validation carve-out, fixed so scores stay comparable
    download: bool = True  # let torchvision fetch missing files
    synthetic_train: int = 5000  # synthetic training images (before the carve-out)
    synthetic_test: int = 1000  # synthetic test images
    synthetic_seed: int = 0  # seed of the synthetic images themselves
    image_size: int | None = None  # resize to this square side (needed for mixed-size folders)

    def __post_init__(self) -> None:
        kind, _, path = self.dataset.partition(":")
        if self.dataset not in BUILT_IN_KINDS and not (kind in PATH_KINDS and path):
            choices = ", ".join(BUILT_IN_KINDS + tuple(f"{k}:PATH" for k in PATH_KINDS))
            raise DatasetError(f"unknown data set {self.dataset!r}: expected one of {choices}")
        size = self.val_size
        # Written so that NaN and infinity fail too.
        if size is not None and not (0 <= size < 1 or (size >= 1 and float(size).is_integer())):
            raise DatasetError(
                f"val_size must be a fraction in [0, 1) or a whole count, got {self.val_size}"
            )
        if self.synthetic_train < 1 or self.synthetic_test < 1:
            raise DatasetError("synthetic_train and synthetic_test must be at least 1")
        if self.image_size is not None and self.image_size < 1:
            raise DatasetError(f"image_size must be at least 1, got {self.image_size}")

    @property
    def kind(self) -> str:
        """The data set kind without its path: `npz:/a/b` gives `npz`."""
        return self.dataset.partition(":")[0]

    @property
    def path(self) -> Path | None:
        """The path of an `npz:` or `folder:` data set, else None."""
        if self.kind not in PATH_KINDS:
            return None
        return Path(self.dataset.partition(":")[2]).expanduser()

    def val_count(self, train_images: int) -> int:
        """Images the validation split takes out of a training split of `train_images`."""
        size = self.val_size if self.val_size is not None else _USUAL_VAL_SIZE.get(self.kind, _DEFAULT_VAL_SIZE)
        return round(size * train_images) if size < 1 else int(size)

    def cache_dir(self) -> Path:
        """Where torchvision data sets are downloaded to and looked for."""
        if self.root is not None:
            return Path(self.root).expanduser()
        if os.environ.get("SMASH_DATA"):
            return Path(os.environ["SMASH_DATA"]).expanduser()
        import platformdirs  # only here: a worker given a root or $SMASH_DATA never needs it

        return Path(platformdirs.user_cache_dir("smash")) / "datasets"


@dataclass(frozen=True)
class HyperNetConfig:
    """Capacity of the HyperNet. The paper stresses that too small a HyperNet loses the ranking."""

    stem_channels: int = 7  # channels added by the first conv
    growth: tuple[int, ...] = (10, 10, 10)  # channels added per dense layer, per dense stage
    layers: tuple[int, ...] = (8, 10, 4)  # dense layers per stage; a halving conv separates stages
    kernel_size: int = 3  # kernel of every conv but the last
    negative_slope: float = 0.02  # LeakyReLU slope: keeps gradients alive, NaNs visible

    def __post_init__(self) -> None:
        _check(
            "HyperNetConfig",
            [
                ("growth", len(self.growth) == len(self.layers) and bool(self.growth), "and layers need the same, non-zero length"),
                ("kernel_size", self.kernel_size >= 1 and self.kernel_size % 2 == 1, "must be odd and positive"),
                ("growth", min(self.growth, default=1) >= 1, "must be positive"),
                ("layers", min(self.layers, default=0) >= 0, "must be >= 0"),
                ("stem_channels", self.stem_channels >= 1, "must be positive"),
            ],
        )


@dataclass(frozen=True)
class TrainConfig:
    """HyperNet training; the defaults are the paper's."""

    epochs: int = 100  # passes over the training split
    max_steps: int | None = None  # stop after this many steps (a budget for short runs)
    batch_size: int = 50  # images per step, each step with its own architecture
    lr: float = 1e-3  # Adam learning rate at the start of the cosine
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas, borrowed by the paper from DCGAN
    eps: float = 1e-4  # Adam epsilon; large so that half precision cannot divide by zero
    weight_decay: float = 1e-4  # L2 on the shared weights only, never on the HyperNet
    anneal: bool = True  # ramp max budget 0.5 -> 1 and max kernel 3 -> largest over the first half
    augment: bool = True  # random crops (pad 4) and horizontal flips
    seed: int = 0  # architectures, z, data order and augmentation all follow from it
    report_every: int | None = None  # steps between progress reports (host syncs); None: about 50 per run, at most 20 apart
    checkpoint_every: int = 500  # steps between checkpoints (also at epoch ends and on stop)
    eval_archs: int = 4  # random architectures evaluated on the validation split at epoch ends
    eval_images: int = 1000  # validation images they are evaluated on
    eval_bn_batches: int = 4  # BN recalibration batches per evaluated architecture (see ScoreConfig)
    channels_last: bool = True  # faster convolutions on CPU (oneDNN) and tensor cores
    bf16: str = "auto"  # one of BF16_MODES (see engine.device.autocast_context)

    def __post_init__(self) -> None:
        _check(
            "TrainConfig",
            [
                ("epochs", self.epochs >= 1, f"must be at least 1, got {self.epochs}"),
                ("max_steps", self.max_steps is None or self.max_steps >= 1, f"must be at least 1, got {self.max_steps}"),
                ("batch_size", self.batch_size >= 1, f"must be at least 1, got {self.batch_size}"),
                ("lr", self.lr > 0 and math.isfinite(self.lr), f"must be positive and finite, got {self.lr}"),
                ("eps", self.eps > 0 and math.isfinite(self.eps), f"must be positive and finite, got {self.eps}"),
                ("weight_decay", self.weight_decay >= 0 and math.isfinite(self.weight_decay), f"must be >= 0 and finite, got {self.weight_decay}"),
                ("betas", all(0 <= b < 1 for b in self.betas), f"must lie in [0, 1), got {self.betas}"),
                ("report_every", self.report_every is None or self.report_every >= 1, f"must be at least 1, got {self.report_every}"),
                ("checkpoint_every", self.checkpoint_every >= 1, f"must be at least 1, got {self.checkpoint_every}"),
                ("eval_archs", self.eval_archs >= 0, f"must be >= 0, got {self.eval_archs}"),
                ("eval_images", self.eval_images >= 1, f"must be at least 1, got {self.eval_images}"),
                ("eval_bn_batches", self.eval_bn_batches >= 0, f"must be >= 0, got {self.eval_bn_batches}"),
                ("seed", self.seed >= 0, f"must be >= 0, got {self.seed}"),
            ],
        )
        _check_bf16("TrainConfig", self.bf16)

    def report_interval(self, total_steps: int) -> int:
        """Steps between progress reports in a run of `total_steps`."""
        if self.report_every is not None:
            return self.report_every
        return max(1, min(20, total_steps // 50))


@dataclass(frozen=True)
class ScoreConfig:
    """How architectures are scored."""

    images: int | None = None  # validation images to score on, a fixed random subset (None: the whole split)
    batch_size: int | None = None  # images per forward pass (None: 200 on a CPU, where smaller activations stay in cache, 1000 on CUDA); halved when the device runs out of memory
    z_draws: int = 1  # independent z draws whose errors and losses are averaged
    bn_recalibration_batches: int = 4  # training batches that re-estimate BN statistics (0: off, the paper's way)
    bn_batch_size: int = 128  # images per recalibration batch
    seed: int = 0  # z draws and recalibration batches depend only on this and the architecture
    bf16: str = "auto"  # one of BF16_MODES (see engine.device.autocast_context)
    channels_last: bool = True  # faster convolutions on CPU (oneDNN) and on tensor cores

    def __post_init__(self) -> None:
        _check(
            "ScoreConfig",
            [
                ("images", self.images is None or self.images >= 1, f"must be at least 1, got {self.images}"),
                ("batch_size", self.batch_size is None or self.batch_size >= 1, f"must be at least 1, got {self.batch_size}"),
                ("z_draws", self.z_draws >= 1, f"must be at least 1, got {self.z_draws}"),
                ("bn_recalibration_batches", self.bn_recalibration_batches >= 0, f"must be >= 0, got {self.bn_recalibration_batches}"),
                ("bn_batch_size", self.bn_batch_size >= 1, f"must be at least 1, got {self.bn_batch_size}"),
                ("seed", self.seed >= 0, f"must be >= 0, got {self.seed}"),
            ],
        )
        _check_bf16("ScoreConfig", self.bf16)


@dataclass(frozen=True)
class RaceConfig:
    """Successive halving over validation images."""

    top_k: int = 10  # the ranking's head that must come out as with full scoring
    first_images: int | None = None  # images of the first rung, whatever the batch size (None: 1/32 of the split); rounded up to the scorer's rung ends
    keep: float = 1 / 3  # fraction of candidates kept after each rung (the margin guard keeps close calls)
    min_survivors: int | None = None  # never keep fewer than this (None: top_k + 2)
    margin_z: float = 2.0  # also keep anyone within this many standard errors of the k-th best

    def __post_init__(self) -> None:
        _check(
            "RaceConfig",
            [
                ("top_k", self.top_k >= 1, f"must be at least 1, got {self.top_k}"),
                ("first_images", self.first_images is None or self.first_images >= 1, f"must be at least 1, got {self.first_images}"),
                ("keep", 0.0 < self.keep <= 1.0, f"must lie in (0, 1], got {self.keep}"),
                ("min_survivors", self.min_survivors is None or self.min_survivors >= 1, f"must be at least 1, got {self.min_survivors}"),
                ("margin_z", self.margin_z >= 0 and math.isfinite(self.margin_z), f"must be >= 0 and finite, got {self.margin_z}"),
            ],
        )


@dataclass(frozen=True)
class SearchConfig:
    """What a search does and how much it scores."""

    strategy: str = "random"  # one of STRATEGIES
    architectures: int = 500  # random candidates (random, staged) or evaluations (evolution)
    top_k: int = 10  # how many of the best are perturbed (perturb, staged)
    perturbations: int = 100  # perturbations of the best (perturb, staged)
    perturb_p: float = 0.05  # probability that each field is resampled by a perturbation
    markov_steps: int = 100  # greedy chain steps (markov, staged)
    population: int = 50  # regularised evolution: population size
    tournament: int = 10  # regularised evolution: sample size of each tournament
    batch: int = 16  # candidates handed to the scorer at once (RACING_BATCH when racing)
    seed: int = 0  # the whole search follows from it

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown search strategy {self.strategy!r} (known: {', '.join(STRATEGIES)})", "strategy")
        _check(
            "SearchConfig",
            [
                *((name, getattr(self, name) >= 1, f"must be at least 1, got {getattr(self, name)}")
                  for name in ("architectures", "top_k", "population", "tournament", "batch")),
                ("perturbations", self.perturbations >= 0, f"must be >= 0, got {self.perturbations}"),
                ("markov_steps", self.markov_steps >= 0, f"must be >= 0, got {self.markov_steps}"),
                ("perturb_p", 0.0 < self.perturb_p <= 1.0, f"must lie in (0, 1], got {self.perturb_p}"),
                ("tournament", self.tournament <= self.population, f"({self.tournament}) cannot exceed population ({self.population})"),
                ("seed", self.seed >= 0, f"must be >= 0, got {self.seed}"),
            ],
        )

    @property
    def budget(self) -> int:
        """Most architectures the search scores (for progress bars)."""
        if self.strategy == "random":
            return self.architectures
        # perturb and markov start from top_k random samples when given nothing to start from
        if self.strategy == "perturb":
            return self.top_k + self.perturbations
        if self.strategy == "markov":
            return self.top_k + self.markov_steps
        if self.strategy == "evolution":
            return self.architectures
        return self.architectures + self.perturbations + self.markov_steps


@dataclass(frozen=True)
class RetrainConfig:
    """How a derived network is trained from scratch (the paper's settings by default)."""

    # Passes over the training split: enough to tell architectures apart in minutes to
    # hours; the paper's full protocol is 300 (`smash retrain --epochs 300`).
    epochs: int = 20
    batch_size: int = 50  # images per SGD step (the paper's 50)
    lr: float = 0.1  # peak learning rate, reached after the warmup
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True  # Nesterov momentum, as in the paper
    weight_decay: float = 1e-4  # L2 on every parameter, as in the paper
    label_smoothing: float = 0.0  # cross-entropy label smoothing (0: none, as in the paper)
    # Linear warmup from ~0 to lr (at most half the run), then the cosine decay. With the
    # "banks" init one epoch lifted a tiny ResNet from 23% to 57% in a 4-epoch run; either alone did not.
    warmup_epochs: float = 1.0
    grad_clip: float | None = None  # max global gradient norm; None: off (clipping at 2 helped no measured run)
    init: str = "banks"  # weight init recipe, one of INIT_RECIPES (see `reinitialise`)
    augment: bool = True  # random 4-pixel translation and horizontal flip of training images
    seed: int = 0  # seeds the initial weights, the batch order and the augmentation
    channels_last: bool = True  # faster convolutions on CPU (oneDNN) and on tensor cores
    bf16: str = "auto"  # one of BF16_MODES (see engine.device.autocast_context)
    checkpoint_every_epochs: int = 1  # epochs between checkpoints (the last epoch always writes one)

    def __post_init__(self) -> None:
        try:
            _check(
                "RetrainConfig",
                [
                    ("epochs", self.epochs >= 1, f"must be at least 1, got {self.epochs}"),
                    ("batch_size", self.batch_size >= 1, f"must be at least 1, got {self.batch_size}"),
                    ("lr", self.lr > 0 and math.isfinite(self.lr), f"must be positive and finite, got {self.lr}"),
                    ("momentum", 0 <= self.momentum < 1, f"must lie in [0, 1), got {self.momentum}"),
                    ("nesterov", not (self.nesterov and self.momentum == 0), "needs a momentum above 0"),
                    ("weight_decay", 0 <= self.weight_decay < math.inf, f"must be >= 0 and finite, got {self.weight_decay}"),
                    ("label_smoothing", 0 <= self.label_smoothing < 1, f"must lie in [0, 1), got {self.label_smoothing}"),
                    ("warmup_epochs", 0 <= self.warmup_epochs < math.inf, f"must be >= 0 and finite, got {self.warmup_epochs}"),
                    ("grad_clip", self.grad_clip is None or 0 < self.grad_clip < math.inf, f"must be positive or None, got {self.grad_clip}"),
                    ("init", self.init in INIT_RECIPES, f"must be one of {', '.join(INIT_RECIPES)}, got {self.init!r}"),
                    ("bf16", self.bf16 in BF16_MODES, f"must be one of {', '.join(BF16_MODES)}, got {self.bf16!r}"),
                    ("seed", self.seed >= 0, f"must be >= 0, got {self.seed}"),
                    ("checkpoint_every_epochs", self.checkpoint_every_epochs >= 1, f"must be at least 1, got {self.checkpoint_every_epochs}"),
                ],
            )
        except ConfigError as exc:  # retraining's callers catch RetrainError
            detail = str(exc).removeprefix("RetrainConfig.")
            raise InvalidRetrainConfig(f"invalid retrain config: {detail}", exc.field) from None

    def learning_rate(self, step: int, steps_per_epoch: int) -> float:
        """The learning rate of optimiser step `step` (0-based): linear warmup, then cosine to 0.

        The warmup is capped at half the run, so a short run (say `epochs=1`) still decays.

        Args:
            step: steps taken before this one, over the whole run.
            steps_per_epoch: optimiser steps per epoch.
        """
        total = self.epochs * steps_per_epoch
        warmup = round(min(self.warmup_epochs, self.epochs / 2) * steps_per_epoch)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


# HyperNet capacities by name (`--hypernet`): the paper's DenseNet, and a compact one
# for quick runs and tests.
HYPERNET_SIZES: dict[str, HyperNetConfig] = {
    "standard": HyperNetConfig(),
    "compact": HyperNetConfig(growth=(6, 6), layers=(2, 2)),
}


__all__ = [
    "BF16_MODES",
    "BUILT_IN_KINDS",
    "DEFAULT_HYPERNET",
    "HYPERNET_SIZES",
    "INIT_RECIPES",
    "FLOAT_MAX",
    "INT_MAX",
    "LEGACY_STRATEGIES",
    "MIN_VALIDATION_IMAGES",
    "PATH_KINDS",
    "RACING_BATCH",
    "STRATEGIES",
    "DataConfig",
    "HyperNetConfig",
    "RaceConfig",
    "RetrainConfig",
    "ScoreConfig",
    "SearchConfig",
    "TrainConfig",
]
