"""Fixtures of the CLI tests: isolated homes, one torch thread, and one demo run to browse."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.db import normalize_url
from tests.cli.support import DEMO, smash


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


@pytest.fixture
def demo_db(demo_run: DemoRun, tmp_path: Path) -> str:
    """A private copy of the demo's database with its checkpoints (recorded relative to its
    files folder, so the copy needs its own)."""
    assert demo_run.exit_code == 0, demo_run.stderr
    path = tmp_path / "copy" / "smash.db"
    path.parent.mkdir()
    shutil.copyfile(demo_run.path, path)
    files = demo_run.path.parent / "smash-files" / "checkpoints"
    shutil.copytree(files, path.parent / "smash-files" / "checkpoints")
    return normalize_url(str(path))
