"""Draw the README's screenshot of the Proxy view with benchmark truth, as the app saves it.

    python docs/make_screenshots.py --table PATH/nats-tss-200ep.csv

builds a SQLite database with one nb201 experiment through the storage API (no
torch, no training), opens the app on it at 120x40, switches to the Proxy view
and saves what the app shows with Textual's ``App.save_screenshot`` into
``docs/proxy-benchmark.svg``.

What is real and what is made up: the cells are NAS-Bench-201 cells and, with
``--table``, each one's accuracy is the table's (``engine.truth.load_truth``: the
CIFAR-10 column, averaged over the cell's class), keeping the cells at 60 % or more;
without it the accuracies are drawn from 60-94 % and the table is named
``synthetic-accuracies.csv``. The SMASH
errors are invented: a Gaussian copula with correlation ``--rho`` to the accuracy
ranks (rho 0.6 gives Kendall tau about 0.4, what one-shot supernets reach on this
space), so the figure shows what the view looks like, not how well SMASH ranks.
A few errors are racing's partial ones and a few cells are "retrained", so the
footer offers ``b``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import tempfile
from pathlib import Path
from statistics import NormalDist

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.nb201.cell import Cell, canonical_representatives  # noqa: E402
from engine.spaces import get_preset  # noqa: E402
from engine.truth import TruthConfig, load_truth  # noqa: E402
from smash_tui.tui.app import SmashApp  # noqa: E402
from storage.db import open_database  # noqa: E402
from storage.queue import enqueue  # noqa: E402
from storage.records import (  # noqa: E402
    ArchitectureIn,
    ScoreIn,
    add_architectures,
    add_scores,
    create_experiment,
    finish_retrain,
    set_experiment_status,
    start_retrain,
)

SIZE = (120, 40)  # the terminal the README's pictures are taken at
CHANNELS = (16, 32, 64)  # NAS-Bench-201's stages, five cells each...
SIDES = (32, 16, 8)  # ... at these image sides
PRESET = "nb201"
# Cells the table puts below this accuracy are left out (about 1 % of its classes, down
# to 10 %), so that the cloud, not a few outliers, fills the chart's height.
LOWEST = 60.0


def estimated_cost(cell: Cell) -> tuple[int, int]:
    """(params, FLOPs) of the cells' convs over the benchmark's network: an estimate for
    browsing this made-up database (the engine counts exactly, with torch)."""
    weights = sum({"nor_conv_3x3": 9, "nor_conv_1x1": 1}.get(cell.ops[e], 0) for e in cell.live_edges)
    params = sum(5 * weights * c * c for c in CHANNELS)
    flops = sum(5 * 2 * weights * c * c * side * side for c, side in zip(CHANNELS, SIDES))
    return params + 80_000, flops + 20_000_000  # plus stem, reductions and classifier


def accuracies(
    cells: list[Cell], table: Path | None, rng: random.Random
) -> tuple[dict[str, float], dict[str, str]]:
    """Each cell's accuracy (by hash) and the experiment config's truth entry."""
    if table is None:
        truth = {"path": str(ROOT / "synthetic-accuracies.csv"), "column": "cifar10"}
        return {cell.hash: round(rng.uniform(60.0, 94.0), 2) for cell in cells}, truth
    config = TruthConfig(str(table.resolve()), "cifar10")
    by_class = load_truth(config).by_class
    known = {cell.hash: round(by_class[cell.hash], 2) for cell in cells if cell.hash in by_class}
    return {key: acc for key, acc in known.items() if acc >= LOWEST}, {"path": config.path, "column": config.column}


def invented_errors(accs: list[float], rho: float, rng: random.Random) -> list[float]:
    """SMASH errors whose normal scores correlate with the accuracies' by -rho, in a SMASH-like range."""
    normal = NormalDist()
    order = sorted(range(len(accs)), key=accs.__getitem__)
    scores = [0.0] * len(accs)
    for rank, index in enumerate(order):
        scores[index] = normal.inv_cdf((rank + 0.5) / len(accs))  # higher accuracy, higher score
    return [
        round(min(95.0, max(5.0, 38.0 + 9.0 * (-rho * s + math.sqrt(1 - rho * rho) * rng.gauss(0, 1)))), 2)
        for s in scores
    ]


