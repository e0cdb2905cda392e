"""The HyperNet: a fully convolutional map from an architecture's encoding to its 1x1 weights.

A small DenseNet of weight-normalised 3x3 convs (no bias, no BatchNorm, LeakyReLU,
orthogonal init), as in the paper. Its last 1x1 conv emits `R * dcN` values per
position of the conditioning tensor, R the layout's row width (max_bottleneck x N);
position (row r, column s) becomes the block of the weight matrix for output channels
[r*R, (r+1)*R) and input channels [s*dcN, (s+1)*dcN). Emitting R rather than the
paper's N output channels per position halves the positions the dense trunk runs
over while still covering the full bottleneck width. Being convolutional, its size does not depend on how deep the
searched networks are.

On a GPU a step is bound by the host dispatching ops, not by arithmetic, so the
forward computes the layers' function with few ops: all weight norms at once
(`joint_weight_norm`), the trunk cast to the autocast dtype once, and every op's
weight read out of the output in one gather (`gather_op_weights`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import HyperNetConfig
from engine.encoding import EncodingLayout, OpColumns


class WNConv2d(nn.Conv2d):
    """Conv whose weight is divided by its whole Frobenius norm (the paper's simple weight norm).

    The HyperNet normalises all its convs' weights together (`joint_weight_norm`); this
    forward, one conv at a time, computes the same function.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight / self.weight.norm()
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, self.groups)


class _JointWeightNorm(torch.autograd.Function):
    """w / ||w|| for many weights at once, forward and backward in a handful of ops.

    Autograd through one `w / w.norm()` per weight costs about thirteen ops per weight
    (two forward, eleven backward); a HyperNet step runs 26 of them. Here the forward is
    two multi-tensor ops (plus one cast per weight when the convs run in bf16) and the
    backward, dL/dw = (g - v <g, v>) / ||w|| with v = w / ||w||, ten multi-tensor ops.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, dtype: torch.dtype | None, *weights: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        norms = torch._foreach_norm(weights)
        normed = torch._foreach_div(weights, norms)
        # The inputs are saved, not the outputs: saved outputs are detached one by one.
        ctx.save_for_backward(*weights)
        ctx.norms = norms  # type: ignore[attr-defined]
        if dtype is None or dtype == weights[0].dtype:
            return tuple(normed)
        return tuple(v.to(dtype) for v in normed)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        norms = ctx.norms  # type: ignore[attr-defined]
        normed = torch._foreach_div(ctx.saved_tensors, norms)  # type: ignore[attr-defined]
        # <g, v> per weight as the L1 norm of its positive products minus that of its
        # negative ones: five multi-tensor ops instead of a sum per weight.
        products = torch._foreach_mul(grads, normed)  # fp32: the bf16 grads are promoted
        dots = torch._foreach_sub(
            torch._foreach_norm(torch._foreach_clamp_min(products, 0.0), 1),
            torch._foreach_norm(torch._foreach_clamp_max(products, 0.0), 1),
        )
        projected = torch._foreach_sub(grads, torch._foreach_mul(normed, dots))  # promotes bf16 grads
        return (None, *torch._foreach_div(projected, norms))


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast computes in on this device type now, or None when it is off.

    None also for device types autocast does not know (meta, where FLOPs are counted).
    """
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return None
    return torch.get_autocast_dtype(device_type) if enabled else None


