"""Mapped class of ``pipeline_runs``: one record for every run of every pipeline, from the CLI or the API."""
from datetime import datetime
from typing import Optional

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from gigsterpg.lib.pg.db.base import Base
from gigsterpg.lib.pg.db.states import ACTIVE_JOB_STATES, JOB_STATES, QUEUED, RUN_SOURCES, sql_in


class PipelineRun(Base):
    """One run of a pipeline (``gigsterpg.pipelines``): what was asked, how it ended, what it read and made of it.

    While a run is queued or running, its process holds a session advisory lock keyed by the run
    (``gigsterpg.pipelines.runs``); a queued or running record whose lock is free belongs to a process that
    died, and reads as interrupted.
    """

    __tablename__ = "pipeline_runs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    pipeline: Mapped[str] = mapped_column(Text, nullable=False)
    # The parameters, without secrets (URLs masked).
    params: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    # "cli" or "api".
    source: Mapped[str] = mapped_column(Text, nullable=False)
    state: Mapped[str] = mapped_column(Text, nullable=False, server_default=text(f"'{QUEUED}'"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    started_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    # One line, connection strings masked.
    error: Mapped[Optional[str]] = mapped_column(Text)
    read: Mapped[Optional[int]] = mapped_column(BigInteger)
    # {outcome: count}, summing to read.
    outcomes: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    details: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    # The run this one restarts (POST /runs/{id}/restart).
    restart_of: Mapped[Optional[int]] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint(sql_in("state", JOB_STATES), name="state"),
        CheckConstraint(sql_in("source", RUN_SOURCES), name="source"),
        # The history of one pipeline, newest first (GET /runs?pipeline=, status, the retention).
        Index("ix_pipeline_runs_pipeline_id", "pipeline", "id"),
        # The readers find the runs whose process died here, however many runs there are.
        Index("ix_pipeline_runs_active", "id", postgresql_where=text(sql_in("state", ACTIVE_JOB_STATES))),
    )

    def __repr__(self) -> str:
        return f"PipelineRun(id={self.id!r}, pipeline={self.pipeline!r}, state={self.state!r})"
