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
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import platformdirs
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import DatabaseURLError, StorageError, first_line

SQLITE_BUSY_TIMEOUT_S = 30.0
# The files root of every database, when set (see ``Database.files_dir``).
FILES_ENV = "SMASH_FILES"
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

    Raises:
        DatabaseURLError: ``--db`` was given but is blank, or names no usable database.
    """
    if explicit is not None:
        if not explicit.strip():
            raise DatabaseURLError("--db is empty: give a SQLite file path or a database URL")
        return normalize_url(explicit.strip())
    from_environment = os.environ.get("SMASH_DB", "")
    if from_environment.strip():  # an empty variable counts as unset
        return normalize_url(from_environment.strip())
    return default_url()


def default_url() -> str:
    """The database used when neither ``--db`` nor ``SMASH_DB`` names one."""
    return normalize_url(str(data_dir() / "smash.db"))


# A path that is really a URL without its scheme: "user:password@host/db".
_SCHEMELESS_URL = re.compile(r"^[^/@]*:[^/]*@")


def normalize_url(value: str) -> str:
    """Turn a path or URL into the SQLAlchemy URL smash uses.

    A bare path becomes an absolute ``sqlite:///`` URL (so every process
    agrees on the file), ``postgresql://`` and ``postgres://`` select psycopg 3.

    Args:
        value: A filesystem path or a database URL.

    Raises:
        DatabaseURLError: For a URL that is malformed, ambiguous (an unencoded ``@`` in
            the password), in-memory, names no database, or of an unsupported backend.
            The message never holds any part of a password.
    """
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise DatabaseURLError(
            f"the database URL or path contains control characters: {redact_url(value)!r}"
        )
    if "://" not in value:
        if _SCHEMELESS_URL.match(value):
            raise DatabaseURLError(
                f"{redact_url(value)!r} looks like a database URL without its "
                "scheme: write postgresql://user:password@host/dbname"
            )
        return _sqlite_url(Path(value))
    userinfo = _userinfo(value)
    if userinfo is not None and "@" in userinfo:
        raise DatabaseURLError(
            f"invalid database URL {redact_url(value)}: an '@' in the user name or password "
            "must be percent-encoded as %40 (and ':' as %3A, '/' as %2F)"
        )
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        # Not the parser's message: it quotes the URL, password and all.
        raise DatabaseURLError(
            f"invalid database URL {redact_url(value)!r}: expected a SQLite file path "
            "or postgresql://user:password@host/dbname"
        ) from None
    backend, _, driver = url.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            raise DatabaseURLError(
                f"unsupported SQLite URL {redact_url(value)}: smash needs a database file "
                "that the UI and the workers share"
            )
        return _sqlite_url(Path(url.database))
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        if not url.database:
            raise DatabaseURLError(
                f"database URL {redact_url(value)} names no database: "
                "write postgresql://user:password@host/dbname"
            )
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise DatabaseURLError(
        f"unsupported database URL {redact_url(value)}: use a SQLite file path "
        "or postgresql://user:password@host/dbname"
    )


def _sqlite_url(path: Path) -> str:
    path = Path(os.path.abspath(path.expanduser()))
    return URL.create("sqlite", database=str(path)).render_as_string()


def _userinfo(url: str) -> str | None:
    """What stands between ``://`` and the last ``@`` of a URL (user and password), if any.

    The last ``@``, not the first: an unencoded ``@`` in a password would otherwise
    leave the rest of the password looking like the host.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower().startswith("sqlite"):
        return None  # a file path, and SQLite URLs name files: no credentials
    at = rest.rfind("@")
    return rest[:at] if at >= 0 else None


# Query parameters that carry a secret: psycopg takes ?password=..., ?sslpassword=...
_SECRET_QUERY = re.compile(r"(?i)([?&][^=&#]*pass[^=&#]*=)[^&#]*")


def redact_url(url: str) -> str:
    """The URL with every part of its password replaced by ``***``, for anything shown.

    Works on the text, not on a parse, so that no URL shape leaks: everything between
    ``user:`` and the last ``@`` is hidden (all of it between ``://`` and that ``@``
    when the user name itself is in doubt), and so is the value of any ``pass...``
    query parameter. A file path is returned as it is, unless it reads like a URL
    whose scheme was forgotten (``user:password@host/db``).
    """
    if "://" not in url and _SCHEMELESS_URL.match(url):
        return redact_url(f"x://{url}")[len("x://") :]
    userinfo = _userinfo(url)
    if userinfo is None:
        scheme, separator, rest = url.partition("://")
        if not separator or scheme.lower().startswith("sqlite"):
            return url
        return scheme + separator + _hide_query_secrets(rest)
    scheme, separator, rest = url.partition("://")
    host = rest[len(userinfo) + 1 :]
    user, colon, _ = userinfo.partition(":")
    if not colon and "@" not in userinfo:
        shown = userinfo  # a user name alone, no password
    elif colon and not set(user) & set("@/?#"):
        shown = f"{user}:***"
    else:
        shown = "***"
    return f"{scheme}{separator}{shown}@{_hide_query_secrets(host)}"


def _hide_query_secrets(text: str) -> str:
    return _SECRET_QUERY.sub(r"\1***", text)


