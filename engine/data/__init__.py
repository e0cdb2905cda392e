"""Image data sets for the engine: loading, the validation carve-out, device-side batches.

Example:
    config = DataConfig("cifar10")  # or synthetic, cifar100, stl10, npz:PATH, folder:PATH
    data = load_dataset(config)  # uint8 splits on the CPU, mean/std of the train split
    train = device_images(data.train, "cuda", data.mean, data.std)  # one per split and process
    for x, y in train.batches(500, shuffle=True, augment=True, generator=g):
        ...  # normalised floats and int64 labels, on the device
"""

from __future__ import annotations

from engine.data.core import DataConfig, Dataset, DatasetError, Split
from engine.data.device import DeviceImages, device_images
from engine.data.load import carve_validation, channel_stats, load_dataset

__all__ = [
    "DataConfig",
    "Dataset",
    "DatasetError",
    "DeviceImages",
    "Split",
    "carve_validation",
    "device_images",
    "channel_stats",
    "load_dataset",
]
