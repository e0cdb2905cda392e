"""`DeviceImages`: a split kept on the device as uint8 and batched there, airbench-style.

Normalisation, random crops and flips run on the device, vectorised over the batch.
All randomness of an epoch (order, crop offsets, flips) is drawn up front from a CPU
`torch.Generator` and moved to the device once, so nothing in the per-batch loop reads
a device value back to the host, a seeded run is reproducible, and a run resumed in the
middle of an epoch can redraw the same epoch and skip the batches it already did.

A split lives on a device once per process: `device_images` hands every loop of a
worker (HyperNet training, its epoch evaluation, scoring, BN recalibration,
retraining) the same `DeviceImages` of a split, and every one of them normalises its
batches on the fly from the uint8 images. Whether a split is kept on a GPU or streamed
from pinned host memory is decided across all splits on that GPU (`fits_on_device`):
the splits on it may take `DATA_SHARE` of its memory, the rest is left to networks,
activations and the scoring batch.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from engine.data.core import Split

PAD = 4  # random crops translate by up to this many pixels, filling with pixel value 0
# The share of a GPU's memory (free now, plus what splits already hold there) that
# resident splits may take together; a split that would pass it is streamed instead.
# On a 16 GB card about 7.5 GB: Imagenet32's 3.9 GB training split stays resident.
DATA_SHARE = 0.5

# Resident splits by device, to sum what data already holds on each GPU.
_resident: weakref.WeakSet[DeviceImages] = weakref.WeakSet()
# The one DeviceImages of each split per device and normalisation (see device_images).
_shared: weakref.WeakKeyDictionary[Split, dict[tuple[str, tuple[float, ...], tuple[float, ...]], DeviceImages]] = (
    weakref.WeakKeyDictionary()
)


def fits_on_device(nbytes: int, free_bytes: int, placed_bytes: int, share: float = DATA_SHARE) -> bool:
    """Whether a split of `nbytes` may live on a GPU beside the splits already there.

    Args:
        nbytes: the split's image bytes (uint8: one per value).
        free_bytes: the GPU's free memory now (`torch.cuda.mem_get_info`).
        placed_bytes: what resident splits already hold on it (counted as usable too).
        share: the share of that memory all resident splits may take together.
    """
    return placed_bytes + nbytes <= share * (free_bytes + placed_bytes)


def _indexed(device: torch.device | str) -> torch.device:
    """The device with its index: "cuda" and "cuda:0" name one GPU (the current one)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def resident_bytes(device: torch.device | str) -> int:
    """Image bytes that resident `DeviceImages` of this process hold on `device`."""
    device = _indexed(device)
    return sum(images.nbytes for images in list(_resident) if _indexed(images.device) == device)


def _place_on_device(nbytes: int, device: torch.device) -> bool:
    """The memory budget of one GPU, across every split this process keeps there."""
    if device.type != "cuda":
        return True  # the CPU's "device" is host memory: nothing to stream from
    free, _total = torch.cuda.mem_get_info(device)
    return fits_on_device(nbytes, free, resident_bytes(device))


def device_images(
    split: Split, device: torch.device | str, mean: Sequence[float], std: Sequence[float]
) -> DeviceImages:
    """The `DeviceImages` of `split` on `device`, made once per process and shared.

    Training, its epoch evaluation, scoring, BN recalibration and retraining of one
    worker all ask for their splits here, so a split is uploaded (or pinned) once,
    not once per loop. An entry lives as long as its split (a worker keeps the last
    data set it loaded: `engine.jobs.get_dataset`).
    """
    device = _indexed(device)
    key = (str(device), tuple(float(m) for m in mean), tuple(float(s) for s in std))
    entries = _shared.setdefault(split, {})
    if key not in entries:
        entries[key] = DeviceImages(split, device, mean, std)
    return entries[key]


