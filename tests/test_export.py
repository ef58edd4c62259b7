"""PostgreSQL tables into MongoDB documents (export-table), on the real servers."""
import datetime
import uuid

import pytest
from bson.binary import Binary
from bson.decimal128 import Decimal128

from gigsterpg import commands
from gigsterpg.config import Settings
from gigsterpg.exc import PrivilegeError, SourceError
from tests.helpers import assert_one_line_failure, execute, run_cli

UID = uuid.UUID("12345678-1234-5678-1234-567812345678")


@pytest.fixture
def source(empty_pg_url, mongo_url):
    return Settings(pg_url=empty_pg_url, mongo_url=mongo_url)


def test_every_basic_type_and_null_becomes_its_bson_counterpart(source, mongo_db):
    execute(source.pg_url,
            "CREATE TABLE typed (id int PRIMARY KEY, i8 bigint, f float8, r real, c char(3), v varchar(20), t text,"
            " b boolean, n numeric(10, 2), big numeric, d date, ts timestamp, tz timestamptz, tm time,"
            " iv interval, u uuid, j jsonb, js json, by bytea, ai int[], at text[], ip inet)",
            "INSERT INTO typed VALUES (1, 9223372036854775807, 1.5, 2.25, 'ab', 'vc', 'tx', true, 12.34,"
            " 123456789012345678901234567890123456789, '2024-02-29', '2024-02-29 10:11:12',"
            " '2024-02-29 10:11:12+02', '10:11:12', '1 day 2 hours', '12345678-1234-5678-1234-567812345678',"
            " '{\"a\": [1, {\"b\": null}]}', '{\"x\": 1}', '\\x00ff', '{1,2,NULL}', '{a,b}', '10.0.0.1')",
            "INSERT INTO typed (id) VALUES (2)")
    report = commands.export_table(source, "typed")
    assert (report.rows, report.written, report.deleted) == (2, 2, 0)
    doc = mongo_db.typed.find_one({"_id": 1})
    utc = datetime.timezone.utc
    assert doc == {
        "_id": 1, "id": 1, "i8": 9223372036854775807, "f": 1.5, "r": 2.25, "c": "ab ", "v": "vc", "t": "tx",
        "b": True, "n": Decimal128("12.34"), "big": "123456789012345678901234567890123456789",
        "d": datetime.datetime(2024, 2, 29, tzinfo=utc), "ts": datetime.datetime(2024, 2, 29, 10, 11, 12, tzinfo=utc),
        "tz": datetime.datetime(2024, 2, 29, 8, 11, 12, tzinfo=utc), "tm": "10:11:12", "iv": "1 day, 2:00:00",
        "u": Binary.from_uuid(UID), "j": {"a": [1, {"b": None}]}, "js": {"x": 1}, "by": b"\x00\xff",
        "ai": [1, 2, None], "at": ["a", "b"], "ip": "10.0.0.1"}
    nulls = {name: None for name in doc if name not in ("_id", "id")}
    assert mongo_db.typed.find_one({"_id": 2}) == {"_id": 2, "id": 2, **nulls}


@pytest.mark.parametrize("ddl, rows, ids", [
    ("CREATE TABLE k (code text PRIMARY KEY, x int)", "INSERT INTO k VALUES ('a', 1), ('b', 2)", ["a", "b"]),
    ("CREATE TABLE k (a int, b text, x int, PRIMARY KEY (b, a))", "INSERT INTO k VALUES (1, 'x', 0), (2, 'x', 0)",
     [{"b": "x", "a": 1}, {"b": "x", "a": 2}]),
    ("CREATE TABLE k (u uuid PRIMARY KEY)", "INSERT INTO k VALUES ('12345678-1234-5678-1234-567812345678')",
     [Binary.from_uuid(UID)]),
])
def test_the_id_is_the_primary_key_and_a_second_export_follows_the_table(source, mongo_db, ddl, rows, ids):
    execute(source.pg_url, ddl, rows)
    commands.export_table(source, "k")
    assert sorted(map(str, (doc["_id"] for doc in mongo_db.k.find()))) == sorted(map(str, ids))
    again = commands.export_table(source, "k")
    assert (again.rows, again.written, again.deleted) == (len(ids), 0, 0)  # unchanged: nothing rewritten
    execute(source.pg_url, "DELETE FROM k WHERE ctid = (SELECT min(ctid) FROM k)")
    third = commands.export_table(source, "k")
    assert (third.rows, third.deleted) == (len(ids) - 1, 1) and mongo_db.k.count_documents({}) == len(ids) - 1


