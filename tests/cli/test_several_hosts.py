"""What several hosts need: `smash workers --gpus` checks its list; checkpoints follow SMASH_FILES."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from smash_tui.runner import launch
from storage.db import open_database
from storage.models import Architecture, Checkpoint, Job
from tests.cli.support import assert_one_line_error, smash


@pytest.mark.parametrize(
    ("gpus", "says"),
    [
        ("0,x", "'x' is no GPU number"),
        ("0,0", "GPU 0 is named twice"),
        ("2", "no GPU 2: this host has 2 (0-1)"),
        ("0,,1", "give all, or GPU numbers separated by commas"),
        ("-1", "'-1' is no GPU number"),
    ],
)
def test_workers_refuses_a_bad_gpu_list_with_one_line(
    gpus: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launch, "visible_gpus", lambda: ["0", "1"])  # a host with two GPUs
    started: list[Any] = []
    monkeypatch.setattr(launch, "launch_workers", lambda *args, **kwargs: started.append(args) or [])
    result = smash(str(tmp_path / "smash.db"), "workers", "--gpus", gpus)
    line = assert_one_line_error(result, 2)
    assert says in line, line
    assert not started  # nothing was launched


def test_workers_all_on_a_host_without_gpus_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "visible_gpus", lambda: [])
    line = assert_one_line_error(smash(str(tmp_path / "smash.db"), "workers", "--gpus", "all"), 2)
    assert "this host has no GPU" in line


def _moved(demo_db: str, to: Path) -> Path:
    """Move the demo copy's files root elsewhere, as another host mounts it; the new root."""
    old = Path(demo_db.removeprefix("sqlite:///")).parent / "smash-files"
    shutil.move(str(old), str(to))
    return to


@pytest.mark.xdist_group("demo")
def test_a_checkpoint_under_a_moved_files_root_still_loads(
    demo_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _moved(demo_db, tmp_path / "mounted" / "elsewhere")
    monkeypatch.setenv("SMASH_FILES", str(root))
    with open_database(demo_db) as db, db.session() as session:
        stored = session.scalars(select(Checkpoint.path)).all()
        first = session.scalars(select(Architecture.id).order_by(Architecture.id)).first()
    assert stored and not any(Path(path).is_absolute() for path in stored)  # relative to the root
    result = smash(demo_db, "score", str(first), "--z-draws", "2", "--score-images", "20", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    with open_database(demo_db) as db, db.session() as session:
        assert session.scalars(select(Job.state).where(Job.kind == "score")).all() == ["done"]


@pytest.mark.xdist_group("demo")
def test_a_missing_checkpoint_fails_the_job_naming_the_path_and_the_setting(
    demo_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _moved(demo_db, tmp_path / "mounted" / "elsewhere")
    empty = tmp_path / "not-mounted"
    empty.mkdir()
    monkeypatch.setenv("SMASH_FILES", str(empty))
    with open_database(demo_db) as db, db.session() as session:
        first = session.scalars(select(Architecture.id).order_by(Architecture.id)).first()
    result = smash(demo_db, "score", str(first), "--z-draws", "2", "--score-images", "20", "--device", "cpu")
    assert result.exit_code != 0
    with open_database(demo_db) as db, db.session() as session:
        job = session.scalars(select(Job).where(Job.kind == "score")).one()
        assert job.state == "failed" and job.error is not None
        error = job.error
    assert "\n" not in error
    assert f"{empty}/checkpoints/" in error and f"SMASH_FILES={empty}" in error, error
    assert error in result.stderr  # the user sees the same line
