"""CSV sources and datasets

Placeholder reserved for issue 15 (CSV sources and the read API): filled in by that work.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 04:00:00.000000
"""
from typing import Sequence, Union

revision: str = "0011"
down_revision: Union[str, None] = "0010"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
