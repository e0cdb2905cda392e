"""Search quality: does the SMASH score predict the accuracy of a network trained normally?

The protocol, on real CIFAR-10 images (../shared/data/cifar10-subset by default, or any
directory with train.npz and test.npz of that layout):

1. train the HyperNet for a fixed budget on the training split;
2. score K random architectures on the validation split (carved from train) with
   generated weights;
3. retrain M of them from scratch, chosen evenly across the score ranking (the best and
   the worst included), for E epochs each, and measure test accuracy (the test split is
   used for nothing else);
4. report Kendall tau and Spearman rho between SMASH accuracy (100 - error) and retrained
   test accuracy (positive: the proxy ranks like the truth), and the retrained accuracy of
   the top-scored architecture against the median of the M.

The truth is noisy too: with `--seeds S` (S >= 2) every architecture is retrained S times
from different initial weights and batch orders, its accuracy is the mean, and the report
adds how well the retrainings agree with each other (`retrain_self_tau`, the mean Kendall
tau between two seeds' accuracies). No proxy can be expected to agree with one retraining
better than another retraining does, so that figure is the ceiling tau is measured against.

Default arguments finish in under 45 minutes on a 2-core CPU.

    python benchmarks/quality.py --out quality.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results import SHARED_DATA, write_result  # noqa: E402

from engine.cost import architecture_cost  # noqa: E402
from engine.data import DataConfig, DatasetError, DeviceImages, load_dataset  # noqa: E402
from engine.hypernet import HyperNetConfig  # noqa: E402
from engine.retrain import RetrainConfig, retrain  # noqa: E402
from engine.sampler import sample  # noqa: E402
from engine.score import ScoreConfig, Scorer  # noqa: E402
from engine.space import get_preset  # noqa: E402
from engine.train import TrainConfig, build_smash, train_hypernet  # noqa: E402

DEFAULT_DATA = SHARED_DATA / "cifar10-subset"


def evenly_ranked(order: list[int], m: int) -> list[int]:
    """m indices spread evenly over a ranking, first and last included."""
    positions = np.unique(np.round(np.linspace(0, len(order) - 1, m)).astype(int))
    return [order[p] for p in positions]


def retrain_self_tau(accuracies: list[list[float]]) -> float | None:
    """Mean Kendall tau between the accuracies of every two seeds; None with one seed."""
    seeds = len(accuracies[0])
    if seeds < 2:
        return None
    taus = [
        stats.kendalltau([row[a] for row in accuracies], [row[b] for row in accuracies]).statistic
        for a in range(seeds)
        for b in range(a + 1, seeds)
    ]
    return float(statistics.fmean(taus))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory with train.npz and test.npz")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--val", type=int, default=2000, help="validation images carved from train")
    parser.add_argument("--hypernet-epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=5e-3, help="HyperNet Adam learning rate")
    parser.add_argument("--archs", type=int, default=100, help="K: architectures scored")
    parser.add_argument("--retrain", type=int, default=10, help="M: architectures retrained")
    parser.add_argument("--epochs", type=int, default=3, help="E: retraining epochs")
    parser.add_argument("--seeds", type=int, default=1, help="S: retrainings per architecture (seeds seed..seed+S-1)")
    parser.add_argument("--bn-batches", type=int, default=5, help="BN recalibration batches per scored architecture")
    parser.add_argument("--z-draws", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if min(args.archs, args.retrain, args.epochs, args.seeds) < 1:
        parser.error("--archs, --retrain, --epochs and --seeds must be at least 1")

    started = time.perf_counter()
    device = torch.device(args.device)
    try:
        data = load_dataset(DataConfig(f"npz:{args.data}", val_size=args.val, split_seed=args.seed))
    except DatasetError as error:  # a wrong --data: one line, not a traceback
        sys.exit(f"error: {error}")
    space = get_preset(args.preset)
    print(f"data: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test; preset {space.name}", flush=True)

    torch.manual_seed(args.seed)
    net = build_smash(space, data.num_classes, data.in_channels, HyperNetConfig(), device)
    config = TrainConfig(epochs=args.hypernet_epochs, lr=args.lr, seed=args.seed, eval_archs=0)
    train_hypernet(
        net, data, config,
        on_progress=lambda p: print(f"  hypernet step {p.step}/{p.total_steps} loss {p.loss:.3f} acc {p.accuracy:.1f}%", flush=True)
        if p.step % 200 == 0 or p.step == p.total_steps else None,
    )
    hypernet_seconds = time.perf_counter() - started

    rng = np.random.default_rng([args.seed, 10])
    archs = [sample(space, rng) for _ in range(args.archs)]
    scorer = Scorer(
        net.eval(),
        DeviceImages(data.val, device, data.mean, data.std),
        ScoreConfig(z_draws=args.z_draws, bn_recalibration_batches=args.bn_batches, seed=args.seed),
        train=DeviceImages(data.train, device, data.mean, data.std),
    )
    scores = scorer.score_many(archs)
    score_seconds = time.perf_counter() - started - hypernet_seconds
    order = sorted(range(len(archs)), key=lambda i: (scores[i].error, scores[i].loss, i))
    print(f"scored {len(archs)} in {score_seconds:.0f}s; errors {scores[order[0]].error:.1f}..{scores[order[-1]].error:.1f}%", flush=True)

    chosen = evenly_ranked(order, args.retrain)
    seeds = [args.seed + s for s in range(args.seeds)]
    rows = []
    for rank, i in enumerate(chosen):
        accuracies = []
        for seed in seeds:
            result = retrain(
                archs[i], data, RetrainConfig(epochs=args.epochs, seed=seed), device=device,
                num_classes=data.num_classes, in_channels=data.in_channels,
            )
            assert result is not None
            accuracies.append(result.test_acc)
        cost = architecture_cost(archs[i], data.num_classes, data.in_channels, data.image_size)
        rows.append(
            {
                "hash": archs[i].hash,
                "score_rank": order.index(i),
                "smash_error": scores[i].error,
                "smash_loss": scores[i].loss,
                "test_acc": statistics.fmean(accuracies),
                "test_accs": accuracies,
                "params": cost.params,
                "flops": cost.flops,
            }
        )
        shown = " / ".join(f"{a:.1f}" for a in accuracies)
        print(f"  retrained {rank + 1}/{len(chosen)}: score rank {order.index(i)} smash err {scores[i].error:.1f}% -> test acc {shown}%", flush=True)

    smash_acc = [100.0 - r["smash_error"] for r in rows]
    test_acc = [r["test_acc"] for r in rows]
    tau = stats.kendalltau(smash_acc, test_acc).statistic
    rho = stats.spearmanr(smash_acc, test_acc).statistic
    loss_tau = stats.kendalltau([-r["smash_loss"] for r in rows], test_acc).statistic
    params_tau = stats.kendalltau([r["params"] for r in rows], test_acc).statistic
    self_tau = retrain_self_tau([r["test_accs"] for r in rows])
    top = min(rows, key=lambda r: r["score_rank"])
    result = {
        "kendall_tau": float(tau),
        "spearman_rho": float(rho),
        "loss_kendall_tau": float(loss_tau),
        "params_kendall_tau": float(params_tau),
        "retrain_self_tau": self_tau,
        "seeds": args.seeds,
        "k": args.archs,
        "m": len(rows),
        "epochs": args.epochs,
        "top_acc": top["test_acc"],
        "median_acc": statistics.median(test_acc),
        "seconds": time.perf_counter() - started,
        "hypernet_seconds": hypernet_seconds,
        "score_seconds": score_seconds,
        "preset": space.name,
        "hypernet_epochs": args.hypernet_epochs,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "retrained": rows,
    }
    print(
        f"Kendall tau {tau:.3f}, Spearman rho {rho:.3f} over {len(rows)} retrained of {args.archs} scored "
        f"({args.epochs} epochs each); top-scored retrains to {top['test_acc']:.1f}% vs median {result['median_acc']:.1f}%; "
        f"SMASH loss gives tau {loss_tau:.3f}, params alone {params_tau:.3f}; {result['seconds'] / 60:.1f} min"
    )
    if self_tau is not None:
        print(f"retrainings agree with each other at Kendall tau {self_tau:.3f} (the ceiling for any proxy)")
    write_result(args.out, result, indent="")


if __name__ == "__main__":
    main()
