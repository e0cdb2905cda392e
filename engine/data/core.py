"""The values of the data layer: the loaded splits (its config and error live in
`engine.config` and `engine.errors`, torch-free, and are re-exported here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.config import BUILT_IN_KINDS, PATH_KINDS, DataConfig
from engine.errors import DatasetError


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


__all__ = ["BUILT_IN_KINDS", "PATH_KINDS", "DataConfig", "Dataset", "DatasetError", "Split"]
