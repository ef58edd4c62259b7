"""Mapped class of the ``skills`` table."""
from sqlalchemy import Index, Integer, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from gigsterpg.lib.pg.db.base import Base


class Skill(Base):
    """A skill a user can have, e.g. ``Python``; names are unique ignoring case."""

    __tablename__ = "skills"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True, nullable=False)

    __table_args__ = (
        # "python" and "Python" are one skill: users' arrays differ in case.
        Index("uq_skills_lower_name", func.lower(name), unique=True),
    )

    def __repr__(self) -> str:
        return f"Skill(id={self.id!r}, name={self.name!r})"
