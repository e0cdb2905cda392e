"""What a data set looks like, read without loading it: split sizes, classes, image shape.

`probe_dataset` reads file headers, label arrays and directory listings, never the
images themselves, so the command line and the app can refuse a data set that cannot
work (1x1 images, one class, labels that skip a class, classes only in the test
split, a validation split of a handful of images) before anything is queued. The
numbers are stored on the experiment, so later checks (a retrain's batch size) need
no data either.

Torch-free; numpy is imported only to read `.npz` files.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import MIN_VALIDATION_IMAGES, DataConfig
from engine.errors import ConfigError, DatasetError, first_line

# The sizes torchvision's data sets always have (train, test, classes, side).
KNOWN_SETS: dict[str, tuple[int, int, int, int]] = {
    "cifar10": (50000, 10000, 10, 32),
    "cifar100": (50000, 10000, 100, 32),
    "stl10": (5000, 8000, 10, 96),
}
SYNTHETIC_CLASSES = 10  # engine.data.synthetic.CLASSES, without importing numpy for it
SYNTHETIC_SIDE = 32
# Smallest image side a network can take: its blocks halve the resolution twice.
MIN_IMAGE_SIDE = 4
# Most classes a classifier head is built for: beyond it a label array is not labels.
MAX_CLASSES = 100_000
_IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)


@dataclass(frozen=True)
class DataShape:
    """The splits a data set gives after the validation carve-out, and its images."""

    train_images: int  # images left to train on
    val_images: int  # images carved out of the training split to score architectures
    test_images: int  # the official test split
    num_classes: int  # classifier outputs
    in_channels: int  # 1 or 3
    image_size: int  # side of the (square, possibly resized) images in pixels

    def to_dict(self) -> dict[str, int]:
        return {
            "train_images": self.train_images,
            "val_images": self.val_images,
            "test_images": self.test_images,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
        }


def probe_dataset(config: DataConfig) -> DataShape | None:
    """The shape of the data set `config` names, from headers and labels only.

    Returns:
        The shape, or None for a torchvision set whose files are not downloaded yet
        (loading it downloads it; its shape is known once that worked).

    Raises:
        DatasetError: the data set is missing, unreadable or cannot be trained on; one line.
    """
    if config.kind == "synthetic":
        shape = (config.synthetic_train, config.synthetic_test, SYNTHETIC_CLASSES, 3, SYNTHETIC_SIDE)
    elif config.kind in KNOWN_SETS:
        if not _downloaded(config):
            return None
        train, test, classes, side = KNOWN_SETS[config.kind]
        shape = (train, test, classes, 3, side)
    elif config.kind == "npz":
        assert config.path is not None
        shape = _probe_npz(config.path)
    else:
        assert config.path is not None
        shape = _probe_folder(config.path, config.image_size)
    train, test, classes, channels, side = shape
    side = config.image_size or side
    if side < MIN_IMAGE_SIDE:
        raise DatasetError(
            f"{config.dataset}: images are {side}x{side} pixels; a network halves them twice, "
            f"so they need at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} (set image_size to upscale)"
        )
    val = config.val_count(train)
    if not 0 <= val < train:
        raise DatasetError(
            f"{config.dataset}: a validation split of {val} images leaves nothing to train on "
            f"out of {train}"
        )
    return DataShape(train - val, val, test, classes, channels, side)


def check_searchable(shape: DataShape, config: DataConfig) -> None:
    """Refuse a validation split too small to rank architectures on.

    Raises:
        ConfigError: fewer than MIN_VALIDATION_IMAGES validation images (a setting: val_size).
    """
    if shape.val_images < MIN_VALIDATION_IMAGES:
        raise ConfigError(
            f"{config.dataset}: the validation split has {shape.val_images} images; architectures "
            f"are scored on it, so it needs at least {MIN_VALIDATION_IMAGES} (set val_size)",
            "val_size",
        )


def _downloaded(config: DataConfig) -> bool:
    folders = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "stl10": "stl10_binary"}
    return (config.cache_dir() / folders[config.kind]).is_dir()


# --- npz ------------------------------------------------------------------------------


def _probe_npz(path: Path) -> tuple[int, int, int, int, int]:
    """(train, test, classes, channels, side) of an npz file or folder (see engine.data.sources)."""
    if path.is_file():
        members = _npz_members(path)
        if not {"x_train", "y_train", "x_test", "y_test"} <= members.keys():
            raise DatasetError(
                f"{path} has no test split: give a directory with train.npz and test.npz, "
                "or one file with x_train, y_train, x_test and y_test"
            )
        train = _npz_split([(path, "x_train", "y_train")], one_based=False)
        test = _npz_split([(path, "x_test", "y_test")], one_based=False)
    elif path.is_dir():
        train_files, test_files = npz_split_files(path)
        train = _npz_split([_layout(f) for f in train_files], one_based=None)
        test = _npz_split([_layout(f) for f in test_files], one_based=None)
    else:
        raise DatasetError(f"npz data set not found: {path}")
    if train.image != test.image:
        raise DatasetError(
            f"{path}: train images are {train.image} but test images are {test.image}"
        )
    classes = check_labels(train.labels, test.labels, str(path))
    channels, side, other = train.image
    if side != other:
        raise DatasetError(f"{path}: images are {side}x{other}; set image_size to make them square")
    return train.count, test.count, classes, channels, side


def npz_split_files(path: Path) -> tuple[list[Path], list[Path]]:
    """The `*train*` and the `*test*` (else `*val*`) files of an npz folder, in natural order."""
    files = sorted(path.glob("*.npz"), key=_natural_key)
    train_files = [f for f in files if "train" in f.stem.lower()]
    rest = [f for f in files if f not in train_files]
    test_files = [f for f in rest if "test" in f.stem.lower()] or [
        f for f in rest if "val" in f.stem.lower()
    ]
    if not train_files or not test_files:
        found = ", ".join(f.name for f in files) or "no .npz files"
        raise DatasetError(f"{path} needs .npz files named *train* and *test* (or *val*); found {found}")
    return train_files, test_files


@dataclass(frozen=True)
class _SplitInfo:
    count: int
    image: tuple[int, int, int]  # channels, height, width
    labels: Any  # numpy int64 array, 0-based


def _layout(file: Path) -> tuple[Path, str, str]:
    members = _npz_members(file)
    if "x" in members and "y" in members:
        return file, "x", "y"
    if "data" in members and "labels" in members:
        return file, "data", "labels"
    raise DatasetError(
        f"{file} holds {sorted(members)}; expected x and y, or data and labels (Imagenet32)"
    )


def _npz_split(parts: Sequence[tuple[Path, str, str]], one_based: bool | None) -> _SplitInfo:
    import numpy as np

    count, image, labels = 0, None, []
    for file, x_key, y_key in parts:
        shape, dtype = _npy_header(file, x_key)
        if dtype != "|u1":
            raise DatasetError(f"{file}: {x_key} must be uint8, got {np.dtype(dtype)}")
        if x_key == "data":  # Imagenet32 rows: (N, C*S*S), labels counted from 1
            if len(shape) != 2:
                raise DatasetError(f"{file}: data must be (N, C*S*S), got {shape}")
            for channels in (3, 1):
                side = round((shape[1] / channels) ** 0.5)
                if channels * side * side == shape[1]:
                    break
            else:
                raise DatasetError(f"{file}: a row of {shape[1]} values is not 3*S*S or S*S pixels")
            this = (channels, side, side)
        elif len(shape) == 3:
            this = (1, shape[1], shape[2])
        elif len(shape) == 4 and shape[-1] in (1, 3):
            this = (shape[3], shape[1], shape[2])
        else:
            raise DatasetError(f"{file}: {x_key} must be (N, H, W) or (N, H, W, 1|3), got {shape}")
        if image is not None and this != image:
            raise DatasetError(f"{file} holds {this} images but {parts[0][0]} holds {image}")
        image = this
        y = _npz_array(file, y_key)
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise DatasetError(f"{file}: {y_key} must be a 1-D integer array, got {y.dtype} {y.shape}")
        if y.shape[0] != shape[0]:
            raise DatasetError(f"{file}: {shape[0]} images but {y.shape[0]} labels")
        base = one_based if one_based is not None else x_key == "data"
        if base and y.size and y.min() < 1:
            raise DatasetError(f"{file}: labels must count from 1 (Imagenet32 layout)")
        labels.append(y.astype(np.int64) - (1 if base else 0))
        count += shape[0]
    assert image is not None
    return _SplitInfo(count, image, np.concatenate(labels))


def check_labels(train: Any, test: Any, source: str) -> int:
    """Number of classes; refuses labels that cannot be a classification's."""
    import numpy as np

    if train.size == 0 or test.size == 0:
        raise DatasetError(f"{source}: the {'training' if train.size == 0 else 'test'} split is empty")
    low, high = int(min(train.min(), test.min())), int(max(train.max(), test.max()))
    if low < 0:
        raise DatasetError(f"{source}: label {low} is negative; labels are class indices from 0")
    if high >= MAX_CLASSES:
        raise DatasetError(f"{source}: label {high} would make {high + 1} classes; at most {MAX_CLASSES}")
    present = np.unique(train)
    if present.size < 2:
        raise DatasetError(f"{source}: the training split has only one class ({int(present[0])})")
    if present.size != high + 1 or present[0] != 0:
        missing = sorted(set(range(high + 1)) - set(present.tolist()))[:5]
        raise DatasetError(
            f"{source}: the training split has no images of class(es) {', '.join(map(str, missing))}; "
            "labels must be 0-based and contiguous"
        )
    return high + 1


