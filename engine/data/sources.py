"""Readers that turn files into train and test splits: torchvision sets, npz files, image folders.

Each reader returns `Source`: class names (when the files know them) and uint8 (N, C, H, W)
splits. Anything that goes wrong becomes a one-line `DatasetError` naming the file or
directory involved.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from engine.data.core import DatasetError, Split
from engine.errors import first_line
from engine.probe import folder_splits, npz_split_files

if TYPE_CHECKING:
    from PIL import Image

_IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
# PIL modes whose pixels carry no colour; a folder made only of these loads as 1 channel.
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


class Source(NamedTuple):
    """What a reader found: the splits as stored, before any carve-out."""

    classes: tuple[str, ...] | None  # None when the files do not name the classes
    train: Split
    test: Split



def _natural_key(path: Path) -> list[object]:
    """Sort key under which `batch_2` comes before `batch_10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


# --- torchvision: CIFAR-10, CIFAR-100, STL-10 -----------------------------------------

_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10"}


def read_torchvision(kind: str, root: Path, download: bool) -> Source:
    """Loads a torchvision data set from `root`, downloading it there if allowed.

    Args:
        kind: `cifar10`, `cifar100` or `stl10`.
        root: the cache directory torchvision reads and writes.
        download: whether missing files may be fetched.
    """
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import check_integrity

    cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "stl10": tvd.STL10}[kind]
    archive = root / cls.filename
    had_archive = archive.exists()
    # An archive placed by hand unpacks without the network, so use it even when
    # downloads are off; its checksum is verified first so nothing is fetched.
    fetch = download or (
        not (root / cls.base_folder).is_dir() and check_integrity(str(archive), cls.tgz_md5)
    )
    try:
        root.mkdir(parents=True, exist_ok=True)
        if kind == "stl10":  # labelled splits only; "unlabeled" has no labels to train on
            train = cls(str(root), split="train", download=fetch)
            test = cls(str(root), split="test")
            train_images, test_images = train.data, test.data  # already (N, 3, 96, 96)
            train_labels, test_labels = train.labels, test.labels
        else:
            train = cls(str(root), train=True, download=fetch)
            test = cls(str(root), train=False)
            # torchvision keeps CIFAR as (N, 32, 32, 3)
            train_images = np.ascontiguousarray(train.data.transpose(0, 3, 1, 2))
            test_images = np.ascontiguousarray(test.data.transpose(0, 3, 1, 2))
            train_labels, test_labels = np.asarray(train.targets), np.asarray(test.targets)
    # Whatever torchvision raises here (network, checksum, tar, pickle) means the same
    # to the user: the files are not there or not usable.
    except Exception as exc:
        if not had_archive and archive.exists() and not check_integrity(str(archive), cls.tgz_md5):
            archive.unlink()  # a partial download would only confuse the next attempt
        if not fetch:
            problem = "is not there and download is off"
        elif isinstance(exc, RuntimeError) and "not found or corrupted" in str(exc):
            problem = "has missing or corrupted files"  # torchvision's own check failed
        else:
            problem = f"could not be downloaded ({first_line(exc)})"
        raise DatasetError(
            f"{_TITLES[kind]} in {root} {problem}; place {cls.filename} "
            f"or the extracted {cls.base_folder}/ in that directory"
        ) from None
    return Source(
        tuple(train.classes),
        Split.from_arrays(train_images, train_labels, f"{_TITLES[kind]} train"),
        Split.from_arrays(test_images, test_labels, f"{_TITLES[kind]} test"),
    )


# --- npz files ------------------------------------------------------------------------


def read_npz(path: Path) -> Source:
    """Loads train and test splits from one `.npz` file or a directory of them.

    A directory holds files named `*train*` and `*test*` (or `*val*`), each in layout A
    (`x` uint8 (N, H, W[, C]) and `y`, optional `classes`) or layout B (Imagenet32
    batches: `data` uint8 (N, C*S*S) in CHW order and 1-based `labels`); several files
    of one split are concatenated in natural order. A single file needs `x_train`,
    `y_train`, `x_test` and `y_test`.

    Args:
        path: the file or directory.
    """
    if path.is_file():
        arrays = _load_npz(path)
        if not {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
            raise DatasetError(
                f"{path} has no test split: give a directory with train.npz and test.npz, "
                "or one file with x_train, y_train, x_test and y_test"
            )
        classes = _class_names(arrays, path)
        train = _layout_a(arrays["x_train"], arrays["y_train"], f"{path} (train)")
        test = _layout_a(arrays["x_test"], arrays["y_test"], f"{path} (test)")
        return Source(classes, train, test)
    if not path.is_dir():
        raise DatasetError(f"npz data set not found: {path}")

    train_files, test_files = npz_split_files(path)
    train_classes, train = _read_npz_files(train_files)
    test_classes, test = _read_npz_files(test_files)
    if train_classes and test_classes and train_classes != test_classes:
        raise DatasetError(f"{path}: train and test files list different classes")
    return Source(train_classes or test_classes, train, test)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an npz file, decompressed now so that corruption surfaces here."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DatasetError(f"cannot read {path}: {first_line(exc)}") from None


def _read_npz_files(files: list[Path]) -> tuple[tuple[str, ...] | None, Split]:
    classes: tuple[str, ...] | None = None
    parts: list[Split] = []
    for file in files:
        arrays = _load_npz(file)
        if "x" in arrays and "y" in arrays:
            parts.append(_layout_a(arrays["x"], arrays["y"], str(file)))
        elif "data" in arrays and "labels" in arrays:
            parts.append(_layout_b(arrays["data"], arrays["labels"], str(file)))
        else:
            raise DatasetError(
                f"{file} holds {sorted(arrays)}; expected x and y, or data and labels (Imagenet32)"
            )
        named = _class_names(arrays, file)
        if named is not None and classes is not None and named != classes:
            raise DatasetError(f"{file} lists other classes than {files[0]}")
        classes = classes or named
        if parts[-1].images.shape[1:] != parts[0].images.shape[1:]:
            raise DatasetError(
                f"{file} holds {tuple(parts[-1].images.shape[1:])} images but {files[0]} holds "
                f"{tuple(parts[0].images.shape[1:])}"
            )
    if len(parts) == 1:
        return classes, parts[0]
    return classes, Split(
        torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts])
    )


def _class_names(arrays: dict[str, np.ndarray], path: Path) -> tuple[str, ...] | None:
    names = arrays.get("classes")
    if names is None:
        return None
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DatasetError(f"{path}: classes must be a 1-D array of strings")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())


def _layout_a(x: np.ndarray, y: np.ndarray, source: str) -> Split:
    """`x` (N, H, W) or (N, H, W, C) with C in {1, 3}."""
    if x.dtype != np.uint8:
        raise DatasetError(f"{source}: x must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    else:
        raise DatasetError(f"{source}: x must be (N, H, W) or (N, H, W, 1|3), got {x.shape}")
    return Split.from_arrays(x, y, source)


def _layout_b(data: np.ndarray, labels: np.ndarray, source: str) -> Split:
    """Imagenet32-style rows: `data` (N, C*S*S) in CHW order, labels counted from 1."""
    if data.dtype != np.uint8 or data.ndim != 2:
        raise DatasetError(
            f"{source}: data must be uint8 (N, C*S*S), got {data.dtype} {data.shape}"
        )
    row = data.shape[1]
    # No row length is both 3*S*S and T*T (the square root of 3 is irrational).
    for channels in (3, 1):
        side = round((row / channels) ** 0.5)
        if channels * side * side == row:
            break
    else:
        raise DatasetError(f"{source}: a row of {row} values is not 3*S*S or S*S pixels")
    labels = np.asarray(labels)
    if labels.size and labels.dtype.kind in "iu" and labels.min() < 1:
        raise DatasetError(f"{source}: labels must count from 1 (Imagenet32 layout)")
    if labels.dtype.kind in "iu":
        labels = labels.astype(np.int64) - 1
    return Split.from_arrays(data.reshape(-1, channels, side, side), labels, source)


# --- image folders --------------------------------------------------------------------


def read_folder(path: Path, image_size: int | None) -> Source:
    """Decodes an ImageFolder tree: `train/` and `test/` (or `val/`), one folder per class.

    Args:
        path: the tree's root.
        image_size: resize every image to this square side; required when sizes differ.
    """
    from PIL import Image

    train_dir, test_dir, classes = folder_splits(path)
    train_files = _image_files(train_dir, classes)
    test_files = _image_files(test_dir, classes)

    # Headers first (cheap): channel count and sizes must be known before decoding.
    modes, sizes = set(), set()
    for file, _ in train_files + test_files:
        with _open_image(file) as image:
            modes.add(image.mode)
            sizes.add(image.size)
    if image_size is None and len(sizes) > 1:
        (w1, h1), (w2, h2) = sorted(sizes)[:2]
        raise DatasetError(
            f"images in {path} have different sizes ({w1}x{h1}, {w2}x{h2}, ...); "
            "set image_size to resize them"
        )
    mode = "L" if modes <= _GRAY_MODES else "RGB"
    width, height = (image_size, image_size) if image_size else sizes.pop()

    def decode(files: list[tuple[Path, int]], source: Path) -> Split:
        images = np.empty((len(files), 1 if mode == "L" else 3, height, width), np.uint8)
        for i, (file, _) in enumerate(files):
            with _open_image(file) as image:
                try:
                    pixels = image.convert(mode)
                    if pixels.size != (width, height):
                        pixels = pixels.resize((width, height), Image.Resampling.BILINEAR)
                    array = np.asarray(pixels)
                except (OSError, ValueError, SyntaxError) as exc:
                    raise DatasetError(f"cannot decode {file}: {first_line(exc)}") from None
            images[i] = array[None] if mode == "L" else array.transpose(2, 0, 1)
        labels = np.array([label for _, label in files], np.int64)
        return Split.from_arrays(images, labels, str(source))

    return Source(tuple(classes), decode(train_files, train_dir), decode(test_files, test_dir))


def _image_files(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    files = [
        (file, label)
        for label, name in enumerate(classes)
        for file in sorted((split_dir / name).iterdir(), key=_natural_key)
        if file.suffix.lower() in _IMAGE_SUFFIXES and file.is_file()
    ]
    if not files:
        raise DatasetError(f"{split_dir} holds no images ({', '.join(sorted(_IMAGE_SUFFIXES))})")
    return files


def _open_image(file: Path) -> Image.Image:
    from PIL import Image

    try:
        return Image.open(file)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image {file}: {first_line(exc)}") from None
