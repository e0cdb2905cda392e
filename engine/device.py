"""Devices: choosing one (`--device`), reporting them, the precision policy of every loop, deliberate host syncs."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from engine.errors import ConfigError, DeviceError


def bf16_native(device: torch.device) -> bool:
    """Whether the device computes bf16 natively: CUDA, or a CPU with AVX-512 BF16 / AMX."""
    return _bf16_native(device.type)


@functools.cache
def _bf16_native(device_type: str) -> bool:
    # Asked once per device type: autocast_context runs per step and per scored batch.
    if device_type == "cuda":
        return True
    if device_type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def autocast_context(device: torch.device, bf16: str) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast when asked for ("on"), or with "auto" where bf16 is native; otherwise nothing.

    The one precision policy of the engine: HyperNet training, scoring, retraining and
    evaluation all call this, with channels-last layout whenever their config asks
    (`memory_format`, on by default on every device). "auto" means bf16 on CUDA and on
    CPUs with AVX-512 BF16 or AMX, where it paid in every loop measured on such a CPU:
    the convolutions of HyperNet training ran about 1.7x faster than in fp32, and a
    retraining step in channels-last 1.27x faster for a `small` architecture (3.9
    against 5.0 s per batch of 50) and 1.51x for a `tiny` one (304 against 459 ms), on a
    loaded 2-core VM, configurations interleaved (benchmarks/retrain_throughput.py).
    Elsewhere bf16 would be emulated and slower, so "auto" stays in fp32 there.
    """
    if bf16 == "on" or (bf16 == "auto" and bf16_native(device)):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(channels_last: bool) -> torch.memory_format:
    """The layout of images and conv weights in every loop: channels-last when the config asks.

    Channels-last is the default on every device: oneDNN on the CPU and tensor cores on
    CUDA both run convolutions faster in it. Retraining steps on the CPU, fp32: `small`
    5.0 against 9.1 s, `tiny` 459 against 882 ms; bf16: 3.9 against 8.0 s, 304 against
    1109 ms (benchmarks/retrain_throughput.py). bf16 pays only in channels-last there:
    in NCHW a `tiny` step was slower in bf16 than in fp32.
    """
    return torch.channels_last if channels_last else torch.contiguous_format


def module_device(module: nn.Module) -> torch.device:
    """The device a network's parameters live on (the loops keep every parameter on one)."""
    return next(module.parameters()).device


@contextlib.contextmanager
def host_sync_allowed(device: torch.device) -> Iterator[None]:
    """Marks a deliberate host sync (setup, a report, a checkpoint, a per-architecture copy).

    Inside it, syncs pass even under `torch.cuda.set_sync_debug_mode("error")`, so a
    test running a loop in that mode proves that nothing else in the loop waits for
    the device.
    """
    if device.type != "cuda":
        yield
        return
    mode = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(0)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(mode)


# What an allocation on a full device raises (torch.OutOfMemoryError from torch 2.5 on).
OUT_OF_MEMORY: tuple[type[BaseException], ...] = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)

# Words of a CUDA error after which the process's CUDA context is unusable: every later
# CUDA call fails the same way, whatever job runs.
_STICKY_CUDA_WORDS = (
    "CUDA error",
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "misaligned address",
    "an illegal instruction",
)


def sticky_device_error(exc: BaseException) -> bool:
    """Whether `exc` (or an error it was raised from) leaves this process's CUDA context unusable.

    `torch.AcceleratorError` (torch 2.8 on), or a `RuntimeError` whose message says
    "CUDA error" (an illegal memory access, a device-side assert, a launch failure):
    after one, every CUDA call of the process fails, so the job is not to blame and a
    fresh process must take it. An out-of-memory is not sticky.
    """
    accelerator_error = getattr(torch, "AcceleratorError", None)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if not isinstance(current, OUT_OF_MEMORY) and "out of memory" not in str(current):
            if accelerator_error is not None and isinstance(current, accelerator_error):
                return True
            if isinstance(current, RuntimeError) and any(word in str(current) for word in _STICKY_CUDA_WORDS):
                return True
        current = current.__cause__ or current.__context__
    return False


def draw_z(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """The HyperNet's random channel z, drawn on the CPU, to be copied to `device`.

    z always comes from a CPU generator (None: torch's global CPU generator), in
    training, scoring and export alike, so one seed gives the same z values on every
    device: a score on a GPU and the exported "as scored" weights (built on the CPU)
    use identical z by construction, and every generator a checkpoint holds is a CPU
    generator, which resumes on any worker. For CUDA z is drawn into pinned memory, so
    the caller's `copy_(z, non_blocking=True)` / `z.to(device, non_blocking=True)` is
    queued like a kernel and no host sync waits for it.

    Args:
        shape: z's shape.
        generator: a CPU generator, or None.
        device: where z will be used.

    Returns:
        z on the CPU (pinned when `device` is a CUDA device).

    Raises:
        ValueError: `generator` lives on another device than the CPU.
    """
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(
            f"z is drawn from a CPU generator (the same values on every device), got one on {generator.device}"
        )
    # normal_ on an empty tensor draws exactly the values torch.randn draws.
    return torch.empty(shape, pin_memory=device.type == "cuda").normal_(generator=generator)


def resolve_device(name: str) -> torch.device:
    """The device for a ``--device`` value: auto, cpu, cuda or cuda:N.

    Raises:
        DeviceError: An unknown name, or a GPU that this machine does not have.
    """
    text = name.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    kind, _, index = text.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise DeviceError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but CUDA is not available on this machine")
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise DeviceError(
            f"device {name!r} does not exist: this machine has {count} CUDA device(s)"
        )
    return torch.device(text)


def cuda_identity(device: torch.device) -> tuple[str | None, str | None]:
    """(UUID, name) of a CUDA device as the driver knows them, whatever CUDA_VISIBLE_DEVICES
    renumbered; (None, None) for any other device. The UUID is spelt as nvidia-smi does ("GPU-...")."""
    if device.type != "cuda":
        return None, None
    properties = torch.cuda.get_device_properties(device)
    uuid = getattr(properties, "uuid", None)
    text = None if uuid is None else str(uuid)
    if text is not None and not text.startswith(("GPU-", "MIG-")):
        text = f"GPU-{text}"
    return text, properties.name


def device_report() -> dict[str, Any]:
    """Torch version, CUDA availability and devices, for ``smash info``."""
    cuda = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
        "threads": torch.get_num_threads(),
        "default_device": "cuda" if cuda else "cpu",
    }


def set_threads(threads: int) -> None:
    """Limit torch's intra-op threads (only when the user asks: torch picks well by default)."""
    if threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
