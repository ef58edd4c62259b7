"""export-orders: orders of a PostgreSQL shop into MongoDB documents, on the real servers.

Every expected value is worked out by hand in the test (the arithmetic is in the comments), never by
calling the code under test. "Not written" is measured with the MongoDB server's own write counters.
"""
import contextlib
import dataclasses
import datetime
import threading
from decimal import ROUND_HALF_UP, Decimal

import psycopg
import pytest
from bson.decimal128 import Decimal128
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from pymongo import monitoring

from gigsterpg import cli
from gigsterpg.config import Settings
from gigsterpg.exc import ConfigError, GigsterPgError, PrivilegeError, SourceError, TerminalError
from gigsterpg.lib.mongo.orders import export_orders
from tests.helpers import assert_report_balances, execute, mongo_fail_point, with_database

UTC = datetime.timezone.utc
SCHEMA = (
    "CREATE TABLE clients (uid text PRIMARY KEY, name text, address text, latitude numeric(9, 6),"
    " longitude numeric(9, 6), promotion_date text)",
    "CREATE TABLE products (uid text PRIMARY KEY, name text, brand text, price numeric(10, 2))",
    "CREATE TABLE orders (uid text UNIQUE, client_uid text, date_of_order timestamptz, status text)",
    "CREATE TABLE order_items (uid text PRIMARY KEY, order_uid text, product_uid text, quantity int,"
    " price numeric(10, 2))",
)
FIELDS = ["_id", "uid", "date_of_order", "client_uid", "client_name", "client_address", "latitude", "longitude",
          "status", "subtotal", "taxes", "total", "is_promotion_day", "most_popular_brand", "OrderItems"]


@pytest.fixture
def shop(empty_pg_url, pg_url, mongo_url):
    """Settings: an empty shop (the default schema) as the source, gigsterpg's own database, a fresh MongoDB."""
    execute(empty_pg_url, *SCHEMA)
    return Settings(pg_url=pg_url, mongo_url=mongo_url, orders_source_pg=empty_pg_url)


def d(text: str) -> Decimal128:
    return Decimal128(text)


def writes(mongo_db) -> dict:
    """The server's write counters (serverStatus opcounters): insert, update, delete."""
    counters = mongo_db.client.admin.command("serverStatus")["opcounters"]
    return {name: counters[name] for name in ("insert", "update", "delete")}


def written_since(mongo_db, before: dict) -> dict:
    after = writes(mongo_db)
    return {name: after[name] - before[name] for name in before}


class SentWrites(monitoring.CommandListener):
    """The ``_id`` of every insert, update and delete statement any client of this process sends, while on.

    The server's counters say whether anything was written (secantusdb counts a bulk command once, mongod
    each statement); this says exactly which documents were.
    """

    def __init__(self):
        self.on, self.ids = False, {"insert": [], "update": [], "delete": []}

    def started(self, event):
        if not self.on or event.command_name not in self.ids:
            return
        for statement in event.command.get({"insert": "documents", "update": "updates",
                                            "delete": "deletes"}[event.command_name], []):
            self.ids[event.command_name].append(statement.get("_id") if event.command_name == "insert"
                                                else statement["q"].get("_id"))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


SENT = SentWrites()
monitoring.register(SENT)  # for the clients made after this import, export_orders' own among them


@contextlib.contextmanager
def sent():
    """Record the writes sent inside the block: {"insert": [_id...], "update": [...], "delete": [...]}."""
    SENT.ids = {"insert": [], "update": [], "delete": []}
    SENT.on = True
    try:
        yield SENT.ids
    finally:
        SENT.on = False


def a_shop(url):
    """Three clients, four products, four orders (one of them without items)."""
    execute(url,
            "INSERT INTO clients VALUES ('c1', 'José Núñez', 'Calle Mayor 1', 19.432608, -99.133209, 'Miércoles'),"
            " ('c2', 'Zoë', 'Baker Street 221b', 51.523767, -0.158555, NULL), ('c3', 'Ann', 'x', 0, 0, 'mon')",
            "INSERT INTO products VALUES ('p1', 'Café', 'Acme', 10.00), ('p2', 'Yogur', 'Nestlé', 2.50),"
            " ('p3', 'Chicle', 'Zeta', 0.10), ('p4', 'Pan', 'Bimbo', 1.00)",
            "INSERT INTO orders VALUES ('o1', 'c1', '2024-03-13 23:30:00+00', 'paid'),"
            " ('o2', 'c2', '2024-03-14 08:00:00+00', 'pending'), ('o3', 'c3', '2024-03-11 10:00:00+00', 'paid'),"
            " ('o4', 'c1', '2024-03-12 10:00:00+00', 'cancelled')",
            "INSERT INTO order_items VALUES ('i1', 'o1', 'p1', 2, NULL), ('i2', 'o1', 'p2', 4, 2.45),"
            " ('i3', 'o1', 'p3', 1, NULL), ('i4', 'o2', 'p1', 1, NULL), ('i5', 'o3', 'p4', 3, NULL),"
            " ('i6', 'o3', 'p1', 1, NULL)")


