"""`NB201`: the nb201 search-space kind, as the loops reach it (see the `SpaceKind` protocol).

Every method forwards to the module that does the work; this file only gathers them
under the names the loops use, so `engine/kinds.py` can register `NB201` beside the
banks kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from engine.cost import Cost
from engine.hypernet import HyperNetConfig
from engine.nb201 import sampler
from engine.nb201.cell import Cell, describe_cell, parse_architecture
from engine.nb201.cost import cell_cost
from engine.nb201.network import NB201Net, NB201Smash, build_model, smash_from_meta
from engine.nb201.space import KIND, CellSpace


class NB201Kind:
    """NAS-Bench-201 cells. Stateless: one shared instance, `NB201`."""

    name: str = KIND
    init_recipes: tuple[str, ...] = ("kaiming",)  # the "banks" recipe scales bank writes; cells have none

    def space_from_dict(self, data: Mapping[str, Any]) -> CellSpace:
        return CellSpace.from_dict(data)

    def parse(self, text: str, space: CellSpace | None = None) -> Cell:
        """A cell from its benchmark string or its JSON; InvalidCell names the bad field."""
        return parse_architecture(text, space)

    def sample(self, space: CellSpace, rng: np.random.Generator, progress: float = 1.0) -> Cell:
        """Uniform over the benchmark's 6,466 distinct cells; nb201 does not anneal, so `progress` is ignored."""
        return sampler.sample(space, rng, progress)

    def perturb(self, arch: Cell, space: CellSpace, rng: np.random.Generator, p: float) -> Cell:
        """Each edge's op redrawn with probability p; the result always has another hash."""
        return sampler.perturb(arch, space, rng, p)

    def build_smash(
        self,
        space: CellSpace,
        num_classes: int,
        in_channels: int,
        hypernet: HyperNetConfig,
        weights: str = "hypernet",
    ) -> NB201Smash:
        return NB201Smash(space, num_classes, in_channels, hypernet, weights)

    def smash_from_meta(self, meta: Mapping[str, Any]) -> NB201Smash:
        """An untrained module shaped like the one whose `checkpoint_meta` this is."""
        return smash_from_meta(meta)

    def build_model(
        self, arch: Cell, num_classes: int, in_channels: int, space: CellSpace | None = None
    ) -> NB201Net:
        """The derived network; the benchmark's size (C=16, N=5) unless `space` says otherwise.

        Pass the SMASH network's space to `load_from_smash` into it.
        """
        return build_model(arch, num_classes, in_channels, space)

    def cost(
        self, arch: Cell, num_classes: int, in_channels: int, image_size: int, space: CellSpace | None = None
    ) -> Cost:
        """Parameters and FLOPs of the derived network (the benchmark's size unless `space` is given)."""
        return cell_cost(arch, num_classes, in_channels, image_size, space)

    def describe(self, arch: Cell) -> list[str]:
        return describe_cell(arch)


NB201 = NB201Kind()

__all__ = ["NB201", "NB201Kind"]
