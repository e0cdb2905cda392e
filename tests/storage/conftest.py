"""Fixtures: a fresh database per test, on SQLite and on PostgreSQL.

PostgreSQL comes from ``SMASH_TEST_PG_URL`` (an admin URL whose role may
create databases). Each test gets its own ``smash_t_<uuid8>`` database, so
tests can run in parallel under xdist; it is dropped afterwards. Tests that
need the schema get a copy of a template migrated once per test process. Without the
variable the PostgreSQL cases are skipped, unless ``SMASH_REQUIRE_PG=1``, in
which case they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

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


def _create_pg_database(admin_url: str, template: str | None = None) -> str:
    name = f"smash_t_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            suffix = f' TEMPLATE "{template}"' if template else ""
            connection.execute(text(f'CREATE DATABASE "{name}"{suffix}'))
    finally:
        admin.dispose()
    return name


def _drop_pg_database(admin_url: str, name: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _pg_url(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated once per test process, copied for each test that needs a schema.

    Copying skips running the migrations for every test; the migration tests
    themselves start from empty databases (``db_url``).
    """
    admin_url = pg_admin_url()
    name = _create_pg_database(admin_url)
    try:
        open_database(_pg_url(admin_url, name)).dispose()
        yield name
    finally:
        _drop_pg_database(admin_url, name)


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database (nothing migrated yet)."""
    if backend == "sqlite":
        yield normalize_url(str(tmp_path / "smash.db"))
        return
    admin_url = pg_admin_url()
    name = _create_pg_database(admin_url)
    try:
        yield _pg_url(admin_url, name)
    finally:
        _drop_pg_database(admin_url, name)


@pytest.fixture
def db(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A fresh database with the current schema, opened."""
    if backend == "sqlite":
        url = normalize_url(str(tmp_path / "smash.db"))
        name = None
    else:
        admin_url = pg_admin_url()
        name = _create_pg_database(admin_url, template=request.getfixturevalue("pg_template"))
        url = _pg_url(admin_url, name)
    database = open_database(url)
    try:
        yield database
    finally:
        database.dispose()
        if name is not None:
            _drop_pg_database(admin_url, name)


def make_experiment(db: Database, name: str = "exp") -> int:
    """Create an experiment and return its id."""
    with db.session() as session:
        experiment: Experiment = create_experiment(
            session,
            name,
            dataset="synthetic",
            preset="tiny",
            search_space={"depth": [2, 4]},
            config={"train": {"steps": 10}},
            seed=0,
        )
        session.commit()
        return experiment.id


@pytest.fixture
def experiment_id(db: Database) -> int:
    """An experiment in the fresh database."""
    return make_experiment(db)
