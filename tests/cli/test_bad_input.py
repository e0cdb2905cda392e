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
from tests.cli.support import (
    NB201_SEARCH,
    TINY_SEARCH,
    TRUTH_HEADER,
    assert_one_line_error,
    dump,
    retrain_experiment,
    smash,
    write_truth_table,
)

pytestmark = pytest.mark.xdist_group("demo")

SEARCH = ["search", *TINY_SEARCH, "--archs", "4", "--max-steps", "2"]
NB201 = ["search", *NB201_SEARCH, "--archs", "4", "--max-steps", "2"]

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
    # The nb201 options: weight sharing and benchmark tables belong to nb201 presets.
    ([*SEARCH, "--weights", "shared"], 2, "--weights shared (plain weight sharing) needs an nb201 preset"),
    ([*SEARCH, "--weights", "tied"], 2, "--weights must be one of hypernet, shared, got 'tied'"),
    ([*SEARCH, "--truth-column", "cifar10"], 2, "--truth-column needs --truth (a benchmark table)"),
    ([*SEARCH, "--truth", "/no/such/table.csv"], 2, "--truth needs an nb201 preset"),
    ([*NB201, "--truth", "/no/such/table.csv"], 2, "--truth: /no/such/table.csv does not exist or is not a file"),
    ([*NB201, "--truth", "/"], 2, "--truth: / does not exist or is not a file"),
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


# A good row of the benchmark's table, and its columns (`support.TRUTH_HEADER`).
HEADER = ",".join(TRUTH_HEADER)
GOOD = "93.5,70.25,44.0,|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|,x"
TABLES = [
    # (table id, its bytes, further options, part of the message); every one exits 2:
    # a table that cannot be used is a bad value of --truth, whether or not it can be read.
    ("no-string-column", b"CIFAR10TestAccuracy200Epochs\n93.5\n", [], "has no column 'ArchitectureString'"),
    ("no-accuracy-column", b"ArchitectureString\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|\n", [],
     "has no column 'CIFAR10TestAccuracy200Epochs'"),
    ("accuracy-120", f"{HEADER}\n{GOOD}\n{GOOD.replace('93.5', '120', 1)}\n".encode(), [],
     "line 3: CIFAR10TestAccuracy200Epochs must be a percentage, got 120.0"),
    ("accuracy-nan", f"{HEADER}\n{GOOD.replace('93.5', 'nan', 1)}\n".encode(), [], "must be a percentage, got nan"),
    ("accuracy-inf", f"{HEADER}\n{GOOD.replace('93.5', '-inf', 1)}\n".encode(), [], "must be a percentage, got -inf"),
    ("accuracy-text", f"{HEADER}\n{GOOD.replace('93.5', 'high', 1)}\n".encode(), [],
     "line 2: CIFAR10TestAccuracy200Epochs is not a number: 'high'"),
    ("accuracy-empty", f"{HEADER}\n{GOOD.replace('93.5', '', 1)}\n".encode(), [], "is not a number: ''"),
    ("bad-cell", f"{HEADER}\n{GOOD.replace('nor_conv_3x3~0', 'conv_5x5~0', 1)}\n".encode(), [],
     "line 2: invalid nb201 cell: edge 1<-0: unknown op 'conv_5x5'"),
    ("short-cell", f"{HEADER}\n93.5,70.25,44.0,|none~0|+|none~0|,x\n".encode(), [], "line 2: invalid nb201 cell: <string>: expected 3"),
    ("header-only", f"{HEADER}\n".encode(), [], "has no rows"),
    ("empty", b"", [], "has no column 'ArchitectureString' (columns: none)"),
    ("binary", bytes(range(256)) * 16, [], "cannot read truth table"),
    ("other-column", f"{HEADER}\n{GOOD}\n".encode(), ["--truth-column", "svhn"], "unknown truth column 'svhn'"),
    # The synthetic data set is no data set of the benchmark: which column is not implied.
    ("no-column-given", f"{HEADER}\n{GOOD}\n".encode(), ["--no-column"], "--truth-column is needed"),
]


@pytest.mark.parametrize(("content", "options", "message"), [case[1:] for case in TABLES], ids=[case[0] for case in TABLES])
def test_a_bad_truth_table_is_one_line_and_changes_nothing(
    demo_db: str, tmp_path: Path, content: bytes, options: list[str], message: str
) -> None:
    path = sqlite_path(demo_db)
    assert path is not None
    table = tmp_path / "table.csv"
    table.write_bytes(content)
    column = [] if "--no-column" in options else ["--truth-column", "cifar10"]
    options = [option for option in options if option != "--no-column"]
    before = dump(path)
    line = assert_one_line_error(smash(demo_db, *NB201, "--truth", str(table), *column, *options), 2)
    assert message in line and (str(table) in line or "truth column" in line or "--truth-column" in line), line
    assert dump(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "table.csv"]  # no files written either


def test_a_good_truth_table_passes_the_same_checks(tmp_path: Path) -> None:
    """The control of the cases above: the benchmark's layout, every cell, is accepted;
    so is a table a spreadsheet saved (a byte-order mark, CRLF line ends, columns reordered)."""
    from engine.plans import SearchRequest, plan_search
    from engine.truth import TruthConfig, load_truth

    table = write_truth_table(tmp_path / "table.csv")
    plan = plan_search(SearchRequest(preset="nb201-tiny", truth=str(table), truth_column="cifar10"))
    assert plan.truth is not None and plan.truth.path == str(table.resolve())
    assert len(load_truth(plan.truth).by_class) == 6466
    saved = tmp_path / "saved.csv"
    saved.write_bytes(b"\xef\xbb\xbf" + f"ArchitectureString,CIFAR100TestAccuracy200Epochs\r\n{GOOD.split(',')[3]},70.25\r\n".encode())
    (accuracy,) = load_truth(TruthConfig(str(saved), "cifar100")).by_class.values()
    assert accuracy == 70.25


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
