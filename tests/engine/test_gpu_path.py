"""The GPU path's defects, shown on the CPU: z's source, checkpoints across devices,
out-of-memory and sticky CUDA errors in scoring, device memory, racing's first rung.

`tests/engine/test_gpu.py` runs the loops on a real GPU; these tests pin the policies
that make a GPU run agree with a CPU run and survive a full or broken device.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.checkpoint import (
    CheckpointError,
    cpu_generator_from_state,
    load_checkpoint,
    save_checkpoint,
)
from engine.config import DataConfig, HyperNetConfig, RaceConfig, ScoreConfig, TrainConfig
from engine.data import Dataset, DeviceImages, Split, device_images
from engine.data import device as data_device
from engine.device import OUT_OF_MEMORY, draw_z, sticky_device_error
from engine.errors import DeviceMemoryError
from engine.jobs import smash_initialised_model
from engine.kinds import kind_of
from engine.nb201.space import PRESETS as NB201_PRESETS
from engine.params import ExperimentSpec
from engine.score import MIN_SCORING_BATCH, Scorer
from engine.space import PRESETS
from engine.train import CHECKPOINT_KIND, TrainState, build_smash, train_hypernet

TINY = PRESETS["tiny"]
OutOfMemory = OUT_OF_MEMORY[0]


def _sample(space: Any, seed: int) -> Any:
    return kind_of(space).sample(space, np.random.default_rng(seed))


def _net(space: Any) -> Any:
    torch.manual_seed(0)
    return build_smash(space, 10, 3, HyperNetConfig(), "cpu").eval()


def _checkpoint(net: Any, path: Path) -> Path:
    """A HyperNet checkpoint of `net` as training writes it (what export and scoring load)."""
    save_checkpoint(
        {
            "kind": CHECKPOINT_KIND,
            "space_kind": kind_of(net.space).name,
            "smash": net.checkpoint_meta(),
            "model": net.state_dict(),
        },
        path,
    )
    return path


# --- 1. z comes from a CPU generator on every device ---------------------------------------


def test_z_is_drawn_from_a_cpu_generator_whatever_the_device() -> None:
    cuda_generator = SimpleNamespace(device=torch.device("cuda", 0))  # none can be made here
    with pytest.raises(ValueError, match="CPU generator"):
        draw_z((2, 3), cuda_generator, torch.device("cuda"))  # type: ignore[arg-type]
    # Training on a GPU starts from the same CPU generators as on the CPU.
    on_gpu, on_cpu = TrainState.start(5, torch.device("cuda")), TrainState.start(5, torch.device("cpu"))
    assert on_gpu.z_rng.device.type == "cpu"
    assert torch.equal(on_gpu.z_rng.get_state(), on_cpu.z_rng.get_state())
    # A scorer whose network sits on a GPU draws the same z as one on the CPU: before, it
    # made a CUDA generator (which this machine cannot even create) and other values.
    arch = _sample(TINY, 0)
    scorer = Scorer(_net(TINY), _val(_data()), ScoreConfig(bn_recalibration_batches=0))
    on_cpu_weights = scorer._weights(arch, 0)
    scorer.device = torch.device("cuda")
    assert all(torch.equal(a, b) for a, b in zip(scorer._weights(arch, 0), on_cpu_weights))


@pytest.mark.parametrize("space", [TINY, NB201_PRESETS["nb201-tiny"]], ids=["banks", "nb201"])
def test_the_export_carries_the_z_and_the_score_that_scoring_measured(
    space: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data()
    net = _net(space)
    path = _checkpoint(net, tmp_path / "hypernet.pt")
    spec = ExperimentSpec(space, DataConfig("synthetic"), HyperNetConfig(), 0, 10, 3, 32)
    arch = _sample(space, 1)
    config = ScoreConfig(seed=3, bn_recalibration_batches=2, bn_batch_size=50, bf16="off")

    drawn: list[tuple[str, torch.Tensor]] = []
    module = "engine.network" if kind_of(space).name == "banks" else "engine.nb201.network"

    def recording_draw_z(shape: tuple[int, ...], generator: Any, device: torch.device) -> torch.Tensor:
        assert generator is not None and generator.device.type == "cpu"
        z = draw_z(shape, generator, device)
        drawn.append((device.type, z.clone()))
        return z

    monkeypatch.setattr(f"{module}.draw_z", recording_draw_z)
    scorer = Scorer(net, _val(data), config, train=device_images(data.train, "cpu", data.mean, data.std))
    score = scorer.score(arch)
    exported = smash_initialised_model(spec, arch, path, score=config, data=data)
    assert len(drawn) == 2
    (scored_on, scored_z), (exported_on, exported_z) = drawn
    assert scored_on == exported_on == "cpu" and torch.equal(scored_z, exported_z)
    # The exported network measures on the scoring set what the scorer measured. On CUDA
    # the scorer copies the same CPU-drawn z to the device: the same values by construction.
    wrong = loss = 0.0
    with torch.no_grad():
        for x, y in scorer._slices(0, scorer.num_images):
            logits = exported(x).float()
            wrong += float((logits.argmax(1) != y).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
    assert 100.0 * wrong / scorer.num_images == pytest.approx(score.error, abs=100.0 / scorer.num_images)
    assert loss / scorer.num_images == pytest.approx(score.loss, rel=1e-4)


# --- 2. checkpoints hold CPU generators and resume on any device ---------------------------


def _train(data: Dataset, path: Path, steps: int, stop_after: int | None = None) -> Any:
    net = _net(TINY).train()
    config = TrainConfig(epochs=1, max_steps=steps, batch_size=50, eval_archs=0, checkpoint_every=2, seed=4)
    calls = iter(range(10**6))
    should_stop = None if stop_after is None else (lambda: next(calls) + 1 >= stop_after)
    outcome = train_hypernet(net, data, config, checkpoint_path=path, should_stop=should_stop)
    return net, outcome


def test_a_checkpoint_holds_cpu_generators_that_resume_on_another_device(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    _, outcome = _train(_data(), path, steps=4, stop_after=2)
    assert not outcome.finished
    state = load_checkpoint(path, expected_kind=CHECKPOINT_KIND)
    assert state["z_rng"].numel() == torch.Generator().get_state().numel()  # a CPU generator's state
    # A GPU worker resumes it with CPU generators in the same state (this needed a CUDA
    # generator before, and a CUDA-written state could not resume on the CPU).
    resumed = TrainState.from_checkpoint(state, torch.device("cuda", 1))
    assert resumed.z_rng.device.type == "cpu" and torch.equal(resumed.z_rng.get_state(), state["z_rng"])


def test_an_old_checkpoint_with_a_cuda_generator_state_resumes_on_the_cpu(tmp_path: Path) -> None:
    data = _data()
    path = tmp_path / "c.pt"
    _, outcome = _train(data, path, steps=4, stop_after=2)
    state = load_checkpoint(path, expected_kind=CHECKPOINT_KIND)
    # What the old code wrote on a GPU: a CUDA generator's Philox seed and offset.
    philox = torch.tensor([5, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0], dtype=torch.uint8)
    save_checkpoint({**{k: v for k, v in state.items() if k != "format"}, "z_rng": philox}, path)
    runs = []
    for copy in ("a", "b"):
        target = tmp_path / f"{copy}.pt"
        target.write_bytes(path.read_bytes())
        net, resumed = _train(data, target, steps=4)
        assert resumed.finished and resumed.step == 4
        runs.append(net.state_dict())
    # Reseeded deterministically from the stored bytes: the same run both times.
    assert all(torch.equal(runs[0][key], runs[1][key]) for key in runs[0])
    assert torch.equal(cpu_generator_from_state(philox).get_state(), cpu_generator_from_state(philox).get_state())
    with pytest.raises(CheckpointError, match="invalid torch generator state"):
        cpu_generator_from_state(torch.zeros(7, dtype=torch.uint8))


# --- 3. out of memory while scoring: halve the batch, fail at the floor ----------------------


def _fail_above(net: Any, monkeypatch: pytest.MonkeyPatch, batch: int, after_calls: int = 0) -> list[int]:
    """Makes the net's forward raise an out-of-memory on batches above `batch`
    (after `after_calls` forwards); returns the batch sizes it ran."""
    real = net.forward
    seen: list[int] = []

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if x.shape[0] > batch and len(seen) >= after_calls and not net.training:
            raise OutOfMemory(f"CUDA out of memory. Tried to allocate {x.shape[0]} images")
        seen.append(x.shape[0])
        return real(x, *args, **kwargs)

    monkeypatch.setattr(net, "forward", forward)
    return seen


def test_an_out_of_memory_halves_the_scoring_batch_and_scores_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _data()
    arch = _sample(TINY, 2)
    net = _net(TINY)
    expected = Scorer(net, _val(data), ScoreConfig(batch_size=16, bn_recalibration_batches=0)).score(arch)
    full_batch = Scorer(net, _val(data), ScoreConfig(batch_size=64, bn_recalibration_batches=0)).score(arch)
    halved: list[tuple[int, int]] = []
    scorer = Scorer(
        net, _val(data), ScoreConfig(batch_size=64, bn_recalibration_batches=0),
        on_batch_halved=lambda old, new, reason: halved.append((old, new)),
    )
    seen = _fail_above(net, monkeypatch, 16)
    score = scorer.score(arch)
    assert halved == [(64, 32), (32, 16)] and scorer.batch_size == 16 and max(seen) == 16
    assert score == expected  # the whole architecture scored again at the new size
    assert score.error == pytest.approx(full_batch.error) and score.loss == pytest.approx(full_batch.loss, rel=1e-5)


def test_a_race_that_runs_out_of_memory_keeps_survivors_exactly_as_full_scoring(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = _data()
    archs = [_sample(TINY, 10 + i) for i in range(6)]
    net = _net(TINY)
    scorer = Scorer(net, _val(data), ScoreConfig(batch_size=64, bn_recalibration_batches=0))
    _fail_above(net, monkeypatch, 16, after_calls=12)  # mid-race: after the first rungs
    raced = scorer.race(archs, RaceConfig(top_k=2, min_survivors=3, margin_z=0))
    assert scorer.batch_size == 16
    survivors = [(a, s) for a, s in zip(archs, raced) if s.method == "full"]
    assert len(survivors) >= 3
    for arch, score in survivors:
        assert score == scorer.score(arch)  # bit-identical at the batch size scoring now uses


def test_scoring_fails_in_one_line_when_even_the_smallest_batch_runs_out_of_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = _net(TINY)
    scorer = Scorer(net, _val(_data()), ScoreConfig(batch_size=64, bn_recalibration_batches=0))
    _fail_above(net, monkeypatch, 0)
    with pytest.raises(DeviceMemoryError) as failure:
        scorer.score(_sample(TINY, 3))
    message = str(failure.value)
    assert "\n" not in message and f"even at batch {MIN_SCORING_BATCH}" in message
    assert message.startswith("scoring ran out of CPU memory") and "CUDA out of memory" in message


def test_sticky_cuda_errors_are_told_from_others() -> None:
    assert sticky_device_error(torch.AcceleratorError("CUDA error: an illegal memory access was encountered"))
    assert sticky_device_error(RuntimeError("CUDA error: device-side assert triggered"))
    wrapped = CheckpointError("cannot resume from c.pt: CUDA error: unspecified launch failure")
    try:
        try:
            raise RuntimeError("CUDA error: unspecified launch failure")
        except RuntimeError:
            raise wrapped from None
    except CheckpointError as exc:
        assert sticky_device_error(exc)  # through its context
    assert not sticky_device_error(OutOfMemory("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not sticky_device_error(RuntimeError("CUDA error: out of memory"))
    assert not sticky_device_error(ValueError("batch_size must be at least 1"))


# --- 4. device memory: uint8 once per split and process, one budget per GPU -----------------


def _tensor_bytes(root: Any, skip: tuple[Any, ...] = ()) -> int:
    """Bytes of the distinct tensors reachable from `root`'s attributes (not through `skip`)."""
    seen: set[tuple[str, int]] = set()
    visited: set[int] = set()
    total = 0

    def walk(value: Any) -> None:
        nonlocal total
        if id(value) in visited or any(value is s for s in skip):
            return
        visited.add(id(value))
        if isinstance(value, torch.Tensor):
            key = (str(value.device), value.data_ptr())
            if key not in seen:
                seen.add(key)
                total += value.numel() * value.element_size()
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif hasattr(value, "__dict__") and not isinstance(value, (torch.nn.Module, type)):
            for item in vars(value).values():
                walk(item)

    walk(root)
    return total


