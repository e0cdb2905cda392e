"""Bad input: one line on stderr, exit code 1 or 2, no traceback, nothing in the database changed."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from storage.db import sqlite_path
from tests.cli.support import TINY_SEARCH, assert_one_line_error, dump, smash

pytestmark = pytest.mark.xdist_group("demo")

SEARCH = ["search", *TINY_SEARCH, "--archs", "4", "--max-steps", "2"]

CASES = [
    # (arguments, exit code, part of the message)
    (
        ["search", "--dataset", "imagenet-nope", *TINY_SEARCH[2:]],
        2,
        "unknown data set 'imagenet-nope'",
    ),
    ([*SEARCH, "--dataset", "npz:/no/such/file.npz"], 2, "/no/such/file.npz does not exist"),
    ([*SEARCH, "--dataset", "folder:/no/such/folder"], 2, "/no/such/folder does not exist"),
    ([*SEARCH, "--preset", "huge"], 2, "unknown preset 'huge'"),
    ([*SEARCH, "--strategy", "greedy"], 2, "unknown search strategy 'greedy'"),
    ([*SEARCH, "--batch-size", "0"], 2, "--batch-size must be at least 1"),
    ([*SEARCH, "--batch-size", "1000"], 2, "--batch-size 1000 is more than the"),
    ([*SEARCH, "--val-size", "0"], 2, "the validation split has 0 images"),
    ([*SEARCH, "--archs", "0"], 2, "--archs must be at least 1"),
    ([*SEARCH, "--hypernet", "huge"], 2, "unknown HyperNet size"),
    ([*SEARCH, "--name", "demo"], 1, "an experiment named 'demo' already exists"),
    (["ls", "--filter", "err<<3"], 2, "one operator per term"),
    (["ls", "--filter", "size<3"], 2, "unknown field 'size'"),
    (["ls", "--sort", "size"], 2, "unknown sort field 'size'"),
    (["ls", "--experiment", "nope"], 1, "no experiment named 'nope'"),
    (["ls", "--experiment", "99"], 1, "no experiment with id 99"),
    (["show", "999"], 1, "no architecture with id 999"),
    (["show", "abc"], 2, "architecture id must be a positive integer"),
    (["retrain", "999"], 1, "no architecture with id 999"),
    (["retrain", "1", "--epochs", "0"], 2, "epochs must be at least 1"),
    (["retrain", "1", "--batch-size", "1000"], 2, "fewer than one batch of 1000"),
    (["retrain", "1", "--lr", "-1"], 2, "lr must be positive"),
    (["cancel", "999"], 1, "no job with id 999"),
    (["pause", "999"], 1, "no job with id 999"),
    (["resume", "999"], 1, "no job with id 999"),
    (["resume", "1"], 1, "cannot resume job 1: it is done"),
    (["cancel", "1"], 1, "cannot cancel job 1: it is done"),
    (["retry", "999"], 1, "no job with id 999"),
    (["retry", "1"], 1, "cannot retry job 1: it is done"),
    (["jobs", "--state", "sleeping"], 2, "unknown job state(s) sleeping"),
    (["worker", "--device", "tpu"], 2, "unknown device 'tpu'"),
    (["worker", "--device", "cuda:7"], 2, "cuda:7"),
    (["worker", "--kinds", "train,bake"], 2, "unknown job kind(s) bake"),
    (["worker", "--heartbeat", "90"], 2, "must be shorter than the stale timeout"),
    # click's own usage errors, one line like the rest
    (["search", "--epochs", "abc"], 2, "Invalid value for '--epochs'"),
    (["search", "--bogus"], 2, "No such option: --bogus"),
    (["serch"], 2, "No such command 'serch'"),
    (["show"], 2, "Missing argument"),
]


@pytest.mark.parametrize(
    ("args", "code", "message"), CASES, ids=[" ".join(case[0][:3]) for case in CASES]
)
def test_bad_input_is_one_line_and_changes_nothing(
    demo_db: str, args: list[str], code: int, message: str
) -> None:
    path = sqlite_path(demo_db)
    assert path is not None
    before = dump(path)
    line = assert_one_line_error(smash(demo_db, *args), code)
    assert message in line
    assert dump(path) == before


def test_export_of_an_unknown_architecture_writes_no_folder(demo_db: str, tmp_path: Path) -> None:
    line = assert_one_line_error(smash(demo_db, "export", "999", str(tmp_path / "out")), 1)
    assert "no architecture with id 999" in line
    assert not (tmp_path / "out").exists()


def test_a_database_from_a_newer_smash_is_refused_untouched(demo_db: str) -> None:
    path = sqlite_path(demo_db)
    assert path is not None
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    connection.close()
    before = path.read_bytes()
    for args in (["ls"], ["jobs"], ["show", "1"], [*SEARCH]):
        line = assert_one_line_error(smash(demo_db, *args), 1)
        assert "was written by a newer smash (schema revision 9999_from_the_future)" in line
    assert path.read_bytes() == before


def test_a_corrupt_hypernet_checkpoint_is_a_one_line_error(demo_db: str, tmp_path: Path) -> None:
    path = sqlite_path(demo_db)
    assert path is not None
    connection = sqlite3.connect(path)
    (original,) = connection.execute("SELECT path FROM checkpoints").fetchone()
    corrupt = tmp_path / "corrupt.pt"
    shutil.copyfile(original, corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:300])  # a truncated file
    with connection:
        connection.execute("UPDATE checkpoints SET path = ?", (str(corrupt),))
        never = connection.execute(
            "SELECT id FROM architectures WHERE retrain_state IS NULL ORDER BY id"
        ).fetchone()[0]
    connection.close()
    before = dump(path)
    line = assert_one_line_error(smash(demo_db, "export", str(never), str(tmp_path / "out")), 1)
    assert f"checkpoint {corrupt} is unreadable or not a checkpoint" in line
    assert not (tmp_path / "out").exists()
    assert dump(path) == before
