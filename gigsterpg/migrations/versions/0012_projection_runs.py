"""Projection runs: the record of each export-orders run (CLI or API job) that status reads

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 04:55:00.000000
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: Union[str, None] = "0011"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create projection_runs and its partial index over the running ones."""
    op.create_table(
        "projection_runs",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("projection", sa.Text(), nullable=False),
        sa.Column("collection", sa.Text(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.Text(), server_default=sa.text("'running'"), nullable=False),
        sa.Column("counts", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("state IN ('running', 'succeeded', 'failed', 'interrupted')",
                           name=op.f("ck_projection_runs_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projection_runs")),
    )
    op.create_index("ix_projection_runs_running", "projection_runs", ["id"], unique=False,
                    postgresql_where=sa.text("state = 'running'"))


def downgrade() -> None:
    """Drop projection_runs (the runs' history goes with it)."""
    op.drop_index("ix_projection_runs_running", table_name="projection_runs",
                  postgresql_where=sa.text("state = 'running'"))
    op.drop_table("projection_runs")
