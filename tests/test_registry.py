"""The sync registry and the model contract: what is derived from the one list, and a third collection
added the way ARCHITECTURE.md says (a mapped class, a TableSync model, one registry entry, a table)."""
from typing import Mapping, NamedTuple, Optional

import pytest
from sqlalchemy import BigInteger, ForeignKey, Integer, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gigsterpg import commands
from gigsterpg.api.models import SyncRequest
from gigsterpg.cli import build_parser
from gigsterpg.exc import ConfigError, RejectedDocument
from gigsterpg.lib.pg.db.gig import Gig
from gigsterpg.lib.pg.sync import document, registry
from gigsterpg.lib.pg.sync.contract import Reference
from gigsterpg.lib.pg.sync.engine.runner import run_sync
from gigsterpg.lib.pg.sync.gig import GigSync
from gigsterpg.lib.pg.sync.table import TableSync
from gigsterpg.lib.pg.sync.user import UserSync
from tests.helpers import rows


def test_the_registry_lists_parents_first_and_everything_follows_it(capsys):
    assert registry.MODELS == (UserSync, GigSync)
    assert registry.COLLECTIONS == ("users", "gigs")
    assert registry.ordered(["gigs", "orders", "users"]) == ("users", "gigs")
    assert registry.model("gigs") is GigSync
    assert registry.children("users") == (GigSync,) and registry.children("gigs") == ()
    assert registry.names() == "users and gigs"
    # The CLI and the API take their lists from it.
    assert commands.parse_collections(None) == ("users", "gigs")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sync", "--help"])
    assert "comma-separated subset of users,gigs (default: all)" in " ".join(capsys.readouterr().out.split())
    schema = SyncRequest.model_json_schema()["properties"]["collections"]["anyOf"][0]
    assert (schema["items"]["enum"], schema["maxItems"]) == (["users", "gigs"], 2)
    with pytest.raises(ConfigError, match="gigsterpg syncs users and gigs"):
        commands.parse_collections("users,reviews")


def test_the_registry_refuses_a_child_before_its_parent_and_a_collection_twice():
    with pytest.raises(ValueError, match="'gigs' before its parents \\['users'\\]"):
        registry._check((GigSync, UserSync))
    with pytest.raises(ValueError, match="'users' twice"):
        registry._check((UserSync, UserSync, GigSync))


def test_the_merge_is_generated_from_the_declared_columns():
    # Every declared column is written, compared, and JSON cast; the reference is one probe by _id.
    assert ("INSERT INTO gigs AS t (_id, created, updated, name, description, state, poster_ref, budget, extra,"
            " poster_id) SELECT s._id, s.created, s.updated, s.name, s.description, s.state, s.poster_ref, s.budget,"
            " s.extra::jsonb, (SELECT p.id FROM users p WHERE p._id = s.poster_ref) FROM stage_gigs s"
            " WHERE NOT EXISTS") in GigSync.merge_sql[1]
    assert "WHERE t._id = v._id AND (t.created, t.updated, t.name, t.email, t.extra)  IS DISTINCT FROM" in \
        UserSync.merge_sql[0]
    assert GigSync.link_sqls == ("UPDATE gigs t SET poster_id = p.id FROM users p WHERE t.poster_id IS NULL"
                                 " AND t.poster_ref IS NOT NULL AND p._id = t.poster_ref",)
    assert (UserSync.parents, GigSync.parents) == ((), ("users",))
    assert UserSync.link_sqls == () and UserSync.link(cursor=None) == {}  # references nothing: nothing to link
    assert list(UserSync.staging) == ["stage_users", "stage_user_skills", "stage_user_skill_ids"]
    with pytest.raises(ValueError, match="must start with _id"):
        type("Bad", (TableSync,), {"collection": "bad", "table": "bad", "mapped": Gig, "columns": (("name", "text"),)})
    with pytest.raises(ValueError, match="not a plain identifier"):
        type("Bad", (TableSync,), {"collection": "bad; DROP", "table": "bad", "mapped": Gig,
                                   "columns": (("_id", "text"),)})


# ---- a third collection, as a new model adds one ---------------------------------------------------

class _Base(DeclarativeBase):
    """Not the project's Base: the schema the migrations check stays as it is."""


class Review(_Base):
    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    _id: Mapped[str] = mapped_column("_id", Text, unique=True, nullable=False)
    stars: Mapped[int] = mapped_column(Integer, nullable=False)
    gig_id: Mapped[Optional[int]] = mapped_column(BigInteger, ForeignKey(Gig.id, ondelete="SET NULL"))
    gig_ref: Mapped[Optional[str]] = mapped_column(Text)
    extra: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))


