"""The command center's read-only queries (storage.summaries), on both backends."""

from __future__ import annotations

import json

import pytest

from storage.control import request_cancel
from storage.db import Database
from storage.errors import StorageError
from storage.queue import enqueue
from storage.records import (
    ArchitectureIn,
    MetricIn,
    ScoreIn,
    add_architectures,
    add_event,
    add_metrics,
    add_scores,
    create_experiment,
    finish_retrain,
    start_retrain,
)
from storage.summaries import (
    ChangeMarker,
    TruthCounts,
    architecture_rows,
    bench_pairs,
    change_marker,
    experiment_summaries,
    latest_metrics,
    metric_names,
    proxy_pairs,
    scored_costs,
    truth_counts,
)


def _add(db: Database, experiment_id: int, figures: list[tuple[int, int]]) -> list[int]:
    """Add architectures with (params, flops); return their ids in order."""
    rows = [
        ArchitectureIn(
            hash=f"h{experiment_id}-{index}",
            spec=json.dumps({"index": index}),
            params=params,
            flops=flops,
            depth=3,
            num_ops=4,
        )
        for index, (params, flops) in enumerate(figures)
    ]
    with db.session() as session:
        ids = add_architectures(session, experiment_id, rows)
        session.commit()
    return [ids[row.hash] for row in rows]


def _score(db: Database, errors: dict[int, float]) -> None:
    with db.session() as session:
        add_scores(
            session,
            [ScoreIn(ident, error, 1.0, images=10, z_draws=1) for ident, error in errors.items()],
        )
        session.commit()


def _retrain(db: Database, experiment_id: int, architecture_id: int, acc: float) -> None:
    with db.session() as session:
        job = enqueue(session, experiment_id, "retrain", {"architecture_id": architecture_id})
        retrain = start_retrain(session, architecture_id, job.id, epochs=1)
        finish_retrain(session, retrain.id, test_acc=acc, best_val_acc=None, curve=[])
        session.commit()


def test_change_marker_moves_with_each_kind_of_row(db: Database, experiment_id: int) -> None:
    with db.session() as session:
        empty = change_marker(session)
    assert empty == ChangeMarker(0, 0, 0, 0, 0)
    [first] = _add(db, experiment_id, [(100, 1000)])
    with db.session() as session:
        added = change_marker(session)
    assert added.architecture_id == first and added.score_id == 0
    _score(db, {first: 30.0})
    with db.session() as session:
        scored = change_marker(session)
    assert scored.score_id > 0 and scored.architecture_id == first
    _retrain(db, experiment_id, first, 80.0)
    with db.session() as session:
        retrained = change_marker(session)
        assert retrained.retrain_id > 0 and retrained.event_id > scored.event_id
        add_event(session, "hello", experiment_id=experiment_id)
        session.commit()
        evented = change_marker(session)
        assert evented.event_id > retrained.event_id and evented.metric_id == 0
        job = enqueue(session, experiment_id, "train", {}).id
        add_metrics(session, [MetricIn(job, 1, "loss", 2.0)])
        session.commit()
        assert change_marker(session).metric_id > 0


def test_experiment_summaries_count_rows_and_jobs(db: Database, experiment_id: int) -> None:
    with db.session() as session:
        other = create_experiment(
            session,
            "other",
            dataset="cifar10",
            preset="small",
            search_space={},
            config={},
            seed=1,
        ).id
        queued = enqueue(session, experiment_id, "train", {}).id
        enqueue(session, experiment_id, "search", {}, depends_on=queued)
        enqueue(session, other, "train", {})
        session.commit()
    ids = _add(db, experiment_id, [(100, 1), (200, 2), (300, 3)])
    _score(db, {ids[0]: 20.0, ids[1]: 25.0})
    _retrain(db, experiment_id, ids[0], 90.0)
    with db.session() as session:
        request_cancel(session, queued)
        session.commit()
        summaries = experiment_summaries(session)
    assert [summary.id for summary in summaries] == [other, experiment_id]
    newest, oldest = summaries
    assert (newest.name, newest.dataset, newest.preset) == ("other", "cifar10", "small")
    assert (newest.architectures, newest.scored, newest.retrained) == (0, 0, 0)
    assert newest.jobs == {"queued": 1}
    assert (oldest.architectures, oldest.scored, oldest.retrained) == (3, 2, 1)
    # Cancelling the train job cancels the search that depends on it.
    assert oldest.jobs == {"cancelled": 2, "queued": 1}
    assert oldest.created_at.tzinfo is not None


def test_proxy_pairs_need_score_and_retrain(db: Database, experiment_id: int) -> None:
    ids = _add(db, experiment_id, [(100, 1), (200, 2), (300, 3)])
    _score(db, {ids[0]: 20.0, ids[2]: 40.0})
    _retrain(db, experiment_id, ids[0], 91.5)
    _retrain(db, experiment_id, ids[1], 50.0)  # never scored: no pair
    with db.session() as session:
        pairs = proxy_pairs(session, experiment_id)
    assert [(pair.id, pair.err, pair.acc, pair.partial) for pair in pairs] == [
        (ids[0], 20.0, 91.5, False)
    ]
    # Rescored by a race that dropped it early: the pair says its error is partial.
    with db.session() as session:
        add_scores(session, [ScoreIn(ids[0], 15.0, 1.0, images=5, z_draws=1, method="racing")])
        session.commit()
        assert [(p.err, p.partial) for p in proxy_pairs(session, experiment_id)] == [(15.0, True)]


