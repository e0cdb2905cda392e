"""Schema creation and upgrades through the packaged Alembic migrations."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text

from storage.db import Database, make_engine, open_database, redact_url, sqlite_path
from storage.errors import NewerDatabaseError, StorageError
from storage.migrate import MIGRATIONS_DIR, head_revision, upgrade
from storage.models import Base, Experiment
from storage.queue import enqueue
from storage.records import create_experiment

SMASH_TABLES = {
    "experiments",
    "jobs",
    "workers",
    "checkpoints",
    "architectures",
    "scores",
    "retrains",
    "metrics",
    "events",
}

SECOND_REVISION = '''"""A test-only revision: adds a column, as a real schema change would."""

import sqlalchemy as sa
from alembic import op

revision = "0002_test"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # On SQLite, rebuild the table (as many SQLite migrations must) even though
    # adding a column would not need it.
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("experiments", recreate="always" if sqlite else "auto") as batch:
        batch.add_column(sa.Column("notes", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("notes")
'''


def _revision(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _add_experiment(db: Database, name: str) -> int:
    with db.session() as session:
        experiment = create_experiment(
            session, name, dataset="synthetic", preset="p", search_space={}, config={}, seed=0
        )
        session.commit()
        return experiment.id


def _stamp(db: Database, revision: str) -> None:
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def test_fresh_database_gets_the_schema_through_migrations(db_url: str) -> None:
    with open_database(db_url) as db:
        _check_schema(db)


def _check_schema(db: Database) -> None:
    assert _revision(db) == head_revision()
    with db.engine.connect() as connection:
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        assert [tuple(row) for row in rows] == [(head_revision(),)]
        assert SMASH_TABLES <= set(inspect(connection).get_table_names())
        # The migrated schema is exactly what the models describe.
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_sqlite_connections_are_configured(tmp_path: Path) -> None:
    with open_database(str(tmp_path / "smash.db")) as db, db.engine.connect() as connection:
        pragmas = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
        }
    # synchronous 1 is NORMAL.
    assert pragmas == {
        "journal_mode": "wal",
        "busy_timeout": 30000,
        "foreign_keys": 1,
        "synchronous": 1,
    }


def test_reopening_is_a_no_op(db_url: str, tmp_path: Path) -> None:
    with open_database(db_url) as db:
        _add_experiment(db, "kept")
    before = sorted(tmp_path.iterdir())
    with open_database(db_url) as db:
        assert _revision(db) == head_revision()
        with db.session() as session:
            assert list(session.scalars(select(Experiment.name))) == ["kept"]
    assert not [path for path in tmp_path.iterdir() if ".bak-" in path.name]
    assert sorted(tmp_path.iterdir()) == before


def test_newer_database_is_refused(db_url: str) -> None:
    with open_database(db_url) as db:
        _stamp(db, "9999_from_the_future")
    path = sqlite_path(db_url)
    before = path.read_bytes() if path else None
    with pytest.raises(NewerDatabaseError) as raised:
        open_database(db_url)
    assert str(raised.value) == (
        f"database {redact_url(db_url)} was written by a newer smash "
        "(schema revision 9999_from_the_future); upgrade smash to open it"
    )
    if path is not None:
        assert path.read_bytes() == before


def test_corrupt_file_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "smash.db"
    content = b"this is a spreadsheet, not a database\n" * 200
    path.write_bytes(content)
    with pytest.raises(StorageError) as raised:
        open_database(str(path))
    assert str(raised.value) == f"{path} is not a smash database: file is not a database"
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smash.db"]


def test_damaged_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "smash.db"
    with open_database(str(path)):
        pass
    # A valid header followed by garbage: SQLite itself has to notice.
    content = path.read_bytes()[:100] + b"\xff" * 8000
    path.write_bytes(content)
    with pytest.raises(StorageError, match=f"^{path} is not a smash database: "):
        open_database(str(path))
    assert path.read_bytes() == content


def test_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "photos.db"
    import sqlite3

    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    content = path.read_bytes()
    with pytest.raises(
        StorageError, match=r"is not a smash database: it has other tables \(photos\)"
    ):
        open_database(str(path))
    assert path.read_bytes() == content


def test_upgrade_backs_up_sqlite_and_keeps_data(db_url: str, tmp_path: Path, backend: str) -> None:
    with open_database(db_url) as db:
        experiment_id = _add_experiment(db, "before-upgrade")
        with db.session() as session:
            # A child row: rebuilding the parent table must not cascade into it.
            enqueue(session, experiment_id, "train", {})
            session.commit()
    scripts = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "0002_test.py").write_text(SECOND_REVISION.format(head=head_revision()))

    engine = make_engine(db_url)
    try:
        backup = upgrade(engine, redact_url(db_url), script_location=scripts)
        assert upgrade(engine, redact_url(db_url), script_location=scripts) is None  # now a no-op
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == "0002_test"
            notes = connection.execute(text("SELECT name, notes FROM experiments")).all()
            assert [tuple(row) for row in notes] == [("before-upgrade", None)]
            assert connection.execute(text("SELECT count(*) FROM jobs")).scalar() == 1
    finally:
        engine.dispose()

    if backend == "sqlite":
        assert backup is not None
        assert backup.parent == tmp_path
        assert backup.name.startswith(f"smash.db.bak-{head_revision()}-")
        assert backup.name.endswith("Z")
        # The backup is the database as it was: old revision, same data.
        with open_database(str(backup)) as old:
            assert _revision(old) == head_revision()
            with old.session() as session:
                assert list(session.scalars(select(Experiment.name))) == ["before-upgrade"]
    else:
        assert backup is None
    # This code does not know 0002_test: to it the upgraded database is newer.
    with pytest.raises(NewerDatabaseError, match="schema revision 0002_test"):
        open_database(db_url)


def test_concurrent_first_opens_migrate_once(db_url: str) -> None:
    results: list[object] = []

    def open_it() -> None:
        try:
            with open_database(db_url) as db:
                results.append(_revision(db))
        except Exception as exc:  # collected and asserted on below
            results.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [head_revision()] * 3


def test_upgrade_from_0001_marks_racing_scores_partial(
    db_url: str, tmp_path: Path, backend: str
) -> None:
    # A database as smash 0001 left it: the packaged migrations without the later ones.
    old_scripts = tmp_path / "migrations-0001"
    shutil.copytree(MIGRATIONS_DIR, old_scripts, ignore=shutil.ignore_patterns("__pycache__"))
    for later in (old_scripts / "versions").glob("*.py"):
        if not later.name.startswith("0001"):
            later.unlink()
    engine = make_engine(db_url)
    try:
        upgrade(engine, redact_url(db_url), script_location=old_scripts)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO experiments (id, name, dataset, preset, search_space, config, "
                    "seed, status, created_at) VALUES (1, 'old', 'synthetic', 'tiny', '{}', '{}', "
                    "0, 'done', CURRENT_TIMESTAMP)"
                )
            )
            for ident, spec in ((1, "raced"), (2, "full"), (3, "rescored"), (4, "unscored")):
                connection.execute(
                    text(
                        "INSERT INTO architectures (id, experiment_id, hash, params, flops, depth, "
                        "num_ops, source, created_at, spec) VALUES "
                        "(:id, 1, :hash, 1, 1, 1, 1, 'random', CURRENT_TIMESTAMP, :spec)"
                    ),
                    {"id": ident, "hash": spec, "spec": spec},
                )
            # Scores in insertion order: architecture 3 raced first, then scored in full.
            scores = ((1, "racing+z2"), (2, "full"), (3, "racing"), (3, "full+n100"))
            for architecture, method in scores:
                connection.execute(
                    text(
                        "INSERT INTO scores (architecture_id, error, loss, images, z_draws, "
                        "method, created_at) VALUES (:a, 30, 1, 200, 1, :m, CURRENT_TIMESTAMP)"
                    ),
                    {"a": architecture, "m": method},
                )
        upgrade(engine, redact_url(db_url))
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == head_revision()
            partial = connection.execute(
                text("SELECT spec, latest_partial FROM architectures ORDER BY id")
            ).all()
            columns = [column["name"] for column in inspect(connection).get_columns("architectures")]
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()
    assert [(spec, None if flag is None else bool(flag)) for spec, flag in partial] == [
        ("raced", True),
        ("full", False),
        ("rescored", False),
        ("unscored", None),
    ]
    if backend == "sqlite":
        assert columns[-1] == "spec"  # the rebuild keeps the large column last