def build(path: Path, *, cells: int, table: Path | None, rho: float, seed: int) -> tuple[str, int]:
    """Create the database at ``path``; return its URL and the experiment id."""
    rng = random.Random(seed)
    chosen = rng.sample(canonical_representatives(), cells)
    accs, truth = accuracies(chosen, table, rng)
    scored = [cell for cell in chosen if cell.hash in accs]
    errors = invented_errors([accs[cell.hash] for cell in scored], rho, rng)
    db = open_database(str(path))
    try:
        with db.session() as session:
            experiment = create_experiment(
                session,
                "nb201-cifar10",
                dataset="cifar10",
                preset=PRESET,
                search_space=get_preset(PRESET).to_dict(),
                config={"weights": "hypernet", "truth": truth},
                seed=seed,
            ).id
            set_experiment_status(session, experiment, "running")
            search = enqueue(session, experiment, "search", {}).id
            rows = [
                ArchitectureIn(
                    hash=cell.hash,
                    spec=cell.to_json(),
                    params=estimated_cost(cell)[0],
                    flops=estimated_cost(cell)[1],
                    depth=cell.depth,
                    num_ops=cell.num_ops,
                    source="random",
                    bench_acc=accs[cell.hash],
                )
                for cell in scored
            ]
            ids = add_architectures(session, experiment, rows)
            # Racing dropped one candidate in twenty after a slice of 500 images.
            partial = set(rng.sample(range(len(rows)), len(rows) // 20))
            add_scores(
                session,
                [
                    ScoreIn(
                        ids[row.hash],
                        err,
                        round(err / 25, 3),
                        images=500 if index in partial else 5000,
                        z_draws=1,
                        method="racing" if index in partial else "full",
                        job_id=search,
                    )
                    for index, (row, err) in enumerate(zip(rows, errors))
                ],
            )
            # The five lowest errors "retrained" (accuracy near the table's: a shorter schedule).
            best = sorted(range(len(rows)), key=lambda i: (i in partial, errors[i]))[:5]
            for index in best:
                ident = ids[rows[index].hash]
                job = enqueue(session, experiment, "retrain", {"architecture_id": ident}).id
                retrain = start_retrain(session, ident, job, epochs=20)
                acc = round(float(rows[index].bench_acc or 0) - rng.uniform(3, 8), 2)
                finish_retrain(session, retrain.id, test_acc=acc, best_val_acc=None, curve=[])
            session.commit()
        return db.url, experiment
    finally:
        db.dispose()


async def screenshot(url: str, out: Path) -> None:
    """Open the app on the database, show the Proxy view, save what it shows."""
    app = SmashApp(url, poll_interval=None)  # queues nothing: no worker is started
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        app.save_screenshot(filename=out.name, path=str(out.parent))


async def settle(pilot: object) -> None:
    """Wait until the app's reading threads are done and their messages handled."""
    quiet = 0
    for _ in range(500):
        await pilot.pause()  # type: ignore[attr-defined]
        busy = any(worker.is_running for worker in pilot.app.workers)  # type: ignore[attr-defined]
        quiet = 0 if busy else quiet + 1
        if quiet >= 3:
            return
        if busy:
            await pilot.pause(0.02)  # type: ignore[attr-defined]
    raise RuntimeError("the app did not settle")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, help="NAS-Bench-201 table (nats-tss-200ep.csv); none: synthetic")
    parser.add_argument("--cells", type=int, default=400, help="scored cells (default 400)")
    parser.add_argument("--rho", type=float, default=0.6, help="correlation of the invented errors")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", type=Path, help="keep the database here (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "proxy-benchmark.svg")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = args.db or Path(scratch) / "screenshots.db"
        if path.exists():
            parser.error(f"{path} exists: give a new file")
        url, _ = build(path, cells=args.cells, table=args.table, rho=args.rho, seed=args.seed)
        asyncio.run(screenshot(url, args.out.resolve()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
