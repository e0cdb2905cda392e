"""Device helpers shared by the loops: precision and deliberate host synchronisation."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch


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

    On a CPU with bf16 instructions the convolutions run about 1.7x faster in bf16;
    elsewhere bf16 would be emulated and slower, so "auto" stays in fp32 there.
    """
    if bf16 == "on" or (bf16 == "auto" and bf16_native(device)):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
