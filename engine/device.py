"""Device helpers shared by the loops: precision and deliberate host synchronisation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def autocast_context(device: torch.device, bf16: str) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast when asked for ("on"), or on CUDA with "auto"; otherwise nothing."""
    if bf16 == "on" or (bf16 == "auto" and device.type == "cuda"):
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
