"""The options and the setup that the training-step benchmarks share.

`host_overhead.py` and `step_throughput.py` time the same training step at different
sizes: one preset's SMASH network and its Adam, architectures drawn under annealed
limits. Uses only engine APIs that older commits have too, so that both can measure a
base commit's worktree through PYTHONPATH.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.hypernet import HyperNetConfig
from engine.space import SamplingLimits, get_preset
from engine.train import TrainConfig, build_smash, make_optimizer


def add_step_options(parser: argparse.ArgumentParser, *, batch: int, image_size: int, steps: int, warmup: int, progress: float) -> None:
    """The options of a training-step benchmark, with that benchmark's defaults."""
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--image-size", type=int, default=image_size)
    parser.add_argument("--steps", type=int, default=steps, help="timed steps (of each kind)")
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--progress", type=float, default=progress, help="annealing progress of the architectures: 0 start, >=0.5 full space")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--bf16", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")


@dataclass
class StepSetup:
    """What a training-step benchmark runs: the network in train mode, its Adam, the limits."""

    space: object  # the preset's search space
    limits: SamplingLimits  # the architectures' annealed limits at --progress
    device: torch.device
    net: torch.nn.Module  # the SMASH network, seeded with --seed
    optimizer: torch.optim.Optimizer  # as the training loop builds it


def step_setup(args: argparse.Namespace) -> StepSetup:
    """Threads, the preset's SMASH network and its optimizer, from `add_step_options`' values."""
    if args.threads:
        torch.set_num_threads(args.threads)
    space = get_preset(args.preset)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    net = build_smash(space, 10, 3, HyperNetConfig(), device).train()
    return StepSetup(space, SamplingLimits.annealed(space, args.progress), device, net, make_optimizer(net, TrainConfig()))
