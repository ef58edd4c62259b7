"""Pipeline runs: one record for every run of every pipeline (CLI or API), which status and GET /runs read

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 22:40:00.000000
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: Union[str, None] = "0012"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ACTIVE = "state IN ('queued', 'running')"


def upgrade() -> None:
    """Create pipeline_runs, its history index and its partial index over the active runs."""
    op.create_table(
        "pipeline_runs",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("pipeline", sa.Text(), nullable=False),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), server_default=sa.text("'queued'"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("read", sa.BigInteger(), nullable=True),
        sa.Column("outcomes", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column("restart_of", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("state IN ('queued', 'running', 'succeeded', 'failed', 'interrupted')",
                           name=op.f("ck_pipeline_runs_state")),
        sa.CheckConstraint("source IN ('cli', 'api')", name=op.f("ck_pipeline_runs_source")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_runs")),
    )
    op.create_index("ix_pipeline_runs_pipeline_id", "pipeline_runs", ["pipeline", "id"], unique=False)
    op.create_index("ix_pipeline_runs_active", "pipeline_runs", ["id"], unique=False,
                    postgresql_where=sa.text(ACTIVE))


def downgrade() -> None:
    """Drop pipeline_runs (the runs' history goes with it; each pipeline's own tables stay)."""
    op.drop_index("ix_pipeline_runs_active", table_name="pipeline_runs", postgresql_where=sa.text(ACTIVE))
    op.drop_index("ix_pipeline_runs_pipeline_id", table_name="pipeline_runs")
    op.drop_table("pipeline_runs")
