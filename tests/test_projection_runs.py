"""The run records of ``export-orders`` (``projection_runs``): a success, failures with their error, a process
that died, an API job; and ``status`` (tables and JSON) showing them. Against the real servers."""
import json
import os
import subprocess
import sys
import textwrap
from urllib.parse import urlsplit

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from gigsterpg import cli
from gigsterpg.api.app import create_app
from gigsterpg.config import Settings, sqlalchemy_pg_url
from gigsterpg.exc import GigsterPgError, SourceError
from gigsterpg.lib import status as status_report
from gigsterpg.lib.mongo import runs
from gigsterpg.lib.mongo.orders import export_orders
from tests.helpers import API_AUTH, API_TOKEN, execute, mongo_fail_point, wait_until
from tests.test_orders import SCHEMA, a_shop

PASSWORD = "run-record-secret"


def with_password(url: str) -> str:
    """``url`` with a password in it (the embedded server trusts local logins: it is sent and ignored)."""
    parts = urlsplit(url)
    where = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or 'postgres'}:{PASSWORD}@{where}").geturl()


@pytest.fixture
def shop(empty_pg_url, pg_url, mongo_url):
    """The shop of tests/test_orders.py (4 orders) plus one order without a uid; own database with a password."""
    execute(empty_pg_url, *SCHEMA)
    a_shop(empty_pg_url)
    execute(empty_pg_url, "INSERT INTO orders VALUES (NULL, 'c2', '2024-03-15 10:00:00+00', 'paid')")
    return Settings(pg_url=with_password(pg_url), mongo_url=mongo_url, orders_source_pg=empty_pg_url)


def records(pg_url) -> list:
    """Every row of projection_runs as stored (not as status reads it), oldest first."""
    with psycopg.connect(pg_url) as connection:
        cursor = connection.execute("SELECT id, projection, collection, origin, state, counts, error,"
                                    " finished_at IS NOT NULL AS finished FROM projection_runs ORDER BY id")
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def shown(pg_url) -> list:
    """The projection runs as ``status`` reads them."""
    engine = create_engine(sqlalchemy_pg_url(pg_url))
    try:
        with engine.connect() as connection:
            return status_report.collect(connection)["projections"]
    finally:
        engine.dispose()


def test_a_successful_run_records_its_counts_and_a_second_its_unchanged_orders(shop, pg_url, mongo_db):
    export_orders(shop, batch_size=2)
    export_orders(shop)
    first, second = records(pg_url)
    target = f"{mongo_db.name}.orders"
    assert (first["projection"], first["collection"], first["origin"], first["state"], first["error"]) == (
        "orders", target, "cli", "succeeded", None)
    # 5 rows at the source: 4 orders with a uid (documents), 1 without (a reject); the second run finds all 4 as
    # they were, and one reject again.
    counts = {key: first["counts"][key] for key in ("read", "written", "unchanged", "deleted", "rejected")}
    assert counts == {"read": 5, "written": 4, "unchanged": 0, "deleted": 0, "rejected": 1}
    assert first["counts"]["reasons"]["no uid"] == 1 and first["counts"]["tax_rate"] == "0.15"
    assert first["counts"]["time_zone"] == "UTC" and first["finished"]
    assert (second["counts"]["written"], second["counts"]["unchanged"]) == (0, 4)
    runs = shown(pg_url)
    assert [run["id"] for run in runs] == [second["id"], first["id"]]
    assert (runs[1]["state"], runs[1]["read"], runs[1]["written"], runs[1]["rejected"]) == ("succeeded", 5, 4, 1)
    assert runs[1]["seconds"] is not None and runs[1]["seconds"] >= 0


def test_a_source_without_the_shop_fails_and_its_record_says_why_without_the_password(empty_pg_url, pg_url,
                                                                                      mongo_url):
    settings = Settings(pg_url=with_password(pg_url), mongo_url=mongo_url,
                        orders_source_pg=with_password(empty_pg_url))
    with pytest.raises(SourceError) as raised:
        export_orders(settings)
    (record,) = records(pg_url)
    assert record["state"] == "failed" and record["counts"] == {}
    assert record["error"] == str(raised.value) and "orders" in record["error"]
    assert PASSWORD not in record["error"]
    (run,) = shown(pg_url)
    assert (run["state"], run["error"], run["read"]) == ("failed", record["error"], None)


