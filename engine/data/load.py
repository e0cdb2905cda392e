"""`load_dataset`: read a data set, carve the validation split, compute channel statistics."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from engine.data import synthetic
from engine.data.core import DataConfig, Dataset, DatasetError, Split
from engine.data.sources import Source, read_folder, read_npz, read_torchvision
from engine.probe import check_labels

_CHUNK = 2048  # images converted to float at a time, to bound peak memory


def load_dataset(config: DataConfig) -> Dataset:
    """Loads the data set `config` names, with a validation split carved out of train.

    Args:
        config: which data set and how to split it.

    Raises:
        DatasetError: the data set is missing, unreadable or inconsistent.
    """
    source = _read(config)
    train, test = source.train, source.test
    if config.image_size is not None and config.kind != "folder":  # folders resize on decode
        train, test = _resized(train, config.image_size), _resized(test, config.image_size)
    channels, height, width = train.images.shape[1:]
    if test.images.shape[1:] != train.images.shape[1:]:
        raise DatasetError(
            f"{config.dataset}: train images are {tuple(train.images.shape[1:])} but test images "
            f"are {tuple(test.images.shape[1:])}"
        )
    if channels not in (1, 3):
        raise DatasetError(f"{config.dataset}: images have {channels} channels; expected 1 or 3")
    if height != width:
        raise DatasetError(
            f"{config.dataset}: images are {height}x{width}; set image_size to make them square"
        )
    classes = _classes(source.classes, train, test, config.dataset)

    count = config.val_count(len(train))
    train_idx, val_idx = carve_validation(train.labels, count, config.split_seed)
    train, val = train.subset(train_idx), train.subset(val_idx)
    mean, std = channel_stats(train.images)
    name = config.kind if config.path is None else f"{config.kind}:{config.path.name}"
    return Dataset(name, classes, train, val, test, mean, std)


def carve_validation(
    labels: torch.Tensor, count: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits indices 0..N-1 into train and validation, stratified by class.

    Each class gives the validation split its share of `count` (largest remainders
    round up), picked by a permutation that depends only on `seed` and the labels.

    Args:
        labels: int64 labels of the original training split.
        count: validation images; 0 gives an empty validation split.
        seed: seed of the permutation.

    Returns:
        Sorted int64 indices of the remaining training images, and of the validation images.
    """
    n = labels.shape[0]
    if not 0 <= count < n:
        raise DatasetError(
            f"a validation split of {count} images leaves no training images out of {n}"
        )
    label_of = labels.numpy()
    present, per_class = np.unique(label_of, return_counts=True)
    quota = count * per_class / n
    take = np.floor(quota).astype(np.int64)
    by_remainder = np.argsort(-(quota - take), kind="stable")
    take[by_remainder[: count - take.sum()]] += 1

    # A random order, then grouped by class (stable sort): within each class the order
    # stays random, and each class's first `take` images go to validation.
    order = np.random.default_rng(seed).permutation(n)
    order = order[np.argsort(label_of[order], kind="stable")]
    group = np.searchsorted(present, label_of[order])
    rank = np.arange(n) - np.concatenate([[0], np.cumsum(per_class)[:-1]])[group]
    to_val = rank < take[group]
    return (
        torch.from_numpy(np.sort(order[~to_val])),
        torch.from_numpy(np.sort(order[to_val])),
    )


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation in [0, 1] pixel units.

    Args:
        images: uint8 (N, C, H, W), N >= 1.
    """
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start : start + _CHUNK].to(torch.float64).transpose(0, 1).flatten(1)
        total += chunk.sum(1)
        squares += chunk.square().sum(1)
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    # A constant channel would normalise to infinity; one grey level is the floor.
    std = (squares / count - mean.square()).clamp(min=0).sqrt().clamp(min=1.0)
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


def _read(config: DataConfig) -> Source:
    if config.kind == "synthetic":
        # Independent child streams: the train images do not depend on the test size.
        train_seed, test_seed = np.random.SeedSequence(config.synthetic_seed).spawn(2)
        train = synthetic.generate(config.synthetic_train, np.random.default_rng(train_seed))
        test = synthetic.generate(config.synthetic_test, np.random.default_rng(test_seed))
        return Source(
            synthetic.CLASSES,
            Split.from_arrays(*train, "synthetic train"),
            Split.from_arrays(*test, "synthetic test"),
        )
    if config.kind == "npz":
        assert config.path is not None  # guaranteed by DataConfig for path kinds
        return read_npz(config.path)
    if config.kind == "folder":
        assert config.path is not None
        return read_folder(config.path, config.image_size)
    return read_torchvision(config.kind, config.cache_dir(), config.download)


def _classes(
    named: tuple[str, ...] | None, train: Split, test: Split, dataset: str
) -> tuple[str, ...]:
    """Checks the labels against the class names, or names classes by index."""
    if len(train) == 0:
        raise DatasetError(f"{dataset}: the training split is empty")
    if len(test) == 0:
        raise DatasetError(f"{dataset}: the test split is empty")
    if named is None:  # classes by index: they must be 0-based, contiguous, two or more
        count = check_labels(train.labels.numpy(), test.labels.numpy(), dataset)
        return tuple(str(i) for i in range(count))
    low = min(int(train.labels.min()), int(test.labels.min()))
    high = max(int(train.labels.max()), int(test.labels.max()))
    count = len(named)
    if low < 0 or high >= count:
        bad = low if low < 0 else high
        raise DatasetError(f"{dataset}: label {bad} is out of range for {count} classes")
    return named


def _resized(split: Split, side: int) -> Split:
    """Antialiased bilinear resize to `side` x `side`, in chunks."""
    if split.images.shape[-2:] == (side, side):
        return split
    parts = [
        F.interpolate(chunk.float(), size=(side, side), mode="bilinear", antialias=True)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for chunk in split.images.split(_CHUNK)
    ]
    return Split(torch.cat(parts), split.labels)
