"""The smash schema as typed SQLAlchemy ORM models.

The database is the only channel between the UI and the workers, so the
schema is the contract between them. Every change to it goes through an
Alembic revision in ``storage/migrations/versions``; the test suite checks
that the migrated schema matches these models exactly.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

EXPERIMENT_STATUSES: Final = ("created", "running", "done", "failed", "cancelled")
# "chunk": a part of a search's scoring that any worker may claim (its parent is the search).
JOB_KINDS: Final = ("train", "score", "search", "retrain", "chunk")
JOB_STATES: Final = ("queued", "running", "paused", "done", "failed", "cancelled")
JOB_REQUESTS: Final = ("pause", "cancel")
RETRAIN_STATES: Final = ("queued", "running", "done", "failed")
EVENT_LEVELS: Final = ("info", "warning", "error")
# The largest id an Integer column holds on every backend (PostgreSQL's integer).
ID_MAX: Final = 2**31 - 1


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL stores ``timestamptz`` natively. SQLite has no time zones, so
    values are stored as naive UTC text (which sorts and compares correctly)
    and get their ``tzinfo`` back when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; use timezone-aware UTC")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# Deterministic constraint names, so later migrations can refer to them on
# both backends (SQLite batch mode needs names to drop constraints).
NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every smash table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Experiment(Base):
    """One search: a data set, a search space and the configs of every phase."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String, unique=True)
    dataset: Mapped[str] = mapped_column(String)
    preset: Mapped[str] = mapped_column(String)
    search_space: Mapped[dict[str, Any]] = mapped_column(JSON)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String, default="created", server_default="created")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """A unit of background work, claimed and run by one worker at a time."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state_priority_id", "state", "priority", "id"),
        Index("ix_jobs_experiment_id_id", "experiment_id", "id"),
        Index("ix_jobs_depends_on_id", "depends_on_id"),
        Index("ix_jobs_parent_id", "parent_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String, default="queued", server_default="queued")
    requested: Mapped[str | None] = mapped_column(String)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    depends_on_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    # The search a chunk job scores a part of; None for every other job. Chunks are
    # hidden from job lists: a search is one job to its user.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    progress: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    progress_text: Mapped[str] = mapped_column(String, default="", server_default="")
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Times the job was taken from a worker that stopped sending heartbeats (killed,
    # out of memory, crashed); at MAX_WORKERS_LOST it fails instead of being requeued.
    workers_lost: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    worker_id: Mapped[str | None] = mapped_column(String)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Worker(Base):
    """A worker process; its heartbeat tells the UI whether anyone is working."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    host: Mapped[str] = mapped_column(String)
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    current_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    # Its GPU, recorded when it registers (None for a CPU worker): the physical GPU behind
    # its "cuda:N" as nvidia-smi numbers it, whatever CUDA_VISIBLE_DEVICES it ran with.
    gpu_index: Mapped[int | None] = mapped_column(Integer)  # nvidia-smi's index
    gpu_uuid: Mapped[str | None] = mapped_column(String)  # "GPU-..." (or a MIG instance's "MIG-...")
    gpu_name: Mapped[str | None] = mapped_column(String)  # e.g. "NVIDIA H100 80GB HBM3"
    # What its GPU reported at its last heartbeat (NVML, else nvidia-smi); None: unknown.
    gpu_memory_used_mib: Mapped[float | None] = mapped_column(Float)
    gpu_memory_total_mib: Mapped[float | None] = mapped_column(Float)
    gpu_utilization_pct: Mapped[float | None] = mapped_column(Float)