class ReviewRow(NamedTuple):
    mongo_id: str
    stars: int
    gig_ref: Optional[str]
    extra: str


def review_row(doc: Mapping) -> ReviewRow:
    stars = doc.get("stars")
    if not isinstance(stars, int) or not 1 <= stars <= 5:
        raise RejectedDocument("stars out of range", "stars", stars)
    gig = doc.get("gig")
    return ReviewRow(document.id_text(doc.get("_id")), stars, None if gig is None else document.id_text(gig, "gig"),
                     document.extra_json(doc, frozenset({"_id", "stars", "gig"})))


class ReviewSync(TableSync):
    collection = "reviews"
    table = "reviews"
    mapped = Review
    columns = (("_id", "text"), ("stars", "int4"), ("gig_ref", "text"), ("extra", "text"))
    references = (Reference("gig_id", "gig_ref", GigSync),)
    to_row = staticmethod(review_row)

    @staticmethod
    def mongo_to_pg(session, mongo_entry, instance):  # pragma: no cover - the ORM path is not this test's
        document.fill(instance, review_row(mongo_entry))
        return instance


@pytest.fixture
def third_collection(pg, monkeypatch):
    """The registry with reviews after gigs, and the reviews table (its migration, in a real model)."""
    _Base.metadata.create_all(pg.engine)
    monkeypatch.setattr(registry, "MODELS", registry.MODELS + (ReviewSync,))
    monkeypatch.setattr(registry, "COLLECTIONS", registry.COLLECTIONS + ("reviews",))
    return ("users", "gigs", "reviews")


def reviews(pg):
    return rows(pg, "SELECT r._id, r.stars, r.gig_ref, g._id, r.extra::text FROM reviews r"
                    " LEFT JOIN gigs g ON g.id = r.gig_id ORDER BY r._id")


def test_a_third_collection_syncs_links_rejects_and_deletes_through_the_generated_sql(pg, mongo_db, third_collection):
    assert ReviewSync.parents == ("gigs",) and registry.children("gigs") == (ReviewSync,)
    mongo_db.users.insert_one({"_id": 1, "name": "Poster"})
    mongo_db.gigs.insert_one({"_id": "g1", "name": "first gig", "state": "done", "poster": 1})
    mongo_db.reviews.insert_many([{"_id": "r1", "stars": 5, "gig": "g1", "note": "great"},
                                  {"_id": "r2", "stars": 3, "gig": "g2"},
                                  {"_id": "r3", "stars": 9, "gig": "g1"}])
    report = run_sync(pg.engine, mongo_db, third_collection, batch_size=2)
    assert report.balanced
    counts = report.collections["reviews"].counts
    assert (counts.inserted, counts.updated, dict(counts.rejected)) == (2, 0, {"stars out of range": 1})
    assert reviews(pg) == [("r1", 5, "g1", "g1", '{"note": "great"}'), ("r2", 3, "g2", None, "{}")]
    assert rows(pg, "SELECT doc_id, reason FROM sync_rejects WHERE collection = 'reviews'"
                    " AND resolved_at IS NULL") == [("r3", "stars out of range")]

    # The gig a review waited for arrives: the gigs' scan links it (the model's link, not the engine's).
    mongo_db.gigs.insert_one({"_id": "g2", "name": "second gig", "state": "unstarted"})
    report = run_sync(pg.engine, mongo_db, ("gigs",))
    assert report.collections["gigs"].counts.extra["reviews_linked"] == 1
    assert reviews(pg)[1] == ("r2", 3, "g2", "g2", "{}")

    # A change, a fix, a delete; an unchanged row is not written again.
    mongo_db.reviews.update_one({"_id": "r1"}, {"$set": {"stars": 4}})
    mongo_db.reviews.update_one({"_id": "r3"}, {"$set": {"stars": 2}})
    mongo_db.reviews.delete_one({"_id": "r2"})
    r2_gig_before = rows(pg, "SELECT xmin::text FROM gigs WHERE _id = 'g2'")
    report = run_sync(pg.engine, mongo_db, third_collection)
    counts = report.collections["reviews"].counts
    assert (counts.inserted, counts.updated, counts.deleted, counts.unchanged) == (1, 1, 1, 0)
    assert reviews(pg) == [("r1", 4, "g1", "g1", '{"note": "great"}'), ("r3", 2, "g1", "g1", "{}")]
    assert rows(pg, "SELECT count(*) FROM sync_rejects WHERE resolved_at IS NULL") == [(0,)]
    assert rows(pg, "SELECT xmin::text FROM gigs WHERE _id = 'g2'") == r2_gig_before
