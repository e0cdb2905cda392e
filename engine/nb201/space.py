"""The nb201 search space: the network a NAS-Bench-201 cell is built into (no torch, no numpy).

Every cell lies in every `CellSpace`; the space only fixes the network around the
cell: a stem, `stages` stages of `cells_per_stage` copies of the cell at `channels`,
2 x `channels`, 4 x `channels` ..., a residual reduction block between stages, and the
head. The benchmark trained every cell as `nb201` (C=16, N=5, 3 stages).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.space import InvalidSearchSpace

KIND = "nb201"


class InvalidCellSpace(InvalidSearchSpace):
    """An nb201 space configuration that cannot build a network; the message is one line."""


@dataclass(frozen=True)
class CellSpace:
    """The network around the searched cell."""

    name: str = "nb201"  # preset name, stored with experiments
    channels: int = 16  # C: width of the first stage (the benchmark's 16); stage s is C * 2**s wide
    cells_per_stage: int = 5  # N: copies of the cell per stage (the benchmark's 5)
    stages: int = 3  # stages; a reduction block halves the resolution between two (the benchmark's 3)
    stem_kernel: int = 3  # odd kernel of the stem conv (conv + BN, freely learned; the benchmark's 3)

    kind: ClassVar[str] = KIND

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise InvalidCellSpace(f"nb201 space '{self.name}': " + "; ".join(problems))

    def _problems(self) -> Iterator[str]:
        if not isinstance(self.name, str) or not self.name:
            yield "name must be a non-empty string"
        for field in ("channels", "cells_per_stage", "stages", "stem_kernel"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                yield f"{field} must be a positive integer, got {value!r}"
        if isinstance(self.stem_kernel, int) and self.stem_kernel % 2 == 0:
            yield f"stem_kernel must be odd, got {self.stem_kernel}"

    @property
    def positions(self) -> int:
        """Cells in the network: stages x cells_per_stage."""
        return self.stages * self.cells_per_stage

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Width of each stage."""
        return tuple(self.channels * 2**s for s in range(self.stages))

    def stage_of(self, position: int) -> int:
        """Stage of the cell at `position` (0-based, network order)."""
        return position // self.cells_per_stage

    def network_size(self) -> tuple[int, int, int, int]:
        """What fixes a network's shape (everything but the name)."""
        return (self.channels, self.cells_per_stage, self.stages, self.stem_kernel)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellSpace:
        """Inverse of `to_dict`; a missing "kind" is taken as nb201, unknown fields are refused."""
        if not isinstance(data, Mapping):
            raise InvalidCellSpace(f"an nb201 space must be an object, got {type(data).__name__}")
        values = dict(data)
        kind = values.pop("kind", KIND)
        if kind != KIND:
            raise InvalidCellSpace(f"expected an nb201 space, got kind {kind!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidCellSpace(f"unknown nb201 space field(s): {', '.join(unknown)}")
        return cls(**values)


PRESETS: dict[str, CellSpace] = {
    # The benchmark's network: C=16, N=5, about 1.5M parameters for the all-3x3 cell.
    "nb201": CellSpace(),
    # Minutes on a GPU: 2 cells per stage, the benchmark's widths (about 0.66M parameters at most).
    "nb201-small": CellSpace(name="nb201-small", cells_per_stage=2),
    # Minutes on a laptop CPU: one narrow cell per stage (about 92k parameters at most).
    "nb201-tiny": CellSpace(name="nb201-tiny", channels=8, cells_per_stage=1),
}


def get_preset(name: str) -> CellSpace:
    """The named preset, or InvalidCellSpace listing the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidCellSpace(f"unknown nb201 preset '{name}' (known: {', '.join(PRESETS)})") from None


__all__ = ["KIND", "PRESETS", "CellSpace", "InvalidCellSpace", "get_preset"]
