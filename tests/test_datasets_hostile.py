"""Hostile and careless inputs to load-csv, transform and the read API: each loads right or fails in one line.

The names a user chooses (tables, columns, the SQL of a transform, a read's cursor) never make gigsterpg
drop what it did not make, run what is not one query that reads, or answer other rows than the table's.
"""
import dataclasses
import json
import os
import signal
import subprocess
import sys

import psycopg
import pytest
from fastapi.testclient import TestClient

from gigsterpg import cli
from gigsterpg.api.app import create_app
from gigsterpg.config import Settings
from gigsterpg.exc import ConfigError, GigsterPgError, SourceError
from gigsterpg.lib.datasets import tables
from gigsterpg.lib.datasets.load import load_csv
from gigsterpg.lib.datasets.transform import transform
from tests.figures import FIGURES
from tests.helpers import API_AUTH, API_TOKEN, execute, wait_until


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def rows(url: str, query: str, params=()):
    with psycopg.connect(url) as connection:
        return connection.execute(query, params).fetchall()


def table_exists(url: str, name: str) -> bool:
    return rows(url, "SELECT to_regclass(%s) IS NOT NULL", (name,))[0][0]


@pytest.fixture
def conf(pg_url):
    return Settings(pg_url=pg_url)


def one_line(err: GigsterPgError, *fragments: str) -> None:
    """The error is one line holding ``fragments``."""
    text = str(err)
    assert "\n" not in text, text
    for fragment in fragments:
        assert fragment in text, text
    FIGURES["hostile inputs tried: datasets"] += 1


def cli_fails(capsys, *args, fragments=(), code=None) -> str:
    """The CLI in-process ends non-zero with exactly one ``FAILED:`` line on stderr holding ``fragments``."""
    exit_code = cli.main(list(args))
    captured = capsys.readouterr()
    assert exit_code != 0 and (code is None or exit_code == code), captured
    failures = [line for line in captured.err.splitlines() if line.startswith("FAILED: ")]
    assert len(failures) == 1 and "Traceback" not in captured.err, captured.err
    for fragment in fragments:
        assert fragment in failures[0], failures[0]
    FIGURES["hostile inputs tried: datasets"] += 1
    return failures[0]


# -- working tables: only what gigsterpg made is ever dropped ---------------------------------------------------

def test_a_dataset_named_like_an_old_working_table_survives_the_load_of_its_namesake(tmp_path, conf, pg_url):
    precious = write(tmp_path, "precious.csv", "a\n1\n2\n")
    load_csv(conf, [precious], table="foo__new")
    load_csv(conf, [write(tmp_path, "t.csv", "b\nx\n")], table="foo")
    assert rows(pg_url, "SELECT a FROM datasets.foo__new ORDER BY _row") == [(1,), (2,)]
    execute(pg_url, "CREATE TABLE public.report__new (v text)", "INSERT INTO public.report__new VALUES ('mine')")
    load_csv(conf, [write(tmp_path, "report.csv", "num\n1\n")], schema="public", table="report")
    assert rows(pg_url, "SELECT v FROM public.report__new") == [("mine",)]
    execute(pg_url, "CREATE TABLE datasets.earliest__new (v text)")
    transform(conf, write(tmp_path, "q.sql", "SELECT 1 AS id"), "earliest")
    assert table_exists(pg_url, "datasets.earliest__new")


