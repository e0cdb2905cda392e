"""nb201 networks: one forward function, fed by the SMASH network or by a derived network.

`forward_network` is the only place that knows how a cell network computes: a conv +
BN stem; `stages` stages of `cells_per_stage` cells at C, 2C, 4C ...; between stages a
residual reduction block (ReLU, 3x3 conv stride 2, BN, ReLU, 3x3 conv, BN; shortcut
2x2 average pool then 1x1 conv); head BN, ReLU, global average pool, linear. In a cell
only the edges on some input-to-output path run (see `Cell.live_edges`); a conv edge
is ReLU, conv without bias, BN; `avg_pool_3x3` is stride 1, padding 1, padding not
counted; `skip_connect` is the identity; a cell with no path outputs zeros.

Two networks feed it (`WeightSource`):

- `NB201Smash`, for training and scoring, with `weights="hypernet"` (SMASH: every cell
  conv is generated from the whole cell, its position and z; see
  `engine.nb201.hypernet`) or `weights="shared"` (a weight-sharing supernet: one freely
  learned weight per position, edge and conv op, used by every cell that puts that op
  there; random-sampling one-shot NAS, Li and Talwalkar 2019). Stem, reductions, head
  and every BatchNorm are freely learned and shared in both modes.
- `NB201Net`, the derived network of one cell with ordinary modules, for retraining and
  export; `load_from_smash` copies what the SMASH network used, and the two then agree
  to float precision.

BatchNorm inside cells. Running statistics cannot be generated, so each (position,
edge, conv op) has one BatchNorm shared by every cell; `shared_norms` returns them
with every other BatchNorm, and BN recalibration before scoring re-estimates them for
the scored cell. Batch statistics in eval mode (track_running_stats=False) would need
no recalibration, but then a derived network would not compute what was scored with
the same BN statistics, and scores would depend on the scoring batch's size and mix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from engine.device import draw_z
from engine.hypernet import HyperNetConfig
from engine.nb201.cell import CONV_KERNELS, CONV_OPS, EDGES, Cell
from engine.nb201.hypernet import CellEncoding, CellHyperNet, mix_bases
from engine.nb201.space import PRESETS, CellSpace
from engine.params import WEIGHT_MODES
from engine.spaces import hypernet_from_meta, network_meta

DEFAULT_BASES = 8  # basis kernels per stage and conv op that the HyperNet mixes
BENCHMARK_SPACE = PRESETS["nb201"]

# The weights one cell needs: (position, edge) -> conv weight (C, C, k, k) of every live
# conv edge at every position. Generated per cell (hypernet) or the shared parameters.
Weights = dict[tuple[int, int], torch.Tensor]


class WeightSource(Protocol):
    """What `forward_network` needs from a network: its layers, by position."""

    def stem(self, x: torch.Tensor) -> torch.Tensor: ...

    def reduction(self, index: int, x: torch.Tensor) -> torch.Tensor: ...

    def edge_conv(self, position: int, edge: int, op: str, x: torch.Tensor) -> torch.Tensor:
        """Conv then BN of the conv edge `edge` of the cell at `position`; x is already ReLU'd."""
        ...

    def head(self, x: torch.Tensor) -> torch.Tensor: ...


def forward_network(x: torch.Tensor, cell: Cell, space: CellSpace, source: WeightSource) -> torch.Tensor:
    """Logits (B, classes) of `cell`'s network on images x (B, C, H, W), with `source`'s layers."""
    x = source.stem(x)
    position = 0
    for stage in range(space.stages):
        if stage:
            x = source.reduction(stage - 1, x)
        for _ in range(space.cells_per_stage):
            x = forward_cell(x, cell, position, source)
            position += 1
    return source.head(x)


def forward_cell(x: torch.Tensor, cell: Cell, position: int, source: WeightSource) -> torch.Tensor:
    """One cell: node j sums its live edges' ops; node 3 is the output."""
    nodes: list[torch.Tensor | None] = [x, None, None, None]
    for e in cell.live_edges:  # EDGES order: every source node is complete when read
        to, source_node = EDGES[e]
        h = nodes[source_node]
        assert h is not None  # a live edge's source is reachable from the input
        op = cell.ops[e]
        if op == "skip_connect":
            y = h
        elif op == "avg_pool_3x3":
            y = F.avg_pool2d(h, 3, stride=1, padding=1, count_include_pad=False)
        else:
            y = source.edge_conv(position, e, op, F.relu(h))
        current = nodes[to]
        nodes[to] = y if current is None else current + y
    out = nodes[-1]
    return torch.zeros_like(x) if out is None else out


