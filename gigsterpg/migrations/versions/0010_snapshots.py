"""The daily snapshots' ledger

Placeholder reserved for issue 14 (daily snapshots): filled in by that work.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 04:00:00.000000
"""
from typing import Sequence, Union

revision: str = "0010"
down_revision: Union[str, None] = "0009"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
