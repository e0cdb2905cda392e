"""Size and cost of an nb201 cell's derived network, counted by PyTorch itself.

As for the banks kind (`engine.cost`): the derived network is built on the meta device
and run once under `torch.utils.flop_counter.FlopCounterMode`, so nothing is allocated
or computed. Only the edges on some input-to-output path exist in our networks, so
equivalent cells cost the same; the benchmark's own tables also count unused convs.
"""

from __future__ import annotations

from engine.cost import Cost, count_cost
from engine.nb201.cell import Cell
from engine.nb201.network import build_model
from engine.nb201.space import CellSpace


def cell_cost(
    arch: Cell,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    space: CellSpace | None = None,
) -> Cost:
    """Parameters and forward FLOPs per image of `arch`'s derived network (the benchmark's size by default)."""
    return count_cost(lambda: build_model(arch, num_classes, in_channels, space), in_channels, image_size)


__all__ = ["cell_cost"]
