"""Crashes, faults and concurrent runs of export-table, export-orders and the daily snapshots (issue 21).

A kill trial runs the CLI in a subprocess that kills itself (SIGKILL) the n-th time it passes a named point
of ``gigsterpg.faults``, reruns it, and compares the result with an undisturbed run on the same data: the
documents in MongoDB (their BSON, in ``_id`` order), and for export-orders its open rejects, its hashes and
its run records; for the snapshots the data files, the loaded tables, the results and the ledger. A fault
trial breaks one thing mid-run (a PostgreSQL connection terminated, a MongoDB failpoint, a file size limit,
a folder made read-only), expects one ``FAILED:`` line, then the same comparison after a rerun. Figures
(``tests.figures``) are counted only after the assertions that make them true.
"""
import contextlib
import datetime
import hashlib
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import bson
import psycopg
import pymongo
import pytest

from gigsterpg.config import Settings
from gigsterpg.fixtures.generate_shop import write_shop
from gigsterpg.lib.files import snapshot
from gigsterpg.lib.files.ledger import snapshot_status
from gigsterpg.lib.mongo.orders import export_orders
from gigsterpg.fixtures.northwind import generate_northwind
from tests.figures import FIGURES
from tests.helpers import (TEMPLATE, assert_one_line_failure, assert_report_balances, copy_database, drop_database,
                           execute, kill_matrix, mongo_fail_point, run_cli, settled_status, wait_until, with_database)

ORDERS, ORDER_BATCH = 240, 10
ROWS, ROW_BATCH = 300, 25
DAY = datetime.date(2021, 1, 1)
KILLED = -signal.SIGKILL


def digest(values) -> tuple:
    """(how many, a short digest of their reprs): what two states compare by."""
    found = list(values)
    hashed = hashlib.sha256()
    for value in found:
        hashed.update(repr(value).encode())
    return len(found), hashed.hexdigest()[:16]


def documents(collection) -> tuple:
    """The collection's documents as BSON, in ``_id`` order."""
    return digest(bson.encode(doc) for doc in sorted(collection.find(), key=lambda doc: repr(doc["_id"])))


def kill_ids(points):
    return [f"{start}-{point}-{hit}" for start, point, hit in points]


@contextlib.contextmanager
def held_lock(url: str, statement: str):
    """A transaction on ``url`` holding the lock ``statement`` takes, until the block ends."""
    connection = psycopg.connect(url)
    try:
        connection.execute(statement)
        yield connection
    finally:
        connection.close()


def waiting_on_a_lock(server_url: str, database: str, application: str = "") -> int:
    """The pid of a backend of ``database`` (of ``application``, if given) waiting for a lock, or 0."""
    with psycopg.connect(server_url, autocommit=True) as admin:
        row = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
                            " AND (%s = '' OR application_name = %s) LIMIT 1",
                            (database, application, application)).fetchone()
    return row[0] if row else 0


