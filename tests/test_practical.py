"""The Gigster practical's own way of testing, kept passing: one session, ``DB_URL_PSQL``, the ORM.

Written as the practical's sample tests and conftest are: a session-scoped ``SqlAlchemy()`` that reads
``DB_URL_PSQL``, migrated from base to head, one ORM session shared by the tests, documents loaded with
``UserSync.mongo_to_pg(session, doc, User())``, and rows found by the MongoDB ``_id`` as text
(``User._id == '0'``). The database is a fresh, empty one on the suite's own PostgreSQL server.
"""
import pytest
from sqlalchemy import inspect

from gigsterpg.lib.pg.db import Gig, Skill, SqlAlchemy, User, UserSkill
from gigsterpg.lib.pg.sync.gig import GigSync
from gigsterpg.lib.pg.sync.user import UserSync
from tests.helpers import copy_database, drop_database, with_database

# Two users whose MongoDB _ids are ints, sharing the skill "Python" (spelt differently), and a gig of user 1.
USERS = [
    {"_id": 0, "name": "Ada", "email": "ada@example.com", "skills": ["Python", "Brand New Skill"]},
    {"_id": 1, "name": "Bob", "skills": ["python", "Go"]},
]
GIG = {"_id": 10, "name": "An API", "state": "in_progress", "poster": 1, "budget": 1200}


@pytest.fixture(scope="session")
def db(pg_server_url):
    """``SqlAlchemy()`` on a new empty database named by ``DB_URL_PSQL``, migrated to head."""
    name = copy_database(pg_server_url, "template0")  # an empty database of the suite's server
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DB_URL_PSQL", with_database(pg_server_url, name))
        sql_alchemy = SqlAlchemy()
    try:
        assert not sql_alchemy.has_existing_tables
        sql_alchemy.migrate_head()
        assert sql_alchemy.has_existing_tables
        sql_alchemy.migrate_base()  # what the practical's conftest does with a database it finds migrated
        assert not sql_alchemy.has_existing_tables
        sql_alchemy.migrate_head()
        yield sql_alchemy
    finally:
        sql_alchemy.dispose()
        drop_database(pg_server_url, name)


@pytest.fixture(scope="session")
def session(db):
    """One ORM session for every test of the module, closed at the end."""
    session = db.session()
    yield session
    session.close()


@pytest.fixture(scope="session")
def users(session):
    """The two users, loaded as the practical loads documents."""
    for doc in USERS:
        user = UserSync.mongo_to_pg(session, doc, User())
        session.add(user)
    session.commit()
    return USERS


def test_the_schema_is_the_mapped_classes(db):
    tables = set(inspect(db.engine).get_table_names())
    assert {"users", "skills", "user_skills", "gigs"} <= set(db.Base.metadata.tables) <= tables
    assert db.Base.metadata.tables["users"] is User.__table__


def test_the_skills_table_comes_populated(session):
    names = {skill.name for skill in session.query(Skill).all()}
    assert {"Python", "Go", "SQL", "React"} <= names
    assert session.query(Skill).filter(Skill.name == "Brand New Skill").count() == 0


def test_int_ids_are_found_as_text(session, users):
    assert session.query(User).count() == 2
    ada = session.query(User).filter(User._id == '0').one()
    bob = session.query(User).filter(User._id == '1').one()
    assert (ada.name, ada.email, bob.name, bob.email) == ("Ada", "ada@example.com", "Bob", None)
    assert ada.mongo_id == "0"  # the synonym reads the same attribute


def test_user_skills_are_reached_through_user_skills(session, users):
    skills = session.query(User).filter(User._id == '0').one().skills
    assert all(isinstance(link, UserSkill) for link in skills)
    assert sorted(link.skill.name for link in skills) == ["Brand New Skill", "Python"]
    bob_skills = session.query(User).filter(User._id == '1').one().skills
    assert sorted(link.skill.name for link in bob_skills) == ["Go", "Python"]
    assert session.query(UserSkill).count() == 4


def test_a_skill_name_shared_by_two_users_is_one_skill_object(session, users):
    ada = session.query(User).filter(User._id == '0').one()
    bob = session.query(User).filter(User._id == '1').one()
    ada_python = next(link.skill for link in ada.skills if link.skill.name == "Python")
    bob_python = next(link.skill for link in bob.skills if link.skill.name == "Python")
    assert ada_python is bob_python
    assert session.query(Skill).filter(Skill.name.ilike("python")).count() == 1
    new = next(link.skill for link in ada.skills if link.skill.name == "Brand New Skill")
    assert new.id is not None and session.query(Skill).filter(Skill.name == "Brand New Skill").one() is new


def test_a_gig_is_linked_to_its_poster(session, users):
    session.add(GigSync.mongo_to_pg(session, GIG, Gig()))
    session.commit()
    gig = session.query(Gig).filter(Gig._id == '10').one()
    bob = session.query(User).filter(User._id == '1').one()
    assert gig.poster is bob and bob.gigs == [gig]
    assert (gig.name, gig.state, int(gig.budget)) == ("An API", "in_progress", 1200)