def test_one_order_becomes_exactly_the_document_the_brief_names(shop, mongo_db):
    a_shop(shop.orders_source_pg)
    report = export_orders(shop)
    assert (report.rows, report.written, report.unchanged, report.deleted, report.rejected) == (4, 4, 0, 0, 0)
    assert report.tax_rate == "0.15" and report.time_zone == "UTC"
    doc = mongo_db.orders.find_one({"_id": "o1"})
    assert list(doc) == FIELDS
    # Lines: 2 x 10.00 (the product's price: the item has none) + 4 x 2.45 (the item's own) + 1 x 0.10
    # = 20.00 + 9.80 + 0.10 = 29.90; taxes 29.90 x 0.15 = 4.485, half-up 4.49; total 34.39.
    # Brands by quantity: Nestlé 4, Acme 2, Zeta 1. 2024-03-13 is a Wednesday: Miércoles.
    assert doc == {
        "_id": "o1", "uid": "o1", "date_of_order": datetime.datetime(2024, 3, 13, 23, 30, tzinfo=UTC),
        "client_uid": "c1", "client_name": "José Núñez", "client_address": "Calle Mayor 1",
        "latitude": d("19.432608"), "longitude": d("-99.133209"), "status": "paid",
        "subtotal": d("29.90"), "taxes": d("4.49"), "total": d("34.39"), "is_promotion_day": True,
        "most_popular_brand": "Nestlé",
        "OrderItems": [{"uid": "i1", "quantity": 2, "price": d("10.00"), "name": "Café", "brand": "Acme"},
                       {"uid": "i2", "quantity": 4, "price": d("2.45"), "name": "Yogur", "brand": "Nestlé"},
                       {"uid": "i3", "quantity": 1, "price": d("0.10"), "name": "Chicle", "brand": "Zeta"}]}
    assert list(doc["OrderItems"][0]) == ["uid", "quantity", "price", "name", "brand"]
    # o2: no promotion day -> null; o3: Monday 'mon' -> true; 3 x 1.00 + 1 x 10.00 = 13.00, taxes 1.95.
    o2, o3 = mongo_db.orders.find_one({"_id": "o2"}), mongo_db.orders.find_one({"_id": "o3"})
    assert o2["is_promotion_day"] is None and o2["total"] == d("11.50")
    assert (o3["subtotal"], o3["taxes"], o3["total"], o3["is_promotion_day"]) == (
        d("13.00"), d("1.95"), d("14.95"), True)
    assert o3["most_popular_brand"] == "Bimbo"  # quantity 3 beats 1, though Acme's revenue is larger
    # An order without items: zero totals, no brand, an empty list. 2024-03-12 is a Tuesday.
    o4 = mongo_db.orders.find_one({"_id": "o4"})
    assert (o4["subtotal"], o4["taxes"], o4["total"], o4["most_popular_brand"], o4["OrderItems"],
            o4["is_promotion_day"]) == (d("0"), d("0.00"), d("0.00"), None, [], False)


def test_the_tax_rate_and_the_time_zone_are_settings(shop, mongo_db):
    a_shop(shop.orders_source_pg)
    report = export_orders(dataclasses.replace(shop, tax_rate="0.21", time_zone="Asia/Tokyo"))
    assert (report.tax_rate, report.time_zone) == ("0.21", "Asia/Tokyo")
    doc = mongo_db.orders.find_one({"_id": "o1"})
    # 29.90 x 0.21 = 6.279 -> 6.28; 23:30 UTC on Wednesday is 08:30 on Thursday in Tokyo: not Miércoles.
    assert (doc["taxes"], doc["total"], doc["is_promotion_day"]) == (d("6.28"), d("36.18"), False)


PROMOTION_DAYS = [  # (promotion_date, expected for an order on Monday 2024-03-11)
    ("MON", True), ("Monday", True), ("mon", True), ("lun", True), ("Lunes", True), ("LUNES", True),
    (" monday. ", True), ("Tue", False), ("martes", False), ("miércoles", False), ("miercoles", False),
    ("MIÉRCOLES", False), ("Mié", False), ("sábado", False), ("SAB", False), ("Sunday", False), ("dom", False),
    ("2024-03-11", True), ("2024-03-12", False), (None, None), ("", None), ("Funday", None), ("2024-02-30", None),
    ("11/03/2024", None)]


def test_promotion_days_in_both_languages_every_spelling_or_a_date(shop, mongo_db):
    url = shop.orders_source_pg
    with psycopg.connect(url) as connection:
        for n, (promotion, _) in enumerate(PROMOTION_DAYS):
            connection.execute("INSERT INTO clients VALUES (%s, 'x', 'y', 0, 0, %s)", (f"c{n}", promotion))
            connection.execute("INSERT INTO orders VALUES (%s, %s, '2024-03-11 12:00:00+00', 'paid')",
                               (f"o{n}", f"c{n}"))
    report = export_orders(shop)
    got = {doc["_id"]: doc["is_promotion_day"] for doc in mongo_db.orders.find()}
    assert got == {f"o{n}": expected for n, (_, expected) in enumerate(PROMOTION_DAYS)}
    assert report.counts["promotion day unreadable"] == 3  # Funday, 2024-02-30, 11/03/2024; not NULL or ''