def test_a_table_squatting_on_a_working_name_is_refused_not_dropped(tmp_path, conf, pg_url):
    work = tables.work_name("datasets", "squat")
    assert len(work) <= 63 and tables.WORKING.search(work)
    execute(pg_url, "CREATE SCHEMA IF NOT EXISTS datasets",
            f'CREATE TABLE datasets."{work}" (v text)', f"INSERT INTO datasets.\"{work}\" VALUES ('kept')")
    with pytest.raises(SourceError) as err:
        load_csv(conf, [write(tmp_path, "squat.csv", "a\n1\n")])
    one_line(err.value, work, "gigsterpg did not make")
    with pytest.raises(SourceError) as err:
        transform(conf, write(tmp_path, "q.sql", "SELECT 1 AS id"), "squat")
    one_line(err.value, work)
    assert rows(pg_url, f'SELECT v FROM datasets."{work}"') == [("kept",)]
    # A user's table cannot take a working name through gigsterpg either.
    with pytest.raises(ConfigError) as err:
        load_csv(conf, [write(tmp_path, "x.csv", "a\n1\n")], table=work)
    one_line(err.value, "working tables")
    with pytest.raises(ConfigError) as err:
        transform(conf, write(tmp_path, "q.sql", "SELECT 1 AS id"), work)
    one_line(err.value, "working tables")


def test_a_table_made_by_someone_else_during_a_load_is_not_dropped(tmp_path, conf, pg_url, monkeypatch):
    add_key = tables.add_key
    execute(pg_url, "CREATE SCHEMA datasets")

    def someone_creates_it_first(cursor, schema, table, key, what):  # just before the swap
        execute(pg_url, f"CREATE TABLE {schema}.meanwhile (v text)", f"INSERT INTO {schema}.meanwhile VALUES ('x')")
        add_key(cursor, schema, table, key, what)

    monkeypatch.setattr(tables, "add_key", someone_creates_it_first)
    with pytest.raises(SourceError) as err:
        load_csv(conf, [write(tmp_path, "meanwhile.csv", "a\n1\n")])
    one_line(err.value, "datasets.meanwhile exists and is not a dataset")
    assert rows(pg_url, "SELECT v FROM datasets.meanwhile") == [("x",)]
    execute(pg_url, "DROP TABLE datasets.meanwhile")
    with pytest.raises(SourceError) as err:
        transform(conf, write(tmp_path, "q.sql", "SELECT 1 AS id"), "meanwhile")
    one_line(err.value, "is not a dataset")
    assert rows(pg_url, "SELECT v FROM datasets.meanwhile") == [("x",)]


@pytest.mark.parametrize("length", [57, 58, 60, 63])
def test_long_table_names_load_again_and_again(tmp_path, conf, pg_url, length):
    long, twin = "t" * (length - 1) + "a", "t" * (length - 1) + "b"  # the same but for the last character
    path = write(tmp_path, "long.csv", "id,v\n1,x\n2,y\n")
    for _ in range(2):
        for name in (long, twin):
            load_csv(conf, [path], table=name)
            load_csv(conf, [path], table=name, key="id")
            load_csv(conf, [path], table=name, key="id", merge=True)
    sql = write(tmp_path, "q.sql", "SELECT id, v FROM " + long)
    for _ in range(2):
        transform(conf, sql, twin[:-1] + "c")
    for name in (long, twin, twin[:-1] + "c"):
        assert rows(pg_url, f'SELECT id, v FROM datasets."{name}" ORDER BY id') == [(1, "x"), (2, "y")]
        keys = rows(pg_url, "SELECT conname FROM pg_constraint WHERE contype = 'p'"
                            " AND conrelid = format('datasets.%%I', %s::text)::regclass", (name,))
        assert len(keys) == 1 and len(keys[0][0]) <= 63
    FIGURES["hostile inputs tried: datasets"] += 1


@pytest.mark.parametrize("schema", ["pg_catalog", "pg_temp", "pg_toast", "information_schema", "PG_x"])
def test_postgresql_own_schemas_are_refused(tmp_path, conf, schema):
    with pytest.raises(ConfigError) as err:
        load_csv(conf, [write(tmp_path, "h.csv", "a,b\nx,2\n")], schema=schema)
    one_line(err.value, repr(schema), "--schema")
    with pytest.raises(ConfigError) as err:
        transform(conf, write(tmp_path, "q.sql", "SELECT 1 AS id"), "q", schema=schema)
    one_line(err.value, repr(schema))


# -- transform: one query that reads ----------------------------------------------------------------------------

