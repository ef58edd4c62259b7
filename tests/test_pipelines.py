"""Every pipeline of the registry, run from the CLI and from POST /runs, leaves one record that balances.

Also: the files a run over HTTP reads stay inside GIGSTERPG_FILES_ROOT, a run whose process died reads as
interrupted, ``runs`` lists the history, and a seventh pipeline (JSON lines -> a PostgreSQL table) added as
one folder-like module and one registry line shows in the CLI's help, GET /pipelines, POST /runs, ``runs``
and the status page.
"""
import dataclasses
import json
import os
import uuid
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from gigsterpg import cli, pipelines
from gigsterpg.api.app import create_app
from gigsterpg.config import Settings, mask_url
from gigsterpg.fixtures.generate import write_dataset
from gigsterpg.fixtures.generate_shop import write_shop
from gigsterpg.lib.pg.db.states import INTERRUPTED
from gigsterpg.fixtures.northwind import generate_northwind
from gigsterpg.pipelines import runs
from gigsterpg.pipelines.contract import Pipeline
from tests import toy_pipeline
from tests.helpers import (API_AUTH, API_TOKEN, CLI_SECRET, assert_run_balances, execute, wait_until,
                           with_database)

CSV = "id,name,when\n1,ada,2021-01-01\n2,bob,2021-01-02\n3,cy,not a date but text\n"
SQL = "SELECT 1 AS id, 'x' AS name UNION ALL SELECT 2, 'y'"


