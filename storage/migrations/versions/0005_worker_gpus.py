"""Workers record their GPU: which physical GPU it is, and its memory and load at each heartbeat.

A worker's "cuda:N" is the N-th device its CUDA_VISIBLE_DEVICES lets it see, not
nvidia-smi's N, and a worker on another host has no nvidia-smi the app could run: so
each worker records its GPU's index, UUID and name when it registers and sends memory
used, memory total and utilisation with every heartbeat.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("gpu_index", sa.Integer),
    ("gpu_uuid", sa.String),
    ("gpu_name", sa.String),
    ("gpu_memory_used_mib", sa.Float),
    ("gpu_memory_total_mib", sa.Float),
    ("gpu_utilization_pct", sa.Float),
)


def upgrade() -> None:
    # Batch mode, as the other revisions: on SQLite an ADD COLUMN (workers has no large
    # column to keep last), on PostgreSQL plain ALTERs.
    with op.batch_alter_table("workers") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
