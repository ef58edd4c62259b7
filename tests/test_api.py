"""The HTTP API against the real servers: exports and syncs as jobs, refusals, reads, restarts."""
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import psycopg
import pymongo
import pytest
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict

from gigsterpg import commands
from gigsterpg.api.app import create_app
from gigsterpg.config import Settings
from gigsterpg.fixtures.embedded import free_port
from gigsterpg.fixtures.generate import write_dataset
from tests.helpers import API_AUTH as AUTH, API_TOKEN as TOKEN, assert_one_line_failure, execute, run_cli, wait_until

SECRET = "never-echo-this-pw"


def source_of(url: str, **changes) -> dict:
    """The POST /exports connection details of the database at ``url``."""
    parts = conninfo_to_dict(url)
    details = {"host": parts.get("host", "localhost"), "port": int(parts.get("port", 5432)),
               "user": parts.get("user", "postgres"), "password": parts.get("password", ""),
               "database": parts["dbname"]}
    return {**details, **changes}


def wait(client: TestClient, url: str, timeout_s: float = 120) -> dict:
    """The job at ``url`` once it has ended."""
    def ended():
        job = client.get(url, headers=AUTH).json()
        return job if job["state"] not in ("queued", "running") else None

    return wait_until(ended, f"the job at {url} to end", timeout_s)


@pytest.fixture
def client(api_settings):
    with TestClient(create_app(api_settings, TOKEN, source_timeout_s=3)) as test_client:
        yield test_client


@pytest.fixture
def source_url(empty_pg_url):
    """A database of tables to export."""
    return empty_pg_url


def export(client: TestClient, source_url: str, table: str, **fields) -> dict:
    """POST /exports of ``table`` and wait for the job; returns it."""
    answer = client.post("/exports", headers=AUTH, json={**source_of(source_url), "table": table, **fields})
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"id", "state", "status_url"}
    return wait(client, answer.json()["status_url"])


def export_in_flight(http, exports_url: str, source_url: str, rows: int, **details) -> str:
    """A table ``slow`` of ``rows`` rows, POSTed for export in batches of 10 (``http``: a TestClient or httpx);
    its status URL once the job has written rows."""
    execute(source_url, "CREATE TABLE slow (id int PRIMARY KEY)",
            f"INSERT INTO slow SELECT g FROM generate_series(1, {rows:d}) g")
    started = http.post(exports_url, headers=AUTH,
                        json={**source_of(source_url, **details), "table": "slow", "batch_size": 10})
    assert started.status_code == 200, started.text
    status_url = started.json()["status_url"]

    def writing():
        job = http.get(status_url, headers=AUTH).json()
        assert job["state"] in ("queued", "running"), f"the export ended before it could be interrupted: {job}"
        return job["rows_done"] > 0

    wait_until(writing, "the export's first rows")
    return status_url


