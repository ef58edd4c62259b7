"""Hostile documents: each loads faithfully or is rejected with its reason, and the run goes on.

The documents the MongoDB-protocol server stores go through a whole sync;
those no server will store (bytes that are not UTF-8, lone surrogates,
dates outside the BSON range Python reads, nesting beyond Python's reach)
are handed to the loader as raw BSON, as a broken export would deliver them.
"""
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import bson
import pytest
from bson import ObjectId
from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.raw_bson import RawBSONDocument
from pymongo import errors as mongo_errors
from sqlalchemy import text

from gigsterpg import commands
from gigsterpg.lib.pg.sync.engine.bulk import BatchLoader, prepare
from gigsterpg.lib.pg.sync.gig import GigSync
from gigsterpg.lib.pg.sync.engine.runner import begin_run
from gigsterpg.lib.pg.sync.user import UserSync
from tests.figures import FIGURES

TEN_MB = 10 * 1024 * 1024
UID = uuid.UUID("12345678-1234-5678-1234-567812345678")
OID = ObjectId("65a1b2c3d4e5f60718293a4b")
INJECTION = "x'); DROP TABLE users; --"


def nested(depth: int) -> dict:
    value = {"leaf": True}
    for _ in range(depth):
        value = {"d": value}
    return value


def depth_of(value) -> int:
    depth = 0
    while isinstance(value, dict) and "d" in value:
        value, depth = value["d"], depth + 1
    return depth


def user(doc_id, **fields):
    return {"_id": doc_id, "name": "Ann", **fields}


def gig(doc_id, **fields):
    return {"_id": doc_id, "name": "Job", "state": "in_progress", **fields}


# (collection, document, expected): a reject reason, or a check of the stored row
# (a dict of column -> value or -> predicate on the value).
USERS = [
    (user("nul-name", name="a\x00b"), "NUL character"),
    (user("nul-extra", bio="x\x00y"), "NUL character"),
    (user("nul-skill", skills=["Go\x00"]), "NUL character"),
    (user("nul-key", **{"k\u2400": 1}), {"extra": {"k\u2400": 1}}),
    (user("big-name", name="n" * TEN_MB), "name too long"),
    (user("big-extra", notes="x" * TEN_MB), {"extra": lambda e: len(e["notes"]) == TEN_MB}),
    (user("deep", tree=nested(90)), {"extra": lambda e: depth_of(e["tree"]) == 90}),
    (user("name-at-limit", name="a" * 64), {"name": "a" * 64}),
    (user("name-over-limit", name="a" * 65), "name too long"),
    (user("case-1", email="Same@Example.com"), {"email": "same@example.com"}),
    (user("case-2", email="same@example.COM"), "duplicate email"),
    (user("dots", **{"a.b": 1, "$x": {"$y": 2}}), {"extra": {"a.b": 1, "$x": {"$y": 2}}}),
    (user("skills-text", skills="Go"), "skills is not an array"),
    (user("skills-nested", skills=[["Go"]]), "skills holds a non-text value"),
    (user(OID), {"_id": str(OID)}),
    (user(42), {"_id": "42"}),
    (user(2 ** 63 - 1), {"_id": str(2 ** 63 - 1)}),
    (user(-2 ** 63), {"_id": str(-2 ** 63)}),
    (user(-2 ** 31), {"_id": str(-2 ** 31)}),
    (user(Binary.from_uuid(UID)), {"_id": str(UID)}),
    (user(Binary(b"\x01\x02", 0)), "unsupported _id"),
    (user({"a": 1}), "unsupported _id"),
    (user(1.5), "unsupported _id"),
    (user(7), {"_id": "7"}),
    (user("7"), "duplicate _id"),
    (user(INJECTION, name="Robert'); DROP TABLE gigs;--", skills=["'; DROP TABLE skills; --"]),
     {"name": "Robert'); DROP TABLE gigs;--"}),
    (user("first-day", created=datetime(1, 1, 1, tzinfo=timezone.utc)),
     {"created": datetime(1, 1, 1, tzinfo=timezone.utc)}),
    (user("last-day", created=datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)),
     {"created": datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)}),
    (user("epoch-before-year-1", created=-62135596800001), "unparseable created"),
    (user("epoch-after-9999", created=253402300800000), "unparseable created"),
    (user("epoch-int64", updated=2 ** 63 - 1), "unparseable updated"),
    (user("iso-early", created="0001-01-01T00:00:00+01:00"), "unparseable created"),
    (user("emoji", name="Zoë 🚀 名前", skills=["C++", "c++ ", "Ünïcode"]), {"name": "Zoë 🚀 名前"}),
]
GIGS = [
    (gig("nan", budget=float("nan")), "budget is not a finite number"),
    (gig("inf", budget=float("inf")), "budget is not a finite number"),
    (gig("-inf", budget=float("-inf")), "budget is not a finite number"),
    (gig("nan128", budget=Decimal128("NaN")), "budget is not a finite number"),
    (gig("huge128", budget=Decimal128("9.999999999999999999999999999999999E+6144")),
     {"budget": Decimal("9.999999999999999999999999999999999E+6144")}),
    (gig("tiny128", budget=Decimal128("1E-6176")), {"budget": Decimal("1E-6176")}),
    (gig("largest", budget="1e131071"), {"budget": Decimal("1e131071")}),
    (gig("too-large", budget="1e131072"), "budget out of range"),
    (gig("double-max", budget=1.7976931348623157e308), {"budget": Decimal("1.7976931348623157E+308")}),
    (gig("int64-budget", budget=-2 ** 63), {"budget": Decimal(-2 ** 63)}),
    (gig("big-description", description="d" * TEN_MB), {"description": lambda d: len(d) == TEN_MB}),
    (gig("nul-description", description="\x00"), "NUL character"),
    (gig("no-state", state=None), "unknown state"),
    (gig("poster-uuid", poster=Binary.from_uuid(UID)), {"poster_ref": str(UID), "poster": str(UID)}),
    (gig("poster-doc", poster={"$ref": "users"}), "unsupported poster"),
    (gig(INJECTION, name="'; DELETE FROM gigs; --"), {"name": "'; DELETE FROM gigs; --"}),
]
GOOD = {"users": user("good-user", skills=["Go"]), "gigs": gig("good-gig", poster="good-user")}


