"""Proxy quality against a published truth: SMASH on NAS-Bench-201 cells, no retraining.

The protocol, on real CIFAR-10 images (../shared/data/cifar10-subset by default, or any
directory with train.npz and test.npz of that layout) and the NAS-Bench-201 table
(../shared/data/nas-bench-201/nats-tss-200ep.csv: every cell's 200-epoch CIFAR-10
test accuracy, trained by the benchmark's authors, not here):

1. train a SMASH HyperNet for the nb201 space on the training split;
2. train the weight-sharing baseline (each op's weights shared by every cell that
   uses it, one random cell per step) with the same steps, data, batch and seed;
3. draw K cells without replacement from the benchmark's 6,466 distinct ones;
4. score them with both networks on the validation split (carved from train), and
   count each one's parameters and FLOPs;
5. report, against the table's CIFAR-10 accuracy of each cell's class: Kendall tau and
   Spearman rho of SMASH's ranking (by error), of the baseline's, of the parameter
   count and of the FLOPs; the table accuracy of each ranker's top-1 pick and the mean
   of its top-10; the best and the median accuracy among the K.

Anchors over all 15,625 cells (../shared/docs/reference-numbers.md): a GPU-trained
one-shot supernet tau 0.484 (rho 0.676, top-1 91.40 %); the parameter count alone
about 0.58; the best cell 94.37 %, the median 90.75 %.

Default arguments finish in at most 45 minutes on a 2-core CPU.

    python benchmarks/nb201_quality.py --out nb201.json
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results import SHARED_DATA, write_result  # noqa: E402

from engine.config import HYPERNET_SIZES, ScoreConfig, TrainConfig  # noqa: E402
from engine.data import DataConfig, DatasetError, DeviceImages, load_dataset  # noqa: E402
from engine.errors import ConfigError  # noqa: E402
from engine.kinds import SmashModule, kind_of  # noqa: E402
from engine.nb201.cell import Cell, canonical_representatives  # noqa: E402
from engine.score import Scorer  # noqa: E402
from engine.spaces import get_preset  # noqa: E402
from engine.train import build_smash, train_hypernet  # noqa: E402
from engine.truth import TruthConfig, load_truth  # noqa: E402

DEFAULT_DATA = SHARED_DATA / "cifar10-subset"
DEFAULT_TRUTH = SHARED_DATA / "nas-bench-201" / "nats-tss-200ep.csv"


def rank_quality(truth: list[float], higher_is_better: list[float]) -> dict[str, float]:
    """Kendall tau and Spearman rho of a ranker's values against the truth (positive: agrees)."""
    return {
        "tau": float(stats.kendalltau(higher_is_better, truth).statistic),
        "rho": float(stats.spearmanr(higher_is_better, truth).statistic),
    }


def picks(truth: list[float], higher_is_better: list[float]) -> dict[str, float]:
    """The truth of a ranker's top-1 pick and the mean truth of its top-10."""
    order = np.argsort(-np.asarray(higher_is_better), kind="stable")
    return {"top1": float(truth[order[0]]), "top10": float(np.mean([truth[i] for i in order[:10]]))}


