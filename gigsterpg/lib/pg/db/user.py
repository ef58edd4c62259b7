"""Mapped class of the ``users`` table."""
from datetime import datetime
from typing import TYPE_CHECKING, List, Optional

from sqlalchemy import BigInteger, DateTime, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship, synonym

from gigsterpg.lib.pg.db.base import Base

if TYPE_CHECKING:  # pragma: no cover
    from gigsterpg.lib.pg.db.gig import Gig
    from gigsterpg.lib.pg.db.user_skill import UserSkill

USER_NAME_MAX = 64


class User(Base):
    """A marketplace user, one row per MongoDB ``users`` document."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # The MongoDB _id as text: ObjectId -> 24 hex characters, int 0 -> '0'. Named as in the Gigster practical
    # (``User._id``); ``mongo_id`` is the same attribute under a name that reads well in Python.
    _id: Mapped[str] = mapped_column("_id", Text, unique=True, nullable=False)
    mongo_id: Mapped[str] = synonym("_id")
    created: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    updated: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    name: Mapped[str] = mapped_column(String(USER_NAME_MAX), nullable=False)
    email: Mapped[Optional[str]] = mapped_column(Text, unique=True)
    # Every field of the document the mapping does not know, as extended JSON.
    extra: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))

    skills: Mapped[List["UserSkill"]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True)
    gigs: Mapped[List["Gig"]] = relationship(back_populates="poster", passive_deletes=True)

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, _id={self._id!r}, name={self.name!r})"
