"""Size and cost of an architecture's derived network, counted by PyTorch itself.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode` on a forward pass of the
derived network built on the meta device: no memory is allocated and no arithmetic
is done, so counting is cheap enough to run for every scored architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from engine.arch import Architecture
from engine.network import build_model


@dataclass(frozen=True)
class Cost:
    """Parameters and forward FLOPs (per image) of a derived network."""

    params: int  # learnable parameters (BatchNorm running statistics not counted)
    flops: int  # forward FLOPs for one image (a multiply-add counts as 2)


def architecture_cost(
    arch: Architecture, num_classes: int = 10, in_channels: int = 3, image_size: int = 32
) -> Cost:
    """Parameters and forward FLOPs of `arch`'s derived network at `image_size` x `image_size`."""
    return count_cost(lambda: build_model(arch, num_classes, in_channels), in_channels, image_size)


def count_cost(build: Callable[[], nn.Module], in_channels: int, image_size: int) -> Cost:
    """Parameters and forward FLOPs per image of the network `build` makes, built on the meta device."""
    with torch.device("meta"):
        model = build()
        x = torch.empty(1, in_channels, image_size, image_size)
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(x)
    return Cost(params=params, flops=int(counter.get_total_flops()))
