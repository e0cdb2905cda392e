"""Benchmark of the architecture browser: bulk inserts, then sorted and filtered pages.

Inserts ``--n`` scored architectures (specs of 2-4 KB, like the engine's)
through the public recording API in batches, then times pages of 100 rows,
warm, as the UI asks for them: the first page and a page from the middle
(keyset cursor), sorted by error, and sorted by parameters with a filter.

    python benchmarks/storage.py [--n 100000] [--db PATH_OR_URL] [--out FILE]

Without ``--db`` a SQLite file in a temporary directory is used and removed.
The target is < 50 ms per page on SQLite.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# This script is named like the package it measures: run as a script, its own
# folder would come first on sys.path and shadow the package. Put the
# repository root there instead, so it also runs without an installed smash.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from benchmarks.results import write_result  # noqa: E402
from storage.db import Database, open_database  # noqa: E402
from storage.queries import (  # noqa: E402
    PageCursor,
    count_architectures,
    list_architectures,
    parse_filter,
)
from storage.queue import enqueue  # noqa: E402
from storage.records import (  # noqa: E402
    ArchitectureIn,
    ScoreIn,
    add_architectures,
    add_checkpoint,
    add_scores,
    create_experiment,
)

TARGET_MS = 50.0
PAGE = 100
FILTER = "err<40 params<2e6"


@dataclass(frozen=True)
class BenchConfig:
    """What to run."""

    n: int  # architectures to insert
    batch: int  # architectures per add_architectures/add_scores call and commit
    repeats: int  # timed runs per query (after warm-up runs)
    scored_fraction: float  # share of architectures that get a score (others have NULL err)
    seed: int  # seed of the random specs and figures


def random_spec(rng: random.Random) -> str:
    """A spec shaped like the engine's: a stem and blocks of ops with up to four convs."""

    def conv() -> dict[str, Any] | None:
        if rng.random() < 0.3:
            return None
        kernel = rng.choice([1, 3, 5, 7])
        return {
            "kernel": [kernel, rng.choice([1, kernel])],
            "dilation": [rng.choice([1, 2, 3]), rng.choice([1, 2, 3])],
            "groups": rng.choice([1, 2, 4, 8]),
        }

    blocks = []
    for block in range(3):
        bank = rng.choice([8, 16, 24, 32])
        ops = []
        for _ in range(rng.randint(3, 6)):
            reads = sorted(rng.sample(range(12), rng.randint(1, 4)))
            ops.append(
                {
                    "reads": reads,
                    "writes": sorted(rng.sample(range(12), rng.randint(1, 3))),
                    "units": bank * rng.randint(1, 4),
                    "bottleneck": bank * rng.randint(1, 4),
                    "convs": [conv() for _ in range(4)],
                }
            )
        blocks.append({"in_channels": bank * (block + 2), "bank_size": bank, "ops": ops})
    return json.dumps({"schema": 1, "stem_kernel": rng.choice([3, 5]), "blocks": blocks})


def insert(db: Database, config: BenchConfig) -> tuple[int, float, float]:
    """Insert the architectures and their scores; return (experiment id, seconds, mean spec bytes)."""
    rng = random.Random(config.seed)
    with db.session() as session:
        experiment = create_experiment(
            session,
            f"bench-{uuid.uuid4().hex[:8]}",
            dataset="synthetic",
            preset="bench",
            search_space={},
            config={},
            seed=config.seed,
        )
        job_id = enqueue(session, experiment.id, "score", {}).id
        checkpoint_id = add_checkpoint(session, job_id, 1000, "bench.pt").id
        session.commit()
        experiment_id = experiment.id
    spec_bytes = 0
    elapsed = 0.0
    for offset in range(0, config.n, config.batch):
        # Generating the rows is not what is measured; only the API calls are timed.
        rows = []
        for index in range(offset, min(offset + config.batch, config.n)):
            spec = random_spec(rng)
            spec_bytes += len(spec)
            params = int(10 ** rng.uniform(5, 7.3))
            rows.append(
                ArchitectureIn(
                    hash=f"{index:016x}{rng.getrandbits(64):016x}",
                    spec=spec,
                    params=params,
                    flops=params * rng.randint(20, 400),
                    depth=rng.randint(6, 40),
                    num_ops=rng.randint(12, 24),
                    source=rng.choice(["random", "perturb", "evolution"]),
                )
            )
        scored = [row.hash for row in rows if rng.random() < config.scored_fraction]
        errors = {key: (rng.uniform(15.0, 90.0), rng.uniform(0.5, 3.0)) for key in scored}
        started = time.perf_counter()
        with db.session() as session:
            ids = add_architectures(session, experiment_id, rows)
            scores = [
                ScoreIn(
                    architecture_id=ids[key],
                    error=errors[key][0],
                    loss=errors[key][1],
                    images=1024,
                    z_draws=1,
                    method="full",
                    checkpoint_id=checkpoint_id,
                    job_id=job_id,
                )
                for key in scored
            ]
            add_scores(session, scores)
            session.commit()
        elapsed += time.perf_counter() - started
    return experiment_id, elapsed, spec_bytes / max(config.n, 1)


