"""Mapped classes of ``datasets`` (what ``load-csv`` and ``transform`` made, and what ``/read`` serves)
and ``csv_rejects`` (the CSV lines that did not fit, kept beside the dataset they were meant for)."""
from datetime import datetime
from typing import Optional

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Text, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from gigsterpg.lib.pg.db.base import Base

DATASET_KINDS = ("csv", "transform")


class Dataset(Base):
    """One dataset: a table in PostgreSQL, replaced whole (or merged by key) by a load or a transform.

    The row is written in the transaction that replaces the table, so it
    always describes the table that readers see.
    """

    __tablename__ = "datasets"

    # The name readers use: the table's, or "schema.table" outside the datasets schema.
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    schema_name: Mapped[str] = mapped_column(Text, nullable=False)
    table_name: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    # The column rows are ordered and paged by (unique, not null): declared, or _row (the line order of a CSV).
    key: Mapped[str] = mapped_column(Text, nullable=False)
    # [{"name", "kind", "type"}] in the table's order: kind as inferred or declared, type PostgreSQL's.
    columns: Mapped[list] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    # The CSV files or the SQL file it was made from.
    source: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("''"))
    rows: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    bad_lines: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    replaced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())

    __table_args__ = (
        CheckConstraint("kind IN ('csv', 'transform')", name="kind"),
        UniqueConstraint("schema_name", "table_name", name="uq_datasets_table"),
    )


class CsvReject(Base):
    """A CSV line that did not fit its dataset's columns: where, which column, and why."""

    __tablename__ = "csv_rejects"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(Text, ForeignKey("datasets.name", ondelete="CASCADE"), nullable=False)
    file: Mapped[str] = mapped_column(Text, nullable=False)
    line: Mapped[int] = mapped_column(BigInteger, nullable=False)
    column_name: Mapped[Optional[str]] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    # The raw fields, cut short.
    text: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("''"))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())

    __table_args__ = (Index("ix_csv_rejects_dataset_line", "dataset", "line"),)
