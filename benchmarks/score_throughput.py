"""Scoring throughput: architectures scored per minute on a 5,000-image validation split.

Scores the same K random architectures twice with one SMASH network, once with full
scoring (every architecture on every validation image) and once with racing
(successive halving over validation images) in two ways: one race of all K, and racing
as a search runs it (batches of `--search-batch`, each racing against the best
survivors of the batches before it, on the same images), and reports architectures per minute,
achieved GFLOP/s (counted with torch.utils.flop_counter: every architecture's derived
network forward per image times the images it was scored on, plus the HyperNet), and
whether racing returned the same top-k as full scoring.

The network is trained briefly first (`--train-steps`) so that architectures are told
apart, or loaded from a HyperNet checkpoint (`--checkpoint`). Architectures are drawn
with the limits of the start of training by default (`--progress 0`: max budget 0.5,
3x3 kernels), the state in which the original code's reference figure (6 s per 1,000
images, about 2 architectures per minute on 5,000) was measured.

K defaults to 500, the number of random architectures the original scored (the
method doc): racing's saving depends on K, since the top 10 of 500 stand further
out than the top 10 of 100. On a 2-core CPU full scoring of 500 takes about 100
minutes and the whole default run about 2.5 hours; `--archs 100 --search-batch 0`
takes about 35 minutes.

    python benchmarks/score_throughput.py --out score.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results import SHARED_DATA, write_result  # noqa: E402

from engine.cost import architecture_cost  # noqa: E402
from engine.data import DataConfig, DatasetError, DeviceImages, load_dataset  # noqa: E402
from engine.hypernet import HyperNetConfig  # noqa: E402
from engine.network import SmashNet  # noqa: E402
from engine.sampler import sample  # noqa: E402
from engine.score import RaceConfig, Racer, ScoreConfig, Scorer, rank_key  # noqa: E402
from engine.space import SamplingLimits, get_preset  # noqa: E402
from engine.train import TrainConfig, build_smash, load_smash, train_hypernet  # noqa: E402

# Not measured by this benchmark: quoted with its source, host and date, never divided into a ratio.
REFERENCE = {
    "what": "the original SMASH code, paper defaults: 6.0 s per architecture on 1,000 validation images (about 2 archs/min on 5,000)",
    "source": "../shared/docs/reference-numbers.md",
    "date": "2026-11-28",
    "host": "2-core x86-64 CPU (CI class)",
}
DEFAULT_DATA = SHARED_DATA / "cifar10-subset"


def hypernet_flops(space, arch) -> int:
    with torch.device("meta"):
        net = SmashNet(space)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net.generate(arch)
    return int(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory with train.npz and test.npz")
    parser.add_argument("--val", type=int, default=5000, help="validation images carved from train")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--archs", type=int, default=500, help="K: architectures to score (500: the original's count)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--search-batch", type=int, default=64, help="candidates per race in the search mode (smash search --racing: 64); 0 skips it")
    parser.add_argument("--progress", type=float, default=0.0, help="annealing progress the architectures are drawn at")
    parser.add_argument("--train-steps", type=int, default=200, help="HyperNet steps before scoring")
    parser.add_argument("--checkpoint", type=Path, default=None, help="score with this HyperNet checkpoint instead")
    parser.add_argument("--batch", type=int, default=None, help="images per scoring forward pass (default: 200 on a CPU, 1000 on CUDA)")
    parser.add_argument("--bf16", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--bn-batches", type=int, default=0, help="BN recalibration batches per architecture")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    device = torch.device(args.device)
    try:
        data = load_dataset(DataConfig(f"npz:{args.data}", val_size=args.val, split_seed=args.seed))
    except DatasetError as error:  # a wrong --data: one line, not a traceback
        sys.exit(f"error: {error}")
    space = get_preset(args.preset)
    started = time.perf_counter()
    if args.checkpoint is not None:
        net, _ = load_smash(args.checkpoint, device)
        space = net.space
    else:
        torch.manual_seed(args.seed)
        net = build_smash(space, data.num_classes, data.in_channels, HyperNetConfig(), device)
        train_hypernet(net, data, TrainConfig(epochs=1000, max_steps=args.train_steps, seed=args.seed, eval_archs=0))
    train_seconds = time.perf_counter() - started
    net.eval()

    limits = SamplingLimits.annealed(space, args.progress)
    rng = np.random.default_rng(args.seed)
    archs = [sample(space, rng, limits) for _ in range(args.archs)]
    per_image = [architecture_cost(a, data.num_classes, data.in_channels, data.image_size).flops for a in archs]
    generate = [hypernet_flops(space, a) for a in archs]

    val = DeviceImages(data.val, device, data.mean, data.std)
    train = DeviceImages(data.train, device, data.mean, data.std)
    config = ScoreConfig(batch_size=args.batch, bf16=args.bf16, bn_recalibration_batches=args.bn_batches, seed=args.seed)
    scorer = Scorer(net, val, config, train=train)

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - start

    print(f"HyperNet ready in {train_seconds:.0f}s; scoring {args.archs} architectures on {scorer.num_images} images", flush=True)
    full, full_s = timed(lambda: scorer.score_many(archs))
    print(f"  full scoring took {full_s:.0f}s", flush=True)
    raced, race_s = timed(lambda: scorer.race(archs, RaceConfig(top_k=args.top_k)))
    print(f"  racing took {race_s:.0f}s", flush=True)

    def search_race() -> list:
        racer = Racer(scorer, RaceConfig(top_k=args.top_k))
        return [s for first in range(0, len(archs), args.search_batch) for s in racer(archs[first : first + args.search_batch])]

    searched, search_s = timed(search_race) if args.search_batch > 0 else (None, None)
    if searched is not None:
        print(f"  racing in batches of {args.search_batch} took {search_s:.0f}s", flush=True)

    def flops(scores) -> float:
        draws = config.z_draws
        return float(sum(p * s.images * draws + g * draws for p, s, g in zip(per_image, scores, generate)))

    def top(scores) -> list[int]:
        # Racing's ranking: survivors (scored on every image) first, by error, then loss.
        return sorted(range(len(scores)), key=lambda i: (*rank_key(scores[i]), i))[: args.top_k]

    result = {
        "preset": space.name,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "k": args.archs,
        "val_images": scorer.num_images,
        "progress": args.progress,
        "bf16": args.bf16,
        "train_seconds": train_seconds,
        "mean_gflop_per_image": float(np.mean(per_image)) / 1e9,
        "full_seconds": full_s,
        "racing_seconds": race_s,
        "full_archs_per_min": 60 * args.archs / full_s,
        "racing_archs_per_min": 60 * args.archs / race_s,
        "gflop_per_s": flops(full) / 1e9 / full_s,
        "racing_gflop_per_s": flops(raced) / 1e9 / race_s,
        "racing_images_fraction": sum(s.images for s in raced) / sum(s.images for s in full),
        "top10_equal": top(raced) == top(full),  # the same architectures in the same order
        "top10_overlap": len(set(top(raced)) & set(top(full))),
        "error_range": [min(s.error for s in full), max(s.error for s in full)],
        "reference": REFERENCE,
        # Per architecture, in sampling order: what each mode measured.
        "full_errors": [s.error for s in full],
        "racing_errors": [s.error for s in raced],
        "racing_images": [s.images for s in raced],
    }
    if searched is not None:
        result.update(
            {
                "search_batch": args.search_batch,
                "search_racing_seconds": search_s,
                "search_racing_archs_per_min": 60 * args.archs / search_s,
                "search_racing_images_fraction": sum(s.images for s in searched) / sum(s.images for s in full),
                "search_top10_equal": top(searched) == top(full),
                "search_top10_overlap": len(set(top(searched)) & set(top(full))),
                "search_racing_images": [s.images for s in searched],
            }
        )
    result["racing_speedup"] = result["racing_archs_per_min"] / result["full_archs_per_min"]
    print(f"{space.name} preset, {args.archs} architectures, {scorer.num_images} validation images, {result['device']}")
    print(f"  mean forward GFLOP per image: {result['mean_gflop_per_image']:.3f}; errors {result['error_range'][0]:.1f}..{result['error_range'][1]:.1f}%")
    print(f"  full:   {result['full_archs_per_min']:7.2f} archs/min  {result['gflop_per_s']:7.1f} GFLOP/s")
    print(f"  racing: {result['racing_archs_per_min']:7.2f} archs/min  {result['racing_gflop_per_s']:7.1f} GFLOP/s  ({result['racing_speedup']:.2f}x full, {100 * result['racing_images_fraction']:.0f}% of the images)")
    print(f"  same top-{args.top_k}: {result['top10_equal']} ({result['top10_overlap']} of {args.top_k} in common)")
    print(f"  reference, not measured here ({REFERENCE['source']}, {REFERENCE['date']}, {REFERENCE['host']}): {REFERENCE['what']}")
    if searched is not None:
        search_speedup = result["search_racing_archs_per_min"] / result["full_archs_per_min"]
        print(f"  racing in batches of {args.search_batch}: {result['search_racing_archs_per_min']:7.2f} archs/min  ({search_speedup:.2f}x full, {100 * result['search_racing_images_fraction']:.0f}% of the images)")
        print(f"  same top-{args.top_k}: {result['search_top10_equal']} ({result['search_top10_overlap']} of {args.top_k} in common)")
    write_result(args.out, result)


if __name__ == "__main__":
    main()
