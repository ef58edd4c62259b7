"""The bulk sync end to end, on a real PostgreSQL and a real MongoDB-protocol server."""
import base64

import bson
import psycopg
import pytest
from bson import ObjectId
from bson.raw_bson import RawBSONDocument
from sqlalchemy import text

from gigsterpg import commands
from gigsterpg.exc import ConfigError, SourceError, SyncLockedError
from gigsterpg.fixtures.generate import write_dataset
from gigsterpg.lib import status as status_report
from gigsterpg.lib.pg.sync.engine.bulk import BatchLoader, prepare
from gigsterpg.lib.pg.sync.engine.runner import begin_run, run_sync
from gigsterpg.lib.pg.sync.user import UserSync, clean_skills
from tests.helpers import rows


def versions(pg):
    """Every row's physical version (xmin): unchanged iff the row was not rewritten."""
    return {table: rows(pg, f"SELECT ctid::text, xmin::text FROM {table} ORDER BY 1")
            for table in ("skills", "users", "user_skills", "gigs", "sync_rejects")}


def skills_of(pg, mongo_id):
    return {name.lower() for (name,) in rows(
        pg, "SELECT k.name FROM user_skills us JOIN users u ON u.id = us.user_id JOIN skills k ON k.id = us.skill_id"
            " WHERE u._id = :id", id=mongo_id)}


def open_rejects(pg, collection):
    return dict(rows(pg, "SELECT doc_id, reason FROM sync_rejects WHERE collection = :c AND resolved_at IS NULL",
                     c=collection))


def test_messy_dataset_lands_or_is_accounted_for(settings, pg, mongo_db):
    write_dataset(mongo_db, users=300, gigs=600, messy_rate=0.4, seed=7)
    report = commands.sync(settings)

    assert report.status == "succeeded" and report.balanced
    for name in ("users", "gigs"):
        result = report.collections[name]
        assert result.balanced is True
        assert result.rows + result.open_rejects == result.documents == mongo_db[name].count_documents({})
        assert result.counts.inserted == result.rows
    user_reasons = set(report.collections["users"].counts.rejected)
    assert {"name missing", "invalid email", "duplicate email"} <= user_reasons
    assert {"name missing", "unknown state"} <= set(report.collections["gigs"].counts.rejected)

    # Every stored user has exactly the skills of its document.
    stored = {mongo_id for (mongo_id,) in rows(pg, "SELECT _id FROM users")}
    for doc in mongo_db.users.find():
        mongo_id = str(doc["_id"])
        if mongo_id in stored:
            assert skills_of(pg, mongo_id) == {key for _, key in clean_skills(doc.get("skills"))}
    # Every gig whose poster is stored points at it; the others keep the reference.
    assert rows(pg, "SELECT count(*) FROM gigs g JOIN users u ON u._id = g.poster_ref"
                    " WHERE g.poster_id IS DISTINCT FROM u.id") == [(0,)]
    assert rows(pg, "SELECT count(*) FROM gigs WHERE poster_id IS NULL AND poster_ref IS NOT NULL")[0][0] > 0
    assert rows(pg, "SELECT count(*) FROM gigs WHERE extra ? 'upsert'") == [(0,)]


def test_second_run_on_unchanged_data_rewrites_nothing(settings, pg, mongo_db):
    write_dataset(mongo_db, users=200, gigs=300, messy_rate=0.3, seed=3)
    commands.sync(settings)
    before = versions(pg)
    report = commands.sync(settings)
    assert versions(pg) == before
    for name in ("users", "gigs"):
        counts = report.collections[name].counts
        assert (counts.inserted, counts.updated, counts.deleted) == (0, 0, 0)
        assert counts.unchanged == counts.seen - sum(counts.rejected.values()) > 0
    assert report.collections["users"].counts.extra["user_skills_inserted"] == 0


