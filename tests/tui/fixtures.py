"""Fixture databases for the app's tests, built through the storage API (no torch).

``build_fixture`` makes one experiment in the middle of a search: a finished
HyperNet training job with loss and accuracy curves, a running search job,
scored architectures (some retrained, with curves) and activity-log lines.
Every timestamp is then pinned to ``FIXED_NOW`` minus a fixed offset, so that
snapshots do not change from run to run.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import update

from storage.db import Database, open_database
from storage.models import Architecture, Event, Experiment, Job, Metric, Retrain, Score
from storage.queue import claim, enqueue, finish, heartbeat
from storage.records import (
    ArchitectureIn,
    MetricIn,
    ScoreIn,
    add_architectures,
    add_checkpoint,
    add_event,
    add_metrics,
    add_scores,
    create_experiment,
    finish_retrain,
    set_experiment_status,
    start_retrain,
)
from storage.workers import register_worker, stop_worker

FIXED_NOW = datetime(2025, 3, 14, 12, 0, 0, tzinfo=timezone.utc)
# SMASH error and retrained accuracy of the retrained architectures: Kendall tau -0.8,
# Spearman rho -0.9 (one concordant pair out of ten).
KNOWN_ERRORS = (10.0, 20.0, 30.0, 40.0, 50.0)
KNOWN_ACCS = (90.0, 85.0, 87.0, 70.0, 60.0)


def random_spec(rng: random.Random, blocks: int = 3) -> dict[str, Any]:
    """A spec shaped like the engine's ``Architecture.to_dict`` (not necessarily buildable)."""

    def conv() -> dict[str, Any]:
        kernel = rng.choice([1, 3, 5])
        return {
            "kernel": [kernel, kernel],
            "dilation": [rng.choice([1, 2]), rng.choice([1, 2])],
            "groups": rng.choice([1, 2, 4]),
        }

    result = []
    for block in range(blocks):
        bank = rng.choice([4, 8])
        initial = 2
        ops = []
        for index in range(rng.randint(2, 4)):
            active = rng.choice([(1, 0, 0, 0), (1, 1, 0, 0), (1, 0, 1, 0), (1, 1, 1, 1)])
            ops.append(
                {
                    "reads": sorted(rng.sample(range(initial + index), 1)),
                    "writes": [initial + index],
                    "units": bank * rng.randint(1, 2),
                    "bottleneck": bank * 2,
                    "convs": [conv() if on else None for on in active],
                }
            )
        result.append({"in_channels": bank * initial * (block + 1), "bank_size": bank, "ops": ops})
    return {"schema": 1, "stem_kernel": 3, "blocks": result}


@dataclass(frozen=True)
class Fixture:
    """What ``build_fixture`` made."""

    url: str  # the database URL
    experiment_id: int  # the experiment
    other_experiment_id: int  # an older, finished experiment
    architecture_ids: tuple[int, ...]  # every architecture of the experiment, in insert order
    retrained_ids: tuple[int, ...]  # those with a finished retrain (KNOWN_ERRORS order)
    train_job_id: int  # the finished HyperNet training job
    search_job_id: int  # the running search job
    queued_job_id: int  # a queued score job


def _pin_times(db: Database) -> None:
    """Set every timestamp to FIXED_NOW minus a per-row offset, for stable snapshots."""
    with db.session() as session:
        for model in (Experiment, Architecture, Score, Retrain, Metric, Event):
            session.execute(update(model).values(created_at=FIXED_NOW - timedelta(seconds=90)))
        session.execute(update(Retrain).values(finished_at=FIXED_NOW - timedelta(seconds=60)))
        session.execute(
            update(Job).values(
                created_at=FIXED_NOW - timedelta(minutes=30),
                started_at=FIXED_NOW - timedelta(minutes=20),
                heartbeat_at=FIXED_NOW - timedelta(seconds=5),
            )
        )
        session.execute(
            update(Job)
            .where(Job.finished_at.is_not(None))
            .values(finished_at=FIXED_NOW - timedelta(minutes=10))
        )
        session.commit()


