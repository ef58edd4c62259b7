"""Read queries over the replicated data and the API's jobs: what the HTTP API (and any page) shows.

Each takes an open SQLAlchemy connection and returns plain dicts, keyed as
the columns are named (``_id`` the MongoDB id as text), so every caller
shows the same rows. Pages are keyset pages by PostgreSQL's ``id``:
ask again with ``after`` = the last item's ``id``.
"""
import uuid
from dataclasses import dataclass
from typing import List, Optional

from sqlalchemy import Text, cast, func, select

from gigsterpg.lib.pg.db.gig import Gig
from gigsterpg.lib.pg.db.job import ApiJob
from gigsterpg.lib.pg.db.skill import Skill
from gigsterpg.lib.pg.db.user import User
from gigsterpg.lib.pg.db.user_skill import UserSkill

USER_GIGS_SHOWN = 100

# Tables rather than mapped attributes: the columns' names are the keys of the answers.
users, gigs, skills, user_skills, api_jobs = (User.__table__, Gig.__table__, Skill.__table__, UserSkill.__table__,
                                              ApiJob.__table__)
USER_COLUMNS = (users.c.id, users.c["_id"], users.c.name, users.c.email, users.c.created, users.c.updated)
JOB_COLUMNS = tuple(api_jobs.c[name] for name in ("id", "kind", "state", "params", "created_at", "started_at",
                                                  "finished_at", "rows_done", "rows_total", "result", "errors",
                                                  "restart_of"))


@dataclass
class Page:
    """Up to ``limit`` items in ``id`` order; ``more`` when items follow the last one."""

    items: List[dict]
    more: bool

    @property
    def last_id(self) -> Optional[int]:
        return self.items[-1]["id"] if self.items else None


def _page(connection, query, limit: int) -> Page:
    rows = [dict(row) for row in connection.execute(query.limit(limit + 1)).mappings()]
    return Page(rows[:limit], len(rows) > limit)


def _gig_query():
    """Gigs with the poster's _id (null while the poster is not replicated) and the budget as exact text."""
    poster = users.alias("poster")
    return (select(gigs.c.id, gigs.c["_id"], gigs.c.name, gigs.c.description, gigs.c.state,
                   cast(gigs.c.budget, Text).label("budget"), gigs.c.created, gigs.c.updated,
                   poster.c["_id"].label("poster"), gigs.c.poster_ref)
            .select_from(gigs.outerjoin(poster, poster.c.id == gigs.c.poster_id)))


def users_page(connection, after: int = 0, limit: int = 50) -> Page:
    """Users whose ``id`` is above ``after``, by id."""
    return _page(connection, select(*USER_COLUMNS).where(users.c.id > after).order_by(users.c.id), limit)


def user_detail(connection, mongo_id: str, gigs_shown: int = USER_GIGS_SHOWN) -> Optional[dict]:
    """The user whose MongoDB _id is ``mongo_id``, with ``skills`` (names, case-insensitive order),
    ``gigs_total`` and ``gigs`` (the first ``gigs_shown`` by id); None when there is none."""
    gigs_total = select(func.count()).select_from(gigs).where(gigs.c.poster_id == users.c.id).scalar_subquery()
    user = connection.execute(select(*USER_COLUMNS, gigs_total.label("gigs_total"))
                              .where(users.c["_id"] == mongo_id)).mappings().first()
    if user is None:
        return None
    names = connection.execute(select(skills.c.name).join(user_skills, user_skills.c.skill_id == skills.c.id)
                               .where(user_skills.c.user_id == user["id"]).order_by(func.lower(skills.c.name)))
    posted = connection.execute(_gig_query().where(gigs.c.poster_id == user["id"]).order_by(gigs.c.id)
                                .limit(gigs_shown)).mappings()
    return {**user, "skills": list(names.scalars()), "gigs": [dict(gig) for gig in posted]}


def gigs_page(connection, after: int = 0, limit: int = 50, state: Optional[str] = None,
              poster: Optional[str] = None) -> Page:
    """Gigs whose ``id`` is above ``after``, by id; only those in ``state`` and of the user whose _id is
    ``poster``, when given."""
    query = _gig_query().where(gigs.c.id > after)
    if state is not None:
        query = query.where(gigs.c.state == state)
    if poster is not None:
        query = query.where(gigs.c.poster_id == select(users.c.id).where(users.c["_id"] == poster).scalar_subquery())
    return _page(connection, query.order_by(gigs.c.id), limit)


def job(connection, kind: str, job_id: uuid.UUID) -> Optional[dict]:
    """The API job ``job_id`` of ``kind``; None when there is none."""
    row = connection.execute(select(*JOB_COLUMNS).where(api_jobs.c.id == job_id, api_jobs.c.kind == kind)
                             ).mappings().first()
    return dict(row) if row is not None else None


def recent_jobs(connection, kind: str, limit: int = 20) -> List[dict]:
    """The newest ``limit`` API jobs of ``kind``, newest first."""
    rows = connection.execute(select(*JOB_COLUMNS).where(api_jobs.c.kind == kind)
                              .order_by(api_jobs.c.created_at.desc()).limit(limit)).mappings()
    return [dict(row) for row in rows]