def middle_cursor(db: Database, experiment_id: int, sort: str, filter_text: str) -> PageCursor:
    """A cursor halfway through a sorted, filtered listing (found once, not timed)."""
    filter = parse_filter(filter_text)
    with db.session() as session:
        half = count_architectures(session, experiment_id, filter=filter) // 2
        # One page as long as half the listing ends exactly where the deep page starts.
        page = list_architectures(session, experiment_id, sort=sort, filter=filter, limit=half)
    assert page.next_after is not None
    return page.next_after


def time_query(run: Callable[[], int], repeats: int) -> dict[str, float]:
    """Median, min and max wall time of a query after two warm-up runs."""
    rows = 0
    for _ in range(2):
        rows = run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        rows = run()
        times.append((time.perf_counter() - started) * 1000)
    return {
        "median_ms": round(statistics.median(times), 3),
        "min_ms": round(min(times), 3),
        "max_ms": round(max(times), 3),
        "rows": rows,
    }


def page_runner(
    db: Database, experiment_id: int, sort: str, filter_text: str, after: PageCursor | None
) -> Callable[[], int]:
    filter = parse_filter(filter_text)

    def run() -> int:
        with db.session() as session:
            page = list_architectures(
                session, experiment_id, sort=sort, filter=filter, after=after, limit=PAGE
            )
        return len(page.rows)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="architectures to insert")
    parser.add_argument("--db", help="database path or URL (default: a temporary SQLite file)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--batch", type=int, default=1000, help="architectures per batch")
    parser.add_argument("--repeats", type=int, default=25, help="timed runs per query")
    args = parser.parse_args(argv)
    config = BenchConfig(
        n=args.n, batch=args.batch, repeats=args.repeats, scored_fraction=0.95, seed=0
    )

    scratch = None if args.db else Path(tempfile.mkdtemp(prefix="smash-bench-"))
    db = open_database(args.db or str(scratch / "bench.db"))  # type: ignore[operator]
    try:
        print(f"database: {db.redacted_url} ({db.dialect})")
        experiment_id, insert_s, spec_bytes = insert(db, config)
        print(
            f"inserted {config.n} architectures (+ scores) in {insert_s:.1f} s "
            f"({config.n / insert_s:,.0f}/s, spec {spec_bytes / 1024:.1f} KB on average)"
        )
        queries = {
            "page_by_err_first": page_runner(db, experiment_id, "err", "", None),
            "page_by_err_deep": page_runner(
                db, experiment_id, "err", "", middle_cursor(db, experiment_id, "err", "")
            ),
            "page_by_err_desc_first": page_runner(db, experiment_id, "-err", "", None),
            "page_by_params_filtered_first": page_runner(db, experiment_id, "params", FILTER, None),
            "page_by_params_filtered_deep": page_runner(
                db,
                experiment_id,
                "params",
                FILTER,
                middle_cursor(db, experiment_id, "params", FILTER),
            ),
        }
        figures = {name: time_query(run, config.repeats) for name, run in queries.items()}

        def count() -> int:
            with db.session() as session:
                return count_architectures(session, experiment_id, filter=parse_filter(FILTER))

        figures["count_filtered"] = time_query(count, max(config.repeats // 5, 3))
        for name, figure in figures.items():
            print(
                f"{name:32s} median {figure['median_ms']:8.2f} ms  "
                f"(min {figure['min_ms']:.2f}, max {figure['max_ms']:.2f}, {figure['rows']} rows)"
            )
        result = {
            "n": config.n,
            "dialect": db.dialect,
            "database": db.redacted_url,
            "batch": config.batch,
            "repeats": config.repeats,
            "filter": FILTER,
            "spec_bytes_mean": round(spec_bytes),
            "insert_s": round(insert_s, 3),
            # Worst of the first and the deep page: the UI asks for both.
            "page_by_err_ms": max(
                figures["page_by_err_first"]["median_ms"], figures["page_by_err_deep"]["median_ms"]
            ),
            "page_by_params_filtered_ms": max(
                figures["page_by_params_filtered_first"]["median_ms"],
                figures["page_by_params_filtered_deep"]["median_ms"],
            ),
            "target_ms": TARGET_MS,
            "queries": figures,
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "machine": platform.machine(),
        }
        print(
            f"page by err: {result['page_by_err_ms']:.2f} ms, "
            f"page by params with {FILTER!r}: {result['page_by_params_filtered_ms']:.2f} ms "
            f"(target < {TARGET_MS:.0f} ms)"
        )
        write_result(args.out, result, indent="")
    finally:
        db.dispose()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
