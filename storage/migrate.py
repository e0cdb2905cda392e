"""Apply the packaged Alembic migrations when a database is opened.

No ``alembic.ini`` and no ``alembic`` command are involved: the script
directory ships inside the package and the upgrade runs on a connection that
holds a lock, so that two processes opening a fresh database at once do not
both create the schema (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on
PostgreSQL).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, select, text

from storage.errors import NewerDatabaseError, StorageError, first_line

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"
SQLITE_HEADER = b"SQLite format 3\x00"
# Arbitrary but fixed key of the PostgreSQL advisory lock that serialises migrations.
PG_MIGRATION_LOCK_KEY = 0x534D415348


def alembic_config(script_location: Path = MIGRATIONS_DIR) -> Config:
    """An in-memory Alembic config pointing at a script directory.

    Args:
        script_location: The migrations folder; tests pass a copy with extra revisions.
    """
    config = Config()
    # ConfigParser interpolates "%", so escape it in the path.
    config.set_main_option("script_location", str(script_location).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    return config


def head_revision(script_location: Path = MIGRATIONS_DIR) -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config(script_location)).get_current_head()
    assert head is not None, "the migrations folder has no revisions"
    return head


def _known_revisions(script: ScriptDirectory) -> set[str]:
    return {revision.revision for revision in script.walk_revisions()}


def _refuse_unknown(current: str | None, known: set[str], display_url: str) -> None:
    if current is not None and current not in known:
        raise NewerDatabaseError(
            f"database {display_url} was written by a newer smash (schema revision {current}); "
            "upgrade smash to open it"
        )


def _not_smash(display: str, reason: str) -> StorageError:
    return StorageError(f"{display} is not a smash database: {reason}")


def preflight_sqlite(path: Path, display_url: str, script_location: Path = MIGRATIONS_DIR) -> None:
    """Refuse a file that smash must not touch, before anything writes to it.

    Opening through the engine would switch the file to WAL mode, so the checks
    run first through a plain connection that only reads. (Not a read-only
    connection: that could not recover the WAL of a crashed writer and would
    refuse a healthy database.)

    Args:
        path: The database file (may not exist yet).
        display_url: The URL without password, for messages.
        script_location: The migrations folder whose revisions are known.

    Raises:
        StorageError: The file is not an SQLite database, or holds foreign tables.
        NewerDatabaseError: The file carries an unknown schema revision.
    """
    if not path.exists() or path.stat().st_size == 0:
        return
    if path.is_dir():
        raise _not_smash(str(path), "it is a directory")
    with path.open("rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise _not_smash(str(path), "file is not a database")
    try:
        with closing(sqlite3.connect(path)) as conn:
            tables = {
                row[0]
                for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            current = None
            if VERSION_TABLE in tables:
                row = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
                current = row[0] if row else None
    except sqlite3.OperationalError as exc:
        # Unreadable, or a WAL-mode file in a folder it cannot write its index beside.
        raise StorageError(f"cannot open database {display_url}: {first_line(exc)}") from None
    except sqlite3.DatabaseError as exc:
        raise _not_smash(str(path), first_line(exc)) from None
    if current is None and tables - {VERSION_TABLE}:
        raise _not_smash(str(path), f"it has other tables ({', '.join(sorted(tables)[:5])})")
    script = ScriptDirectory.from_config(alembic_config(script_location))
    _refuse_unknown(current, _known_revisions(script), display_url)


def current_revision(connection: Connection) -> str | None:
    """The schema revision stored in the database, or None for an unversioned one."""
    return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that no other migrating process can enter."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as connection:
            connection.execute(select(text(f"pg_advisory_xact_lock({PG_MIGRATION_LOCK_KEY})")))
            yield connection
        return
    # pysqlite only begins transactions before DML; take control so the DDL is
    # atomic and the write lock is held from the first statement.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        # Batch migrations rebuild tables (CREATE, copy, DROP, RENAME); with
        # foreign keys on, the DROP would cascade into child tables. SQLite's
        # recipe: keys off outside the transaction, check them before commit.
        connection.exec_driver_sql("PRAGMA foreign_keys = OFF")
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield connection
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").first()
                if broken is not None:
                    raise StorageError(
                        f"migration left a dangling reference in table {broken[0]}; "
                        "the database was not changed"
                    )
            except BaseException:
                connection.exec_driver_sql("ROLLBACK")
                raise
            connection.exec_driver_sql("COMMIT")
        finally:
            connection.exec_driver_sql("PRAGMA foreign_keys = ON")


def _backup_sqlite(path: Path, revision: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.bak-{revision}-{stamp}")
    # Through the backup API, which includes committed pages still in the WAL
    # (a file copy would miss them), and from a connection of its own: the
    # migrating one holds the write lock, and SQLite cannot back up from a
    # connection that is writing.
    with closing(sqlite3.connect(path)) as source, closing(sqlite3.connect(target)) as copy:
        source.backup(copy)
    return target


def upgrade(
    engine: Engine, display_url: str, script_location: Path = MIGRATIONS_DIR
) -> Path | None:
    """Bring the schema to the newest revision; a no-op when it already is.

    A SQLite file that already holds a schema is backed up to
    ``<file>.bak-<old revision>-<UTC timestamp>`` before it changes.

    Args:
        engine: The engine of the database.
        display_url: The URL without password, for messages.
        script_location: The migrations folder to apply.

    Returns:
        The backup file, when one was written.

    Raises:
        NewerDatabaseError: The database carries an unknown revision.
        StorageError: A database with foreign tables and no smash revision.
    """
    config = alembic_config(script_location)
    script = ScriptDirectory.from_config(config)
    known, head = _known_revisions(script), script.get_current_head()
    # Cheap check without the lock: the common case is an up-to-date database.
    with engine.connect() as connection:
        current = current_revision(connection)
    _refuse_unknown(current, known, display_url)
    if current == head:
        return None
    with _migration_lock(engine) as connection:
        current = current_revision(connection)
        _refuse_unknown(current, known, display_url)
        if current == head:
            return None
        tables = set(inspect(connection).get_table_names()) - {VERSION_TABLE}
        if current is None and tables:
            raise _not_smash(display_url, f"it has other tables ({', '.join(sorted(tables)[:5])})")
        backup = None
        # Only a versioned file holds data: a fresh file gets a header from the
        # WAL switch alone, and unversioned files with tables were refused above.
        if engine.dialect.name == "sqlite" and current is not None and engine.url.database:
            backup = _backup_sqlite(Path(engine.url.database), current)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        return backup
