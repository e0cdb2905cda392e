"""GPU path: data on the device, bf16 autocast, channels_last, no host sync in per-batch loops.

Skipped without CUDA; `scripts/gpu_check.sh` runs them on a lent GPU. The loops mark
their deliberate host syncs (setup, reports, checkpoints, one copy per scored
architecture) with `engine.device.host_sync_allowed`; everything else runs here under
`torch.cuda.set_sync_debug_mode("error")`, which raises on any other synchronisation.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from engine.data import Dataset, DeviceImages
from engine.hypernet import HyperNetConfig
from engine.network import build_model
from engine.sampler import sample
from engine.score import RaceConfig, ScoreConfig, Scorer, z_generator
from engine.space import PRESETS
from engine.train import TrainConfig, build_smash, train_hypernet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TINY = PRESETS["tiny"]


@contextlib.contextmanager
def no_host_sync() -> Iterator[None]:
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_training_loop_never_waits_for_the_device(small_synthetic: Dataset, tmp_path) -> None:
    torch.manual_seed(0)
    net = build_smash(TINY, 10, 3, HyperNetConfig(), "cuda")
    config = TrainConfig(epochs=2, max_steps=12, batch_size=100, report_every=4, checkpoint_every=5, eval_archs=2, eval_images=100)
    with no_host_sync():
        outcome = train_hypernet(net, small_synthetic, config, checkpoint_path=tmp_path / "c.pt")
    assert outcome.finished and outcome.last_eval is not None
    assert next(net.parameters()).is_cuda


def test_scoring_and_racing_never_wait_for_the_device_per_batch(small_synthetic: Dataset) -> None:
    torch.manual_seed(0)
    net = build_smash(TINY, 10, 3, HyperNetConfig(), "cuda").eval()
    val = DeviceImages(small_synthetic.val, "cuda", small_synthetic.mean, small_synthetic.std)
    train = DeviceImages(small_synthetic.train, "cuda", small_synthetic.mean, small_synthetic.std)
    scorer = Scorer(net, val, ScoreConfig(batch_size=64), train=train)
    archs = [sample(TINY, np.random.default_rng(i)) for i in range(6)]
    with no_host_sync():
        full = scorer.score_many(archs)
        raced = scorer.race(archs, RaceConfig(top_k=2, first_images=25))
    assert len(full) == len(raced) == 6


def test_bf16_scores_track_fp32_scores(small_synthetic: Dataset) -> None:
    torch.manual_seed(0)
    net = build_smash(TINY, 10, 3, HyperNetConfig(), "cuda").eval()
    val = DeviceImages(small_synthetic.val, "cuda", small_synthetic.mean, small_synthetic.std)
    arch = sample(TINY, np.random.default_rng(0))
    fp32 = Scorer(net, val, ScoreConfig(bf16="off", bn_recalibration_batches=0)).score(arch)
    bf16 = Scorer(net, val, ScoreConfig(bf16="on", bn_recalibration_batches=0)).score(arch)
    assert abs(fp32.loss - bf16.loss) < 0.05 * fp32.loss


def test_z_on_the_gpu_is_the_cpu_z_so_gpu_and_cpu_scores_agree(small_synthetic: Dataset) -> None:
    # z is drawn on the CPU from the same CPU generator on every device, then copied: the
    # GPU scorer, the CPU scorer and the export ("as scored" weights) use one z.
    torch.manual_seed(0)
    cpu_net = build_smash(TINY, 10, 3, HyperNetConfig(), "cpu").eval()
    gpu_net = copy.deepcopy(cpu_net).cuda()
    arch = sample(TINY, np.random.default_rng(5))
    with torch.no_grad():
        on_gpu = gpu_net.encode(arch, generator=z_generator(0, arch, 0))[0, 0]
        on_cpu = cpu_net.encode(arch, generator=z_generator(0, arch, 0))[0, 0]
    assert torch.equal(on_gpu.cpu(), on_cpu)
    config = ScoreConfig(bf16="off", bn_recalibration_batches=0)
    gpu = Scorer(gpu_net, DeviceImages(small_synthetic.val, "cuda", small_synthetic.mean, small_synthetic.std), config)
    cpu = Scorer(cpu_net, DeviceImages(small_synthetic.val, "cpu", small_synthetic.mean, small_synthetic.std), config)
    gpu_score, cpu_score = gpu.score(arch), cpu.score(arch)
    assert abs(gpu_score.error - cpu_score.error) <= 1.0  # TF32 may flip a borderline image or two
    assert abs(gpu_score.loss - cpu_score.loss) <= 1e-2 * cpu_score.loss


def test_smash_and_derived_networks_agree_on_the_gpu() -> None:
    torch.manual_seed(0)
    net = build_smash(TINY, 10, 3, HyperNetConfig(), "cuda").eval()
    arch = sample(TINY, np.random.default_rng(3))
    x = torch.randn(8, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        weights = net.generate(arch)
        derived = build_model(arch).cuda().load_from_smash(net, weights).eval()
        assert (net(x, arch, weights) - derived(x)).abs().max() <= 1e-3  # TF32 convolutions