def test_a_promotion_date_column_of_type_date(shop, mongo_db):
    url = shop.orders_source_pg
    execute(url, "ALTER TABLE clients ALTER COLUMN promotion_date TYPE date USING NULL",
            "INSERT INTO clients VALUES ('c1', 'x', 'y', 0, 0, '2024-03-11'), ('c2', 'x', 'y', 0, 0, NULL)",
            "INSERT INTO orders VALUES ('o1', 'c1', '2024-03-11 23:59:59+00', 'paid'),"
            " ('o2', 'c1', '2024-03-12 00:00:00+00', 'paid'), ('o3', 'c2', '2024-03-11 00:00:00+00', 'paid')")
    export_orders(shop)
    assert {doc["_id"]: doc["is_promotion_day"] for doc in mongo_db.orders.find()} == {
        "o1": True, "o2": False, "o3": None}


def test_ties_for_the_most_popular_brand_and_missing_clients_and_products(shop, mongo_db):
    execute(shop.orders_source_pg,
            "INSERT INTO products VALUES ('x', 'a', 'Xeno', 1.00), ('y', 'b', 'Ypsilon', 1.50),"
            " ('al', 'c', 'Alpha', 3.00), ('be', 'd', 'Beta', 3.00)",
            "INSERT INTO orders VALUES ('A', NULL, '2024-01-01', 'paid'), ('B', 'nobody', '2024-01-01', 'paid'),"
            " ('C', NULL, '2024-01-01', 'paid')",
            # A: Xeno 2 x 1.00 and Ypsilon 2 x 1.50: same quantity, Ypsilon's revenue is larger.
            "INSERT INTO order_items VALUES ('a1', 'A', 'x', 2, NULL), ('a2', 'A', 'y', 2, NULL),"
            # B: Beta and Alpha, 1 x 3.00 each: a full tie, the name decides; a product that is gone keeps
            # its quantity and price: 3.00 + 3.00 + 2 x 0.25 = 6.50, taxes 0.975 -> 0.98.
            " ('b1', 'B', 'be', 1, NULL), ('b2', 'B', 'al', 1, NULL), ('b3', 'B', 'gone', 2, 0.25),"
            # C: only a product that is gone, without a price of its own: nothing to count, no brand.
            " ('c1', 'C', 'gone', 1, NULL)")
    report = export_orders(shop)
    a, b, c = (mongo_db.orders.find_one({"_id": key}) for key in "ABC")
    assert a["most_popular_brand"] == "Ypsilon" and a["subtotal"] == d("5.00")
    assert b["most_popular_brand"] == "Alpha" and (b["subtotal"], b["taxes"], b["total"]) == (
        d("6.50"), d("0.98"), d("7.48"))
    assert b["OrderItems"][2] == {"uid": "b3", "quantity": 2, "price": d("0.25"), "name": None, "brand": None}
    assert (b["client_uid"], b["client_name"], b["client_address"], b["latitude"]) == ("nobody", None, None, None)
    assert c["most_popular_brand"] is None and c["subtotal"] == d("0") and c["OrderItems"][0]["price"] is None
    assert report.counts == {"client missing": 3, "item of a missing product": 2,
                             "item without a price or quantity": 1}


def test_an_order_without_uid_is_a_reject_and_the_run_goes_on(shop, mongo_db, pg_url):
    url = shop.orders_source_pg
    execute(url, "INSERT INTO orders VALUES (NULL, 'c', '2024-01-01', 'paid'), ('o1', 'c', '2024-01-01', 'paid'),"
                 " ('', 'c', '2024-01-02', 'paid')")
    report = export_orders(shop)
    assert (report.rows, report.written, report.rejected, report.counts["no uid"]) == (3, 1, 2, 2)
    target = f"{mongo_db.name}.orders"
    with psycopg.connect(pg_url) as own:
        rejects = own.execute("SELECT reason, document->>'status' FROM sync_rejects WHERE collection = %s"
                              " AND resolved_at IS NULL", (target,)).fetchall()
    assert rejects == [("no uid", "paid"), ("no uid", "paid")]
    again = export_orders(shop)  # the same rejects, not new ones
    assert (again.rejected, again.written) == (2, 0)
    execute(url, "UPDATE orders SET uid = 'o2' WHERE uid IS NULL", "DELETE FROM orders WHERE uid = ''")
    fixed = export_orders(shop)
    assert (fixed.rejected, fixed.written) == (0, 1)
    with psycopg.connect(pg_url) as own:
        assert own.execute("SELECT count(*) FILTER (WHERE resolved_at IS NULL), count(*) FROM sync_rejects"
                           " WHERE collection = %s", (target,)).fetchone() == (0, 2)
    assert sorted(doc["_id"] for doc in mongo_db.orders.find()) == ["o1", "o2"]


