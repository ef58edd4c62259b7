"""Incremental runs: a watermark per collection, and each run's mode

Revision ID: 7b2f90d4e1c5
Revises: 3d8e41c0b7a2
Create Date: 2026-11-23 01:25:00.000000
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "7b2f90d4e1c5"
down_revision: Union[str, None] = "3d8e41c0b7a2"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create sync_watermarks (empty: the next full run sets them) and add sync_runs.mode."""
    op.create_table(
        "sync_watermarks",
        sa.Column("collection", sa.Text(), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("set_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["sync_runs.id"], name=op.f("fk_sync_watermarks_run_id_sync_runs"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("collection", name=op.f("pk_sync_watermarks")),
    )
    op.add_column("sync_runs", sa.Column("mode", sa.Text(), server_default=sa.text("'full'"), nullable=False))


def downgrade() -> None:
    """Drop sync_runs.mode and sync_watermarks."""
    op.drop_column("sync_runs", "mode")
    op.drop_table("sync_watermarks")
