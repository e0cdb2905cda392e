"""HyperNet training-step throughput: sample + generate + forward + backward + Adam.

Times real training steps of the SMASH network (`engine.train.train_step`, the loop's
own step) on random images, one fresh architecture per step, and counts the work of
every timed step with `torch.utils.flop_counter` on the meta device (the same
architecture, forward and backward, HyperNet included), so that the achieved rate is
measured, not estimated. Reports median ms per step, images/s, GFLOP per step and per
image, and achieved GFLOP/s. The original code's figures are printed beside them as a
reference from elsewhere (another run, host and day: ../shared/docs/reference-numbers.md),
never divided into a ratio: this machine's speed drifts by up to 1.7x between days, so a
speed-up needs both codes timed in one run, interleaved.

By default architectures are drawn with the limits of the start of training (max
budget 0.5, 3x3 kernels): that is the state a freshly built original network samples
in, which is what its reference figures measured. `--progress 1` samples the full space.

    python benchmarks/step_throughput.py --preset paper --batch 50 --out step.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.device import autocast_context  # noqa: E402
from engine.hypernet import HyperNetConfig  # noqa: E402
from engine.network import SmashNet  # noqa: E402
from engine.sampler import sample  # noqa: E402
from engine.space import SamplingLimits, get_preset  # noqa: E402
from engine.train import TrainConfig, build_smash, make_optimizer, train_step  # noqa: E402

# Not measured by this benchmark: quoted with their source, host and date.
REFERENCE = {
    "what": "the original SMASH code (2017), paper CIFAR defaults, start-of-training limits, batch 50, CPU",
    "source": "../shared/docs/reference-numbers.md",
    "runs": [
        {"date": "2026-11-28", "host": "2-core x86-64 CPU (CI class)", "median_step_ms": 917.0, "images_per_s": 54.6},
        {
            "date": "2026-12-05",
            "host": "2-core x86-64 CPU (CI class, faster host), interleaved with this benchmark",
            "median_step_ms": [534.0, 569.0],
            "smash_median_step_ms_same_run": [365.0, 373.0],
        },
    ],
}


def step_flops(meta_net: SmashNet, arch, batch: int, image_size: int, in_channels: int) -> int:
    """FLOPs of one training step's forward and backward for `arch`, counted on the meta device."""
    x = torch.empty(batch, in_channels, image_size, image_size, device="meta")
    y = torch.zeros(batch, dtype=torch.long, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(meta_net(x, arch), y).backward()
    meta_net.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--progress", type=float, default=0.0, help="annealing progress: 0 start, >=0.5 full space")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--bf16", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    space = get_preset(args.preset)
    limits = SamplingLimits.annealed(space, args.progress)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    net = build_smash(space, 10, 3, HyperNetConfig(), device).train()
    optimizer = make_optimizer(net, TrainConfig())
    with torch.device("meta"):
        meta_net = SmashNet(space, 10, 3, HyperNetConfig())
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,), device=device)
    rng = np.random.default_rng(args.seed)
    z_rng = torch.Generator().manual_seed(args.seed)  # z comes from a CPU generator on every device

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    times, flops = [], []
    for i in range(args.warmup + args.steps):
        synchronize()
        start = time.perf_counter()
        arch = sample(space, rng, limits)  # sampling is part of the step, as in the original's figure
        train_step(net, optimizer, x, y, arch, z_rng, autocast_context(device, args.bf16))
        synchronize()
        elapsed = time.perf_counter() - start
        if i >= args.warmup:
            times.append(elapsed)
            flops.append(step_flops(meta_net, arch, args.batch, args.image_size, 3))

    median_ms = 1e3 * statistics.median(times)
    gflop_step = float(np.mean(flops)) / 1e9
    result = {
        "preset": args.preset,
        "batch": args.batch,
        "steps": args.steps,
        "progress": args.progress,
        "limits": {"max_budget": limits.max_budget, "max_kernel": limits.max_kernel},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "median_step_ms": median_ms,
        "images_per_s": args.batch / (median_ms / 1e3),
        "gflop_per_step": gflop_step,
        "gflop_per_image": gflop_step / args.batch,
        "gflop_per_s": float(np.sum(flops)) / 1e9 / float(np.sum(times)),
        "reference": REFERENCE,
    }
    print(f"{args.preset} preset, batch {args.batch}, {args.steps} steps on {result['device']} ({result['threads']} threads)")
    print(f"  sampling limits: max budget {limits.max_budget:.2f}, max kernel {limits.max_kernel}")
    for key, label in [
        ("median_step_ms", "median ms / step"),
        ("images_per_s", "images / s"),
        ("gflop_per_image", "GFLOP / image (f+b)"),
        ("gflop_per_s", "achieved GFLOP / s"),
    ]:
        print(f"  {label:24}{result[key]:12.2f}")
    print(f"  GFLOP / step (f+b, HyperNet included): {gflop_step:.1f}")
    print(f"  reference, not measured here ({REFERENCE['source']}): {REFERENCE['what']}:")
    for run in REFERENCE["runs"]:
        print(f"    {run['date']}, {run['host']}: {run['median_step_ms']} ms / step")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"  wrote {args.out}")


if __name__ == "__main__":
    main()
