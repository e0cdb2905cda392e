"""Storage helpers the worker relies on: claims limited to given jobs, resume lookups."""

from __future__ import annotations

from storage.db import Database
from storage.queue import claim, enqueue, finish
from storage.records import (
    ArchitectureIn,
    ScoreIn,
    add_architectures,
    add_checkpoint,
    add_scores,
    finish_retrain,
    latest_train_checkpoint,
    scores_by_hash,
    start_retrain,
    unfinished_retrain,
)
from storage.workers import register_worker


def _arch(hash_: str) -> ArchitectureIn:
    return ArchitectureIn(hash=hash_, spec="{}", params=1, flops=1, depth=1, num_ops=1)


def test_claim_limited_to_job_ids_leaves_other_jobs_queued(
    db: Database, experiment_id: int
) -> None:
    with db.session() as session:
        first = enqueue(session, experiment_id, "score", {}).id
        second = enqueue(session, experiment_id, "score", {}).id
        third = enqueue(session, experiment_id, "score", {}).id
        session.commit()
    worker = register_worker(db, device="cpu")
    assert claim(db, worker, job_ids=[third, second]) == second
    assert claim(db, worker, job_ids=[third, second]) == third
    assert claim(db, worker, job_ids=[third, second]) is None
    assert claim(db, worker, job_ids=[]) is None
    assert claim(db, worker) == first


def test_latest_train_checkpoint_is_the_newest_step_of_the_newest_done_train_job(
    db: Database, experiment_id: int
) -> None:
    worker = register_worker(db, device="cpu")
    with db.session() as session:
        assert latest_train_checkpoint(session, experiment_id) is None
        old = enqueue(session, experiment_id, "train", {}).id
        new = enqueue(session, experiment_id, "train", {}).id
        running = enqueue(session, experiment_id, "train", {}).id
        session.commit()
    for job_id in (old, new, running):
        assert claim(db, worker, job_ids=[job_id]) == job_id
    with db.session() as session:
        add_checkpoint(session, old, 90, "old-90.pt")
        add_checkpoint(session, new, 10, "new-10.pt")
        wanted = add_checkpoint(session, new, 20, "new-20.pt").id
        add_checkpoint(session, running, 500, "running.pt")
        # Not done yet: no checkpoint of a job that is still training counts.
        assert latest_train_checkpoint(session, experiment_id) is None
        finish(session, old)
        finish(session, new)
        session.commit()
    with db.session() as session:
        found = latest_train_checkpoint(session, experiment_id)
        assert found is not None and found.id == wanted and found.path == "new-20.pt"
        assert latest_train_checkpoint(session, experiment_id + 1) is None


def test_scores_by_hash_keeps_the_newest_score_per_architecture_of_one_checkpoint(
    db: Database, experiment_id: int
) -> None:
    with db.session() as session:
        job = enqueue(session, experiment_id, "train", {}).id
        checkpoint = add_checkpoint(session, job, 1, "a.pt").id
        other = add_checkpoint(session, job, 2, "b.pt").id
        ids = add_architectures(session, experiment_id, [_arch("a"), _arch("b"), _arch("c")])
        add_scores(
            session,
            [
                ScoreIn(ids["a"], 50.0, 1.5, 100, 1, "racing", checkpoint_id=checkpoint),
                ScoreIn(ids["b"], 40.0, 1.2, 100, 1, "full", checkpoint_id=checkpoint),
                ScoreIn(ids["c"], 30.0, 1.0, 100, 1, "full", checkpoint_id=other),
            ],
        )
        add_scores(
            session, [ScoreIn(ids["a"], 45.0, 1.4, 200, 1, "full", checkpoint_id=checkpoint)]
        )
        session.commit()
    with db.session() as session:
        known = scores_by_hash(session, experiment_id, checkpoint)
        assert sorted(known) == ["a", "b"]
        assert (known["a"].error, known["a"].images, known["a"].method) == (45.0, 200, "full")
        assert known["b"].error == 40.0
        assert sorted(scores_by_hash(session, experiment_id, other)) == ["c"]
        assert scores_by_hash(session, experiment_id, None) == {}


def test_unfinished_retrain_finds_the_open_retrain_of_a_job(
    db: Database, experiment_id: int
) -> None:
    with db.session() as session:
        job = enqueue(session, experiment_id, "retrain", {}).id
        arch = add_architectures(session, experiment_id, [_arch("a")])["a"]
        assert unfinished_retrain(session, job) is None
        started = start_retrain(session, arch, job, epochs=3)
        session.commit()
    with db.session() as session:
        found = unfinished_retrain(session, job)
        assert found is not None and found.id == started.id
        finish_retrain(session, started.id, test_acc=50.0, best_val_acc=None, curve=[])
        session.commit()
    with db.session() as session:
        assert unfinished_retrain(session, job) is None
