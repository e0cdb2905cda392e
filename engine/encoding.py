"""Architecture -> conditioning tensor for the HyperNet.

The tensor `c` has shape (channels, rows, columns):

- one column per slice of `depth_compression x N` input channels read by an op, ops
  in network order, so column s of an op decides the weights that read its input
  channels [s * dcN, (s + 1) * dcN);
- one row per group of N bottleneck output channels (rows beyond an op's bottleneck
  are left at the fill value and their generated weights are never used);
- channels: one-hot fields, -1 everywhere, +1 where a field is set.

The layout is a function of the `SearchSpace` alone, so it never shifts while limits
are annealed during training (a defect of the original code), and it spells out
which op-body paths are active (another). Inactive convs leave all their fields at
-1, so two architectures that differ only in an inactive conv encode identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from engine.arch import Architecture
from engine.space import SearchSpace


@dataclass(frozen=True)
class OpColumns:
    """Where one op's 1x1 weights live in the generated weight matrix."""

    start: int  # first column of the op in c
    count: int  # columns covering its read channels
    in_channels: int  # channels the op reads
    out_channels: int  # its bottleneck width


@dataclass(frozen=True)
class EncodingLayout:
    """Channel offsets of every field, fixed by the search space for a whole run."""

    space: SearchSpace

    @cached_property
    def fields(self) -> dict[str, tuple[int, int]]:
        """name -> (offset, size) along the channel axis."""
        s = self.space
        sizes: list[tuple[str, int]] = [
            ("reads", s.max_banks),
            ("writes", s.max_banks),
            ("source", s.max_banks),  # bank(s) feeding this column's input channels
            ("block", s.num_blocks),
            ("units", s.max_units // s.base_units),
            ("bank", s.max_units // s.base_units),
            ("row", self.rows),  # which N output channels this row generates
        ]
        for slot in range(4):
            sizes += [
                (f"conv{slot}.active", 1),
                (f"conv{slot}.kernel_h", len(s.kernel_sizes)),
                (f"conv{slot}.kernel_w", len(s.kernel_sizes)),
                (f"conv{slot}.dilation_h", s.max_dilation),
                (f"conv{slot}.dilation_w", s.max_dilation),
                (f"conv{slot}.groups", len(s.groups)),
            ]
        fields: dict[str, tuple[int, int]] = {}
        offset = 0
        for name, size in sizes:
            fields[name] = (offset, size)
            offset += size
        return fields

    @property
    def channels(self) -> int:
        """Channels of c, without the random z channel."""
        offset, size = list(self.fields.values())[-1]
        return offset + size

    @property
    def rows(self) -> int:
        return self.space.max_bottleneck_channels // self.space.base_units

    @property
    def column_width(self) -> int:
        """Input channels covered by one column."""
        return self.space.depth_compression * self.space.base_units

    def columns(self, arch: Architecture) -> list[OpColumns]:
        """Column span of every op, in network order."""
        spans = []
        start = 0
        for block in arch.blocks:
            for op in block.ops:
                in_channels = len(op.reads) * block.bank_size
                count = -(-in_channels // self.column_width)
                spans.append(OpColumns(start, count, in_channels, op.bottleneck))
                start += count
        return spans

    def encode(self, arch: Architecture) -> torch.Tensor:
        """The conditioning tensor c (channels, rows, columns) of `arch`, float32 on the CPU."""
        s = self.space
        spans = self.columns(arch)
        total = spans[-1].start + spans[-1].count
        c = np.full((self.channels, self.rows, total), -1.0, dtype=np.float32)
        f = self.fields
        n = s.base_units
        span_iter = iter(spans)
        for b, block in enumerate(arch.blocks):
            for op in block.ops:
                span = next(span_iter)
                rows = op.bottleneck // n
                cols = slice(span.start, span.start + span.count)
                region = c[:, :rows, cols]  # a view: writes land in c

                def put(name: str, index: int, region: np.ndarray = region) -> None:
                    offset, size = f[name]
                    assert 0 <= index < size, (name, index, size)
                    region[offset + index] = 1.0

                for r in op.reads:
                    put("reads", r)
                for w in op.writes:
                    put("writes", w)
                put("block", b)
                put("units", op.units // n - 1)
                put("bank", block.bank_size // n - 1)
                row_offset = f["row"][0]
                for r in range(rows):
                    region[row_offset + r, r, :] = 1.0
                source_offset = f["source"][0]
                for col in range(span.count):
                    first = col * self.column_width
                    last = min(first + self.column_width, span.in_channels) - 1
                    for bank_pos in range(first // block.bank_size, last // block.bank_size + 1):
                        region[source_offset + op.reads[bank_pos], :, col] = 1.0
                for slot, conv in enumerate(op.convs):
                    if conv is None:
                        continue
                    put(f"conv{slot}.active", 0)
                    put(f"conv{slot}.kernel_h", s.kernel_sizes.index(conv.kernel[0]))
                    put(f"conv{slot}.kernel_w", s.kernel_sizes.index(conv.kernel[1]))
                    put(f"conv{slot}.dilation_h", conv.dilation[0] - 1)
                    put(f"conv{slot}.dilation_w", conv.dilation[1] - 1)
                    put(f"conv{slot}.groups", s.groups.index(conv.groups))
        return torch.from_numpy(c)
