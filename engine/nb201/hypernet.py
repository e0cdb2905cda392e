"""The nb201 HyperNet: a cell and a position in the network -> that cell's conv weights there.

Conditioning tensor. One row per cell position of the network (stages x N), one column
per edge, channels (all -1 but the set ones, +1, as in the banks kind):

- the whole cell: one-hot op per edge (6 x 5), the same at every row and column, so
  every generated weight sees the entire cell;
- the column's edge (6) and the op on it (5);
- the row's stage and its index within the stage;
- plus one random z channel (standard normal), drawn per generation.

The encoded cell is `cell.live()`: edges off every input-to-output path read as
`none`, so cells that differ only there (and share a hash) get the same weights.

Trunk: the banks kind's HyperNet recipe, sized by the same `HyperNetConfig` fields
(`stem_channels`, dense `growth` x `layers` per stage with a channel-halving conv
between stages, `kernel_size`, LeakyReLU `negative_slope`; weight-normalised convs,
no BatchNorm, orthogonal init), run over the positions x edges grid. Its last 1x1 conv
emits, per (position, edge), `bases` x Cmax mixing coefficients (alpha) and Cmax
input-channel gains (beta), Cmax the widest stage.

Weights (`mix_bases`). A conv of kernel k at stage s is drawn from `bases` learned
basis kernels B[s, k] of shape (bases, C_s, C_s, k, k) (the network stores them as
(bases * C_s, C_s, k, k)), shared by every position and edge of the stage:

    W[o, i] = (sum_m alpha[m, o] * B[m, o, i]) * (1 + beta[i]);   W <- W / ||W||_F

Why this form: generating every conv weight outright would make the HyperNet emit
up to 64 x 64 x 9 values per conv, 1.45M for the benchmark-size network of the
all-3x3 cell; this emits (bases + 1) x 64 per conv, and mixing costs `bases`
multiply-adds per weight value. With 8 bases one whole generation (trunk and mixing)
of that network is 0.11 GFLOPs, 0.4% of the 28 GFLOPs of one forward pass of a batch of
64 CIFAR images through it. Mixing per output channel matters because the BatchNorm
after every conv cancels any per-output-channel scale: only the mix of bases within an
output channel, and the weighting of the input channels, change what the conv
computes. Dividing by the Frobenius norm is SMASH's simple weight norm; no learned
scale is needed because the BatchNorm that follows carries one.
"""

from __future__ import annotations

import torch

from engine.hypernet import DenseTrunk, HyperNetConfig
from engine.nb201.cell import EDGES, OPS, Cell
from engine.nb201.space import CellSpace


class CellEncoding:
    """Channel layout of the conditioning tensor, fixed by the space for a whole run."""

    def __init__(self, space: CellSpace) -> None:
        self.space = space
        sizes = [
            ("cell", len(EDGES) * len(OPS)),  # channel 5 * edge + op: the whole cell
            ("edge", len(EDGES)),  # this column's edge
            ("op", len(OPS)),  # the op on this column's edge
            ("stage", space.stages),  # this row's stage
            ("index", space.cells_per_stage),  # this row's place within its stage
        ]
        self.fields: dict[str, tuple[int, int]] = {}
        offset = 0
        for name, size in sizes:
            self.fields[name] = (offset, size)
            offset += size
        self.channels = offset
        # The rows' and columns' own fields never change: set them once.
        base = torch.full((self.channels, space.positions, len(EDGES)), -1.0)
        for e in range(len(EDGES)):
            base[self.fields["edge"][0] + e, :, e] = 1.0
        for p in range(space.positions):
            base[self.fields["stage"][0] + space.stage_of(p), p, :] = 1.0
            base[self.fields["index"][0] + p % space.cells_per_stage, p, :] = 1.0
        self._base = base

    def encode(self, cell: Cell) -> torch.Tensor:
        """c (channels, positions, 6) of `cell`'s live edges, float32 on the CPU."""
        c = self._base.clone()
        cell_offset, op_offset = self.fields["cell"][0], self.fields["op"][0]
        for e, op in enumerate(cell.live().ops):
            k = OPS.index(op)
            c[cell_offset + len(OPS) * e + k] = 1.0
            c[op_offset + k, :, e] = 1.0
        return c


class CellHyperNet(DenseTrunk):
    """Conditioning tensor (1, 1 + channels, positions, 6) -> per-slot mixing codes.

    Args:
        encoding: the layout of its input.
        out_channels: values emitted per (position, edge).
        config: trunk size (see the module docstring for how each field is used).
    """

    def __init__(self, encoding: CellEncoding, out_channels: int, config: HyperNetConfig) -> None:
        super().__init__(encoding.channels + 1, out_channels, config)  # + z
        self.encoding = encoding

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """c: (1, 1 + channels, positions, 6) -> (out_channels, positions, 6)."""
        return self.features(c)[0]


def mix_bases(codes: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """Conv weights of n slots from their codes and one stage's bases.

    Args:
        codes: (n, bases * Cmax + Cmax): alpha then beta, as the HyperNet emits them.
        bases: (bases, C, C, k, k), C <= Cmax.

    Returns:
        (n, C, C, k, k), each slot's weight divided by its Frobenius norm.
    """
    n = codes.shape[0]
    m, c = bases.shape[0], bases.shape[1]
    widest = codes.shape[1] // (m + 1)
    alpha = codes[:, : m * widest].reshape(n, m, widest)[:, :, :c]  # (n, bases, C): per output channel
    beta = codes[:, m * widest : m * widest + c]  # (n, C): per input channel
    weights = torch.einsum("nmo,moikl->noikl", alpha, bases) * (1.0 + beta)[:, None, :, None, None]
    norms = weights.flatten(1).norm(dim=1)
    return weights / norms.view(n, 1, 1, 1, 1)


__all__ = ["CellEncoding", "CellHyperNet", "mix_bases"]
