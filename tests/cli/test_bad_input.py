"""Bad input: one line on stderr, exit code 1 or 2, no traceback, nothing in the database changed."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from smash_tui.runner.worker import Worker, WorkerConfig
from storage.db import open_database, sqlite_path
from storage.models import Job
from storage.queue import enqueue
from tests.cli.support import TINY_SEARCH, assert_one_line_error, dump, retrain_experiment, smash

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
    # Ids and integers: ASCII digits only, within what a database integer column holds.
    (["ls", "--experiment", "²"], 2, "experiment id must be a positive integer, got '²'"),
    (["jobs", "-e", "٣"], 2, "experiment id must be a positive integer, got '٣'"),
    (["ls", "-e", str(2**63)], 2, "experiment id must be between 1 and 2147483647"),
    (["jobs", "-e", str(10**30)], 2, "experiment id must be between 1 and 2147483647"),
    (["score", "--top", "1", "-e", str(2**63)], 2, "experiment id must be between 1 and"),
    (["score", "--top", str(2**63)], 2, "--top is too large: 9223372036854775808"),
    (["score", "--top", str(2**31)], 2, "--top is too large: 2147483648 (at most 2147483647)"),
    (["score", "--top", "-1"], 2, "--top must be at least 1, got -1"),
    (["score", "1", "--checkpoint", "²"], 2, "checkpoint id must be a positive integer"),
    (["demo", "--top", str(2**31)], 2, "--top is too large"),
    (["show", "²"], 2, "architecture id must be a positive integer, got '²'"),
    (["retrain", "٣"], 2, "architecture id must be a positive integer, got '٣'"),
    (["pause", str(2**31)], 2, "job id must be between 1 and 2147483647, got 2147483648"),
    (["cancel", str(2**63)], 2, "job id must be between 1 and 2147483647"),
    (["retry", str(10**30)], 2, "job id must be between 1 and 2147483647"),
    (["resume", ""], 2, "job id must be a positive integer, got ''"),
    (["ls", "--limit", str(2**63)], 2, "'--limit' / '-n': Input should be less than or equal to 2147483647"),
    (["jobs", "--limit", str(10**30)], 2, "Input should be less than or equal to 2147483647"),
    (["ls", "--limit", "0"], 2, "Input should be greater than or equal to 1"),
    (["worker", "--threads", str(2**31)], 2, "'--threads': Input should be less than or equal to 1024"),
    ([*SEARCH, "--threads", str(2**63)], 2, "Input should be less than or equal to 1024"),
    (["retrain", "1", "--threads", str(10**30)], 2, "Input should be less than or equal to 1024"),
    ([*SEARCH, "--seed", str(2**31)], 2, "seed is too large: 2147483648"),
    ([*SEARCH, "--epochs", str(2**63)], 2, "epochs is too large: 9223372036854775808"),
    ([*SEARCH, "--archs", str(10**30)], 2, "archs is too large: 1000000000000000000000000000000"),
    (["retrain", "1", "--epochs", str(2**31)], 2, "retrain.epochs is too large"),
    (["score", "1", "--z-draws", "0"], 2, "z_draws"),
    # Numbers: finite, and within what float32 holds.
    (["retrain", "1", "--lr", "1e308"], 2, "retrain.lr is too large: 1e+308"),
    (["retrain", "1", "--lr", "inf"], 2, "retrain.lr must be a finite number, got inf"),
    ([*SEARCH, "--lr", "nan"], 2, "lr must be a finite number, got nan"),
    ([*SEARCH, "--val-size", "inf"], 2, "val-size must be a finite number, got inf"),
    (["worker", "--stale-after", "1e308"], 2, "stale_after_s must be a positive number of seconds up to 86400"),
    (["worker", "--poll", "inf"], 2, "poll_s must be a positive number of seconds"),
    (["worker", "--heartbeat", "nan"], 2, "heartbeat_s must be a positive number of seconds"),
    # Text: no control characters, nothing empty where something is needed.
    ([*SEARCH, "--name", "a\x1b[31mb"], 2, "name contains control or invisible characters"),
    ([*SEARCH, "--name", ""], 2, "name is empty"),
    ([*SEARCH, "--data-root", ""], 2, "data-root is empty"),
    (["worker", "--kinds", ""], 2, "no job kinds given"),
    (["jobs", "--state", " , "], 2, "--state names no state"),
    (["ls", "-e", "a\x00b"], 1, "no experiment named"),
    # The filter language: no endless expressions, no number beyond a float.
    (["ls", "--filter", "err<1 " * 1200], 2, "the filter is 7200 characters long; at most 1000"),
    (["ls", "--filter", " ".join(["err<1"] * 51)], 2, "the filter has 51 terms; at most 50"),
    (["ls", "--filter", "err<1e400"], 2, "number out of range in 'err<1e400'"),
    (["ls", "--filter", "params<" + "9" * 400], 2, "number out of range"),
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
    (stored,) = connection.execute("SELECT path FROM checkpoints").fetchone()
    with open_database(demo_db) as db:
        original = db.files_dir / stored  # recorded relative to the files root
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


def test_the_worker_fails_stored_jobs_whose_settings_cannot_work(tmp_path: Path) -> None:
    """Stored JSON is checked again before a job runs: one line naming the setting."""
    db = open_database(str(tmp_path / "smash.db"))
    experiment_id, (arch,) = retrain_experiment(db, 1)
    expected = [
        # (kind, stored params, the one line the job fails with)
        ("retrain", {"architecture_id": arch, "retrain": {"epochs": None}}, "retrain.epochs must be an integer, got None"),
        ("retrain", {"architecture_id": arch, "retrain": {"batch_size": 2**63}}, "retrain.batch_size is too large: 9223372036854775808 (at most 2147483647)"),
        ("retrain", {"architecture_id": arch, "retrain": {"epochs": 10**30}}, "retrain.epochs is too large"),
        ("retrain", {"architecture_id": arch, "retrain": {"lr": 1e308}}, "retrain.lr is too large: 1e+308"),
        ("retrain", {"architecture_id": arch, "retrain": {"lr": 10**400}}, "retrain.lr must be a finite number"),
        ("train", {"train": {"max_steps": 2**63}}, "train.max_steps is too large"),
        ("train", {"train": {"lr": None}}, "train.lr must be a number, got None"),
        ("train", None, "train job: params must be an object, got NoneType"),
        ("search", {"racing": None}, "racing must be true or false, got None"),
        ("search", {"search": {"architectures": 10**30}}, "search.architectures is too large"),
        ("score", {"architecture_ids": [None]}, "architecture id must be an integer, got None"),
        ("score", {"architecture_ids": [arch], "checkpoint_id": 2**63}, "checkpoint_id is too large"),
        # JSON has no NaN (enqueue refuses it), but a stored text may: json.loads reads it.
        ("retrain", f'{{"architecture_id": {arch}, "retrain": {{"lr": NaN}}}}', "retrain.lr must be a finite number, got nan"),
        ("train", '{"train": {"lr": -Infinity}}', "train.lr must be a finite number, got -inf"),
    ]
    jobs = []
    with db.session() as session:
        for kind, params, _ in expected:
            job = enqueue(session, experiment_id, kind, {} if isinstance(params, str) else params)
            if isinstance(params, str):
                session.execute(
                    text("UPDATE jobs SET params = :params WHERE id = :id"),
                    {"params": params, "id": job.id},
                )
            jobs.append(job.id)
        session.commit()
    assert Worker(db, WorkerConfig(device="cpu", once=True, heartbeat_s=0.2)).run() == 0
    with db.session() as session:
        for job_id, (_, _, message) in zip(jobs, expected):
            job = session.get(Job, job_id, populate_existing=True)
            assert job is not None and job.state == "failed", (job_id, message)
            assert job.error is not None and job.error.startswith(message), job.error
            assert "\n" not in job.error and "Traceback" not in job.error
    db.dispose()
