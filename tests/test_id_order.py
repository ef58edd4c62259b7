"""The rule for what two documents share, independent of scan order and of the number of load workers.

The data contract: of users with one e-mail, the one whose ``_id`` comes first in MongoDB's own order of
ids keeps it (numbers < strings < binary < ObjectIds; numbers by value, strings by bytes); of documents
whose ids share a text form (1 and "1"), the same. It replaced "the later-seen one is rejected". The same
documents, inserted (so scanned) in different orders, loaded by every path, give the same tables and rejects.
"""
import random
from datetime import datetime, timezone

import psycopg
import pytest
import bson
from bson import Binary, Int64, ObjectId
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from gigsterpg.lib.pg.db import SqlAlchemy
from gigsterpg.lib.pg.sync import document
from gigsterpg.lib.pg.sync.engine import fingerprint
from gigsterpg.lib.pg.sync.engine.runner import run_sync
from tests.helpers import TEMPLATE, assert_nothing_lost, copy_database, drop_database, state, with_database

BATCH = 3
OID1, OID2, OID3 = ObjectId("65a000000000000000000001"), ObjectId("65a000000000000000000002"), \
    ObjectId("65a000000000000000000003")
UUID1 = Binary(bytes(range(16)), 4)
REJECTS = ("SELECT collection, doc_id, reason, detail, document::text FROM sync_rejects WHERE resolved_at IS NULL"
           " ORDER BY 1, 2")


def user(_id, email=None, **fields):
    doc = {"_id": _id, "name": "user uuid" if isinstance(_id, Binary) else f"user {_id}", "skills": ["Go", "Rust"],
           **fields}
    if email is not None:
        doc["email"] = email
    return doc


# (users, gigs) the later-found holders are written before the winners (the first half), and after.
LOSERS = ([user("1", "b@example.com"), user("a-user", "A@example.com"), user(OID1, "c@example.com"),
           user(OID2), user(OID3, "d@example.com"), user(10, "e@example.com"), user(Int64(3), "E@example.com"),
           user("2")],
          [{"_id": "7", "name": "gig text seven", "state": "done", "poster": "zzz"}])
WINNERS = ([user(1, "a@example.com"), user("zzz", "c@example.com"), user(str(OID2)), user(UUID1, "d@example.com"),
            user(-5, "e@example.com"), {"_id": 2, "name": 5}],
           [{"_id": 7, "name": "gig int seven", "state": "done", "poster": 1},
            {"_id": "g-oid", "name": "poster rejected", "state": "unstarted", "poster": OID1}])
FILLERS = ([user(f"u-{i:02d}", f"u{i}@example.com") for i in range(20)],
           [{"_id": f"g-{i:02d}", "name": f"gig {i}", "state": "unstarted", "poster": f"u-{i:02d}"} for i in range(15)])


def documents(now: datetime):
    """Every document, each ``updated`` at ``now`` (so an incremental run reads those written after a sync)."""
    users = LOSERS[0] + WINNERS[0] + FILLERS[0]
    gigs = LOSERS[1] + WINNERS[1] + FILLERS[1]
    return [dict(doc, updated=now) for doc in users], [dict(doc, updated=now) for doc in gigs]


def ordered(docs, order: str):
    if order == "forward":
        return list(docs)
    if order == "reversed":
        return list(reversed(docs))
    shuffled = list(docs)
    random.Random(5).shuffle(shuffled)
    return shuffled


def write(database, order: str, now: datetime) -> None:
    users, gigs = documents(now)
    database.users.insert_many(ordered(users, order))
    database.gigs.insert_many(ordered(gigs, order))


def sync(url: str, database, **kwargs):
    pg = SqlAlchemy(url)
    try:
        return run_sync(pg.engine, database, batch_size=BATCH, **kwargs)
    finally:
        pg.dispose()


def assert_counts_balance(report, case=None) -> None:
    """Each collection's documents read: seen = inserted + updated + unchanged + rejected, none negative."""
    for name, part in report.collections.items():
        counts = part.counts
        outcomes = {"inserted": counts.inserted, "updated": counts.updated, "unchanged": counts.unchanged,
                    **counts.rejected}
        assert min(outcomes.values()) >= 0 and counts.seen == sum(outcomes.values()), (case, name, counts.seen,
                                                                                       outcomes)