REFUSED_SQL = [
    ("SELECT 1 AS a; DROP TABLE public.projection_hashes", "one query"),
    ("SELECT 1 AS a;\nDROP TABLE public.projection_hashes;", "one query"),
    ("DROP TABLE public.projection_hashes", "SELECT"),
    ("WITH gone AS (DELETE FROM public.projection_hashes RETURNING *) SELECT * FROM gone", "reads"),
    ("INSERT INTO public.projection_hashes SELECT * FROM public.projection_hashes RETURNING *", "SELECT"),
    ("SELECT nextval('public.projection_runs_id_seq') AS id", "reads"),
    ("SELECT 1 AS a) AS q; DROP TABLE public.projection_hashes; SELECT * FROM (SELECT 1", "one query"),
    ("SELECT", "no column"),
    ("SELECT FROM public.projection_hashes", "no column"),
    ("/* a comment */ -- and another\n", "empty"),
]


@pytest.mark.parametrize("query, fragment", REFUSED_SQL, ids=[f"sql{i}" for i in range(len(REFUSED_SQL))])
def test_a_transform_is_one_query_that_reads(tmp_path, conf, pg_url, query, fragment):
    before = rows(pg_url, "SELECT last_value FROM public.projection_runs_id_seq")
    with pytest.raises((ConfigError, SourceError)) as err:
        transform(conf, write(tmp_path, "hostile.sql", query), "hostile")
    one_line(err.value, fragment)
    assert table_exists(pg_url, "public.projection_hashes")
    assert rows(pg_url, "SELECT last_value FROM public.projection_runs_id_seq") == before
    assert rows(pg_url, "SELECT count(*) FROM datasets WHERE name = 'hostile'") == [(0,)]


def test_queries_that_read_still_transform(tmp_path, conf, pg_url):
    for text in ("SELECT '50%' AS p -- a trailing comment", "VALUES (1, 'a'), (2, 'b')",
                 "WITH x AS (SELECT 2 AS n) SELECT n FROM x;;", "(SELECT 3 AS n)", "  /* why */ SELECT 4 AS n\n",
                 "TABLE datasets.one"):
        made = transform(conf, write(tmp_path, "ok.sql", text), "one")
        assert made.rows >= 1, text
    assert rows(pg_url, "SELECT n FROM datasets.one") == [(4,)]


def test_the_cli_refuses_a_bare_select_in_one_line(tmp_path, pg_url, capsys):
    cli_fails(capsys, "transform", str(write(tmp_path, "bare.sql", "SELECT")), "--into", "x", "--pg-url", pg_url,
              fragments=("no column", "name"))
    cli_fails(capsys, "transform", str(write(tmp_path, "two.sql", "SELECT 1 AS a; SELECT 2 AS b")), "--into", "x",
              "--pg-url", pg_url, fragments=("one query",))


# -- column names a user chose ----------------------------------------------------------------------------------

@pytest.mark.parametrize("column", ["ctid", "xmin", "cmin", "xmax", "cmax", "tableoid", "CTID"])
def test_a_system_column_name_is_refused_in_one_line(tmp_path, conf, column):
    path = write(tmp_path, "sys.csv", f"id,{column}\n1,2\n")
    if column == "CTID":  # quoted, upper case is another name: loads
        load_csv(conf, [path])
        return
    with pytest.raises(ConfigError) as err:
        load_csv(conf, [path])
    one_line(err.value, repr(column), "rename")


def test_a_row_column_needs_a_key(tmp_path, conf, pg_url, capsys):
    path = write(tmp_path, "rows.csv", "_row,v\n10,a\n20,b\n")
    cli_fails(capsys, "load-csv", str(path), "--pg-url", pg_url, fragments=("'_row'", "--key"), code=2)
    load_csv(conf, [path], key="_row")
    assert rows(pg_url, "SELECT _row, v FROM datasets.rows ORDER BY _row") == [(10, "a"), (20, "b")]
    load_csv(conf, [write(tmp_path, "ord.csv", "k,_ord\n1,a\n")], key="k")
    load_csv(conf, [write(tmp_path, "ord.csv", "k,_ord\n1,b\n2,c\n")], key="k", merge=True)
    assert rows(pg_url, "SELECT k, _ord FROM datasets.ord ORDER BY k") == [(1, "b"), (2, "c")]


