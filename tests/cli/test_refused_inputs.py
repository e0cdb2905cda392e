"""Settings and data sets that cannot work are refused before anything is queued.

Each case runs the command a user types, on a database that already holds an
experiment, and checks what the user and the database see: exit code 1 or 2, one
``error:`` line, no traceback, the database unchanged as SQL, and no worker asked to
run anything. The commands run with ``--detach``, and the hand-over to a worker is
recorded instead of run, so that a check that stopped refusing fails fast (exit 0,
a changed database) instead of training on data that cannot work.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import ArrayLike

from engine.config import MIN_VALIDATION_IMAGES
from engine.probe import MAX_CLASSES, MIN_IMAGE_SIDE
from storage.db import open_database
from tests.cli.support import assert_one_line_error, dump, retrain_experiment, smash

# A small search that would queue at once: the sets below hold 40 training images, of
# which 10 are validation images, so one batch of 25 fits what is left.
SEARCH = [
    "search",
    "--preset", "tiny",
    "--hypernet", "compact",
    "--batch-size", "25",
    "--archs", "4",
    "--max-steps", "2",
    "--eval-archs", "1",
    "--val-size", str(MIN_VALIDATION_IMAGES),
    "--device", "cpu",
    "--detach",
]  # fmt: skip
# The synthetic data set at the smallest budgets, for the settings that need no files.
SYNTHETIC = [
    "search",
    "--preset", "tiny",
    "--hypernet", "compact",
    "--batch-size", "25",
    "--archs", "4",
    "--max-steps", "2",
    "--synthetic-train", "300",
    "--synthetic-test", "100",
    "--val-size", "100",
    "--device", "cpu",
    "--detach",
]  # fmt: skip
DEMO = ["demo", "--epochs", "1", "--max-steps", "2", "--archs", "2", "--batch-size", "25",
        "--retrain-batch-size", "25", "--synthetic-train", "300", "--synthetic-test", "100",
        "--val-size", "100", "--device", "cpu"]  # fmt: skip


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A SQLite database holding one experiment with one architecture and no jobs."""
    path = tmp_path / "db" / "smash.db"
    path.parent.mkdir()
    db = open_database(str(path))
    try:
        retrain_experiment(db, 1)
    finally:
        db.dispose()
    return path