def test_updates_inserts_and_deletes_propagate(settings, pg, mongo_db):
    ann, bob, cat = ObjectId(), ObjectId(), ObjectId()
    mongo_db.users.insert_many([
        {"_id": ann, "name": "Ann", "email": "ann@x.io", "skills": ["Python", "Go"]},
        {"_id": bob, "name": "Bob", "skills": ["Rust"]},
        {"_id": cat, "name": "Cat"},
    ])
    mongo_db.gigs.insert_many([{"_id": 1, "name": "g1", "state": "done", "poster": bob},
                               {"_id": 2, "name": "g2", "state": "done", "poster": ann}])
    commands.sync(settings)
    ann_before = rows(pg, "SELECT xmin::text FROM users WHERE _id = :id", id=str(ann))

    mongo_db.users.update_one({"_id": ann}, {"$set": {"skills": ["go", "Docker"]}})  # skills only
    mongo_db.users.update_one({"_id": cat}, {"$set": {"name": "Catherine"}})
    mongo_db.users.delete_one({"_id": bob})
    mongo_db.users.insert_one({"_id": 99, "name": "New", "skills": ["Python"]})
    mongo_db.gigs.delete_one({"_id": 2})
    report = commands.sync(settings)

    users = report.collections["users"].counts
    assert (users.inserted, users.updated, users.deleted, users.unchanged) == (1, 1, 1, 1)
    assert (users.extra["user_skills_inserted"], users.extra["user_skills_deleted"]) == (2, 1)
    assert rows(pg, "SELECT xmin::text FROM users WHERE _id = :id", id=str(ann)) == ann_before
    assert skills_of(pg, str(ann)) == {"go", "docker"}
    assert skills_of(pg, str(bob)) == set()
    assert rows(pg, "SELECT name FROM users WHERE _id = :id", id=str(cat)) == [("Catherine",)]
    # The deleted user's gig stays, unlinked, with its reference kept.
    assert rows(pg, "SELECT poster_id, poster_ref FROM gigs WHERE _id = '1'") == [(None, str(bob))]
    assert report.collections["gigs"].counts.deleted == 1
    assert rows(pg, "SELECT _id FROM gigs") == [("1",)]


def test_gig_whose_poster_arrives_later_is_linked(settings, pg, mongo_db):
    poster = ObjectId()
    mongo_db.users.insert_one({"_id": ObjectId(), "name": "Someone else"})
    mongo_db.gigs.insert_one({"_id": ObjectId(), "name": "early gig", "state": "unstarted", "poster": poster})
    commands.sync(settings)
    assert rows(pg, "SELECT poster_id FROM gigs") == [(None,)]

    mongo_db.users.insert_one({"_id": poster, "name": "Late poster"})
    report = commands.sync(settings, collections=("users",))
    assert report.collections["users"].counts.extra["gigs_linked"] == 1
    assert rows(pg, "SELECT u._id FROM gigs g JOIN users u ON u.id = g.poster_id") == [(str(poster),)]


def test_rejects_are_recorded_then_closed_when_fixed(settings, pg, mongo_db):
    good, bad = ObjectId(), ObjectId()
    mongo_db.users.insert_many([{"_id": good, "name": "Good", "email": "good@x.io"},
                                {"_id": bad, "name": "Bad", "email": "not-an-address"}])
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done"})
    commands.sync(settings)
    assert open_rejects(pg, "users") == {str(bad): "invalid email"}
    detail, document, run_id = rows(pg, "SELECT detail, document, run_id FROM sync_rejects")[0]
    assert "not-an-address" in detail and document["email"] == "not-an-address" and run_id is not None

    # The bad one is fixed, the good one breaks: its stale row goes, so the accounting still holds.
    mongo_db.users.update_one({"_id": bad}, {"$set": {"email": "fixed@x.io"}})
    mongo_db.users.update_one({"_id": good}, {"$unset": {"name": ""}})
    report = commands.sync(settings)
    assert open_rejects(pg, "users") == {str(good): "name missing"}
    assert rows(pg, "SELECT _id, email FROM users") == [(str(bad), "fixed@x.io")]
    assert report.collections["users"].balanced
    assert rows(pg, "SELECT count(*) FROM sync_rejects WHERE resolved_at IS NOT NULL") == [(1,)]

    # A rejected document deleted from MongoDB closes its reject.
    mongo_db.users.delete_one({"_id": good})
    assert commands.sync(settings).collections["users"].balanced
    assert open_rejects(pg, "users") == {}