def stored(pg, collection, doc_id):
    """The stored row as a dict (with ``extra`` parsed and the poster's _id), or None."""
    query = ("SELECT u.*, u._id AS _id FROM users u WHERE u._id = :id" if collection == "users" else
             "SELECT g.*, p._id AS poster FROM gigs g LEFT JOIN users p ON p.id = g.poster_id WHERE g._id = :id")
    with pg.engine.connect() as connection:
        row = connection.execute(text(query), {"id": doc_id}).mappings().first()
    return dict(row) if row else None


def rejects(pg):
    with pg.engine.connect() as connection:
        return {(c, d): r for c, d, r in connection.execute(text(
            "SELECT collection, doc_id, reason FROM sync_rejects WHERE resolved_at IS NULL"))}


def insert_all(collection, cases):
    """Insert each case on its own; return those the server refused, with its error."""
    refused = []
    for doc, expected in cases:
        try:
            collection.insert_one(dict(doc))
        except (mongo_errors.PyMongoError, bson.errors.InvalidDocument) as err:
            refused.append((doc, expected, err))
    return refused


def test_hostile_documents_load_faithfully_or_are_rejected_with_their_reason(settings, pg, mongo_db):
    refused = insert_all(mongo_db.users, USERS) + insert_all(mongo_db.gigs, GIGS)
    mongo_db.users.insert_one(GOOD["users"])
    mongo_db.gigs.insert_one(GOOD["gigs"])
    # The server may refuse a document a real mongod takes; none of those is a case we count on.
    assert [doc["_id"] for doc, _, _ in refused] == [], refused
    report = commands.sync(settings)
    assert report.balanced and report.status == "succeeded"
    open_rejects = rejects(pg)
    failures = []
    for collection, cases in (("users", USERS), ("gigs", GIGS)):
        for doc, expected in cases:
            key = _key(doc["_id"])
            row = stored(pg, collection, key)
            if isinstance(expected, str):
                reason = open_rejects.get((collection, key)) or next(
                    (r for (c, d), r in open_rejects.items() if c == collection and d.startswith(f"{key} (dup")), None)
                if row is not None and expected != "duplicate _id" or reason != expected:
                    failures.append((collection, key, "expected reject", expected, "got", reason, row is not None))
            else:
                if row is None:
                    failures.append((collection, key, "expected a row, got", open_rejects.get((collection, key))))
                    continue
                for column, want in expected.items():
                    got = row[column]
                    if not (want(got) if callable(want) else got == want):
                        failures.append((collection, key, column, "differs"))
    assert failures == []
    assert stored(pg, "users", "good-user") and stored(pg, "gigs", "good-gig")["poster"] == "good-user"
    assert _skill_names(pg, INJECTION) == {"'; DROP TABLE skills; --"}
    assert _skill_names(pg, "emoji") == {"C++", "Ünïcode"}
    FIGURES["hostile documents tried"] += len(USERS) + len(GIGS)
    FIGURES["hostile documents tried: through a whole sync"] += len(USERS) + len(GIGS)

    # Fixed in MongoDB: loaded on the next run, and the reject closed.
    mongo_db.users.update_one({"_id": "nul-name"}, {"$set": {"name": "ab"}})
    mongo_db.gigs.update_one({"_id": "nan"}, {"$set": {"budget": 5}})
    commands.sync(settings)
    assert stored(pg, "users", "nul-name")["name"] == "ab" and stored(pg, "gigs", "nan")["budget"] == 5
    left = rejects(pg)
    assert ("users", "nul-name") not in left and ("gigs", "nan") not in left
    assert set(open_rejects) - set(left) == {("users", "nul-name"), ("gigs", "nan")}


