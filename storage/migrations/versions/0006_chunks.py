"""A search fans out: chunk jobs point at their search, and racing survivors keep their rungs.

``jobs.parent_id`` names the search a ``chunk`` job scores a part of (deleting the
search deletes its chunks); job lists hide chunks, so a search stays one job to its
user. ``scores.rungs`` holds a racing survivor's sums at every rung it passed, so the
chunks of later rounds, on any worker, race against it on the same images, and a
restarted search finds its leaders again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARENT_FK = "fk_jobs_parent_id_jobs"


def upgrade() -> None:
    column = sa.Column("parent_id", sa.Integer(), nullable=True)
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a foreign key only by rebuilding the table.
        with op.batch_alter_table("jobs", recreate="always") as batch:
            batch.add_column(column)
            batch.create_foreign_key(PARENT_FK, "jobs", ["parent_id"], ["id"], ondelete="CASCADE")
    else:
        op.add_column("jobs", column)
        op.create_foreign_key(PARENT_FK, "jobs", "jobs", ["parent_id"], ["id"], ondelete="CASCADE")
    op.create_index("ix_jobs_parent_id", "jobs", ["parent_id"])
    op.add_column("scores", sa.Column("rungs", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scores") as batch:
        batch.drop_column("rungs")
    op.drop_index("ix_jobs_parent_id", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(PARENT_FK, type_="foreignkey")
        batch.drop_column("parent_id")
