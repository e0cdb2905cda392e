"""Fixtures: a fresh database per test, on SQLite and on PostgreSQL.

PostgreSQL comes from ``SMASH_TEST_PG_URL`` (an admin URL whose role may
create databases). Each test gets its own ``smash_t_<uuid8>`` database, so
tests can run in parallel under xdist; it is dropped afterwards. Without the
variable the PostgreSQL cases are skipped, unless ``SMASH_REQUIRE_PG=1``, in
which case they fail.

Tests that need the schema get a copy of a template migrated once per test
process, on both backends; the migration tests start from empty databases
(``db_url``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from storage.db import Database, normalize_url, open_database
from storage.models import Experiment
from storage.records import create_experiment

PG_URL_ENV = "SMASH_TEST_PG_URL"
REQUIRE_PG_ENV = "SMASH_REQUIRE_PG"

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def pg_admin_url() -> str:
    """The admin URL, or skip (fail under SMASH_REQUIRE_PG=1) when there is none."""
    url = os.environ.get(PG_URL_ENV, "").strip()
    if not url:
        if os.environ.get(REQUIRE_PG_ENV) == "1":
            pytest.fail(f"{REQUIRE_PG_ENV}=1 but {PG_URL_ENV} is not set")
        pytest.skip(f"{PG_URL_ENV} is not set")
    return normalize_url(url)


class PgServer:
    """Creates per-test databases on the test server and drops them again.

    Args:
        admin_url: URL of a role that may create and drop databases.
    """

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)

    def create(self, template: str | None = None) -> str:
        """Create an empty database (or a copy of ``template``) and return its name."""
        name = f"smash_t_{uuid.uuid4().hex[:8]}"
        suffix = f' TEMPLATE "{template}"' if template else ""
        with self._admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"{suffix}'))
        return name

    def url(self, name: str) -> str:
        """The URL of one of the created databases."""
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop(self, name: str) -> None:
        """Drop a database, disconnecting anything a failed test left connected.

        Right away rather than at the end of the session: each DROP DATABASE
        forces a checkpoint, and many of them in a row queue up behind each other.
        """
        with self._admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        """Release the admin engine."""
        self._admin.dispose()


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep the developer's own database and files out of every test.
    monkeypatch.setenv("SMASH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SMASH_DB", raising=False)
    monkeypatch.delenv("SMASH_FILES", raising=False)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test: "sqlite" or "postgresql"."""
    return str(request.param)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL test server of this test process."""
    server = PgServer(pg_admin_url())
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> Iterator[str]:
    """A database migrated once per test process, copied for each test that needs a schema.

    Copying skips running the migrations for every test; the migration tests
    themselves start from empty databases (``db_url``).
    """
    name = pg_server.create()
    try:
        open_database(pg_server.url(name)).dispose()
        yield name
    finally:
        pg_server.drop(name)


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh, empty database (nothing migrated yet)."""
    if backend == "sqlite":
        yield normalize_url(str(tmp_path / "smash.db"))
        return
    server: PgServer = request.getfixturevalue("pg_server")
    name = server.create()
    try:
        yield server.url(name)
    finally:
        server.drop(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per test process, copied for each test that needs a schema."""
    path = tmp_path_factory.mktemp("template") / "smash.db"
    # Closing the last connection checkpoints the WAL into the file, so the file alone is a copy.
    open_database(str(path)).dispose()
    return path


@pytest.fixture
def db(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A fresh database with the current schema, opened."""
    server: PgServer | None = None
    name = ""
    if backend == "sqlite":
        path = tmp_path / "smash.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = normalize_url(str(path))
    else:
        server = request.getfixturevalue("pg_server")
        name = server.create(template=request.getfixturevalue("pg_template"))
        url = server.url(name)
    database = open_database(url)
    try:
        yield database
    finally:
        database.dispose()
        if server is not None:
            server.drop(name)


@pytest.fixture
def experiment_id(db: Database) -> int:
    """An experiment in the fresh database."""
    with db.session() as session:
        experiment: Experiment = create_experiment(
            session,
            "exp",
            dataset="synthetic",
            preset="tiny",
            search_space={"depth": [2, 4]},
            config={"train": {"steps": 10}},
            seed=0,
        )
        session.commit()
        return experiment.id
