"""The orders projection's bookkeeping: projection_hashes, the hash of each document written

Revision ID: 0009
Revises: 5b7c0e93a1d2
Create Date: 2026-11-30 04:00:00.000000
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: Union[str, None] = "5b7c0e93a1d2"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create projection_hashes (empty: the first export-orders writes every document and fills it)."""
    op.create_table(
        "projection_hashes",
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("_id", sa.Text(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("target", "_id", name=op.f("pk_projection_hashes")),
    )


def downgrade() -> None:
    """Drop projection_hashes."""
    op.drop_table("projection_hashes")
