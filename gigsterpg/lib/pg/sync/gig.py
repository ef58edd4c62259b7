"""Sync of MongoDB ``gigs`` into ``gigs``.

``gig_row`` is the one document -> row mapping; ``GigSync.mongo_to_pg`` (one
ORM instance) and the bulk path both use it.
"""
from typing import Mapping, NamedTuple, Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from gigsterpg.exc import RejectedDocument
from gigsterpg.lib.pg.db.gig import GIG_NAME_MAX, GIG_STATES, Gig
from gigsterpg.lib.pg.db.user import User
from gigsterpg.lib.pg.sync import document
from gigsterpg.lib.pg.sync.contract import Reference
from gigsterpg.lib.pg.sync.table import TableSync
from gigsterpg.lib.pg.sync.user import UserSync

# ``upsert`` is known so that it is left out of ``extra``: the brief excludes it.
KNOWN_FIELDS = frozenset({"_id", "created", "updated", "name", "description", "state", "poster", "budget",
                          "upsert"})


class GigRow(NamedTuple):
    """One ``gigs`` row as the sync stores it; the poster is still a MongoDB reference."""

    mongo_id: str
    created: object
    updated: object
    name: str
    description: Optional[str]
    state: str
    poster_ref: Optional[str]
    budget: object
    extra: str


def gig_row(doc: Mapping) -> GigRow:
    """Map one ``gigs`` document to its row, or raise RejectedDocument."""
    state = doc.get("state")
    if state not in GIG_STATES:
        raise RejectedDocument("unknown state", "state", state)
    poster = doc.get("poster")
    return GigRow(
        mongo_id=document.id_text(doc.get("_id")),
        created=document.timestamp(doc, "created"),
        updated=document.timestamp(doc, "updated"),
        name=document.required_name(doc, "name", GIG_NAME_MAX),
        description=document.optional_text(doc, "description"),
        state=state,
        poster_ref=None if poster is None else document.id_text(poster, "poster"),
        budget=document.number(doc, "budget"),
        extra=document.extra_json(doc, KNOWN_FIELDS),
    )


class GigSync(TableSync):
    """Fills ``Gig`` rows from ``gigs`` documents, one at a time or in bulk.

    The bulk half (staging, merge, linking gigs to posters that arrive late) is ``TableSync``'s,
    generated from ``columns`` and ``references``.
    """

    collection = "gigs"
    table = "gigs"
    mapped = Gig
    # The staged columns, in GigRow's order; extra is JSON text, cast on merge.
    columns = (("_id", "text"), ("created", "timestamptz"), ("updated", "timestamptz"), ("name", "text"),
               ("description", "text"), ("state", "text"), ("poster_ref", "text"), ("budget", "numeric"),
               ("extra", "text"))
    # poster_id: the users.id of the user whose _id is poster_ref, once that user is stored.
    references = (Reference("poster_id", "poster_ref", UserSync),)
    to_row = staticmethod(gig_row)

    @staticmethod
    def mongo_to_pg(session: Session, mongo_entry: Mapping, instance: Gig) -> Gig:
        """Fill ``instance`` from one document and link it to its poster, if present."""
        row = gig_row(mongo_entry)
        document.fill(instance, row)
        instance.poster = None if row.poster_ref is None else session.scalars(
            select(User).where(User._id == row.poster_ref)).one_or_none()
        return instance
