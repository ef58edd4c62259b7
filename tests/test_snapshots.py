"""Daily snapshots (pipeline): round trips, idempotence, refusals, kills, bad lines, backfills, the final query.

Against real servers: the source is a fresh empty database, the target a fresh migrated one.
"""
import csv
import datetime
import hashlib
import json
import os
import shlex
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine

from gigsterpg.cli import main
from gigsterpg.config import sqlalchemy_pg_url
from gigsterpg.lib.files import snapshot
from gigsterpg.lib.files.extract import matches
from gigsterpg.lib.files.ledger import snapshot_status, without_password
from gigsterpg.fixtures.northwind import generate_northwind
from gigsterpg.pipelines.snapshots.cli import status_dicts
from tests.figures import FIGURES
from tests.helpers import settled_status

D1, D2 = datetime.date(2021, 1, 1), datetime.date(2021, 1, 2)

ALL_TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE every_type (
  id bigint PRIMARY KEY, s smallint, i integer, n numeric, n2 numeric(12, 4), r real, d double precision,
  b boolean, day date, t time, tz time with time zone, ts timestamp, tstz timestamp with time zone,
  iv interval, bin bytea, txt text, vc varchar(20), ch char(3), arr integer[], tarr text[], j json, jb jsonb,
  u uuid, m mood);
