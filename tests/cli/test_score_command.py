"""`smash score`: score chosen architectures again, as a user types it."""

from __future__ import annotations

import contextlib
import json
import os
import signal

import pytest
from sqlalchemy import select

from engine.config import ScoreConfig
from engine.params import score_method
from storage.db import open_database
from storage.models import Architecture, Job, Score
from tests.cli.support import assert_one_line_error, smash

pytestmark = pytest.mark.xdist_group("demo")


def test_score_ids_again_with_more_z_draws(demo_db: str) -> None:
    with open_database(demo_db) as db, db.session() as session:
        first, second = session.scalars(select(Architecture.id).order_by(Architecture.id).limit(2)).all()
    result = smash(demo_db, "score", f"{first},{second}", "--z-draws", "2", "--score-images", "40",
                   "--device", "cpu", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    label = score_method("full", ScoreConfig(images=40, z_draws=2))
    with open_database(demo_db) as db, db.session() as session:
        job = session.get(Job, answer["job_id"])
        assert job is not None and job.kind == "score" and job.state == "done"
        scores = session.scalars(select(Score).where(Score.job_id == job.id)).all()
        assert sorted(s.architecture_id for s in scores) == [first, second]
        assert {(s.method, s.z_draws, s.images) for s in scores} == {(label, 2, 40)}
    # The JSON lists the architectures with their newest score: this one.
    assert {row["id"] for row in answer["architectures"]} == {first, second}
    newest = {row["id"]: row["err"] for row in answer["architectures"]}
    assert all(newest[s.architecture_id] == s.error for s in scores)


def test_score_the_top_n_of_an_experiment(demo_db: str) -> None:
    result = smash(demo_db, "score", "--top", "3", "--score-images", "30", "--device", "cpu", "--detach", "--json")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    if answer.get("worker_pid"):  # --detach launched a worker: it would outlive the test
        with contextlib.suppress(ProcessLookupError):
            os.kill(answer["worker_pid"], signal.SIGKILL)
    with open_database(demo_db) as db, db.session() as session:
        job = session.get(Job, answer["job_id"])
        assert job is not None and job.kind == "score"
        ranked = session.scalars(
            select(Architecture.id).order_by(Architecture.latest_partial, Architecture.latest_error).limit(3)
        ).all()
        assert job.params["architecture_ids"] == list(ranked)
        assert job.params["score"]["images"] == 30 and job.params["checkpoint_id"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["score"], "give architecture ids or --top N"),
        (["score", "1", "--top", "2"], "give architecture ids or --top N"),
        (["score", "1", "--z-draws", "0"], "z_draws must be at least 1"),
        (["score", "x1"], "architecture id must be a positive integer"),
        (["score", "1", "--checkpoint", "99"], "no checkpoint with id 99"),
    ],
)
def test_bad_score_requests_are_refused_before_anything_is_queued(
    demo_db: str, args: list[str], message: str
) -> None:
    with open_database(demo_db) as db, db.session() as session:
        before = session.scalars(select(Job.id)).all()
    line = assert_one_line_error(smash(demo_db, *args), 1 if "checkpoint with id" in message else 2)
    assert message in line
    with open_database(demo_db) as db, db.session() as session:
        assert session.scalars(select(Job.id)).all() == before