def outcome(url: str) -> dict:
    """Every table by MongoDB id (not by surrogate key: a row stored, then rejected, burns an id), the open
    rejects with their documents."""
    with psycopg.connect(url) as connection:
        return {**state(url), "rejects": connection.execute(REJECTS).fetchall()}


@pytest.fixture
def databases(pg_server_url, template_url, mongo_db):
    """``make(order)``: a MongoDB database of the documents inserted in that order; ``target()``: a fresh
    migrated PostgreSQL database (URL). Both dropped afterwards."""
    made, targets = [], []
    now = datetime.now(timezone.utc).replace(microsecond=0)

    def make(order: str, written: bool = True):
        database = mongo_db.client[f"{mongo_db.name}_{order}"]
        made.append(database.name)
        if written:
            write(database, order, now)
        return database

    def target() -> str:
        targets.append(copy_database(pg_server_url, TEMPLATE))
        return with_database(pg_server_url, targets[-1])

    yield make, target, now
    for name in made:
        mongo_db.client.drop_database(name)
    for name in targets:
        drop_database(pg_server_url, name)


def test_the_id_order_keys_sort_as_mongodb_sorts_ids(mongo_db):
    """The keys sort the ids as MongoDB's ``_id`` index does (asked of the server), raw and decoded alike."""
    ids = [OID2, "b", 10, -5, Int64(3), "", "a", "ab", "é", UUID1, OID1, Binary(bytes(16), 4), 2 ** 40, "Z"]
    mongo_db.ids.insert_many([{"_id": value} for value in ids if value != ""])
    in_mongo = [doc.raw for doc in mongo_db.ids.with_options(
        codec_options=CodecOptions(document_class=RawBSONDocument)).find().sort("_id", 1)]
    keys = [fingerprint.order_key(RawBSONDocument(raw)) for raw in in_mongo]
    assert None not in keys and keys == sorted(keys)
    decoded = [document.id_order_key(bson.decode(raw)["_id"]) for raw in in_mongo]
    assert decoded == keys
    assert [document.id_from_order_key(key) for key in keys] == [bson.decode(raw)["_id"] for raw in in_mongo]
    assert document.id_order_key("") is None and document.id_order_key(1.5) is None


def test_any_scan_order_and_any_number_of_workers_gives_the_same_tables(databases):
    """Three scan orders, each loaded by the first load in this process and in 1 and 2 workers, and by the
    merge path: one outcome, and the one the contract's rule gives."""
    make, target, _ = databases
    results = {}
    for order in ("forward", "reversed", "shuffled"):
        database = make(order)
        for path, options in (("workers 0", {"load_workers": 0}), ("workers 1", {"load_workers": 1}),
                              ("workers 2", {"load_workers": 2}), ("merge", {"first_load": False})):
            url = target()
            report = sync(url, database, **options)
            assert report.status == "succeeded" and report.balanced, (order, path)
            assert_counts_balance(report, (order, path))
            assert_nothing_lost(database, url)
            results[order, path] = outcome(url)
    reference = results["forward", "workers 0"]
    different = [case for case, result in results.items() if result != reference]
    assert different == [], different
    rejects = {(collection, doc_id.split(" (duplicate ")[0]): (reason, detail)
               for collection, doc_id, reason, detail, _ in reference["rejects"]}
    assert rejects == {
        ("users", "1"): ("duplicate _id", "duplicate _id: '1' is already used by another document of this"
                         " collection (an id of another type with the same text form)"),
        ("users", "a-user"): ("duplicate email", "duplicate email: a@example.com is already used by user 1"),
        ("users", str(OID1)): ("duplicate email", "duplicate email: c@example.com is already used by user zzz"),
        ("users", str(OID2)): ("duplicate _id", "duplicate _id: '65a000000000000000000002' is already used by"
                               " another document of this collection (an id of another type with the same text"
                               " form)"),
        ("users", str(OID3)): ("duplicate email", "duplicate email: d@example.com is already used by user"
                               " 00010203-0405-0607-0809-0a0b0c0d0e0f"),
        ("users", "10"): ("duplicate email", "duplicate email: e@example.com is already used by user -5"),
        ("users", "3"): ("duplicate email", "duplicate email: e@example.com is already used by user -5"),
        ("users", "2"): rejects[("users", "2")],  # two documents: int 2 (name not text) keeps the text form
        ("gigs", "7"): ("duplicate _id", "duplicate _id: '7' is already used by another document of this"
                        " collection (an id of another type with the same text form)"),
    }
    reasons = sorted(reason for collection, doc_id, reason, *_ in reference["rejects"] if doc_id.startswith("2"))
    assert reasons[0] == "duplicate _id" and reasons[1] != "duplicate _id"


