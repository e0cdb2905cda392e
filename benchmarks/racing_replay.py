"""Racing replayed offline: how many images each racing scheme spends, and how often it is exact.

A racing run on the CPU takes minutes and shows one image order. This benchmark
records, once, whether every architecture of the score_throughput fixture gets each
validation image right (and its loss), then replays the engine's own racing code
(`Scorer.race`, `Racer`) on those records for many image orders in seconds. For the
fixture's own order the replay spends exactly the images a live run spends.

    python benchmarks/racing_replay.py record --out per_image.npz      # ~25 min on 2 cores
    python benchmarks/racing_replay.py replay per_image.npz --out replay.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data import DataConfig, DeviceImages, load_dataset  # noqa: E402
from engine.device import autocast_context  # noqa: E402
from engine.hypernet import HyperNetConfig  # noqa: E402
from engine.sampler import sample  # noqa: E402
from engine.score import RaceConfig, Racer, Score, ScoreConfig, Scorer, rank_key  # noqa: E402
from engine.space import SamplingLimits, get_preset  # noqa: E402
from engine.train import TrainConfig, build_smash, train_hypernet  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset"


def record(args: argparse.Namespace) -> None:
    """Per-image correctness and loss of K architectures, as score_throughput draws them.

    The loop is Scorer._sums's (same weights, batches and autocast) keeping every
    image's result instead of the device-side sums the engine needs.
    """
    data = load_dataset(DataConfig(f"npz:{args.data}", val_size=args.val, split_seed=args.seed))
    space = get_preset(args.preset)
    torch.manual_seed(args.seed)
    net = build_smash(space, data.num_classes, data.in_channels, HyperNetConfig(), "cpu")
    train_hypernet(net, data, TrainConfig(epochs=1000, max_steps=args.train_steps, seed=args.seed, eval_archs=0))
    net.eval()
    rng = np.random.default_rng(args.seed)
    archs = [sample(space, rng, SamplingLimits.annealed(space, args.progress)) for _ in range(args.archs)]
    scorer = Scorer(net, DeviceImages(data.val, "cpu", data.mean, data.std), ScoreConfig(bn_recalibration_batches=0, seed=args.seed))
    wrong = np.zeros((len(archs), scorer.num_images), bool)
    loss = np.zeros((len(archs), scorer.num_images), np.float32)
    started = time.perf_counter()
    for i, arch in enumerate(archs):
        with torch.no_grad(), autocast_context(scorer.device, "auto"):
            weights = scorer._weights(arch, 0)
            for first in range(0, scorer.num_images, scorer.batch_size):
                x, y = scorer.images[first : first + scorer.batch_size], scorer.labels[first : first + scorer.batch_size]
                logits = net(x, arch, weights).float()
                wrong[i, first : first + len(y)] = (logits.argmax(1) != y).numpy()
                loss[i, first : first + len(y)] = F.cross_entropy(logits, y, reduction="none").numpy()
        print(f"  {i + 1}/{len(archs)} recorded ({time.perf_counter() - started:.0f}s)", flush=True)
    np.savez(args.out, wrong=wrong, loss=loss, batch_size=scorer.batch_size)
    print(f"wrote {args.out}")


class ReplayScorer(Scorer):
    """A Scorer whose measurements are read from the records (architecture i is "i")."""

    def __init__(self, wrong: torch.Tensor, loss: torch.Tensor, batch_size: int) -> None:  # no network
        self.config = ScoreConfig()
        self.batch_size = batch_size
        self.device = torch.device("cpu")
        self.num_images = wrong.shape[1]
        self._bn_cache = None
        self._weight_cache = None
        self.wrong, self.loss = wrong, loss
        self.measured = 0

    def _sums(self, arch, start: int, stop: int) -> torch.Tensor:  # type: ignore[override]
        self.measured += stop - start
        i = int(arch)
        return torch.stack([self.wrong[i, start:stop].sum(), self.loss[i, start:stop].sum()]).float()


def replay(args: argparse.Namespace) -> None:
    records = np.load(args.records)
    wrong = torch.from_numpy(records["wrong"]).double()
    loss = torch.from_numpy(records["loss"]).double()
    batch_size = int(records["batch_size"]) if "batch_size" in records else 200
    k, n = wrong.shape
    archs = [str(i) for i in range(k)]
    race = RaceConfig(top_k=args.top_k)

    def top(scores: list[Score]) -> list[int]:
        return sorted(range(k), key=lambda i: (*rank_key(scores[i]), i))[: args.top_k]

    schemes = {"one race": None, **{f"search, batches of {b}": b for b in args.batches}}
    schemes.update({f"batches of {b} without leaders": -b for b in args.batches})
    result: dict[str, object] = {"k": k, "images": n, "orders": args.orders, "top_k": args.top_k}
    for name, batch in schemes.items():
        fractions, exact = [], 0
        for order_seed in range(args.orders):
            # Order 0 is the fixture's own scoring order; the rest are fresh shuffles.
            order = torch.arange(n) if order_seed == 0 else torch.randperm(n, generator=torch.Generator().manual_seed(order_seed))
            scorer = ReplayScorer(wrong[:, order], loss[:, order], batch_size)
            full = [scorer._to_score(torch.stack([wrong[i].sum(), loss[i].sum()]).float(), n, "full") for i in range(k)]
            scorer.measured = 0
            if batch is None:
                scores = scorer.race(archs, race)
            elif batch > 0:
                racer = Racer(scorer, race)
                scores = [s for first in range(0, k, batch) for s in racer(archs[first : first + batch])]
            else:
                scores = [s for first in range(0, k, -batch) for s in scorer.race(archs[first : first - batch], race)]
            fractions.append(scorer.measured / (k * n))
            exact += set(top(scores)) == set(top(full))
        result[name] = {
            "images_fraction_fixture_order": fractions[0],
            "images_fraction_mean": float(np.mean(fractions)),
            "images_fraction_max": float(np.max(fractions)),
            "top_k_exact": exact / args.orders,
        }
        print(f"  {name:32s} images {100 * fractions[0]:5.1f}% (fixture order), mean {100 * np.mean(fractions):5.1f}%, max {100 * np.max(fractions):5.1f}%; top-{args.top_k} exact in {exact}/{args.orders} orders")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="score every architecture on every image once (slow)")
    rec.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory with train.npz and test.npz")
    rec.add_argument("--val", type=int, default=5000)
    rec.add_argument("--preset", default="paper")
    rec.add_argument("--archs", type=int, default=100)
    rec.add_argument("--progress", type=float, default=0.0)
    rec.add_argument("--train-steps", type=int, default=200)
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--out", type=Path, required=True)
    rep = commands.add_parser("replay", help="replay racing schemes on the records (seconds)")
    rep.add_argument("records", type=Path)
    rep.add_argument("--top-k", type=int, default=10)
    rep.add_argument("--orders", type=int, default=20, help="image orders replayed (the first is the fixture's)")
    rep.add_argument("--batches", type=int, nargs="*", default=[64, 16])
    rep.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "replay" and not args.records.is_file():
        parser.error(f"no records at {args.records} (write them with: racing_replay.py record --out FILE)")
    if args.command == "record" and not (args.data / "train.npz").is_file():
        parser.error(f"no train.npz in {args.data} (--data DIR: a directory with train.npz and test.npz)")
    record(args) if args.command == "record" else replay(args)


if __name__ == "__main__":
    main()