def train(weights: str, space: Any, data: Any, config: TrainConfig, hypernet: str, seed: int, device: str) -> tuple[SmashModule, float]:
    """A SMASH module (`weights`: hypernet or shared) trained on the data; its seconds."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    net = build_smash(space, data.num_classes, data.in_channels, HYPERNET_SIZES[hypernet], device, weights)

    def progress(p: Any) -> None:
        if p.step % 100 == 0 or p.step == p.total_steps:
            print(f"  {weights}: step {p.step}/{p.total_steps} loss {p.loss:.3f} acc {p.accuracy:.1f}%", flush=True)

    train_hypernet(net, data, config, on_progress=progress)
    return net.eval(), time.perf_counter() - started


def score_all(net: SmashModule, data: Any, cells: list[Cell], config: ScoreConfig, device: str) -> tuple[list[float], float]:
    """Validation errors of every cell with the module's weights; the seconds it took."""
    started = time.perf_counter()
    scorer = Scorer(
        net,
        DeviceImages(data.val, device, data.mean, data.std),
        config,
        train=DeviceImages(data.train, device, data.mean, data.std),
    )
    errors = []
    for index, cell in enumerate(cells):
        errors.append(scorer.score(cell).error)
        if (index + 1) % 500 == 0 or (len(cells) < 1000 and (index + 1) % 50 == 0):
            print(f"  scored {index + 1}/{len(cells)}", flush=True)
    return errors, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory with train.npz and test.npz")
    parser.add_argument("--truth", type=Path, default=DEFAULT_TRUTH, help="the benchmark table (CSV)")
    parser.add_argument("--preset", default="nb201-tiny", help="an nb201 preset (the network's size)")
    parser.add_argument("--hypernet", default="standard", help="HyperNet capacity: standard or compact")
    parser.add_argument("--val", type=int, default=1000, help="validation images carved from train")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs of both networks")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate of both networks")
    parser.add_argument("-k", "--archs", type=int, default=200, help="K cells scored (6466: all distinct cells)")
    parser.add_argument("--score-images", type=int, default=500, help="validation images per score")
    parser.add_argument("--bn-batches", type=int, default=2, help="BN recalibration batches per score")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where both networks train and score")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    classes = canonical_representatives()
    if not 10 <= args.archs <= len(classes):
        parser.error(f"--archs must be between 10 and {len(classes)}")

    started = time.perf_counter()
    try:
        space = get_preset(args.preset)
        if space.kind != "nb201":
            parser.error(f"--preset must be an nb201 preset, got {args.preset}")
        table = load_truth(TruthConfig(str(args.truth), "cifar10"))
        data = load_dataset(DataConfig(f"npz:{args.data}", val_size=args.val, split_seed=args.seed))
    except (ConfigError, DatasetError) as error:  # a wrong --data or --truth: one line
        sys.exit(f"error: {error}")
    print(f"data: {len(data.train)} train / {len(data.val)} val; preset {space.name}; truth {table.cells} rows", flush=True)

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, seed=args.seed, eval_archs=0)
    smash, smash_train_s = train("hypernet", space, data, config, args.hypernet, args.seed, args.device)
    baseline, baseline_train_s = train("shared", space, data, config, args.hypernet, args.seed, args.device)

    rng = np.random.default_rng([args.seed, 201])
    cells = [classes[int(i)] for i in rng.choice(len(classes), size=args.archs, replace=False)]
    truth = [table.accuracy(cell) for cell in cells]
    if any(value is None for value in truth):
        sys.exit(f"error: the table lacks {sum(v is None for v in truth)} of the drawn cells")
    truth_values = [float(v) for v in truth if v is not None]

    score = ScoreConfig(images=args.score_images, bn_recalibration_batches=args.bn_batches, seed=args.seed)
    smash_errors, smash_score_s = score_all(smash, data, cells, score, args.device)
    baseline_errors, baseline_score_s = score_all(baseline, data, cells, score, args.device)
    kind = kind_of(space)
    costs = [kind.cost(cell, data.num_classes, data.in_channels, data.image_size, space=space) for cell in cells]

    rankers = {
        "smash": [-e for e in smash_errors],
        "baseline": [-e for e in baseline_errors],
        "params": [float(c.params) for c in costs],
        "flops": [float(c.flops) for c in costs],
    }
    quality = {name: {**rank_quality(truth_values, values), **picks(truth_values, values)} for name, values in rankers.items()}
    result = {
        "kendall_tau": quality["smash"]["tau"],
        "spearman_rho": quality["smash"]["rho"],
        "baseline_tau": quality["baseline"]["tau"],
        "baseline_rho": quality["baseline"]["rho"],
        "params_tau": quality["params"]["tau"],
        "params_rho": quality["params"]["rho"],
        "flops_tau": quality["flops"]["tau"],
        "flops_rho": quality["flops"]["rho"],
        "top1_acc": quality["smash"]["top1"],
        "top10_mean_acc": quality["smash"]["top10"],
        "baseline_top1_acc": quality["baseline"]["top1"],
        "baseline_top10_mean_acc": quality["baseline"]["top10"],
        "params_top10_mean_acc": quality["params"]["top10"],
        "best_acc": max(truth_values),
        "median_acc": statistics.median(truth_values),
        "k": args.archs,
        "seconds": time.perf_counter() - started,
        "smash_train_seconds": smash_train_s,
        "baseline_train_seconds": baseline_train_s,
        "smash_score_seconds": smash_score_s,
        "baseline_score_seconds": baseline_score_s,
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "train_config": dataclasses.asdict(config),
        "machine": {"cpu": platform.processor() or platform.machine(), "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__},
        "cells": [cell.to_string() for cell in cells],
        "truth": truth_values,
        "smash_errors": smash_errors,
        "baseline_errors": baseline_errors,
    }
    print(f"K = {args.archs} cells of {len(classes)}; best {result['best_acc']:.2f} %, median {result['median_acc']:.2f} %")
    print(f"  {'ranker':10}{'tau':>8}{'rho':>8}{'top-1 %':>10}{'top-10 %':>10}")
    for name, row in quality.items():
        print(f"  {name:10}{row['tau']:8.3f}{row['rho']:8.3f}{row['top1']:10.2f}{row['top10']:10.2f}")
    print(f"  {result['seconds'] / 60:.1f} minutes (training {smash_train_s:.0f} + {baseline_train_s:.0f} s, "
          f"scoring {smash_score_s:.0f} + {baseline_score_s:.0f} s)")
    print("  anchors over all 15,625 cells (reference-numbers.md): one-shot supernet tau 0.484, params alone about 0.58")
    write_result(args.out, result)


if __name__ == "__main__":
    main()
