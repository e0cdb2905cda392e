"""engine.retrain and engine.checkpoint: learning, determinism, exact resume, divergence, bad files."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engine.arch import Architecture, Block
from engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    numpy_rng_from_state,
    numpy_rng_state,
    save_checkpoint,
    set_torch_rng_state,
    torch_rng_state,
)
from engine.data import DataConfig, Dataset, DeviceImages, load_dataset
from engine.families import densenet_style, fractalnet_style, resnet_style
from engine.kinds import BANKS, NB201, Arch, DerivedModule, Space, SpaceKind
from engine.nb201.cell import Cell
from engine.network import build_model
from engine.retrain import (
    InvalidRetrainConfig,
    RetrainConfig,
    RetrainDiverged,
    RetrainEpoch,
    RetrainResult,
    evaluate,
    reinitialise,
    retrain,
)
from engine.sampler import sample
from engine.spaces import PRESETS

# One xdist worker for the whole module: its module fixtures (data, reference run) are then
# built once instead of once per worker.
pytestmark = pytest.mark.xdist_group("retrain")

TINY = PRESETS["tiny"]
# Narrower and shallower than tiny, with every kind of op: determinism and resume tests
# need many short runs, not learning.
MICRO = dataclasses.replace(TINY, name="micro", depth=2, width=1)
# Three epochs of four steps: long enough for a mid-epoch and an epoch-boundary stop.
SHORT = RetrainConfig(epochs=3, batch_size=25, warmup_epochs=1.0)
# A cell with convs, a pool and skips, retrained at the nb201-tiny size (C=8, N=1).
NB201_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@dataclass(frozen=True)
class Subject:
    """An architecture to retrain, with the kind and the space that build its network."""

    kind: SpaceKind
    space: Space
    arch: Arch

    def retrain(self, data: Dataset, config: RetrainConfig, **options: Any) -> RetrainResult | None:
        return retrain(self.arch, data, config, kind=self.kind, space=self.space, **options)

    def build_model(self, data: Dataset) -> DerivedModule:
        return self.kind.build_model(self.arch, data.num_classes, data.in_channels, self.space)


@pytest.fixture(scope="module")
def learn_data() -> Dataset:
    # 16 px keeps every shape family recognisable at a quarter of the 32 px cost.
    return load_dataset(
        DataConfig("synthetic", synthetic_train=2200, synthetic_test=500, val_size=200, image_size=16)
    )


@pytest.fixture(scope="module")
def small_data() -> Dataset:
    return load_dataset(
        DataConfig("synthetic", synthetic_train=160, synthetic_test=100, val_size=60, image_size=16)
    )


@pytest.fixture(scope="module")
def arch() -> Architecture:
    """A sampled architecture with parallel paths and summed banks, so the 'banks' init
    and every op shape are exercised."""
    for seed in range(100):
        candidate = sample(MICRO, np.random.default_rng(seed))
        ops = [op for block in candidate.blocks for op in block.ops]
        if any(op.convs[2] is not None for op in ops) and any(map(_adds_into_a_bank, candidate.blocks)):
            return candidate
    raise AssertionError("no micro architecture with parallel paths and additive writes")


@pytest.fixture(scope="module", params=["micro", "nb201-tiny"])
def subject(request: pytest.FixtureRequest, arch: Architecture) -> Subject:
    """What the tests of determinism, resume and export retrain: a network of each space kind."""
    if request.param == "micro":
        return Subject(BANKS, MICRO, arch)
    return Subject(NB201, PRESETS["nb201-tiny"], Cell.from_string(NB201_CELL))


@pytest.fixture(scope="module")
def reference(subject: Subject, small_data: Dataset) -> RetrainResult:
    """An uninterrupted short run, the yardstick of determinism and resume."""
    result = subject.retrain(small_data, SHORT)
    assert result is not None
    return result


def _adds_into_a_bank(block: Block) -> bool:
    """Whether some op of `block` writes into a bank that already holds data."""
    filled = block.initial_banks
    for op in block.ops:
        if any(w < filled for w in op.writes):
            return True
        filled = max(filled, max(op.writes) + 1)
    return False


def _stop_after(calls: int) -> Callable[[], bool]:
    """A should_stop that lets `calls` steps run, then asks to stop."""
    count = 0

    def should_stop() -> bool:
        nonlocal count
        count += 1
        return count > calls

    return should_stop


def _assert_same_run(a: RetrainResult, b: RetrainResult) -> None:
    assert a.model is not None and b.model is not None
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name
    assert a.curve == b.curve
    assert (a.test_acc, a.test_loss, a.best_val_acc, a.epochs) == (b.test_acc, b.test_loss, b.best_val_acc, b.epochs)


def _assert_one_line_without_cause(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text
    # Raised directly or `from None`: no chained library traceback under the message.
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


# --- learning ------------------------------------------------------------------------


def test_retraining_a_tiny_network_beats_chance_by_far(learn_data: Dataset) -> None:
    events: list[RetrainEpoch] = []
    result = retrain(
        densenet_style(TINY), learn_data, RetrainConfig(epochs=5), on_epoch=events.append
    )
    assert result is not None
    assert result.test_acc > 50.0, result.curve  # chance is 10%
    assert result.best_val_acc is not None and result.best_val_acc > 50.0
    assert len(result.curve) == 5 and [p["epoch"] for p in result.curve] == [1, 2, 3, 4, 5]
    assert result.curve[-1]["train_loss"] < result.curve[0]["train_loss"]
    assert [e.epoch for e in events] == [1, 2, 3, 4, 5] and all(e.epochs == 5 for e in events)
    assert [e.val_acc for e in events] == [p["val_acc"] for p in result.curve]
    assert all(e.images_per_s > 0 and e.elapsed_s > 0 for e in events)
    assert events[-1].eta_s == 0.0 and events[0].eta_s > 0
    assert 0 < result.seconds and result.model is not None and not result.model.training


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    config = RetrainConfig(epochs=10, lr=0.2, warmup_epochs=2)
    rates = [config.learning_rate(step, 5) for step in range(50)]
    assert rates[0] == pytest.approx(0.02) and rates[9] == pytest.approx(0.2)
    assert rates[10] == pytest.approx(0.2)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert 0 < rates[-1] < 1e-3
    assert RetrainConfig(epochs=2, warmup_epochs=0).learning_rate(0, 5) == pytest.approx(0.1)
    # A warmup longer than the run is capped at half of it, so short runs still decay.
    short = RetrainConfig(epochs=1, warmup_epochs=1)
    assert [short.learning_rate(s, 4) for s in (0, 1)] == pytest.approx([0.05, 0.1])
    assert short.learning_rate(3, 4) < 0.1


@pytest.mark.parametrize(
    "changes",
    [
        {"epochs": 0},
        {"lr": float("nan")},
        {"warmup_epochs": -1},
        {"grad_clip": 0.0},
        {"init": "xavier"},
        {"bf16": "yes"},
        {"momentum": 0.0},  # Nesterov needs momentum
    ],
)
def test_bad_config_is_a_one_line_error(changes: dict) -> None:
    with pytest.raises(InvalidRetrainConfig) as info:
        RetrainConfig(**changes)
    assert "\n" not in str(info.value) and next(iter(changes)) in str(info.value)


def test_a_batch_larger_than_the_training_split_is_refused(arch: Architecture, small_data: Dataset) -> None:
    with pytest.raises(InvalidRetrainConfig, match="fewer than one batch"):
        retrain(arch, small_data, dataclasses.replace(SHORT, batch_size=1000))


# --- initialisation --------------------------------------------------------------------


def _block_output_rms(model: torch.nn.Module, x: torch.Tensor) -> list[float]:
    """RMS of what each transition and the head see: the concatenated banks of each block."""
    seen: list[float] = []
    norms = [t.norm for t in model.transitions] + [model.head_norm]
    hooks = [n.register_forward_hook(lambda m, i, o: seen.append(i[0].pow(2).mean().sqrt().item())) for n in norms]
    with torch.no_grad():
        model.train()(x)
    for hook in hooks:
        hook.remove()
    return seen


def test_banks_init_keeps_every_block_near_unit_scale_without_changing_the_network() -> None:
    x = torch.randn(8, 3, 32, 32)
    archs = [sample(TINY, np.random.default_rng(s)) for s in range(5)] + [
        resnet_style(TINY),
        fractalnet_style(TINY),
    ]
    worst_kaiming = 0.0
    for a in archs:
        torch.manual_seed(0)
        kaiming = reinitialise(build_model(a), "kaiming")
        torch.manual_seed(0)
        banks = reinitialise(build_model(a), "banks")
        assert {k: v.shape for k, v in kaiming.state_dict().items()} == {
            k: v.shape for k, v in banks.state_dict().items()
        }
        rms = _block_output_rms(banks, x)
        assert all(0.5 < r < 4.0 for r in rms), (a.hash[:8], rms)
        worst_kaiming = max(worst_kaiming, *_block_output_rms(kaiming, x))
    # Plain Kaiming lets summed banks grow; that is what the recipe is for.
    assert worst_kaiming > 5.0


# --- determinism and resume --------------------------------------------------------------


def test_a_seeded_run_is_reproducible_and_the_seed_matters(
    subject: Subject, small_data: Dataset, reference: RetrainResult
) -> None:
    again = subject.retrain(small_data, SHORT)
    assert again is not None
    _assert_same_run(reference, again)
    other = subject.retrain(small_data, dataclasses.replace(SHORT, seed=1))
    assert other is not None and reference.model is not None and other.model is not None
    first_conv = next(name for name, value in reference.model.state_dict().items() if value.dim() == 4)
    assert not torch.equal(reference.model.state_dict()[first_conv], other.model.state_dict()[first_conv])


def test_retrain_leaves_the_global_rng_alone(arch: Architecture, small_data: Dataset) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    retrain(arch, small_data, dataclasses.replace(SHORT, epochs=1, warmup_epochs=0))
    assert torch.equal(torch.rand(3), expected)


# 4 steps per epoch (100 images, batches of 25): stop mid-epoch (after 6 steps), at an epoch boundary (after 4), at the start.
@pytest.mark.parametrize("steps_before_stop", [6, 4, 0])
def test_a_stopped_and_resumed_run_ends_exactly_like_an_uninterrupted_one(
    subject: Subject, small_data: Dataset, reference: RetrainResult, tmp_path: Path, steps_before_stop: int
) -> None:
    path = tmp_path / "run.pt"
    first: list[RetrainEpoch] = []
    stopped = subject.retrain(
        small_data, SHORT, checkpoint_path=path, should_stop=_stop_after(steps_before_stop), on_epoch=first.append
    )
    assert stopped is None
    state = load_checkpoint(path, expected_kind="retrain")
    assert (state["epoch"], state["batch"]) == divmod(steps_before_stop, 4)
    rest: list[RetrainEpoch] = []
    resumed = subject.retrain(small_data, SHORT, checkpoint_path=path, on_epoch=rest.append)
    assert resumed is not None
    _assert_same_run(reference, resumed)
    assert [e.epoch for e in first + rest] == [1, 2, 3]


def test_a_finished_checkpoint_gives_the_result_again_without_training(
    subject: Subject, small_data: Dataset, reference: RetrainResult, tmp_path: Path
) -> None:
    path = tmp_path / "run.pt"
    subject.retrain(small_data, SHORT, checkpoint_path=path)
    events: list[RetrainEpoch] = []
    again = subject.retrain(small_data, SHORT, checkpoint_path=path, on_epoch=events.append)
    assert again is not None and events == []
    _assert_same_run(reference, again)
    fresh = subject.retrain(small_data, SHORT, checkpoint_path=path, resume=False, on_epoch=events.append)
    assert fresh is not None and len(events) == 3


def test_a_checkpoint_of_another_run_is_refused(arch: Architecture, small_data: Dataset, tmp_path: Path) -> None:
    path = tmp_path / "run.pt"
    one_epoch = dataclasses.replace(SHORT, epochs=1, warmup_epochs=0)
    retrain(arch, small_data, one_epoch, checkpoint_path=path)
    with pytest.raises(CheckpointError, match="another config .*lr=0.1") as info:
        retrain(arch, small_data, dataclasses.replace(one_epoch, lr=0.05), checkpoint_path=path)
    _assert_one_line_without_cause(info.value)
    with pytest.raises(CheckpointError, match="another architecture"):
        retrain(fractalnet_style(TINY), small_data, one_epoch, checkpoint_path=path)
    # Only when checkpoints are written may change between sessions.
    assert retrain(arch, small_data, dataclasses.replace(one_epoch, checkpoint_every_epochs=5), checkpoint_path=path)


# --- divergence --------------------------------------------------------------------------


def test_a_nan_loss_raises_and_keeps_the_last_good_checkpoint(
    arch: Architecture, small_data: Dataset, tmp_path: Path
) -> None:
    path = tmp_path / "run.pt"
    assert retrain(arch, small_data, SHORT, checkpoint_path=path, should_stop=_stop_after(4)) is None
    good = path.read_bytes()
    # A zero standard deviation turns every normalised pixel into inf or NaN.
    poisoned = dataclasses.replace(small_data, std=(0.0, 0.0, 0.0))
    with pytest.raises(RetrainDiverged, match="epoch 2") as info:
        retrain(arch, poisoned, SHORT, checkpoint_path=path)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == good
    assert load_checkpoint(path, expected_kind="retrain")["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # no temporary files left behind


def test_an_absurd_learning_rate_diverges(arch: Architecture, small_data: Dataset) -> None:
    config = RetrainConfig(epochs=1, lr=1e8, warmup_epochs=0, weight_decay=0.0)
    with pytest.raises(RetrainDiverged, match="diverged in epoch 1"):
        retrain(arch, small_data, config)


# --- export and evaluation ---------------------------------------------------------------


def test_an_exported_state_dict_reproduces_the_reported_test_accuracy(
    subject: Subject, small_data: Dataset, reference: RetrainResult, tmp_path: Path
) -> None:
    assert reference.model is not None
    torch.save(reference.model.state_dict(), tmp_path / "weights.pt")
    model = subject.build_model(small_data)
    model.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    test = DeviceImages(small_data.test, "cpu", small_data.mean, small_data.std)
    accuracy, loss = evaluate(model, test, "cpu")
    assert (accuracy, loss) == (reference.test_acc, reference.test_loss)
    assert not model.training and math.isfinite(loss)
    assert reference.to_dict()["test_acc"] == reference.test_acc and "model" not in reference.to_dict()


def test_bf16_autocast_trains_and_evaluates_the_same_way(arch: Architecture, small_data: Dataset) -> None:
    # "auto" turns bf16 on only where it is native; "on" forces the path on any machine.
    config = dataclasses.replace(SHORT, epochs=1, bf16="on")
    result = retrain(arch, small_data, config)
    assert result is not None and result.model is not None and math.isfinite(result.curve[0]["train_loss"])
    test = DeviceImages(small_data.test, "cpu", small_data.mean, small_data.std)
    assert evaluate(result.model, test, bf16="on") == (result.test_acc, result.test_loss)


# --- checkpoint files ----------------------------------------------------------------------


class Opaque:
    """An arbitrary class, which a weights_only load must refuse to construct."""


@pytest.fixture
def real_checkpoint(arch: Architecture, small_data: Dataset, tmp_path: Path) -> Path:
    path = tmp_path / "good.pt"
    retrain(arch, small_data, SHORT, checkpoint_path=path, should_stop=_stop_after(2))
    return path


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "not-a-dict", "wrong-kind", "foreign-format"])
def test_a_damaged_or_foreign_checkpoint_is_a_one_line_error_naming_the_file(
    arch: Architecture, small_data: Dataset, real_checkpoint: Path, tmp_path: Path, damage: str
) -> None:
    path = tmp_path / f"{damage}.pt"
    if damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "truncated":
        data = real_checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not-a-dict":
        torch.save([1, 2, 3], path)
    elif damage == "wrong-kind":
        save_checkpoint({"kind": "hypernet", "step": 3}, path)
    else:
        torch.save({"kind": "retrain", "format": 999}, path)
    with pytest.raises(CheckpointError) as info:
        retrain(arch, small_data, SHORT, checkpoint_path=path)
    assert str(path) in str(info.value)
    _assert_one_line_without_cause(info.value)


def test_a_checkpoint_with_missing_pieces_is_a_checkpoint_error(
    arch: Architecture, small_data: Dataset, real_checkpoint: Path
) -> None:
    state = load_checkpoint(real_checkpoint)
    del state["optimizer"]
    save_checkpoint(state, real_checkpoint)
    with pytest.raises(CheckpointError, match="not a usable retrain checkpoint") as info:
        retrain(arch, small_data, SHORT, checkpoint_path=real_checkpoint)
    assert str(real_checkpoint) in str(info.value)
    _assert_one_line_without_cause(info.value)


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist") as info:
        load_checkpoint(tmp_path / "missing.pt")
    assert "missing.pt" in str(info.value)
    save_checkpoint({"kind": "hypernet"}, tmp_path / "h.pt")
    with pytest.raises(CheckpointError, match="'hypernet' checkpoint, not a 'retrain' one"):
        load_checkpoint(tmp_path / "h.pt", expected_kind="retrain")
    with pytest.raises(CheckpointError, match="needs a string 'kind'"):
        save_checkpoint({"step": 1}, tmp_path / "x.pt")
    # weights_only loading must refuse arbitrary objects instead of running their code.
    torch.save({"kind": "retrain", "format": 1, "thing": Opaque()}, tmp_path / "pickle.pt")
    with pytest.raises(CheckpointError, match="unreadable or not a checkpoint") as info:
        load_checkpoint(tmp_path / "pickle.pt")
    _assert_one_line_without_cause(info.value)


def test_save_is_atomic_and_replaces_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "c.pt"
    save_checkpoint({"kind": "retrain", "step": 1, "w": torch.ones(3)}, path)
    save_checkpoint({"kind": "retrain", "step": 2, "w": torch.zeros(3)}, path)
    state = load_checkpoint(path, expected_kind="retrain")
    assert state["step"] == 2 and torch.equal(state["w"], torch.zeros(3))
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]
    # A state torch cannot save leaves the previous checkpoint untouched and no temporary file.
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        save_checkpoint({"kind": "retrain", "bad": lambda: None}, path)
    assert load_checkpoint(path)["step"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]


def test_generator_states_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    rng.random(5)
    generator = torch.Generator().manual_seed(7)
    torch.rand(5, generator=generator)
    save_checkpoint(
        {"kind": "hypernet", "numpy": numpy_rng_state(rng), "torch": torch_rng_state(generator)},
        tmp_path / "rng.pt",
    )
    state = load_checkpoint(tmp_path / "rng.pt", expected_kind="hypernet")
    restored = numpy_rng_from_state(state["numpy"])
    assert np.array_equal(restored.random(4), rng.random(4))
    other = torch.Generator()
    set_torch_rng_state(other, state["torch"])
    assert torch.equal(torch.rand(4, generator=other), torch.rand(4, generator=generator))
    with pytest.raises(CheckpointError, match="numpy generator state"):
        numpy_rng_from_state("{not json")
    with pytest.raises(CheckpointError, match="torch generator state"):
        set_torch_rng_state(other, torch.zeros(3, dtype=torch.uint8))