# Layers both networks own -----------------------------------------------------------------


class Stem(nn.Module):
    """Conv (no bias) then BN, from the image to the first stage's width."""

    def __init__(self, in_channels: int, channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, kernel, padding=kernel // 2, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class ReductionBlock(nn.Module):
    """The benchmark's residual reduction: ReLU-conv3x3/2-BN, ReLU-conv3x3-BN, plus pool-1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
        self.norm_a = nn.BatchNorm2d(out_channels)
        self.conv_b = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm_b = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_a(self.conv_a(F.relu(x)))
        h = self.norm_b(self.conv_b(F.relu(h)))
        return h + self.shortcut(F.avg_pool2d(x, 2))


class Head(nn.Module):
    """BN, ReLU, global average pool, linear."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.relu(self.norm(x)).mean(dim=(2, 3)))


def _outer_layers(space: CellSpace, num_classes: int, in_channels: int) -> tuple[Stem, nn.ModuleList, Head]:
    widths = space.stage_channels
    stem = Stem(in_channels, widths[0], space.stem_kernel)
    reductions = nn.ModuleList(ReductionBlock(a, b) for a, b in zip(widths[:-1], widths[1:]))
    return stem, reductions, Head(widths[-1], num_classes)


def _init_outer_layers(stem: Stem, reductions: nn.ModuleList, head: Head) -> None:
    for module in (stem, reductions):
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    nn.init.zeros_(head.classifier.bias)


# The SMASH network --------------------------------------------------------------------------


class NB201Smash(nn.Module):
    """Computes any cell of an nb201 space, with generated or shared cell weights.

    Args:
        space: the network size.
        num_classes: classifier outputs.
        in_channels: image channels.
        hypernet: HyperNet trunk size (used in "hypernet" mode only).
        weights: "hypernet" (SMASH) or "shared" (weight-sharing baseline).
        bases: basis kernels per stage and conv op ("hypernet" mode only).
    """

    def __init__(
        self,
        space: CellSpace,
        num_classes: int = 10,
        in_channels: int = 3,
        hypernet: HyperNetConfig = HyperNetConfig(),
        weights: str = "hypernet",
        bases: int = DEFAULT_BASES,
    ) -> None:
        super().__init__()
        if weights not in WEIGHT_MODES:
            raise ValueError(f"weights must be one of {', '.join(WEIGHT_MODES)}, got {weights!r}")
        if bases < 1:
            raise ValueError(f"bases must be positive, got {bases}")
        self.space = space
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.weights_mode = weights
        self.hypernet_config = hypernet
        self.bases = bases
        self.stem, self.reductions, self.head = _outer_layers(space, num_classes, in_channels)
        widths = space.stage_channels
        # One BatchNorm per (position, edge, conv op): see _slot for the index.
        self.cell_norms = nn.ModuleList(
            nn.BatchNorm2d(widths[space.stage_of(p)])
            for p in range(space.positions)
            for _ in EDGES
            for _ in CONV_OPS
        )
        self.encoding = CellEncoding(space)
        if weights == "hypernet":
            self.hypernet: CellHyperNet | None = CellHyperNet(self.encoding, (bases + 1) * widths[-1], hypernet)
            # Basis kernels per (stage, conv op), index 2 * stage + op, stacked along the
            # output channels (bases * C, C, k, k): 4-D, so the module converts to channels-last.
            self.cell_bases = nn.ParameterList(
                nn.Parameter(torch.empty(bases * c, c, CONV_KERNELS[op], CONV_KERNELS[op]))
                for c in widths
                for op in CONV_OPS
            )
            self.edge_weights = nn.ParameterList()
        else:
            self.hypernet = None
            self.cell_bases = nn.ParameterList()
            # One weight per (position, edge, conv op), index _slot.
            self.edge_weights = nn.ParameterList(
                nn.Parameter(torch.empty(c, c, CONV_KERNELS[op], CONV_KERNELS[op]))
                for p in range(space.positions)
                for c in (widths[space.stage_of(p)],)
                for _ in EDGES
                for op in CONV_OPS
            )
        self.reset_shared_parameters()

    def reset_shared_parameters(self) -> None:
        """Kaiming init of every freely learned weight (the HyperNet initialises itself)."""
        _init_outer_layers(self.stem, self.reductions, self.head)
        # Bases at a conv's own scale (fan-in C * k * k): the mix is normalised anyway, but
        # Adam's steps are a fixed size, so the bases' magnitude sets how fast they move.
        for weight in [*self.edge_weights, *self.cell_bases]:
            nn.init.kaiming_normal_(weight, nonlinearity="relu")

    @staticmethod
    def _slot(position: int, edge: int, op: str) -> int:
        return (position * len(EDGES) + edge) * len(CONV_OPS) + CONV_OPS.index(op)

    def hypernet_parameters(self) -> list[nn.Parameter]:
        """The HyperNet's own parameters (no weight decay); empty in "shared" mode."""
        return [] if self.hypernet is None else list(self.hypernet.parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        """Everything freely learned outside the HyperNet, bases included (weight decay)."""
        hyper = {id(p) for p in self.hypernet_parameters()}
        return [p for p in self.parameters() if id(p) not in hyper]

    def shared_norms(self) -> list[nn.BatchNorm2d]:
        """Every BatchNorm: all cells share their running statistics (recalibrate before scoring)."""
        return [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]

    def checkpoint_meta(self) -> dict[str, Any]:
        """What `smash_from_meta` needs, besides the state_dict, to rebuild this network."""
        return network_meta(
            self.space, self.num_classes, self.in_channels, self.hypernet_config, weights=self.weights_mode, bases=self.bases
        )

    def encode(
        self, cell: Cell, z: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """HyperNet input (1, 1 + channels, positions, 6): the z channel, then the encoding.

        Args:
            cell: the cell to encode.
            z: positions x 6 values; drawn from `generator` when None.
            generator: the CPU generator z comes from (see `engine.device.draw_z`).
        """
        device = self.stem.conv.weight.device
        c = self.encoding.encode(cell)
        if device.type == "cuda":
            c = c.pin_memory()  # a pinned source makes the copy asynchronous: no host sync
        c = c.to(device, non_blocking=True)
        if z is None:
            z = draw_z((1, *c.shape[1:]), generator, device)  # on the CPU, pinned for CUDA: no host sync
        z = z.to(device, non_blocking=True).reshape(1, *c.shape[1:])
        return torch.cat([z, c], 0).unsqueeze(0)

    def generate(
        self, arch: Cell, z: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> Weights:
        """The conv weight of every live conv edge at every position (see `Weights`).

        "hypernet": generated from the whole cell, the position and z; "shared": the
        shared parameters themselves (z and generator are ignored).
        """
        space = self.space
        conv_edges = [e for e in arch.live_edges if arch.ops[e] in CONV_OPS]
        if not conv_edges:
            return {}
        if self.hypernet is None:
            return {
                (p, e): self.edge_weights[self._slot(p, e, arch.ops[e])]
                for p in range(space.positions)
                for e in conv_edges
            }
        codes = self.hypernet(self.encode(arch, z, generator))  # (values, positions, 6)
        weights: Weights = {}
        n = space.cells_per_stage
        for stage in range(space.stages):
            rows = codes[:, stage * n : (stage + 1) * n]  # (values, N, 6)
            for o, op in enumerate(CONV_OPS):
                edges = [e for e in conv_edges if arch.ops[e] == op]
                if not edges:
                    continue
                # (N * edges, values), position-major: slot i is (row i // len(edges), edge i % len(edges))
                picked = torch.stack([rows[:, :, e] for e in edges], 2).permute(1, 2, 0).flatten(0, 1)
                stacked = self.cell_bases[len(CONV_OPS) * stage + o]  # (bases * C, C, k, k)
                bases = stacked.reshape(self.bases, -1, *stacked.shape[1:])  # a view, in either layout
                mixed = mix_bases(picked, bases)
                for i, w in enumerate(mixed):
                    weights[(stage * n + i // len(edges), edges[i % len(edges)])] = w
        return weights

    def forward(
        self,
        x: torch.Tensor,
        arch: Cell,
        weights: Weights | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Logits of `arch` on x, with `weights` from `generate` (drawn now when omitted)."""
        if weights is None:
            weights = self.generate(arch, generator=generator)
        return forward_network(x, arch, self.space, _SmashSource(self, weights))


class _SmashSource:
    def __init__(self, net: NB201Smash, weights: Weights) -> None:
        self.net = net
        self.weights = weights

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.stem(x)

    def reduction(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.net.reductions[index](x)

    def edge_conv(self, position: int, edge: int, op: str, x: torch.Tensor) -> torch.Tensor:
        weight = self.weights[(position, edge)]
        norm = self.net.cell_norms[self.net._slot(position, edge, op)]
        return norm(F.conv2d(x, weight, padding=CONV_KERNELS[op] // 2))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.head(x)


def smash_from_meta(meta: Mapping[str, Any]) -> NB201Smash:
    """An untrained NB201Smash shaped like the one whose `checkpoint_meta` this is; load its state_dict next."""
    hyper = hypernet_from_meta(meta)
    return NB201Smash(
        CellSpace.from_dict(meta["space"]),
        num_classes=meta["num_classes"],
        in_channels=meta["in_channels"],
        hypernet=hyper,
        weights=meta["weights"],
        bases=meta.get("bases", DEFAULT_BASES),
    )


# The derived network ---------------------------------------------------------------------------


class EdgeConv(nn.Module):
    """A conv edge's own weights: conv without bias, then BN (the ReLU comes before, in the forward)."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class CellModule(nn.Module):
    """One position's cell: an EdgeConv per live conv edge, keyed by edge index."""

    def __init__(self, cell: Cell, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleDict(
            {
                str(e): EdgeConv(channels, CONV_KERNELS[cell.ops[e]])
                for e in cell.live_edges
                if cell.ops[e] in CONV_OPS
            }
        )


class NB201Net(nn.Module):
    """An ordinary network for one cell, with freely learned weights.

    It runs the same `forward_network` as `NB201Smash`, so with the same weights
    (`load_from_smash`) it computes the same function.

    Args:
        arch: the cell.
        num_classes: classifier outputs.
        in_channels: image channels.
        space: the network size; the benchmark's (C=16, N=5) when None.
    """

    def __init__(
        self, arch: Cell, num_classes: int = 10, in_channels: int = 3, space: CellSpace | None = None
    ) -> None:
        super().__init__()
        space = BENCHMARK_SPACE if space is None else space
        self.arch = arch
        self.space = space
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.stem, self.reductions, self.head = _outer_layers(space, num_classes, in_channels)
        widths = space.stage_channels
        self.cells = nn.ModuleList(CellModule(arch, widths[space.stage_of(p)]) for p in range(space.positions))
        _init_outer_layers(self.stem, self.reductions, self.head)
        for cell in self.cells:
            for m in cell.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward_network(x, self.arch, self.space, _DerivedSource(self))

    @torch.no_grad()
    def load_from_smash(self, smash: NB201Smash, weights: Weights) -> NB201Net:
        """Copy the SMASH network's weights for this cell (`weights` from its `generate`).

        Raises:
            ValueError: the SMASH network has another network size, class count or input channels.
        """
        if (
            smash.space.network_size() != self.space.network_size()
            or smash.num_classes != self.num_classes
            or smash.in_channels != self.in_channels
        ):
            raise ValueError(
                f"cannot load SMASH network '{smash.space.name}' ({smash.num_classes} classes, "
                f"{smash.in_channels} channels) into a derived network of '{self.space.name}' "
                f"({self.num_classes} classes, {self.in_channels} channels)"
            )
        self.stem.load_state_dict(smash.stem.state_dict())
        self.reductions.load_state_dict(smash.reductions.state_dict())
        self.head.load_state_dict(smash.head.state_dict())
        for p, cell in enumerate(self.cells):
            assert isinstance(cell, CellModule)
            for key, edge in cell.edges.items():
                e = int(key)
                assert isinstance(edge, EdgeConv)
                edge.conv.weight.copy_(weights[(p, e)])
                edge.norm.load_state_dict(smash.cell_norms[smash._slot(p, e, self.arch.ops[e])].state_dict())
        return self


class _DerivedSource:
    def __init__(self, net: NB201Net) -> None:
        self.net = net

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.stem(x)

    def reduction(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.net.reductions[index](x)

    def edge_conv(self, position: int, edge: int, op: str, x: torch.Tensor) -> torch.Tensor:
        return self.net.cells[position].edges[str(edge)](x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.head(x)


def build_model(
    arch: Cell, num_classes: int = 10, in_channels: int = 3, space: CellSpace | None = None
) -> NB201Net:
    """An ordinary `nn.Module` for `arch` (see NB201Net); the benchmark's network size by default."""
    return NB201Net(arch, num_classes, in_channels, space)


__all__ = [
    "BENCHMARK_SPACE",
    "DEFAULT_BASES",
    "WEIGHT_MODES",
    "CellModule",
    "EdgeConv",
    "Head",
    "NB201Net",
    "NB201Smash",
    "ReductionBlock",
    "Stem",
    "WeightSource",
    "Weights",
    "build_model",
    "forward_cell",
    "forward_network",
    "smash_from_meta",
]