def test_the_scorer_holds_the_split_as_uint8_and_no_float_copy() -> None:
    data = _data()
    val = device_images(data.val, "cpu", data.mean, data.std)
    train = device_images(data.train, "cpu", data.mean, data.std)
    scorer = Scorer(_net(TINY), val, ScoreConfig(bn_recalibration_batches=4, bn_batch_size=50), train=train)
    images = data.val.images.numel() + data.train.images.numel()  # uint8: one byte a value
    small = 64 * 1024  # positions, labels, normalisation constants
    assert _tensor_bytes(scorer, skip=(scorer.net,)) <= images + small
    # Before: a float32 copy of the scoring set (4x the split) and of four recalibration batches.
    assert 4 * data.val.images.numel() > small


def test_one_device_images_per_split_serves_training_evaluation_scoring_and_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[int] = []
    real_init = DeviceImages.__init__

    def counting_init(self: DeviceImages, split: Split, *args: Any, **kwargs: Any) -> None:
        made.append(id(split))
        real_init(self, split, *args, **kwargs)

    monkeypatch.setattr(DeviceImages, "__init__", counting_init)
    base = _data()
    data = dataclasses.replace(  # splits of its own: nothing cached by other tests
        base, train=Split(base.train.images, base.train.labels), val=Split(base.val.images, base.val.labels)
    )
    net = _net(TINY).train()
    config = TrainConfig(epochs=1, max_steps=3, batch_size=50, eval_archs=2, eval_images=50, eval_bn_batches=1, seed=1)
    train_hypernet(net, data, config, checkpoint_path=tmp_path / "c.pt")
    scorer = Scorer(
        net.eval(),
        device_images(data.val, "cpu", data.mean, data.std),
        ScoreConfig(bn_recalibration_batches=2, bn_batch_size=50),
        train=device_images(data.train, "cpu", data.mean, data.std),
    )
    scorer.score(_sample(TINY, 4))
    spec = ExperimentSpec(TINY, DataConfig("synthetic"), HyperNetConfig(), 0, 10, 3, 32)
    smash_initialised_model(spec, _sample(TINY, 4), tmp_path / "c.pt", score=ScoreConfig(bn_batch_size=50), data=data)
    assert sorted(made) == sorted({id(data.train), id(data.val)})  # each split once
    assert scorer.val is device_images(data.val, "cpu", data.mean, data.std)
    assert scorer.recalibration.train is device_images(data.train, "cpu", data.mean, data.std)


