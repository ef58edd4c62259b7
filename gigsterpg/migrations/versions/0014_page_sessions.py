"""Page sessions: the status page's signed-in sessions, so that signing out ends one on every server

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 22:40:00.000000
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: Union[str, None] = "0013"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create page_sessions and its index over the expiry."""
    op.create_table(
        "page_sessions",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_page_sessions")),
    )
    op.create_index("ix_page_sessions_expires_at", "page_sessions", ["expires_at"], unique=False)


def downgrade() -> None:
    """Drop page_sessions (everyone signed in to the status page is signed out)."""
    op.drop_index("ix_page_sessions_expires_at", table_name="page_sessions")
    op.drop_table("page_sessions")
