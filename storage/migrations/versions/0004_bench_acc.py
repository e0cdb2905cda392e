"""Architectures carry a published benchmark's accuracy beside their retrained accuracy.

``bench_acc`` (e.g. NAS-Bench-201's 200-epoch test accuracy of a cell) is a truth
that nobody here produced: the browser sorts and filters by it like by the other
browse columns, so every browse index gains it (an index entry holds every browse
column, so a filter is checked without reading the row). On SQLite the table is
rebuilt to keep ``spec`` the last column.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The browse columns before and after this revision, and each sort's key before id.
BEFORE = ("latest_error", "latest_loss", "params", "flops", "depth", "num_ops", "best_test_acc")
AFTER = (*BEFORE, "bench_acc")


def _key(column: str) -> list[str]:
    return [] if column == "id" else ["latest_partial", "latest_error"] if column == "latest_error" else [column]


def _create(columns: Sequence[str]) -> None:
    for column in ("id", *columns):
        order = ["experiment_id", *_key(column), "id"]
        op.create_index(
            f"ix_architectures_browse_{column}",
            "architectures",
            order + [c for c in columns if c not in order],
        )


def _drop(columns: Sequence[str]) -> None:
    for column in ("id", *columns):
        op.drop_index(f"ix_architectures_browse_{column}", table_name="architectures")


def upgrade() -> None:
    _drop(BEFORE)
    column = sa.Column("bench_acc", sa.Float(), nullable=True)
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("architectures", recreate="always") as batch:
            batch.add_column(column, insert_before="retrain_state")
    else:
        # PostgreSQL moves large values out of the row (TOAST): column order is moot.
        op.add_column("architectures", column)
    _create(AFTER)


def downgrade() -> None:
    _drop(AFTER)
    with op.batch_alter_table("architectures") as batch:
        batch.drop_column("bench_acc")
    _create(BEFORE)