def _key(doc_id) -> str:
    from gigsterpg.lib.pg.sync.document import describe_id
    return describe_id(doc_id)


def _skill_names(pg, user_id):
    with pg.engine.connect() as connection:
        return {name for (name,) in connection.execute(text(
            "SELECT k.name FROM user_skills us JOIN users u ON u.id = us.user_id JOIN skills k ON k.id = us.skill_id"
            " WHERE u._id = :id"), {"id": user_id})}


def _raw(doc: dict, old: bytes = b"", new: bytes = b"") -> RawBSONDocument:
    data = bson.encode(doc)
    if old:
        assert data.count(old) == 1
        data = data.replace(old, new)
    return RawBSONDocument(data)


def _deep_raw(depth: int) -> RawBSONDocument:
    inner = bson.encode({"leaf": True})
    for _ in range(depth):
        inner = (len(inner) + 8).to_bytes(4, "little") + b"\x03d\x00" + inner + b"\x00"
    body = bson.encode({"_id": f"deep-{depth}", "name": "n"})[4:-1] + b"\x03tree\x00" + inner + b"\x00"
    return RawBSONDocument((len(body) + 4).to_bytes(4, "little") + body)


RAW_ONLY = [
    # Not UTF-8, and a lone surrogate as CESU bytes: no server stores these, a broken export may carry them.
    (_raw({"_id": "latin1", "name": "abc"}, b"abc", b"a\xe9c"), "undecodable document"),
    (_raw({"_id": "surrogate", "name": "abc"}, b"abc", b"\xed\xa0\x80"), "undecodable document"),
    # BSON dates outside Python's datetime range (years 0 and 10000).
    (_raw({"_id": "year-0", "name": "n", "created": datetime(1, 1, 1)}, bson.encode({"c": datetime(1, 1, 1)})[7:15],
          (-62167219200000).to_bytes(8, "little", signed=True)), "unparseable created"),
    (_raw({"_id": "year-10000", "name": "n", "created": datetime(1, 1, 1)},
          bson.encode({"c": datetime(1, 1, 1)})[7:15], (253402300800000).to_bytes(8, "little", signed=True)),
     "unparseable created"),
    (_deep_raw(900), "too deeply nested"),
    (_deep_raw(5000), "undecodable document"),
]


@pytest.mark.parametrize("model", [UserSync])
def test_documents_no_server_stores_are_rejected_alone(pg, model):
    good = RawBSONDocument(bson.encode({"_id": "fine", "name": "ok"}))
    raw = pg.engine.raw_connection()
    try:
        loader = BatchLoader(raw.driver_connection, model, begin_run(raw.driver_connection, ["users"]))
        loader.load(prepare([doc for doc, _ in RAW_ONLY] + [good]))
    finally:
        raw.close()
    assert loader.counts.inserted == 1
    got = rejects(pg)
    assert sorted(got.values()) == sorted(reason for _, reason in RAW_ONLY)
    assert stored(pg, "users", "fine")
    FIGURES["hostile documents tried"] += len(RAW_ONLY)
    FIGURES["hostile documents tried: as raw bytes"] += len(RAW_ONLY)


def test_gig_mapping_agrees_for_raw_only_cases(pg):
    """The same undecodable bytes in a gig are rejected too (the decoder is shared, the model is not)."""
    raw = pg.engine.raw_connection()
    try:
        loader = BatchLoader(raw.driver_connection, GigSync, begin_run(raw.driver_connection, ["gigs"]))
        loader.load(prepare([_raw({"_id": "g", "name": "abc", "state": "done"}, b"abc", b"a\xffc")]))
    finally:
        raw.close()
    assert rejects(pg) == {("gigs", "g"): "undecodable document"}
