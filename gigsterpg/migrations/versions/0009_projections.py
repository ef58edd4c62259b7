"""The orders projection's bookkeeping

Placeholder reserved for issue 13 (orders projection): filled in by that work.

Revision ID: 0009
Revises: 5b7c0e93a1d2
Create Date: 2026-11-30 04:00:00.000000
"""
from typing import Sequence, Union

revision: str = "0009"
down_revision: Union[str, None] = "5b7c0e93a1d2"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
