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


class GigSync:
    """Fills ``Gig`` rows from ``gigs`` documents, one at a time or in bulk."""

    collection = "gigs"
    table = "gigs"
    # The staged columns, in GigRow's order; poster_id is resolved from poster_ref in SQL.
    columns = (("_id", "text"), ("created", "timestamptz"), ("updated", "timestamptz"), ("name", "text"),
               ("description", "text"), ("state", "text"), ("poster_ref", "text"), ("budget", "numeric"),
               ("extra", "text"))
    to_row = staticmethod(gig_row)

    @staticmethod
    def mongo_to_pg(session: Session, mongo_entry: Mapping, instance: Gig) -> Gig:
        """Fill ``instance`` from one document and link it to its poster, if present."""
        row = gig_row(mongo_entry)
        document.fill(instance, row)
        instance.poster = None if row.poster_ref is None else session.scalars(
            select(User).where(User.mongo_id == row.poster_ref)).one_or_none()
        return instance

    # ---- bulk path: staging table, COPY and a set-wise merge -------------------------

    staging = {"stage_gigs": columns}

    @staticmethod
    def stage(copy, rows) -> None:
        """COPY the batch's rows into the staging table."""
        copy("stage_gigs", rows)

    @staticmethod
    def conflicts(cursor):
        """Gigs have no constraint beyond what ``gig_row`` checks."""
        return []

    @staticmethod
    def unstage(cursor, mongo_ids) -> None:  # pragma: no cover - conflicts() never finds any
        """Take rejected gigs out of the staging table."""
        cursor.execute("DELETE FROM stage_gigs WHERE _id = ANY(%s)", (list(mongo_ids),))

    @staticmethod
    def merge(cursor) -> dict:
        """Merge the staged batch, resolving each poster reference to a user id in SQL.

        Each reference is one index probe into ``users`` (a scalar subquery): a join let
        PostgreSQL hash every user for every batch, a cost that grew with the table.
        """
        cursor.execute(
            "WITH merged AS ("
            " INSERT INTO gigs AS t (_id, created, updated, name, description, state, poster_id, poster_ref,"
            "  budget, extra)"
            " SELECT s._id, s.created, s.updated, s.name, s.description, s.state,"
            "  (SELECT u.id FROM users u WHERE u._id = s.poster_ref), s.poster_ref, s.budget, s.extra::jsonb"
            " FROM stage_gigs s"
            " ON CONFLICT (_id) DO UPDATE SET created = excluded.created, updated = excluded.updated,"
            "  name = excluded.name, description = excluded.description, state = excluded.state,"
            "  poster_id = excluded.poster_id, poster_ref = excluded.poster_ref, budget = excluded.budget,"
            "  extra = excluded.extra"
            " WHERE (t.created, t.updated, t.name, t.description, t.state, t.poster_id, t.poster_ref, t.budget,"
            "  t.extra) IS DISTINCT FROM (excluded.created, excluded.updated, excluded.name, excluded.description,"
            "  excluded.state, excluded.poster_id, excluded.poster_ref, excluded.budget, excluded.extra)"
            " RETURNING xmax = 0 AS inserted)"
            " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged")
        inserted, updated = cursor.fetchone()
        return {"inserted": inserted, "updated": updated}

    @staticmethod
    def after_scan(cursor) -> dict:
        """Nothing depends on gigs."""
        return {}