def _add_cells(db: Database, experiment_id: int, benches: list[float | None]) -> list[int]:
    """Add architectures with a benchmark accuracy each (None: the table lacks them)."""
    rows = [
        ArchitectureIn(f"c{experiment_id}-{index}", "{}", 100, 10, 3, 4, bench_acc=bench)
        for index, bench in enumerate(benches)
    ]
    with db.session() as session:
        ids = add_architectures(session, experiment_id, rows)
        session.commit()
    return [ids[row.hash] for row in rows]


def test_bench_pairs_need_score_and_benchmark_accuracy(db: Database, experiment_id: int) -> None:
    ids = _add_cells(db, experiment_id, [91.0, None, 70.5, 88.0])
    _score(db, {ids[0]: 30.0, ids[1]: 20.0, ids[2]: 25.0})  # ids[3] is not scored yet
    _retrain(db, experiment_id, ids[0], 80.0)
    with db.session() as session:
        pairs = bench_pairs(session, experiment_id)
        retrained = proxy_pairs(session, experiment_id)
    # In the engine's ranking order; the retrain's accuracy stays out of the benchmark's pairs.
    assert [(p.id, p.err, p.bench, p.partial) for p in pairs] == [
        (ids[2], 25.0, 70.5, False),
        (ids[0], 30.0, 91.0, False),
    ]
    assert [(p.id, p.acc) for p in retrained] == [(ids[0], 80.0)]
    # A race that dropped ids[2] early: its lucky partial error ranks after complete ones.
    with db.session() as session:
        add_scores(session, [ScoreIn(ids[2], 5.0, 1.0, images=5, z_draws=1, method="racing")])
        session.commit()
        assert [(p.id, p.err, p.partial) for p in bench_pairs(session, experiment_id)] == [
            (ids[0], 30.0, False),
            (ids[2], 5.0, True),
        ]


def test_truth_counts_say_which_truths_an_experiment_has(db: Database, experiment_id: int) -> None:
    table = {"path": "/data/nats-tss-200ep.csv", "column": "cifar10"}
    with db.session() as session:
        cells = create_experiment(
            session,
            "cells",
            dataset="cifar10",
            preset="nb201-tiny",
            search_space={"kind": "nb201"},
            config={"truth": table, "weights": "hypernet"},
            seed=0,
        ).id
        session.commit()
        assert truth_counts(session, cells) == TruthCounts(0, 0, 0, table)
        with pytest.raises(StorageError, match="experiment 999999 does not exist"):
            truth_counts(session, 999_999)
    ids = _add_cells(db, cells, [91.0, None, 70.5])
    _score(db, {ids[0]: 30.0, ids[1]: 20.0})
    _retrain(db, cells, ids[1], 60.0)
    other = _add(db, experiment_id, [(100, 1)])
    _score(db, {other[0]: 10.0})
    with db.session() as session:
        assert truth_counts(session, cells) == TruthCounts(2, 1, 1, table)
        # An experiment without a table (its config has no "truth").
        assert truth_counts(session, experiment_id) == TruthCounts(1, 0, 0, None)


def test_scored_costs_sorted_by_cost_and_skip_unscored(db: Database, experiment_id: int) -> None:
    ids = _add(db, experiment_id, [(300, 10), (100, 30), (200, 20), (100, 40)])
    _score(db, {ids[0]: 10.0, ids[1]: 50.0, ids[3]: 45.0})
    with db.session() as session:
        by_params = scored_costs(session, experiment_id, "params")
        by_flops = scored_costs(session, experiment_id, "flops")
        with pytest.raises(StorageError, match="unknown cost 'depth'"):
            scored_costs(session, experiment_id, "depth")
    assert by_params == [(ids[3], 100, 45.0), (ids[1], 100, 50.0), (ids[0], 300, 10.0)]
    assert [row[0] for row in by_flops] == [ids[0], ids[1], ids[3]]


def test_architecture_rows_keep_the_order_given(db: Database, experiment_id: int) -> None:
    ids = _add(db, experiment_id, [(100, 1), (200, 2), (300, 3)])
    with db.session() as session:
        rows = architecture_rows(session, [ids[2], 999_999, ids[0], ids[2]])
    assert [row.id for row in rows] == [ids[2], ids[0]]
    assert rows[0].params == 300 and rows[0].err is None


def test_metric_names_and_latest_values(db: Database, experiment_id: int) -> None:
    with db.session() as session:
        job = enqueue(session, experiment_id, "train", {}).id
        add_metrics(
            session,
            [
                MetricIn(job, 1, "loss", 2.0),
                MetricIn(job, 2, "loss", 1.5),
                MetricIn(job, 1, "images_per_s", 300.0),
                MetricIn(job, 3, "val_error", float("nan")),
            ],
        )
        session.commit()
        assert metric_names(session, job) == ["images_per_s", "loss", "val_error"]
        assert latest_metrics(session, job) == {
            "loss": (2, 1.5),
            "images_per_s": (1, 300.0),
            "val_error": (3, None),
        }
        assert latest_metrics(session, job + 1) == {}
