"""The mapped classes and ``mongo_to_pg`` through the ORM, on a real PostgreSQL."""
import pytest
from bson import ObjectId
from sqlalchemy import func, select

from gigsterpg.exc import RejectedDocument
from gigsterpg.lib.pg.db import ALL_TABLES, Gig, Skill, SqlAlchemy, User, UserSkill
from gigsterpg.lib.pg.sync.gig import GigSync
from gigsterpg.lib.pg.sync.user import UserSync


def test_all_tables_in_dependency_order():
    assert [table.name for table in ALL_TABLES] == ["skills", "users", "user_skills", "gigs"]


def test_sqlalchemy_reads_db_url_psql_when_built(monkeypatch, pg_url):
    monkeypatch.setenv("DB_URL_PSQL", pg_url)
    handle = SqlAlchemy()
    try:
        assert handle.has_existing_tables
        assert handle.Base.metadata.tables["users"] is User.__table__
        shown = repr(SqlAlchemy("postgresql://u:pw@h/db"))
        assert "***" in shown and "pw" not in shown
    finally:
        handle.dispose()


def test_user_with_skills_through_mongo_to_pg(pg):
    session = pg.session()
    doc = {"_id": ObjectId(), "name": "Ada", "email": "Ada@Example.com", "skills": ["python", "Brand New", "PYTHON"]}
    user = User()
    UserSync.mongo_to_pg(session, doc, user)
    session.add(user)
    session.commit()

    stored = session.scalars(select(User).where(User.mongo_id == str(doc["_id"]))).one()
    assert stored.email == "ada@example.com"
    assert sorted(link.skill.name for link in stored.skills) == ["Brand New", "Python"]
    python = session.scalars(select(Skill).where(Skill.name == "Python")).one()
    assert any(link.skill is python for link in stored.skills), "resolved to the seeded Skill row, not a copy"

    # A second user with the same skill shares the same Skill row.
    other = User()
    UserSync.mongo_to_pg(session, {"_id": 7, "name": "Bob", "skills": ["brand new"]}, other)
    session.add(other)
    session.commit()
    assert session.scalar(select(func.count()).select_from(Skill).where(func.lower(Skill.name) == "brand new")) == 1

    # Changing the skills keeps the unchanged link and drops the others.
    kept = next(link for link in stored.skills if link.skill is python)
    UserSync.mongo_to_pg(session, {**doc, "skills": ["Python", "Go"]}, stored)
    session.commit()
    assert sorted(link.skill.name for link in stored.skills) == ["Go", "Python"]
    assert kept in stored.skills
    assert session.scalar(select(func.count()).select_from(UserSkill)) == 3
    session.close()


def test_gig_poster_relationship_both_ways(pg):
    session = pg.session()
    poster_id = ObjectId()
    user = UserSync.mongo_to_pg(session, {"_id": poster_id, "name": "Ada"}, User())
    session.add(user)
    session.commit()
    for index in range(2):
        gig = GigSync.mongo_to_pg(session, {"_id": index, "name": f"gig {index}", "state": "done",
                                            "poster": poster_id, "upsert": {"x": 1}, "extra_field": [1]}, Gig())
        session.add(gig)
    orphan = GigSync.mongo_to_pg(session, {"_id": 9, "name": "orphan", "state": "unstarted",
                                           "poster": ObjectId()}, Gig())
    session.add(orphan)
    session.commit()

    assert sorted(g.name for g in user.gigs) == ["gig 0", "gig 1"]
    first = session.scalars(select(Gig).where(Gig.mongo_id == "0")).one()
    assert first.poster is user and first.extra == {"extra_field": [1]}
    assert orphan.poster is None and orphan.poster_ref is not None

    # Deleting the user keeps its gigs, unlinked but with their reference.
    session.delete(user)
    session.commit()
    session.expire_all()
    first = session.scalars(select(Gig).where(Gig.mongo_id == "0")).one()
    assert first.poster_id is None and first.poster_ref == str(poster_id)
    session.close()


def test_mongo_to_pg_raises_on_a_bad_document(pg):
    with pytest.raises(RejectedDocument, match="invalid email"):
        UserSync.mongo_to_pg(pg.session(), {"_id": 1, "name": "x", "email": "nope"}, User())


def test_reprs_name_the_row():
    assert "Ada" in repr(User(mongo_id="1", name="Ada"))
    assert "done" in repr(Gig(mongo_id="1", name="g", state="done"))
    assert "Go" in repr(Skill(name="Go"))
    assert "user_id" in repr(UserSkill(user_id=1, skill_id=2))