def build_fixture(path: Path, *, architectures: int = 40, seed: int = 0) -> Fixture:
    """Create the fixture database at ``path`` (a new SQLite file).

    Args:
        path: Where the database file goes.
        architectures: How many architectures the experiment has (at least 5).
        seed: Seed of the specs and figures.
    """
    rng = random.Random(seed)
    db = open_database(str(path))
    try:
        with db.session() as session:
            old = create_experiment(
                session,
                "warmup",
                dataset="synthetic",
                preset="tiny",
                search_space={},
                config={},
                seed=1,
            ).id
            set_experiment_status(session, old, "done")
            experiment = create_experiment(
                session,
                "cifar-run",
                dataset="cifar10",
                preset="small",
                search_space={"name": "small"},
                config={"train": {"epochs": 3}},
                seed=0,
            ).id
            set_experiment_status(session, experiment, "running")
            train = enqueue(session, experiment, "train", {"epochs": 3}).id
            search = enqueue(session, experiment, "search", {"archs": 500}, depends_on=train).id
            session.commit()
        worker = register_worker(db, device="cpu", host="fixture-host", pid=4242)
        assert claim(db, worker) == train
        add_checkpoint_id = 0
        with db.session() as session:
            add_checkpoint_id = add_checkpoint(session, train, 300, "train.pt", {"loss": 1.1}).id
            points = []
            for step in range(10, 310, 10):
                progress = step / 300
                points += [
                    MetricIn(train, step, "loss", 2.3 - 1.2 * progress + 0.05 * rng.random()),
                    MetricIn(train, step, "accuracy", 10 + 50 * progress + rng.random()),
                    MetricIn(train, step, "images_per_s", 1500 + 10 * rng.random()),
                ]
            for step in (100, 200, 300):
                points += [
                    MetricIn(train, step, "val_error", 80 - step / 10),
                    MetricIn(train, step, "val_loss", 2.0 - step / 400),
                ]
            add_metrics(session, points)
            finish(session, train, worker_id=worker)
            session.commit()
        assert claim(db, worker) == search
        heartbeat(db, search, worker, progress=0.4, progress_text="200/500 scored", eta=95.0)
        specs = [random_spec(rng) for _ in range(architectures)]
        rows = [
            ArchitectureIn(
                hash=f"{index:04d}{rng.getrandbits(48):012x}",
                spec=json.dumps(spec),
                params=int(10 ** rng.uniform(4.5, 6.5)),
                flops=int(10 ** rng.uniform(6, 8.5)),
                depth=rng.randint(5, 20),
                num_ops=sum(len(block["ops"]) for block in spec["blocks"]),
                source=rng.choice(["random", "perturb"]),
            )
            for index, spec in enumerate(specs)
        ]
        with db.session() as session:
            ids = add_architectures(session, experiment, rows)
            arch_ids = [ids[row.hash] for row in rows]
            errors = {ident: round(rng.uniform(25, 80), 2) for ident in arch_ids[5:]}
            # The first five get the known errors, so their ranks are known.
            errors.update(dict(zip(arch_ids[:5], KNOWN_ERRORS)))
            # Leave the last two unscored: the table shows rows without a score.
            scored = {ident: err for ident, err in errors.items() if ident not in arch_ids[-2:]}
            add_scores(
                session,
                [
                    ScoreIn(
                        ident,
                        err,
                        round(err / 30, 3),
                        images=1000,
                        z_draws=1,
                        checkpoint_id=add_checkpoint_id,
                        job_id=search,
                    )
                    for ident, err in scored.items()
                ],
            )
            for ident, acc in zip(arch_ids[:5], KNOWN_ACCS):
                job = enqueue(session, experiment, "retrain", {"architecture_id": ident}).id
                retrain = start_retrain(session, ident, job, epochs=4)
                curve = [
                    {
                        "epoch": epoch,
                        "train_acc": acc * epoch / 4 - 2,
                        "val_acc": acc * epoch / 4 - 4,
                        "train_loss": 2.0 / epoch,
                    }
                    for epoch in range(1, 5)
                ]
                finish_retrain(session, retrain.id, test_acc=acc, best_val_acc=acc - 1, curve=curve)
                session.execute(update(Job).where(Job.id == job).values(state="done", progress=1.0))
            queued = enqueue(session, experiment, "score", {"architecture_ids": arch_ids[:3]}).id
            add_event(session, "search: 200 of 500 architectures scored", job_id=search)
            add_event(session, "slow epoch on this CPU", level="warning", experiment_id=experiment)
            session.commit()
        # The fixture's worker has stopped, so no test depends on how fresh its heartbeat is.
        stop_worker(db, worker)
        _pin_times(db)
        return Fixture(
            url=db.url,
            experiment_id=experiment,
            other_experiment_id=old,
            architecture_ids=tuple(arch_ids),
            retrained_ids=tuple(arch_ids[:5]),
            train_job_id=train,
            search_job_id=search,
            queued_job_id=queued,
        )
    finally:
        db.dispose()


