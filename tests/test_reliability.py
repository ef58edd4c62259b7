"""Crashes, faults and concurrent runs: every document lands or is accounted for.

Each trial compares a checksum of every table (rows, user_skills pairs by
name, links, open rejects, hashes) with an undisturbed run on the same data.
``GIGSTERPG_SOAK=N`` multiplies the random kill trials for a longer run by hand.
"""
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

import psutil
import psycopg
import pymongo
import pytest
from psycopg import sql

from gigsterpg import commands
from gigsterpg.config import Settings
from gigsterpg.generate import write_dataset
from gigsterpg.lib.pg.db import SqlAlchemy
from gigsterpg.lib.pg.sync.engine.runner import RetryPolicy
from tests.conftest import TEMPLATE, with_database
from tests.figures import FIGURES
from tests.test_cli import run_cli

USERS, GIGS, BATCH = 300, 600, 50
FAST_RETRY = RetryPolicy(attempts=5, first_delay=0.05, max_delay=0.5)
# What a table holds, independent of surrogate keys and sequence values (a rolled-back batch burns ids).
STATE_QUERIES = {
    "users": "SELECT _id, created, updated, name, email, extra::text FROM users ORDER BY _id",
    "skills": "SELECT name FROM skills ORDER BY name",
    "user_skills": "SELECT u._id, k.name FROM user_skills us JOIN users u ON u.id = us.user_id"
                   " JOIN skills k ON k.id = us.skill_id ORDER BY 1, 2",
    "gigs": "SELECT g._id, g.created, g.updated, g.name, g.description, g.state, g.poster_ref, g.budget,"
            " g.extra::text, p._id FROM gigs g LEFT JOIN users p ON p.id = g.poster_id ORDER BY g._id",
    "open rejects": "SELECT collection, doc_id, reason, detail FROM sync_rejects WHERE resolved_at IS NULL"
                    " ORDER BY 1, 2",
    "hashes": "SELECT collection, _id, hash FROM sync_hashes ORDER BY 1, 2",
}


def state(url: str) -> dict:
    """A digest and a row count per table."""
    with psycopg.connect(url) as connection:
        result = {}
        for name, query in STATE_QUERIES.items():
            digest = hashlib.sha256()
            rows = connection.execute(query).fetchall()
            for row in rows:
                digest.update(repr(row).encode())
            result[name] = (len(rows), digest.hexdigest()[:16])
        return result


