"""Id order keys: sync_hashes keeps each stored document's _id in MongoDB's order of ids (BSON comparison order)

The rule for what two documents share (one e-mail, one text form of an id) is the id that comes first in
MongoDB's order of ids; a stored holder's key is kept here. Existing rows get theirs at the next run (the
mapping version changed, so every document is checked once again; no row is rewritten).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 01:45:00.000000
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: Union[str, None] = "0014"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add sync_hashes.id_key."""
    op.add_column("sync_hashes", sa.Column("id_key", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    """Drop sync_hashes.id_key."""
    op.drop_column("sync_hashes", "id_key")