def test_a_gpu_budget_across_splits_streams_a_split_that_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    gib = 1 << 30
    imagenet32_train = 1_281_167 * 3 * 32 * 32  # 3.9 GB of uint8
    assert data_device.fits_on_device(imagenet32_train, free_bytes=15 * gib, placed_bytes=0)  # a 16 GB card
    assert not data_device.fits_on_device(imagenet32_train, free_bytes=6 * gib, placed_bytes=0)
    # The budget is the GPU's, not the split's: what other splits hold there counts.
    assert not data_device.fits_on_device(imagenet32_train, free_bytes=11 * gib, placed_bytes=4 * gib)
    assert data_device.fits_on_device(gib, free_bytes=11 * gib, placed_bytes=4 * gib)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (6 * gib, 16 * gib))
    assert not data_device._place_on_device(imagenet32_train, torch.device("cuda", 0))
    assert data_device._place_on_device(imagenet32_train, torch.device("cpu"))


# --- 5. racing's first rung does not depend on the batch size --------------------------------


def test_the_first_rung_is_a_32nd_of_the_split_even_with_batches_of_1000() -> None:
    split = Split(torch.zeros(5000, 3, 4, 4, dtype=torch.uint8), torch.arange(5000) % 10)
    scorer = Scorer(_net(TINY), DeviceImages(split, "cpu", (0.5,) * 3, (0.25,) * 3), ScoreConfig(batch_size=1000, bn_recalibration_batches=0))
    ends = scorer.rung_ends()
    assert ends == [156, 312, 624, 1248, 2496, 5000]  # not 1000, 2000, 4000, 5000
    sizes = [y.shape[0] for _, y in scorer._slices(0, 5000)]
    cuts = list(np.cumsum(sizes))
    assert set(ends) <= set(cuts) and max(sizes) == 1000 and sum(sizes) == 5000  # no batch crosses an end
    # A race of candidates that are clearly apart: most drop after the first 156 images.
    measured: list[tuple[int, int]] = []

    def known_sums(arch: int, start: int, stop: int, into: torch.Tensor | None = None) -> torch.Tensor:
        measured.append((start, stop))
        totals = scorer._zero_sums() if into is None else into
        wrong = (torch.arange(start, stop) % 40 < arch).sum()  # candidate k gets k/40 of the images wrong
        totals[0] += torch.stack([wrong, wrong]).float()
        return totals

    scorer._sums = known_sums  # type: ignore[method-assign]
    raced = scorer.race(list(range(40)), RaceConfig(top_k=3))
    assert (0, 156) in measured and not any(stop == 1000 for _, stop in measured)
    assert sum(score.images == 156 for score in raced) > 20


# --- helpers ---------------------------------------------------------------------------------


_DATA: list[Dataset] = []


def _data() -> Dataset:
    """300 training and 120 validation images of the synthetic set (loaded once)."""
    if not _DATA:
        _DATA.append(load(DataConfig("synthetic", synthetic_train=420, synthetic_test=10, val_size=120)))
    return _DATA[0]


def load(config: DataConfig) -> Dataset:
    from engine.data import load_dataset

    return load_dataset(config)


def _val(data: Dataset) -> DeviceImages:
    return device_images(data.val, "cpu", data.mean, data.std)
