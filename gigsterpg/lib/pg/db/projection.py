"""Mapped class of the projections' bookkeeping (PostgreSQL -> MongoDB, ``export-orders``)."""
from sqlalchemy import LargeBinary, Text
from sqlalchemy.orm import Mapped, mapped_column

from gigsterpg.lib.pg.db.base import Base


class ProjectionHash(Base):
    """The hash of each document a projection wrote, so that an unchanged document is not written again.

    ``target`` is the MongoDB ``database.collection``; ``_id`` the document's ``_id`` as text. Written
    after the document, in one transaction per batch: a hash is never ahead of what MongoDB holds.
    """

    __tablename__ = "projection_hashes"

    target: Mapped[str] = mapped_column(Text, primary_key=True)
    doc_id: Mapped[str] = mapped_column("_id", Text, primary_key=True)
    hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