class DeviceImages:
    """One split, ready to be batched on a device.

    Images live on the device as uint8 when they fit (`max_device_bytes`, else the
    GPU's budget across all resident splits: `fits_on_device`); otherwise they stay in
    pinned host memory and each batch is gathered on the host and copied
    asynchronously. Labels always live on the device. Both modes give identical
    batches. Loops get theirs from `device_images`, which shares one per split.
    """

    def __init__(
        self,
        split: Split,
        device: torch.device | str,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        max_device_bytes: int | None = None,
    ) -> None:
        """Moves `split` to `device` (or pins it, if it is too large).

        Args:
            split: the images and labels to serve.
            device: where batches are yielded.
            mean: per-channel mean in [0, 1] pixel units (usually the train split's).
            std: per-channel standard deviation in [0, 1] pixel units.
            max_device_bytes: the most image bytes to keep on the device (None: the
                device's budget decides, see `fits_on_device`).
        """
        self.device = torch.device(device)
        self.nbytes = split.images.numel()  # uint8: one byte each
        if max_device_bytes is not None:
            self.resident = self.nbytes <= max_device_bytes
        else:
            self.resident = _place_on_device(self.nbytes, self.device)
        if self.resident:
            self._images = split.images.to(self.device)
            _resident.add(self)
        elif self.device.type == "cuda":
            self._images = split.images.pin_memory()  # lets copies overlap compute
        else:
            self._images = split.images  # already where a CPU device wants it
        self._labels = split.labels.to(self.device)
        channels, height, width = split.images.shape[1:]
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1)
        # x_normalised = (x / 255 - mean) / std = x * scale + shift
        self._scale = (1.0 / (255.0 * std_t)).to(self.device)
        self._shift = (-mean_t / std_t).to(self.device)
        self._rows = torch.arange(height, device=self.device)
        self._cols = torch.arange(width, device=self.device)

    def __len__(self) -> int:
        return self._labels.shape[0]

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """Batches in one pass over the split.

        Args:
            batch_size: images per batch.
            drop_last: whether a final partial batch is left out.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        start_batch: int = 0,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of normalised batches on the device.

        The epoch's randomness is drawn from `generator` when this is called, not when the
        iterator is consumed, always for the whole epoch: calling it again with the
        generator in the same state and `start_batch=k` yields exactly the batches from
        the k-th on, and leaves the generator in the same state.

        Args:
            batch_size: images per batch.
            shuffle: visit the images in a random order.
            augment: random translation by up to 4 pixels (zero fill) and horizontal flip.
            generator: CPU generator for the order and augmentation; None uses torch's
                global generator.
            drop_last: leave out a final partial batch.
            channels_last: yield images in channels-last memory format.
            dtype: floating dtype of the yielded images.
            start_batch: index of the first batch to yield, for resuming mid-epoch.

        Returns:
            An iterator of images (B, C, H, W) in `dtype` and int64 labels (B,).
        """
        total = self.num_batches(batch_size, drop_last)
        if not 0 <= start_batch <= total:
            raise ValueError(f"start_batch must be in [0, {total}], got {start_batch}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        moves = None
        if augment:
            offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=generator)
            flips = torch.randint(0, 2, (n, 1), generator=generator)
            moves = torch.cat([offsets, flips], 1)  # (n, 3): dy, dx, flip
        return self._epoch(batch_size, total, start_batch, order, moves, channels_last, dtype)

    def _epoch(
        self,
        batch_size: int,
        total: int,
        start_batch: int,
        order: torch.Tensor | None,
        moves: torch.Tensor | None,
        channels_last: bool,
        dtype: torch.dtype,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order_on_device = self.upload(order) if order is not None else None
        moves = self.upload(moves) if moves is not None else None
        layout = torch.channels_last if channels_last else torch.contiguous_format
        for batch in range(start_batch, total):
            start, stop = batch * batch_size, min((batch + 1) * batch_size, len(self))
            if order_on_device is None:
                images = self._images[start:stop].to(self.device, non_blocking=True)
                labels = self._labels[start:stop]
            else:
                positions = order_on_device[start:stop]
                labels = self._labels[positions]
                if self.resident:
                    images = self._images[positions]
                else:
                    images = self._stream(order[start:stop])
            if moves is not None:
                images = self._crop_and_flip(images, moves[start:stop])
            yield self._normalise(images, layout, dtype), labels

    def take(
        self,
        indices: torch.Tensor,
        on_device: torch.Tensor | None = None,
        *,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels at `indices`, normalised on the device (no augmentation).

        What a loop that reads a split in its own fixed order uses (scoring, BN
        recalibration): only the uint8 split stays on the device, each batch is made
        when it is needed.

        Args:
            indices: int64 positions on the CPU.
            on_device: the same positions already on the device (`upload`), to spare a
                copy per batch; None copies them now.
            channels_last: yield images in channels-last memory format.
            dtype: floating dtype of the images.
        """
        positions = self.upload(indices) if on_device is None else on_device
        images = self._images[positions] if self.resident else self._stream(indices)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        return self._normalise(images, layout, dtype), self._labels[positions]

    def labels_at(self, on_device: torch.Tensor) -> torch.Tensor:
        """The labels at positions already on the device."""
        return self._labels[on_device]

    def _normalise(self, images: torch.Tensor, layout: torch.memory_format, dtype: torch.dtype) -> torch.Tensor:
        """uint8 images to normalised floats: (x / 255 - mean) / std, computed as x * scale + shift."""
        x = images.to(torch.float32, memory_format=layout)
        x.mul_(self._scale).add_(self._shift)
        return x.to(dtype)

    def upload(self, values: torch.Tensor) -> torch.Tensor:
        """CPU values (positions, augmentation moves) copied to the device without a host sync."""
        if self.device.type != "cuda":
            return values.to(self.device)
        # From pageable memory the copy would block until the GPU has finished the
        # previous epoch; from pinned memory it is queued like any other kernel.
        return values.pin_memory().to(self.device, non_blocking=True)

    def _stream(self, indices: torch.Tensor) -> torch.Tensor:
        """The host images at CPU `indices`, copied to the device: (B, C, H, W) uint8."""
        if self._images.is_pinned():
            # A fresh pinned buffer per batch: the caching host allocator does not hand it
            # out again until the asynchronous copy from it has finished.
            host = torch.empty(
                (indices.shape[0], *self._images.shape[1:]), dtype=torch.uint8, pin_memory=True
            )
            torch.index_select(self._images, 0, indices, out=host)
            return host.to(self.device, non_blocking=True)
        return self._images[indices].to(self.device)

    def _crop_and_flip(self, images: torch.Tensor, moves: torch.Tensor) -> torch.Tensor:
        """Translates each image by its own offset (zero fill) and flips some, in one gather.

        Args:
            images: uint8 (B, C, H, W) on the device.
            moves: (B, 3) int64 on the device: row offset and column offset into the
                padded image (0..2*PAD), and 1 to flip horizontally.
        """
        padded = F.pad(images, (PAD, PAD, PAD, PAD))  # (B, C, H+2P, W+2P), zeros
        width = images.shape[-1]
        rows = moves[:, 0:1] + self._rows  # (B, H)
        flip = moves[:, 2:3].bool()
        cols = moves[:, 1:2] + torch.where(flip, width - 1 - self._cols, self._cols)  # (B, W)
        batch = torch.arange(images.shape[0], device=images.device)[:, None, None]
        # Advanced indices around a slice put the broadcast dims first: (B, H, W, C).
        return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