def copy_database(server_url: str, template: str) -> str:
    name = "r_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    return name


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def mutate(database, seed: int = 7) -> None:
    """Version 2 of the data: updates (skills too), inserts, and deletes of users and gigs."""
    rng = random.Random(seed)
    users = [doc["_id"] for doc in database.users.find({}, {"_id": 1})]
    gigs = [doc["_id"] for doc in database.gigs.find({}, {"_id": 1})]
    for doc_id in rng.sample(users, len(users) // 10):
        database.users.update_one({"_id": doc_id}, {"$set": {"name": f"renamed {doc_id}", "skills": ["Rust", "go"]}})
    for doc_id in rng.sample(gigs, len(gigs) // 10):
        database.gigs.update_one({"_id": doc_id}, {"$set": {"state": "done", "budget": rng.randint(1, 9999)}})
    database.users.delete_many({"_id": {"$in": rng.sample(users, len(users) // 20)}})
    database.gigs.delete_many({"_id": {"$in": rng.sample(gigs, len(gigs) // 20)}})
    database.users.insert_many([{"_id": f"new-{i}", "name": f"new user {i}", "skills": ["Elm", f"S{i % 7}"]}
                                for i in range(USERS // 20)])
    database.gigs.insert_many([{"_id": f"new-gig-{i}", "name": f"new gig {i}", "state": "unstarted",
                                "poster": f"new-{i % 7}"} for i in range(GIGS // 20)])


@pytest.fixture(scope="module")
def scenario(pg_server_url, mongo_server_url, template_url):
    """Version 1 synced into a baseline database, MongoDB moved on to version 2, and the undisturbed results."""
    mongo_name = "rel_" + uuid.uuid4().hex[:10]
    mongo_url = with_database(mongo_server_url, mongo_name)
    client = pymongo.MongoClient(mongo_url)
    write_dataset(client[mongo_name], USERS, GIGS, messy_rate=0.05, seed=3)
    baseline = copy_database(pg_server_url, TEMPLATE)
    commands.sync(Settings(pg_url=with_database(pg_server_url, baseline), mongo_url=mongo_url, batch_size=BATCH))
    mutate(client[mongo_name])
    expected = {}
    for start in (TEMPLATE, baseline):  # from empty (a first sync) and from version 1 (a re-sync)
        name = copy_database(pg_server_url, start)
        url = with_database(pg_server_url, name)
        report = commands.sync(Settings(pg_url=url, mongo_url=mongo_url, batch_size=BATCH))
        assert report.balanced
        expected[start] = state(url)
        drop_database(pg_server_url, name)
    assert expected[baseline]["users"][0] == client[mongo_name].users.count_documents({}) - \
        sum(1 for _ in client[mongo_name].users.find({"name": {"$not": {"$type": "string"}}}))
    yield {"server": pg_server_url, "mongo_url": mongo_url, "client": client, "db": client[mongo_name],
           "baseline": baseline, "expected": expected}
    drop_database(pg_server_url, baseline)
    client.drop_database(mongo_name)
    client.close()


def trial_database(scenario, start: str):
    name = copy_database(scenario["server"], start)
    return name, with_database(scenario["server"], name)


def last_run(url: str):
    with psycopg.connect(url) as connection:
        return connection.execute("SELECT status, stage, progress, retries, error FROM sync_runs"
                                  " ORDER BY id DESC LIMIT 1").fetchone()


def documents_lost(scenario, url: str) -> int:
    """Documents in MongoDB that are neither a row nor an open reject (must be 0)."""
    with psycopg.connect(url) as connection:
        lost = 0
        for collection in ("users", "gigs"):
            held = {row[0] for row in connection.execute(f"SELECT _id FROM {collection}")}
            held |= {row[0].split(" (duplicate ")[0] for row in connection.execute(
                "SELECT doc_id FROM sync_rejects WHERE collection = %s AND resolved_at IS NULL", (collection,))}
            from gigsterpg.lib.pg.sync.document import describe_id
            lost += sum(1 for doc in scenario["db"][collection].find({}, {"_id": 1})
                        if describe_id(doc["_id"]) not in held)
        return lost


KILL_POINTS = [
    (TEMPLATE, "fetched", 4), (TEMPLATE, "merged", 2), (TEMPLATE, "committed", 9), (TEMPLATE, "deleting", 1),
    ("baseline", "fetched", 10), ("baseline", "merged", 1), ("baseline", "merged", 7), ("baseline", "merged", 15),
    ("baseline", "committed", 3), ("baseline", "committed", 13), ("baseline", "deleting", 1),
    ("baseline", "deleting", 2), ("baseline", "finished", 1),
]


@pytest.mark.parametrize("start, point, hit", KILL_POINTS, ids=[f"{s[:4]}-{p}-{n}" for s, p, n in KILL_POINTS])
def test_a_run_killed_at_any_point_is_finished_by_the_next(scenario, tmp_path, start, point, hit):
    start = scenario["baseline"] if start == "baseline" else start
    name, url = trial_database(scenario, start)
    try:
        env = {"DB_URL_PSQL": url, "DB_URL_MONGO": scenario["mongo_url"]}
        killed = run_cli("sync", "--batch-size", str(BATCH), cwd=tmp_path,
                         env_extra={**env, "GIGSTERPG_KILL_AT": f"{point}:{hit}"})
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        status, stage, progress, _, _ = last_run(url)
        assert status == "running" and stage  # where it stopped, as committed
        again = run_cli("sync", "--batch-size", str(BATCH), cwd=tmp_path, env_extra=env)
        assert again.returncode == 0, again.stderr
        assert "DOES NOT HOLD" not in again.stdout
        assert state(url) == scenario["expected"][start]
        with psycopg.connect(url) as connection:
            statuses = [row[0] for row in connection.execute("SELECT status FROM sync_runs ORDER BY id")]
        assert statuses[-2:] == ["interrupted", "succeeded"]
        lost = documents_lost(scenario, url)
        assert lost == 0
        FIGURES["kill points tried"] += 1
        FIGURES["documents lost"] += lost
    finally:
        drop_database(scenario["server"], name)


def test_runs_killed_at_random_moments_converge(scenario, tmp_path):
    """SIGKILL at a random moment of a whole CLI run (start-up, read, merge, deletes), then finish and compare."""
    rng = random.Random(11)
    trials = 4 * int(os.environ.get("GIGSTERPG_SOAK", "1"))
    command = [sys.executable, "-m", "gigsterpg.cli", "sync", "--batch-size", str(BATCH), "--no-progress"]
    kills = 0
    for trial in range(trials):
        start = TEMPLATE if trial % 2 == 0 else scenario["baseline"]
        name, url = trial_database(scenario, start)
        env = {**os.environ, "DB_URL_PSQL": url, "DB_URL_MONGO": scenario["mongo_url"]}
        try:
            if trial < 2:  # how long a whole run takes, from each start: the kills spread over it
                began = time.monotonic()
                subprocess.run(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, check=True)
                scenario.setdefault("seconds", {})[start] = time.monotonic() - began
                drop_database(scenario["server"], name)
                name, url = trial_database(scenario, start)
                env["DB_URL_PSQL"] = url
            process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.1, 1.0) * scenario["seconds"][start])
            process.kill()
            kills += process.wait() == -signal.SIGKILL
            final = run_cli("sync", "--batch-size", str(BATCH), cwd=tmp_path,
                            env_extra={"DB_URL_PSQL": url, "DB_URL_MONGO": scenario["mongo_url"]})
            assert final.returncode == 0, final.stderr
            assert state(url) == scenario["expected"][start]
            FIGURES["documents lost"] += documents_lost(scenario, url)
        finally:
            drop_database(scenario["server"], name)
    FIGURES["kill points tried"] += kills
    assert kills >= trials // 2  # most kills landed inside a run


@pytest.fixture
def fail_point(scenario):
    """Arm a failCommand on the MongoDB-protocol server (for gigsterpg's connections only); disarmed after."""
    admin = scenario["client"].admin

    def arm(mode, **data):
        try:
            admin.command({"configureFailPoint": "failCommand", "mode": mode,
                           "data": {"appName": "gigsterpg", **data}})
        except pymongo.errors.OperationFailure as err:
            pytest.skip(f"the MongoDB server has no test commands ({err})")
    yield arm
    admin.command({"configureFailPoint": "failCommand", "mode": "off"})


def _sync(url, scenario, **kwargs):
    return commands.sync(Settings(pg_url=url, mongo_url=scenario["mongo_url"], batch_size=BATCH), **kwargs)


@pytest.mark.parametrize("mode, data", [
    ({"skip": 3, "times": 1}, {"failCommands": ["getMore"], "closeConnection": True}),
    ({"skip": 9, "times": 2}, {"failCommands": ["getMore"], "closeConnection": True}),
    ({"times": 3}, {"failCommands": ["find"], "errorCode": 91}),  # ShutdownInProgress, past pymongo's own retry
], ids=["connection-dropped-mid-cursor", "dropped-twice", "server-shutting-down"])
def test_mongodb_going_away_mid_run_is_retried_and_resumed(scenario, fail_point, mode, data):
    name, url = trial_database(scenario, scenario["baseline"])
    try:
        fail_point(mode, **data)
        report = _sync(url, scenario, retry=FAST_RETRY)
        assert report.status == "succeeded" and report.balanced
        status, stage, progress, retries, _ = last_run(url)
        assert status == "succeeded" and retries >= 1 and stage == "gigs: done"
        assert state(url) == scenario["expected"][scenario["baseline"]]
        FIGURES["faults injected"] += retries
        FIGURES["documents lost"] += documents_lost(scenario, url)
    finally:
        drop_database(scenario["server"], name)


def test_a_fault_that_does_not_pass_fails_the_run_in_one_line(scenario, fail_point, tmp_path):
    name, url = trial_database(scenario, scenario["baseline"])
    try:
        fail_point("alwaysOn", failCommands=["getMore"], closeConnection=True)
        result = run_cli("sync", "--batch-size", str(BATCH), "--retries", "2", cwd=tmp_path,
                         env_extra={"DB_URL_PSQL": url, "DB_URL_MONGO": scenario["mongo_url"]})
        assert result.returncode == 1
        *warnings, last = result.stderr.strip().splitlines()
        assert last.startswith("FAILED: cannot reach MongoDB") and "Traceback" not in result.stderr
        assert len(warnings) == 2 and all("retry" in line and "Timeout" not in line for line in warnings)
        status, stage, _, retries, error = last_run(url)
        assert (status, retries) == ("failed", 2) and stage.startswith("users") and error
        FIGURES["faults injected"] += 3
    finally:
        drop_database(scenario["server"], name)


def _terminate_when(url: str, collection: str, documents: int, done: threading.Event, fired: list) -> None:
    """Kill the sync's PostgreSQL connections once ``collection`` has ``documents`` committed."""
    with psycopg.connect(url, autocommit=True) as watcher:
        while not done.is_set():
            row = watcher.execute("SELECT (progress->>%s)::int FROM sync_runs WHERE status = 'running'",
                                  (collection,)).fetchone()
            if row and row[0] is not None and row[0] >= documents:
                watcher.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                " WHERE datname = current_database() AND application_name = 'gigsterpg'")
                fired.append(collection)
                return
            time.sleep(0.01)


def test_lost_postgresql_connections_are_retried_and_resumed(scenario):
    name, url = trial_database(scenario, scenario["baseline"])
    done, fired = threading.Event(), []
    watchers = [threading.Thread(target=_terminate_when, args=(url, c, n, done, fired)) for c, n in
                (("users", 100), ("gigs", 200))]
    try:
        for watcher in watchers:
            watcher.start()
        report = _sync(url, scenario, retry=FAST_RETRY)
        done.set()
        assert report.status == "succeeded" and report.balanced
        assert last_run(url)[3] == len(fired) >= 1
        assert state(url) == scenario["expected"][scenario["baseline"]]
        FIGURES["faults injected"] += len(fired)
        FIGURES["documents lost"] += documents_lost(scenario, url)
    finally:
        done.set()
        for watcher in watchers:
            watcher.join()
        drop_database(scenario["server"], name)


def test_postgresql_restarting_mid_run_is_retried_and_resumed(scenario, tmp_path):
    if os.environ.get("TEST_DB_URL_PSQL"):
        pytest.skip("restarts a server of its own (embedded)")
    from gigsterpg.embedded import EmbeddedPostgres
    folder = tmp_path / "pg"
    server = EmbeddedPostgres(folder)
    url = server.create_database("restart")
    handle = SqlAlchemy(url)
    commands.migrate(handle)
    handle.dispose()
    restarted = []

    def restart_mid_run():
        nonlocal server
        with psycopg.connect(url, autocommit=True) as watcher:
            while True:
                row = watcher.execute("SELECT (progress->>'users')::int FROM sync_runs"
                                      " WHERE status = 'running'").fetchone()
                if row and row[0] and row[0] >= 100:
                    break
                time.sleep(0.01)
        server.stop()
        time.sleep(0.5)
        server = EmbeddedPostgres(folder)
        restarted.append(True)

    thread = threading.Thread(target=restart_mid_run)
    thread.start()
    try:
        report = _sync(url, scenario, retry=RetryPolicy(attempts=6, first_delay=0.2, max_delay=2))
        thread.join()
        assert restarted and report.status == "succeeded" and report.balanced
        assert last_run(url)[3] >= 1
        assert state(url) == scenario["expected"][TEMPLATE]
        FIGURES["faults injected"] += 1
    finally:
        thread.join()
        server.stop()


def _versions(url: str) -> dict:
    """Every row's physical version: a table whose versions are equal was not rewritten."""
    with psycopg.connect(url) as connection:
        return {table: connection.execute(f"SELECT ctid::text, xmin::text FROM {table} ORDER BY 1").fetchall()
                for table in ("users", "user_skills", "gigs", "sync_rejects")}


def test_hashes_lost_in_a_crash_cost_a_comparison_not_a_rewrite(scenario, tmp_path):
    """sync_hashes is UNLOGGED: a crash of PostgreSQL empties it; the next run compares every
    document with its row, rewrites none, records the hashes again, and the data is what it was."""
    if os.environ.get("TEST_DB_URL_PSQL"):
        pytest.skip("crashes a server of its own (embedded)")
    from gigsterpg.embedded import EmbeddedPostgres
    folder = tmp_path / "pg"
    server = EmbeddedPostgres(folder)
    try:
        url = server.create_database("crash")
        first = _sync(url, scenario)
        assert first.status == "succeeded"
        before, versions = state(url), _versions(url)
        assert before["hashes"][0] > 0
        pid = server.server.get_pid()
        os.kill(pid, signal.SIGQUIT)  # what `pg_ctl stop -m immediate` sends: no shutdown checkpoint
        deadline = time.monotonic() + 60
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        server.stop()  # forgets the crashed server (it stops nothing more)
        server = EmbeddedPostgres(folder)  # starts with crash recovery
        url = server.url("crash")
        assert state(url)["hashes"][0] == 0, "crash recovery empties an unlogged table"

        report = _sync(url, scenario)
        assert report.status == "succeeded" and report.balanced
        assert all(c.counts.inserted == c.counts.updated == c.counts.deleted == 0
                   for c in report.collections.values())
        assert _versions(url) == versions
        assert state(url) == before
    finally:
        server.stop()


def test_two_syncs_started_together_never_write_at_once(scenario, tmp_path):
    name, url = trial_database(scenario, TEMPLATE)
    env = {**os.environ, "DB_URL_PSQL": url, "DB_URL_MONGO": scenario["mongo_url"]}
    try:
        command = [sys.executable, "-m", "gigsterpg.cli", "sync", "--batch-size", str(BATCH), "--no-progress"]
        plain = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        outcomes = sorted((p.wait(), p.stderr.read()) for p in plain)
        for process in plain:
            process.stdout.close()
            process.stderr.close()
        if outcomes[1][0] != 0:  # one ran, the other refused in one line
            assert outcomes[0][0] == 0 and outcomes[1][0] == 1
            assert outcomes[1][1].startswith("FAILED: another sync is running ("), outcomes[1][1]
        waiting = [subprocess.Popen(command + ["--wait", "120"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True) for _ in range(2)]
        assert [p.wait() for p in waiting] == [0, 0], [p.stderr.read() for p in waiting]
        for process in waiting:
            process.stderr.close()
        with psycopg.connect(url) as connection:
            runs = connection.execute("SELECT started_at, finished_at, status FROM sync_runs ORDER BY started_at"
                                      ).fetchall()
        succeeded = [run for run in runs if run[2] == "succeeded"]
        assert len(succeeded) >= 3
        for earlier, later in zip(succeeded, succeeded[1:]):
            assert earlier[1] <= later[0] or later[2] != "succeeded"  # never both writing
        assert state(url) == scenario["expected"][TEMPLATE]
    finally:
        drop_database(scenario["server"], name)


def test_wait_gives_up_after_its_time_in_one_line(pg_url, mongo_url, mongo_db, sync_lock, tmp_path):
    mongo_db.users.insert_one({"_id": 1, "name": "u"})
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done"})
    env = {"DB_URL_PSQL": pg_url, "DB_URL_MONGO": mongo_url}
    result = run_cli("sync", "--wait", "1.5", cwd=tmp_path, env_extra=env)
    assert result.returncode == 1
    assert result.stderr.startswith("FAILED: another sync is running (another sync) (waited 1.5 s)")


def test_readers_never_see_half_a_batch(pg_server_url, mongo_db, settings):
    """Users are renamed and get a third skill in version 2: a reader sees both changes of a user or neither."""
    mongo_db.users.insert_many([{"_id": i, "name": f"v1 {i}", "skills": [f"a{i % 5}", f"b{i % 3}"]}
                                for i in range(1500)])
    mongo_db.gigs.insert_many([{"_id": i, "name": "g", "state": "done", "poster": i % 1500} for i in range(1500)])
    commands.sync(settings)
    mongo_db.users.update_many({}, [{"$set": {"name": {"$concat": ["v2 ", {"$toString": "$_id"}]},
                                              "skills": {"$concatArrays": ["$skills", ["c"]]}}}])
    broken, snapshots, mixed = [], 0, 0
    done = threading.Event()

    def read():
        nonlocal snapshots, mixed
        with psycopg.connect(settings.pg_url) as reader:
            while not done.is_set():
                with reader.transaction():
                    reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    bad = reader.execute(
                        "SELECT count(*) FROM users u WHERE (SELECT count(*) FROM user_skills us"
                        " WHERE us.user_id = u.id) <> CASE WHEN u.name LIKE 'v2 %' THEN 3 ELSE 2 END").fetchone()[0]
                    versions = reader.execute("SELECT count(DISTINCT left(name, 2)) FROM users").fetchone()[0]
                    orphans = reader.execute("SELECT count(*) FROM gigs WHERE poster_id IS NULL").fetchone()[0]
                snapshots += 1
                mixed += versions == 2
                if bad or orphans:
                    broken.append((bad, orphans))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        commands.sync(Settings(pg_url=settings.pg_url, mongo_url=settings.mongo_url, batch_size=100))
    finally:
        done.set()
        thread.join()
    assert broken == [] and snapshots > 0
    assert mixed > 0, "no snapshot fell in the middle of the run: the test proved nothing"


def test_a_run_found_running_by_a_dead_process_is_marked_interrupted(scenario, tmp_path):
    name, url = trial_database(scenario, scenario["baseline"])
    try:
        env = {"DB_URL_PSQL": url, "DB_URL_MONGO": scenario["mongo_url"]}
        run_cli("sync", "--batch-size", str(BATCH), cwd=tmp_path, env_extra={**env, "GIGSTERPG_KILL_AT": "merged:2"})
        result = run_cli("status", cwd=tmp_path, env_extra=env)
        assert " running " in result.stdout
        run_cli("sync", cwd=tmp_path, env_extra=env)
        result = run_cli("status", cwd=tmp_path, env_extra=env)
        assert " interrupted " in result.stdout and "stopped at users: loading" in result.stdout
    finally:
        drop_database(scenario["server"], name)


def test_an_interrupted_run_is_recorded_as_interrupted(scenario, tmp_path):
    name, url = trial_database(scenario, TEMPLATE)
    try:
        process = subprocess.Popen([sys.executable, "-m", "gigsterpg.cli", "sync", "--batch-size", "10"],
                                   cwd=tmp_path, env={**os.environ, "DB_URL_PSQL": url,
                                                      "DB_URL_MONGO": scenario["mongo_url"]},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with psycopg.connect(url) as connection:
                row = connection.execute("SELECT progress->>'users' FROM sync_runs").fetchone()
            if row and row[0]:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 130
        stderr = process.stderr.read()
        process.stderr.close()
        assert stderr.strip().splitlines()[-1].startswith("FAILED: interrupted") and "Traceback" not in stderr
        assert last_run(url)[0] == "interrupted"
    finally:
        drop_database(scenario["server"], name)


def test_the_end_of_a_run_is_recorded_even_when_its_connection_is_gone(pg):
    """A signal can leave the run's connection in the middle of a command: the end goes through another."""
    from gigsterpg.lib.pg.sync.engine.runner import RunReport, begin_run, end_run
    raw = pg.engine.raw_connection()
    run_id = begin_run(raw.driver_connection, ["users"])
    raw.driver_connection.close()
    end_run(raw.driver_connection, RunReport(run_id, "interrupted"), "stopped by a signal", pg.engine, raw)
    with pg.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT status, error FROM sync_runs").all() == [
            ("interrupted", "stopped by a signal")]
    other = pg.engine.raw_connection()
    try:
        assert begin_run(other.driver_connection, ["users"]) > run_id  # the lock went with the connection
    finally:
        other.close()