def test_changes_between_exports_are_followed(source, mongo_db):
    execute(source.pg_url, "CREATE TABLE items (id int PRIMARY KEY, name text)",
            "INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 5000) i")
    first = commands.export_table(source, "items", batch_size=700)
    assert (first.rows, first.written) == (5000, 5000)
    execute(source.pg_url, "UPDATE items SET name = 'changed' WHERE id <= 10", "DELETE FROM items WHERE id > 4990",
            "INSERT INTO items VALUES (9001, 'new')")
    second = commands.export_table(source, "items", batch_size=700)
    assert (second.rows, second.written, second.deleted) == (4991, 11, 10)
    assert mongo_db.items.count_documents({}) == 4991 and mongo_db.items.count_documents({"name": "changed"}) == 10


def test_names_are_looked_up_not_spliced(source, mongo_db):
    execute(source.pg_url, 'CREATE SCHEMA "Odd Schema"',
            'CREATE TABLE "Odd Schema"."Mixed.Case" (id int PRIMARY KEY)',
            'INSERT INTO "Odd Schema"."Mixed.Case" VALUES (1)', "CREATE TABLE victim (id int PRIMARY KEY)")
    done = commands.export_table(source, "Mixed.Case", schema="Odd Schema", collection="odd")
    assert done.rows == 1 and mongo_db.odd.count_documents({}) == 1
    for hostile in ("victim; DROP TABLE victim", 'victim" ; DROP TABLE victim; --', "victim'--"):
        with pytest.raises(SourceError, match="not found"):
            commands.export_table(source, hostile)
    execute(source.pg_url, "SELECT 1 FROM victim")  # still there


def test_an_empty_table_gives_an_empty_collection_and_a_keyless_one_is_refused(source, mongo_db):
    execute(source.pg_url, "CREATE TABLE empty (id int PRIMARY KEY)", "CREATE TABLE loose (x int)")
    assert commands.export_table(source, "empty").rows == 0
    with pytest.raises(SourceError, match="has no primary key"):
        commands.export_table(source, "loose")


def test_a_role_without_select_is_refused(source, pg_server_url):
    execute(source.pg_url, "CREATE TABLE secret (id int PRIMARY KEY)", "DROP ROLE IF EXISTS gigster_noread",
            "CREATE ROLE gigster_noread LOGIN")
    try:
        url = source.pg_url.replace("postgres:@", "gigster_noread:@")
        with pytest.raises(PrivilegeError, match="may not read public.secret"):
            commands.export_table(Settings(pg_url=url, mongo_url=source.mongo_url), "secret")
    finally:
        execute(source.pg_url, "DROP OWNED BY gigster_noread", "DROP ROLE gigster_noread")


def test_cli_export_and_its_one_line_errors(source, tmp_path, mongo_db):
    execute(source.pg_url, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'x')")
    done = run_cli("export-table", "--pg", source.pg_url, "--mongo", source.mongo_url, "--table", "public.t",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Exported public.t into" in done.stdout and "1 rows read, 1 documents written" in done.stdout
    missing = run_cli("export-table", "--pg", source.pg_url, "--mongo", source.mongo_url, "--table", "nope",
                      cwd=tmp_path)
    assert_one_line_failure(missing, "table 'nope' not found")
    unreachable = run_cli("export-table", "--pg", "postgresql://u:pw@127.0.0.1:1/x", "--mongo", source.mongo_url,
                          "--table", "t", cwd=tmp_path)
    assert_one_line_failure(unreachable, "cannot connect to PostgreSQL at postgresql://u:***@127.0.0.1:1/x")


class _LooksEmpty:
    """A real collection that answers its estimated count with 0, as one does while another writer starts."""

    def __init__(self, collection):
        self._collection = collection

    def estimated_document_count(self):
        return 0

    def __getattr__(self, name):
        return getattr(self._collection, name)


def test_a_first_export_that_meets_documents_switches_to_upserts(source, mongo_db):
    from gigsterpg.lib.mongo import export
    execute(source.pg_url, "CREATE TABLE t (id int PRIMARY KEY, v text)",
            "INSERT INTO t SELECT i, 'v' FROM generate_series(1, 10) i")
    mongo_db.t.insert_one({"_id": 3, "v": "someone else's"})
    with export.connect(source.pg_url) as connection:
        report = export.export(connection, _LooksEmpty(mongo_db.t), export.describe(connection, "t"))
    assert report.rows == 10 and mongo_db.t.count_documents({}) == 10
    assert mongo_db.t.find_one({"_id": 3}) == {"_id": 3, "id": 3, "v": "v"}
