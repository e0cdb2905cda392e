"""The worker's recording API: idempotent batches and the denormalised browse columns."""

from __future__ import annotations

import json
import math

import pytest
from sqlalchemy import func, select

from storage.db import Database
from storage.errors import NotFoundError, StorageError
from storage.models import Architecture, Metric, Score
from storage.queue import enqueue
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
    fail_retrain,
    find_experiment,
    finish_retrain,
    get_architecture,
    get_checkpoint,
    get_experiment,
    get_job,
    get_retrain,
    scored_hashes,
    set_experiment_status,
    set_retrain_state,
    start_retrain,
)


def _arch(index: int, **overrides: object) -> ArchitectureIn:
    fields: dict[str, object] = {
        "hash": f"h{index:04d}",
        "spec": json.dumps({"blocks": [index, index + 1]}),
        "params": 1000 * index,
        "flops": 10**9 + index,
        "depth": 2 + index % 5,
        "num_ops": 3 + index % 7,
        "source": "random",
    }
    fields.update(overrides)
    return ArchitectureIn(**fields)  # type: ignore[arg-type]


def _job(db: Database, experiment_id: int, kind: str = "score") -> int:
    with db.session() as session:
        job_id = enqueue(session, experiment_id, kind, {}).id
        session.commit()
        return job_id


def test_experiment_names_are_unique(db: Database, experiment_id: int) -> None:
    with db.session() as session:
        assert find_experiment(session, "exp").id == experiment_id
        with pytest.raises(StorageError, match="an experiment named 'exp' already exists"):
            create_experiment(
                session, "exp", dataset="d", preset="p", search_space={}, config={}, seed=1
            )
        with pytest.raises(NotFoundError, match="no experiment named 'nope'"):
            find_experiment(session, "nope")
        assert set_experiment_status(session, experiment_id, "running").status == "running"
        with pytest.raises(StorageError, match="unknown experiment status 'runing'"):
            set_experiment_status(session, experiment_id, "runing")
        session.commit()
        experiment = get_experiment(session, experiment_id)
        assert experiment.search_space == {"depth": [2, 4]}
        assert experiment.created_at.tzinfo is not None


def test_getters_name_the_missing_id(db: Database) -> None:
    with db.session() as session:
        for getter, noun in (
            (get_experiment, "experiment"),
            (get_job, "job"),
            (get_architecture, "architecture"),
            (get_checkpoint, "checkpoint"),
            (get_retrain, "retrain"),
        ):
            with pytest.raises(NotFoundError, match=f"^no {noun} with id 123$"):
                getter(session, 123)


def test_add_architectures_is_insert_or_get(db: Database, experiment_id: int) -> None:
    with db.session() as session:
        first = add_architectures(session, experiment_id, [_arch(i) for i in range(5)])
        session.commit()
    with db.session() as session:
        # Same hashes again (one twice in the batch) plus a new one: no duplicates, same ids.
        again = add_architectures(
            session,
            experiment_id,
            [_arch(0, params=1), _arch(3), _arch(3), _arch(5)],
        )
        session.commit()
        assert {h: again[h] for h in ("h0000", "h0003")} == {
            "h0000": first["h0000"],
            "h0003": first["h0003"],
        }
        assert set(again) == {"h0000", "h0003", "h0005"}
        assert session.scalar(select(func.count()).select_from(Architecture)) == 6
        # The first row of a hash is kept.
        assert get_architecture(session, first["h0000"]).params == 0


def test_add_architectures_rejects_bad_input(db: Database, experiment_id: int) -> None:
    with db.session() as session:
        with pytest.raises(NotFoundError, match="no experiment with id 999"):
            add_architectures(session, 999, [_arch(0)])
        with pytest.raises(StorageError, match="architecture h0000: spec is not valid JSON"):
            add_architectures(session, experiment_id, [_arch(0, spec="{oops")])
        with pytest.raises(StorageError, match="spec must be JSON text, got dict"):
            add_architectures(session, experiment_id, [_arch(0, spec={"a": 1})])
        assert add_architectures(session, experiment_id, []) == {}


def test_add_scores_is_idempotent_and_updates_latest(db: Database, experiment_id: int) -> None:
    job_id = _job(db, experiment_id)
    with db.session() as session:
        ids = add_architectures(session, experiment_id, [_arch(i) for i in range(3)])
        first = add_checkpoint(session, job_id, 100, "a.pt").id
        second = add_checkpoint(session, job_id, 200, "b.pt").id
        batch = [
            ScoreIn(ids["h0000"], 40.0, 1.5, 512, 1, "full", first, job_id),
            ScoreIn(ids["h0001"], 50.0, float("nan"), 512, 1, "full", first, job_id),
            # No checkpoint: idempotent through the partial unique index.
            ScoreIn(ids["h0002"], 60.0, 2.5, 512, 1, "racing", None, job_id),
        ]
        add_scores(session, batch)
        session.commit()
    with db.session() as session:
        add_scores(session, batch)  # a re-run after a crash
        session.commit()
        assert session.scalar(select(func.count()).select_from(Score)) == 3
        assert get_architecture(session, ids["h0000"]).latest_error == 40.0
        assert get_architecture(session, ids["h0001"]).latest_loss is None  # NaN stored as NULL
        partial = {key: get_architecture(session, ident).latest_partial for key, ident in ids.items()}
        assert partial == {"h0000": False, "h0001": False, "h0002": True}  # racing dropped h0002

        # Rescored in full against a newer checkpoint, h0002 is no longer partial.
        add_scores(session, [ScoreIn(ids["h0002"], 61.0, 2.4, 512, 1, "full", second, job_id)])
        assert get_architecture(session, ids["h0002"]).latest_partial is False

        # A newer checkpoint's score becomes the latest; re-sending the old one changes nothing.
        add_scores(session, [ScoreIn(ids["h0000"], 30.0, 1.0, 512, 2, "full", second, job_id)])
        add_scores(session, batch[:1])
        session.commit()
        architecture = get_architecture(session, ids["h0000"])
        assert (architecture.latest_error, architecture.latest_loss) == (30.0, 1.0)
        assert session.scalar(select(func.count()).select_from(Score)) == 5

        assert scored_hashes(session, experiment_id, first) == {"h0000", "h0001"}
        assert scored_hashes(session, experiment_id, second) == {"h0000", "h0002"}
        assert scored_hashes(session, experiment_id, None) == {"h0002"}
        assert scored_hashes(session, experiment_id, None, method="full") == set()


