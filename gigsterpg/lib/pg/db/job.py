"""Mapped class of ``api_jobs``: the exports and syncs the HTTP API started, and how they went."""
import uuid
from datetime import datetime
from typing import Optional

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, Text, Uuid, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from gigsterpg.lib.pg.db.base import Base
from gigsterpg.lib.pg.db.states import ACTIVE_JOB_STATES, EXPORT, JOB_KINDS, JOB_STATES, QUEUED, SYNC, sql_in

ACTIVE = sql_in("state", ACTIVE_JOB_STATES)


class ApiJob(Base):
    """One job of the HTTP API.

    While a job is queued or running, the server that owns it holds a session
    advisory lock keyed by the job; a job in those states whose lock is free
    belongs to a server that died, and is shown as interrupted.
    """

    __tablename__ = "api_jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    state: Mapped[str] = mapped_column(Text, nullable=False, server_default=text(f"'{QUEUED}'"))
    # What was asked, without secrets: the source's host, port, user, database, table... (never the password).
    params: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    started_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    rows_done: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    rows_total: Mapped[Optional[int]] = mapped_column(BigInteger)
    # The outcome: the export's or the sync run's report.
    result: Mapped[Optional[dict]] = mapped_column(JSONB)
    errors: Mapped[list] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    # The server process that ran it ("host:pid"), and the job this one restarts.
    owner: Mapped[Optional[str]] = mapped_column(Text)
    restart_of: Mapped[Optional[uuid.UUID]] = mapped_column(Uuid)

    __table_args__ = (
        CheckConstraint(sql_in("kind", JOB_KINDS), name="kind"),
        CheckConstraint(sql_in("state", JOB_STATES), name="state"),
        # The listings (newest first) and the retention (Jobs.prune) walk this.
        Index("ix_api_jobs_kind_created_at", "kind", "created_at"),
        # One active export per target collection and one active sync, whichever server started them.
        Index("uq_api_jobs_active_export", text("(params->>'collection')"), unique=True,
              postgresql_where=text(f"kind = '{EXPORT}' AND {ACTIVE}")),
        Index("uq_api_jobs_active_sync", "kind", unique=True,
              postgresql_where=text(f"kind = '{SYNC}' AND {ACTIVE}")),
    )

    def __repr__(self) -> str:
        return f"ApiJob(id={self.id!r}, kind={self.kind!r}, state={self.state!r})"
