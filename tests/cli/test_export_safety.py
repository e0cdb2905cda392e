"""An export can be run by someone else: no name can inject code into load_model.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from storage.db import open_database
from storage.models import Experiment
from tests.cli.support import assert_one_line_error, smash

pytestmark = pytest.mark.xdist_group("demo")

ROOT = Path(__file__).resolve().parents[2]
# Names built to break out of every quoting form a generator might use: triple and single
# quotes of both kinds, f-string braces, a comment, backslashes, newlines, a docstring end.
HOSTILE = [
    'x"""\nimport pathlib; pathlib.Path("PWNED").write_text("1")\n"""',
    "x'''\nimport pathlib; pathlib.Path('PWNED').write_text('1')\n'''",
    'x" + __import__("pathlib").Path("PWNED").write_text("1") + "',
    "x' + __import__('pathlib').Path('PWNED').write_text('1') + '",
    '{__import__("pathlib").Path("PWNED").write_text("1")}',
    'x\\\\"; import pathlib; pathlib.Path("PWNED").write_text("1") #',
    "x\r\nimport pathlib; pathlib.Path('PWNED').write_text('1')",
]


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_experiment_name_never_runs_as_code(demo_db: str, tmp_path: Path, name: str) -> None:
    with open_database(demo_db) as db, db.session() as session:
        session.execute(update(Experiment).values(name=name))  # as if typed elsewhere
        session.commit()
    folder = tmp_path / "export"
    result = smash(demo_db, "export", "1", str(folder))
    assert result.exit_code == 0, result.stderr
    loader = (folder / "load_model.py").read_text()
    assert "PWNED" not in loader  # no user text in the code at all
    assert json.loads((folder / "model.json").read_text())["experiment"] == name
    run = subprocess.run(
        [sys.executable, "load_model.py"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert not (folder / "PWNED").exists() and not (ROOT / "PWNED").exists()
    assert repr(name) in run.stdout  # it is printed as text, quoted


def test_export_refuses_a_folder_it_cannot_create_before_any_work(demo_db: str, tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("a file, not a folder")
    line = assert_one_line_error(smash(demo_db, "export", "1", str(tmp_path / "file.txt" / "out")), 2)
    assert "is not a folder" in line
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who may write anywhere (root): permissions cannot be tested")
        line = assert_one_line_error(smash(demo_db, "export", "1", str(locked / "out")), 2)
        assert "permission denied" in line
    finally:
        locked.chmod(0o700)
