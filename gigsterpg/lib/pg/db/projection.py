"""Mapped classes of the projections' bookkeeping (PostgreSQL -> MongoDB, ``export-orders``)."""
from datetime import datetime
from typing import Optional

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, LargeBinary, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from gigsterpg.lib.pg.db.base import Base
from gigsterpg.lib.pg.db.states import RUN_STATES, RUNNING, sql_in


class ProjectionHash(Base):
    """The hash of each document a projection wrote, so that an unchanged document is not written again.

    ``target`` is the MongoDB ``database.collection``; ``_id`` the document's ``_id`` as text. Written
    after the document, in one transaction per batch: a hash is never ahead of what MongoDB holds.
    """

    __tablename__ = "projection_hashes"

    target: Mapped[str] = mapped_column(Text, primary_key=True)
    doc_id: Mapped[str] = mapped_column("_id", Text, primary_key=True)
    hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class ProjectionRun(Base):
    """One run of a projection (``export-orders``, from the CLI or as an API job): when, how it ended, its counts.

    While it runs, the process holds a session advisory lock keyed by the run (``runs.lock_name``); a run
    recorded as running whose lock is free belongs to a process that died, and is shown as interrupted.
    """

    __tablename__ = "projection_runs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    projection: Mapped[str] = mapped_column(Text, nullable=False)
    # The MongoDB target, ``database.collection``.
    collection: Mapped[str] = mapped_column(Text, nullable=False)
    # Who ran it: "cli", or "api job <uuid>".
    origin: Mapped[str] = mapped_column(Text, nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    # One of states.RUN_STATES.
    state: Mapped[str] = mapped_column(Text, nullable=False, server_default=text(f"'{RUNNING}'"))
    # read, written, unchanged, deleted, rejected, reasons {reason: count}, tax_rate, time_zone, seconds.
    counts: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    # The one-line error, connection strings masked.
    error: Mapped[Optional[str]] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(sql_in("state", RUN_STATES), name="state"),
        # The next run marks the runs whose process died: it finds them here, however many runs there are.
        Index("ix_projection_runs_running", "id", postgresql_where=text(f"state = '{RUNNING}'")),
    )
