"""Architectures know whether their newest score is partial (racing dropped them early).

The browser sorts errors with complete scores first (``latest_partial``), so the
error sort's browse index gains that column in front of ``latest_error``. On
SQLite the table is rebuilt to keep ``spec`` the last column (SQLite reads a
row's columns in order; the browse columns must not sit behind the large spec).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The browse columns as revision 0001 left them; the error index is rebuilt.
BROWSE = ("latest_error", "latest_loss", "params", "flops", "depth", "num_ops", "best_test_acc")
ERROR_INDEX = "ix_architectures_browse_latest_error"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.drop_index(ERROR_INDEX, table_name="architectures")
    column = sa.Column("latest_partial", sa.Boolean(), nullable=True)
    if sqlite:
        with op.batch_alter_table("architectures", recreate="always") as batch:
            batch.add_column(column, insert_before="best_test_acc")
    else:
        # PostgreSQL moves large values out of the row (TOAST): column order is moot.
        op.add_column("architectures", column)
    # A score is partial when racing dropped its candidate: method "racing", or
    # "racing+..." when the scoring differed from one plain pass (see engine.worker).
    op.execute(
        """
        UPDATE architectures SET latest_partial = (
            SELECT scores.method = 'racing' OR scores.method LIKE 'racing+%'
            FROM scores WHERE scores.architecture_id = architectures.id
            ORDER BY scores.id DESC LIMIT 1
        )
        """
    )
    others = [column for column in BROWSE if column != "latest_error"]
    op.create_index(
        ERROR_INDEX,
        "architectures",
        ["experiment_id", "latest_partial", "latest_error", "id", *others],
    )


def downgrade() -> None:
    op.drop_index(ERROR_INDEX, table_name="architectures")
    with op.batch_alter_table("architectures") as batch:
        batch.drop_column("latest_partial")
    others = [column for column in BROWSE if column != "latest_error"]
    op.create_index(ERROR_INDEX, "architectures", ["experiment_id", "latest_error", "id", *others])