def test_long_column_names_the_same_in_their_first_63_bytes_are_refused(tmp_path, conf):
    same = "é" * 31 + "x"  # 63 bytes
    path = write(tmp_path, "long.csv", f"{same}a,{same}b\n1,2\n")
    with pytest.raises(ConfigError) as err:
        load_csv(conf, [path])
    one_line(err.value, "63 bytes", "shorten")
    load_csv(conf, [write(tmp_path, "fine.csv", f"{same}a,{same[:-1]}b\n1,2\n")])  # cut differently: loads


@pytest.mark.parametrize("option, value", [("--delimiter", ""), ("--delimiter", ",,"), ("--quote", ""),
                                           ("--delimiter", "\n"), ("--quote", ",")])
def test_bad_dialect_options_fail_in_one_line(tmp_path, pg_url, capsys, option, value):
    path = write(tmp_path, "d.csv", "a,b\n1,2\n")
    cli_fails(capsys, "load-csv", str(path), option, value, "--pg-url", pg_url, fragments=(option,), code=2)


# -- the read API -------------------------------------------------------------------------------------------------

@pytest.fixture
def client(api_settings):
    with TestClient(create_app(api_settings, API_TOKEN)) as test_client:
        test_client.headers.update(API_AUTH)
        yield test_client


NAMES = ["t", "row", "tt", "to_json", "key", "text", "json", "select", "T"]


def test_no_column_name_changes_what_a_read_answers(tmp_path, api_settings, client):
    header = ",".join(NAMES)
    path = write(tmp_path, "tt.csv", header + "\n" + ",".join(f"v{i}" for i in range(len(NAMES))) + "\n"
                 + ",".join(f"w{i}" for i in range(len(NAMES))) + "\n")
    load_csv(api_settings, [path])  # the table is named tt, like a column
    load_csv(api_settings, [path], table="keyed", key="t")
    expected = [{"_row": n + 1, **{name: f"{letter}{i}" for i, name in enumerate(NAMES)}}
                for n, letter in enumerate("vw")]
    assert client.get("/read/tt").json()["items"] == expected
    assert client.get("/read/tt/first-chunk").json() == expected
    assert client.get("/read/tt?limit=1").json()["items"] == expected[:1]
    assert client.get(client.get("/read/tt?limit=1").json()["next"]).json()["items"] == expected[1:]
    keyed = [{key: value for key, value in row.items() if key != "_row"} for row in expected]
    assert client.get("/read/keyed?limit=1").json()["items"] == keyed[:1]
    assert client.get("/read/keyed?limit=1&after=v0").json()["items"] == keyed[1:]
    with TestClient(create_app(dataclasses.replace(api_settings, read_default="tt"), API_TOKEN)) as other:
        assert other.get("/read/first-chunk", headers=API_AUTH).json() == expected
    FIGURES["hostile inputs tried: datasets"] += len(NAMES)


def test_the_list_shows_no_local_path_and_a_bad_cursor_is_not_echoed(tmp_path, api_settings, client):
    folder = tmp_path / "secret-place"
    folder.mkdir()
    load_csv(api_settings, [write(folder, "nums.csv", "num\n1\n2\n")], key="num")
    transform(api_settings, write(folder, "q.sql", "SELECT num FROM nums"), "copied")
    listed = {item["name"]: item for item in client.get("/read").json()["items"]}
    assert (listed["nums"]["source"], listed["copied"]["source"]) == ("nums.csv", "q.sql")
    assert "secret-place" not in client.get("/read").text
    answer = client.get("/read/nums", params={"after": "hunter2-not-a-number"})
    assert answer.status_code == 400 and "hunter2" not in answer.text, answer.text
    FIGURES["hostile inputs tried: datasets"] += 2