def test_health_is_open_and_everything_else_wants_the_token(client):
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "postgres": {"reachable": True, "error": None},
                             "mongo": {"reachable": True, "error": None}}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        refused = client.get("/exports", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert refused.json()["error"] == "unauthorized"
    assert client.get("/exports", headers=AUTH).json() == {"items": []}
    assert client.get("/docs").status_code == 200
    assert "/exports" in client.get("/openapi.json").json()["paths"]


def test_health_reports_an_unreachable_mongodb(pg_url):
    settings = Settings(pg_url=pg_url, mongo_url=f"mongodb://127.0.0.1:{free_port()}/nowhere")
    with TestClient(create_app(settings, None)) as client:
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "degraded"
        assert health.json()["postgres"]["reachable"] is True
        assert health.json()["mongo"]["reachable"] is False and health.json()["mongo"]["error"]


@pytest.mark.parametrize("ddl, rows, ids", [
    ("CREATE TABLE k (id int PRIMARY KEY, x float8, c char(2), b boolean)",
     "INSERT INTO k VALUES (1, 1.5, 'ab', true), (2, NULL, NULL, NULL)", [1, 2]),
    ("CREATE TABLE k (code text PRIMARY KEY, x int)", "INSERT INTO k VALUES ('a', 1), ('b', NULL)", ["a", "b"]),
    ("CREATE TABLE k (a int, b text, x int, PRIMARY KEY (b, a))", "INSERT INTO k VALUES (1, 'x', 0), (2, 'x', 0)",
     [{"b": "x", "a": 1}, {"b": "x", "a": 2}]),
])
def test_an_export_job_writes_one_document_per_row_keyed_by_the_primary_key(client, source_url, mongo_db, ddl,
                                                                            rows, ids):
    execute(source_url, ddl, rows)
    job = export(client, source_url, "k")
    assert job["state"] == "succeeded", job
    assert (job["rows_done"], job["rows_total"], job["errors"]) == (2, 2, [])
    assert job["result"]["written"] == 2 and job["rate"] > 0
    assert job["params"]["collection"] == "k" and "password" not in job["params"]
    assert sorted(map(json.dumps, (doc["_id"] for doc in mongo_db.k.find()))) == sorted(map(json.dumps, ids))


def test_an_empty_table_is_a_job_of_zero_rows(client, source_url, mongo_db):
    execute(source_url, "CREATE TABLE empty (id int PRIMARY KEY, v text)")
    job = export(client, source_url, "empty")
    assert (job["state"], job["rows_done"], job["rows_total"], job["errors"]) == ("succeeded", 0, 0, [])
    assert job["result"]["written"] == 0 and mongo_db.empty.count_documents({}) == 0


def test_a_re_export_follows_the_changes_and_restart_runs_a_job_again(client, source_url, mongo_db):
    execute(source_url, "CREATE TABLE t (id int PRIMARY KEY, v text)",
            "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 300) g")
    first = export(client, source_url, "t", collection="copy")
    execute(source_url, "UPDATE t SET v = 'new' WHERE id <= 10", "DELETE FROM t WHERE id > 290",
            "INSERT INTO t VALUES (1000, 'added')")
    again = client.post(f"/exports/{first['id']}/restart", headers=AUTH, json={"password": ""})
    assert again.status_code == 200, again.text
    second = wait(client, again.json()["status_url"])
    assert (second["state"], second["restart_of"], second["rows_done"]) == ("succeeded", first["id"], 291)
    assert second["result"]["deleted"] == 10
    assert mongo_db.copy.count_documents({}) == 291
    assert mongo_db.copy.count_documents({"v": "new"}) == 10
    assert mongo_db.copy.find_one({"_id": 1000})["v"] == "added"
    listed = client.get("/exports", headers=AUTH).json()["items"]
    assert [job["id"] for job in listed] == [second["id"], first["id"]]
    assert client.post(f"/exports/{first['id']}/restart", headers=AUTH).status_code == 200  # no body: no password


def test_names_from_the_request_are_looked_up_never_spliced(client, source_url, mongo_db):
    table = '"Odd.Schema"."Mixed ""Case"" T"'
    execute(source_url, 'CREATE SCHEMA "Odd.Schema"', f"CREATE TABLE {table} (id int PRIMARY KEY)",
            f"INSERT INTO {table} VALUES (7)", "CREATE TABLE victim (id int PRIMARY KEY)")
    job = export(client, source_url, 'Mixed "Case" T', schema="Odd.Schema", collection="odd")
    assert job["state"] == "succeeded" and mongo_db.odd.find_one() == {"_id": 7, "id": 7}
    injection = client.post("/exports", headers=AUTH,
                            json={**source_of(source_url), "table": "victim; DROP TABLE victim; --"})
    assert injection.status_code == 404 and injection.json()["error"] == "table_not_found"
    with psycopg.connect(source_url) as connection:
        assert connection.execute("SELECT to_regclass('victim') IS NOT NULL").fetchone()[0]


def test_each_refusal_has_its_own_status_and_never_echoes_the_password(password_role, client, source_url, caplog):
    for name in (None, "gigsterpg", "psycopg", "pymongo", "httpx", "fastapi", "uvicorn", "alembic"):
        caplog.set_level(logging.DEBUG, logger=name)  # every level of every logger, not only warnings
    execute(source_url, "CREATE TABLE t (id int PRIMARY KEY)", "CREATE TABLE loose (x int)", "CREATE SCHEMA hidden",
            "CREATE TABLE hidden.t (id int PRIMARY KEY)", f"GRANT SELECT ON hidden.t TO {password_role[0]}",
            f"GRANT CONNECT ON DATABASE {conninfo_to_dict(source_url)['dbname']} TO {password_role[0]}")
    good = source_of(source_url, user=password_role[0], password=password_role[1])
    cases = {
        "wrong password": ({**good, "password": SECRET, "table": "t"}, 401, "source_auth_failed"),
        "unreachable": ({**good, "host": "127.0.0.1", "port": free_port(), "password": SECRET, "table": "t"},
                        502, "source_unreachable"),
        "missing database": ({**good, "database": "no_such_db", "table": "t"}, 404, None),
        "missing table": ({**good, "table": "nope"}, 404, "table_not_found"),
        "missing privilege": ({**good, "table": "t"}, 403, "permission_denied"),
        "no schema usage": ({**good, "table": "hidden.t"}, 403, "permission_denied"),
        "no primary key": ({**source_of(source_url), "table": "loose"}, 422, "no_primary_key"),
        "bad request": ({"host": "h", "password": SECRET, "port": "x", "user": "u", "database": "d", "table": "t"},
                        400, "bad_request"),
        "unknown field": ({**good, "table": "t", "tabel": "t"}, 400, "bad_request"),
        "system collection": ({**good, "table": "t", "collection": "system.users"}, 400, "bad_request"),
    }
    for name, (body, status, error) in cases.items():
        answer = client.post("/exports", headers=AUTH, json=body)
        assert answer.status_code == status, (name, answer.text)
        assert answer.json()["error"] == (error or "database_not_found"), (name, answer.text)
        assert answer.json()["message"], name
        assert SECRET not in answer.text and password_role[1] not in answer.text, name
    assert any(record.levelno == logging.DEBUG for record in caplog.records), "debug records were not captured"
    assert SECRET not in caplog.text and password_role[1] not in caplog.text
    # A JSON body that is not even JSON, and a password where a string belongs.
    assert client.post("/exports", headers=AUTH, content=b"{not json").status_code == 400
    assert client.post("/exports", headers=AUTH, json={**good, "table": "t", "password": ["x"]}).status_code == 400
    assert client.get("/exports", headers=AUTH).json()["items"] == []  # no refused request became a job


def test_a_missing_mongodb_is_503_and_starts_nothing(pg_url, source_url):
    execute(source_url, "CREATE TABLE t (id int PRIMARY KEY)")
    settings = Settings(pg_url=pg_url, mongo_url=f"mongodb://127.0.0.1:{free_port()}/nowhere")
    with TestClient(create_app(settings, TOKEN)) as client:
        answer = client.post("/exports", headers=AUTH, json={**source_of(source_url), "table": "t"})
        assert answer.status_code == 503 and answer.json()["error"] == "mongo_unreachable"
        assert client.get("/exports", headers=AUTH).json()["items"] == []


def test_two_exports_run_at_once_and_one_collection_takes_one_export(client, source_url, mongo_db):
    for name in ("a", "b"):
        execute(source_url, f"CREATE TABLE {name} (id int PRIMARY KEY, v text)",
                f"INSERT INTO {name} SELECT g, repeat('x', 50) FROM generate_series(1, 20000) g")
    started = [client.post("/exports", headers=AUTH, json={**source_of(source_url), "table": name, "batch_size": 500})
               for name in ("a", "b")]
    assert [answer.status_code for answer in started] == [200, 200]
    busy = client.post("/exports", headers=AUTH, json={**source_of(source_url), "table": "a"})
    assert busy.status_code == 409 and busy.json()["error"] == "export_running"
    jobs = [wait(client, answer.json()["status_url"]) for answer in started]
    assert [job["state"] for job in jobs] == ["succeeded", "succeeded"]
    assert jobs[1]["started_at"] < jobs[0]["finished_at"]  # they overlapped
    assert mongo_db.a.count_documents({}) == mongo_db.b.count_documents({}) == 20000


def test_a_table_of_100k_rows(client, source_url, mongo_db):
    execute(source_url, "CREATE TABLE big (id bigint PRIMARY KEY, name text, score float8, ok boolean)",
            "INSERT INTO big SELECT g, 'name ' || g, g / 7.0, g % 2 = 0 FROM generate_series(1, 100000) g")
    job = export(client, source_url, "big", batch_size=5000)
    assert (job["state"], job["rows_done"], job["rows_total"]) == ("succeeded", 100000, 100000), job
    assert mongo_db.big.count_documents({}) == 100000
    expected = {"_id": 99999, "id": 99999, "name": "name 99999", "score": 99999 / 7.0, "ok": False}
    assert mongo_db.big.find_one({"_id": 99999}) == expected


def test_a_stopped_server_marks_its_running_job_interrupted(api_settings, source_url):
    with TestClient(create_app(api_settings, TOKEN)) as client:
        status_url = export_in_flight(client, "/exports", source_url, 50000)
    with TestClient(create_app(api_settings, TOKEN)) as client:
        job = client.get(status_url, headers=AUTH).json()
    assert job["state"] == "interrupted"
    assert job["errors"] == ["the server was stopped; restart the job with POST .../{id}/restart"]
    assert 0 < job["rows_done"] < 50000


def test_a_killed_server_leaves_jobs_that_the_next_one_lists_as_interrupted(api_settings, source_url, tmp_path):
    port = free_port()
    env = {"DB_URL_PSQL": api_settings.pg_url, "DB_URL_MONGO": api_settings.mongo_url, "GIGSTERPG_API_TOKEN": TOKEN,
           **{key: value for key, value in os.environ.items() if not key.startswith(("DB_URL_", "GIGSTERPG_"))}}
    server = subprocess.Popen([sys.executable, "-m", "gigsterpg.cli", "serve", "--port", str(port)], env=env,
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        import httpx
        base = f"http://127.0.0.1:{port}"

        def healthy():
            try:
                return httpx.get(f"{base}/health").status_code == 200
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read()
                return False

        wait_until(healthy, "the server to answer /health", every_s=0.1)
        status_url = export_in_flight(httpx, f"{base}/exports", source_url, 20000, password=SECRET)
        server.send_signal(signal.SIGKILL)
        output = server.communicate(timeout=30)[0]
    finally:
        if server.poll() is None:
            server.kill()
    assert SECRET not in output
    job_id = status_url.rsplit("/", 1)[1]
    with TestClient(create_app(api_settings, TOKEN)) as client:
        job = client.get(f"/exports/{job_id}", headers=AUTH).json()
        assert job["state"] == "interrupted" and 0 < job["rows_done"] < 20000
        assert job["errors"][0].startswith("the server running it stopped")
        again = client.post(f"/exports/{job_id}/restart", headers=AUTH, json={"password": SECRET})
        assert again.status_code == 200, again.text
        done = wait(client, again.json()["status_url"])
        assert (done["state"], done["rows_done"], done["restart_of"]) == ("succeeded", 20000, job_id)
        running = client.post(f"/exports/{again.json()['id']}/restart", headers=AUTH)
        assert running.status_code == 200  # an ended job restarts; an active one would be 409


def test_serve_wants_a_token_or_an_explicit_no_auth(tmp_path, pg_url, mongo_url):
    result = run_cli("serve", "--pg-url", pg_url, "--mongo-url", mongo_url, cwd=tmp_path)
    assert_one_line_failure(result, "no API token", "pass --no-auth", code=2)
    unreachable = run_cli("serve", "--no-auth", "--pg-url", f"postgresql://u@127.0.0.1:{free_port()}/db",
                          "--mongo-url", mongo_url, cwd=tmp_path)
    assert_one_line_failure(unreachable, "cannot connect to PostgreSQL")


def test_sync_jobs_and_the_read_endpoints(client, api_settings, mongo_db, pg):
    write_dataset(mongo_db, users=60, gigs=150, messy_rate=0.1, seed=7)
    mongo_db.users.insert_one({"_id": "team/alice", "name": "Alice", "skills": ["Go"]})  # a "/" in its _id
    answer = client.post("/syncs", headers=AUTH, json={"mode": "full"})
    assert answer.status_code == 200, answer.text
    job = wait(client, answer.json()["status_url"])
    assert job["state"] == "succeeded", job
    assert job["result"]["balanced"] is True and job["rows_done"] == job["rows_total"] == 211
    with pg.engine.connect() as connection:
        users = [row[0] for row in connection.exec_driver_sql('SELECT "_id" FROM users ORDER BY id')]
        done_gigs = connection.exec_driver_sql("SELECT count(*) FROM gigs WHERE state = 'done'").scalar()
        poster, poster_gigs = connection.exec_driver_sql(
            'SELECT u."_id", count(*) FROM gigs g JOIN users u ON u.id = g.poster_id GROUP BY 1 ORDER BY 2 DESC'
            " LIMIT 1").one()
        skills = connection.exec_driver_sql(
            'SELECT array_agg(s.name ORDER BY lower(s.name)) FROM users u JOIN user_skills us ON us.user_id = u.id'
            ' JOIN skills s ON s.id = us.skill_id WHERE u."_id" = %(id)s', {"id": poster}).scalar() or []

    seen, url = [], "/users?limit=7"
    while url:
        page = client.get(url, headers=AUTH).json()
        seen += [user["_id"] for user in page["items"]]
        url = page["next"]
    assert seen == users

    detail = client.get(f"/users/{poster}", headers=AUTH).json()
    assert detail["skills"] == skills and detail["gigs_total"] == poster_gigs
    assert {gig["poster"] for gig in detail["gigs"]} == {poster}
    assert client.get(f"/users/{poster}-nope", headers=AUTH).status_code == 404
    assert client.get("/users/a%00b", headers=AUTH).status_code == 400  # no NUL in PostgreSQL text
    for path in ("/users/team/alice", "/users/team%2Falice"):
        alice = client.get(path, headers=AUTH)
        assert alice.status_code == 200 and alice.json()["skills"] == ["Go"], (path, alice.text)

    done = client.get("/gigs?state=done&limit=1000", headers=AUTH).json()["items"]
    assert len(done) == done_gigs and {gig["state"] for gig in done} <= {"done"}
    mine = client.get(detail["gigs_url"], headers=AUTH).json()["items"]
    assert len(mine) == poster_gigs and {gig["poster"] for gig in mine} == {poster}
    assert client.get("/gigs?state=bogus", headers=AUTH).status_code == 400
    for query in ("after=1&after=9", "limit=1e3", "stat=done", "poster=a%00b"):  # a 400, not a guess
        assert client.get(f"/gigs?{query}", headers=AUTH).status_code == 400, query

    restarted = client.post(f"/syncs/{job['id']}/restart", headers=AUTH)
    second = wait(client, restarted.json()["status_url"])
    assert second["state"] == "succeeded" and second["result"]["collections"]["users"]["updated"] == 0
    assert [j["id"] for j in client.get("/syncs", headers=AUTH).json()["items"]] == [second["id"], job["id"]]


def test_a_second_sync_is_refused_while_one_holds_the_lock(client, mongo_db, sync_lock):
    answer = client.post("/syncs", headers=AUTH)
    assert answer.status_code == 409 and answer.json()["error"] == "sync_running"
    assert client.get("/syncs/00000000-0000-0000-0000-000000000000", headers=AUTH).status_code == 404


def test_export_job_library_and_cli_agree(api_settings, source_url, mongo_url, client):
    """The API's export is the library's: the same documents either way."""
    execute(source_url, "CREATE TABLE t (id int PRIMARY KEY, v numeric(6, 2), d date)",
            "INSERT INTO t VALUES (1, 1.25, '2024-01-02'), (2, NULL, NULL)")
    export(client, source_url, "t", collection="by_api")
    commands.export_table(Settings(pg_url=source_url, mongo_url=mongo_url), "t", collection="by_library")
    database = pymongo.MongoClient(mongo_url)[Path(mongo_url).name]
    try:
        assert list(database.by_api.find().sort("_id")) == list(database.by_library.find().sort("_id"))
    finally:
        database.client.close()


def test_the_database_lets_one_export_per_collection_and_one_sync_be_active(api_settings, pg):
    """The unique indexes decide, whichever server started the job; a full server refuses with 429."""
    from gigsterpg.api.jobs import JobRefused, Jobs
    gate = threading.Event()
    jobs = Jobs(pg.engine, api_settings.pg_url, max_running=1)
    try:
        jobs.start("export", {"collection": "x"}, lambda job: gate.wait(30) and {})
        with pytest.raises(JobRefused) as refused:
            jobs.start("export", {"collection": "x"}, lambda job: {})
        assert refused.value.busy
        jobs.start("sync", {}, lambda job: gate.wait(30) and {})
        with pytest.raises(JobRefused):
            jobs.start("sync", {}, lambda job: {})
        for name in "abc":  # queued behind the one running slot
            jobs.start("export", {"collection": name}, lambda job: gate.wait(30) and {})
        with pytest.raises(JobRefused) as full:
            jobs.start("export", {"collection": "d"}, lambda job: {})
        assert not full.value.busy and "5 jobs" in str(full.value)
    finally:
        gate.set()
        jobs.stop()
    with pg.engine.connect() as connection:
        states = connection.exec_driver_sql("SELECT state, count(*) FROM api_jobs GROUP BY 1").all()
    assert dict(states) == {"succeeded": 1, "interrupted": 4}  # the queued ones never ran: the server stopped


def test_an_export_of_another_live_server_is_in_the_way(client, source_url, pg_url):
    from gigsterpg.api.jobs import lock_key
    execute(source_url, "CREATE TABLE t (id int PRIMARY KEY)")
    other = psycopg.connect(pg_url, autocommit=True)
    try:
        job_id = uuid.uuid4()
        other.execute("SELECT pg_advisory_lock(%s)", (lock_key(job_id),))
        other.execute("INSERT INTO api_jobs (id, kind, state, params) VALUES (%s, 'export', 'running',"
                      " '{\"collection\": \"t\"}')", (job_id,))
        busy = client.post("/exports", headers=AUTH, json={**source_of(source_url), "table": "t"})
        assert busy.status_code == 409 and str(job_id) in busy.json()["message"]
    finally:
        other.close()  # that server dies: its job is interrupted and out of the way
    job = export(client, source_url, "t")
    assert job["state"] == "succeeded"
    assert client.get(f"/exports/{job_id}", headers=AUTH).json()["state"] == "interrupted"


def test_a_source_that_drops_the_connection_fails_the_job_with_its_reason(client, source_url, mongo_db):
    status_url = export_in_flight(client, "/exports", source_url, 20000)
    execute(source_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE application_name = 'gigsterpg-export'")
    job = wait(client, status_url)
    assert job["state"] == "failed" and 0 < job["rows_done"] < 20000
    assert len(job["errors"]) == 1 and "failed during the export" in job["errors"][0], job["errors"]
    assert "restart the job" in job["errors"][0]
    again = wait(client, client.post(f"/exports/{job['id']}/restart", headers=AUTH).json()["status_url"])
    assert again["state"] == "succeeded" and mongo_db.slow.count_documents({}) == 20000


def test_demo_serve_serves_the_demo_data_with_a_printed_token(tmp_path):
    import httpx
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_URL_", "GIGSTERPG_"))}
    demo = subprocess.Popen([sys.executable, "-m", "gigsterpg.cli", "demo", "--serve", "--port", str(port),
                             "--users", "30", "--gigs", "60", "--folder", str(tmp_path / "demo")],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not any("Authorization: Bearer" in line for line in lines):
            line = demo.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        token = lines[-1].split("Bearer ")[1].split("'")[0]

        def answered():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/users?limit=3", headers={"Authorization": f"Bearer {token}"})
            except httpx.TransportError:
                assert demo.poll() is None, "the demo ended before it served"
                return None

        users = wait_until(answered, "the demo's API to answer", every_s=0.1)
        assert users.status_code == 200 and len(users.json()["items"]) == 3
        assert "holds" in "".join(lines)  # the sync's summary came first
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()


def test_a_job_that_loses_its_record_connection_is_shown_interrupted(client, source_url, pg_url):
    status_url = export_in_flight(client, "/exports", source_url, 20000)
    execute(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'gigsterpg-job-export'")
    job = wait_until(lambda: (job := client.get(status_url, headers=AUTH).json())["state"] != "running" and job,
                     "the job to stop running", 30)
    assert job["state"] == "interrupted" and job["errors"][0].startswith("the server running it stopped"), job
