"""Crashes, faults and concurrent runs: every document lands or is accounted for.

Each trial compares a checksum of every table (rows, user_skills pairs by
name, links, open rejects, hashes) with an undisturbed run on the same data.
``GIGSTERPG_SOAK=N`` multiplies the random kill trials for a longer run by hand.
"""
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

from gigsterpg import commands
from gigsterpg.config import Settings
from gigsterpg.connections import migrate
from gigsterpg.fixtures.generate import write_dataset
from gigsterpg.lib.pg.db import SqlAlchemy
from gigsterpg.lib.pg.sync.engine.runner import RetryPolicy
from tests.figures import FIGURES
from tests.helpers import (TEMPLATE, assert_nothing_lost, copy_database, drop_database, mongo_fail_point, run_cli,
                           run_held, state, wait_until, with_database)

USERS, GIGS, BATCH = 300, 600, 50
FAST_RETRY = RetryPolicy(attempts=5, first_delay=0.05, max_delay=0.5)


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
    expected, seconds = {}, {}
    for start in (TEMPLATE, baseline):  # from empty (a first sync) and from version 1 (a re-sync)
        name = copy_database(pg_server_url, start)
        url = with_database(pg_server_url, name)
        began = time.monotonic()
        report = commands.sync(Settings(pg_url=url, mongo_url=mongo_url, batch_size=BATCH))
        seconds[start] = time.monotonic() - began  # where the random kills of a run from ``start`` spread
        assert report.balanced
        expected[start] = state(url)
        drop_database(pg_server_url, name)
    assert expected[baseline]["users"][0] == client[mongo_name].users.count_documents({}) - \
        sum(1 for _ in client[mongo_name].users.find({"name": {"$not": {"$type": "string"}}}))
    yield {"server": pg_server_url, "mongo_url": mongo_url, "client": client, "db": client[mongo_name],
           "baseline": baseline, "expected": expected, "seconds": seconds}
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
        assert_nothing_lost(scenario["db"], url)
        FIGURES["kill points tried"] += 1
        FIGURES["kill points tried: fixed points"] += 1
    finally:
        drop_database(scenario["server"], name)


def _stopped_in_a_run(process: subprocess.Popen, delay_s: float) -> bool:
    """SIGSTOP ``process`` ``delay_s`` after it started; whether that caught it still running (else it ended)."""
    time.sleep(delay_s)  # a random moment, not a timing asserted: a stop that comes too late is tried again
    process.send_signal(signal.SIGSTOP)

    def settled():
        if process.poll() is not None:
            return "ended"
        return "stopped" if psutil.Process(process.pid).status() == psutil.STATUS_STOPPED else None

    return wait_until(settled, "the process to stop or end", 30, every_s=0.01) == "stopped"


def test_runs_killed_at_random_moments_converge(scenario, tmp_path):
    """SIGKILL at a random moment of a whole CLI run (start-up, read, merge, deletes), then finish and compare.

    The process is frozen (SIGSTOP) at a random moment of about a run's length, then killed: a kill
    always lands inside the run. A moment past the end of the run (a fast machine) is drawn again,
    earlier, on a fresh copy; each trial ends with exactly one kill.
    """
    rng = random.Random(11)
    trials = 4 * int(os.environ.get("GIGSTERPG_SOAK", "1"))
    command = [sys.executable, "-m", "gigsterpg.cli", "sync", "--batch-size", str(BATCH), "--no-progress"]
    for trial in range(trials):
        start = TEMPLATE if trial % 2 == 0 else scenario["baseline"]
        span = scenario["seconds"][start] + 1.0  # the CLI's start-up (imports, connections) comes first
        for attempt in range(8):
            name, url = trial_database(scenario, start)
            env = {**os.environ, "DB_URL_PSQL": url, "DB_URL_MONGO": scenario["mongo_url"]}
            env.pop("GIGSTERPG_KILL_AT", None)
            process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            try:
                if _stopped_in_a_run(process, rng.uniform(0.0, 1.0) * span / 2 ** attempt):
                    break
                assert process.returncode == 0, "the run failed on its own"
            except BaseException:
                process.kill()
                process.wait()
                drop_database(scenario["server"], name)
                raise
            drop_database(scenario["server"], name)  # it ended first: draw an earlier moment
        else:
            raise AssertionError(f"trial {trial}: 8 moments in a row came after the run had ended")
        try:
            process.kill()
            assert process.wait() == -signal.SIGKILL
            with psycopg.connect(url) as connection:
                runs = connection.execute("SELECT status FROM sync_runs WHERE pid = %s", (process.pid,)).fetchall()
            # Killed in its start-up (no record yet), during the run, or printing its summary.
            assert runs in ([], [("running",)], [("succeeded",)]), runs
            final = run_cli("sync", "--batch-size", str(BATCH), cwd=tmp_path,
                            env_extra={"DB_URL_PSQL": url, "DB_URL_MONGO": scenario["mongo_url"]})
            assert final.returncode == 0, final.stderr
            assert state(url) == scenario["expected"][start]
            assert_nothing_lost(scenario["db"], url)
            FIGURES["kill points tried"] += 1
            FIGURES["kill points tried: random moments of a sync"] += 1
        finally:
            drop_database(scenario["server"], name)