def test_mongodb_failing_midway_is_a_failed_run_and_the_next_one_succeeds(shop, pg_url, mongo_db):
    with mongo_fail_point(mongo_db.client) as arm:  # the second insert command fails as a server shutting down would
        arm({"skip": 1, "times": 1}, failCommands=["insert"], errorCode=91)
        with pytest.raises(GigsterPgError, match="MongoDB") as raised:  # one writer: o1 alone is written first
            export_orders(shop, batch_size=1, writers=1)  # (two may have another batch in flight: test_orders)
    export_orders(shop, batch_size=1, writers=1)
    failed, succeeded = records(pg_url)
    assert (failed["state"], failed["error"]) == ("failed", str(raised.value))
    assert succeeded["state"] == "succeeded" and succeeded["counts"]["written"] == 3  # o1 was written before


def test_while_it_runs_status_shows_it_running(shop, pg_url):
    seen = []
    export_orders(shop, batch_size=2, progress=lambda done: seen.append(shown(pg_url)[0]["state"]))
    assert seen and set(seen) == {"running"}
    assert shown(pg_url)[0]["state"] == "succeeded"


DIES = textwrap.dedent("""
    import os, sys
    from gigsterpg.config import Settings
    from gigsterpg.lib.mongo.orders import export_orders
    own, mongo, source = sys.argv[1:4]
    export_orders(Settings(pg_url=own, mongo_url=mongo, orders_source_pg=source), batch_size=1,
                  progress=lambda done: os._exit(9))
""")


def test_a_run_whose_process_dies_is_shown_interrupted_and_recorded_so_by_the_next(shop, pg_url, mongo_db):
    ended = subprocess.run([sys.executable, "-c", DIES, shop.pg_url, shop.mongo_url, shop.orders_source_pg],
                           capture_output=True, text=True, timeout=120, env={**os.environ})
    assert ended.returncode == 9, ended.stderr
    (record,) = records(pg_url)
    assert record["state"] == "running"  # nothing wrote its end: the process was gone
    (run,) = shown(pg_url)
    assert (run["state"], run["error"]) == ("interrupted", "its process ended before it finished")
    export_orders(shop)
    died, then = records(pg_url)
    assert (died["state"], died["error"]) == ("interrupted", "its process ended before it finished")
    assert then["state"] == "succeeded"


def test_a_projection_job_of_the_api_leaves_its_record(shop, pg_url, api_settings, mongo_db):
    from tests.test_api_orders import body
    with TestClient(create_app(api_settings, API_TOKEN, source_timeout_s=3)) as client:
        answer = client.post("/exports", headers=API_AUTH, json=body(shop.orders_source_pg, projection="orders"))
        assert answer.status_code == 200, answer.text
        job = wait_until(lambda: (lambda j: j if j["state"] not in ("queued", "running") else None)(
            client.get(answer.json()["status_url"], headers=API_AUTH).json()), "the job to end", 120)
    assert job["state"] == "succeeded", job
    (record,) = records(pg_url)
    assert (record["origin"], record["state"], record["counts"]["written"], record["counts"]["rejected"]) == (
        f"api job {job['id']}", "succeeded", 4, 1)


