"""Racing replayed offline: how many images each racing scheme spends, and how often it is exact.

A racing run on the CPU takes minutes and shows one image order. This benchmark
records, once, whether every architecture of the score_throughput fixture gets each
validation image right (and its loss), then replays the engine's own racing code
(`Scorer.race`, `Racer`) on those records for many image orders in seconds. For the
fixture's own order the replay spends exactly the images a live run spends.

    python benchmarks/racing_replay.py record --out per_image.npz      # ~25 min on 2 cores
    python benchmarks/racing_replay.py replay per_image.npz --out replay.json
    python benchmarks/racing_replay.py simulate per_image.npz --archs 500   # a model, seconds

``simulate`` fits a per-architecture skill and per-image difficulty to the records
and races fixtures of another size drawn from that model: what racing should save
at a K too costly to record, checked against the recorded K first.
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

from results import SHARED_DATA  # noqa: E402

from engine.data import DataConfig, DeviceImages, load_dataset  # noqa: E402
from engine.device import autocast_context  # noqa: E402
from engine.hypernet import HyperNetConfig  # noqa: E402
from engine.sampler import sample  # noqa: E402
from engine.score import RaceConfig, Racer, Score, ScoreConfig, Scorer, rank_key  # noqa: E402
from engine.space import SamplingLimits, get_preset  # noqa: E402
from engine.train import TrainConfig, build_smash, train_hypernet  # noqa: E402

DEFAULT_DATA = SHARED_DATA / "cifar10-subset"


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
            first = 0
            for x, y in scorer._slices(0, scorer.num_images):  # full scoring's batches
                logits = net(x, arch, weights).float()
                wrong[i, first : first + len(y)] = (logits.argmax(1) != y).numpy()
                loss[i, first : first + len(y)] = F.cross_entropy(logits, y, reduction="none").numpy()
                first += len(y)
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

    def _sums(self, arch, start: int, stop: int, into: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        self.measured += stop - start
        i = int(arch)
        totals = self._zero_sums() if into is None else into
        totals[0] += torch.stack([self.wrong[i, start:stop].sum(), self.loss[i, start:stop].sum()]).float()
        return totals


def run_scheme(
    wrong: torch.Tensor, loss: torch.Tensor, batch_size: int, top_k: int, batch: int | None
) -> tuple[float, bool]:
    """Race K recorded architectures as one scheme: (share of full scoring's images, exact top-k).

    ``batch`` None races all K at once; a positive batch races a search's batches with
    the earlier survivors as leaders (``Racer``); a negative one races batches alone.
    """
    k, n = wrong.shape
    archs = [str(i) for i in range(k)]
    race = RaceConfig(top_k=top_k)
    scorer = ReplayScorer(wrong, loss, batch_size)
    full = [scorer._to_score(torch.stack([wrong[i].sum(), loss[i].sum()]).float(), n, "full") for i in range(k)]
    if batch is None:
        scores = scorer.race(archs, race)
    elif batch > 0:
        racer = Racer(scorer, race)
        scores = [s for first in range(0, k, batch) for s in racer(archs[first : first + batch])]
    else:
        scores = [s for first in range(0, k, -batch) for s in scorer.race(archs[first : first - batch], race)]

    def top(ranked: list[Score]) -> set[int]:
        return set(sorted(range(k), key=lambda i: (*rank_key(ranked[i]), i))[:top_k])

    return scorer.measured / (k * n), top(scores) == top(full)


def _schemes(batches: list[int], without_leaders: bool = True) -> dict[str, int | None]:
    schemes: dict[str, int | None] = {"one race": None, **{f"search, batches of {b}": b for b in batches}}
    if without_leaders:
        schemes.update({f"batches of {b} without leaders": -b for b in batches})
    return schemes


def _summary(name: str, fractions: list[float], exact: int, top_k: int, first: str) -> dict[str, float]:
    print(f"  {name:32s} images {100 * fractions[0]:5.1f}% ({first}), mean {100 * np.mean(fractions):5.1f}%, max {100 * np.max(fractions):5.1f}%; top-{top_k} exact in {exact}/{len(fractions)}")
    return {
        f"images_fraction_{first.replace(' ', '_')}": fractions[0],
        "images_fraction_mean": float(np.mean(fractions)),
        "images_fraction_max": float(np.max(fractions)),
        "top_k_exact": exact / len(fractions),
    }


def load_records(path: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-image (wrong, loss) as float tensors (K, N), and the scoring batch size.

    Raises:
        ValueError: The file is not records written by ``record``.
    """
    try:
        with np.load(path) as records:
            wrong, loss = records["wrong"], records["loss"]
            batch_size = int(records["batch_size"]) if "batch_size" in records else 200
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise ValueError(f"{path} is not a records file written by racing_replay.py record ({exc})") from None
    if wrong.ndim != 2 or wrong.shape != loss.shape:
        raise ValueError(f"{path}: wrong {wrong.shape} and loss {loss.shape} must be the same (K, N)")
    return torch.from_numpy(wrong).float(), torch.from_numpy(loss).float(), batch_size


def replay(args: argparse.Namespace) -> None:
    wrong, loss, batch_size = args.loaded
    wrong, loss = wrong.double(), loss.double()
    k, n = wrong.shape
    result: dict[str, object] = {"k": k, "images": n, "orders": args.orders, "top_k": args.top_k}
    for name, batch in _schemes(args.batches).items():
        fractions, exact = [], 0
        for order_seed in range(args.orders):
            # Order 0 is the fixture's own scoring order; the rest are fresh shuffles.
            order = torch.arange(n) if order_seed == 0 else torch.randperm(n, generator=torch.Generator().manual_seed(order_seed))
            fraction, same = run_scheme(wrong[:, order], loss[:, order], batch_size, args.top_k, batch)
            fractions.append(fraction)
            exact += same
        result[name] = _summary(name, fractions, exact, args.top_k, "fixture order")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")


def fit_rasch(wrong: torch.Tensor, steps: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-architecture skill and per-image difficulty, P(wrong) = sigmoid(difficulty - skill).

    The simplest model that keeps what racing depends on: how far apart the
    architectures' error rates are, and that hard images are hard for all of them
    (which makes their errors on the same slice move together).
    """
    skill = torch.zeros(wrong.shape[0], requires_grad=True)
    difficulty = torch.zeros(wrong.shape[1], requires_grad=True)
    optimiser = torch.optim.Adam([skill, difficulty], lr=0.05)
    for _ in range(steps):
        optimiser.zero_grad()
        p = torch.sigmoid(difficulty[None] - skill[:, None])
        F.binary_cross_entropy(p, wrong).backward()
        optimiser.step()
    return skill.detach(), difficulty.detach()


def simulate(args: argparse.Namespace) -> None:
    """Racing on simulated fixtures of K architectures drawn from a model of the records.

    A model, not a measurement: it tells what to expect at a K too costly to record
    (K = 500, the original's count, is about 100 minutes of full scoring on 2 cores).
    """
    wrong, loss, batch_size = args.loaded
    recorded_k, n = wrong.shape
    skill, difficulty = fit_rasch(wrong)
    # Per image, the mean recorded loss of a wrong and of a right answer (loss only
    # breaks ties between equal error counts).
    loss_wrong = (loss * wrong).sum(0) / wrong.sum(0).clamp(min=1)
    loss_right = (loss * (1 - wrong)).sum(0) / (1 - wrong).sum(0).clamp(min=1)
    result: dict[str, object] = {"recorded_k": recorded_k, "images": n, "fixtures": args.fixtures, "top_k": args.top_k}
    for k in (recorded_k, args.archs):
        label = f"K = {k}" + (" (the recorded K: checks the model)" if k == recorded_k else "")
        print(f"{label}, {args.fixtures} simulated fixtures:")
        per_k: dict[str, object] = {}
        for name, batch in _schemes(args.batches, without_leaders=False).items():
            fractions, exact = [], 0
            for fixture in range(args.fixtures):
                generator = torch.Generator().manual_seed(fixture)
                # Skills resampled from the fitted ones, jittered so that K > recorded K
                # does not repeat the same architectures.
                drawn = skill[torch.randint(recorded_k, (k,), generator=generator)]
                drawn = drawn + args.jitter * skill.std() * torch.randn(k, generator=generator)
                p = torch.sigmoid(difficulty[None] - drawn[:, None])
                simulated = torch.rand(p.shape, generator=generator) < p
                losses = torch.where(simulated, loss_wrong, loss_right)
                fraction, same = run_scheme(simulated.double(), losses.double(), batch_size, args.top_k, batch)
                fractions.append(fraction)
                exact += same
            per_k[name] = _summary(name, fractions, exact, args.top_k, "first fixture")
        result[f"k{k}"] = per_k
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
    sim = commands.add_parser("simulate", help="racing at another K, on fixtures drawn from a model of the records")
    sim.add_argument("records", type=Path)
    sim.add_argument("--archs", type=int, default=500, help="K of the simulated fixtures")
    sim.add_argument("--fixtures", type=int, default=20)
    sim.add_argument("--top-k", type=int, default=10)
    sim.add_argument("--batches", type=int, nargs="*", default=[64])
    sim.add_argument("--jitter", type=float, default=0.15, help="skill noise, in standard deviations of the fitted skills")
    sim.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.command in ("replay", "simulate") and not args.records.is_file():
        parser.error(f"no records at {args.records} (write them with: racing_replay.py record --out FILE)")
    if args.command in ("replay", "simulate"):
        try:
            args.loaded = load_records(args.records)
        except ValueError as exc:
            parser.error(str(exc).splitlines()[0])
    if args.command == "record" and not (args.data / "train.npz").is_file():
        parser.error(f"no train.npz in {args.data} (--data DIR: a directory with train.npz and test.npz)")
    {"record": record, "replay": replay, "simulate": simulate}[args.command](args)


if __name__ == "__main__":
    main()
