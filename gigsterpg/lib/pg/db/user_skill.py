"""Mapped class of ``user_skills``, the association object of users <-> skills."""
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gigsterpg.lib.pg.db.base import Base

if TYPE_CHECKING:  # pragma: no cover
    from gigsterpg.lib.pg.db.skill import Skill
    from gigsterpg.lib.pg.db.user import User


class UserSkill(Base):
    """One skill of one user."""

    __tablename__ = "user_skills"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    skill_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("skills.id"), primary_key=True, index=True)

    user: Mapped["User"] = relationship(back_populates="skills")
    skill: Mapped["Skill"] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"UserSkill(user_id={self.user_id!r}, skill_id={self.skill_id!r})"
