"""The SMASH search space: what a sampled architecture may contain.

A `SearchSpace` is a frozen value. It fixes the widths of the stem, blocks and
transitions, every block's read budget, and the menus of kernel sizes, dilations and
group counts. It also fixes the layout of the HyperNet's conditioning tensor for a
whole run (see `engine.encoding`), so annealing during training narrows what the
sampler draws (`SamplingLimits`) but never the space itself. It is the "banks" kind of
space: the loops reach it through `engine.kinds.BANKS`, and `to_dict()` says so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

# Active convs of an op body, in slot order (conv0, conv1, conv2, conv3). Path A is
# conv0 -> conv1, path B is conv2 -> conv3; active paths are summed. Path B alone or
# B's second conv without A's would only rename A, so those patterns do not exist.
OP_PATTERNS: tuple[tuple[bool, bool, bool, bool], ...] = (
    (True, False, False, False),  # single conv
    (True, True, False, False),  # two stacked convs
    (True, False, True, False),  # two parallel convs
    (True, True, True, False),  # stacked pair beside a single conv
    (True, True, True, True),  # two stacked pairs in parallel
)
OP_PATTERN_NAMES = ("single", "stacked", "parallel", "three", "four")
# The kind of search space this module defines (see engine.kinds): written into
# `SearchSpace.to_dict()`; a stored space without a kind is one of these.
KIND = "banks"


class InvalidSearchSpace(ValueError):
    """A search-space configuration that cannot produce any network."""


@dataclass(frozen=True)
class SearchSpace:
    """Everything the sampler may choose from, and the budgets it spends.

    Widths follow the original WRN-style reference: with `unit = 2 * base_units * width`
    block 0 reads `unit` input channels, every block may grow by `2 * unit` channels,
    a transition halves the width, and block b may read `block_input + depth * unit * 2**b`
    channels in total over all its ops (its parametric budget).
    """

    name: str = "paper"  # preset name, stored with experiments
    num_blocks: int = 3  # blocks at full, 1/2, 1/4 ... resolution
    depth: int = 12  # reference layers per block: scales each block's read budget
    width: int = 4  # reference widening factor: scales block widths and budgets
    base_units: int = 8  # N: bank sizes, units and bottlenecks are multiples of it
    max_units: int = 64  # N_max: most output channels of one op, and the largest bank
    bottleneck: int = 4  # an op's 1x1 conv emits at most bottleneck x units channels
    max_bottleneck: int = 2  # ... and never more than max_bottleneck x max_units
    depth_compression: int = 2  # one encoding column per depth_compression x N read channels
    kernel_sizes: tuple[int, ...] = (3, 5, 7)  # odd kernel sizes, chosen per axis
    max_dilation: int = 3  # dilations 1..max_dilation, chosen per axis
    max_kernel_extent: int = 9  # (k - 1) * d + 1 may not exceed this: keeps receptive fields sane
    groups: tuple[int, ...] = (1, 2, 4, 8)  # group counts; each must divide base_units
    variable_ops: bool = True  # sample which op-body paths are active; else always one conv
    op_pattern_probs: tuple[float, ...] = (0.05, 0.10, 0.15, 0.25, 0.45)  # per OP_PATTERNS
    min_budget: float = 0.3  # lower end of a block's sampled budget fraction
    max_budget: float = 1.0  # upper end of a block's sampled budget fraction
    stem_kernel: int = 7  # kernel of the stem conv (freely learned, not searched)
    units_sharpness: float = 0.25  # smaller: units stick closer to the width that was read

    kind: ClassVar[str] = KIND  # the space kind (engine.kinds), the same for every SearchSpace

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise InvalidSearchSpace(f"search space '{self.name}': " + "; ".join(problems))

    def _problems(self) -> Any:
        n = self.base_units
        if self.num_blocks < 1:
            yield "num_blocks must be at least 1"
        if self.depth < 0:
            yield "depth must be >= 0"
        if self.width < 1:
            yield "width must be >= 1"
        if n < 1:
            yield "base_units must be >= 1"
            return
        if self.max_units < n or self.max_units % n:
            yield f"max_units ({self.max_units}) must be a positive multiple of base_units ({n})"
        if self.bottleneck < 1 or self.max_bottleneck < 1:
            yield "bottleneck and max_bottleneck must be >= 1"
        if self.depth_compression < 1:
            yield "depth_compression must be >= 1"
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            yield f"kernel_sizes must be odd and positive, got {self.kernel_sizes}"
        elif tuple(sorted(set(self.kernel_sizes))) != self.kernel_sizes:
            yield "kernel_sizes must be strictly increasing"
        elif self.max_kernel_extent < self.kernel_sizes[0]:
            yield "max_kernel_extent is smaller than the smallest kernel"
        if self.max_dilation < 1:
            yield "max_dilation must be >= 1"
        if not self.groups or any(g < 1 or n % g for g in self.groups):
            yield f"every group count must divide base_units ({n}), got {self.groups}"
        elif tuple(sorted(set(self.groups))) != self.groups:
            yield "groups must be strictly increasing"
        if len(self.op_pattern_probs) != len(OP_PATTERNS) or any(
            p < 0 for p in self.op_pattern_probs
        ):
            yield f"op_pattern_probs needs {len(OP_PATTERNS)} non-negative numbers"
        elif not math.isclose(sum(self.op_pattern_probs), 1.0, abs_tol=1e-6):
            yield "op_pattern_probs must sum to 1"
        if not 0.0 < self.min_budget <= self.max_budget <= 1.0:
            yield "need 0 < min_budget <= max_budget <= 1"
        if self.stem_kernel < 1 or self.stem_kernel % 2 == 0:
            yield "stem_kernel must be odd and positive"
        if self.units_sharpness <= 0:
            yield "units_sharpness must be positive"

    # Derived widths --------------------------------------------------------------

    @property
    def unit(self) -> int:
        """Reference width step: block 0's input width."""
        return 2 * self.base_units * self.width

    @property
    def block_inputs(self) -> tuple[int, ...]:
        """Largest input width of each block (stem or transition output)."""
        inputs = [self.unit]
        for _ in range(self.num_blocks - 1):
            grown = inputs[-1] + 2 * self.unit
            inputs.append(max(2 * self.base_units, grown // 2 // (2 * self.base_units) * (2 * self.base_units)))
        return tuple(inputs)

    @property
    def block_widths(self) -> tuple[int, ...]:
        """Largest total width (all banks) of each block."""
        return tuple(i + 2 * self.unit for i in self.block_inputs)

    @property
    def block_budgets(self) -> tuple[int, ...]:
        """Most input channels all ops of a block may read, summed over its ops."""
        return tuple(
            i + self.depth * self.unit * 2**b for b, i in enumerate(self.block_inputs)
        )

    @property
    def max_banks(self) -> int:
        """Most banks any block can hold (at the smallest bank size)."""
        return max(self.block_widths) // self.base_units

    @property
    def max_bottleneck_channels(self) -> int:
        return self.max_bottleneck * self.max_units

    @property
    def bank_sizes(self) -> tuple[int, ...]:
        """Every bank size of the space, in channels."""
        return tuple(range(self.base_units, self.max_units + 1, self.base_units))

    def bank_sizes_for_block(self, block: int) -> tuple[int, ...]:
        """Bank sizes a block can use: at least one bank of input must fit."""
        limit = min(self.block_inputs[block], self.block_widths[block])
        return tuple(b for b in self.bank_sizes if b <= limit)

    def dilations_for(self, kernel: int) -> tuple[int, ...]:
        """Dilations whose receptive extent stays within max_kernel_extent."""
        return tuple(
            d for d in range(1, self.max_dilation + 1) if (kernel - 1) * d + 1 <= self.max_kernel_extent
        ) or (1,)

    def bottleneck_for(self, read_channels: int, units: int) -> int:
        """Width of an op's 1x1 conv: as wide as what was read, at most bottleneck x units."""
        multiple = min(max(read_channels // units, 1), self.bottleneck)
        return min(multiple * units, read_channels, self.max_bottleneck_channels)

    def to_dict(self) -> dict[str, Any]:
        """The space as JSON-able values, tagged with its kind."""
        return {"kind": KIND, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Inverse of `to_dict`; a missing "kind" (spaces stored before kinds existed) is banks.

        Raises:
            InvalidSearchSpace: another kind, an unknown field, or an impossible space.
        """
        values = dict(data)
        kind = values.pop("kind", KIND)
        if kind != KIND:
            raise InvalidSearchSpace(f"expected a {KIND} search space, got kind {kind!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidSearchSpace(f"unknown search-space field(s): {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass(frozen=True)
class SamplingLimits:
    """Annealed limits within the space: what the sampler may draw right now."""

    max_budget: float = 1.0  # upper end of the budget fraction (annealed 0.5 -> 1.0)
    max_kernel: int = 1_000  # largest kernel size drawn (annealed 3 -> the space's largest)

    @staticmethod
    def annealed(space: SearchSpace, progress: float) -> SamplingLimits:
        """Limits after `progress` (0..1) of training: both reach the full space at 0.5."""
        ramp = min(max(progress / 0.5, 0.0), 1.0)
        budget = 0.5 + 0.5 * ramp
        largest = space.kernel_sizes[-1]
        smallest = space.kernel_sizes[0]
        kernel = smallest + 2 * int((largest - smallest) // 2 * ramp)
        return SamplingLimits(max_budget=budget, max_kernel=kernel)


PRESETS: dict[str, SearchSpace] = {
    # The paper's CIFAR defaults as the original code runs them by default: reference
    # depth 12, width factor 4, N=8, N_max=64, variable kernels, dilations and groups,
    # one conv per op (the original's `--var-op` was off unless asked for).
    "paper": SearchSpace(variable_ops=False),
    # The same space with variable op bodies (the original's `--var-op`): 1 to 4 convs
    # per op, about 2.2x the work per image of `paper`.
    "paper-varop": SearchSpace(name="paper-varop"),
    # Minutes on a GPU: half the depth and width, banks and units up to 32 channels.
    "small": SearchSpace(
        name="small",
        depth=6,
        width=2,
        base_units=8,
        max_units=32,
        stem_kernel=3,
    ),
    # Minutes on a laptop CPU: a few narrow banks per block, small kernels.
    "tiny": SearchSpace(
        name="tiny",
        depth=3,
        width=2,
        base_units=4,
        max_units=16,
        bottleneck=2,
        max_bottleneck=2,
        kernel_sizes=(3, 5),
        max_dilation=2,
        max_kernel_extent=5,
        groups=(1, 2, 4),
        stem_kernel=3,
    ),
}


def get_preset(name: str) -> SearchSpace:
    """The named preset, or InvalidSearchSpace listing the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidSearchSpace(
            f"unknown preset '{name}' (known: {', '.join(PRESETS)})"
        ) from None


__all__ = [
    "KIND",
    "OP_PATTERNS",
    "OP_PATTERN_NAMES",
    "PRESETS",
    "InvalidSearchSpace",
    "SamplingLimits",
    "SearchSpace",
    "get_preset",
]