def test_json_of_read_rows_is_unchanged_for_ordinary_names(client, api_settings, tmp_path):
    load_csv(api_settings, [write(tmp_path, "plain.csv", "id,name\n1,a\n")], key="id")
    assert json.loads(client.get("/read/plain/first-chunk").text) == [{"id": 1, "name": "a"}]


def test_a_dataset_whose_table_was_dropped_by_hand_is_a_404(tmp_path, api_settings, client, pg_url):
    load_csv(api_settings, [write(tmp_path, "gone.csv", "a\n1\n")])
    execute(pg_url, "DROP TABLE datasets.gone")
    answer = client.get("/read/gone")
    assert answer.status_code == 404 and "load or transform it again" in answer.json()["todo"], answer.text
    execute(pg_url, "CREATE TABLE datasets.gone (b int)")  # the key column _row missing
    assert client.get("/read/gone/first-chunk").status_code == 404
    FIGURES["hostile inputs tried: datasets"] += 2


# -- SIGTERM names the command to run again ---------------------------------------------------------------------

def test_load_csv_stopped_by_sigterm_says_to_run_load_csv_again(tmp_path, pg_url):
    load_csv(Settings(pg_url=pg_url), [write(tmp_path, "held.csv", "a\n1\n")])
    holder = psycopg.connect(pg_url)
    holder.execute("SELECT pg_advisory_xact_lock(hashtext('gigsterpg dataset held'))")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_URL_", "GIGSTERPG_"))}
    process = subprocess.Popen([sys.executable, "-m", "gigsterpg.cli", "load-csv", str(tmp_path / "held.csv"),
                                "--pg-url", pg_url], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: rows(pg_url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                        " AND application_name = 'gigsterpg-datasets'")[0][0], "the load to wait")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        holder.close()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    failures = [line for line in err.splitlines() if line.startswith("FAILED: ")]
    assert len(failures) == 1 and "load-csv" in failures[0] and "sync" not in failures[0], err
    assert rows(pg_url, "SELECT a FROM datasets.held") == [(1,)]
    FIGURES["hostile inputs tried: datasets"] += 1


READS = [("/read/%2e%2e%2fetc", 404), ("/read/" + "x" * 5000, 404), ("/read/é✓", 404),
         ("/read/a'b", 404), ("/read/keyed?after=" + "é" * 1000, 200), ("/read/keyed?after=%00", 400),
         ("/read/keyed?after=" + "z" * 1001, 400), ("/read/numbered?after=1e999999", 400),
         ("/read/numbered?after=99999999999999999999999", 400), ("/read/numbered?after=-1", 200),
         ("/read/numbered?after=%20", 400), ("/read/numbered?limit=1e3", 400), ("/read/numbered?limit=-1", 400),
         ("/read/numbered?limit=99999999999999999999", 400), ("/read/numbered/first-chunk?after=1", 400),
         ("/read?limit=1", 400), ("/read/keyed?after=x&after=y", 400)]


def test_read_parameters_a_user_typed_are_answered_never_a_500(tmp_path, api_settings, client):
    load_csv(api_settings, [write(tmp_path, "keyed.csv", "code,v\nA,1\nB,2\n")], key="code")
    load_csv(api_settings, [write(tmp_path, "numbered.csv", "id,v\n1,a\n2,b\n")], key="id")
    for url, status in READS:
        answer = client.get(url)
        assert answer.status_code == status, (url, answer.status_code, answer.text[:300])
        sent = url.split("after=")[1].split("&")[0] if "after=" in url else ""
        if status == 400 and len(sent) > 2 and "%" not in sent:
            assert sent[:30] not in answer.text, answer.text  # a cursor is never echoed back
    FIGURES["hostile inputs tried: datasets"] += len(READS)