def test_a_uid_seen_twice_is_a_reject(shop, mongo_db):
    execute(shop.orders_source_pg, "ALTER TABLE orders DROP CONSTRAINT orders_uid_key",
            "INSERT INTO orders VALUES ('o1', 'c', '2024-01-01', 'paid'), ('o1', 'c', '2024-01-02', 'paid')")
    report = export_orders(shop, batch_size=1)  # the second one comes in another batch
    assert (report.written, report.rejected, report.counts) == (1, 1, {"client missing": 2, "duplicate uid": 1})
    assert mongo_db.orders.count_documents({}) == 1


def test_a_second_run_writes_nothing_and_changes_rewrite_exactly_the_orders_they_touch(shop, mongo_db):
    url = shop.orders_source_pg
    a_shop(url)
    export_orders(shop)
    before = writes(mongo_db)
    with sent() as ids:
        again = export_orders(shop)
    assert (again.written, again.unchanged, again.deleted) == (0, 4, 0)
    assert written_since(mongo_db, before) == {"insert": 0, "update": 0, "delete": 0}
    assert ids == {"insert": [], "update": [], "delete": []}

    # p1 (Acme) is in o1, o2 and o3: exactly those three are rewritten. A client's address: c1 has o1 and
    # o4. An item's quantity: o3 only.
    for change, expected in (("UPDATE products SET brand = 'Acme Corp' WHERE uid = 'p1'", ["o1", "o2", "o3"]),
                             ("UPDATE clients SET address = 'Calle Menor 2' WHERE uid = 'c1'", ["o1", "o4"]),
                             ("UPDATE order_items SET quantity = 5 WHERE uid = 'i5'", ["o3"])):
        execute(url, change)
        before = writes(mongo_db)
        with sent() as ids:
            report = export_orders(shop)
        assert (report.written, report.unchanged) == (len(expected), 4 - len(expected))
        assert_report_balances(report)
        assert sorted(ids["update"]) == expected and ids["insert"] == ids["delete"] == []
        assert written_since(mongo_db, before)["update"] >= 1
    assert mongo_db.orders.find_one({"_id": "o2"})["OrderItems"][0]["brand"] == "Acme Corp"
    assert mongo_db.orders.find_one({"_id": "o4"})["client_address"] == "Calle Menor 2"
    assert mongo_db.orders.find_one({"_id": "o3"})["subtotal"] == d("15.00")  # 5 x 1.00 + 10.00

    # An order deleted at the source: its document is deleted, nothing else is written.
    execute(url, "DELETE FROM order_items WHERE order_uid = 'o2'", "DELETE FROM orders WHERE uid = 'o2'")
    before = writes(mongo_db)
    with sent() as ids:
        report = export_orders(shop)
    assert (report.written, report.deleted) == (0, 1)
    assert written_since(mongo_db, before) == {"insert": 0, "update": 0, "delete": 1}
    assert ids["insert"] == ids["update"] == [] and len(ids["delete"]) == 1
    assert sorted(doc["_id"] for doc in mongo_db.orders.find()) == ["o1", "o3", "o4"]


def test_a_collection_emptied_by_hand_is_written_again(shop, mongo_db):
    a_shop(shop.orders_source_pg)
    export_orders(shop)
    mongo_db.orders.delete_many({"_id": {"$in": ["o1", "o2"]}})
    report = export_orders(shop)  # the hashes no longer match the collection: every document is compared
    assert mongo_db.orders.count_documents({}) == 4 and (report.written, report.unchanged) == (2, 2)
    assert_report_balances(report)
    mongo_db.drop_collection("orders")
    assert export_orders(shop).written == 4


def test_a_select_only_role_is_enough_and_nothing_is_written_to_the_source(shop, mongo_db, pg_server_url):
    url = shop.orders_source_pg
    a_shop(url)
    database = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    admin = psycopg.connect(pg_server_url, autocommit=True)
    try:
        admin.execute("DROP ROLE IF EXISTS shop_reader")
        admin.execute("CREATE ROLE shop_reader LOGIN")
        execute(url, "REVOKE ALL ON SCHEMA public FROM PUBLIC", f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC',
                f'GRANT CONNECT ON DATABASE "{database}" TO shop_reader', "GRANT USAGE ON SCHEMA public TO shop_reader",
                "GRANT SELECT ON clients, products, orders, order_items TO shop_reader")
        reader = psycopg.conninfo.make_conninfo(url, user="shop_reader")
        # SELECT on the four tables and nothing else (no CREATE, no TEMPORARY): any write would fail the run.
        report = export_orders(dataclasses.replace(shop, orders_source_pg=reader))
        assert report.written == 4
        execute(url, "REVOKE SELECT ON products FROM shop_reader",
                "GRANT SELECT (uid, name) ON products TO shop_reader")
        with pytest.raises(PrivilegeError) as refused:
            export_orders(dataclasses.replace(shop, orders_source_pg=reader))
        assert "no SELECT on products.brand, products.price" in str(refused.value)
        assert "GRANT SELECT ON products" in str(refused.value)
    finally:
        execute(url, "DROP OWNED BY shop_reader")
        admin.execute("DROP ROLE IF EXISTS shop_reader")
        admin.close()


def test_missing_tables_and_columns_are_named_in_one_line(shop):
    execute(shop.orders_source_pg, "DROP TABLE products", "ALTER TABLE orders DROP COLUMN status")
    with pytest.raises(SourceError) as missing:
        export_orders(shop)
    assert str(missing.value).startswith("the source lacks what projection 'orders' reads, missing"
                                         " column orders.status, table products")


