"""Retraining-step throughput by precision and layout: fp32 / bf16, NCHW / channels-last.

Times real retraining steps (`engine.retrain.retrain_step`, the loop's own step: forward,
cross-entropy, backward, SGD with Nesterov momentum) of one sampled architecture's
derived network on random images, under each precision policy the loop can take:
`--bf16 off|on` crossed with `--channels-last off|on`. The configurations run in
interleaved rounds (each round times every configuration for `--steps` steps), so a
machine whose load drifts (a shared CPU) slows them alike; the figure per configuration
is the median step over all rounds (`--warmup` untimed steps precede the first). Also reports whether every bf16 loss stayed finite
(oneDNN's NaN weight gradients for height-dilated bf16 convs would poison the weights).

    python benchmarks/retrain_throughput.py --preset small --rounds 5 --steps 40
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results import write_result  # noqa: E402

from engine.config import RetrainConfig  # noqa: E402
from engine.cost import architecture_cost  # noqa: E402
from engine.device import autocast_context, bf16_native, memory_format  # noqa: E402
from engine.network import build_model  # noqa: E402
from engine.retrain import reinitialise, retrain_step  # noqa: E402
from engine.sampler import sample  # noqa: E402
from engine.space import get_preset  # noqa: E402

CONFIGS = {  # name -> (bf16, channels_last)
    "fp32-nchw": ("off", False),
    "fp32-channels-last": ("off", True),
    "bf16-nchw": ("on", False),
    "bf16-channels-last": ("on", True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--arch-seed", type=int, default=0, help="seed of the sampled architecture")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over every configuration")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per configuration and round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration before the first round")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names of " + ", ".join(CONFIGS))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cpu")
    space = get_preset(args.preset)
    arch = sample(space, np.random.default_rng(args.arch_seed))
    cost = architecture_cost(arch, 10, 3, args.image_size)
    config = RetrainConfig()
    names = args.configs.split(",")
    runs = {}
    for name in names:
        bf16, channels_last = CONFIGS[name]
        torch.manual_seed(0)
        model = reinitialise(build_model(arch, 10, 3)).to(device, memory_format=memory_format(channels_last)).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
        x = torch.randn(args.batch, 3, args.image_size, args.image_size).contiguous(
            memory_format=memory_format(channels_last)
        )
        y = torch.randint(0, 10, (args.batch,))
        runs[name] = {"model": model, "optimizer": optimizer, "x": x, "y": y, "bf16": bf16, "times": [], "finite": True}

    for round_ in range(args.rounds):
        for name in names:
            run = runs[name]
            warmup = args.warmup if round_ == 0 else 0
            for step in range(warmup + args.steps):
                start = time.perf_counter()
                loss, _ = retrain_step(
                    run["model"], run["optimizer"], run["x"], run["y"], config, autocast_context(device, run["bf16"])
                )
                elapsed = time.perf_counter() - start
                run["finite"] &= math.isfinite(loss.item())
                if step >= warmup:
                    run["times"].append(elapsed)

    result = {
        "preset": args.preset,
        "arch_hash": arch.hash[:12],
        "num_ops": arch.num_ops,
        "params": cost.params,
        "gflop_per_image": cost.flops / 1e9,
        "batch": args.batch,
        "image_size": args.image_size,
        "steps_per_config": args.rounds * args.steps,
        "cpu": platform.processor() or platform.machine(),
        "bf16_native": bf16_native(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "configs": {},
    }
    baseline = statistics.median(runs[names[0]]["times"])
    for name in names:
        median = statistics.median(runs[name]["times"])
        result["configs"][name] = {
            "median_step_ms": 1e3 * median,
            "images_per_s": args.batch / median,
            "speedup_vs_" + names[0]: baseline / median,
            "losses_finite": runs[name]["finite"],
        }
    print(json.dumps(result, indent=2))
    write_result(args.out, result)


if __name__ == "__main__":
    main()
