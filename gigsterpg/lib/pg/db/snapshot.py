"""Mapped class of ``snapshot_ledger``: what each daily snapshot step did, per day, source and table."""
from datetime import date, datetime
from typing import Optional

from sqlalchemy import BigInteger, CheckConstraint, Date, DateTime, Index, Integer, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from gigsterpg.lib.pg.db.base import Base
from gigsterpg.lib.pg.db.states import SNAPSHOT_STATES, sql_in

SNAPSHOT_STEPS = ("extract-postgres", "extract-csv", "load", "query")


class SnapshotStep(Base):
    """One (day, step, source, table) of the daily snapshots: its state, rows, checksum and error.

    The row with ``table_name = ''`` is the step as a whole; ``load`` checks it
    for both extracts, ``status`` shows it. A step that is running holds a
    session advisory lock keyed by (day, step) on the target; a row left
    ``running`` whose lock is free belongs to a process that died.
    """

    __tablename__ = "snapshot_ledger"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    step: Mapped[str] = mapped_column(Text, primary_key=True)
    # "postgres", "csv", or "target" for load and query.
    source: Mapped[str] = mapped_column(Text, primary_key=True)
    table_name: Mapped[str] = mapped_column(Text, primary_key=True, server_default=text("''"))
    state: Mapped[str] = mapped_column(Text, nullable=False)
    rows: Mapped[Optional[int]] = mapped_column(BigInteger)
    bytes: Mapped[Optional[int]] = mapped_column(BigInteger)
    checksum: Mapped[Optional[str]] = mapped_column(Text)
    bad_lines: Mapped[Optional[int]] = mapped_column(Integer)
    # The partition or result folder the row is about.
    path: Mapped[Optional[str]] = mapped_column(Text)
    # For a failure: the one line a person reads, and the command that picks up from there.
    error: Mapped[Optional[str]] = mapped_column(Text)
    rerun: Mapped[Optional[str]] = mapped_column(Text)
    owner: Mapped[Optional[str]] = mapped_column(Text)
    tool_version: Mapped[Optional[str]] = mapped_column(Text)
    started_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(sql_in("state", SNAPSHOT_STATES), name="state"),
        CheckConstraint("step IN ('extract-postgres', 'extract-csv', 'load', 'query')", name="step"),
        Index("ix_snapshot_ledger_step_day", "step", "day"),
    )

    def __repr__(self) -> str:
        return f"SnapshotStep({self.day}, {self.step!r}, {self.source!r}, {self.table_name!r}, {self.state!r})"