def test_a_projection_of_ones_own_for_other_names(shop, mongo_db, tmp_path):
    execute(shop.orders_source_pg, "CREATE TABLE pedidos (id int PRIMARY KEY, importe numeric(8, 2), ok bool)",
            "INSERT INTO pedidos VALUES (1, 10.05, true), (2, NULL, false)")
    mine = tmp_path / "pedidos.sql"
    mine.write_text("-- needs: pedidos(id, importe, ok)\n"
                    "SELECT id AS _id, importe, round(importe * %(tax_rate)s, 2) AS taxes,"
                    " json_build_object('x', 1.50, 'n', 2) AS extra, NOT ok AS \"count: not ok\" FROM pedidos\n")
    report = export_orders(shop, collection="pedidos", projection=str(mine))
    assert (report.projection, report.written, report.counts) == ("pedidos", 2, {"not ok": 1})
    # 10.05 x 0.15 = 1.5075 -> 1.51; json numbers stay exact (1.50 a Decimal128, 2 an int).
    assert mongo_db.pedidos.find_one({"_id": 1}) == {"_id": 1, "importe": d("10.05"), "taxes": d("1.51"),
                                                     "extra": {"x": d("1.50"), "n": 2}}
    mine.write_text("-- needs: pedidos(id)\nSELECT id AS _id, nonsense FROM pedidos\n")
    with pytest.raises(SourceError) as broken:
        export_orders(shop, collection="pedidos", projection=str(mine))
    assert "projection 'pedidos' does not run on the source" in str(broken.value)
    assert 'column "nonsense" does not exist' in str(broken.value)


def test_settings_that_cannot_work_are_refused(shop):
    for changes, message in (({"orders_source_pg": None}, "no source database"),
                             ({"orders_source_pg": shop.pg_url}, "the source is gigsterpg's own database"),
                             ({"tax_rate": "15%"}, "bad tax rate"), ({"tax_rate": "1.5"}, "bad tax rate"),
                             ({"time_zone": "Mars/Olympus"}, "unknown time zone"),
                             ({"time_zone": "UTC -c x=1"}, "unknown time zone")):
        with pytest.raises(ConfigError) as refused:
            export_orders(dataclasses.replace(shop, **changes))
        assert str(refused.value).startswith(message)
    with pytest.raises(ConfigError, match="unknown projection 'nope'"):
        export_orders(shop, projection="nope")


def test_one_run_at_a_time_per_collection(shop, mongo_db, pg_url):
    holder = psycopg.connect(pg_url, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))",
                       (f"gigsterpg projection {mongo_db.name}.orders",))
        with pytest.raises(TerminalError, match=f"another run is writing {mongo_db.name}.orders"):
            export_orders(shop)
        export_orders(shop, collection="orders2")  # another collection is free
    finally:
        holder.close()


# The command line -----------------------------------------------------------------------------------

def main(capsys, *argv):
    """``gigsterpg.cli.main(argv)`` in this process: (exit code, stdout, stderr)."""
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_shop_then_export_orders_from_the_command_line(empty_pg_url, pg_url, mongo_url, mongo_db, capsys):
    code, out, err = main(capsys, "generate-shop", "--pg", empty_pg_url, "--orders", "300", "--seed", "7")
    assert code == 0, err
    assert "300 orders" in out and "60 clients" in out
    code, out, err = main(capsys, "generate-shop", "--pg", empty_pg_url)
    assert code == 2 and err.startswith("FAILED: table 'order_items' already holds rows") and err.count("\n") == 1
    args = ("export-orders", "--pg", empty_pg_url, "--pg-url", pg_url, "--mongo", mongo_url, "--tax-rate", "0.16")
    code, out, err = main(capsys, *args)
    assert code == 0, err
    assert (f"Orders into {mongo_db.name}.orders (projection orders, tax rate 0.16, dates in UTC):"
            " 300 orders read") in out
    assert "by reason: " in out
    code, out, err = main(capsys, *args)
    assert code == 0 and " 0 documents written" in out
    assert mongo_db.orders.count_documents({}) > 250


@pytest.mark.parametrize("argv, message", [
    (["--pg", "postgresql://nobody@127.0.0.1:1/shop"], "FAILED: cannot connect to PostgreSQL at"),
    (["--tax-rate", "abc"], "FAILED: bad tax rate"),
    (["--projection", "nope"], "FAILED: unknown projection"),
])
def test_errors_end_in_one_line(shop, capsys, argv, message):
    base = {"--pg": shop.orders_source_pg, "--pg-url": shop.pg_url, "--mongo": shop.mongo_url}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    code, out, err = main(capsys, "export-orders", *[part for pair in base.items() for part in pair])
    assert code != 0 and err.startswith(message) and err.count("\n") == 1, err