def test_status_shows_the_projections_as_a_table_and_as_json(shop, pg_url, empty_pg_url, capsys, monkeypatch,
                                                             tmp_path):
    monkeypatch.chdir(tmp_path)
    export_orders(shop)
    broken = Settings(pg_url=shop.pg_url, mongo_url=shop.mongo_url, orders_source_pg=shop.orders_source_pg)
    execute(empty_pg_url, "DROP TABLE order_items")
    with pytest.raises(SourceError):
        export_orders(broken)
    good, bad = records(pg_url)
    args = ["status", "--pg-url", shop.pg_url, "--mongo-url", shop.mongo_url]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    section = text[text.index("Projections (export-orders, newest first):"):].splitlines()
    header = section[1]
    assert header.split()[:4] == ["run", "started", "(UTC)", "seconds"]
    good_row = next(line for line in section if line.lstrip().startswith(f"{good['id']} "))
    bad_row = next(line for line in section if line.lstrip().startswith(f"{bad['id']} "))
    assert good_row.split()[-9:] == ["succeeded", "orders", good["collection"], "cli", "5", "4", "0", "0", "1"]
    assert bad_row.split()[-9:] == ["failed", "orders", bad["collection"], "cli", "-", "-", "-", "-", "-"]
    assert header.index("rejected") + len("rejected") == len(good_row), "columns are aligned"
    assert f"  run {good['id']}: " in text and "no uid 1" in text
    assert f"  run {bad['id']}: {bad['error']}" in text and PASSWORD not in text

    assert cli.main(args + ["--format", "json"]) == 0
    projections = json.loads(capsys.readouterr().out)["projections"]
    assert [run["id"] for run in projections] == [bad["id"], good["id"]]
    assert (projections[1]["state"], projections[1]["written"], projections[1]["reasons"]["no uid"]) == (
        "succeeded", 4, 1)
    assert (projections[0]["state"], projections[0]["error"]) == ("failed", bad["error"])
    assert cli.main(args + ["--format", "json", "--runs", "1"]) == 0  # --runs bounds this section too
    assert [run["id"] for run in json.loads(capsys.readouterr().out)["projections"]] == [bad["id"]]


def test_status_before_any_projection_says_so(pg_url, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["status", "--pg-url", pg_url]) == 0
    assert "No projection has run (export-orders runs one)." in capsys.readouterr().out


def test_ctrl_c_records_the_run_as_interrupted(shop, pg_url):
    def interrupt(done):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_orders(shop, batch_size=1, progress=interrupt)
    (record,) = records(pg_url)
    assert (record["state"], record["error"], record["finished"]) == ("interrupted", "KeyboardInterrupt", True)


def test_status_reads_a_bounded_slice_of_a_long_history(pg_url):
    """200,000 runs (half of them left running by dead processes): status reads the newest ten by the primary key,
    and the next run marks the dead ones through the partial index of running runs."""
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute("INSERT INTO projection_runs (projection, collection, origin, state, counts)"
                           " SELECT 'orders', 'db.orders', 'cli', CASE WHEN g % 2 = 0 THEN 'running'"
                           " ELSE 'succeeded' END, jsonb_build_object('read', g) FROM generate_series(1, 200000) g")
        connection.execute("ANALYZE projection_runs")
        engine = create_engine(sqlalchemy_pg_url(pg_url))
        try:
            with engine.connect() as reading:
                plan = "\n".join(row[0] for row in reading.execute(text("EXPLAIN " + runs.RECENT_SQL), {"n": 10}))
                shown_runs = status_report.collect(reading)["projections"]
        finally:
            engine.dispose()
        assert "Limit" in plan and "Index Scan Backward using pk_projection_runs" in plan, plan
        assert [run["id"] for run in shown_runs] == list(range(200000, 199990, -1))
        assert [run["state"] for run in shown_runs[:2]] == ["interrupted", "succeeded"]
        assert shown_runs[1]["read"] == 199999
        plan = "\n".join(row[0] for row in connection.execute(
            "EXPLAIN " + runs.RECONCILE_SQL, ("interrupted", runs.DIED)))
        assert "ix_projection_runs_running" in plan, plan


def test_an_unreachable_source_is_a_failed_run_whose_error_names_it_without_the_password(pg_url, mongo_url):
    source = f"postgresql://reader:{PASSWORD}@127.0.0.1:1/shop"  # nothing listens on port 1
    settings = Settings(pg_url=pg_url, mongo_url=mongo_url, orders_source_pg=source)
    with pytest.raises(GigsterPgError) as raised:
        export_orders(settings)
    (record,) = records(pg_url)
    assert (record["state"], record["error"]) == ("failed", str(raised.value))
    assert "127.0.0.1" in record["error"] and PASSWORD not in record["error"]
