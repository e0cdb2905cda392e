"""Fixtures of the CLI tests: isolated homes, one torch thread, and finished runs to browse.

`demo_run` is a ``smash demo`` (banks, the `tiny` preset); `nb201_run` a ``smash search``
on `nb201-tiny` with a benchmark table. Tests that hold for both kinds take `run_db`, a
private copy of either.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.db import normalize_url
from tests.cli.support import DEMO, NB201_SEARCH, smash, write_truth_table


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Keep the developer's database out.
    monkeypatch.setenv("SMASH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SMASH_DB", raising=False)
    monkeypatch.delenv("SMASH_FILES", raising=False)
    yield


@dataclass(frozen=True)
class DemoRun:
    """The database a ``smash demo`` run left, and what the run printed."""

    path: Path  # the SQLite file
    exit_code: int  # the demo's exit code
    stdout: str  # its results
    stderr: str  # its progress and notes


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One tiny ``smash demo`` per test process: a trained HyperNet, scores, one retrain."""
    path = tmp_path_factory.mktemp("demo") / "smash.db"
    result = smash(str(path), *DEMO, "--name", "demo")
    return DemoRun(path, result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="session")
def nb201_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One tiny nb201 search per test process, as the demo's: a trained HyperNet and 6 scored cells.

    Its experiment has a benchmark table of every cell (`support.bench_accuracy`), so each
    scored cell carries its benchmark accuracy.
    """
    folder = tmp_path_factory.mktemp("nb201")
    table = write_truth_table(folder / "truth.csv")
    result = smash(
        str(folder / "smash.db"),
        "search", *NB201_SEARCH,
        "--epochs", "1", "--max-steps", "4", "--archs", "6",
        "--truth", str(table), "--truth-column", "cifar10", "--name", "nb201",
    )  # fmt: skip
    return DemoRun(folder / "smash.db", result.exit_code, result.stdout, result.stderr)


def _private_copy(run: DemoRun, tmp_path: Path) -> str:
    """A private copy of a run's database with its checkpoints (recorded relative to its
    files folder, so the copy needs its own)."""
    assert run.exit_code == 0, run.stderr
    path = tmp_path / "copy" / "smash.db"
    path.parent.mkdir()
    shutil.copyfile(run.path, path)
    files = run.path.parent / "smash-files" / "checkpoints"
    shutil.copytree(files, path.parent / "smash-files" / "checkpoints")
    return normalize_url(str(path))


@pytest.fixture
def demo_db(demo_run: DemoRun, tmp_path: Path) -> str:
    """A private copy of the demo's database (its checkpoint files stay shared, read-only)."""
    return _private_copy(demo_run, tmp_path)


@pytest.fixture(params=["tiny", "nb201-tiny"])
def run_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A private copy of a finished run of each space kind: the demo (banks) or the nb201 search.

    Both trained a HyperNet for 4 steps and scored 6 architectures with seed 0.
    """
    run = request.getfixturevalue("demo_run" if request.param == "tiny" else "nb201_run")
    return _private_copy(run, tmp_path)