# The benchmark table an nb201 fixture experiment names (the file need not exist: the
# app only shows its name).
NB201_TABLE = {"path": "/data/nas-bench-201/nats-tss-200ep.csv", "column": "cifar10"}
NB201_TABLE_LABEL = "nats-tss-200ep.csv: CIFAR10TestAccuracy200Epochs"


@dataclass(frozen=True)
class Nb201Fixture:
    """What ``add_nb201_experiment`` made: an nb201 search compared with a benchmark table."""

    experiment_id: int  # the experiment (the newest, so the app opens on it)
    cell_ids: tuple[int, ...]  # its architectures, NAS-Bench-201 cells, in insert order
    errors: dict[int, float]  # SMASH error of each scored cell
    benches: dict[int, float]  # the table's accuracy of each cell it lists
    retrained: dict[int, float]  # retrained test accuracy of the few retrained cells
    partial_id: int  # a cell racing dropped early: its error is partial


def nb201_figures(rng: random.Random) -> tuple[float, float]:
    """A benchmark accuracy from a real-looking range and a SMASH error that follows it loosely."""
    bench = round(rng.uniform(60.0, 94.0), 2)
    return bench, round(min(95.0, max(5.0, 20.0 + 0.8 * (94.0 - bench) + rng.gauss(0.0, 8.0))), 2)


def add_nb201_experiment(url: str, *, cells: int = 60, retrained: int = 4, seed: int = 3) -> Nb201Fixture:
    """Add an nb201 experiment whose scored cells have benchmark accuracies (no torch).

    Of ``cells`` distinct cells, the last three are not in the table, the last one is
    not scored either, one is racing's partial score, and the first ``retrained`` have
    a finished retrain.

    Args:
        url: A fixture database (see ``build_fixture``).
        cells: How many cells (at least ``retrained`` + 5).
        retrained: How many of them have a finished retrain.
        seed: Seed of the figures.
    """
    from engine.nb201.cell import canonical_representatives
    from engine.spaces import get_preset

    rng = random.Random(seed)
    chosen = canonical_representatives()[:: 6466 // cells][:cells]
    db = open_database(url)
    try:
        with db.session() as session:
            experiment = create_experiment(
                session,
                "nb201-run",
                dataset="cifar10",
                preset="nb201-tiny",
                search_space=get_preset("nb201-tiny").to_dict(),
                config={"weights": "hypernet", "truth": NB201_TABLE},
                seed=0,
            ).id
            set_experiment_status(session, experiment, "running")
            figures = [nb201_figures(rng) for _ in chosen]
            rows = [
                ArchitectureIn(
                    hash=cell.hash,
                    spec=cell.to_json(),
                    params=int(rng.uniform(1e5, 1.5e6)),
                    flops=int(rng.uniform(1e7, 2e8)),
                    depth=cell.depth,
                    num_ops=cell.num_ops,
                    bench_acc=bench if index < cells - 3 else None,
                )
                for index, (cell, (bench, _)) in enumerate(zip(chosen, figures))
            ]
            ids = add_architectures(session, experiment, rows)
            cell_ids = [ids[row.hash] for row in rows]
            errors = {ident: err for ident, (_, err) in zip(cell_ids[:-1], figures)}
            partial_id = cell_ids[retrained]
            add_scores(
                session,
                [
                    ScoreIn(
                        ident,
                        err,
                        round(err / 30, 3),
                        images=200 if ident == partial_id else 1000,
                        z_draws=1,
                        method="racing" if ident == partial_id else "full",
                    )
                    for ident, err in errors.items()
                ],
            )
            accs = {}
            for ident in cell_ids[:retrained]:
                accs[ident] = round(rng.uniform(50.0, 80.0), 2)
                job = enqueue(session, experiment, "retrain", {"architecture_id": ident}).id
                started = start_retrain(session, ident, job, epochs=2)
                finish_retrain(session, started.id, test_acc=accs[ident], best_val_acc=None, curve=[])
                session.execute(update(Job).where(Job.id == job).values(state="done", progress=1.0))
            session.commit()
        _pin_times(db)
        return Nb201Fixture(
            experiment_id=experiment,
            cell_ids=tuple(cell_ids),
            errors=errors,
            benches={
                ident: row.bench_acc
                for ident, row in zip(cell_ids, rows)
                if row.bench_acc is not None
            },
            retrained=accs,
            partial_id=partial_id,
        )
    finally:
        db.dispose()
