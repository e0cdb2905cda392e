"""Space kinds: the banks kind satisfies the interface, and no loop special-cases banks.

A toy kind registered here (architectures are one integer, a hidden width; the SMASH
module is a tiny MLP whose hidden units the "HyperNet" scales per architecture) is
trained by `train_hypernet`, reloaded by `load_smash`, scored, searched by
`run_search` and retrained by `retrain`, all without a line of toy-specific code in
the loops.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.config import RetrainConfig, SearchConfig, TrainConfig
from engine.cost import Cost, architecture_cost
from engine.data import DataConfig, Dataset, DeviceImages, Split
from engine.hypernet import HyperNetConfig
from engine.jobs import describe
from engine.kinds import (
    BANKS,
    KINDS,
    DerivedModule,
    SmashModule,
    SpaceKind,
    kind_of,
    register,
    space_from_dict,
)
from engine.params import ExperimentSpec
from engine.retrain import retrain
from engine.sampler import sample
from engine.score import RaceConfig, Racer, ScoreConfig, Scorer
from engine.search import run_search
from engine.space import PRESETS, InvalidSearchSpace, SearchSpace
from engine.train import build_smash, load_smash, train_hypernet

TINY = PRESETS["tiny"]
SMALL_HYPERNET = HyperNetConfig(growth=(6, 6), layers=(2, 2))
SHORT_TRAIN = TrainConfig(
    epochs=1, max_steps=6, batch_size=50, report_every=2, checkpoint_every=3, eval_archs=2, eval_images=100, seed=3
)


# --- the banks kind ----------------------------------------------------------------------


def test_the_banks_kind_satisfies_the_protocols() -> None:
    assert isinstance(BANKS, SpaceKind) and KINDS["banks"] is BANKS and kind_of(TINY) is BANKS
    assert SearchSpace.kind == TINY.kind == "banks" and "kind" not in {f.name for f in dataclasses.fields(SearchSpace)}
    torch.manual_seed(0)
    net = BANKS.build_smash(TINY, 10, 3, SMALL_HYPERNET)
    assert isinstance(net, SmashModule) and isinstance(net, nn.Module)
    assert net.shared_norms() == [*net.transition_norms, net.head_norm]
    rebuilt = BANKS.smash_from_meta(json.loads(json.dumps(net.checkpoint_meta())))
    rebuilt.load_state_dict(net.state_dict())
    arch = BANKS.sample(TINY, np.random.default_rng(0))
    assert BANKS.parse(arch.to_json(), TINY) == arch
    model = BANKS.build_model(arch, 10, 3)
    assert isinstance(model, DerivedModule) and model.arch == arch
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        weights = net.eval().generate(arch, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(rebuilt.eval()(x, arch, weights), net(x, arch, weights))
        assert (model.load_from_smash(net, weights).eval()(x) - net(x, arch, weights)).abs().max() <= 1e-4
    assert BANKS.cost(arch, 10, 3, 32) == architecture_cost(arch, 10, 3, 32)
    lines = BANKS.describe(arch)
    assert lines[0].startswith("stem 3x3") and sum(line.startswith("  op ") for line in lines) == arch.num_ops
    assert BANKS.perturb(arch, TINY, np.random.default_rng(1), 1.0) != arch


def test_banks_sampling_anneals_with_the_training_progress() -> None:
    def largest_kernel(progress: float) -> int:
        rng = np.random.default_rng(0)
        archs = [BANKS.sample(TINY, rng, progress) for _ in range(30)]
        return max(max(spec.kernel) for a in archs for _, _, op in a.ops() for spec in op.convs if spec is not None)

    assert largest_kernel(0.0) == 3 and largest_kernel(1.0) == 5
    # Full progress is the sampler's full space, draw for draw.
    assert BANKS.sample(TINY, np.random.default_rng(4)) == sample(TINY, np.random.default_rng(4))


def test_space_dicts_round_trip_with_and_without_a_kind() -> None:
    data = TINY.to_dict()
    assert data["kind"] == "banks"
    assert space_from_dict(json.loads(json.dumps(data))) == TINY == SearchSpace.from_dict(data)
    stored_before_kinds = {k: v for k, v in data.items() if k != "kind"}
    assert space_from_dict(stored_before_kinds) == TINY == SearchSpace.from_dict(stored_before_kinds)
    with pytest.raises(InvalidSearchSpace, match="unknown search-space kind 'cubes'"):
        space_from_dict({**data, "kind": "cubes"})
    with pytest.raises(InvalidSearchSpace, match="expected a banks search space"):
        SearchSpace.from_dict({**data, "kind": "nb201"})
    with pytest.raises(InvalidSearchSpace, match="unknown search-space field"):
        space_from_dict({**data, "colour": "red"})


def test_register_refuses_an_object_that_is_not_a_kind() -> None:
    with pytest.raises(TypeError, match="lacks .*smash_from_meta"):
        register(type("Half", (), {"name": "half", "sample": lambda *a: 0})())  # type: ignore[arg-type]
    assert "half" not in KINDS


def test_a_hypernet_checkpoint_written_before_kinds_loads_as_banks(small_synthetic: Dataset, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_smash(TINY, 10, 3, SMALL_HYPERNET, "cpu")
    path = tmp_path / "c.pt"
    train_hypernet(net, small_synthetic, dataclasses.replace(SHORT_TRAIN, max_steps=3, eval_archs=0), checkpoint_path=path)
    state = load_checkpoint(path)
    assert state["space_kind"] == "banks" and state["smash"] == net.checkpoint_meta()
    # The layout of existing databases' checkpoints: no space kind, the network's shape at the top.
    meta = state.pop("smash")
    del state["space_kind"]
    state.update({key: meta[key] for key in ("hypernet", "num_classes", "in_channels")})
    state["space"] = {k: v for k, v in meta["space"].items() if k != "kind"}
    save_checkpoint(state, path)
    loaded, _ = load_smash(path)
    assert loaded.space == TINY and kind_of(loaded.space) is BANKS
    for (name, a), b in zip(net.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_training_scoring_search_and_retraining_through_the_banks_kind(
    small_synthetic: Dataset, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    net = build_smash(TINY, 10, 3, SMALL_HYPERNET, "cpu")
    outcome = train_hypernet(net, small_synthetic, SHORT_TRAIN, checkpoint_path=tmp_path / "c.pt")
    assert outcome.finished and outcome.last_eval is not None
    loaded, _ = load_smash(tmp_path / "c.pt")
    scorer = _scorer(loaded, small_synthetic)
    config = SearchConfig(strategy="staged", architectures=6, top_k=2, perturbations=2, markov_steps=2, batch=3)
    results, finished = run_search(TINY, config, Racer(scorer, RaceConfig(top_k=2)))
    assert finished and len({r.arch.hash for r in results}) == len(results) >= 8
    best = min(results, key=lambda r: (r.score.error, r.score.loss)).arch
    result = retrain(best, _small(small_synthetic), RetrainConfig(epochs=1, batch_size=50), kind=BANKS)
    assert result is not None and 0 <= result.test_acc <= 100


# --- a toy second kind -------------------------------------------------------------------


@dataclass(frozen=True)
class ToySpace:
    name: str = "toy"
    max_width: int = 8  # architectures are hidden widths 1..max_width
    kind: ClassVar[str] = "toy"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToySpace:
        return cls(**{k: v for k, v in data.items() if k != "kind"})


@dataclass(frozen=True)
class ToyArch:
    width: int

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps({"width": self.width})

    num_ops = 1
    depth = 2


class ToySmash(nn.Module):
    """Pooled pixels -> shared BN -> hidden layer whose units the "HyperNet" scales per width -> logits."""

    def __init__(self, space: ToySpace, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.space, self.num_classes, self.in_channels = space, num_classes, in_channels
        self.norm = nn.BatchNorm2d(in_channels)
        self.hidden = nn.Linear(in_channels * 16, space.max_width)
        self.out = nn.Linear(space.max_width, num_classes)
        self.hyper = nn.Embedding(space.max_width + 1, space.max_width)

    def generate(self, arch: ToyArch, z: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        if z is None:
            z = torch.randn(self.space.max_width, generator=generator)
        return self.hyper.weight[arch.width] + 0.1 * z  # one scale per hidden unit

    def forward(self, x: torch.Tensor, arch: ToyArch, weights: torch.Tensor | None = None) -> torch.Tensor:
        if weights is None:
            weights = self.generate(arch)
        h = F.adaptive_avg_pool2d(self.norm(x), 4).flatten(1)
        h = F.relu(F.linear(h, self.hidden.weight[: arch.width], self.hidden.bias[: arch.width]))
        return F.linear(h * weights[: arch.width], self.out.weight[:, : arch.width], self.out.bias)

    def hypernet_parameters(self) -> list[nn.Parameter]:
        return list(self.hyper.parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.norm.parameters(), *self.hidden.parameters(), *self.out.parameters()]

    def shared_norms(self) -> list[nn.BatchNorm2d]:
        return [self.norm]

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"space": self.space.to_dict(), "num_classes": self.num_classes, "in_channels": self.in_channels}


class ToyNet(nn.Module):
    def __init__(self, arch: ToyArch, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.arch = arch
        self.norm = nn.BatchNorm2d(in_channels)
        self.hidden = nn.Linear(in_channels * 16, arch.width)
        self.out = nn.Linear(arch.width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(F.adaptive_avg_pool2d(self.norm(x), 4).flatten(1))))

    @torch.no_grad()
    def load_from_smash(self, smash: ToySmash, weights: torch.Tensor) -> ToyNet:
        self.norm.load_state_dict(smash.norm.state_dict())
        width = self.arch.width
        self.hidden.weight.copy_(smash.hidden.weight[:width])
        self.hidden.bias.copy_(smash.hidden.bias[:width])
        self.out.weight.copy_(smash.out.weight[:, :width] * weights[:width])  # the scales fold into the output layer
        self.out.bias.copy_(smash.out.bias)
        return self


class ToyKind:
    name = "toy"
    init_recipes = ("kaiming",)

    def __init__(self) -> None:
        self.progress: list[float] = []  # what train_hypernet handed to sample

    def space_from_dict(self, data: Mapping[str, Any]) -> ToySpace:
        return ToySpace.from_dict(data)

    def parse(self, text: str, space: ToySpace | None = None) -> ToyArch:
        return ToyArch(int(json.loads(text)["width"]))

    def sample(self, space: ToySpace, rng: np.random.Generator, progress: float = 1.0) -> ToyArch:
        self.progress.append(progress)
        return ToyArch(int(rng.integers(1, space.max_width + 1)))

    def perturb(self, arch: ToyArch, space: ToySpace, rng: np.random.Generator, p: float) -> ToyArch:
        return ToyArch(int(rng.integers(1, space.max_width + 1))) if rng.random() < p else arch

    def build_smash(
        self, space: ToySpace, num_classes: int, in_channels: int, hypernet: HyperNetConfig, weights: str = "hypernet"
    ) -> ToySmash:
        return ToySmash(space, num_classes, in_channels)

    def smash_from_meta(self, meta: Mapping[str, Any]) -> ToySmash:
        return ToySmash(ToySpace.from_dict(meta["space"]), meta["num_classes"], meta["in_channels"])

    def build_model(self, arch: ToyArch, num_classes: int, in_channels: int, space: ToySpace | None = None) -> ToyNet:
        return ToyNet(arch, num_classes, in_channels)

    def cost(self, arch: ToyArch, num_classes: int, in_channels: int, image_size: int, space: Any = None) -> Cost:
        params = sum(p.numel() for p in self.build_model(arch, num_classes, in_channels).parameters())
        return Cost(params=params, flops=2 * params)

    def describe(self, arch: ToyArch) -> list[str]:
        return [f"hidden width {arch.width}"]


@pytest.fixture
def toy() -> Iterator[ToyKind]:
    kind = ToyKind()
    register(kind)
    yield kind
    del KINDS[kind.name]


def test_every_loop_runs_a_toy_kind_without_special_cases(toy: ToyKind, small_synthetic: Dataset, tmp_path: Path) -> None:
    space = ToySpace()
    assert kind_of(space) is toy and space_from_dict(space.to_dict()) == space

    torch.manual_seed(0)
    net = build_smash(space, 10, 3, HyperNetConfig(), "cpu")
    assert isinstance(net, ToySmash)
    outcome = train_hypernet(net, small_synthetic, SHORT_TRAIN, checkpoint_path=tmp_path / "toy.pt")
    assert outcome.finished and outcome.step == 6 and outcome.last_eval is not None
    # The evaluation's two fixed architectures over the whole space, then one per step, annealed.
    assert toy.progress == [1.0, 1.0] + [step / 6 for step in range(6)]

    loaded, state = load_smash(tmp_path / "toy.pt")
    assert isinstance(loaded, ToySmash) and state["space_kind"] == "toy" and loaded.space == space
    shared_mean = loaded.norm.running_mean.clone()
    scorer = _scorer(loaded, small_synthetic)
    config = SearchConfig(strategy="evolution", architectures=12, population=4, tournament=2, batch=2, seed=1)
    results, finished = run_search(space, config, scorer.score_many)
    assert finished and results and all(isinstance(r.arch, ToyArch) for r in results)
    assert len({r.arch.hash for r in results}) == len(results) <= space.max_width
    assert torch.equal(loaded.norm.running_mean, shared_mean)  # BN recalibration put the shared statistics back

    # The derived network of a scored architecture computes what was scored.
    arch = results[0].arch
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        weights = loaded.generate(arch, generator=torch.Generator().manual_seed(0))
        derived = toy.build_model(arch, 10, 3).load_from_smash(loaded, weights).eval()
        assert torch.allclose(derived(x), loaded(x, arch, weights), atol=1e-5)

    result = retrain(arch, _small(small_synthetic), RetrainConfig(epochs=1, batch_size=50), kind=toy)  # "banks" init: kaiming
    assert result is not None and isinstance(result.model, ToyNet) and len(result.curve) == 1

    spec = ExperimentSpec(space, DataConfig(), HyperNetConfig(), 0, 10, 3, 32)  # type: ignore[arg-type]
    scored = describe(arch, spec, results[0].score, "random", ScoreConfig())
    assert scored.params == toy.cost(arch, 10, 3, 32).params and scored.spec == arch.to_json()


# --- helpers -----------------------------------------------------------------------------


def _scorer(net: Any, data: Dataset) -> Scorer:
    val = DeviceImages(data.val, "cpu", data.mean, data.std)
    train = DeviceImages(data.train, "cpu", data.mean, data.std)
    return Scorer(net, val, ScoreConfig(batch_size=100, bn_recalibration_batches=2, bn_batch_size=50), train=train)


def _small(data: Dataset) -> Dataset:
    """200 training and 100 validation and test images: one short retraining epoch."""

    def head(split: Split, n: int) -> Split:
        return Split(split.images[:n], split.labels[:n])

    return dataclasses.replace(data, train=head(data.train, 200), val=head(data.val, 100), test=head(data.test, 100))