@pytest.fixture
def fail_point(scenario):
    """Arm a failCommand on the MongoDB-protocol server (for gigsterpg's connections only); disarmed after."""
    with mongo_fail_point(scenario["client"]) as arm:
        yield arm


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
        assert_nothing_lost(scenario["db"], url)
        FIGURES["faults injected"] += retries
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


def _in_thread(work) -> tuple:
    """``work()`` on a thread of its own; (the thread, a list that will hold its error, if any)."""
    errors = []

    def run():
        try:
            work()
        except BaseException as err:  # raised again by the test
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_lost_postgresql_connections_are_retried_and_resumed(scenario):
    name, url = trial_database(scenario, scenario["baseline"])
    fired = []

    def terminate_mid_run():
        """The sync's connections killed while it waits at a batch: 100 users, then 200 gigs committed."""
        for collection, documents in (("users", 100), ("gigs", 200)):
            with run_held(url, lambda progress: (progress.get(collection) or 0) >= documents,
                          f"{documents} {collection} committed"):
                with psycopg.connect(url, autocommit=True) as admin:
                    killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                           " WHERE datname = current_database() AND application_name = 'gigsterpg'"
                                           ).fetchone()[0]
            fired.append((collection, killed))

    watcher, errors = _in_thread(terminate_mid_run)
    try:
        report = _sync(url, scenario, retry=FAST_RETRY)
        watcher.join()
        assert errors == []
        assert [collection for collection, _ in fired] == ["users", "gigs"] and all(k >= 1 for _, k in fired)
        assert report.status == "succeeded" and report.balanced
        assert last_run(url)[3] == 2, "one retry per lost connection"
        assert state(url) == scenario["expected"][scenario["baseline"]]
        assert_nothing_lost(scenario["db"], url)
        FIGURES["faults injected"] += len(fired)
    finally:
        watcher.join()
        drop_database(scenario["server"], name)


