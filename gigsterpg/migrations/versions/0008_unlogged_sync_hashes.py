"""sync_hashes becomes UNLOGGED: a cache, rebuilt by the next run if a crash empties it

Writing each stored document's hash through the WAL cost the first sync about a
tenth of its time. PostgreSQL empties an unlogged table after a crash (and a
standby does not have its rows); the next run then finds no hashes, compares
every document's row with the stored one, rewrites none that is unchanged and
records the hashes again. The rows themselves stay in logged tables.

Revision ID: 5b7c0e93a1d2
Revises: d81e5a2c9f40
Create Date: 2026-11-23 17:50:00.000000
"""
from typing import Sequence, Union

from alembic import op

revision: str = "5b7c0e93a1d2"
down_revision: Union[str, None] = "d81e5a2c9f40"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Make sync_hashes unlogged (rewrites the table once)."""
    op.execute("ALTER TABLE sync_hashes SET UNLOGGED")


def downgrade() -> None:
    """Make sync_hashes logged again."""
    op.execute("ALTER TABLE sync_hashes SET LOGGED")