def test_a_wrong_password_and_mongodb_down_end_in_one_line_without_the_password(password_role, shop, capsys):
    name, _ = password_role
    source = psycopg.conninfo.conninfo_to_dict(shop.orders_source_pg)
    url = f"postgresql://{name}:the-wrong-one@/{source['dbname']}?host={source['host']}&port={source.get('port', 5432)}"
    code, out, err = main(capsys, "export-orders", "--pg", url, "--pg-url", shop.pg_url, "--mongo", shop.mongo_url)
    assert code == 1 and err.startswith("FAILED: PostgreSQL refused the login") and err.count("\n") == 1, err
    assert "GIGSTERPG_ORDERS_SOURCE_PG" in err  # the source's setting, not gigsterpg's own database's
    assert "the-wrong-one" not in out + err
    down = with_database("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300", "shop")
    code, out, err = main(capsys, "export-orders", "--pg", shop.orders_source_pg, "--pg-url", shop.pg_url,
                          "--mongo", down)
    assert code == 1 and err.startswith("FAILED: cannot reach MongoDB at") and err.count("\n") == 1, err


# The generated shop ---------------------------------------------------------------------------------

def test_the_generated_shop_carries_every_awkward_case(empty_pg_url, pg_url, mongo_url, mongo_db):
    from gigsterpg.fixtures.generate_shop import write_shop
    assert write_shop(empty_pg_url, orders=1500, seed=5)["orders"] == 1500
    with psycopg.connect(empty_pg_url) as connection:
        fingerprint = connection.execute(
            "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM order_items t").fetchone()[0]
        spellings = {row[0] for row in connection.execute("SELECT promotion_date FROM clients")}
    assert {"MON", "Monday", "lun", "Lunes", "miercoles", "Miércoles", "MIÉRCOLES", None, "", "Funday"} <= spellings
    write_shop(empty_pg_url, orders=1500, seed=5, replace=True)
    with psycopg.connect(empty_pg_url) as connection:
        assert connection.execute("SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM order_items t"
                                  ).fetchone()[0] == fingerprint  # deterministic
    report = export_orders(Settings(pg_url=pg_url, mongo_url=mongo_url, orders_source_pg=empty_pg_url))
    assert {"no uid", "client missing", "item of a missing product", "promotion day unreadable",
            "item without a price or quantity"} <= set(report.counts)
    docs = list(mongo_db.orders.find())
    assert any(len(doc["OrderItems"]) == 1000 for doc in docs)
    assert any(doc["OrderItems"] == [] for doc in docs)
    assert any(not doc["client_name"].isascii() for doc in docs if doc["client_name"])
    half_cents = [doc for doc in docs if (doc["subtotal"].to_decimal() * 15) % 1 == Decimal("0.5")]
    assert half_cents  # subtotal x 0.15 ends on half a cent, rounded up: 0.10 -> 0.015 -> 0.02
    assert all(doc["taxes"].to_decimal() == (doc["subtotal"].to_decimal() * Decimal("0.15")).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_UP) > doc["subtotal"].to_decimal() * Decimal("0.15") for doc in half_cents)
    ties = 0
    for doc in docs:
        totals = {}
        for item in doc["OrderItems"]:
            if item["brand"] and item["price"] is not None:
                quantity, revenue = totals.get(item["brand"], (0, 0))
                totals[item["brand"]] = (quantity + item["quantity"],
                                         revenue + item["quantity"] * item["price"].to_decimal())
        if len(totals) > 1 and len(set(totals.values())) == 1:
            ties += 1
            assert doc["most_popular_brand"] == min(totals)  # full tie: the name decides
    assert ties > 0


# The property: exact arithmetic whatever the lines ------------------------------------------------------