def test_add_scores_rejects_unknown_ids(db: Database, experiment_id: int) -> None:
    with db.session() as session:
        ids = add_architectures(session, experiment_id, [_arch(0)])
        with pytest.raises(NotFoundError, match="no architecture with id 999"):
            add_scores(session, [ScoreIn(999, 1.0, 1.0, 1, 1)])
        with pytest.raises(NotFoundError, match="no checkpoint with id 77"):
            add_scores(session, [ScoreIn(ids["h0000"], 1.0, 1.0, 1, 1, checkpoint_id=77)])
        with pytest.raises(StorageError, match="error must be a number"):
            add_scores(session, [ScoreIn(ids["h0000"], math.nan, 1.0, 1, 1)])


def test_metrics_replace_re_run_steps(db: Database, experiment_id: int) -> None:
    job_id = _job(db, experiment_id, "train")
    with db.session() as session:
        add_metrics(session, [MetricIn(job_id, step, "loss", 10.0 - step) for step in range(5)])
        session.commit()
    with db.session() as session:
        # Resumed from step 2: steps 3 and 4 are re-run; the last value in a batch wins.
        add_metrics(
            session,
            [
                MetricIn(job_id, 3, "loss", 0.5),
                MetricIn(job_id, 4, "loss", 99.0),
                MetricIn(job_id, 4, "loss", 0.25),
                MetricIn(job_id, 5, "loss", math.nan),
            ],
        )
        session.commit()
        points = session.execute(
            select(Metric.step, Metric.value).where(Metric.job_id == job_id).order_by(Metric.step)
        ).all()
        assert [tuple(point) for point in points] == [
            (0, 10.0),
            (1, 9.0),
            (2, 8.0),
            (3, 0.5),
            (4, 0.25),
            (5, None),
        ]
        with pytest.raises(NotFoundError, match="no job with id 404"):
            add_metrics(session, [MetricIn(404, 0, "loss", 1.0)])


def test_checkpoints_upsert_by_step(db: Database, experiment_id: int) -> None:
    job_id = _job(db, experiment_id, "train")
    with db.session() as session:
        first = add_checkpoint(session, job_id, 100, "old.pt", {"loss": 2.0})
        session.commit()
        again = add_checkpoint(session, job_id, 100, "new.pt", {"loss": 1.0})
        session.commit()
        assert again.id == first.id
        assert (again.path, again.metrics) == ("new.pt", {"loss": 1.0})


def test_retrains_update_browse_columns(db: Database, experiment_id: int) -> None:
    job_id = _job(db, experiment_id, "retrain")
    with db.session() as session:
        arch = add_architectures(session, experiment_id, [_arch(0)])["h0000"]
        set_retrain_state(session, [arch], "queued")
        assert get_architecture(session, arch).retrain_state == "queued"
        first = start_retrain(session, arch, job_id, epochs=3)
        assert get_architecture(session, arch).retrain_state == "running"
        curve = [{"epoch": 1, "val_acc": 80.0, "train_loss": float("inf")}]
        finish_retrain(session, first.id, test_acc=91.0, best_val_acc=92.0, curve=curve)
        session.commit()
        architecture = get_architecture(session, arch)
        assert (architecture.best_test_acc, architecture.retrain_state) == (91.0, "done")
        # Non-finite floats in JSON become null rather than invalid JSON.
        assert get_retrain(session, first.id).curve == [
            {"epoch": 1, "val_acc": 80.0, "train_loss": None}
        ]
        with pytest.raises(StorageError, match=f"retrain {first.id} already finished"):
            finish_retrain(session, first.id, test_acc=1.0, best_val_acc=None, curve=[])

        # A worse second retrain keeps the best accuracy; a failed one marks the state.
        second = start_retrain(session, arch, job_id, epochs=3)
        finish_retrain(session, second.id, test_acc=85.0, best_val_acc=None, curve=[])
        third = start_retrain(session, arch, job_id, epochs=3)
        fail_retrain(session, third.id, curve=[{"epoch": 1}])
        session.commit()
        architecture = get_architecture(session, arch)
        assert (architecture.best_test_acc, architecture.retrain_state) == (91.0, "failed")
        with pytest.raises(StorageError, match="unknown retrain state 'dnoe'"):
            set_retrain_state(session, [arch], "dnoe")


def test_events_take_the_experiment_from_the_job(db: Database, experiment_id: int) -> None:
    job_id = _job(db, experiment_id)
    with db.session() as session:
        event = add_event(session, "scored 512 architectures", job_id=job_id)
        assert (event.experiment_id, event.level) == (experiment_id, "info")
        with pytest.raises(StorageError, match="unknown event level 'loud'"):
            add_event(session, "x", level="loud")
