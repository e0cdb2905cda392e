"""HyperNet training: resume exactness, divergence, checkpoints, progress reports."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.checkpoint import CheckpointError, load_checkpoint
from engine.data import Dataset
from engine.events import TrainEval, TrainProgress
from engine.hypernet import HyperNetConfig
from engine.space import PRESETS
from engine.train import TrainConfig, TrainingDiverged, build_smash, load_smash, train_hypernet

TINY = PRESETS["tiny"]
SMALL_HYPERNET = HyperNetConfig(growth=(6, 6), layers=(2, 2))


def _net():
    torch.manual_seed(0)
    return build_smash(TINY, 10, 3, SMALL_HYPERNET, "cpu")


CONFIG = TrainConfig(
    epochs=2, batch_size=100, report_every=2, checkpoint_every=3, eval_archs=2, eval_images=100, seed=5
)


def test_interrupted_and_resumed_run_ends_exactly_like_an_uninterrupted_one(small_synthetic: Dataset, tmp_path) -> None:
    whole = _net()
    done = train_hypernet(whole, small_synthetic, CONFIG, checkpoint_path=tmp_path / "whole.pt")
    assert done.finished and done.step == done.total_steps == 16  # 8 batches of 100 per epoch, 2 epochs

    calls = {"n": 0}

    def stop_after_five() -> bool:
        calls["n"] += 1
        return calls["n"] == 5  # mid-epoch, between checkpoints

    path = tmp_path / "parts.pt"
    first = train_hypernet(_net(), small_synthetic, CONFIG, checkpoint_path=path, should_stop=stop_after_five)
    assert not first.finished and first.step == 5
    resumed_net = _net()
    rest = train_hypernet(resumed_net, small_synthetic, CONFIG, checkpoint_path=path)
    assert rest.finished and rest.step == 16
    for (name, a), b in zip(whole.state_dict().items(), resumed_net.state_dict().values()):
        assert torch.equal(a, b), name
    assert load_checkpoint(path)["history"] == load_checkpoint(tmp_path / "whole.pt")["history"]


def test_progress_eval_and_checkpoint_reports(small_synthetic: Dataset, tmp_path) -> None:
    progress: list[TrainProgress] = []
    evals: list[TrainEval] = []
    saved = []
    config = dataclasses.replace(CONFIG, epochs=1, max_steps=6)
    train_hypernet(
        _net(), small_synthetic, config, checkpoint_path=tmp_path / "c.pt",
        on_progress=progress.append, on_eval=evals.append, on_checkpoint=saved.append,
    )
    assert [p.step for p in progress] == [2, 4, 6]
    assert all(p.total_steps == 6 and p.images_per_s > 0 and p.loss > 0 for p in progress)
    assert progress[-1].eta_s == 0 and progress[0].lr < config.lr  # cosine from the first step on
    assert len(evals) == 1 and evals[0].architectures == 2 and evals[0].images == 100
    assert [s.step for s in saved] == [3, 6]
    net, state = load_smash(tmp_path / "c.pt")
    assert state["step"] == 6 and net.space == TINY and not net.training


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(small_synthetic: Dataset, tmp_path) -> None:
    path = tmp_path / "c.pt"
    train_hypernet(_net(), small_synthetic, dataclasses.replace(CONFIG, max_steps=3), checkpoint_path=path)
    good = load_checkpoint(path)
    assert good["step"] == 3
    net = _net()
    with torch.no_grad():
        net.classifier.weight.fill_(float("nan"))  # poisoned from here on
    net.load_state_dict = lambda state: None  # keep the poison when "resuming"
    with pytest.raises(TrainingDiverged, match="NaN or infinite.*last good checkpoint"):
        train_hypernet(net, small_synthetic, dataclasses.replace(CONFIG, max_steps=9), checkpoint_path=path)
    assert load_checkpoint(path)["step"] == 3
    assert torch.equal(load_checkpoint(path)["model"]["classifier.weight"], good["model"]["classifier.weight"])


def test_resuming_from_a_foreign_or_corrupt_file_is_a_clear_error(small_synthetic: Dataset, tmp_path) -> None:
    corrupt = tmp_path / "c.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="c.pt"):
        train_hypernet(_net(), small_synthetic, CONFIG, checkpoint_path=corrupt)
    assert corrupt.read_bytes() == b"not a checkpoint"


def test_bad_train_config() -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="bf16"):
        TrainConfig(bf16="maybe")


def test_a_stop_right_after_a_report_writes_no_empty_report(small_synthetic: Dataset, tmp_path) -> None:
    # SIGTERM used to land here as a report of 0 steps: loss 0.0, accuracy 0.0, 0 images/s,
    # a false point on the curve that stayed after resume.
    progress: list[TrainProgress] = []
    calls = {"n": 0}

    def stop_after_the_second_step() -> bool:
        calls["n"] += 1
        return calls["n"] == 2  # polled after step 2, which was just reported (report_every=2)

    outcome = train_hypernet(
        _net(), small_synthetic, CONFIG, checkpoint_path=tmp_path / "c.pt",
        on_progress=progress.append, should_stop=stop_after_the_second_step,
    )  # fmt: skip
    assert not outcome.finished and outcome.step == 2
    assert [p.step for p in progress] == [2]
    assert all(p.loss > 0 and p.images_per_s > 0 for p in progress)
