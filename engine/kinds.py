"""Space kinds: the one door through which every loop reaches a search space.

smash searches more than one kind of space: today's memory-bank space ("banks":
`engine.space`, `engine.arch`, `engine.sampler`, `engine.network`, `engine.cost`) and,
next, NAS-Bench-201 cells ("nb201", `engine.nb201`). The loops (HyperNet training,
scoring, racing, the search strategies, retraining, the job runners) never import a
kind's modules: they take a space value, look its kind up here (`kind_of`) and call
the `SpaceKind` methods, so a second kind needs no second copy of any loop.

A kind is an object with the methods of `SpaceKind`. It builds the two networks the
loops train: a `SmashModule` (the HyperNet and the shared weights, trained by
`engine.train` and scored by `engine.score`) and a `DerivedModule` (one architecture
with its own weights, trained by `engine.retrain` and exported). Space and
architecture values are the kind's own (frozen, hashable, JSON round-trippable); the
loops only hash them, store their JSON and hand them back to the kind.

Kinds register themselves in `KINDS` by name (`register`); a stored space dict names
its kind under "kind", and one without (every experiment stored before kinds existed)
is banks.

Example:
    kind = kind_of(space)
    arch = kind.sample(space, np.random.default_rng(0))
    net = kind.build_smash(space, num_classes=10, in_channels=3, hypernet=HyperNetConfig())
    model = kind.build_model(arch, 10, 3).load_from_smash(net, net.generate(arch))
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from engine import spaces
from engine.arch import Architecture
from engine.config import HyperNetConfig
from engine.cost import Cost, architecture_cost
from engine.network import DerivedNet, SmashNet, build_model
from engine.sampler import FULL_SPACE, perturb, sample
from engine.space import KIND as BANKS_NAME
from engine.space import InvalidSearchSpace, SamplingLimits, SearchSpace

# A kind's values, opaque to the loops: its space, its architectures (hashable, with
# `hash`, `to_json`, `num_ops` and `depth`), and the weights its SMASH module generates.
Space = Any
Arch = Any
Weights = Any


class _Module(Protocol):
    """The `nn.Module` API the loops use on either kind's networks."""

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def modules(self) -> Iterator[nn.Module]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class SmashModule(_Module, Protocol):
    """The network HyperNet training trains and scoring scores: any architecture of a space.

    An `nn.Module`; besides the module API the loops use exactly these members.
    """

    space: Space
    num_classes: int
    in_channels: int
    training: bool

    def generate(
        self, arch: Arch, z: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> Weights:
        """The per-architecture weights; `z` is drawn from `generator` when None."""

    def __call__(self, x: torch.Tensor, arch: Arch, weights: Weights | None = None) -> torch.Tensor:
        """Logits of `arch` on images x, with `weights` from `generate`."""

    def hypernet_parameters(self) -> list[nn.Parameter]:
        """Parameters without weight decay (the HyperNet; empty for plain weight sharing)."""

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every other parameter (with weight decay)."""

    def shared_norms(self) -> list[nn.BatchNorm2d]:
        """The BatchNorms whose running statistics all architectures share (BN recalibration)."""

    def checkpoint_meta(self) -> dict[str, Any]:
        """What `SpaceKind.smash_from_meta` needs, besides the state_dict, to rebuild it."""


@runtime_checkable
class DerivedModule(_Module, Protocol):
    """One architecture as an ordinary network with its own weights: retrained and exported."""

    arch: Arch

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits on images x."""

    def load_from_smash(self, smash: Any, weights: Weights) -> Any:
        """Copies generated and shared weights: it then computes what SMASH scored. Returns self."""


@runtime_checkable
class SpaceKind(Protocol):
    """Everything a loop may ask of a kind of search space."""

    name: str  # "banks", "nb201": the "kind" of its spaces' dicts and of HyperNet checkpoints
    # Retraining init recipes (engine.config.INIT_RECIPES) its derived networks support;
    # a recipe the kind lacks falls back to "kaiming" (see engine.retrain.reinitialise).
    init_recipes: tuple[str, ...]

    def space_from_dict(self, data: Mapping[str, Any]) -> Space:
        """The space a `to_dict()` wrote; a ValueError subclass names what is wrong."""

    def parse(self, text: str, space: Space | None = None) -> Arch:
        """An architecture from its JSON (within `space` when given); ValueError subclass on bad input."""

    def sample(self, space: Space, rng: np.random.Generator, progress: float = 1.0) -> Arch:
        """A random architecture; `progress` (0..1 of HyperNet training) may anneal what is drawn."""

    def perturb(self, arch: Arch, space: Space, rng: np.random.Generator, p: float) -> Arch:
        """Each field resampled with probability p; always a valid architecture."""

    def build_smash(
        self, space: Space, num_classes: int, in_channels: int, hypernet: HyperNetConfig, weights: str = "hypernet"
    ) -> SmashModule:
        """A fresh SMASH module on the CPU; `weights`: "hypernet" (SMASH) or "shared" (weight sharing)."""

    def smash_from_meta(self, meta: Mapping[str, Any]) -> SmashModule:
        """An untrained SMASH module shaped like the one whose `checkpoint_meta()` this is."""

    def build_model(self, arch: Arch, num_classes: int, in_channels: int, space: Space | None = None) -> DerivedModule:
        """The derived network on the CPU, at the kind's own size; sized like the SMASH module of
        `space` when given (to `load_from_smash` into it), for kinds whose architectures do not fix it."""

    def cost(
        self, arch: Arch, num_classes: int, in_channels: int, image_size: int, space: Space | None = None
    ) -> Cost:
        """Parameters and forward FLOPs per image of the derived network (`build_model`'s, same `space`)."""

    def describe(self, arch: Arch) -> list[str]:
        """Lines of a text diagram of `arch`."""


class BanksKind:
    """The memory-bank space of the SMASH paper. Stateless: one shared instance, `BANKS`."""

    name: str = BANKS_NAME
    init_recipes: tuple[str, ...] = ("kaiming", "banks")

    def space_from_dict(self, data: Mapping[str, Any]) -> SearchSpace:
        return SearchSpace.from_dict(data)

    def parse(self, text: str, space: SearchSpace | None = None) -> Architecture:
        return Architecture.from_json(text, space)

    def sample(self, space: SearchSpace, rng: np.random.Generator, progress: float = 1.0) -> Architecture:
        """Over the first half of training the budget and kernel limits grow to the full space."""
        return sample(space, rng, SamplingLimits.annealed(space, progress))

    def perturb(self, arch: Architecture, space: SearchSpace, rng: np.random.Generator, p: float) -> Architecture:
        return perturb(arch, space, rng, p, FULL_SPACE)

    def build_smash(
        self,
        space: SearchSpace,
        num_classes: int,
        in_channels: int,
        hypernet: HyperNetConfig,
        weights: str = "hypernet",
    ) -> SmashNet:
        if weights != "hypernet":
            raise ValueError(f"the banks space has only generated weights (\"hypernet\"), not {weights!r}")
        return SmashNet(space, num_classes=num_classes, in_channels=in_channels, hypernet=hypernet)

    def smash_from_meta(self, meta: Mapping[str, Any]) -> SmashNet:
        hypernet = spaces.hypernet_from_meta(meta)
        space = SearchSpace.from_dict(meta["space"])
        return self.build_smash(space, meta["num_classes"], meta["in_channels"], hypernet)

    def build_model(
        self, arch: Architecture, num_classes: int, in_channels: int, space: SearchSpace | None = None
    ) -> DerivedNet:
        """The derived network; a banks architecture fixes every width itself, so `space` is unused."""
        return build_model(arch, num_classes, in_channels)

    def cost(
        self,
        arch: Architecture,
        num_classes: int,
        in_channels: int,
        image_size: int,
        space: SearchSpace | None = None,
    ) -> Cost:
        return architecture_cost(arch, num_classes, in_channels, image_size)

    def describe(self, arch: Architecture) -> list[str]:
        return describe_architecture(arch)


def describe_architecture(arch: Architecture) -> list[str]:
    """The stem, then per block its banks and one line per op, then the head.

    An op line reads "op 3: reads 0,1 -> 1x1 16 -> 3x3 > 5x5 d2 | 3x3 g2 -> 8 ch -> writes 2":
    `>` stacks two convs of a path, `|` separates path A from path B, d is the dilation
    (height, width when they differ), g the groups.
    """
    lines = [f"stem {arch.stem_kernel}x{arch.stem_kernel} conv -> {arch.blocks[0].in_channels} ch"]
    index = 0
    for b, block in enumerate(arch.blocks):
        lines.append(
            f"block {b}: {block.in_channels} ch in {block.initial_banks} bank(s) of {block.bank_size}, "
            f"{len(block.ops)} ops, {block.num_banks} banks out ({block.out_channels} ch)"
        )
        for op in block.ops:
            paths = [
                " > ".join(_conv_text(spec) for spec in pair if spec is not None)
                for pair in (op.convs[:2], op.convs[2:])
            ]
            body = " | ".join(path for path in paths if path)
            reads, writes = ",".join(map(str, op.reads)), ",".join(map(str, op.writes))
            lines.append(
                f"  op {index}: reads {reads} -> 1x1 {op.bottleneck} -> {body} -> {op.units} ch -> writes {writes}"
            )
            index += 1
        if b < len(arch.blocks) - 1:
            lines.append(f"transition: BN, ReLU, 1x1 conv -> {arch.blocks[b + 1].in_channels} ch, 2x2 average pool")
    lines.append(f"head: BN, ReLU, global average pool, linear from {arch.blocks[-1].out_channels} ch")
    return lines


def _conv_text(spec: Any) -> str:
    kernel, dilation = spec.kernel, spec.dilation
    text = f"{kernel[0]}x{kernel[1]}"
    if dilation != (1, 1):
        text += f" d{dilation[0]}" if dilation[0] == dilation[1] else f" d{dilation[0]},{dilation[1]}"
    if spec.groups != 1:
        text += f" g{spec.groups}"
    return text


BANKS = BanksKind()

# Every kind by name. The nb201 kind adds itself with `register` when its package loads.
KINDS: dict[str, SpaceKind] = {BANKS.name: BANKS}


def register(kind: SpaceKind) -> SpaceKind:
    """Adds `kind` to `KINDS` under its name (again: replaces it); returns it.

    Raises:
        TypeError: `kind` lacks a method of `SpaceKind`.
    """
    if not isinstance(kind, SpaceKind):
        missing = [name for name in _KIND_MEMBERS if not hasattr(kind, name)]
        raise TypeError(f"{type(kind).__name__} is not a SpaceKind: it lacks {', '.join(missing)}")
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> SpaceKind:
    """The registered kind called `name`.

    Raises:
        InvalidSearchSpace: no kind of that name is registered.
    """
    try:
        return KINDS[name]
    except KeyError:
        raise InvalidSearchSpace(f"unknown search-space kind {name!r} (known: {', '.join(KINDS)})") from None


def kind_of(space: Space) -> SpaceKind:
    """The registered kind of a space value, by its `kind` attribute.

    Raises:
        InvalidSearchSpace: no kind of that name is registered.
    """
    return get_kind(space.kind)


def space_from_dict(data: Mapping[str, Any]) -> Space:
    """A space from its dict, by the dict's "kind"; no "kind" (a space stored before kinds) is banks.

    Raises:
        InvalidSearchSpace: an unknown kind, or a space its kind refuses.
    """
    kind = data.get("kind") if isinstance(data, Mapping) else None
    if kind not in spaces.SPACE_TYPES and kind in KINDS:
        # A kind registered at run time: the torch-free table knows only the built-in ones.
        return KINDS[kind].space_from_dict(data)
    return spaces.space_from_dict(data)


_KIND_MEMBERS = (
    "name",
    "init_recipes",
    "space_from_dict",
    "parse",
    "sample",
    "perturb",
    "build_smash",
    "smash_from_meta",
    "build_model",
    "cost",
    "describe",
)


# The second kind registers here, after the registry exists (it does not import this module).
from engine.nb201.kind import NB201  # noqa: E402

register(NB201)


__all__ = [
    "BANKS",
    "KINDS",
    "Arch",
    "BanksKind",
    "DerivedModule",
    "SmashModule",
    "Space",
    "SpaceKind",
    "Weights",
    "describe_architecture",
    "get_kind",
    "kind_of",
    "register",
    "space_from_dict",
]
