"""Where a run is (or stopped): its stage, the documents committed per collection, and its retries

Revision ID: 3d8e41c0b7a2
Revises: 94575667fb4d
Create Date: 2026-11-23 09:12:40.000000
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "3d8e41c0b7a2"
down_revision: Union[str, None] = "94575667fb4d"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add sync_runs.stage, .progress and .retries (old runs get an empty progress)."""
    op.add_column("sync_runs", sa.Column("stage", sa.Text(), nullable=True))
    op.add_column("sync_runs", sa.Column("progress", postgresql.JSONB(astext_type=sa.Text()),
                                         server_default=sa.text("'{}'::jsonb"), nullable=False))
    op.add_column("sync_runs", sa.Column("retries", sa.Integer(), server_default=sa.text("0"), nullable=False))


def downgrade() -> None:
    """Drop the three columns."""
    op.drop_column("sync_runs", "retries")
    op.drop_column("sync_runs", "progress")
    op.drop_column("sync_runs", "stage")
