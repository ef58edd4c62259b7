"""CSV sources and datasets: the registry of what load-csv and transform made (and /read serves), CSV rejects

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 04:00:00.000000
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: Union[str, None] = "0010"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create datasets and csv_rejects (the datasets' own tables are made by load-csv and transform)."""
    op.create_table(
        "datasets",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("schema_name", sa.Text(), nullable=False),
        sa.Column("table_name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("columns", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"),
                  nullable=False),
        sa.Column("source", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("rows", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("bad_lines", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("replaced_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind IN ('csv', 'transform')", name=op.f("ck_datasets_kind")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_datasets")),
        sa.UniqueConstraint("schema_name", "table_name", name="uq_datasets_table"),
    )
    op.create_table(
        "csv_rejects",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("dataset", sa.Text(), nullable=False),
        sa.Column("file", sa.Text(), nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=False),
        sa.Column("column_name", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name=op.f("fk_csv_rejects_dataset_datasets"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_csv_rejects")),
    )
    op.create_index("ix_csv_rejects_dataset_line", "csv_rejects", ["dataset", "line"], unique=False)


def downgrade() -> None:
    """Drop csv_rejects and datasets (the datasets' tables stay: they are the user's data)."""
    op.drop_index("ix_csv_rejects_dataset_line", table_name="csv_rejects")
    op.drop_table("csv_rejects")
    op.drop_table("datasets")
