"""POST /exports with a projection (export-orders as a job of the API), against the real servers."""
import psycopg
import pytest
from bson.decimal128 import Decimal128
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict

from gigsterpg.api.app import create_app
from tests.helpers import API_AUTH as AUTH, API_TOKEN as TOKEN, execute, wait_until
from tests.test_orders import SCHEMA


@pytest.fixture
def client(api_settings):
    with TestClient(create_app(api_settings, TOKEN, source_timeout_s=3)) as test_client:
        yield test_client


@pytest.fixture
def shop_url(empty_pg_url):
    """A shop: one client, two products, two orders, three items."""
    execute(empty_pg_url, *SCHEMA,
            "INSERT INTO clients VALUES ('c1', 'Zoë', 'x', 1.5, 2.5, 'lunes')",
            "INSERT INTO products VALUES ('p1', 'Pan', 'Bimbo', 1.10), ('p2', 'Leche', 'Lala', 0.50)",
            "INSERT INTO orders VALUES ('o1', 'c1', '2024-03-11 10:00:00+00', 'paid'),"
            " ('o2', 'c1', '2024-03-12 10:00:00+00', 'paid')",
            "INSERT INTO order_items VALUES ('i1', 'o1', 'p1', 3, NULL), ('i2', 'o1', 'p2', 1, NULL),"
            " ('i3', 'o2', 'p2', 2, NULL)")
    return empty_pg_url


def body(url: str, **fields) -> dict:
    parts = conninfo_to_dict(url)
    return {"host": parts.get("host", "localhost"), "port": int(parts.get("port", 5432)),
            "user": parts.get("user", "postgres"), "password": parts.get("password", ""),
            "database": parts["dbname"], **fields}


def finished(client: TestClient, url: str) -> dict:
    def ended():
        job = client.get(url, headers=AUTH).json()
        return job if job["state"] not in ("queued", "running") else None
    return wait_until(ended, f"the job at {url} to end", 120)


def test_a_projection_runs_as_an_export_job_and_restarts_writing_nothing(client, shop_url, mongo_db):
    answer = client.post("/exports", headers=AUTH, json=body(shop_url, projection="orders", tax_rate="0.1"))
    assert answer.status_code == 200, answer.text
    job = finished(client, answer.json()["status_url"])
    assert job["state"] == "succeeded", job
    assert (job["rows_done"], job["rows_total"]) == (2, 2)
    assert job["params"]["projection"] == "orders" and job["params"]["collection"] == "orders"
    assert job["params"]["tax_rate"] == "0.1" and "password" not in job["params"] and "table" not in job["params"]
    assert (job["result"]["written"], job["result"]["tax_rate"]) == (2, "0.1")
    # o1: 3 x 1.10 + 1 x 0.50 = 3.80, taxes 0.38, total 4.18; Monday 2024-03-11, 'lunes'. o2: Tuesday.
    o1 = mongo_db.orders.find_one({"_id": "o1"})
    assert (o1["subtotal"], o1["taxes"], o1["total"], o1["is_promotion_day"], o1["most_popular_brand"]) == (
        Decimal128("3.80"), Decimal128("0.38"), Decimal128("4.18"), True, "Bimbo")
    assert mongo_db.orders.find_one({"_id": "o2"})["is_promotion_day"] is False

    again = client.post(f"/exports/{job['id']}/restart", headers=AUTH, json={"password": ""})
    assert again.status_code == 200, again.text
    rerun = finished(client, again.json()["status_url"])
    assert rerun["state"] == "succeeded" and rerun["restart_of"] == job["id"]
    assert (rerun["result"]["written"], rerun["result"]["unchanged"]) == (0, 2)


@pytest.mark.parametrize("fields, status, error", [
    ({"projection": "orders", "table": "orders"}, 400, "bad_request"),
    ({}, 400, "bad_request"),
    ({"projection": "nope"}, 400, "bad_request"),
    ({"table": "orders", "tax_rate": "0.2"}, 400, "bad_request"),
    ({"projection": "orders", "time_zone": "Mars/Olympus"}, 404, "time_zone_not_found"),
])
def test_requests_that_do_not_fit_are_refused(client, shop_url, fields, status, error):
    answer = client.post("/exports", headers=AUTH, json=body(shop_url, **fields))
    assert (answer.status_code, answer.json()["error"]) == (status, error), answer.text


def test_a_source_without_the_shop_is_refused_naming_what_is_missing(client, empty_pg_url):
    execute(empty_pg_url, "CREATE TABLE orders (uid text)")
    answer = client.post("/exports", headers=AUTH, json=body(empty_pg_url, projection="orders"))
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"] == "table_not_found"
    assert answer.json()["why"].startswith("missing column orders.client_uid, column orders.date_of_order")


def test_a_role_without_select_is_refused(client, shop_url, pg_server_url):
    admin = psycopg.connect(pg_server_url, autocommit=True)
    try:
        admin.execute("DROP ROLE IF EXISTS api_reader")
        admin.execute("CREATE ROLE api_reader LOGIN")
        execute(shop_url, "GRANT SELECT ON orders, clients, order_items TO api_reader")
        answer = client.post("/exports", headers=AUTH, json=body(shop_url, projection="orders", user="api_reader"))
        assert answer.status_code == 403, answer.text
        assert "no SELECT on products.uid" in answer.json()["why"]
    finally:
        execute(shop_url, "DROP OWNED BY api_reader")
        admin.execute("DROP ROLE IF EXISTS api_reader")
        admin.close()


def _source_sessions(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as admin:
        return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gigsterpg-export'"
                             " AND pid <> pg_backend_pid()").fetchone()[0]


@pytest.mark.parametrize("fields", [{"table": "nope"}, {"projection": "orders"}], ids=["table", "projection"])
def test_a_refused_export_closes_its_source_either_kind(client, empty_pg_url, fields):
    """Both export jobs (a table's, a projection's) start through one helper (api/work.start_export_job) that
    closes the source connection when a check made after it opened refuses the request."""
    answer = client.post("/exports", headers=AUTH, json=body(empty_pg_url, **fields))
    assert answer.status_code == 404, answer.text
    assert wait_until(lambda: _source_sessions(empty_pg_url) == 0, "the source connection to close", 10)