@pytest.fixture
def handed_over(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Records what the commands hand to a worker (none is launched or run here)."""
    calls: list[tuple[str, Any]] = []

    def hand_over(_db: object, job_ids: Sequence[int], **_options: object) -> None:
        calls.append(("hand_over", list(job_ids)))

    def run_foreground(_db: object, job_ids: Sequence[int], **_options: object) -> None:
        calls.append(("run_foreground", list(job_ids)))

    monkeypatch.setattr("smash_tui.cli.search.hand_over", hand_over)
    monkeypatch.setattr("smash_tui.cli.search.run_foreground", run_foreground)
    monkeypatch.setattr("smash_tui.cli.retrain.hand_over", hand_over)
    return calls


def job_count(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("SELECT count(*) FROM jobs").fetchone()[0])
    finally:
        connection.close()


def npz_set(folder: Path, train: ArrayLike, test: ArrayLike, side: int = 8) -> str:
    """A ``train.npz``/``test.npz`` folder (engine.data's x/y layout) with these labels.

    The images are grayscale zeros: the checks read only their header, and the
    labels decide the rest.
    """
    folder.mkdir()
    for name, labels in (("train", train), ("test", test)):
        y = np.asarray(labels, dtype=np.int64)
        np.savez(folder / f"{name}.npz", x=np.zeros((len(y), side, side), np.uint8), y=y)
    return f"npz:{folder}"


def assert_refused_untouched(
    path: Path, args: Sequence[str], code: int, handed_over: list[tuple[str, Any]]
) -> str:
    """Run ``smash ARGS`` on ``path``: one error line with ``code``, nothing written or run."""
    before = dump(path)
    line = assert_one_line_error(smash(str(path), *args), code)
    assert dump(path) == before
    assert job_count(path) == 0
    assert handed_over == []
    return line


# --- 1. seeds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([*SYNTHETIC, "--seed", "-1"], "seed must be at least 0, got -1"),
        ([*DEMO, "--seed", "-1"], "seed must be >= 0, got -1"),
        (
            ["retrain", "1", "--epochs", "1", "--seed", "-1", "--detach"],
            "seed must be at least 0, got -1",
        ),
        (
            ["retrain", "1", "--epochs", "1", "--seed", str(2**31), "--detach"],
            "seed is too large: 2147483648",
        ),
    ],
    ids=["search", "demo", "retrain", "retrain-overflow"],
)
def test_a_seed_out_of_range_is_refused_before_anything_is_queued(
    db_path: Path, handed_over: list[tuple[str, Any]], args: list[str], message: str
) -> None:
    # Before the fix these were queued and failed inside the job (or with an OverflowError).
    line = assert_refused_untouched(db_path, args, 2, handed_over)
    assert message in line, line


def test_seed_zero_is_queued(db_path: Path, handed_over: list[tuple[str, Any]]) -> None:
    """The control of the seed cases: the lowest seed goes through the same path and is queued."""
    result = smash(str(db_path), *SYNTHETIC, "--seed", "0")
    assert result.exit_code == 0, result.stderr
    assert job_count(db_path) == 2
    assert [call for call, _ in handed_over] == ["hand_over"]


# --- 2 and 3. npz data sets: image size and labels ---------------------------------------------

NPZ_CASES = [
    # (id, train labels, test labels, image side, part of the message)
    ("1x1-images", np.arange(40) % 2, np.arange(10) % 2, 1,
     f"images are 1x1 pixels; a network halves them twice, so they need at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}"),
    ("3x3-images", np.arange(40) % 2, np.arange(10) % 2, MIN_IMAGE_SIDE - 1, "images are 3x3 pixels"),
    ("one-class", np.zeros(40), np.zeros(10), 8, "the training split has only one class (0)"),
    ("100001-classes", np.arange(MAX_CLASSES + 1), np.arange(10), 4,
     f"label {MAX_CLASSES} would make {MAX_CLASSES + 1} classes; at most {MAX_CLASSES}"),
    # Class 2 has test images but nothing to learn it from.
    ("class-only-in-test", np.arange(40) % 2, np.arange(10) % 3, 8,
     "the training split has no images of class(es) 2; labels must be 0-based and contiguous"),
    # Labels 0 and 2: class 1 would be an output no image ever trains.
    ("skipped-class", (np.arange(40) % 2) * 2, (np.arange(10) % 2) * 2, 8,
     "the training split has no images of class(es) 1; labels must be 0-based and contiguous"),
    ("labels-from-one", np.arange(40) % 2 + 1, np.arange(10) % 2 + 1, 8,
     "the training split has no images of class(es) 0"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("train", "test", "side", "message"),
    [case[1:] for case in NPZ_CASES],
    ids=[case[0] for case in NPZ_CASES],
)
def test_an_npz_set_that_cannot_be_trained_on_is_refused_in_one_line(
    db_path: Path,
    tmp_path: Path,
    handed_over: list[tuple[str, Any]],
    train: np.ndarray,
    test: np.ndarray,
    side: int,
    message: str,
) -> None:
    dataset = npz_set(tmp_path / "set", train, test, side)
    # A data set that cannot work is a failure of the data (1), not of the command line (2).
    line = assert_refused_untouched(db_path, [*SEARCH, "--dataset", dataset], 1, handed_over)
    assert message in line, line
    assert str(tmp_path / "set") in line  # the user is told which data set


def test_a_good_npz_set_passes_the_same_checks_and_is_queued(
    db_path: Path, tmp_path: Path, handed_over: list[tuple[str, Any]]
) -> None:
    """The control of the cases above: the same layout with usable labels and images is queued."""
    dataset = npz_set(tmp_path / "set", np.arange(40) % 3, np.arange(10) % 3, MIN_IMAGE_SIDE)
    result = smash(str(db_path), *SEARCH, "--dataset", dataset)
    assert result.exit_code == 0, result.stderr
    assert job_count(db_path) == 2
    assert [call for call, _ in handed_over] == ["hand_over"]


# --- 4. the validation split ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [*SYNTHETIC, "--val-size", "1"],
        [*DEMO, "--val-size", "1"],
        [*SYNTHETIC, "--val-size", str(MIN_VALIDATION_IMAGES - 1)],
    ],
    ids=["search", "demo", "search-one-short"],
)
def test_a_validation_split_too_small_to_rank_on_is_refused(
    db_path: Path, handed_over: list[tuple[str, Any]], args: list[str]
) -> None:
    # --val-size 1 is a count (a fraction is below 1): one validation image ranks nothing.
    count = int(args[-1])
    line = assert_refused_untouched(db_path, args, 2, handed_over)
    assert f"the validation split has {count} images" in line, line
    assert f"needs at least {MIN_VALIDATION_IMAGES} (set val_size)" in line


def test_an_npz_validation_split_of_one_image_is_refused(
    db_path: Path, tmp_path: Path, handed_over: list[tuple[str, Any]]
) -> None:
    dataset = npz_set(tmp_path / "set", np.arange(40) % 2, np.arange(10) % 2)
    line = assert_refused_untouched(
        db_path, [*SEARCH, "--dataset", dataset, "--val-size", "1"], 2, handed_over
    )
    assert "the validation split has 1 images" in line, line


# --- no database file for a refused search ------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "code"),
    [("search-npz-one-class", 1), ("search-val-size-1", 2), ("demo-val-size-1", 2)],
)
def test_a_refused_search_creates_no_database(
    tmp_path: Path, handed_over: list[tuple[str, Any]], case: str, code: int
) -> None:
    """The data set is checked before the database is opened: a refused search on a new
    --db path leaves no file behind (on a server, no schema)."""
    args = {
        "search-npz-one-class": lambda: [
            *SEARCH,
            "--dataset",
            npz_set(tmp_path / "set", np.zeros(40), np.zeros(10)),
        ],
        "search-val-size-1": lambda: [*SYNTHETIC, "--val-size", "1"],
        "demo-val-size-1": lambda: [*DEMO, "--val-size", "1"],
    }[case]()
    path = tmp_path / "new" / "smash.db"
    path.parent.mkdir()
    assert_one_line_error(smash(str(path), *args), code)
    assert not path.exists()
    assert handed_over == []