def test_same_email_later_seen_user_is_rejected_and_swaps_converge(settings, pg, mongo_db):
    mongo_db.users.insert_many([{"_id": 1, "name": "First", "email": "same@x.io"},
                                {"_id": 2, "name": "Second", "email": "SAME@x.io"},
                                {"_id": 3, "name": "Third", "email": "third@x.io"}])
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done"})
    commands.sync(settings)
    assert open_rejects(pg, "users") == {"2": "duplicate email"}

    # Across runs the address stays with the user who has it; a swap settles within two runs.
    mongo_db.users.update_one({"_id": 2}, {"$set": {"email": "second@x.io"}})
    mongo_db.users.update_one({"_id": 1}, {"$set": {"email": "third@x.io"}})
    mongo_db.users.update_one({"_id": 3}, {"$set": {"email": "same@x.io"}})
    commands.sync(settings)
    report = commands.sync(settings)
    assert report.balanced and open_rejects(pg, "users") == {}
    assert rows(pg, "SELECT _id, email FROM users ORDER BY _id") == [
        ("1", "third@x.io"), ("2", "second@x.io"), ("3", "same@x.io")]


@pytest.mark.parametrize("fillers", [0, 120], ids=["same batch", "later batch"])
def test_an_id_of_another_type_with_the_same_text_is_a_duplicate_reject(settings, pg, mongo_db, fillers):
    """7 and "7" are one key in PostgreSQL: the first in scan order keeps the row, the other is a reject,
    whether it comes in the same batch (50 documents) or two batches later, and a re-run agrees."""
    mongo_db.users.insert_one({"_id": 7, "name": "Int"})
    mongo_db.users.insert_many([{"_id": f"f{n}", "name": "Filler"} for n in range(fillers)]
                               or [{"_id": "f", "name": "F"}])
    mongo_db.users.insert_one({"_id": "7", "name": "Text"})
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done"})
    for _ in range(2):
        report = commands.sync(settings)
        assert report.balanced and report.collections["users"].counts.rejected == {"duplicate _id": 1}
        assert rows(pg, "SELECT name FROM users WHERE _id = '7'") == [("Int",)]
        (doc_id, reason), = rows(pg, "SELECT doc_id, reason FROM sync_rejects WHERE resolved_at IS NULL")
        assert doc_id.startswith("7 (duplicate ") and reason == "duplicate _id"
        assert rows(pg, "SELECT count(*) FROM users") == [(max(fillers, 1) + 1,)]


def test_a_batch_postgresql_refuses_is_split_not_dropped(settings, pg, mongo_db):
    with pg.engine.begin() as connection:  # a rule of this database that the mapping does not know
        connection.execute(text("ALTER TABLE gigs ADD CONSTRAINT small_budget CHECK (budget < 1000)"))
    mongo_db.users.insert_one({"_id": 1, "name": "u"})
    mongo_db.gigs.insert_many([{"_id": i, "name": f"g{i}", "state": "done", "budget": 5000 if i == 77 else i}
                               for i in range(120)])
    report = commands.sync(settings)  # batch size 50: the batch holding 77 is split down to it
    gigs = report.collections["gigs"]
    assert gigs.counts.rejected == {"refused by PostgreSQL": 1}
    assert (gigs.counts.inserted, gigs.rows, gigs.balanced) == (119, 119, True)
    assert "small_budget" in rows(pg, "SELECT detail FROM sync_rejects WHERE doc_id = '77'")[0][0]


def test_a_second_sync_refuses_while_one_runs(settings, pg, mongo_db, sync_lock):
    mongo_db.users.insert_one({"_id": 1, "name": "u"})
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done"})
    sync_lock.execute("INSERT INTO sync_runs (collections, pid, hostname) VALUES ('users,gigs', 4242, 'elsewhere')")
    with pytest.raises(SyncLockedError, match="another sync is running .*pid 4242 on elsewhere"):
        commands.sync(settings)
    sync_lock.close()
    # The holder died without finishing: the next run marks its run interrupted and goes on.
    report = commands.sync(settings)
    assert report.status == "succeeded"
    assert rows(pg, "SELECT status FROM sync_runs WHERE pid = 4242") == [("interrupted",)]


def test_runs_are_recorded(settings, pg, mongo_db):
    mongo_db.users.insert_one({"_id": 1, "name": "u"})
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "nope"})
    report = commands.sync(settings)
    status, counts, finished = rows(pg, "SELECT status, counts, finished_at FROM sync_runs WHERE id = :id",
                                    id=report.run_id)[0]
    assert status == "succeeded" and finished is not None
    assert counts["gigs"]["rejected"] == {"unknown state": 1} and counts["users"]["inserted"] == 1
    summary = status_report.status(settings)
    assert summary["runs"][0]["id"] == report.run_id
    assert summary["rejects"] == [("gigs", "unknown state", 1)]