def joint_weight_norm(weights: list[torch.Tensor], dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Every weight divided by its own Frobenius norm, optionally cast to `dtype`.

    Computes what `w / w.norm()` per weight computes, in fp32, with far fewer ops.
    """
    return list(_JointWeightNorm.apply(dtype, *weights))


class DenseTrunk(nn.Module):
    """The HyperNets' shared trunk: (1, in_channels, H, W) -> (1, out_channels, H, W).

    A stem conv, dense stages (`growth` x `layers`, each layer reading the concatenation
    of everything before it) with a channel-halving conv between stages, and a 1x1 output
    conv, all weight-normalised, without bias or BatchNorm, LeakyReLU between, orthogonal
    init. Both space kinds' HyperNets are this trunk plus how they encode and read out.
    """

    def __init__(self, in_channels: int, out_channels: int, config: HyperNetConfig) -> None:
        super().__init__()
        self.config = config
        pad = config.kernel_size // 2
        width = in_channels
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
        self.out = WNConv2d(width, out_channels, 1, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight)

    def convs(self) -> list[WNConv2d]:
        """Every conv in the order `features` runs them."""
        convs = [self.stem]
        for stage, dense in enumerate(self.stages):
            convs += list(dense)
            if stage < len(self.reducers):
                convs.append(self.reducers[stage])
        return [*convs, self.out]  # type: ignore[list-item]

    def features(self, c: torch.Tensor) -> torch.Tensor:
        """c: (1, in_channels, H, W) -> (1, out_channels, H, W).

        Computes what the layers' own forwards compute, with fewer ops: all weight norms
        at once; under autocast the trunk is cast to the autocast dtype once (the convs
        would cast it, and each weight, at every layer); and only the new channels of
        each dense layer pass through the LeakyReLU, since every layer reads the whole
        concatenation through it (LeakyReLU(cat(a, b)) = cat(LeakyReLU(a), LeakyReLU(b))).
        """
        dtype = autocast_dtype(c.device.type)
        convs = self.convs()
        weights = iter(joint_weight_norm([conv.weight for conv in convs], dtype))
        pad = self.config.kernel_size // 2
        slope = self.config.negative_slope
        if dtype is not None:
            c = c.to(dtype)

        def conv(x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(x, next(weights), None, 1, pad)

        act = torch.cat([F.leaky_relu(c, slope), F.leaky_relu(conv(c), slope)], 1)  # LeakyReLU(x)
        for stage, dense in enumerate(self.stages):
            for _ in dense:
                act = torch.cat([act, F.leaky_relu(conv(act), slope)], 1)
            if stage < len(self.reducers):
                act = F.leaky_relu(conv(act), slope)
        return F.conv2d(act, next(weights))


class HyperNet(DenseTrunk):
    """Conditioning tensor (1 + channels, rows, columns) -> 1x1 weights of every op."""

    def __init__(self, layout: EncodingLayout, config: HyperNetConfig = HyperNetConfig()) -> None:
        # Input: the encoding's channels + z; output: R * dcN values per position.
        super().__init__(layout.channels + 1, layout.row_width * layout.column_width, config)
        self.layout = layout

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """c: (1, 1 + channels, rows, columns) -> (rows * R, columns * dcN) weight matrix."""
        out = self.features(c)  # (1, R * dcN, rows, columns)
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

    The reference for `gather_op_weights`, which computes the same in a few ops.

    Returns:
        One (bottleneck, in_channels, 1, 1) tensor per op.
    """
    weights = []
    for span in spans:
        start = span.start * column_width
        w = matrix[: span.out_channels, start : start + span.in_channels]
        weights.append((w / w.norm()).reshape(span.out_channels, span.in_channels, 1, 1))
    return weights


def gather_op_weights(
    features: torch.Tensor, positions: torch.Tensor, counts: torch.Tensor, shapes: tuple[tuple[int, int], ...]
) -> list[torch.Tensor]:
    """Every op's 1x1 weight read out of the HyperNet's features in one gather, divided by its norm.

    Slicing the rearranged matrix op by op costs about thirteen ops per op, and the
    backward of each slice builds a zero tensor the size of the whole matrix. Here one
    gather, one segmented sum of squares and one division serve all ops; the norms
    are taken in fp32 and the weights come out in the features' dtype.

    Args:
        features: the HyperNet's output (1, R * dcN, rows, columns).
        positions: int32, where every op's weights lie in the features read in (row,
            column, channel) order (`GenerationPlan`).
        counts: int32, the number of weights of every op.
        shapes: (bottleneck, in_channels) of every op.

    Returns:
        One (bottleneck, in_channels, 1, 1) tensor per op, of unit Frobenius norm.
    """
    flat = features.permute(0, 2, 3, 1).reshape(-1)  # a view when the features are channels-last
    gathered = flat.index_select(0, positions)
    values = gathered.float()
    # unsafe: the counts come from the plan and add up; checking them would wait for the device.
    norms = torch.segment_reduce(values * values, "sum", lengths=counts, unsafe=True).sqrt()
    normed = (values / norms.repeat_interleave(counts, output_size=values.shape[0])).to(features.dtype)
    sizes = [o * i for o, i in shapes]
    return [w.view(o, i, 1, 1) for w, (o, i) in zip(normed.split(sizes), shapes)]
