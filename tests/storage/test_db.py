"""URL resolution, redaction and the files directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.db import Database, data_dir, normalize_url, open_database, redact_url, resolve_url
from storage.errors import DatabaseURLError, StorageError

PG = "postgresql+psycopg://smash:s3cret@db.example:5432/runs"


def test_resolve_url_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("SMASH_HOME", str(home))
    assert resolve_url(None) == f"sqlite:///{home / 'smash.db'}"
    monkeypatch.setenv("SMASH_DB", "  ")  # an empty variable counts as unset
    assert resolve_url(None) == f"sqlite:///{home / 'smash.db'}"
    monkeypatch.setenv("SMASH_DB", str(tmp_path / "env.db"))
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'env.db'}"
    assert resolve_url(str(tmp_path / "flag.db")) == f"sqlite:///{tmp_path / 'flag.db'}"
    # An empty --db is a mistake (an unset shell variable), not "the default database".
    with pytest.raises(DatabaseURLError, match="^--db is empty"):
        resolve_url("  ")


def test_default_data_dir_without_smash_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMASH_HOME")
    assert data_dir().name == "smash"


def test_normalize_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize_url("runs/a.db") == f"sqlite:///{tmp_path / 'runs' / 'a.db'}"
    assert normalize_url("sqlite:///rel.db") == f"sqlite:///{tmp_path / 'rel.db'}"
    assert normalize_url("~/x.db").startswith(f"sqlite:///{Path.home()}")
    assert normalize_url("postgresql://u:p@h/d") == "postgresql+psycopg://u:p@h/d"
    assert normalize_url("postgres://u:p@h:5433/d") == "postgresql+psycopg://u:p@h:5433/d"
    assert normalize_url(PG) == PG


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "unsupported SQLite URL sqlite://: smash needs a database file"),
        ("sqlite:///:memory:", "unsupported SQLite URL"),
        ("mysql://u:pw@h/d", "unsupported database URL mysql://u:***@h/d: use a SQLite file path"),
        (
            "postgresql+psycopg2://u:pw@h/d",
            "unsupported database URL postgresql+psycopg2://u:***@h/d",
        ),
        ("://nothing", "invalid database URL '://nothing'"),
    ],
)
def test_unsupported_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(StorageError) as raised:
        normalize_url(url)
    assert message in str(raised.value)
    assert "pw" not in str(raised.value)


def test_redaction() -> None:
    assert redact_url(PG) == "postgresql+psycopg://smash:***@db.example:5432/runs"
    assert redact_url("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"
    assert "s3cret" not in repr(Database(PG, engine=None))  # type: ignore[arg-type]


def test_files_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMASH_HOME", str(tmp_path / "home"))
    (tmp_path / "runs").mkdir()
    with open_database(str(tmp_path / "runs" / "cifar.db")) as db:
        assert db.files_dir == tmp_path / "runs" / "cifar-files"
        assert not db.files_dir.exists()
        assert db.checkpoints_dir == tmp_path / "runs" / "cifar-files" / "checkpoints"
        assert db.checkpoints_dir.is_dir() and db.logs_dir.is_dir()
    postgres = Database(PG, engine=None)  # type: ignore[arg-type]
    assert postgres.files_dir == tmp_path / "home" / "files" / "db.example-runs"
    monkeypatch.setenv("SMASH_FILES", str(tmp_path / "shared"))
    assert postgres.files_dir == tmp_path / "shared"


def test_unreachable_server_is_one_line() -> None:
    # Port 1 on localhost refuses at once: no waiting for a timeout.
    with pytest.raises(StorageError) as raised:
        open_database("postgresql://smash:hunter2@127.0.0.1:1/nowhere")
    message = str(raised.value)
    assert message.startswith(
        "cannot open database postgresql+psycopg://smash:***@127.0.0.1:1/nowhere: "
    )
    assert "\n" not in message and "hunter2" not in message


def test_unusable_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(
        StorageError,
        match=f"^cannot open database {blocker}/smash.db: its folder {blocker} is not a folder$",
    ):
        open_database(str(blocker / "smash.db"))
    # The default location's folder is created; a mistyped path makes no folders.
    monkeypatch.setenv("SMASH_HOME", str(blocker / "home"))
    with pytest.raises(StorageError, match=f"^cannot create the folder of {blocker}/home/smash.db: "):
        open_database(None)
    missing = tmp_path / "typo" / "sub" / "smash.db"
    with pytest.raises(
        StorageError, match=f"^cannot open database {missing}: its folder {missing.parent} does not exist$"
    ):
        open_database(str(missing))
    assert not (tmp_path / "typo").exists()
    monkeypatch.setenv("SMASH_HOME", str(tmp_path / "new" / "home"))
    open_database(None).dispose()
    assert (tmp_path / "new" / "home" / "smash.db").is_file()