def test_an_incremental_run_and_a_resync_reach_the_same_tables(databases):
    """The holders first, the documents whose ids come first later: an incremental run takes the e-mails and
    the ids' text forms from the stored holders (their rejects carry their documents, read back from
    MongoDB), and the run stays balanced; a full re-sync then equals a first load of everything, and one
    more changes nothing."""
    make, target, now = databases
    reference_url = target()
    sync(reference_url, make("forward"))
    reference = outcome(reference_url)

    growing = make("grown", written=False)
    users, gigs = documents(now)
    losers = {repr(doc["_id"]) for doc in LOSERS[0] + LOSERS[1] + FILLERS[0] + FILLERS[1]}
    growing.users.insert_many([doc for doc in users if repr(doc["_id"]) in losers])
    growing.gigs.insert_many([doc for doc in gigs if repr(doc["_id"]) in losers])
    url = target()
    first = sync(url, growing)
    assert first.balanced
    with psycopg.connect(url) as connection:  # the holders hold, for now
        assert connection.execute("SELECT _id FROM users WHERE email = 'c@example.com'").fetchone() == (str(OID1),)
    growing.users.insert_many([doc for doc in users if repr(doc["_id"]) not in losers])
    growing.gigs.insert_many([doc for doc in gigs if repr(doc["_id"]) not in losers])

    incremental = sync(url, growing, incremental=True)
    assert incremental.status == "succeeded"
    assert_counts_balance(incremental)  # the displaced holders it did not read are not counted
    assert_nothing_lost(growing, url)
    after = outcome(url)
    assert after == reference, {name: (after[name], reference[name]) for name in after
                                if after[name] != reference[name]}
    with psycopg.connect(url) as connection:
        document_of = dict(connection.execute("SELECT doc_id, document->>'name' FROM sync_rejects"
                                              " WHERE resolved_at IS NULL AND collection = 'users'").fetchall())
    assert document_of[str(OID1)] == f"user {OID1}"  # read back from MongoDB

    full = sync(url, growing)
    assert full.balanced and outcome(url) == reference
    assert_counts_balance(full)
    again = sync(url, growing)
    assert again.balanced and outcome(url) == reference
    assert_counts_balance(again)
    for name in ("users", "gigs"):
        assert again.collections[name].counts.inserted == again.collections[name].counts.updated == 0, name