def url_secrets(url: str) -> list[str]:
    """The password of a URL as it may appear in a message: as written and decoded."""
    found: list[str] = []
    userinfo = _userinfo(url)
    if userinfo is not None:
        user, colon, password = userinfo.partition(":")
        found += [password, unquote(password)] if colon else []
        found += [userinfo] if "@" in userinfo else []
    for match in _SECRET_QUERY.finditer(url):
        value = url[match.end(1) : match.end()]
        found += [value, unquote(value)]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def scrub(message: str, url: str) -> str:
    """A message (a driver's error) with any trace of the URL's password replaced by ``***``."""
    for secret in url_secrets(url):
        message = message.replace(secret, "***")
    return message


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
        """The files root: where checkpoints, logs and exports of this database live (not created here).

        ``SMASH_FILES`` when set (hosts that share a database mount one shared folder,
        each at its own path); else, SQLite: ``<db dir>/<db stem>-files``, PostgreSQL:
        ``<data dir>/files/<host>-<dbname>``. Files under it are recorded relative to it
        (``stored_path``), so the root can move and hosts can mount it anywhere.
        """
        override = os.environ.get(FILES_ENV)
        if override:
            return Path(override).expanduser()
        path = sqlite_path(self.url)
        if path is not None:
            return path.parent / f"{path.stem}-files"
        parsed = make_url(self.url)
        label = f"{parsed.host or 'localhost'}-{parsed.database or 'postgres'}"
        return data_dir() / "files" / re.sub(r"[^A-Za-z0-9._-]", "_", label)

    def stored_path(self, path: str | Path) -> str:
        """How a file is recorded: relative to the files root when under it, else absolute."""
        given = Path(os.path.abspath(Path(path).expanduser()))
        root = Path(os.path.abspath(self.files_dir))
        for inside, top in ((given, root), (given.resolve(), root.resolve())):
            try:
                return inside.relative_to(top).as_posix()
            except ValueError:
                continue
        return str(given)

    def file_path(self, stored: str) -> Path:
        """Where a recorded file is on this host: a relative path under the files root,
        an absolute one (recorded before paths were relative) as it is."""
        path = Path(stored)
        return path if path.is_absolute() else self.files_dir / path

    def readable_file(self, stored: str, what: str) -> Path:
        """A recorded file that this host must read, e.g. a HyperNet checkpoint.

        Raises:
            StorageError: It is not there; the one line names the path and the setting
                that places it (``SMASH_FILES``).
        """
        path = self.file_path(stored)
        if path.is_file():
            return path
        if Path(stored).is_absolute():
            raise StorageError(
                f"cannot read {what} {stored}: no such file on this host (recorded as an "
                f"absolute path; {FILES_ENV} does not apply to it)"
            )
        setting = (
            f"{FILES_ENV}={os.environ[FILES_ENV]}"
            if os.environ.get(FILES_ENV)
            else f"{FILES_ENV} is not set"
        )
        raise StorageError(
            f"cannot read {what} {stored}: {path} does not exist; the files root is "
            f"{self.files_dir} ({setting}): mount the shared files folder and point "
            f"{FILES_ENV} at it"
        )

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


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn a driver's error into a StorageError of one line, without SQL or parameters.

    SQLAlchemy's message goes on with the statement and its parameters, which are no
    business of a user (the app shows ``str(exc)`` in a notification).
    """
    try:
        yield
    except DBAPIError as exc:
        raise StorageError(f"database error: {first_line(exc.orig)}") from None


def open_database(url: str | None = None) -> Database:
    """Open a database, creating or upgrading its schema first.

    A SQLite file is created when missing, but only in a folder that exists: a
    mistyped path is refused rather than turned into new folders (the default
    location's folder is the one that is created).

    Args:
        url: A URL or path; None resolves it like ``resolve_url(None)``.

    Raises:
        DatabaseURLError: The URL or path names no usable database.
        StorageError: When the file is not a smash database, cannot be created, read or
            written, or the server cannot be reached; one line, never with a password.
        NewerDatabaseError: When a newer smash wrote the schema.
    """
    # Imported here because the migration environment imports this module.
    from storage.migrate import preflight_sqlite, upgrade

    url = resolve_url(url)
    shown = redact_url(url)
    path = sqlite_path(url)
    if path is not None:
        _check_sqlite_location(path, create_folder=url == default_url())
        try:
            preflight_sqlite(path, shown)
        except OSError as exc:
            raise StorageError(f"cannot read database {path}: {_reason(exc)}") from None
    try:
        engine = make_engine(url)
    except OSError as exc:
        raise StorageError(f"cannot create the folder of {path}: {_reason(exc)}") from None
    try:
        upgrade(engine, shown)
    except DBAPIError as exc:
        engine.dispose()
        reason = scrub(first_line(exc.orig), url)
        raise StorageError(f"cannot open database {shown}: {reason}") from None
    except OSError as exc:
        engine.dispose()
        raise StorageError(f"cannot open database {shown}: {_reason(exc)}") from None
    except BaseException:
        engine.dispose()
        raise
    return Database(url, engine)


def _check_sqlite_location(path: Path, *, create_folder: bool) -> None:
    """Refuse a SQLite file that cannot be one: a folder, a file in a missing folder."""
    try:
        if path.is_dir():
            raise StorageError(f"{path} is a folder, not a database file")
        folder = path.parent
        if not create_folder and not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise StorageError(f"cannot open database {path}: its folder {folder} {what}")
    except OSError as exc:  # a name too long, a folder that cannot be searched
        raise StorageError(f"cannot open database {path}: {_reason(exc)}") from None


def _reason(exc: OSError) -> str:
    """An OSError in words, without repeating the (possibly very long) file name."""
    return exc.strerror or first_line(exc)