INSERT INTO every_type VALUES
 (1, -32768, -2147483648, 12345678901234567890.123456789012345678901234567890, 1.2345, 3.4028235e38,
  1.7976931348623157e308, true, '0001-01-01', '00:00:00', '23:59:59.999999+14', '1970-01-01 00:00:00',
  '2021-03-04 05:06:07.123456+02', '1 year 2 mons 3 days 04:05:06.789', '\\x00ff0a0d2c22',
  E'a,b;c\\td "quoted" \\n newline \\r\\n crlf \\\\ back é ü 漢字 🙂', 'x', 'ab', '{1,NULL,3}',
  '{"a,b","c\\"d",NULL,""}', '{"k": [1, 2.50, "x"]}', '{"b": 1, "a": {"c": null}}',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy'),
 (2, 32767, 2147483647, 'NaN', -0.0001, 'NaN', '-Infinity', false, '9999-12-31', '24:00:00', '00:00:00-12',
  'infinity', '-infinity', '-10000 years 3 mons', '', '', '', '', '{}', '{}', '[]', '[]',
  '00000000-0000-0000-0000-000000000000', NULL),
 (3, NULL, NULL, NULL, NULL, 1.5e-45, 5e-324, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, 'null', 'null', NULL, 'sad'),
 (4, 0, 0, 0.000000000000000000001, 0, '-0', 0.1, true, '2000-02-29', '12:00', '12:00+05:30',
  '2000-02-29 12:00', '2000-02-29 12:00 UTC', '0', '\\x', ' ', ' ', ' ', '{{1,2},{3,4}}', '{" "}', '"s"', '"s"',
  NULL, 'ok');
CREATE TABLE no_key (a int, b text);
INSERT INTO no_key VALUES (2, 'b'), (1, 'a'), (2, 'b'), (NULL, NULL);
CREATE SCHEMA other;
CREATE TABLE other.orders (order_id int PRIMARY KEY, note text);
INSERT INTO other.orders VALUES (1, 'not the public orders');
"""


@pytest.fixture
def source_url(empty_pg_url):
    return empty_pg_url


def pipeline(target, source, tmp_path, csv_path=None, root="data", tables=None):
    return snapshot.Pipeline(target, tmp_path / root, source, csv_path or tmp_path / "order_details.csv", tables)


@pytest.fixture
def northwind(source_url, tmp_path):
    """A small Northwind-like source and its details CSV."""
    csv_path = tmp_path / "order_details.csv"
    generate_northwind(source_url, csv_path, orders=120, seed=3)
    return source_url, csv_path


def digest_files(root: Path, pattern: str = "*.pgcopy") -> dict:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob(pattern))}


def table_text(url: str, query: str) -> list:
    with psycopg.connect(url) as connection:
        return [row[0] for row in connection.execute(query).fetchall()]


def target_state(url: str) -> dict:
    """Every snapshot table of the target: its rows as text, per day, in a stable order."""
    with psycopg.connect(url) as connection:
        tables = connection.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'p' AND n.nspname LIKE 'snap\\_%' ORDER BY 1").fetchall()
        return {name: [row[0] for row in connection.execute(
            f"SELECT t::text FROM {name} t ORDER BY t::text COLLATE \"C\"").fetchall()] for (name,) in tables}


def test_every_type_survives_the_round_trip_value_by_value(pg_url, source_url, tmp_path):
    with psycopg.connect(source_url, autocommit=True) as connection:
        connection.execute(ALL_TYPES)
    csv_path = tmp_path / "details.csv"
    csv_path.write_text("order_id,product_id,unit_price,quantity,discount\n1,2,3.50,4,0\n", encoding="utf-8")
    line = pipeline(pg_url, source_url, tmp_path, csv_path)
    snapshot.extract_postgres(line, D1)
    snapshot.extract_csv(line, D1)
    snapshot.load_day(line, D1)
    columns = table_text(source_url, "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute"
                                     " WHERE attrelid = 'every_type'::regclass AND attnum > 0")[0]
    with psycopg.connect(source_url) as source, psycopg.connect(pg_url) as target:
        for statement in ("SET TimeZone = 'UTC'", "SET extra_float_digits = 3"):
            source.execute(statement)
            target.execute(statement)
        # Python has no infinite timestamp: row 2 is compared as text below.
        wanted = source.execute(f"SELECT {columns} FROM every_type WHERE id <> 2 ORDER BY id").fetchall()
        got = target.execute(f"SELECT {columns} FROM snap_public.every_type WHERE snapshot_day = %s AND id <> 2"
                             " ORDER BY id", (D1,)).fetchall()
        assert len(got) == len(wanted) == 3
        for want_row, got_row in zip(wanted, got):
            for name, want, have in zip(columns.split(", "), want_row, got_row):
                if isinstance(want, float) and want != want:
                    assert have != have, name  # NaN
                else:
                    assert (name, type(have), have) == (name, type(want), want)
        # The text of every value too: float bits, -0, numeric scale, interval, time zones.
        text_of = f"SELECT ({columns})::text FROM {{}} ORDER BY id"
        assert [r[0] for r in target.execute(text_of.format("snap_public.every_type")).fetchall()] == \
            [r[0] for r in source.execute(text_of.format("every_type")).fetchall()]
        # NULL apart from empty text, the enum as its label, the key-less table whole (duplicates kept).
        assert target.execute("SELECT txt IS NULL, txt = '' FROM snap_public.every_type ORDER BY id").fetchall() == \
            [(False, False), (False, True), (True, None), (False, False)]
        assert target.execute("SELECT m FROM snap_public.every_type ORDER BY id").fetchall() == \
            [("happy",), (None,), ("sad",), ("ok",)]
        assert sorted(target.execute("SELECT a, b FROM snap_public.no_key").fetchall(), key=repr) == \
            sorted([(2, "b"), (1, "a"), (2, "b"), (None, None)], key=repr)
        assert target.execute("SELECT note FROM snap_other.orders").fetchall() == [("not the public orders",)]
    manifest = json.loads((tmp_path / "data/postgres/every_type/2021-01-01/manifest.json").read_text())
    assert {c["name"]: c["source_type"] for c in manifest["columns"]}["m"] == "mood"
    assert {c["name"]: c["type"] for c in manifest["columns"]}["m"] == "text"
    assert manifest["rows"] == 4 and manifest["primary_key"] == ["id"] and manifest["day"] == "2021-01-01"
    assert (tmp_path / "data/postgres/other.orders/2021-01-01/data.pgcopy").is_file()


def test_a_second_run_gives_the_same_files_and_the_same_tables(pg_url, northwind, tmp_path):
    source, csv_path = northwind
    line = pipeline(pg_url, source, tmp_path, csv_path)
    first = snapshot.run_days(line, [D1])
    assert first.ok and [s.state for s in first.steps] == ["succeeded"] * 4
    files, loaded = digest_files(tmp_path / "data"), target_state(pg_url)
    result = (tmp_path / "data/results/2021-01-01/orders_with_details.json").read_bytes()
    again = snapshot.run_days(line, [D1])
    assert [s.state for s in again.steps] == ["skipped", "skipped", "succeeded", "succeeded"]
    forced = snapshot.run_days(line, [D1], force=True)
    assert [s.state for s in forced.steps] == ["succeeded"] * 4
    assert digest_files(tmp_path / "data") == files and len(files) == 13
    assert target_state(pg_url) == loaded
    assert len(loaded["snap_public.orders"]) == 120  # replaced, not appended
    assert (tmp_path / "data/results/2021-01-01/orders_with_details.json").read_bytes() == result


def test_one_session_or_four_give_the_same_files_tables_and_ledger(pg_url, northwind, tmp_path, pg_server_url):
    """extract-postgres and load in parallel sessions (``workers``): what they write is what one session writes."""
    from tests.helpers import TEMPLATE, copy_database, drop_database, with_database
    source, csv_path = northwind
    second = copy_database(pg_server_url, TEMPLATE)
    try:
        results = []
        for target, workers in ((pg_url, 1), (with_database(pg_server_url, second), 4)):
            line = snapshot.Pipeline(target, tmp_path / f"data{workers}", source, csv_path, workers=workers)
            assert snapshot.run_days(line, [D1]).ok
            assert snapshot.run_days(line, [D1], force=True).ok  # again, over the day's partitions
            with psycopg.connect(target) as connection:
                ledger = connection.execute(
                    "SELECT step, source, table_name, state, rows, bytes, checksum, bad_lines,"
                    " replace(path, %s, '<root>') FROM snapshot_ledger ORDER BY 1, 2, 3",
                    (str(tmp_path / f"data{workers}"),)).fetchall()
                leftovers = connection.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n"
                                               " ON n.oid = c.relnamespace WHERE n.nspname LIKE 'snap\\_%'"
                                               " AND c.relname LIKE '%\\_n'").fetchone()[0]
            assert leftovers == 0, "every new table is attached"
            files = {pattern: digest_files(tmp_path / f"data{workers}", pattern)
                     for pattern in ("*.pgcopy", "*.csv", "*.jsonl", "*.json")}  # manifests hold their times
            files["*.json"] = {name: value for name, value in files["*.json"].items() if "results" in name}
            results.append((files, target_state(target), ledger))
        assert len(results[0][0]["*.pgcopy"]) == 13 and results[0][0]["*.json"] and len(results[0][1]) == 14
        assert results[1] == results[0]
    finally:
        drop_database(pg_server_url, second)


def test_tables_extracted_by_parallel_sessions_are_of_one_moment_of_the_source(pg_url, source_url, tmp_path,
                                                                               monkeypatch):
    """Rows committed after the extract began, before its other sessions even connect, are not in the files:
    every session reads the snapshot the extract began with (as one session does)."""
    import threading
    names = ("aaa", "bbb", "ccc", "ddd")
    with psycopg.connect(source_url, autocommit=True) as connection:
        for name in names:
            connection.execute(f"CREATE TABLE {name} (id int PRIMARY KEY)")
            connection.execute(f"INSERT INTO {name} SELECT generate_series(1, 10)")
    connect, sessions = psycopg.connect, []
    waiting, written = threading.Event(), threading.Event()

    def held(url, *args, **kwargs):  # the sessions beyond the extract's first to the source wait for the writes
        if url == source_url:
            sessions.append(url)
            if len(sessions) > 1:
                waiting.set()
                written.wait(60)
        return connect(url, *args, **kwargs)
    monkeypatch.setattr(psycopg, "connect", held)
    outcome = {}
    line = snapshot.Pipeline(pg_url, tmp_path / "data", source_url, workers=2)
    extracting = threading.Thread(target=lambda: outcome.update(report=snapshot.extract_postgres(line, D1)))
    extracting.start()
    try:
        assert waiting.wait(60), "the extract's sessions did not start"
        with connect(source_url, autocommit=True) as writer:
            for name in names:
                writer.execute(f"INSERT INTO {name} VALUES (11)")
    finally:
        written.set()
        extracting.join(timeout=60)
    assert outcome["report"].state == "succeeded" and outcome["report"].tables == 4
    assert len(sessions) == 3  # the extract's own, and one per worker
    rows = {name: json.loads((tmp_path / f"data/postgres/{name}/2021-01-01/manifest.json").read_text())["rows"]
            for name in names}
    assert rows == dict.fromkeys(names, 10)


def test_load_before_the_extracts_is_refused_naming_the_step_to_run(pg_url, northwind, tmp_path, capsys):
    source, csv_path = northwind
    args = ["pipeline", "load", "--day", "2021-01-01", "--pg-url", pg_url, "--root", str(tmp_path / "data")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("FAILED: load for 2021-01-01 refused, extract-postgres for 2021-01-01 has not succeeded"
                   f" (never run), run it first: python -m gigsterpg.cli pipeline extract-postgres --day 2021-01-01"
                   f" --root {tmp_path / 'data'}")
    line = pipeline(pg_url, source, tmp_path, csv_path)
    snapshot.extract_postgres(line, D1)
    with pytest.raises(snapshot.StepRefused, match="extract-csv for 2021-01-01 has not succeeded"):
        snapshot.load_day(line, D1)
    with pytest.raises(snapshot.StepRefused, match="run it first: .* pipeline load --day 2021-01-01"):
        snapshot.query_day(line, D1)
    rows = {row.step: row for row in snapshot_status(pg_url)}
    assert rows["load"].state == "failed" and rows["load"].rerun.endswith(
        f"pipeline extract-csv --day 2021-01-01 --root {tmp_path / 'data'} --csv {csv_path}")


def _cli(args, env_extra=None, cwd=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "gigsterpg.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def _no_half_partition(root: Path) -> None:
    """Every visible folder under root is a whole partition: a manifest, and files matching it."""
    for folder in root.rglob("????-??-??"):
        if any(part.startswith(".") for part in folder.relative_to(root).parts):
            continue
        manifest = json.loads((folder / "manifest.json").read_text())
        data = folder / manifest["file"] if "file" in manifest else None
        if data is not None:
            assert hashlib.sha256(data.read_bytes()).hexdigest() == manifest["sha256"], folder


@pytest.mark.parametrize("step,point", [
    ("extract-postgres", "snapshot-data:1"), ("extract-postgres", "snapshot-data:7"),
    ("extract-postgres", "snapshot-manifest:4"), ("extract-postgres", "snapshot-published:13"),
    ("extract-csv", "snapshot-data:1"), ("extract-csv", "snapshot-published:1")])
def test_an_extract_killed_leaves_nothing_half_visible_and_the_rerun_completes(
        pg_url, northwind, tmp_path, step, point):
    source, csv_path = northwind
    calm = pipeline(pg_url, source, tmp_path, csv_path, root="calm")  # undisturbed, a day earlier
    snapshot.extract_postgres(calm, D1)
    snapshot.extract_csv(calm, D1)
    root = tmp_path / "data"
    args = ["pipeline", step, "--day", "2021-01-02", "--pg-url", pg_url, "--source-pg", source, "--csv",
            str(csv_path), "--root", str(root)]
    killed = _cli(args, {"GIGSTERPG_KILL_AT": point})
    assert killed.returncode == -9, killed.stderr
    _no_half_partition(root)
    state = settled_status(pg_url, D2)[step]
    # The hint names the folder and the source (each quoted for the shell; a password never), and it runs.
    flag = f"--source-pg {shlex.quote(without_password(source))}" if step == "extract-postgres" \
        else f"--csv {shlex.quote(str(csv_path))}"
    assert state.state == "interrupted" and state.rerun == (
        f"python -m gigsterpg.cli pipeline {step} --day 2021-01-02 --root {shlex.quote(str(root))} {flag}")
    rerun = _cli(shlex.split(state.rerun)[3:], {"DB_URL_PSQL": pg_url})
    assert rerun.returncode == 0, rerun.stderr
    assert not [p for p in root.rglob(".*")]  # the killed run's leftovers are gone
    pattern = "*.pgcopy" if step == "extract-postgres" else "*.csv"
    undisturbed = {path.replace("2021-01-01", "2021-01-02"): digest
                   for path, digest in digest_files(tmp_path / "calm", pattern).items()}
    assert digest_files(root, pattern) == undisturbed != {}
    assert {(row.day, row.step): row.state for row in snapshot_status(pg_url)}[D2, step] == "succeeded"


def test_a_load_killed_before_commit_leaves_the_day_as_it_was(pg_url, northwind, tmp_path):
    source, csv_path = northwind
    line = pipeline(pg_url, source, tmp_path, csv_path)
    assert snapshot.run_days(line, [D1]).ok
    before = target_state(pg_url)
    with psycopg.connect(source, autocommit=True) as connection:
        connection.execute("UPDATE orders SET freight = freight + 1")
    args = ["pipeline", "extract-postgres", "--day", "2021-01-01", "--force", "--pg-url", pg_url, "--source-pg",
            source, "--root", str(tmp_path / "data")]
    assert _cli(args).returncode == 0
    outdated = {row.step: row for row in snapshot_status(pg_url)}
    assert (outdated["load"].state, outdated["query"].state) == ("failed", "failed")
    assert outdated["load"].error == "extract-postgres of 2021-01-01 ran again after this load; run it again"
    assert outdated["query"].rerun.endswith("pipeline query --day 2021-01-01 --root " + str(tmp_path / "data"))
    load = ["pipeline", "load", "--day", "2021-01-01", "--pg-url", pg_url, "--root", str(tmp_path / "data")]
    killed = _cli(load, {"GIGSTERPG_KILL_AT": "snapshot-loaded:1"})
    assert killed.returncode == -9, killed.stderr
    assert target_state(pg_url) == before
    assert {row.step: row.state for row in snapshot_status(pg_url)}["load"] == "interrupted"
    assert _cli(load).returncode == 0
    after = target_state(pg_url)
    assert after != before and len(after["snap_public.orders"]) == len(before["snap_public.orders"])
    with psycopg.connect(source) as src, psycopg.connect(pg_url) as tgt:
        assert src.execute("SELECT sum(freight::numeric) FROM orders").fetchone() == \
            tgt.execute("SELECT sum(freight::numeric) FROM snap_public.orders").fetchone()


def test_bad_csv_lines_are_recorded_with_line_and_reason(pg_url, northwind, tmp_path):
    source, _ = northwind
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("order_id,product_id,unit_price,quantity,discount\n10248,1,9.50,2,0\n10249,2,1.00\n"
                        "10250,3,2.00,4,0.05\n", encoding="utf-8")
    line = pipeline(pg_url, source, tmp_path, csv_path)
    report = snapshot.extract_csv(line, D1)
    assert (report.rows, report.bad_lines) == (2, 1)
    bad = [json.loads(text) for text in (tmp_path / "data/csv/2021-01-01/bad_lines.jsonl").read_text().splitlines()]
    assert [(b["file"], b["line"], b["column"]) for b in bad] == [("bad.csv", 3, None)]
    assert "3 fields, the header has 5" in bad[0]["reason"]
    snapshot.extract_postgres(line, D1)
    loaded = snapshot.load_day(line, D1)
    assert loaded.bad_lines == 1
    rows = {row.step: row for row in snapshot_status(pg_url)}
    assert rows["extract-csv"].bad_lines == 1 and rows["load"].bad_lines == 1
    assert table_text(pg_url, "SELECT order_id || ':' || unit_price FROM snap_csv.bad ORDER BY 1") == \
        ["10248:9.50", "10250:2.00"]


def test_two_days_then_a_backfill_of_three(pg_url, northwind, tmp_path, capsys):
    source, csv_path = northwind
    base = ["--pg-url", pg_url, "--source-pg", source, "--csv", str(csv_path), "--root", str(tmp_path / "data")]
    assert main(["pipeline", "run", "--day", "2021-01-01", *base]) == 0
    assert main(["pipeline", "run", "--day", "2021-01-02", *base]) == 0
    assert main(["pipeline", "run", "--from", "2020-12-01", "--to", "2020-12-03", *base]) == 0
    out = capsys.readouterr().out
    assert out.count("query ") == 5 and "FAILED" not in out
    days = ["2020-12-01", "2020-12-02", "2020-12-03", "2021-01-01", "2021-01-02"]
    assert sorted(p.name for p in (tmp_path / "data/postgres/orders").iterdir()) == days
    assert sorted(p.name for p in (tmp_path / "data/csv").iterdir()) == days
    assert sorted(p.name for p in (tmp_path / "data/results").iterdir()) == days
    assert table_text(pg_url, "SELECT snapshot_day::text || '=' || count(*) FROM snap_public.orders"
                              " GROUP BY snapshot_day ORDER BY 1") == [f"{day}=120" for day in days]
    status = snapshot_status(create_engine(sqlalchemy_pg_url(pg_url)), days=10)
    assert len(status) == 20 and {row.state for row in status} == {"succeeded"}
    assert [row.day.isoformat() for row in status[::4]] == days[::-1]
    assert status_dicts(status[:1])[0]["day"] == "2021-01-02"
    assert main(["pipeline", "status", "--pg-url", pg_url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["day", "extract-postgres", "extract-csv", "load", "query"]
    with psycopg.connect(source) as connection:
        tables = connection.execute("SELECT relname FROM pg_class WHERE relkind = 'r'"
                                    " AND relnamespace = 'public'::regnamespace").fetchall()
        total = sum(connection.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for (name,) in tables)
    assert table[1].startswith(f"2021-01-02  ok {total:,} rows") and len(table) == 6


def test_the_final_query_equals_the_join_computed_here(pg_url, northwind, tmp_path):
    source, csv_path = northwind
    line = pipeline(pg_url, source, tmp_path, csv_path)
    assert snapshot.run_days(line, [D1]).ok
    with psycopg.connect(source) as connection:
        cursor = connection.execute("SELECT * FROM orders")
        names = [c.name for c in cursor.description]
        orders = {row[0]: dict(zip(names, row)) for row in cursor.fetchall()}
    with open(csv_path, newline="", encoding="utf-8") as handle:
        details = list(csv.DictReader(handle))
    expected = []
    for detail in details:
        order = orders.get(int(detail["order_id"]))
        if order is None:
            continue
        row = {"order_id": int(detail["order_id"]), "product_id": int(detail["product_id"]),
               "unit_price": Decimal(detail["unit_price"]), "quantity": int(detail["quantity"]),
               "discount": Decimal(detail["discount"])}
        row.update({key: value for key, value in order.items() if key != "order_id"})
        expected.append(row)
    assert len(expected) < len(details)  # some details name orders that do not exist
    expected.sort(key=lambda r: (r["order_id"], r["product_id"]))
    folder = tmp_path / "data/results/2021-01-01"
    got = json.loads((folder / "orders_with_details.json").read_text(), parse_float=Decimal)
    assert [list(row) for row in got[:1]] == [list(expected[0])]
    for want, have in zip(expected, got, strict=True):
        for key, value in want.items():
            if isinstance(value, datetime.date):
                value = value.isoformat()
            elif isinstance(value, float):
                have[key] = float(have[key])
            assert (key, have[key]) == (key, value)
    with open(folder / "orders_with_details.csv", newline="", encoding="utf-8") as handle:
        lines = list(csv.DictReader(handle))
    assert [(int(r["order_id"]), int(r["product_id"]), r["customer_id"]) for r in lines] == \
        [(r["order_id"], r["product_id"], r["customer_id"]) for r in expected]
    assert [r["shipped_date"] for r in lines] == [r["shipped_date"].isoformat() if r["shipped_date"] else ""
                                                  for r in expected]


def test_a_failing_step_says_where_and_which_command_picks_up(pg_url, tmp_path, capsys):
    bad_source = "postgresql://someone:s3cret-pw@127.0.0.1:1/nowhere"
    args = ["pipeline", "extract-postgres", "--day", "2021-01-03", "--pg-url", pg_url, "--source-pg", bad_source]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("FAILED: extract-postgres for 2021-01-03 failed, ") and "s3cret-pw" not in err
    assert err.strip().endswith("fix that, then rerun: python -m gigsterpg.cli pipeline extract-postgres"
                                " --day 2021-01-03 --source-pg postgresql://someone@127.0.0.1:1/nowhere")
    assert main(["pipeline", "status", "--pg-url", pg_url]) == 0
    out = capsys.readouterr().out
    assert "2021-01-03  FAILED" in out and "s3cret-pw" not in out
    assert "rerun: python -m gigsterpg.cli pipeline extract-postgres --day 2021-01-03" in out


def test_arguments_and_settings_are_checked(pg_url, tmp_path, capsys):
    assert main(["pipeline", "load", "--pg-url", pg_url]) == 2
    assert "needs a day" in capsys.readouterr().err
    assert main(["pipeline", "run", "--day", "2021-01-01", "--from", "2021-01-01", "--pg-url", pg_url]) == 2
    assert main(["pipeline", "run", "--from", "2021-01-03", "--to", "2021-01-01", "--pg-url", pg_url]) == 2
    assert main(["pipeline", "extract-postgres", "--day", "2021-01-01", "--pg-url", pg_url]) == 2
    assert main(["pipeline", "extract-csv", "--day", "2021-01-01", "--pg-url", pg_url]) == 2
    assert main(["generate-northwind", "--pg", pg_url]) == 2
    err = capsys.readouterr().err
    assert "swap --from and --to" in err and "--source-pg" in err and "pass --pg URL --csv PATH" in err
    with pytest.raises(SystemExit):
        main(["pipeline", "load", "--day", "2021-13-01"])
    assert main(["pipeline", "status", "--pg-url", pg_url]) == 0
    assert "No day has run yet" in capsys.readouterr().out


def test_narrowing_the_tables(pg_url, northwind, tmp_path):
    assert matches("public.orders", "public.*") and not matches("other.orders", "public.*")
    assert not matches("public.us_states", "public.*,!public.us_*") and matches("x.y", None)
    assert matches("public.orders", "!public.us_*")
    source, csv_path = northwind
    line = pipeline(pg_url, source, tmp_path, csv_path, tables="public.orders,public.cust*")
    report = snapshot.extract_postgres(line, D1)
    assert report.tables == 4
    assert sorted(p.name for p in (tmp_path / "data/postgres").iterdir()) == \
        ["customer_customer_demo", "customer_demographics", "customers", "orders"]


def test_generate_northwind_is_deterministic_and_shaped_like_northwind(source_url, empty_pg_url, tmp_path, capsys):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["generate-northwind", "--pg", source_url, "--csv", str(first), "--orders", "50"]) == 0
    assert "13 tables" in capsys.readouterr().out
    dump = table_text(source_url, "SELECT string_agg(t::text, '|' ORDER BY t::text) FROM orders t")
    generate_northwind(source_url, second, orders=50, seed=7)
    assert first.read_bytes() == second.read_bytes()
    assert table_text(source_url, "SELECT string_agg(t::text, '|' ORDER BY t::text) FROM orders t") == dump
    with psycopg.connect(source_url) as connection:
        keys = dict(connection.execute(
            "SELECT c.relname, count(i.indexrelid) FROM pg_class c LEFT JOIN pg_index i ON i.indrelid = c.oid"
            " AND i.indisprimary WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace"
            " GROUP BY 1").fetchall())
        assert keys["us_states"] == 0 and all(count == 1 for name, count in keys.items() if name != "us_states")
        assert connection.execute("SELECT count(*) FROM categories WHERE length(picture) > 0").fetchone() == (8,)
    assert next(csv.reader(first.open())) == ["order_id", "product_id", "unit_price", "quantity", "discount"]


def test_the_demo_runs_two_days_and_gives_the_committed_example(project_root, tmp_path, capsys):
    assert main(["pipeline", "demo", "--folder", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert out.count(": succeeded,") == 8 and "2021-01-02  ok 1,207 rows" in out
    assert "The first lines of" in out and "order_id,product_id,unit_price,quantity,discount,customer_id" in out
    result = tmp_path / "demo/data/results/2021-01-02/orders_with_details.csv"
    assert result.read_bytes() == (project_root / "examples/snapshots/orders_with_details.csv").read_bytes()


def test_a_partition_changed_on_disk_or_a_changed_table_is_refused_in_one_line(pg_url, northwind, tmp_path):
    source, csv_path = northwind
    line = pipeline(pg_url, source, tmp_path, csv_path)
    assert snapshot.run_days(line, [D1]).ok
    before = target_state(pg_url)
    data = tmp_path / "data/postgres/shippers/2021-01-01/data.pgcopy"
    original = data.read_bytes()
    assert b"Speedy Express" in original
    data.write_bytes(original.replace(b"Speedy Express", b"Speedy Expreso"))  # still a valid file, other data
    with pytest.raises(snapshot.StepFailed, match="shippers/2021-01-01 changed on disk .* extract-postgres"
                                                  " --day 2021-01-01 --root .* --force"):
        snapshot.load_day(line, D1)
    data.write_bytes(original)
    csv_file = tmp_path / "data/csv/2021-01-01/order_details.csv"
    csv_file.write_bytes(csv_file.read_bytes() + b"1,1,1.00,1,0\n")
    with pytest.raises(snapshot.StepFailed, match="csv/2021-01-01 changed on disk"):
        snapshot.load_day(line, D1)
    assert target_state(pg_url) == before  # nothing of the failed loads is visible
    rows = {(row.day, row.step): row for row in snapshot_status(pg_url)}
    assert rows[D1, "load"].state == "failed" and "changed on disk" in rows[D1, "load"].error
    # The source changes shape: a later day's load is refused, naming both column lists.
    with psycopg.connect(source, autocommit=True) as connection:
        connection.execute("ALTER TABLE shippers ADD COLUMN email text")
        connection.execute("DROP TABLE us_states")
    assert snapshot.extract_postgres(line, D2).tables == 12
    snapshot.extract_csv(line, D2)
    with pytest.raises(snapshot.StepFailed, match="columns of public.shippers are not those of the days already"
                                                  " loaded into snap_public.shippers.*now: .*email text.*drop"):
        snapshot.load_day(line, D2)


def test_a_table_gone_from_the_source_loses_its_partition_of_the_day(pg_url, northwind, tmp_path):
    source, csv_path = northwind
    line = pipeline(pg_url, source, tmp_path, csv_path)
    assert snapshot.run_days(line, [D1]).ok
    assert table_text(pg_url, "SELECT count(*)::text FROM snap_public.us_states") == ["34"]
    with psycopg.connect(source, autocommit=True) as connection:
        connection.execute("DROP TABLE us_states")
    assert snapshot.extract_postgres(line, D1, force=True).tables == 12
    snapshot.load_day(line, D1)
    assert table_text(pg_url, "SELECT count(*)::text FROM snap_public.us_states") == ["0"]
    with psycopg.connect(pg_url) as connection:
        loaded = connection.execute("SELECT count(*) FROM snapshot_ledger WHERE day = %s AND step = 'load'"
                                    " AND table_name <> ''", (D1,)).fetchone()[0]
    assert loaded == 13  # 12 tables and the CSV


def test_the_same_step_and_day_cannot_run_twice_at_once(pg_url, northwind, tmp_path):
    from gigsterpg.lib.files.ledger import lock_keys
    source, csv_path = northwind
    line = pipeline(pg_url, source, tmp_path, csv_path)
    with psycopg.connect(pg_url, autocommit=True) as holder:
        assert holder.execute("SELECT pg_try_advisory_lock(%s, %s)", lock_keys(D1, "extract-csv")).fetchone()[0]
        with pytest.raises(snapshot.StepFailed, match="extract-csv for 2021-01-01 is already running"):
            snapshot.extract_csv(line, D1)
        assert snapshot.extract_csv(line, D2).state == "succeeded"  # another day is free


def test_query_without_an_orders_table_fails_with_its_reason(pg_url, northwind, tmp_path):
    source, csv_path = northwind
    line = pipeline(pg_url, source, tmp_path, csv_path, tables="public.customers")
    snapshot.extract_postgres(line, D1)
    snapshot.extract_csv(line, D1)
    snapshot.load_day(line, D1)
    with pytest.raises(snapshot.StepFailed, match="query for 2021-01-01 failed, the day's load has no orders table"):
        snapshot.query_day(line, D1)
    row = {(r.day, r.step): r for r in snapshot_status(pg_url)}[D1, "query"]
    assert row.state == "failed" and row.rerun.endswith("pipeline query --day 2021-01-01 --root "
                                                        f"{tmp_path / 'data'}")


def test_csv_columns_are_shown_and_may_be_declared(pg_url, tmp_path, capsys):
    csv_path = tmp_path / "details.csv"
    csv_path.write_text("order_id,code,when\n1,007,9/26/2022\n2,x8,26.09.2022\n3,12,\n", encoding="utf-8")
    base = ["--pg-url", pg_url, "--csv", str(csv_path), "--root", str(tmp_path / "data")]
    assert main(["pipeline", "extract-csv", "--day", "2021-01-01", *base]) == 0
    assert "[order_id integer, code text, when date]" in capsys.readouterr().out
    assert main(["pipeline", "extract-csv", "--day", "2021-01-02", "--csv-types", "code=integer", *base]) == 0
    out = capsys.readouterr().out
    assert "2 rows, 1 bad line," in out and "[order_id integer, code integer, when date]" in out
    bad = json.loads((tmp_path / "data/csv/2021-01-02/bad_lines.jsonl").read_text())
    assert (bad["line"], bad["column"]) == (3, "code") and "'x8' is not an integer" in bad["reason"]
    assert main(["pipeline", "extract-csv", "--day", "2021-01-02", *base]) == 0
    assert "already done (2 rows, 1 bad line," in capsys.readouterr().out
    assert main(["pipeline", "extract-csv", "--day", "2021-01-03", "--csv-types", "code", *base]) == 2
    assert main(["pipeline", "extract-csv", "--day", "2021-01-03", "--csv-types", "nope=integer", *base]) == 1
    err = capsys.readouterr().err
    assert "each item is COL=KIND" in err and "unknown columns ['nope']" in err


def test_a_fresh_target_is_migrated_and_an_unreachable_one_fails_in_one_line(empty_pg_url, tmp_path, capsys):
    csv_path = tmp_path / "details.csv"
    csv_path.write_text("order_id,product_id\n1,2\n", encoding="utf-8")
    base = ["--csv", str(csv_path), "--root", str(tmp_path / "data")]
    assert main(["pipeline", "extract-csv", "--day", "2021-01-01", "--pg-url", empty_pg_url, *base]) == 0
    assert table_text(empty_pg_url, "SELECT state FROM snapshot_ledger WHERE table_name = ''") == ["succeeded"]
    capsys.readouterr()
    unreachable = "postgresql://me:s3cret-pw@127.0.0.1:1/gigsterpg"
    assert main(["pipeline", "extract-csv", "--day", "2021-01-01", "--pg-url", unreachable, *base]) == 1
    err = capsys.readouterr().err
    assert err.startswith("FAILED: cannot connect to PostgreSQL at postgresql://me:***@127.0.0.1:1/gigsterpg")
    assert "s3cret-pw" not in err and len(err.strip().splitlines()) == 1


# Damaged manifests, status, hints and limits: one line, naming the fix --------------------------------------

DAMAGES = [  # (which partition, what is done to its manifest, what the one line says)
    ("postgres", lambda text, m: "{not json", "is not valid JSON"),
    ("postgres", lambda text, m: b"\xff\xfe".decode("latin-1"), "is not valid JSON"),
    ("postgres", lambda text, m: "[1, 2]", "holds a JSON list, not an object"),
    ("postgres", lambda text, m: json.dumps({k: v for k, v in m.items() if k != "columns"}), "has no 'columns'"),
    ("postgres", lambda text, m: json.dumps({**m, "sha256": None}), "its 'sha256' is null, not str"),
    ("postgres", lambda text, m: json.dumps({**m, "rows": "12"}), "its 'rows' is '12', not int"),
    ("postgres", lambda text, m: json.dumps({**m, "rows": True}), "its 'rows' is True, not int"),
    ("postgres", lambda text, m: json.dumps({**m, "rows": -1}), "its 'rows' is negative"),
    ("postgres", lambda text, m: json.dumps({**m, "columns": "id"}), "its 'columns' is 'id', not list"),
    ("postgres", lambda text, m: json.dumps({**m, "columns": []}), "its 'columns' is empty"),
    ("postgres", lambda text, m: json.dumps({**m, "columns": [{"name": 1, "type": "int"}]}), "its column 1 is"),
    ("postgres", lambda text, m: json.dumps({**m, "schema": None}), "its 'schema' is null"),
    ("postgres", lambda text, m: "[" * 100000, "is not valid JSON"),
    ("csv", lambda text, m: json.dumps({**m, "dialect": {"delimiter": 5}}), "its 'dialect' or 'columns'"),
    ("csv", lambda text, m: json.dumps({**m, "dialect": {"nope": 1}}), "unknown dialect field 'nope'"),
    ("csv", lambda text, m: json.dumps({**m, "dialect": {**m["dialect"], "encoding": "klingon"}}), "'dialect'"),
    ("csv", lambda text, m: json.dumps({**m, "columns": [{**c, "kind": "blob"} for c in m["columns"]]}),
     "unknown column kind 'blob'"),
    ("csv", lambda text, m: json.dumps({**m, "bad_lines": None}), "its 'bad_lines' is null"),
]


def test_a_damaged_manifest_is_one_line_naming_the_file_and_the_fix(pg_url, northwind, tmp_path, capsys):
    source, csv_path = northwind
    root = tmp_path / "my data"
    base = ["--pg-url", pg_url, "--source-pg", source, "--csv", str(csv_path), "--root", str(root)]
    assert main(["pipeline", "run", "--day", "2021-01-01", *base]) == 0
    before = target_state(pg_url)
    capsys.readouterr()
    for which, damage, said in DAMAGES:
        folder = root / ("postgres/shippers/2021-01-01" if which == "postgres" else "csv/2021-01-01")
        path = folder / "manifest.json"
        original = path.read_text(encoding="utf-8")
        path.write_text(damage(original, json.loads(original)), encoding="utf-8")
        try:
            assert main(["pipeline", "load", "--day", "2021-01-01", *base]) == 1, said
        finally:
            path.write_text(original, encoding="utf-8")
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("FAILED: load for 2021-01-01 failed, "), err
        step = f"extract-{which}"
        flag = f"--source-pg {shlex.quote(without_password(source))}" if which == "postgres" \
            else f"--csv {shlex.quote(str(csv_path))}"
        assert f"the manifest {path} is damaged" in err and said in err, err
        assert f"extract that day again: python -m gigsterpg.cli pipeline {step} --day 2021-01-01" \
               f" --root {shlex.quote(str(root))} {flag} --force, " in err, err
        assert "Traceback" not in err and "unexpected error" not in err
        FIGURES["hostile inputs tried"] += 1
        FIGURES["hostile inputs tried: daily snapshots"] += 1
    assert target_state(pg_url) == before  # no failed load changed the day
    assert main(["pipeline", "load", "--day", "2021-01-01", *base]) == 0


def test_status_on_an_unreachable_database_or_with_bad_days_is_one_line(pg_url, capsys):
    assert main(["pipeline", "status", "--pg-url", "postgresql://me:s3cret-pw@127.0.0.1:1/nowhere"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("FAILED: cannot connect to PostgreSQL at postgresql://me:***@127.0.0.1:1/nowhere")
    assert len(err.strip().splitlines()) == 1 and "s3cret-pw" not in err
    for days in ("-5", "0"):
        assert main(["pipeline", "status", "--days", days, "--pg-url", pg_url]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"FAILED: bad number of days {days}, ") and "--days 14" in err
        assert len(err.strip().splitlines()) == 1


def test_a_backfill_of_more_than_a_year_is_refused_unless_asked_for(pg_url, tmp_path, capsys):
    base = ["--pg-url", pg_url, "--root", str(tmp_path / "data")]
    assert main(["pipeline", "run", "--from", "0001-01-01", "--to", "9999-12-31", *base]) == 2
    err = capsys.readouterr().err
    assert err.startswith("FAILED: a backfill of 3,652,059 days (0001-01-01 to 9999-12-31), more than 366 days")
    assert "--max-days 3652059" in err
    assert table_text(pg_url, "SELECT count(*) FROM snapshot_ledger") == [0]  # nothing started
    assert main(["pipeline", "run", "--from", "2020-01-01", "--to", "2020-01-03", "--max-days", "2", *base]) == 2
    assert "a backfill of 3 days" in capsys.readouterr().err
    assert len(snapshot.days_between(D1, datetime.date(2021, 12, 31))) == 365
    assert len(snapshot.days_between(D1, datetime.date(2023, 1, 1), limit=None)) == 731


def test_load_after_a_killed_extract_says_it_was_interrupted(pg_url, northwind, tmp_path):
    source, csv_path = northwind
    root = tmp_path / "data"
    args = ["pipeline", "extract-postgres", "--day", "2021-01-01", "--pg-url", pg_url, "--source-pg", source,
            "--root", str(root)]
    assert _cli(args, {"GIGSTERPG_KILL_AT": "snapshot-data:2"}).returncode == -9
    line = pipeline(pg_url, source, tmp_path, csv_path)
    snapshot.extract_csv(line, D1)
    with pytest.raises(snapshot.StepRefused, match="extract-postgres for 2021-01-01 has not succeeded"
                                                   r" \(interrupted\), run it first: python -m gigsterpg.cli"
                                                   " pipeline extract-postgres --day 2021-01-01 --root"):
        snapshot.load_day(line, D1)


def test_rerun_hints_quote_the_folder_and_never_hold_a_password():
    from gigsterpg.lib.files.ledger import rerun_command
    hint = rerun_command("extract-postgres", D1, "/tmp/a b;rm -rf ~",
                         source_pg="postgresql://u:pw@h:5/db?sslmode=require", tables="public.*,!x")
    assert shlex.split(hint) == ["python", "-m", "gigsterpg.cli", "pipeline", "extract-postgres", "--day",
                                 "2021-01-01", "--root", "/tmp/a b;rm -rf ~", "--source-pg",
                                 "postgresql://u@h:5/db?sslmode=require", "--tables", "public.*,!x"]
    assert without_password("postgresql://u:@h/db") == "postgresql://u@h/db"
    kv = rerun_command("extract-postgres", D1, None, source_pg="host=h password='p w' dbname=x")
    assert "p w" not in kv and "password" not in kv and "dbname=x" in kv
    assert rerun_command("load", D1, "data") == "python -m gigsterpg.cli pipeline load --day 2021-01-01"


def test_source_schemas_get_target_schemas_of_their_own():
    from gigsterpg.lib.files.load import CSV_SCHEMA, target_schema
    assert target_schema("public") == "snap_public" and target_schema("csv") == "snap_pg_csv" != CSV_SCHEMA
    long_a, long_b = "a" * 60 + "x", "a" * 60 + "y"
    assert target_schema(long_a) != target_schema(long_b)
    assert all(len(target_schema(name).encode()) <= 63 for name in (long_a, "é" * 40, "b" * 58))
    assert target_schema("b" * 58) == "snap_" + "b" * 58


def test_a_source_schema_named_csv_is_not_the_csv_files_schema(pg_url, source_url, tmp_path):
    execute_sql = "CREATE SCHEMA csv; CREATE TABLE csv.order_details (k int PRIMARY KEY, note text);" \
                  " INSERT INTO csv.order_details VALUES (1, 'from the database')"
    with psycopg.connect(source_url, autocommit=True) as connection:
        connection.execute(execute_sql)
    csv_path = tmp_path / "order_details.csv"
    csv_path.write_text("order_id,product_id\n1,2\n", encoding="utf-8")
    line = pipeline(pg_url, source_url, tmp_path, csv_path)
    snapshot.extract_postgres(line, D1)
    snapshot.extract_csv(line, D1)
    assert snapshot.load_day(line, D1).tables == 2
    assert table_text(pg_url, "SELECT note FROM snap_pg_csv.order_details") == ["from the database"]
    assert table_text(pg_url, "SELECT order_id FROM snap_csv.order_details") == [1]