def test_postgresql_restarting_mid_run_is_retried_and_resumed(scenario, tmp_path):
    if os.environ.get("TEST_DB_URL_PSQL"):
        pytest.skip("restarts a server of its own (embedded)")
    from gigsterpg.fixtures.embedded import EmbeddedPostgres
    folder = tmp_path / "pg"
    server = EmbeddedPostgres(folder)
    url = server.create_database("restart")
    handle = SqlAlchemy(url)
    migrate(handle)
    handle.dispose()
    restarted = []

    def restart_mid_run():
        """PostgreSQL stopped while the sync waits at a batch (100 users committed), then started again."""
        nonlocal server
        with run_held(url, lambda progress: (progress.get("users") or 0) >= 100, "100 users committed"):
            server.stop()
        server = EmbeddedPostgres(folder)
        restarted.append(True)

    watcher, errors = _in_thread(restart_mid_run)
    try:
        report = _sync(url, scenario, retry=RetryPolicy(attempts=6, first_delay=0.2, max_delay=2))
        watcher.join()
        assert errors == [] and restarted
        assert report.status == "succeeded" and report.balanced
        assert last_run(url)[3] >= 1
        assert state(url) == scenario["expected"][TEMPLATE]
        assert_nothing_lost(scenario["db"], url)
        FIGURES["faults injected"] += 1
    finally:
        watcher.join()
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
    from gigsterpg.fixtures.embedded import EmbeddedPostgres
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
        wait_until(lambda: not psutil.pid_exists(pid), "the crashed postmaster to exit", every_s=0.1)
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
    from gigsterpg.lib.pg.sync.engine.runner import LOCK_KEY
    name, url = trial_database(scenario, TEMPLATE)
    env = {**os.environ, "DB_URL_PSQL": url, "DB_URL_MONGO": scenario["mongo_url"]}
    env.pop("GIGSTERPG_KILL_AT", None)
    command = [sys.executable, "-m", "gigsterpg.cli", "sync", "--batch-size", str(BATCH), "--no-progress"]

    def start(*extra, stderr=subprocess.PIPE):
        return subprocess.Popen(command + list(extra), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                stderr=stderr, text=True)

    try:
        # A race: one runs; the other refuses in one line, or runs after it if the first was already done.
        racing = [start() for _ in range(2)]
        outcomes = sorted((p.communicate(timeout=300)[1], p.returncode) for p in racing)
        codes = sorted(code for _, code in outcomes)
        assert codes in ([0, 0], [0, 1]), outcomes
        if codes == [0, 1]:
            refusal = next(err for err, code in outcomes if code == 1)
            assert refusal.startswith("FAILED: another sync is running ("), refusal
        # While another holds the lock: plain runs refuse, --wait runs wait, then run one after the other.
        holder = psycopg.connect(url, autocommit=True)
        try:
            holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            logs = [tmp_path / f"waiting-{i}.log" for i in range(2)]
            waiting = []
            for log in logs:
                with open(log, "w") as stderr:
                    waiting.append(start("--wait", "300", "--log-level", "info", stderr=stderr))
            for refused in [start() for _ in range(2)]:
                err = refused.communicate(timeout=120)[1]
                assert refused.returncode == 1 and err.startswith("FAILED: another sync is running (another sync)")
            for log, process in zip(logs, waiting):
                def says_it_waits(log=log, process=process):
                    assert process.poll() is None, log.read_text()
                    return "waiting for" in log.read_text()

                wait_until(says_it_waits, f"the sync logging to {log.name} to wait for the lock")
        finally:
            holder.close()  # the lock goes with the connection
        for log, process in zip(logs, waiting):
            assert process.wait(timeout=300) == 0, log.read_text()
        with psycopg.connect(url) as connection:
            runs = connection.execute("SELECT started_at, finished_at, status FROM sync_runs ORDER BY started_at"
                                      ).fetchall()
        assert [status for *_, status in runs] == ["succeeded"] * (codes.count(0) + 2)
        for earlier, later in zip(runs, runs[1:]):
            assert earlier[1] <= later[0], f"two runs wrote at once: {earlier} and {later}"
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
    broken, snapshots = [], 0
    done = threading.Event()

    def read():
        nonlocal snapshots
        with psycopg.connect(settings.pg_url) as reader:
            while not done.is_set():
                with reader.transaction():
                    reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    bad = reader.execute(
                        "SELECT count(*) FROM users u WHERE (SELECT count(*) FROM user_skills us"
                        " WHERE us.user_id = u.id) <> CASE WHEN u.name LIKE 'v2 %' THEN 3 ELSE 2 END").fetchone()[0]
                    orphans = reader.execute("SELECT count(*) FROM gigs WHERE poster_id IS NULL").fetchone()[0]
                snapshots += 1
                if bad or orphans:
                    broken.append((bad, orphans))

    thread = threading.Thread(target=read)
    thread.start()
    outcome = {}
    try:
        syncing, errors = _in_thread(lambda: outcome.setdefault("report", commands.sync(
            Settings(pg_url=settings.pg_url, mongo_url=settings.mongo_url, batch_size=100))))
        # One snapshot certainly in the middle of the run: taken while the sync waits after 500 users.
        with run_held(settings.pg_url, lambda progress: 500 <= (progress.get("users") or 0) < 1500,
                      "500 to 1400 users committed") as (progress, _):
            with psycopg.connect(settings.pg_url) as middle:
                names = middle.execute("SELECT left(name, 2), count(*) FROM users GROUP BY 1 ORDER BY 1").fetchall()
        syncing.join()
    finally:
        done.set()
        thread.join()
    assert errors == [] and outcome["report"].status == "succeeded"
    assert names == [("v1", 1500 - progress["users"]), ("v2", progress["users"])], (names, progress)
    assert broken == [] and snapshots > 0, broken


def test_a_run_found_running_by_a_dead_process_is_marked_interrupted(scenario, tmp_path):
    name, url = trial_database(scenario, scenario["baseline"])
    try:
        env = {"DB_URL_PSQL": url, "DB_URL_MONGO": scenario["mongo_url"]}
        killed = run_cli("sync", "--batch-size", str(BATCH), cwd=tmp_path,
                         env_extra={**env, "GIGSTERPG_KILL_AT": "merged:2"})
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        result = run_cli("status", cwd=tmp_path, env_extra=env)
        assert " running " in result.stdout
        again = run_cli("sync", cwd=tmp_path, env_extra=env)
        assert again.returncode == 0, again.stderr
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
        # Certainly in the middle of the run: SIGTERM while it waits at a batch after 50 users.
        with run_held(url, lambda progress: (progress.get("users") or 0) >= 50, "50 users committed"):
            process.send_signal(signal.SIGTERM)
        try:
            # communicate, not wait: it drains stderr, so a chatty run cannot block on a full pipe.
            _, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
            raise AssertionError(f"the run did not end within 120 s of SIGTERM; its stderr:\n{stderr[-4000:]}")
        assert process.returncode == 130, stderr
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