def last_record(capsys, pg_url: str, pipeline: str) -> dict:
    """The newest run of ``pipeline``, as ``runs --format json`` shows it."""
    capsys.readouterr()
    assert cli.main(["runs", "--format", "json", "--pg-url", pg_url, "--pipeline", pipeline]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines, f"no {pipeline} run recorded"
    return json.loads(lines[0])


def test_every_pipeline_run_from_the_cli_leaves_a_record_that_balances(
        pg_url, mongo_url, mongo_db, empty_pg_url, tmp_path, capsys):
    urls = ["--pg-url", pg_url, "--mongo-url", mongo_url]
    write_dataset(mongo_db, 40, 80, 0.1, 3, True)
    assert cli.main(["sync", *urls, "--no-progress"]) == 0
    execute(pg_url, "CREATE TABLE pets (id int PRIMARY KEY, name text)",
            "INSERT INTO pets SELECT n, 'pet ' || n FROM generate_series(1, 7) n")
    assert cli.main(["export-table", "--table", "pets", *urls]) == 0
    shop = empty_pg_url
    write_shop(shop, 30, seed=5)
    assert cli.main(["export-orders", "--pg", shop, *urls]) == 0
    (tmp_path / "people.csv").write_text(CSV)
    assert cli.main(["load-csv", str(tmp_path / "people.csv"), "--pg-url", pg_url]) == 0
    (tmp_path / "q.sql").write_text(SQL)
    assert cli.main(["transform", str(tmp_path / "q.sql"), "--into", "two", "--pg-url", pg_url]) == 0
    source = shop  # the shop's database doubles as the snapshot source (any database with tables will do)
    generate_northwind(source, tmp_path / "details.csv", orders=20, seed=3)
    assert cli.main(["pipeline", "run", "--day", "2021-01-01", "--pg-url", pg_url, "--source-pg", source,
                     "--csv", str(tmp_path / "details.csv"), "--root", str(tmp_path / "data")]) == 0
    capsys.readouterr()
    expected = {"sync": 120, "export-table": 7, "export-orders": 30, "load-csv": 3, "transform": 2, "snapshots": 4}
    for name, read in expected.items():
        record = last_record(capsys, pg_url, name)
        assert_run_balances(record)
        assert record["read"] == read and record["source"] == "cli", record
    assert set(expected) == set(pipelines.names())  # every pipeline of the registry is run above
    assert last_record(capsys, pg_url, "export-orders")["params"]["source_url"] == mask_url(shop)
    capsys.readouterr()
    assert cli.main(["status", "--pg-url", pg_url]) == 0
    shown = capsys.readouterr().out
    for name in expected:  # a section each, from the registry
        assert f"\n{name} (" in shown


def test_the_record_keeps_no_password():
    shown = runs.shown_params(pipelines.get("export-orders"),
                              {"source_url": f"postgresql://me:{CLI_SECRET}@db.example/shop", "tax_rate": "0.2"})
    assert shown["source_url"] == "postgresql://me:***@db.example/shop" and shown["tax_rate"] == "0.2"


def test_a_cli_run_says_its_record_as_json(pg_url, mongo_url, capsys):
    execute(pg_url, "CREATE TABLE pets (id int PRIMARY KEY, name text)", "INSERT INTO pets VALUES (1, 'a')")
    assert cli.main(["export-table", "--table", "pets", "--pg", pg_url, "--mongo-url", mongo_url,
                     "--format", "json"]) == 0
    out = capsys.readouterr().out
    record = json.loads(out)  # only the record: the text report is not printed
    assert_run_balances(record)
    assert record["pipeline"] == "export-table" and record["outcomes"] == {"written": 1, "unchanged": 0}


def test_a_failed_day_of_pipeline_run_says_so_on_stderr_once(pg_url, tmp_path, capsys):
    bad = "postgresql://someone:s3cret-pw@127.0.0.1:1/nowhere"
    code = cli.main(["pipeline", "run", "--day", "2021-01-03", "--pg-url", pg_url, "--source-pg", bad,
                     "--root", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 1
    assert "FAILED" not in captured.out
    failures = [line for line in captured.err.splitlines() if line.startswith("FAILED: ")]
    assert len(failures) == 1 and "extract-postgres for 2021-01-03 failed" in failures[0], captured.err
    assert "s3cret-pw" not in captured.err
    record = last_record(capsys, pg_url, "snapshots")
    assert record["state"] == "failed" and record["read"] == sum(record["outcomes"].values()) == 4
    assert record["outcomes"]["failed"] == 1 and record["outcomes"]["not_run"] == 3
    assert "s3cret-pw" not in json.dumps(record) and record["error"].startswith("extract-postgres")


def test_a_run_whose_process_died_reads_as_interrupted(pg_url, capsys):
    run = runs.Run.open(pg_url, pipelines.get("transform"), {"into": "x"}, "cli")
    run.running()
    record = last_record(capsys, pg_url, "transform")
    assert record["state"] == "running"
    run.connection.close()  # the process dies: its connection, and the lock, go
    record = last_record(capsys, pg_url, "transform")
    assert record["state"] == INTERRUPTED and record["error"] == runs.DIED
    runs.Run.open(pg_url, pipelines.get("transform"), {"into": "y"}, "cli").interrupted("stopped")
    with psycopg.connect(pg_url) as connection:  # the next run recorded it so
        assert connection.execute("SELECT state FROM pipeline_runs WHERE id = %s", (run.id,)).fetchone()[0] \
            == INTERRUPTED


def test_runs_keep_the_newest_of_each_pipeline(pg_url):
    for _ in range(4):
        runs.Run.open(pg_url, pipelines.get("transform"), {}, "cli", keep=2).interrupted("stopped")
    with psycopg.connect(pg_url) as connection:
        assert connection.execute("SELECT count(*) FROM pipeline_runs").fetchone()[0] == 2


@pytest.fixture
def files(tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    (root / "people.csv").write_text(CSV)
    (root / "q.sql").write_text(SQL)
    outside = tmp_path / "outside.csv"
    outside.write_text(CSV)
    os.symlink(outside, root / "link.csv")
    return root


@pytest.fixture
def northwind_url(pg_server_url):
    """A second empty database: the snapshots' source (the shop's and Northwind's tables share names)."""
    name = "nw_" + uuid.uuid4().hex[:12]
    execute(pg_server_url, f'CREATE DATABASE "{name}"')
    yield with_database(pg_server_url, name)
    execute(pg_server_url, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def client(api_settings, files, empty_pg_url, northwind_url, tmp_path):
    write_shop(empty_pg_url, 25, seed=2)
    generate_northwind(northwind_url, files / "details.csv", orders=20, seed=3)
    settings = dataclasses.replace(api_settings, files_root=str(files), orders_source_pg=empty_pg_url,
                                   snapshot_source_pg=northwind_url, snapshot_root=str(tmp_path / "data"))
    with TestClient(create_app(settings, API_TOKEN), headers=API_AUTH) as client:
        yield client


def run_over_http(client, pipeline: str, params: dict) -> dict:
    answer = client.post("/runs", json={"pipeline": pipeline, "params": params})
    assert answer.status_code == 202, answer.text
    url = answer.json()["url"]
    return wait_until(lambda: (lambda run: run if run["state"] not in ("queued", "running") else None)(
        client.get(url).json()), f"{pipeline} run to end")


def test_every_pipeline_runs_over_http_and_leaves_the_same_record(client, api_settings, mongo_db):
    write_dataset(mongo_db, 30, 60, 0.1, 3, True)
    execute(api_settings.pg_url, "CREATE TABLE pets (id int PRIMARY KEY, name text)",
            "INSERT INTO pets SELECT n, 'pet ' || n FROM generate_series(1, 5) n")
    listed = client.get("/pipelines").json()["items"]
    assert [each["name"] for each in listed] == list(pipelines.names())
    assert "tax_rate" in next(each for each in listed if each["name"] == "export-orders")["params"]["properties"]
    asked = {"sync": {"mode": "full"}, "export-table": {"table": "pets"}, "export-orders": {"tax_rate": "0.1"},
             "snapshots": {"day": "2021-01-01", "csv": "details.csv"}, "load-csv": {"paths": ["people.csv"]},
             "transform": {"sqlfile": "q.sql", "into": "two"}}
    assert set(asked) == set(pipelines.names())
    for name, params in asked.items():
        record = run_over_http(client, name, params)
        assert_run_balances(record)
        assert record["source"] == "api" and record["pipeline"] == name
    job = client.post("/syncs", json={})  # an old route's job leaves the same record
    assert job.status_code == 200, job.text
    wait_until(lambda: client.get(job.json()["status_url"]).json()["state"] == "succeeded", "the sync job")
    synced = client.get("/runs", params={"pipeline": "sync"}).json()["items"]
    assert len(synced) == 2 and synced[0]["params"]["collections"] == "users,gigs"
    assert_run_balances(synced[0])
    first = client.get("/runs", params={"limit": 2}).json()  # paged, newest first, by the next link
    second = client.get(first["next"]).json()
    newest = max(run["id"] for run in first["items"])
    assert [run["id"] for run in first["items"] + second["items"][:1]] == [newest, newest - 1, newest - 2]
    assert client.get("/runs", params={"state": "bogus"}).status_code == 400
    listing = client.get("/runs", params={"pipeline": "load-csv", "state": "succeeded"}).json()
    assert [run["pipeline"] for run in listing["items"]] == ["load-csv"]
    again = client.post(f"/runs/{listing['items'][0]['id']}/restart")
    assert again.status_code == 202
    restarted = wait_until(lambda: client.get(again.json()["url"]).json()["state"] == "succeeded" and
                           client.get(again.json()["url"]).json(), "the restart to end")
    assert restarted["restart_of"] == listing["items"][0]["id"]
    assert_run_balances(restarted)


@pytest.mark.parametrize("pipeline, params", [
    ("load-csv", {"paths": ["../outside.csv"]}),
    ("load-csv", {"paths": ["link.csv"]}),
    ("load-csv", {"paths": ["/etc/passwd"]}),
    ("transform", {"sqlfile": "/etc/hostname", "into": "x"}),
    ("snapshots", {"day": "2021-01-01", "csv": "../outside.csv"}),
    ("export-orders", {"projection": "../outside.sql"}),
])
def test_files_over_http_are_read_only_inside_the_files_root(client, pipeline, params):
    answer = client.post("/runs", json={"pipeline": pipeline, "params": params})
    assert answer.status_code == 400, answer.text
    assert "GIGSTERPG_FILES_ROOT" in answer.json()["message"] + answer.json()["why"]


def test_without_a_files_root_no_file_is_read_over_http(api_settings):
    with TestClient(create_app(api_settings, API_TOKEN), headers=API_AUTH) as client:
        answer = client.post("/runs", json={"pipeline": "transform", "params": {"sqlfile": "q.sql", "into": "x"}})
        assert answer.status_code == 400 and "GIGSTERPG_FILES_ROOT is not set" in answer.json()["why"]
        assert client.post("/runs", json={"pipeline": "nope"}).status_code == 404
        # The databases over HTTP are the server's: a connection URL is no parameter of the API.
        bad = client.post("/runs", json={"pipeline": "export-table", "params": {"table": "t", "pg_url": "x"}})
        assert bad.status_code == 400 and "pg_url" in bad.json()["why"]
        assert client.get("/runs/12345").status_code == 404


@pytest.fixture
def toy():
    undo = pipelines.register(toy_pipeline.PIPELINE)  # the one registry line, test-local
    yield toy_pipeline.PIPELINE
    undo()


def test_a_seventh_pipeline_is_one_module_and_one_registry_line(toy: Pipeline, api_settings, tmp_path, capsys):
    lines = tmp_path / "events.jsonl"
    lines.write_text('{"kind": "a", "n": 1}\n{"kind": "b"}\nnot json\n')
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "jsonl-load" in capsys.readouterr().out
    assert cli.main(["jsonl-load", str(lines), "--table", "events", "--pg-url", api_settings.pg_url]) == 0
    assert "3 lines read, 2 rows written, 1 rejected" in capsys.readouterr().out
    record = last_record(capsys, api_settings.pg_url, "jsonl-load")
    assert_run_balances(record)
    assert record["outcomes"] == {"written": 2, "rejected": 1}
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "e.jsonl").write_text('{"x": 1}\n')
    settings = dataclasses.replace(api_settings, files_root=str(tmp_path / "files"))
    with TestClient(create_app(settings, API_TOKEN), headers=API_AUTH) as client:
        assert "jsonl-load" in [each["name"] for each in client.get("/pipelines").json()["items"]]
        record = run_over_http(client, "jsonl-load", {"path": "e.jsonl", "table": "events"})
        assert_run_balances(record)
        page = client.get("/").text
        assert 'id="pipeline-jsonl-load"' in page and 'action="/page/runs/jsonl-load"' in page
        assert 'name="path"' in page and 'name="table"' in page  # the form, from the declared parameters
        started = client.post("/page/runs/jsonl-load", data={"path": "e.jsonl", "table": "events"},
                              follow_redirects=False)
        assert started.status_code == 303, started.text
        run_id = int(started.headers["location"].split("started=")[1].split("#")[0])
        assert_run_balances(wait_until(lambda: (lambda run: run["state"] == "succeeded" and run)(
            client.get(f"/runs/{run_id}").json()), "the page's run to end"))
        refused = client.post("/page/runs/jsonl-load", data={"path": "../events.jsonl", "table": "t"})
        assert refused.status_code == 400 and "GIGSTERPG_FILES_ROOT" in refused.text
    capsys.readouterr()
    assert cli.main(["runs", "--pg-url", api_settings.pg_url]) == 0
    assert "jsonl-load" in capsys.readouterr().out


def test_the_registry_knows_where_each_pipeline_is(project_root: Path):
    for name in pipelines.names():
        folder = project_root / "gigsterpg" / "pipelines" / name.replace("-", "_")
        assert (folder / "__init__.py").is_file(), name
    assert isinstance(Settings().files_root, type(None))


def test_each_declared_parameter_is_the_cli_argument_of_the_same_name():
    """The six older commands keep hand-written parsers (until they move into their folders): every parameter
    a pipeline declares must still be an argument of its command, under the dest the record reads."""
    parser = cli.build_parser()
    commands = next(action for action in parser._actions if action.dest == "command").choices
    for pipeline in pipelines.PIPELINES.values():
        dests = {action.dest: action for action in commands[pipeline.cli_command]._actions}
        for param in pipeline.params:
            assert (param.dest or param.name) in dests, (pipeline.name, param.name)
            action = dests[param.dest or param.name]
            if not param.positional and "/" not in param.option:  # sync's mode: --incremental/--reconcile
                assert param.option in action.option_strings, (pipeline.name, param.name, action.option_strings)