def test_a_follower_applies_the_same_rule(settings, mongo_db, pg_server_url):
    """Change events in the worst order for the old rule: the holders first, then the documents whose ids come
    first. The follower ends where a full sync of the same documents does; a displaced holder's reject
    carries its document, read back from MongoDB."""
    from tests.test_follow import Background, reference, wait_caught_up
    mongo_db.users.insert_many([user("1"), user(OID1, "c@example.com"), user("u-1", "u1@example.com")])
    mongo_db.gigs.insert_one({"_id": "g", "name": "a gig", "state": "done", "poster": OID1})
    with Background(settings):
        wait_caught_up(settings.pg_url, mongo_db)  # the first sync done: the holders are stored
        mongo_db.users.insert_many([user(1), user("zzz", "C@example.com")])
        mongo_db.users.update_one({"_id": "1"}, {"$set": {"name": "one, renamed"}})  # still the duplicate
        wait_caught_up(settings.pg_url, mongo_db)
        with psycopg.connect(settings.pg_url) as connection:
            rejected = dict(connection.execute("SELECT doc_id, document->>'name' FROM sync_rejects"
                                               " WHERE resolved_at IS NULL").fetchall())
        assert [name for doc_id, name in rejected.items() if doc_id.startswith("1 (duplicate ")] == ["one, renamed"]
        mongo_db.users.delete_one({"_id": "1"})  # the duplicate goes: the row of 1 stays, its reject closes
        wait_caught_up(settings.pg_url, mongo_db)
    assert state(settings.pg_url)["open rejects"] == reference(pg_server_url, settings.mongo_url)["open rejects"]
    assert {name: value for name, value in state(settings.pg_url).items() if name != "hashes"} == {
        name: value for name, value in reference(pg_server_url, settings.mongo_url).items() if name != "hashes"}
    with psycopg.connect(settings.pg_url) as connection:
        rejected = dict(connection.execute("SELECT doc_id, document->>'name' FROM sync_rejects"
                                           " WHERE resolved_at IS NULL").fetchall())
    assert rejected[str(OID1)] == f"user {OID1}"
    assert not [doc_id for doc_id in rejected if doc_id.startswith("1 (")]


@pytest.mark.parametrize("options", [{"first_load": False}, {"load_workers": 0}, {"load_workers": 1}],
                         ids=["merge", "first load", "load workers"])
def test_a_holder_stored_earlier_in_the_run_and_displaced_is_counted_once(databases, options):
    """Two new users with one e-mail, and two documents of one id's text form, the one whose id comes later
    scanned first, in different batches: the holder stored by an earlier batch of the run and displaced by a
    later one moves from inserted to rejected (seen = inserted + updated + unchanged + rejected, none < 0)."""
    make, target, _ = databases
    database = make("displaced", written=False)
    database.users.insert_many([user("b-user", "x@example.com"), user("1"), user("u-1"), user("u-2"),
                                user("u-3"), user("a-user", "X@example.com"), user(1)])
    database.gigs.insert_many([{"_id": "7", "name": "text", "state": "done", "poster": "u-1"},
                               *({"_id": f"g-{i}", "name": "g", "state": "done", "poster": "u-1"} for i in range(3)),
                               {"_id": 7, "name": "int", "state": "done", "poster": "u-1"}])
    url = target()
    report = sync(url, database, **options)
    assert report.status == "succeeded" and report.balanced
    for name, inserted, rejected in (("users", 5, {"duplicate email": 1, "duplicate _id": 1}),
                                     ("gigs", 4, {"duplicate _id": 1})):
        counts = report.collections[name].counts
        assert (counts.inserted, counts.updated, counts.unchanged, dict(counts.rejected)) == (
            inserted, 0, 0, rejected), (name, counts.as_dict())
    again = sync(url, database, first_load=False)
    assert again.balanced
    assert_counts_balance(again)


@pytest.mark.parametrize("holder_read", ["before", "after"])
def test_a_stored_holder_displaced_in_a_later_run_is_counted_once(databases, holder_read):
    """A holder stored by an earlier run loses its e-mail to a new user whose id comes first: read unchanged
    before the new one, it turns from unchanged to rejected; read after it (displaced before the scan met
    it), it is counted when read, once."""
    make, target, _ = databases
    database = make(f"stored_{holder_read}", written=False)
    holder = user("b-user", "x@example.com")
    database.users.insert_many([holder, user("u-1"), user("u-2"), user("u-3")])
    url = target()
    assert_counts_balance(sync(url, database))
    database.users.insert_many([user("a-user", "X@example.com"), user("u-4"), user("u-5")])  # in a later batch
    if holder_read == "after":  # the scan (natural order) meets it last
        database.users.delete_one({"_id": "b-user"})
        database.users.insert_one(holder)
    report = sync(url, database, first_load=False)
    assert report.balanced
    assert_counts_balance(report, holder_read)
    counts = report.collections["users"].counts
    assert (counts.seen, counts.inserted, counts.unchanged, dict(counts.rejected)) == (
        7, 3, 3, {"duplicate email": 1}), counts.as_dict()
