"""HTTP API: the jobs it started (exports and syncs), recorded so a restarted server still lists them

Revision ID: d81e5a2c9f40
Revises: c4a19e07d3b8
Create Date: 2026-11-23 15:03:43.771697
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "d81e5a2c9f40"
down_revision: Union[str, None] = "c4a19e07d3b8"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create api_jobs."""
    op.create_table(
        "api_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), server_default=sa.text("'queued'"), nullable=False),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rows_done", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("rows_total", sa.BigInteger(), nullable=True),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("errors", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"),
                  nullable=False),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("restart_of", sa.Uuid(), nullable=True),
        sa.CheckConstraint("kind IN ('export', 'sync')", name=op.f("ck_api_jobs_kind")),
        sa.CheckConstraint("state IN ('queued', 'running', 'succeeded', 'failed', 'interrupted')",
                           name=op.f("ck_api_jobs_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_jobs")),
    )
    op.create_index("ix_api_jobs_kind_created_at", "api_jobs", ["kind", "created_at"], unique=False)
    op.create_index("uq_api_jobs_active_export", "api_jobs", [sa.text("(params->>'collection')")], unique=True,
                    postgresql_where=sa.text("kind = 'export' AND state IN ('queued', 'running')"))
    op.create_index("uq_api_jobs_active_sync", "api_jobs", ["kind"], unique=True,
                    postgresql_where=sa.text("kind = 'sync' AND state IN ('queued', 'running')"))


def downgrade() -> None:
    """Drop api_jobs."""
    op.drop_index("uq_api_jobs_active_sync", table_name="api_jobs")
    op.drop_index("uq_api_jobs_active_export", table_name="api_jobs")
    op.drop_index("ix_api_jobs_kind_created_at", table_name="api_jobs")
    op.drop_table("api_jobs")
