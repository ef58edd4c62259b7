"""Mapped class of the ``gigs`` table."""
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Optional

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Numeric, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship, synonym

from gigsterpg.lib.pg.db.base import Base

if TYPE_CHECKING:  # pragma: no cover
    from gigsterpg.lib.pg.db.user import User

GIG_NAME_MAX = 128
GIG_STATES = ("cancelled", "done", "in_progress", "unstarted")


class Gig(Base):
    """A gig, one row per MongoDB ``gigs`` document; posted by a user."""

    __tablename__ = "gigs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # The MongoDB _id as text, named as in the Gigster practical (``Gig._id``); ``mongo_id`` is a synonym.
    _id: Mapped[str] = mapped_column("_id", Text, unique=True, nullable=False)
    mongo_id: Mapped[str] = synonym("_id")
    created: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    updated: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    name: Mapped[str] = mapped_column(String(GIG_NAME_MAX), nullable=False)
    description: Mapped[Optional[str]] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text, nullable=False)
    poster_id: Mapped[Optional[int]] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"), index=True)
    # The raw MongoDB reference to the poster, kept so that a gig whose poster
    # has not arrived yet is linked as soon as the user does.
    poster_ref: Mapped[Optional[str]] = mapped_column(Text)
    budget: Mapped[Optional[Decimal]] = mapped_column(Numeric)
    extra: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))

    poster: Mapped[Optional["User"]] = relationship(back_populates="gigs")

    __table_args__ = (
        CheckConstraint("state IN ('cancelled', 'done', 'in_progress', 'unstarted')", name="state"),
        # Only unlinked gigs are looked up by poster_ref, so the index stays small.
        Index("ix_gigs_unlinked_poster_ref", poster_ref, postgresql_where=text("poster_id IS NULL")),
    )

    def __repr__(self) -> str:
        return f"Gig(id={self.id!r}, _id={self._id!r}, name={self.name!r}, state={self.state!r})"