def dbname(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def terminate(server_url: str, pid: int) -> None:
    with psycopg.connect(server_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def start_cli(*args, cwd, env_extra, preexec_fn=None, prefix=(), measured=True):
    """``python -m gigsterpg.cli ARGS`` started in the background, in the clean environment of ``run_cli``.

    ``measured=False``: not under the suite's coverage (a child whose file size is limited cannot write its
    coverage data, and coverage's traceback at exit would be taken for the CLI's).
    """
    unwanted = ("DB_URL_", "GIGSTERPG_") + (() if measured else ("COVERAGE_",))
    env = {key: value for key, value in os.environ.items() if not key.startswith(unwanted)}
    env.update(env_extra)
    return subprocess.Popen([*prefix, sys.executable, "-m", "gigsterpg.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            preexec_fn=preexec_fn)


def finished(process, timeout: float = 300) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


# export-orders ------------------------------------------------------------------------------------------

def move_shop_on(url: str) -> None:
    """Version 2 of the shop: prices changed (their orders' documents too), orders deleted and added."""
    execute(url,
            "UPDATE products SET price = price + 1 WHERE uid IN (SELECT uid FROM products ORDER BY uid LIMIT 3)",
            "UPDATE clients SET name = name || ' II' WHERE uid IN (SELECT uid FROM clients ORDER BY uid LIMIT 2)",
            "DELETE FROM order_items WHERE order_uid IN (SELECT uid FROM orders ORDER BY uid LIMIT 25)",
            "DELETE FROM orders WHERE uid IN (SELECT uid FROM orders ORDER BY uid LIMIT 25)",
            "INSERT INTO orders SELECT 'new-' || n, (SELECT min(uid) FROM clients),"
            " '2024-05-01 10:00+00'::timestamptz + n * interval '1 day', 'paid' FROM generate_series(1, 20) n",
            "INSERT INTO order_items SELECT 'new-item-' || n, 'new-' || n, (SELECT min(uid) FROM products), n, NULL"
            " FROM generate_series(1, 20) n")


@pytest.fixture(scope="module")
def shop(pg_server_url, mongo_server_url, template_url):
    """Two versions of a shop, a MongoDB database, and what undisturbed runs leave from empty and from v1."""
    server = pg_server_url
    v1 = copy_database(server, "template0")
    write_shop(with_database(server, v1), ORDERS, seed=5)
    v2 = copy_database(server, v1)
    move_shop_on(with_database(server, v2))
    name = "relx_" + uuid.uuid4().hex[:10]
    mongo_url = with_database(mongo_server_url, name)
    client = pymongo.MongoClient(mongo_url)
    scenario = {"server": server, "v1": with_database(server, v1), "v2": with_database(server, v2),
                "mongo_url": mongo_url, "db": client[name], "client": client, "expected": {}}
    baseline = copy_database(server, TEMPLATE)
    export_orders(Settings(pg_url=with_database(server, baseline), mongo_url=mongo_url,
                           orders_source_pg=scenario["v1"]), batch_size=ORDER_BATCH)
    scenario["baseline"], scenario["baseline_documents"] = baseline, list(client[name].orders.find())
    for start in ("empty", "baseline"):
        with orders_trial(scenario, start) as own:
            report = export_orders(Settings(pg_url=own, mongo_url=mongo_url, orders_source_pg=scenario["v2"]),
                                   batch_size=ORDER_BATCH)
            assert_report_balances(report)
            scenario["expected"][start] = orders_state(scenario, own)
    assert scenario["expected"]["baseline"] == scenario["expected"]["empty"]  # one truth, whatever came before
    yield scenario
    for database in (v1, v2, baseline):
        drop_database(server, database)
    client.drop_database(name)
    client.close()


@contextlib.contextmanager
def orders_trial(scenario, start: str):
    """gigsterpg's own database and the collection as ``start`` ("empty", or "baseline": v1 exported)."""
    own = copy_database(scenario["server"], TEMPLATE if start == "empty" else scenario["baseline"])
    scenario["db"].orders.drop()
    if start == "baseline":
        scenario["db"].orders.insert_many(scenario["baseline_documents"])
    try:
        yield with_database(scenario["server"], own)
    finally:
        drop_database(scenario["server"], own)


def orders_state(scenario, own_url: str) -> dict:
    target = f"{scenario['db'].name}.orders"
    with psycopg.connect(own_url) as connection:
        rejects = connection.execute("SELECT doc_id, reason, detail, document::text FROM sync_rejects"
                                     " WHERE collection = %s AND resolved_at IS NULL ORDER BY doc_id",
                                     (target,)).fetchall()
        hashes = connection.execute("SELECT _id, hash FROM projection_hashes WHERE target = %s ORDER BY _id",
                                    (target,)).fetchall()
    return {"documents": documents(scenario["db"].orders), "open rejects": digest(rejects), "hashes": digest(hashes)}


def orders_cli(scenario, own_url: str, cwd, kill: str = "", source: str = "v2"):
    env = {"DB_URL_PSQL": own_url, "DB_URL_MONGO": scenario["mongo_url"],
           "GIGSTERPG_ORDERS_SOURCE_PG": scenario[source]}
    if kill:
        env["GIGSTERPG_KILL_AT"] = kill
    return run_cli("export-orders", "--batch-size", str(ORDER_BATCH), cwd=cwd, env_extra=env)


def orders_runs(own_url: str) -> list:
    with psycopg.connect(own_url) as connection:
        return connection.execute("SELECT state, counts FROM projection_runs ORDER BY id").fetchall()


def assert_orders_converged(scenario, own_url: str, start: str) -> None:
    """The state of an undisturbed run, the last run's counts balanced, every order a document or a reject,
    and a further run writes nothing."""
    assert orders_state(scenario, own_url) == scenario["expected"][start]
    counts = [counts for state, counts in orders_runs(own_url) if state == "succeeded"][-1]
    assert_report_balances(counts["read"], {key: counts[key] for key in ("written", "unchanged", "rejected")})
    with psycopg.connect(scenario["v2"]) as source:
        uids = {row[0] for row in source.execute("SELECT uid FROM orders WHERE uid <> ''")}
    with psycopg.connect(own_url) as connection:
        rejected = {row[0].split(" (duplicate ")[0] for row in connection.execute(
            "SELECT doc_id FROM sync_rejects WHERE collection = %s AND resolved_at IS NULL",
            (f"{scenario['db'].name}.orders",))}
    held = {doc["_id"] for doc in scenario["db"].orders.find({}, {"_id": 1})}
    lost, strays = uids - held - rejected, held - uids
    assert lost == set() and strays == set(), (sorted(lost)[:10], sorted(strays)[:10])
    again = export_orders(Settings(pg_url=own_url, mongo_url=scenario["mongo_url"],
                                   orders_source_pg=scenario["v2"]), batch_size=ORDER_BATCH)
    assert (again.written, again.deleted) == (0, 0)
    assert_report_balances(again)
    FIGURES["orders checked"] += len(uids)
    FIGURES["orders lost"] += len(lost)


ORDER_KILLS = kill_matrix(
    [(start, "orders-written", n) for start in ("empty", "baseline") for n in (1, 2, 5, 9, 13, 17, 21)]
    + [(start, "orders-remembered", n) for start in ("empty", "baseline") for n in (1, 3, 8, 14, 20)]
    + [(start, "orders-finished", 1) for start in ("empty", "baseline")]
    + [("baseline", "orders-deleting", n) for n in (1, 2)])


@pytest.mark.parametrize("start, point, hit", ORDER_KILLS, ids=kill_ids(ORDER_KILLS))
def test_export_orders_killed_at_any_point_is_finished_by_the_next_run(shop, tmp_path, start, point, hit):
    with orders_trial(shop, start) as own:
        killed = orders_cli(shop, own, tmp_path, kill=f"{point}:{hit}")
        assert killed.returncode == KILLED, killed.stdout + killed.stderr
        assert [state for state, _ in orders_runs(own)][-1] == "running"  # as the process left it
        again = orders_cli(shop, own, tmp_path)
        assert again.returncode == 0, again.stderr
        assert [state for state, _ in orders_runs(own)][-2:] == ["interrupted", "succeeded"]
        assert_orders_converged(shop, own, start)
    FIGURES["kill points tried"] += 1
    FIGURES["kill points tried: export-orders"] += 1


def test_export_orders_source_connection_killed_mid_read_fails_in_one_line_then_converges(shop, tmp_path):
    """The writer thread is held at its first hashes (a lock on projection_hashes) while the reader has its
    cursor open on the source; the source's session is terminated there."""
    with orders_trial(shop, "empty") as own:
        own_name = dbname(own)
        env = {"DB_URL_PSQL": own, "DB_URL_MONGO": shop["mongo_url"], "GIGSTERPG_ORDERS_SOURCE_PG": shop["v2"]}
        with held_lock(own, "LOCK TABLE projection_hashes IN SHARE ROW EXCLUSIVE MODE"):
            process = start_cli("export-orders", "--batch-size", str(ORDER_BATCH), cwd=tmp_path, env_extra=env)
            wait_until(lambda: waiting_on_a_lock(shop["server"], own_name, "gigsterpg-orders"),
                       "the writer thread to wait for its hashes")
            with psycopg.connect(shop["server"], autocommit=True) as admin:
                victims = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'gigsterpg-export'"
                                        " AND datname = %s", (dbname(shop["v2"]),)).fetchall()
            assert len(victims) == 1
            terminate(shop["server"], victims[0][0])
        result = finished(process)
        assert_one_line_failure(result, "PostgreSQL")
        assert [state for state, _ in orders_runs(own)][-1] == "failed"
        assert orders_cli(shop, own, tmp_path).returncode == 0
        assert_orders_converged(shop, own, "empty")
    FIGURES["faults injected"] += 1
    FIGURES["faults injected: export-orders"] += 1


def test_export_orders_own_connection_killed_while_storing_hashes_fails_in_one_line_then_converges(shop, tmp_path):
    with orders_trial(shop, "baseline") as own:
        own_name = dbname(own)
        env = {"DB_URL_PSQL": own, "DB_URL_MONGO": shop["mongo_url"], "GIGSTERPG_ORDERS_SOURCE_PG": shop["v2"]}
        with held_lock(own, "LOCK TABLE projection_hashes IN SHARE ROW EXCLUSIVE MODE"):
            process = start_cli("export-orders", "--batch-size", str(ORDER_BATCH), cwd=tmp_path, env_extra=env)
            pid = wait_until(lambda: waiting_on_a_lock(shop["server"], own_name, "gigsterpg-orders"),
                             "the writer thread to wait for its hashes")
            terminate(shop["server"], pid)
        result = finished(process)
        assert_one_line_failure(result, "PostgreSQL")
        assert orders_cli(shop, own, tmp_path).returncode == 0
        assert_orders_converged(shop, own, "baseline")
    FIGURES["faults injected"] += 1
    FIGURES["faults injected: export-orders"] += 1


@pytest.fixture
def fail_point(shop):
    """Arm a failCommand on the MongoDB-protocol server (gigsterpg's connections only); disarmed after."""
    with mongo_fail_point(shop["client"]) as arm:
        yield arm


ORDER_WRITE_FAULTS = [("empty", "insert", 0), ("empty", "insert", 6), ("baseline", "update", 1),
                      ("baseline", "delete", 0)]


@pytest.mark.parametrize("start, command, skip", ORDER_WRITE_FAULTS)
def test_export_orders_bulk_write_refused_by_mongodb_fails_in_one_line_then_converges(shop, tmp_path, fail_point,
                                                                                      start, command, skip):
    with orders_trial(shop, start) as own:
        fail_point({"skip": skip, "times": 1}, failCommands=[command], errorCode=91)
        result = orders_cli(shop, own, tmp_path)
        fail_point("off")
        assert_one_line_failure(result, "MongoDB")
        assert [state for state, _ in orders_runs(own)][-1] == "failed"
        assert orders_cli(shop, own, tmp_path).returncode == 0
        assert_orders_converged(shop, own, start)
    FIGURES["faults injected"] += 1
    FIGURES["faults injected: export-orders"] += 1


def test_two_export_orders_at_once_one_waits_its_turn_and_nothing_is_lost(shop, tmp_path):
    with orders_trial(shop, "empty") as own:
        own_name = dbname(own)
        env = {"DB_URL_PSQL": own, "DB_URL_MONGO": shop["mongo_url"], "GIGSTERPG_ORDERS_SOURCE_PG": shop["v2"]}
        with held_lock(own, "LOCK TABLE projection_hashes IN SHARE ROW EXCLUSIVE MODE"):
            first = start_cli("export-orders", "--batch-size", str(ORDER_BATCH), cwd=tmp_path, env_extra=env)
            wait_until(lambda: waiting_on_a_lock(shop["server"], own_name, "gigsterpg-orders"),
                       "the first run to be writing")
            second = orders_cli(shop, own, tmp_path)
        assert_one_line_failure(second, "another run is writing", "wait for it to end")
        assert finished(first).returncode == 0
        assert_orders_converged(shop, own, "empty")
    FIGURES["concurrent runs tried"] += 1


def test_a_projection_that_would_write_is_refused_before_anything_runs(shop, tmp_path):
    hostile = tmp_path / "hostile.sql"
    for text in ("SELECT uid AS _id FROM orders; DROP TABLE orders",
                 "SELECT uid AS _id FROM orders) q; DROP TABLE orders; SELECT * FROM (SELECT 1",
                 "WITH gone AS (DELETE FROM orders RETURNING uid) SELECT uid AS _id FROM gone"):
        hostile.write_text(text, encoding="utf-8")
        with orders_trial(shop, "empty") as own:
            result = run_cli("export-orders", "--projection", str(hostile), cwd=tmp_path,
                             env_extra={"DB_URL_PSQL": own, "DB_URL_MONGO": shop["mongo_url"],
                                        "GIGSTERPG_ORDERS_SOURCE_PG": shop["v2"]})
            assert_one_line_failure(result, "projection 'hostile'")
        with psycopg.connect(shop["v2"]) as source:
            assert source.execute("SELECT count(*) FROM orders").fetchone()[0] > 0
        FIGURES["hostile inputs tried"] += 1
        FIGURES["hostile inputs tried: export-orders"] += 1


# export-table -------------------------------------------------------------------------------------------

ITEMS = ("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(12, 2), tags text[], at timestamptz,"
         " doc jsonb)",
         f"INSERT INTO items SELECT n, 'item ' || n, n * 1.25, ARRAY['t' || (n % 7)],"
         f" '2024-01-01 00:00+00'::timestamptz + n * interval '1 hour', jsonb_build_object('n', n, 'half', n / 2.0)"
         f" FROM generate_series(1, {ROWS}) n")


@pytest.fixture(scope="module")
def table(pg_server_url, mongo_server_url):
    server = pg_server_url
    v1 = copy_database(server, "template0")
    execute(with_database(server, v1), *ITEMS)
    v2 = copy_database(server, v1)
    execute(with_database(server, v2), "UPDATE items SET name = name || ' v2', price = price + 1 WHERE id % 10 = 3",
            "DELETE FROM items WHERE id % 15 = 4", f"INSERT INTO items (id, name) SELECT n, 'new ' || n"
            f" FROM generate_series({ROWS + 1}, {ROWS + 15}) n")
    name = "relt_" + uuid.uuid4().hex[:10]
    mongo_url = with_database(mongo_server_url, name)
    client = pymongo.MongoClient(mongo_url)
    scenario = {"server": server, "v1": with_database(server, v1), "v2": with_database(server, v2),
                "mongo_url": mongo_url, "db": client[name], "client": client}
    assert table_cli(scenario, "v1", "/").returncode == 0
    scenario["baseline_documents"] = list(client[name].items.find())
    client[name].items.drop()
    assert table_cli(scenario, "v2", "/").returncode == 0
    scenario["expected"] = documents(client[name].items)
    yield scenario
    for database in (v1, v2):
        drop_database(server, database)
    client.drop_database(name)
    client.close()


def table_cli(scenario, source: str, cwd, kill: str = ""):
    env = {"DB_URL_PSQL": scenario[source], "DB_URL_MONGO": scenario["mongo_url"]}
    if kill:
        env["GIGSTERPG_KILL_AT"] = kill
    return run_cli("export-table", "--table", "items", "--batch-size", str(ROW_BATCH), cwd=cwd, env_extra=env)


def table_start(scenario, start: str) -> None:
    scenario["db"].items.drop()
    if start == "baseline":
        scenario["db"].items.insert_many(scenario["baseline_documents"])


def assert_table_converged(scenario) -> None:
    assert documents(scenario["db"].items) == scenario["expected"]
    with psycopg.connect(scenario["v2"]) as source:
        ids = {row[0] for row in source.execute("SELECT id FROM items")}
    held = {doc["_id"] for doc in scenario["db"].items.find({}, {"_id": 1})}
    assert ids == held, (sorted(ids - held)[:10], sorted(held - ids)[:10])
    FIGURES["rows checked"] += len(ids)
    FIGURES["rows lost"] += len(ids - held)


TABLE_KILLS = kill_matrix(
    [(start, "export-written", n) for start in ("empty", "baseline") for n in (1, 3, 6, 10, 12)]
    + [("baseline", "export-deleting", n) for n in (1, 2, 4)])


@pytest.mark.parametrize("start, point, hit", TABLE_KILLS, ids=kill_ids(TABLE_KILLS))
def test_export_table_killed_at_any_point_is_finished_by_the_next_run(table, tmp_path, start, point, hit):
    table_start(table, start)
    killed = table_cli(table, "v2", tmp_path, kill=f"{point}:{hit}")
    assert killed.returncode == KILLED, killed.stdout + killed.stderr
    again = table_cli(table, "v2", tmp_path)
    assert again.returncode == 0, again.stderr
    assert_table_converged(table)
    FIGURES["kill points tried"] += 1
    FIGURES["kill points tried: export-table"] += 1


TABLE_WRITE_FAULTS = [("empty", "insert", 2), ("baseline", "update", 4), ("baseline", "delete", 0)]


@pytest.mark.parametrize("start, command, skip", TABLE_WRITE_FAULTS)
def test_export_table_bulk_write_refused_by_mongodb_fails_in_one_line_then_converges(table, tmp_path, start,
                                                                                     command, skip):
    table_start(table, start)
    with mongo_fail_point(table["client"]) as arm:
        arm({"skip": skip, "times": 1}, failCommands=[command], errorCode=91)
        result = table_cli(table, "v2", tmp_path)
    assert_one_line_failure(result, "MongoDB")
    assert table_cli(table, "v2", tmp_path).returncode == 0
    assert_table_converged(table)
    FIGURES["faults injected"] += 1
    FIGURES["faults injected: export-table"] += 1


def test_export_table_connection_killed_while_it_reads_fails_in_one_line_then_converges(table, tmp_path):
    table_start(table, "baseline")
    v2 = dbname(table["v2"])
    with held_lock(table["v2"], "LOCK TABLE items IN ACCESS EXCLUSIVE MODE"):
        process = start_cli("export-table", "--table", "items", "--batch-size", str(ROW_BATCH), cwd=tmp_path,
                            env_extra={"DB_URL_PSQL": table["v2"], "DB_URL_MONGO": table["mongo_url"]})
        pid = wait_until(lambda: waiting_on_a_lock(table["server"], v2, "gigsterpg-export"),
                         "the export to wait for the table")
        terminate(table["server"], pid)
    assert_one_line_failure(finished(process), "PostgreSQL")
    assert table_cli(table, "v2", tmp_path).returncode == 0
    assert_table_converged(table)
    FIGURES["faults injected"] += 1
    FIGURES["faults injected: export-table"] += 1


def test_two_export_tables_at_once_leave_the_table_as_it_is(table, tmp_path):
    table_start(table, "baseline")
    env = {"DB_URL_PSQL": table["v2"], "DB_URL_MONGO": table["mongo_url"]}
    runs = [start_cli("export-table", "--table", "items", "--batch-size", str(ROW_BATCH), cwd=tmp_path,
                      env_extra=env) for _ in range(2)]
    results = [finished(run) for run in runs]
    assert [result.returncode for result in results] == [0, 0], [result.stderr for result in results]
    assert_table_converged(table)
    FIGURES["concurrent runs tried"] += 1


# The daily snapshots ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def days(pg_server_url, template_url, tmp_path_factory):
    """A Northwind-like source and its CSV, and what an undisturbed run of the day leaves."""
    server = pg_server_url
    folder = tmp_path_factory.mktemp("snapshots")
    source = copy_database(server, "template0")
    csv_path = folder / "order_details.csv"
    generate_northwind(with_database(server, source), csv_path, orders=120, seed=3)
    scenario = {"server": server, "source": with_database(server, source), "csv": csv_path, "folder": folder}
    with snapshot_trial(scenario, "calm") as (target, root):
        assert snapshot.run_days(pipeline_of(scenario, target, root), [DAY]).ok
        scenario["expected"] = snapshot_state(target, root)
    yield scenario
    drop_database(server, source)


def pipeline_of(scenario, target: str, root: Path) -> snapshot.Pipeline:
    return snapshot.Pipeline(target, root, scenario["source"], scenario["csv"])


@contextlib.contextmanager
def snapshot_trial(scenario, label: str):
    name = copy_database(scenario["server"], TEMPLATE)
    root = scenario["folder"] / f"{label}-{uuid.uuid4().hex[:6]}" / "data"
    try:
        yield with_database(scenario["server"], name), root
    finally:
        drop_database(scenario["server"], name)
        shutil.rmtree(root.parent, ignore_errors=True)


def snapshot_state(target: str, root: Path) -> dict:
    """The data files, the manifests but for their times, the loaded tables and the ledger of the day."""
    files, manifests = [], []
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        assert not any(part.startswith(".") for part in path.relative_to(root).parts), relative  # no leftovers
        if path.name == "manifest.json":
            manifest = json.loads(path.read_text(encoding="utf-8"))
            manifests.append((relative, sorted((key, repr(value)) for key, value in manifest.items()
                                               if key not in ("started_at", "finished_at", "source_url",
                                                              "source_path"))))
        elif path.is_file():
            files.append((relative, hashlib.sha256(path.read_bytes()).hexdigest()))
    with psycopg.connect(target) as connection:
        tables = connection.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'p' AND n.nspname LIKE 'snap\\_%' ORDER BY 1").fetchall()
        loaded = {name: digest(row[0] for row in connection.execute(
            f"SELECT t::text FROM {name} t ORDER BY t::text COLLATE \"C\"")) for (name,) in tables}
        ledger = connection.execute(
            "SELECT step, source, table_name, state, rows, bytes, checksum, bad_lines,"
            " replace(path, %s, '<root>') FROM snapshot_ledger WHERE day = %s ORDER BY 1, 2, 3",
            (str(root), DAY)).fetchall()
    return {"files": files, "manifests": manifests, "tables": loaded, "ledger": ledger}


def assert_snapshots_converged(scenario, target: str, root: Path) -> None:
    found = snapshot_state(target, root)
    assert found == scenario["expected"]
    assert {row[3] for row in found["ledger"]} == {"succeeded"}
    FIGURES["snapshot files checked"] += len(found["files"])
    FIGURES["snapshot rows checked"] += sum(count for count, _ in found["tables"].values())


def step_args(scenario, step: str, target: str, root: Path):
    return ["pipeline", step, "--day", DAY.isoformat(), "--pg-url", target, "--source-pg", scenario["source"],
            "--csv", str(scenario["csv"]), "--root", str(root)]


def steps_before(scenario, step: str, target: str, root: Path) -> None:
    """The steps ``step`` needs, run undisturbed in this process."""
    line = pipeline_of(scenario, target, root)
    for earlier, verb in snapshot.STEPS.items():
        if earlier == step or step == "run":
            return
        verb(line, DAY)


SNAPSHOT_KILLS = kill_matrix(
    [("extract-postgres", "snapshot-data", n) for n in (1, 4, 8, 13)]
    + [("extract-postgres", "snapshot-manifest", n) for n in (2, 9)]
    + [("extract-postgres", "snapshot-published", n) for n in (1, 6, 13)]
    + [("extract-csv", point, 1) for point in ("snapshot-data", "snapshot-manifest", "snapshot-published")]
    + [("load", "snapshot-loaded", 1)]
    + [("query", point, 1) for point in ("snapshot-data", "snapshot-manifest", "snapshot-published")]
    + [("run", "snapshot-published", n) for n in (3, 13, 14, 15)] + [("run", "snapshot-loaded", 1)])


@pytest.mark.parametrize("step, point, hit", SNAPSHOT_KILLS, ids=kill_ids(SNAPSHOT_KILLS))
def test_a_snapshot_step_killed_at_any_point_is_finished_by_its_rerun_hint(days, tmp_path, step, point, hit):
    with snapshot_trial(days, "kill") as (target, root):
        steps_before(days, step, target, root)
        killed = run_cli(*step_args(days, step, target, root), cwd=tmp_path,
                         env_extra={"GIGSTERPG_KILL_AT": f"{point}:{hit}"})
        assert killed.returncode == KILLED, killed.stdout + killed.stderr
        status = settled_status(target, DAY)
        dead = [row for row in status.values() if row.state not in ("succeeded",)]
        assert [row.state for row in dead] == ["interrupted"], status  # one step died: it says so
        hint = dead[0].rerun
        assert f"--root {shlex.quote(str(root))}" in hint and "--pg-url" not in hint
        # The hint itself finishes the step (the target from the environment); then the rest of the day.
        again = run_cli(*shlex.split(hint)[3:], cwd=tmp_path, env_extra={"DB_URL_PSQL": target})
        assert again.returncode == 0, again.stderr
        assert run_cli(*step_args(days, "run", target, root), cwd=tmp_path).returncode == 0  # the rest of the day
        assert_snapshots_converged(days, target, root)
    FIGURES["kill points tried"] += 1
    FIGURES["kill points tried: daily snapshots"] += 1


def test_the_source_connection_killed_mid_copy_fails_in_one_line_and_the_rerun_converges(days, tmp_path):
    source = dbname(days["source"])
    with snapshot_trial(days, "copy") as (target, root):
        with held_lock(days["source"], "LOCK TABLE shippers IN ACCESS EXCLUSIVE MODE"):
            process = start_cli(*step_args(days, "extract-postgres", target, root), cwd=tmp_path, env_extra={})
            pid = wait_until(lambda: waiting_on_a_lock(days["server"], source), "the extract to reach shippers")
            terminate(days["server"], pid)
        result = finished(process)
        assert_one_line_failure(result, "extract-postgres for 2021-01-01 failed", "--root")
        assert not list(root.glob("postgres/shippers/2021-01-01")) and not list(root.rglob(".*"))
        assert run_cli(*step_args(days, "run", target, root), cwd=tmp_path).returncode == 0
        assert_snapshots_converged(days, target, root)
    FIGURES["faults injected"] += 1
    FIGURES["faults injected: daily snapshots"] += 1


def test_the_target_connection_killed_mid_load_leaves_the_day_and_the_rerun_converges(days, tmp_path):
    with snapshot_trial(days, "load") as (target, root):
        assert snapshot.run_days(pipeline_of(days, target, root), [DAY]).ok
        name = dbname(target)
        with psycopg.connect(target) as connection:
            before = connection.execute("SELECT count(*) FROM snap_public.orders").fetchone()
        with held_lock(target, "LOCK TABLE snap_public.shippers IN ACCESS EXCLUSIVE MODE"):
            process = start_cli(*step_args(days, "load", target, root), cwd=tmp_path, env_extra={})
            pid = wait_until(lambda: waiting_on_a_lock(days["server"], name), "the load to attach its partition")
            terminate(days["server"], pid)
        assert_one_line_failure(finished(process), "load for 2021-01-01 failed")
        with psycopg.connect(target) as connection:
            assert connection.execute("SELECT count(*) FROM snap_public.orders").fetchone() == before
        assert run_cli(*step_args(days, "run", target, root), "--force", cwd=tmp_path).returncode == 0
        assert_snapshots_converged(days, target, root)
    FIGURES["faults injected"] += 1
    FIGURES["faults injected: daily snapshots"] += 1


def _file_limit(size: int):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


@pytest.mark.parametrize("step, size", [("extract-postgres", 2000), ("extract-postgres", 20000),
                                        ("extract-csv", 4000), ("query", 3000)])
def test_a_file_too_large_while_writing_a_partition_fails_in_one_line_and_leaves_none(days, tmp_path, step, size):
    with snapshot_trial(days, "full") as (target, root):
        steps_before(days, step, target, root)
        process = start_cli(*step_args(days, step, target, root), cwd=tmp_path, env_extra={},
                            preexec_fn=_file_limit(size), measured=False)
        result = finished(process)
        assert_one_line_failure(result, f"{step} for 2021-01-01 failed", "File too large")
        assert not list(root.rglob(".*"))  # no temporary folder left
        status = {row.step: row for row in snapshot_status(target) if row.day == DAY}
        assert status[step].state == "failed" and "--root" in status[step].rerun
        assert run_cli(*step_args(days, "run", target, root), cwd=tmp_path).returncode == 0
        assert_snapshots_converged(days, target, root)
    FIGURES["faults injected"] += 1
    FIGURES["faults injected: daily snapshots"] += 1


def test_a_folder_made_read_only_mid_extract_fails_in_one_line_and_the_rerun_converges(days, tmp_path):
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to run the CLI without root's right to write anywhere")
    source = dbname(days["source"])
    without_override = (setpriv, "--bounding-set=-dac_override", "--inh-caps=-all")  # root, bound by modes
    with snapshot_trial(days, "readonly") as (target, root):
        (root / "postgres").mkdir(parents=True)
        with held_lock(days["source"], "LOCK TABLE shippers IN ACCESS EXCLUSIVE MODE"):
            # One session: the tables one after the other (more sessions would write the others meanwhile).
            process = start_cli(*step_args(days, "extract-postgres", target, root), "--workers", "1", cwd=tmp_path,
                                env_extra={}, prefix=without_override)
            wait_until(lambda: waiting_on_a_lock(days["server"], source), "the extract to reach shippers")
            (root / "postgres").chmod(0o555)  # the tables after shippers have no folder yet
        try:
            result = finished(process)
        finally:
            (root / "postgres").chmod(0o755)
        assert_one_line_failure(result, "extract-postgres for 2021-01-01 failed", "Permission denied")
        assert (root / "postgres/shippers/2021-01-01/manifest.json").is_file()  # done before: whole
        assert not list(root.rglob(".*"))
        assert run_cli(*step_args(days, "run", target, root), cwd=tmp_path).returncode == 0
        assert_snapshots_converged(days, target, root)
    FIGURES["faults injected"] += 1
    FIGURES["faults injected: daily snapshots"] += 1


def test_the_same_step_twice_at_once_refuses_the_second_in_one_line(days, tmp_path):
    source = dbname(days["source"])
    with snapshot_trial(days, "twice") as (target, root):
        with held_lock(days["source"], "LOCK TABLE shippers IN ACCESS EXCLUSIVE MODE"):
            first = start_cli(*step_args(days, "extract-postgres", target, root), cwd=tmp_path, env_extra={})
            wait_until(lambda: waiting_on_a_lock(days["server"], source), "the first extract to be running")
            second = run_cli(*step_args(days, "extract-postgres", target, root), cwd=tmp_path)
        assert_one_line_failure(second, "extract-postgres for 2021-01-01 is already running")
        assert finished(first).returncode == 0
        assert run_cli(*step_args(days, "run", target, root), cwd=tmp_path).returncode == 0
        assert_snapshots_converged(days, target, root)
    FIGURES["concurrent runs tried"] += 1


def test_readers_beside_a_load_see_the_day_as_it_was_or_as_it_is(days, tmp_path):
    with snapshot_trial(days, "readers") as (target, root):
        line = pipeline_of(days, target, root)
        assert snapshot.run_days(line, [DAY]).ok
        query = "SELECT count(*), sum(freight::numeric) FROM snap_public.orders WHERE snapshot_day = %s"
        with psycopg.connect(target) as connection:
            old = connection.execute(query, (DAY,)).fetchone()
        execute(days["source"], "UPDATE orders SET freight = freight + 1")
        try:
            snapshot.extract_postgres(line, DAY, force=True)
            seen, errors, done = [], [], threading.Event()

            def read():
                with psycopg.connect(target, autocommit=True) as connection:
                    while not done.is_set():
                        try:
                            seen.append(connection.execute(query, (DAY,)).fetchone())
                        except psycopg.Error as err:  # pragma: no cover - the failure this test looks for
                            errors.append(err)
            readers = [threading.Thread(target=read) for _ in range(2)]
            for reader in readers:
                reader.start()
            try:
                for _ in range(2):
                    assert run_cli(*step_args(days, "load", target, root), cwd=tmp_path).returncode == 0
            finally:
                done.set()
                for reader in readers:
                    reader.join()
            with psycopg.connect(target) as connection:
                new = connection.execute(query, (DAY,)).fetchone()
            assert new != old and new[0] == old[0]
            assert errors == [] and seen and set(seen) <= {old, new}, (errors[:3], set(seen) - {old, new})
        finally:
            execute(days["source"], "UPDATE orders SET freight = freight - 1")
    FIGURES["concurrent runs tried"] += 1
    FIGURES["concurrent reads checked"] += len(seen)


HOSTILE_MANIFESTS = [
    {"type": "int); DROP TABLE snapshot_ledger; --"},
    {"type": "text DEFAULT (pg_sleep(30))"},
    {"name": "a\"; DROP TABLE snapshot_ledger; --"},
]


@pytest.mark.parametrize("change", HOSTILE_MANIFESTS, ids=["type-injection", "type-default", "name-quote"])
def test_a_hostile_manifest_changes_nothing_and_fails_in_one_line(days, tmp_path, change):
    with snapshot_trial(days, "hostile") as (target, root):
        assert snapshot.run_days(pipeline_of(days, target, root), [DAY]).ok
        path = root / "postgres/shippers/2021-01-01/manifest.json"
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["columns"][1] = {**manifest["columns"][1], **change}
        path.write_text(json.dumps(manifest), encoding="utf-8")
        result = run_cli(*step_args(days, "load", target, root), cwd=tmp_path, timeout=25)
        assert_one_line_failure(result, "load for 2021-01-01 failed")
        with psycopg.connect(target) as connection:
            assert connection.execute("SELECT to_regclass('snapshot_ledger') IS NOT NULL").fetchone()[0]
            assert connection.execute("SELECT count(*) FROM snap_public.shippers").fetchone()[0] > 0
    FIGURES["hostile inputs tried"] += 1
    FIGURES["hostile inputs tried: daily snapshots"] += 1
