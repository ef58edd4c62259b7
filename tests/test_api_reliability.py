"""The API's jobs under crashes, concurrent readers and hostile requests (issue 21, the API's part).

A real ``serve`` process runs a sync job and is killed with SIGKILL at a named kill point (the job's own
process dies: ``GIGSTERPG_KILL_AT`` in the server's environment) or by the test at a moment it holds
still; the next server finds the job interrupted, its restart finishes it, and every table equals an
undisturbed run's. Then readers loop over the read routes while jobs run, and hostile parameters go to
every route. Figures are counted only after the assertions that make them true.
"""
import json
import random
import signal
import threading
import uuid

import httpx
import psycopg
import pymongo
import pytest
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict

from gigsterpg import commands
from gigsterpg.api.app import create_app
from gigsterpg.config import Settings
from gigsterpg.fixtures.generate import write_dataset
from tests.figures import FIGURES
from tests.helpers import (API_AUTH, API_TOKEN, TEMPLATE, assert_nothing_lost, copy_database, drop_database,
                           run_held, served, state, wait_until, with_database)

USERS, GIGS, BATCH = 200, 400, 40


def mutate(database, seed: int = 11) -> None:
    """Version 2: renamed users and gigs, some deleted, some new."""
    rng = random.Random(seed)
    users = [doc["_id"] for doc in database.users.find({}, {"_id": 1})]
    gigs = [doc["_id"] for doc in database.gigs.find({}, {"_id": 1})]
    for doc_id in rng.sample(users, len(users) // 10):
        database.users.update_one({"_id": doc_id}, {"$set": {"name": f"renamed {doc_id}", "skills": ["Rust"]}})
    for doc_id in rng.sample(gigs, len(gigs) // 10):
        database.gigs.update_one({"_id": doc_id}, {"$set": {"state": "done", "budget": rng.randint(1, 999)}})
    database.users.delete_many({"_id": {"$in": rng.sample(users, len(users) // 20)}})
    database.gigs.delete_many({"_id": {"$in": rng.sample(gigs, len(gigs) // 20)}})
    database.users.insert_many([{"_id": f"api-new-{i}", "name": f"new {i}", "skills": ["Elm"]} for i in range(10)])


@pytest.fixture(scope="module")
def scenario(pg_server_url, mongo_server_url, template_url):
    """Version 1 synced into a baseline database, MongoDB moved on to version 2, the undisturbed results."""
    name = "apirel_" + uuid.uuid4().hex[:10]
    mongo_url = with_database(mongo_server_url, name)
    client = pymongo.MongoClient(mongo_url)
    write_dataset(client[name], USERS, GIGS, messy_rate=0.05, seed=5)
    baseline = copy_database(pg_server_url, TEMPLATE)
    commands.sync(Settings(pg_url=with_database(pg_server_url, baseline), mongo_url=mongo_url, batch_size=BATCH))
    mutate(client[name])
    expected = {}
    for start in (TEMPLATE, baseline):
        copy = copy_database(pg_server_url, start)
        report = commands.sync(Settings(pg_url=with_database(pg_server_url, copy), mongo_url=mongo_url,
                                        batch_size=BATCH))
        assert report.balanced
        expected[start] = state(with_database(pg_server_url, copy))
        drop_database(pg_server_url, copy)
    yield {"server": pg_server_url, "mongo_url": mongo_url, "db": client[name], "baseline": baseline,
           "expected": expected}
    drop_database(pg_server_url, baseline)
    client.drop_database(name)
    client.close()


def ended(client, url: str) -> dict:
    def look():
        job = client.get(url, headers=API_AUTH).json()
        return job if job["state"] not in ("queued", "running") else None
    return wait_until(look, f"the job at {url} to end", 120)


def finish_after_the_kill(scenario, url: str, job_id: str, start: str) -> None:
    """The next server: the job is interrupted; its restart succeeds; the tables equal an undisturbed run's."""
    settings = Settings(pg_url=url, mongo_url=scenario["mongo_url"], batch_size=BATCH)
    with TestClient(create_app(settings, API_TOKEN)) as client:
        job = client.get(f"/syncs/{job_id}", headers=API_AUTH).json()
        assert job["state"] == "interrupted", job
        assert job["errors"] and job["errors"][-1].startswith("the server running it stopped"), job
        # Two restarts at once (a double click, two scripts): one job starts, the other is refused.
        answers = []
        racers = [threading.Thread(target=lambda: answers.append(
            client.post(f"/syncs/{job_id}/restart", headers=API_AUTH, json={}))) for _ in range(2)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=60)
        assert sorted(answer.status_code for answer in answers) == [200, 409], [a.text for a in answers]
        again = next(answer for answer in answers if answer.status_code == 200)
        assert next(a for a in answers if a.status_code == 409).json()["error"] == "sync_running"
        done = ended(client, again.json()["status_url"])
        assert (done["state"], done["restart_of"]) == ("succeeded", job_id), done
        listed = client.get("/syncs", headers=API_AUTH).json()["items"]
        assert {job["id"]: job["state"] for job in listed} == {job_id: "interrupted", done["id"]: "succeeded"}
    with psycopg.connect(url) as connection:
        runs = connection.execute("SELECT status FROM sync_runs ORDER BY id").fetchall()
    assert runs[-1] == ("succeeded",) and ("running",) not in runs, runs  # the killed run is not left running
    assert state(url) == scenario["expected"][start]
    assert_nothing_lost(scenario["db"], url)


KILL_POINTS = [(TEMPLATE, "fetched", 3), (TEMPLATE, "merged", 2), (TEMPLATE, "committed", 4),
               (TEMPLATE, "deleting", 1), ("baseline", "fetched", 5), ("baseline", "merged", 1),
               ("baseline", "committed", 6), ("baseline", "deleting", 1), ("baseline", "finished", 1)]


@pytest.mark.parametrize("start, point, hit", KILL_POINTS, ids=[f"{s[:4]}-{p}-{n}" for s, p, n in KILL_POINTS])
def test_a_served_sync_job_killed_at_a_point_is_finished_by_its_restart(scenario, tmp_path, start, point, hit):
    start = scenario["baseline"] if start == "baseline" else start
    name = copy_database(scenario["server"], start)
    url = with_database(scenario["server"], name)
    try:
        env = {"DB_URL_PSQL": url, "DB_URL_MONGO": scenario["mongo_url"], "GIGSTERPG_BATCH_SIZE": str(BATCH),
               "GIGSTERPG_KILL_AT": f"{point}:{hit}"}
        with served(env, tmp_path) as (server, base):
            answer = httpx.post(f"{base}/syncs", headers=API_AUTH, json={}, timeout=30)
            assert answer.status_code == 200, answer.text
            job_id = answer.json()["id"]
            assert server.wait(timeout=120) == -signal.SIGKILL  # the server died at the point, mid-job
        finish_after_the_kill(scenario, url, job_id, start)
        FIGURES["kill points tried"] += 1
        FIGURES["kill points tried: API job (serve killed at a point)"] += 1
    finally:
        drop_database(scenario["server"], name)


@pytest.mark.parametrize("seed", range(3))
def test_a_served_sync_job_killed_by_the_test_mid_run_is_finished_by_its_restart(scenario, tmp_path, seed):
    start = scenario["baseline"] if seed % 2 else TEMPLATE
    name = copy_database(scenario["server"], start)
    url = with_database(scenario["server"], name)
    rows = 60 + 90 * seed  # where the run is held, then its server killed
    try:
        env = {"DB_URL_PSQL": url, "DB_URL_MONGO": scenario["mongo_url"], "GIGSTERPG_BATCH_SIZE": str(BATCH)}
        with served(env, tmp_path) as (server, base):
            answer = httpx.post(f"{base}/syncs", headers=API_AUTH, json={}, timeout=30)
            assert answer.status_code == 200, answer.text
            job_id = answer.json()["id"]
            with run_held(url, lambda progress: sum(progress.values()) >= rows, f"{rows} documents synced"):
                server.send_signal(signal.SIGKILL)
                assert server.wait(timeout=60) == -signal.SIGKILL
        finish_after_the_kill(scenario, url, job_id, start)
        FIGURES["kill points tried"] += 1
        FIGURES["kill points tried: API job (serve killed by the test)"] += 1
    finally:
        drop_database(scenario["server"], name)


@pytest.mark.parametrize("rows_before_kill", [1, 700])
def test_a_served_export_killed_mid_job_ends_equal_to_an_undisturbed_one(scenario, tmp_path, rows_before_kill):
    source_name = copy_database(scenario["server"], TEMPLATE)
    source_url = with_database(scenario["server"], source_name)
    own_name = copy_database(scenario["server"], TEMPLATE)
    own_url = with_database(scenario["server"], own_name)
    target = scenario["db"].client["apiexp_" + uuid.uuid4().hex[:8]]
    try:
        with psycopg.connect(source_url, autocommit=True) as connection:
            connection.execute("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(12, 2),"
                               " tags text[], seen timestamptz)")
            connection.execute("INSERT INTO items SELECT g, 'item ' || g, g * 1.25, ARRAY['t' || g % 7],"
                               " '2026-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 3000) g")
        parts = conninfo_to_dict(source_url)
        body = {"host": parts.get("host", "localhost"), "port": int(parts.get("port", 5432)),
                "user": parts.get("user", "postgres"), "database": parts["dbname"], "table": "items",
                "batch_size": 10}
        mongo_url = with_database(scenario["mongo_url"], target.name)
        settings = Settings(pg_url=own_url, mongo_url=mongo_url)
        with TestClient(create_app(settings, API_TOKEN)) as client:  # the undisturbed run
            calm = client.post("/exports", headers=API_AUTH, json={**body, "collection": "calm"})
            assert ended(client, calm.json()["status_url"])["state"] == "succeeded"
        env = {"DB_URL_PSQL": own_url, "DB_URL_MONGO": mongo_url}
        with served(env, tmp_path) as (server, base):
            started = httpx.post(f"{base}/exports", headers=API_AUTH, json={**body, "collection": "items"}, timeout=30)
            assert started.status_code == 200, started.text
            job_id = started.json()["id"]
            wait_until(lambda: target.items.estimated_document_count() >= rows_before_kill, "the export's rows")
            server.send_signal(signal.SIGKILL)
            assert server.wait(timeout=60) == -signal.SIGKILL
        assert 0 < target.items.count_documents({}) < 3000, "killed mid-job"
        with TestClient(create_app(settings, API_TOKEN)) as client:
            job = client.get(f"/exports/{job_id}", headers=API_AUTH).json()
            assert job["state"] == "interrupted", job
            again = client.post(f"/exports/{job_id}/restart", headers=API_AUTH, json={"password": ""})
            done = ended(client, again.json()["status_url"])
            assert (done["state"], done["restart_of"]) == ("succeeded", job_id), done
        assert list(target.items.find({}).sort("_id")) == list(target.calm.find({}).sort("_id"))
        FIGURES["kill points tried"] += 1
        FIGURES["kill points tried: API export job (serve killed by the test)"] += 1
        FIGURES["rows checked after an API export killed"] += 3000
    finally:
        target.client.drop_database(target.name)
        drop_database(scenario["server"], source_name)
        drop_database(scenario["server"], own_name)


def test_readers_keep_getting_whole_answers_while_jobs_run(scenario, tmp_path):
    name = copy_database(scenario["server"], scenario["baseline"])
    url = with_database(scenario["server"], name)
    answers, problems, seen = [], [], set()
    job_ended = threading.Event()
    try:
        env = {"DB_URL_PSQL": url, "DB_URL_MONGO": scenario["mongo_url"], "GIGSTERPG_BATCH_SIZE": "10"}
        with served(env, tmp_path) as (server, base):
            job = httpx.post(f"{base}/syncs", headers=API_AUTH, json={}, timeout=30).json()
            paths = ["/users?limit=50", "/gigs?limit=50", "/syncs", f"/syncs/{job['id']}", "/health", "/",
                     "/snapshots", "/read"]

            def reader(seed: int) -> None:
                rng = random.Random(seed)
                with httpx.Client(base_url=base, headers=API_AUTH, timeout=60) as http:
                    # Bounded, on loopback: until the job has ended (at least 40 each), at most 400 each.
                    for count in range(400):
                        if count >= 40 and job_ended.is_set():
                            break
                        path = rng.choice(paths)
                        answer = http.get(path)
                        answers.append((path, answer.status_code))
                        if answer.status_code != 200:
                            problems.append((path, answer.status_code, answer.text[:300]))
                        elif path == f"/syncs/{job['id']}":
                            seen.add(answer.json()["state"])
                        elif path.startswith(("/users", "/gigs")):
                            ids = [item["id"] for item in answer.json()["items"]]
                            if ids != sorted(ids) or len(ids) != len(set(ids)):
                                problems.append((path, "a page out of order", ids))

            readers = [threading.Thread(target=reader, args=(seed,)) for seed in range(4)]
            for thread in readers:
                thread.start()
            with httpx.Client(base_url=base, headers=API_AUTH, timeout=60) as http:
                done = ended(http, f"/syncs/{job['id']}")
            job_ended.set()
            for thread in readers:
                thread.join(timeout=300)
            assert not any(thread.is_alive() for thread in readers)
            assert server.poll() is None
        assert problems == [] and len(answers) >= 160, problems[:5]
        assert seen & {"queued", "running"}, seen  # reads were answered while the job ran
        assert done["state"] == "succeeded", done
        assert state(url) == scenario["expected"][scenario["baseline"]]
        FIGURES["API reads during a running job"] += len(answers)
    finally:
        drop_database(scenario["server"], name)


SECRET = "hostile-Pw-0123"
HOSTILE = [
    ("GET", "/users?limit=99999999999999999999999", None),
    ("GET", "/users?limit=-1", None), ("GET", "/users?after=%00", None),
    ("GET", "/users?after=" + "9" * 5000, None), ("GET", "/users?after=1e999999", None),
    ("GET", "/users/%00", None), ("GET", "/users/..%2F..%2Fetc%2Fpasswd", None),
    ("GET", "/users/../../etc/passwd", None), ("GET", "/users/" + "x" * 10000, None),
    ("GET", "/gigs?state=%00", None), ("GET", "/gigs?poster=%00", None), ("GET", "/gigs?state=done&state=done", None),
    ("GET", "/gigs?limit=1&limit=2", None), ("GET", f"/gigs?poster=postgresql://u:{SECRET}@h/db", None),
    ("GET", "/read/..%2F..%2Fetc%2Fpasswd", None), ("GET", "/read/%00", None), ("GET", "/read/x%00y/first-chunk", None),
    ("GET", "/read/nope?limit=1e9", None), ("GET", "/read/nope?after=" + "%00" * 10, None),
    ("GET", "/read/first-chunk?limit=99999999999999999999", None), ("GET", "/snapshots?days=-5", None),
    ("GET", "/snapshots?days=99999999999999999999", None), ("GET", "/syncs/not-a-uuid", None),
    ("GET", "/syncs/00000000-0000-0000-0000-000000000000", None), ("GET", "/exports?limit=0", None),
    ("GET", f"/syncs?x=mongodb://u:{SECRET}@h/db", None),
    ("POST", "/syncs", {"collections": ["users\x00"]}), ("POST", "/syncs", {"collections": ["../etc"]}),
    ("POST", "/syncs", {"mode": "full", "extra": f"postgresql://u:{SECRET}@h/db"}),
    ("POST", "/syncs", [1, 2, 3]), ("POST", "/syncs", {"collections": ["users"] * 1000}),
    ("POST", "/exports", {"host": f"postgresql://u:{SECRET}@127.0.0.1:1/db", "user": "u", "database": "d",
                          "table": "t"}),
    ("POST", "/exports", {"host": "h", "user": "u", "database": "d", "table": "t", "port": 10 ** 30}),
    ("POST", "/exports", {"host": "h", "user": "u\x00", "database": "d", "table": "t"}),
    ("POST", "/exports", {"host": "h", "user": "u", "database": "d", "table": "t", "batch_size": -1}),
    ("POST", "/exports", {"host": "h", "user": "u", "database": "d", "table": "../../etc/passwd",
                          "password": SECRET, "port": 1}),
    ("POST", "/exports", {"host": "h", "user": "u", "database": "d", "projection": "orders", "tax_rate": "1e999",
                          "password": SECRET}),
    ("POST", "/exports", {"host": "h", "user": "u", "database": "d", "table": "t", "collection": "system.users"}),
    ("POST", "/exports", {"host": f"h password={SECRET}", "user": "u", "database": "d", "table": "t"}),
    ("POST", f"/syncs/{uuid.uuid4()}/restart", {}), ("POST", "/exports/not-a-uuid/restart", {"password": SECRET}),
    ("GET", "/page/rejects?collection=%00&reason=x", None),
    ("GET", "/page/rejects?collection=users&reason=x&after=" + "%00", None),
    ("POST", "/page/jobs/sync/not-a-uuid/restart", None), ("POST", "/page/jobs/..%2F..%2F/x/restart", None),
    # Not UTF-8, lone surrogates, bodies that are not JSON, a 5,000-digit number, dots all the way up.
    ("GET", "/users?after=%ED%A0%80", None), ("GET", "/users/%ED%A0%80", None), ("GET", "/read/%ED%A0%80", None),
    ("GET", "/read/x?after=%ff%fe", None), ("GET", "/gigs?poster=%ED%A0%80", None),
    ("GET", "/page/rejects?collection=users&reason=%ED%A0%80", None), ("GET", "/users/" + "%2e%2e/" * 50, None),
    ("POST", "/syncs", b"\xff\xfe" * 10), ("POST", "/syncs", b"{" * 100000),
    ("POST", "/syncs", b'{"collections": ["\\ud800"]}'),
    ("POST", "/exports", b'{"host": "h", "user": "\\ud800", "database": "d", "table": "t"}'),
    ("POST", "/exports", b'{"host": "h", "user": "u", "database": "d", "table": "t", "port": 1' + b"0" * 5000 + b"}"),
]


def test_hostile_parameters_are_refused_in_one_answer_never_a_500(scenario, tmp_path):
    name = copy_database(scenario["server"], scenario["baseline"])
    url = with_database(scenario["server"], name)
    try:
        settings = Settings(pg_url=url, mongo_url=scenario["mongo_url"])
        with TestClient(create_app(settings, API_TOKEN, source_timeout_s=2)) as client:
            for method, path, body in HOSTILE:
                if isinstance(body, bytes):
                    answer = client.request(method, path, headers={**API_AUTH, "content-type": "application/json"},
                                            content=body, follow_redirects=False)
                else:
                    answer = client.request(method, path, headers=API_AUTH, json=body, follow_redirects=False)
                assert answer.status_code < 500 or answer.status_code in (502, 503), (path, answer.text[:500])
                assert SECRET not in answer.text and "Traceback" not in answer.text, path
                if answer.status_code >= 400 and not path.startswith("/page"):
                    problem = answer.json()
                    assert set(problem) == {"error", "message", "why", "todo"}, (path, problem)
                FIGURES["hostile HTTP requests tried"] += 1
        with psycopg.connect(url) as connection:
            records = json.dumps(connection.execute("SELECT * FROM api_jobs").fetchall(), default=str)
        assert SECRET not in records
        assert state(url) == state(with_database(scenario["server"], scenario["baseline"])), "nothing changed"
    finally:
        drop_database(scenario["server"], name)
