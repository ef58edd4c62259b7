"""The daily snapshots' ledger: (day, step, source, table) -> state, rows, checksum, error

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 04:00:00.000000
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: Union[str, None] = "0009"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create snapshot_ledger."""
    op.create_table(
        "snapshot_ledger",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("step", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("table_name", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("checksum", sa.Text(), nullable=True),
        sa.Column("bad_lines", sa.Integer(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("rerun", sa.Text(), nullable=True),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("tool_version", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('running', 'succeeded', 'failed')", name=op.f("ck_snapshot_ledger_state")),
        sa.CheckConstraint("step IN ('extract-postgres', 'extract-csv', 'load', 'query')",
                           name=op.f("ck_snapshot_ledger_step")),
        sa.PrimaryKeyConstraint("day", "step", "source", "table_name", name=op.f("pk_snapshot_ledger")),
    )
    op.create_index("ix_snapshot_ledger_step_day", "snapshot_ledger", ["step", "day"], unique=False)


def downgrade() -> None:
    """Drop snapshot_ledger (the loaded snapshots' schemas, snap_*, are data and stay)."""
    op.drop_index("ix_snapshot_ledger_step_day", table_name="snapshot_ledger")
    op.drop_table("snapshot_ledger")