def _npz_members(file: Path) -> dict[str, str]:
    try:
        with zipfile.ZipFile(file) as archive:
            return {n[:-4]: n for n in archive.namelist() if n.endswith(".npy")}
    except (OSError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"cannot read {file}: {first_line(exc)}") from None


def _npy_header(file: Path, key: str) -> tuple[tuple[int, ...], str]:
    """Shape and dtype string of one array of an npz file, from its header alone."""
    import numpy as np

    try:
        with zipfile.ZipFile(file) as archive, archive.open(f"{key}.npy") as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise DatasetError(f"cannot read {file}: {first_line(exc)}") from None
    return tuple(shape), dtype.str


def _npz_array(file: Path, key: str) -> Any:
    import numpy as np

    try:
        with np.load(file, allow_pickle=False) as npz:
            return npz[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DatasetError(f"cannot read {file}: {first_line(exc)}") from None


# --- image folders ----------------------------------------------------------------------


def _probe_folder(path: Path, image_size: int | None) -> tuple[int, int, int, int, int]:
    train_dir, test_dir, classes = folder_splits(path)
    counts = []
    first: Path | None = None
    for split in (train_dir, test_dir):
        total = 0
        for name in classes:
            files = [f for f in (split / name).iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES and f.is_file()]
            if split is train_dir and not files:
                raise DatasetError(f"{split / name} holds no images: every class needs training images")
            total += len(files)
            first = first or (files[0] if files else None)
        if total == 0:
            raise DatasetError(f"{split} holds no images")
        counts.append(total)
    assert first is not None
    channels, side = _image_header(first)
    return counts[0], counts[1], len(classes), channels, image_size or side


def folder_splits(path: Path) -> tuple[Path, Path, list[str]]:
    """An ImageFolder tree's train folder, test (else val) folder and class names, checked."""
    if not path.is_dir():
        raise DatasetError(f"image folder not found: {path}")
    train_dir = path / "train"
    test_dir = path / "test" if (path / "test").is_dir() else path / "val"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise DatasetError(f"{path} needs train/ and test/ (or val/) subfolders")
    classes = _class_folders(train_dir)
    if len(classes) < 2:
        raise DatasetError(f"{train_dir} needs at least two class folders, found {len(classes)}")
    if _class_folders(test_dir) != classes:
        differ = sorted(set(classes) ^ set(_class_folders(test_dir)))
        raise DatasetError(f"{train_dir} and {test_dir} have different class folders: {', '.join(differ)}")
    return train_dir, test_dir, classes


def _image_header(file: Path) -> tuple[int, int]:
    """(channels, side) of one image, from its header; the loader checks every image."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            width, height = image.size
            channels = 1 if image.mode in ("1", "L", "LA", "La", "I", "I;16", "F") else 3
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"cannot read image {file}: {first_line(exc)}") from None
    return channels, min(width, height)


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]



__all__ = [
    "KNOWN_SETS",
    "MIN_IMAGE_SIDE",
    "DataShape",
    "check_labels",
    "check_searchable",
    "folder_splits",
    "npz_split_files",
    "probe_dataset",
]
