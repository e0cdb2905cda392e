"""Database URLs, engines and the ``Database`` handle: the one place engines are built.

SQLite (a WAL-mode file) is the default; PostgreSQL is reached through the
same code with a ``postgresql://`` URL. ``open_database`` brings the schema
up to date before anything else touches it.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import platformdirs
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import StorageError, first_line

SQLITE_BUSY_TIMEOUT_S = 30.0
PG_CONNECT_TIMEOUT_S = 10


def data_dir() -> Path:
    """Where smash keeps its default database and files: ``SMASH_HOME`` or the user data dir."""
    home = os.environ.get("SMASH_HOME")
    return Path(home).expanduser() if home else Path(platformdirs.user_data_dir("smash"))


def resolve_url(explicit: str | None) -> str:
    """Pick the database URL: ``--db``, else ``SMASH_DB``, else ``<data dir>/smash.db``.

    Args:
        explicit: The ``--db`` value, or None when it was not given.

    Returns:
        A normalised SQLAlchemy URL (see ``normalize_url``).
    """
    for candidate in (explicit, os.environ.get("SMASH_DB")):
        if candidate and candidate.strip():
            return normalize_url(candidate.strip())
    return normalize_url(str(data_dir() / "smash.db"))


def normalize_url(value: str) -> str:
    """Turn a path or URL into the SQLAlchemy URL smash uses.

    A bare path becomes an absolute ``sqlite:///`` URL (so every process
    agrees on the file), ``postgresql://`` and ``postgres://`` select psycopg 3.

    Args:
        value: A filesystem path or a database URL.

    Raises:
        StorageError: For a URL that is malformed, in-memory, or of an unsupported backend.
    """
    if "://" not in value:
        return _sqlite_url(Path(value))
    try:
        url = make_url(value)
    except ArgumentError as exc:
        raise StorageError(f"invalid database URL {value!r}: {first_line(exc)}") from None
    backend, _, driver = url.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            raise StorageError(
                f"unsupported SQLite URL {redact_url(value)}: smash needs a database file "
                "that the UI and the workers share"
            )
        return _sqlite_url(Path(url.database))
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise StorageError(
        f"unsupported database URL {redact_url(value)}: use a SQLite file path "
        "or postgresql://user:password@host/dbname"
    )


def _sqlite_url(path: Path) -> str:
    path = Path(os.path.abspath(path.expanduser()))
    return URL.create("sqlite", database=str(path)).render_as_string()


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for anything printed or logged."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        # Not a URL we can parse; hide anything between "://user:" and "@".
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for other backends."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def _json_safe(value: Any) -> Any:
    # NaN and infinity are not JSON: PostgreSQL rejects them and SQLite would
    # store text that strict readers reject. They become null, as in the scalar columns.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _json_dumps(value: Any) -> str:
    return json.dumps(_json_safe(value), allow_nan=False)


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first, so that switching to WAL waits for other connections.
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def make_engine(url: str) -> Engine:
    """Build the engine for a normalised URL; does not connect or migrate.

    Args:
        url: A URL as returned by ``normalize_url``.
    """
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            json_serializer=_json_dumps,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S},
        )
        event.listen(engine, "connect", _set_sqlite_pragmas)
        return engine
    return create_engine(
        url,
        json_serializer=_json_dumps,
        pool_pre_ping=True,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "smash"},
    )


class Database:
    """An open, migrated smash database.

    Sessions come from ``session()``: one per unit of work, owned (committed
    and closed) by the caller, never shared across threads. Sessions do not
    expire objects on commit, so rows read in a unit of work stay readable
    after it ends.

    Args:
        url: The normalised URL (with password; print ``redacted_url`` instead).
        engine: The engine built for it.
    """

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.engine = engine
        self._sessions = sessionmaker(bind=engine, expire_on_commit=False)

    @property
    def redacted_url(self) -> str:
        """The URL without its password, for display."""
        return redact_url(self.url)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    def session(self) -> Session:
        """A new session; the caller commits and closes it (``with db.session() as s:``)."""
        return self._sessions()

    @property
    def files_dir(self) -> Path:
        """Where checkpoints, logs and exports of this database live (not created here).

        SQLite: ``<db dir>/<db stem>-files``. PostgreSQL: ``SMASH_FILES``, or
        ``<data dir>/files/<host>-<dbname>``.
        """
        path = sqlite_path(self.url)
        if path is not None:
            return path.parent / f"{path.stem}-files"
        override = os.environ.get("SMASH_FILES")
        if override:
            return Path(override).expanduser()
        parsed = make_url(self.url)
        label = f"{parsed.host or 'localhost'}-{parsed.database or 'postgres'}"
        return data_dir() / "files" / re.sub(r"[^A-Za-z0-9._-]", "_", label)

    @property
    def checkpoints_dir(self) -> Path:
        """``files_dir / "checkpoints"``, created on first use."""
        return self._subdir("checkpoints")

    @property
    def logs_dir(self) -> Path:
        """``files_dir / "logs"``, created on first use."""
        return self._subdir("logs")

    def _subdir(self, name: str) -> Path:
        path = self.files_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def dispose(self) -> None:
        """Close every pooled connection; the object must not be used afterwards."""
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.dispose()

    def __repr__(self) -> str:
        return f"Database({self.redacted_url!r})"


def open_database(url: str | None = None) -> Database:
    """Open a database, creating or upgrading its schema first.

    Args:
        url: A URL or path; None resolves it like ``resolve_url(None)``.

    Raises:
        StorageError: When the file is not a smash database or the server cannot be reached.
        NewerDatabaseError: When a newer smash wrote the schema.
    """
    # Imported here because the migration environment imports this module.
    from storage.migrate import preflight_sqlite, upgrade

    url = resolve_url(url)
    path = sqlite_path(url)
    if path is not None:
        preflight_sqlite(path, redact_url(url))
    try:
        engine = make_engine(url)
    except OSError as exc:
        raise StorageError(f"cannot create the folder of {path}: {exc.strerror}") from None
    try:
        upgrade(engine, redact_url(url))
    except DBAPIError as exc:
        engine.dispose()
        raise StorageError(
            f"cannot open database {redact_url(url)}: {first_line(exc.orig)}"
        ) from None
    except BaseException:
        engine.dispose()
        raise
    return Database(url, engine)
