"""Racing's partial errors in `smash ls` and `smash show`: marked, and ranked after complete ones."""

from __future__ import annotations

import json
from pathlib import Path

from storage.db import open_database
from storage.records import ScoreIn, add_scores
from tests.cli.support import retrain_experiment, smash


def test_partial_errors_rank_after_complete_ones_and_are_marked(tmp_path: Path) -> None:
    path = str(tmp_path / "smash.db")
    with open_database(path) as db:
        _, (complete, raced, better, unscored) = retrain_experiment(db, 4)
        with db.session() as session:
            add_scores(
                session,
                [
                    ScoreIn(complete, 40.0, 1.2, 5000, 1, "full"),
                    # Dropped by racing after one slice that happened to be easy for it:
                    # a lower error than either complete score, on other, fewer images.
                    ScoreIn(raced, 30.0, 1.0, 200, 1, "racing"),
                    ScoreIn(better, 35.0, 1.1, 5000, 1, "full"),
                ],
            )
            session.commit()

    rows = json.loads(smash(path, "ls", "--json").stdout)
    assert [(r["id"], r["err"], r["partial"]) for r in rows] == [
        (better, 35.0, False),
        (complete, 40.0, False),
        (raced, 30.0, True),
        (unscored, None, None),
    ]
    worst_first = json.loads(smash(path, "ls", "--sort", "-err", "--json").stdout)
    assert [r["id"] for r in worst_first] == [raced, complete, better, unscored]

    table = smash(path, "ls").stdout
    assert "30.00*" in table and "35.00*" not in table
    assert "* partial: racing dropped it after part of the validation images" in table
    assert "partial: racing dropped it after 200 images" in smash(path, "show", str(raced)).stdout
    assert "partial" not in smash(path, "show", str(better)).stdout