def test_a_failed_run_is_recorded_as_failed(settings, pg, mongo_db):
    mongo_db.users.insert_one({"_id": 1, "name": "u"})
    with pg.engine.begin() as connection:
        connection.execute(text("ALTER TABLE users RENAME TO users_elsewhere"))
    with pytest.raises(psycopg.errors.UndefinedTable):
        run_sync(pg.engine, mongo_db, ("users",))
    assert rows(pg, "SELECT status, error LIKE '%users%' FROM sync_runs") == [("failed", True)]


def test_limit_reads_part_and_deletes_nothing(settings, pg, mongo_db):
    mongo_db.users.insert_many([{"_id": i, "name": f"u{i}"} for i in range(100)])
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done"})
    commands.sync(settings)
    mongo_db.users.delete_many({"_id": {"$gte": 90}})
    partial = commands.sync(settings, limit=20)
    assert partial.collections["users"].counts.seen == 20
    assert partial.collections["users"].counts.deleted == 0 and partial.collections["users"].balanced is None
    full = commands.sync(settings)
    assert full.collections["users"].counts.deleted == 10 and full.collections["users"].balanced


def test_a_missing_collection_is_refused_before_anything_is_deleted(settings, pg, mongo_db):
    mongo_db.users.insert_one({"_id": 1, "name": "u"})
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done"})
    commands.sync(settings)
    mongo_db.gigs.drop()
    with pytest.raises(SourceError, match="collection 'gigs' not found"):
        commands.sync(settings)
    assert rows(pg, "SELECT count(*) FROM gigs") == [(1,)]


def test_collections_argument_is_checked():
    assert commands.parse_collections("gigs, users,gigs") == ("gigs", "users")
    assert commands.parse_collections(None) == ("users", "gigs")
    with pytest.raises(ConfigError, match="unknown collection orders"):
        commands.parse_collections("users,orders")


def test_unchanged_documents_are_skipped_and_full_compare_repairs_hand_edits(settings, pg, mongo_db):
    mongo_db.users.insert_many([{"_id": i, "name": f"user {i}", "skills": ["Go"]} for i in range(20)])
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done", "poster": 3})
    commands.sync(settings)
    assert rows(pg, "SELECT count(*) FROM sync_hashes") == [(21,)]
    with pg.engine.begin() as connection:  # someone edits the replica by hand
        connection.execute(text("UPDATE users SET name = 'edited' WHERE _id = '5'"))
        connection.execute(text("DELETE FROM user_skills WHERE user_id = (SELECT id FROM users WHERE _id = '6')"))

    skipped = commands.sync(settings)  # the documents did not change: nothing is decoded or compared
    assert skipped.collections["users"].counts.updated == 0
    assert rows(pg, "SELECT name FROM users WHERE _id = '5'") == [("edited",)]

    repaired = commands.sync(settings, full_compare=True)
    counts = repaired.collections["users"].counts
    assert (counts.updated, counts.extra["user_skills_inserted"]) == (1, 1)
    assert rows(pg, "SELECT name FROM users WHERE _id = '5'") == [("user 5",)]
    assert skills_of(pg, "6") == {"go"}

    mongo_db.users.delete_one({"_id": 7})
    commands.sync(settings)
    assert rows(pg, "SELECT count(*) FROM sync_hashes WHERE collection = 'users'") == [(19,)]


def test_documents_that_cannot_be_decoded_are_rejected_alone(pg):
    # A string that is not UTF-8, as a broken export has it (the test server refuses to store one,
    # so the raw documents go to the loader directly).
    broken = bson.encode({"_id": 3, "name": "abc"}).replace(b"abc", b"a\xffc")
    documents = [RawBSONDocument(bson.encode({"_id": 1, "name": "ok"})), RawBSONDocument(broken)]
    raw = pg.engine.raw_connection()
    try:
        loader = BatchLoader(raw.driver_connection, UserSync, begin_run(raw.driver_connection, ["users"]))
        loader.load(prepare(documents))
        assert (loader.counts.inserted, dict(loader.counts.rejected)) == (1, {"undecodable document": 1})
    finally:
        raw.close()
    doc_id, document = rows(pg, "SELECT doc_id, document FROM sync_rejects")[0]
    assert doc_id == "3" and base64.b64decode(document["undecodable_bson_base64"]) == broken
