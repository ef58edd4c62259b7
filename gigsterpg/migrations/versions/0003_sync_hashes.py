"""Hashes of the documents each stored row was made from, so unchanged documents are skipped

Revision ID: 94575667fb4d
Revises: 5c1f0e2a7b31
Create Date: 2026-11-22 23:09:17.109547
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "94575667fb4d"
down_revision: Union[str, None] = "5c1f0e2a7b31"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create sync_hashes (empty: the next run maps every document once and fills it)."""
    op.create_table(
        "sync_hashes",
        sa.Column("collection", sa.Text(), nullable=False),
        sa.Column("_id", sa.Text(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("collection", "_id", name=op.f("pk_sync_hashes")),
    )


def downgrade() -> None:
    """Drop sync_hashes."""
    op.drop_table("sync_hashes")
