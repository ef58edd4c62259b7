"""Mapped classes of the sync's own bookkeeping: runs, rejects and the hashes of stored documents."""
from datetime import datetime
from typing import Optional

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, LargeBinary, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from gigsterpg.lib.pg.db.base import Base
from gigsterpg.lib.pg.db.states import FULL, RUNNING


class SyncRun(Base):
    """One run of the sync: when, how it ended, and its counts per collection."""

    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    # One of states.RUN_STATES.
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text(f"'{RUNNING}'"))
    collections: Mapped[str] = mapped_column(Text, nullable=False)
    counts: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    error: Mapped[Optional[str]] = mapped_column(Text)
    pid: Mapped[Optional[int]] = mapped_column(Integer)
    hostname: Mapped[Optional[str]] = mapped_column(Text)
    # Where the run is, or stopped: "users: loading", "gigs: deleting"... Written in the same
    # transaction as each batch, so after a crash it tells exactly what was committed.
    stage: Mapped[Optional[str]] = mapped_column(Text)
    # Documents committed so far per collection: {"users": 15000, "gigs": 5000}.
    progress: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    # Transient errors (lost connection, server restart) the run recovered from.
    retries: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # One of states.RUN_MODES: "full" (every document read, deletes applied) or "incremental" (documents updated
    # since the watermark).
    mode: Mapped[str] = mapped_column(Text, nullable=False, server_default=text(f"'{FULL}'"))


class SyncReject(Base):
    """A document that could not be stored, with the reason a person reads.

    One row per (collection, document id); ``resolved_at`` is set when a later
    run finds the document fixed (or deleted), which closes the reject. The
    document is kept as extended JSON so a person can read what was wrong.
    """

    __tablename__ = "sync_rejects"

    collection: Mapped[str] = mapped_column(Text, primary_key=True)
    doc_id: Mapped[str] = mapped_column(Text, primary_key=True)
    run_id: Mapped[Optional[int]] = mapped_column(BigInteger, ForeignKey("sync_runs.id", ondelete="SET NULL"))
    # A short category to group by ("invalid email"), and the full sentence.
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    detail: Mapped[str] = mapped_column(Text, nullable=False)
    document: Mapped[dict] = mapped_column(JSONB, nullable=False)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    # Last time the reject itself changed; re-runs that find it unchanged leave it alone.
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    resolved_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_sync_rejects_open", "collection", "reason", postgresql_where=text("resolved_at IS NULL")),
    )


class SyncHash(Base):
    """The hash of the bytes each stored row was made from, so unchanged documents are skipped.

    Only stored rows have one: a rejected document is looked at again every run. A cache, so
    UNLOGGED (no WAL: a tenth of a first sync's time): a crash empties it, and the next run
    compares every document with its row instead, rewriting none that is unchanged.
    """

    __tablename__ = "sync_hashes"
    __table_args__ = {"prefixes": ["UNLOGGED"]}

    collection: Mapped[str] = mapped_column(Text, primary_key=True)
    doc_id: Mapped[str] = mapped_column("_id", Text, primary_key=True)
    hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    # The id's place in MongoDB's order of ids (``document.id_order_key``): who keeps what two share.
    id_key: Mapped[Optional[bytes]] = mapped_column(LargeBinary, nullable=True)


class SyncWatermark(Base):
    """How far a collection is synced: every document whose ``updated`` is before this is stored.

    Set by a scan read to its end (full or incremental) that wrote something,
    in the transaction of its last step, to the MongoDB server's clock when the
    scan began (an unchanged re-run leaves it as it is): a crash
    cannot move it past data that was not written. Incremental runs read the
    documents whose ``updated`` is at or after it, minus an overlap for clocks.
    """

    __tablename__ = "sync_watermarks"

    collection: Mapped[str] = mapped_column(Text, primary_key=True)
    updated: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[Optional[int]] = mapped_column(BigInteger, ForeignKey("sync_runs.id", ondelete="SET NULL"))
    set_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class SyncFollower(Base):
    """A follower of MongoDB's change streams (``sync --follow``): its position and how it is doing.

    ``token`` (the change stream's resume token, as BSON) is written in the
    same transaction as the changes it covers, so a restart resumes exactly
    where the last committed batch ended.
    """

    __tablename__ = "sync_followers"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    token: Mapped[Optional[bytes]] = mapped_column(LargeBinary)
    run_id: Mapped[Optional[int]] = mapped_column(BigInteger, ForeignKey("sync_runs.id", ondelete="SET NULL"))
    events_applied: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    # MongoDB's time of the last change applied, when it was applied, and when the stream last had nothing new.
    last_event_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    applied_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    caught_up_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[Optional[str]] = mapped_column(Text)
    last_error_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
