"""The HyperNet: a fully convolutional map from an architecture's encoding to its 1x1 weights.

A small DenseNet of weight-normalised 3x3 convs (no bias, no BatchNorm, LeakyReLU,
orthogonal init), as in the paper. Its last 1x1 conv emits `R * dcN` values per
position of the conditioning tensor, R the layout's row width (max_bottleneck x N);
position (row r, column s) becomes the block of the weight matrix for output channels
[r*R, (r+1)*R) and input channels [s*dcN, (s+1)*dcN). Emitting R rather than the
paper's N output channels per position halves the positions the dense trunk runs
over while still covering the full bottleneck width. Being convolutional, its size does not depend on how deep the
searched networks are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import HyperNetConfig
from engine.encoding import EncodingLayout, OpColumns


class WNConv2d(nn.Conv2d):
    """Conv whose weight is divided by its whole Frobenius norm (the paper's simple weight norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight / self.weight.norm()
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, self.groups)


class HyperNet(nn.Module):
    """Conditioning tensor (1 + channels, rows, columns) -> 1x1 weights of every op."""

    def __init__(self, layout: EncodingLayout, config: HyperNetConfig = HyperNetConfig()) -> None:
        super().__init__()
        self.layout = layout
        self.config = config
        pad = config.kernel_size // 2
        width = layout.channels + 1  # + z
        self.stem = WNConv2d(width, config.stem_channels, config.kernel_size, padding=pad, bias=False)
        width += config.stem_channels
        self.stages = nn.ModuleList()
        self.reducers = nn.ModuleList()
        for stage, (growth, layers) in enumerate(zip(config.growth, config.layers)):
            dense = nn.ModuleList()
            for _ in range(layers):
                dense.append(WNConv2d(width, growth, config.kernel_size, padding=pad, bias=False))
                width += growth
            self.stages.append(dense)
            if stage < len(config.growth) - 1:
                self.reducers.append(WNConv2d(width, width // 2, config.kernel_size, padding=pad, bias=False))
                width //= 2
        self.out = WNConv2d(width, layout.row_width * layout.column_width, 1, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """c: (1, 1 + channels, rows, columns) -> (rows * R, columns * dcN) weight matrix."""
        slope = self.config.negative_slope
        x = torch.cat([c, self.stem(c)], 1)
        for stage, dense in enumerate(self.stages):
            for conv in dense:
                x = torch.cat([x, conv(F.leaky_relu(x, slope))], 1)
            if stage < len(self.reducers):
                x = self.reducers[stage](F.leaky_relu(x, slope))
        out = self.out(F.leaky_relu(x, slope))  # (1, R * dcN, rows, columns)
        r = self.layout.row_width
        rows, columns = out.shape[-2:]
        # value (i, j) at (row, s) -> weight[row*R + i, s*dcN + j]
        return (
            out.view(r, self.layout.column_width, rows, columns)
            .permute(2, 0, 3, 1)
            .reshape(rows * r, columns * self.layout.column_width)
        )


def op_weights(matrix: torch.Tensor, spans: list[OpColumns], column_width: int) -> list[torch.Tensor]:
    """Cut the generated matrix into each op's full-width 1x1 weight, divided by its norm.

    Returns:
        One (bottleneck, in_channels, 1, 1) tensor per op.
    """
    weights = []
    for span in spans:
        start = span.start * column_width
        w = matrix[: span.out_channels, start : start + span.in_channels]
        weights.append((w / w.norm()).reshape(span.out_channels, span.in_channels, 1, 1))
    return weights