lines = st.lists(st.tuples(st.integers(0, 1000), st.decimals(min_value=0, max_value=99999, places=2)),
                 max_size=12)


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(orders=st.lists(lines, min_size=1, max_size=5), rate=st.decimals(min_value=0, max_value=1, places=4))
def test_totals_are_exact_whatever_the_lines(shop, mongo_db, orders, rate):
    url = shop.orders_source_pg
    with psycopg.connect(url) as connection:
        connection.execute("TRUNCATE orders, order_items")
        for n, order in enumerate(orders):
            connection.execute("INSERT INTO orders VALUES (%s, NULL, '2024-01-01', 'paid')", (f"o{n}",))
            for m, (quantity, price) in enumerate(order):
                connection.execute("INSERT INTO order_items VALUES (%s, %s, 'none', %s, %s)",
                                   (f"i{n}-{m:02d}", f"o{n}", quantity, price))
    export_orders(dataclasses.replace(shop, tax_rate=str(rate)))
    for n, order in enumerate(orders):
        doc = mongo_db.orders.find_one({"_id": f"o{n}"})
        subtotal, taxes, total = (doc[name].to_decimal() for name in ("subtotal", "taxes", "total"))
        assert subtotal == sum((quantity * price for quantity, price in order), Decimal(0))
        assert subtotal == sum(item["quantity"] * item["price"].to_decimal() for item in doc["OrderItems"])
        assert taxes == (subtotal * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        assert total == subtotal + taxes
        assert all(isinstance(doc[name], Decimal128) for name in ("subtotal", "taxes", "total"))


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_decimal128_built_directly_is_bsons_own(value):
    from gigsterpg.lib.mongo.projection import NotDecimal128, decimal128
    if len(value.as_tuple().digits) <= 34 and -6176 <= value.as_tuple().exponent <= 6111:
        built = decimal128(value)
        assert built.bid == Decimal128(value).bid  # the same 16 bytes as pymongo's own conversion
        assert built.to_decimal() == value
    else:
        with pytest.raises(NotDecimal128):
            decimal128(value)


def test_the_writer_thread_hands_its_error_to_the_caller():
    from gigsterpg.lib.mongo.bulk import Background
    done = []
    background = Background(depth=1)
    background.submit(lambda: done.append(1))
    background.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # from the next submit, or from drain if the thread is slower
        background.submit(lambda: done.append(3))  # skipped: the thread stopped working at the error
        background.drain()
    assert done == [1]
    background.stop()  # already ended: nothing to wait for


def test_the_demo_shows_a_shop_exported_twice(tmp_path, capsys):
    code, out, err = main(capsys, "demo", "--folder", str(tmp_path / "demo"), "--users", "30", "--gigs", "60",
                          "--orders", "200", "--no-progress")
    assert code == 0, err
    first, again = out.split("Again, on the same shop:")
    assert "Sync run 1 (full) succeeded." in first
    assert ("Orders into data-practical.orders (projection orders, tax rate 0.15, dates in UTC):"
            " 200 orders read") in first
    assert " 0 documents written" not in first and " 0 documents written" in again


@pytest.mark.parametrize("writers", [1, 2])
def test_a_run_that_fails_midway_is_finished_by_the_next_without_a_duplicate(shop, mongo_db, writers):
    a_shop(shop.orders_source_pg)
    with mongo_fail_point(mongo_db.client) as arm:  # the second insert command fails as a server shutting down would
        arm({"skip": 1, "times": 1}, failCommands=["insert"], errorCode=91)
        with pytest.raises(GigsterPgError, match="MongoDB"):
            export_orders(shop, batch_size=1, writers=writers)
    there = mongo_db.orders.count_documents({})
    # The first batch only; with two writers, the other's batch in flight when the second failed may be there too.
    assert there == 1 if writers == 1 else there in (1, 2)
    report = export_orders(shop, batch_size=1, writers=writers)
    # The documents there already (their hashes were never stored, or were): written once, never twice.
    assert report.written + report.unchanged == 4 and report.written >= 4 - there
    if writers == 1:  # the first order's document is there (its hash never stored): found equal, unchanged
        assert (report.written, report.unchanged) == (3, 1)
    assert mongo_db.orders.count_documents({}) == 4
    assert_report_balances(report)
    assert export_orders(shop).written == 0


def test_the_progress_bar_counts_the_orders(shop, mongo_db):
    import io
    a_shop(shop.orders_source_pg)
    args = cli.build_parser().parse_args(["export-orders", "--pg", shop.orders_source_pg, "--pg-url", shop.pg_url,
                                          "--mongo", shop.mongo_url])
    stream = io.StringIO()
    from gigsterpg.pipelines.export_orders import cli as orders_cli
    assert orders_cli.run(args, stream) == 0
    assert "4/4" in stream.getvalue() and "orders" in stream.getvalue()


# Every order in exactly one column; money Decimal128 or a reject -------------------------------------------

def test_a_time_zone_that_changes_the_rows_but_not_the_documents_counts_them_unchanged(shop, mongo_db):
    a_shop(shop.orders_source_pg)
    assert_report_balances(export_orders(shop))
    # In Lisbon (UTC+0 in March) every timestamp's text gains "+00" for "+00:00"... either way the rows' text
    # changes (their hash with it), while the documents hold the same instants and the same promotion days.
    moved = export_orders(dataclasses.replace(shop, time_zone="Europe/Lisbon"))
    assert (moved.read, moved.written, moved.unchanged, moved.rejected) == (4, 0, 4, 0)
    assert_report_balances(moved)
    # Tokyo moves o1 (23:30 UTC on a Wednesday) to Thursday: its promotion day changes, the others do not.
    tokyo = export_orders(dataclasses.replace(shop, time_zone="Asia/Tokyo"))
    assert (tokyo.written, tokyo.unchanged) == (1, 3)
    assert_report_balances(tokyo)


def test_money_decimal128_cannot_hold_makes_the_order_a_reject_with_its_reason(shop, mongo_db, pg_url):
    url = shop.orders_source_pg
    execute(url, "ALTER TABLE order_items ALTER COLUMN price TYPE numeric",
            "ALTER TABLE products ALTER COLUMN price TYPE numeric",
            "INSERT INTO orders VALUES ('ok', NULL, '2024-01-01', 'paid'), ('nan', NULL, '2024-01-01', 'paid'),"
            " ('big', NULL, '2024-01-01', 'paid'), ('neg', NULL, '2024-01-01', 'paid')",
            "INSERT INTO order_items VALUES ('i1', 'ok', 'x', 1, 1.50), ('i2', 'nan', 'x', 1, 'NaN'),"
            " ('i3', 'big', 'x', 1, 123456789012345678901234567890123456.5), ('i4', 'neg', 'x', -2, 3.00)")
    report = export_orders(shop)
    assert (report.read, report.written, report.unchanged, report.rejected) == (4, 2, 0, 2)
    assert_report_balances(report)
    assert report.counts["number beyond Decimal128"] == 2
    assert report.counts["item with a negative quantity"] == 1  # counted, and written: -2 x 3.00
    assert sorted(doc["_id"] for doc in mongo_db.orders.find()) == ["neg", "ok"]
    for doc in mongo_db.orders.find():
        assert all(isinstance(doc[name], Decimal128) for name in ("subtotal", "taxes", "total"))
        assert all(isinstance(item["price"], Decimal128) for item in doc["OrderItems"])
    assert mongo_db.orders.find_one({"_id": "neg"})["subtotal"] == d("-6.00")
    with psycopg.connect(pg_url) as own:
        rejects = own.execute("SELECT doc_id, reason, detail, document->>'subtotal' FROM sync_rejects"
                              " WHERE collection = %s AND resolved_at IS NULL ORDER BY 1",
                              (f"{mongo_db.name}.orders",)).fetchall()
    assert [row[:2] for row in rejects] == [("big", "number beyond Decimal128"), ("nan", "number beyond Decimal128")]
    assert all("Decimal128" in row[2] and "fix the value at the source" in row[2] for row in rejects)
    assert rejects[1][3] == "NaN" and rejects[0][3].startswith("123456789012345678901234567890123456")
    again = export_orders(shop)  # the same rejects again, not new ones; nothing written
    assert (again.written, again.unchanged, again.rejected) == (0, 2, 2)
    assert_report_balances(again)
    execute(url, "UPDATE order_items SET price = 2 WHERE uid IN ('i2', 'i3')")
    fixed = export_orders(shop)
    assert (fixed.written, fixed.unchanged, fixed.rejected) == (2, 2, 0)
    assert mongo_db.orders.find_one({"_id": "nan"})["total"] == d("2.30")


def test_decimal128_refuses_what_it_cannot_hold():
    from gigsterpg.lib.mongo.projection import NotDecimal128, decimal128
    for value in ("NaN", "Infinity", "-Infinity", "1" * 35, "1E-6200"):
        with pytest.raises(NotDecimal128):
            decimal128(Decimal(value))


def test_generate_shop_without_a_database_names_itself(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GIGSTERPG_ORDERS_SOURCE_PG", raising=False)
    code, out, err = main(capsys, "generate-shop")
    assert code == 2 and err.startswith("FAILED: no database for the shop, generate-shop writes")
    assert "export-orders" not in err and "--pg URL" in err


def test_batches_written_by_four_threads_give_what_one_writes(empty_pg_url, pg_url, mongo_url, mongo_db,
                                                              monkeypatch):
    """export-orders' batches (ranges of the projection's orders) written at once by four threads, each storing
    its hashes through its own session: the same documents, hashes, rejects and counts as one writer."""
    from gigsterpg.fixtures.generate_shop import write_shop
    from gigsterpg.lib.mongo import orders
    write_shop(empty_pg_url, orders=1500, seed=5)
    settings = Settings(pg_url=pg_url, mongo_url=mongo_url, orders_source_pg=empty_pg_url)
    remembered = orders.remember
    sessions = {}

    def spied(connection, target, ids, hashes):  # which thread stores hashes through which session
        sessions.setdefault(target, set()).add((threading.current_thread().name, id(connection)))
        remembered(connection, target, ids, hashes)
    monkeypatch.setattr(orders, "remember", spied)
    reports = {writers: export_orders(settings, f"w{writers}", batch_size=50, writers=writers) for writers in (1, 4)}
    for report in reports.values():
        assert_report_balances(report)
        assert report.written > 1000 and report.rejected > 0
    assert {key: value for key, value in vars(reports[4]).items() if key not in ("target", "seconds")} == \
        {key: value for key, value in vars(reports[1]).items() if key not in ("target", "seconds")}
    assert list(mongo_db.w4.find().sort("_id")) == list(mongo_db.w1.find().sort("_id"))
    with psycopg.connect(pg_url) as connection:
        stored = [connection.execute("SELECT _id, hash FROM projection_hashes WHERE target = %s ORDER BY _id",
                                     (f"{mongo_db.name}.w{writers}",)).fetchall() for writers in (1, 4)]
        rejects = [connection.execute("SELECT doc_id, reason, detail FROM sync_rejects WHERE collection = %s"
                                      " ORDER BY doc_id", (f"{mongo_db.name}.w{writers}",)).fetchall()
                   for writers in (1, 4)]
    assert stored[0] == stored[1] and len(stored[0]) == reports[1].written
    assert rejects[0] == rejects[1] and rejects[0]
    assert len(sessions[f"{mongo_db.name}.w1"]) == 1
    used = sessions[f"{mongo_db.name}.w4"]
    assert len({thread for thread, _ in used}) > 1 and len(used) == len({session for _, session in used})
    # A second run writes nothing, whatever the number of writers.
    again = export_orders(settings, "w4", batch_size=50, writers=4)
    assert again.written == 0 and again.unchanged == reports[4].written