# -- values a user typed are quoted masked and cut, never whole -------------------------------------------------

SECRET = "postgresql://admin:hunter2secret@db.example.com:5432/shop"
LONG = "x" * 10_000


def shown_short(text: str) -> None:
    """Neither the password nor 41 characters of the long value are in ``text``."""
    assert "hunter2secret" not in text, text[:500]
    assert "x" * 41 not in text, text[:500]
    assert len(text) < 2000, text[:500]


@pytest.mark.parametrize("value", [SECRET, LONG, LONG + SECRET], ids=["secret", "long", "both"])
def test_errors_quote_a_value_masked_and_cut_on_the_cli_and_in_the_record(tmp_path, pg_url, mongo_url, capsys,
                                                                          value):
    path = str(write(tmp_path, "v.csv", "a,b\n1,2\n"))
    sql_file = str(write(tmp_path, "q.sql", value.replace(":", "_").replace("/", "_").replace("@", "_")))
    base = ("--pg-url", pg_url)
    for args in [("load-csv", path, "--encoding", value), ("load-csv", path, "--key", value),
                 ("load-csv", path, "--delimiter", value), ("load-csv", path, "--quote", value),
                 ("load-csv", path, "--table", value), ("load-csv", path, "--schema", value),
                 ("load-csv", path, "--type", f"{value}=integer"),
                 ("transform", sql_file, "--into", "x"),
                 ("export-orders", "--pg", pg_url, "--mongo", mongo_url, "--projection", value),
                 ("export-orders", "--pg", pg_url, "--mongo", mongo_url, "--projection", value + ".sql"),
                 ("sync", "--mongo-url", mongo_url, "--collections", value),
                 ("export-table", "--mongo", mongo_url, "--table", value),
                 ("export-table", "--mongo", mongo_url, "--table", "skills", "--schema", value),
                 ("pipeline", "run", "--day", "2021-01-01", "--csv-types", value)]:
        shown_short(cli_fails(capsys, *args, *base))
    errors = rows(pg_url, "SELECT coalesce(error, '') FROM pipeline_runs")
    assert errors and all(error for (error,) in errors)
    for (error,) in errors:
        shown_short(error)


@pytest.mark.parametrize("value", [SECRET, LONG], ids=["secret", "long"])
def test_the_library_checks_quote_a_value_masked_and_cut(tmp_path, value):
    from gigsterpg import commands
    from gigsterpg.config import load_settings
    from gigsterpg.lib.files import csvsource
    from gigsterpg.lib.mongo import projection
    from gigsterpg.pipelines.load_csv import declaration
    from gigsterpg.pipelines.snapshots import declared_kinds

    path = write(tmp_path, "v.csv", "a,b\n1,2\n")
    for check in (lambda: tables.check_name(value, "table"), lambda: tables.check_dialect(value, None),
                  lambda: tables.check_dialect(None, value),
                  lambda: tables.check_columns([value + "a" * 63, value + "a" * 63 + "b"], None, "f"),
                  lambda: csvsource.detect_dialect(path, encoding=value),
                  lambda: csvsource.check_declared(path, ["a"], {value: "integer"}),
                  lambda: projection.load_projection(value), lambda: commands.parse_collections(value),
                  lambda: declared_kinds(value), lambda: declared_kinds(f"a={value}"),
                  lambda: load_settings(environ={"GIGSTERPG_BATCH_SIZE": value}, dotenv_path=tmp_path / "none"),
                  lambda: load_settings(environ={"GIGSTERPG_INCREMENTAL": value}, dotenv_path=tmp_path / "none"),
                  lambda: load_settings(environ={"GIGSTERPG_RECONCILE_EVERY": value}, dotenv_path=tmp_path / "none")):
        with pytest.raises(GigsterPgError) as err:
            check()
        one_line(err.value)
        shown_short(str(err.value))
    import argparse
    with pytest.raises(argparse.ArgumentTypeError) as err:
        declaration(value)
    shown_short(str(err.value))