class Checkpoint(Base):
    """A saved training state of a job, on disk under the database's files dir."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# The columns a browse page can be sorted and filtered by.
BROWSE_COLUMNS: Final = (
    "latest_error",
    "latest_loss",
    "params",
    "flops",
    "depth",
    "num_ops",
    "best_test_acc",
    "bench_acc",
)


def browse_sort_key(sort_column: str) -> list[str]:
    """The columns a browse page sorted by ``sort_column`` is ordered by, before ``id``.

    Errors sort complete scores before partial ones (``latest_partial``): a
    candidate that racing dropped after a slice of the validation images has an
    error measured on other, fewer images, which must not outrank a complete one
    (the engine's ``rank_key`` ranks the same way).
    """
    if sort_column == "id":
        return []
    if sort_column == "latest_error":
        return ["latest_partial", "latest_error"]
    return [sort_column]


def browse_index_columns(sort_column: str) -> list[str]:
    """Key of the browse index for one sort column (``"id"`` or one of BROWSE_COLUMNS).

    ``(experiment_id, <sort key>, id)`` gives the keyset order; the other
    browse columns follow so that filter terms are checked on the index entry,
    without reading the (large) row, while a page is scanned.
    """
    order = ["experiment_id", *browse_sort_key(sort_column), "id"]
    return order + [column for column in BROWSE_COLUMNS if column not in order]


class Architecture(Base):
    """A sampled architecture with denormalised columns for fast browsing.

    ``latest_error``, ``latest_loss``, ``latest_partial``, ``best_test_acc`` and
    ``retrain_state`` are kept up to date (``bench_acc`` is written once, with the
    architecture) by ``storage.records`` so that a sorted, filtered page
    is one scan of a browse index (see ``browse_index_columns``). ``spec`` is
    the last column on purpose: it is the only large value, and SQLite reads a
    row's columns in order.
    """

    __tablename__ = "architectures"
    __table_args__ = (
        UniqueConstraint("experiment_id", "hash"),
        *(
            Index(f"ix_architectures_browse_{column}", *browse_index_columns(column))
            for column in ("id", *BROWSE_COLUMNS)
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    hash: Mapped[str] = mapped_column(String)
    params: Mapped[int] = mapped_column(BigInteger)
    flops: Mapped[int] = mapped_column(BigInteger)
    depth: Mapped[int] = mapped_column(Integer)
    num_ops: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    latest_error: Mapped[float | None] = mapped_column(Float)
    latest_loss: Mapped[float | None] = mapped_column(Float)
    # Whether the newest score covers only part of the validation images (racing
    # dropped the candidate early); None while unscored.
    latest_partial: Mapped[bool | None] = mapped_column(Boolean)
    best_test_acc: Mapped[float | None] = mapped_column(Float)
    # A published benchmark's accuracy of this architecture (e.g. NAS-Bench-201's
    # 200-epoch CIFAR-10 test accuracy), a truth beside retrained accuracy, never mixed
    # with it; None when the experiment has no benchmark table or the table lacks it.
    bench_acc: Mapped[float | None] = mapped_column(Float)
    retrain_state: Mapped[str | None] = mapped_column(String)
    spec: Mapped[str] = mapped_column(Text)


class Score(Base):
    """The proxy error of one architecture with weights generated by one checkpoint."""

    __tablename__ = "scores"
    __table_args__ = (
        UniqueConstraint("architecture_id", "checkpoint_id", "method"),
        Index("ix_scores_checkpoint_id", "checkpoint_id"),
        Index("ix_scores_job_id", "job_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    architecture_id: Mapped[int] = mapped_column(ForeignKey("architectures.id", ondelete="CASCADE"))
    checkpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("checkpoints.id", ondelete="CASCADE")
    )
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    error: Mapped[float] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    images: Mapped[int] = mapped_column(Integer)
    z_draws: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String)
    # A racing survivor's (images, wrong, loss) sums at every rung it passed, so later
    # chunks of the search race against it on the same images; None for other scores.
    rungs: Mapped[list[list[float]] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# NULLs are distinct in unique constraints on both backends, so scores without
# a checkpoint need their own partial unique index to stay idempotent.
Index(
    "uq_scores_architecture_id_method_no_checkpoint",
    Score.architecture_id,
    Score.method,
    unique=True,
    sqlite_where=Score.checkpoint_id.is_(None),
    postgresql_where=Score.checkpoint_id.is_(None),
)


class Retrain(Base):
    """One from-scratch training of an architecture, with its learning curve."""

    __tablename__ = "retrains"
    __table_args__ = (
        Index("ix_retrains_architecture_id", "architecture_id"),
        Index("ix_retrains_job_id", "job_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    architecture_id: Mapped[int] = mapped_column(ForeignKey("architectures.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epochs: Mapped[int] = mapped_column(Integer)
    best_val_acc: Mapped[float | None] = mapped_column(Float)
    test_acc: Mapped[float | None] = mapped_column(Float)
    curve: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    weights_path: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Metric(Base):
    """One scalar of a job's time series (loss, accuracy, throughput...)."""

    __tablename__ = "metrics"
    __table_args__ = (
        # Unique so that a job resumed from a checkpoint overwrites the steps it re-runs.
        Index("uq_metrics_job_id_name_step", "job_id", "name", "step", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String)
    value: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Event(Base):
    """A line of the activity log shown in the UI."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_experiment_id_id", "experiment_id", "id"),
        Index("ix_events_job_id_id", "job_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    experiment_id: Mapped[int | None] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE")
    )
    level: Mapped[str] = mapped_column(String)
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
