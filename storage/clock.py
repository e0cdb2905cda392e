"""Time that decides liveness, taken from the database server where there is one.

Heartbeats and staleness are compared across hosts: on PostgreSQL the server's clock
is used, so workers on hosts with skewed clocks agree; SQLite lives on one host.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Connection, Engine, func, literal, select
from sqlalchemy.orm import Session

from storage.db import Database
from storage.models import UTCDateTime, utcnow

Executor = Session | Connection


def engine_of(engine_or_db: Engine | Database) -> Engine:
    """The SQLAlchemy engine of a Database (or the engine itself)."""
    return engine_or_db.engine if isinstance(engine_or_db, Database) else engine_or_db


def is_postgresql(executor: Executor) -> bool:
    """Whether a session or connection talks to PostgreSQL."""
    bind = executor.get_bind() if isinstance(executor, Session) else executor
    return bind.dialect.name == "postgresql"


def db_now(executor: Executor) -> datetime:
    """The current time as a value: the server's on PostgreSQL, this host's on SQLite."""
    if is_postgresql(executor):
        now = executor.execute(select(func.statement_timestamp())).scalar_one()
        assert isinstance(now, datetime)
        return now
    return utcnow()


def now_sql(executor: Executor) -> ColumnElement[datetime]:
    """The current time as SQL, for values written without a round trip to fetch it first."""
    if is_postgresql(executor):
        return func.statement_timestamp(type_=UTCDateTime())
    return literal(utcnow(), UTCDateTime())
