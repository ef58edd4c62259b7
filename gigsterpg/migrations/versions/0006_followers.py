"""Continuous sync: where each follower of the change streams is, and how it is doing

Revision ID: c4a19e07d3b8
Revises: 7b2f90d4e1c5
Create Date: 2026-11-23 01:40:00.000000
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "c4a19e07d3b8"
down_revision: Union[str, None] = "7b2f90d4e1c5"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create sync_followers."""
    op.create_table(
        "sync_followers",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("token", sa.LargeBinary(), nullable=True),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("events_applied", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("caught_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["sync_runs.id"], name=op.f("fk_sync_followers_run_id_sync_runs"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sync_followers")),
    )


def downgrade() -> None:
    """Drop sync_followers."""
    op.drop_table("sync_followers")
