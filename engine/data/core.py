"""The values of the data layer: its config, its error and the loaded splits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs
import torch

BUILT_IN_KINDS = ("synthetic", "cifar10", "cifar100", "stl10")
PATH_KINDS = ("npz", "folder")


class DatasetError(ValueError):
    """A data set that cannot be loaded; the message is one line meant for the user."""


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

    def cache_dir(self) -> Path:
        """Where torchvision data sets are downloaded to and looked for."""
        if self.root is not None:
            return Path(self.root).expanduser()
        if os.environ.get("SMASH_DATA"):
            return Path(os.environ["SMASH_DATA"]).expanduser()
        return Path(platformdirs.user_cache_dir("smash")) / "datasets"


@dataclass(frozen=True, eq=False)
class Split:
    """Images and labels of one split, on the CPU."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return self.labels.shape[0]

    @classmethod
    def from_arrays(
        cls, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, source: str
    ) -> Split:
        """Checks and wraps arrays read from a file.

        Args:
            images: uint8 images in (N, C, H, W) order.
            labels: integer class indices, one per image.
            source: what the arrays were read from, named in error messages.
        """
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise DatasetError(
                f"{source}: images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise DatasetError(
                f"{source}: labels must be a 1-D integer array, got {labels.dtype} {tuple(labels.shape)}"
            )
        if labels.shape[0] != images.shape[0]:
            raise DatasetError(f"{source}: {images.shape[0]} images but {labels.shape[0]} labels")
        return cls(images.contiguous(), labels.to(torch.int64).contiguous())

    def subset(self, indices: torch.Tensor) -> Split:
        """The images at `indices`, in that order."""
        return Split(self.images[indices], self.labels[indices])


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded data set: train, validation (carved from train) and test splits."""

    name: str  # e.g. "cifar10" or "npz:imagenet32"
    classes: tuple[str, ...]  # class names, indexed by label
    train: Split  # what networks learn from
    val: Split  # carved out of the original training split, for scoring architectures
    test: Split  # the official test split, only for final accuracy
    mean: tuple[float, ...]  # per channel, in [0, 1] pixel units, over `train`
    std: tuple[float, ...]  # per channel, in [0, 1] pixel units, over `train`

    @property
    def in_channels(self) -> int:
        """Colour channels: 3, or 1 for grayscale sets."""
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        """Side of the (square) images in pixels."""
        return self.train.images.shape[-1]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)
