"""Mapped class of ``page_sessions``: the status page's signed-in sessions, so that signing out ends one."""
from datetime import datetime

from sqlalchemy import DateTime, Index, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from gigsterpg.lib.pg.db.base import Base


class PageSession(Base):
    """One session of the status page, from ``POST /login`` until ``POST /logout`` or its expiry.

    A session cookie is valid only while its row is here: the cookie's signature says the server made it,
    the row that it has not been signed out. Kept in PostgreSQL, so that it holds for every server sharing
    the database and across restarts. ``id`` is the SHA-256 of the cookie's nonce: the table does not hold
    what a cookie is made of.
    """

    __tablename__ = "page_sessions"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        # Sign-in deletes the expired sessions: it finds them here, however many there are.
        Index("ix_page_sessions_expires_at", "expires_at"),
    )
