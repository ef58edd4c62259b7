"""Continuous sync: MongoDB's change streams applied to PostgreSQL, across kills and lost positions."""
import os
import random
import signal
import subprocess
import sys
import threading
import time

import bson
import psycopg
import pymongo
import pytest

from gigsterpg import commands
from gigsterpg.config import Settings
from gigsterpg.exc import SourceError
from gigsterpg.lib import status as status_report
from gigsterpg.lib.pg.sync.engine.follow import behind
from gigsterpg.lib.pg.sync.engine.runner import RetryPolicy
from tests.figures import FIGURES
from tests.helpers import (TEMPLATE, assert_nothing_lost, copy_database, drop_database, run_cli, state, wait_until,
                           with_database)

FAST = RetryPolicy(attempts=5, first_delay=0.05, max_delay=0.5)


def position(url):
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT token, last_event_at FROM sync_followers WHERE name = 'main'").fetchone()
    return (bson.decode(row[0]), row[1]) if row and row[0] else (None, None)


def wait_caught_up(url, mongo_db, timeout=60.0):
    """Until the follower's saved position has no event after it."""
    def caught_up():
        token, last = position(url)
        return token is not None and behind(mongo_db, token, last, budget_s=1.0)["events"] == 0

    wait_until(caught_up, "the follower to catch up", timeout, every_s=0.1)


class Background:
    """``commands.follow`` in a thread, stopped (and its error raised) on exit."""

    def __init__(self, settings, **kwargs):
        self.stop = threading.Event()
        self.error = self.report = None
        self.thread = threading.Thread(target=self._run, args=(settings, kwargs))

    def _run(self, settings, kwargs):
        try:
            self.report = commands.follow(settings, stop=self.stop, retry=FAST, **kwargs)
        except BaseException as err:  # handed to the test
            self.error = err

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=60)
        if self.error is not None:
            raise self.error
        assert not self.thread.is_alive(), "the follower did not stop within 60 s of being asked to"


def reference(pg_server_url, mongo_url):
    """The tables a full sync of MongoDB as it is now gives, in a database of their own."""
    name = copy_database(pg_server_url, TEMPLATE)
    url = with_database(pg_server_url, name)
    try:
        commands.sync(Settings(pg_url=url, mongo_url=mongo_url), mode="full")
        return state(url)
    finally:
        drop_database(pg_server_url, name)


def skills_of(url, user_id):
    with psycopg.connect(url) as connection:
        return {row[0] for row in connection.execute(
            "SELECT lower(k.name) FROM user_skills us JOIN users u ON u.id = us.user_id JOIN skills k"
            " ON k.id = us.skill_id WHERE u._id = %s", (user_id,))}


def applied(url) -> int:
    """Changes the followers have applied so far (0 before the first)."""
    row = one(url, "SELECT events_applied FROM sync_followers WHERE name = 'main'")
    return row[0] if row else 0


def one(url, query, *params):
    with psycopg.connect(url) as connection:
        return connection.execute(query, params).fetchone()


def test_following_applies_every_kind_of_change(settings, mongo_db, pg_server_url):
    mongo_db.users.insert_many([{"_id": i, "name": f"u{i}", "skills": ["Go", "SQL"]} for i in range(50)])
    mongo_db.gigs.insert_many([{"_id": i, "name": f"g{i}", "state": "done", "poster": i} for i in range(50)])
    with Background(settings) as follower:
        wait_caught_up(settings.pg_url, mongo_db)
        assert one(settings.pg_url, "SELECT count(*) FROM users") == (50,)
        mongo_db.users.insert_one({"_id": 100, "name": "new", "skills": ["Elm"]})
        mongo_db.users.update_one({"_id": 1}, {"$set": {"name": "renamed", "skills": ["go", "Rust"]}})
        mongo_db.users.replace_one({"_id": 2}, {"name": "replaced"})
        mongo_db.users.delete_one({"_id": 3})
        mongo_db.gigs.insert_one({"_id": 200, "name": "early", "state": "unstarted", "poster": 300})
        mongo_db.gigs.update_one({"_id": 5}, {"$set": {"state": "cancelled"}})
        mongo_db.gigs.delete_one({"_id": 6})
        wait_caught_up(settings.pg_url, mongo_db)
        mongo_db.users.insert_one({"_id": 300, "name": "late poster"})  # the gig's poster, after the gig
        mongo_db.users.update_one({"_id": 9}, {"$set": {"email": "x"}})  # now invalid: a reject
        wait_caught_up(settings.pg_url, mongo_db)
    assert (follower.report.events, follower.report.resyncs) == (9, 0)
    url = settings.pg_url
    assert one(url, "SELECT name FROM users WHERE _id = '1'") == ("renamed",)
    assert skills_of(url, "1") == {"go", "rust"} and skills_of(url, "2") == set()
    assert one(url, "SELECT count(*) FROM users WHERE _id = '3'") == (0,)
    assert one(url, "SELECT poster_id IS NULL, poster_ref FROM gigs WHERE _id = '3'") == (True, "3")
    assert one(url, "SELECT u._id FROM gigs g JOIN users u ON u.id = g.poster_id WHERE g._id = '200'") == ("300",)
    assert one(url, "SELECT reason FROM sync_rejects WHERE doc_id = '9' AND resolved_at IS NULL") == ("invalid email",)
    assert state(url) == reference(pg_server_url, settings.mongo_url)
    with psycopg.connect(url) as connection:
        modes = [row[0] for row in connection.execute("SELECT mode FROM sync_runs ORDER BY id")]
    assert modes == ["full", "follow"]


def test_a_killed_follower_resumes_where_it_stopped(settings, mongo_db, pg_server_url, tmp_path):
    mongo_db.users.insert_many([{"_id": i, "name": f"u{i}", "skills": [f"s{i % 4}"]} for i in range(100)])
    mongo_db.gigs.insert_many([{"_id": i, "name": f"g{i}", "state": "done", "poster": i} for i in range(100)])
    stop_writing = threading.Event()
    written = [0]

    def write():
        rng = random.Random(5)
        while not stop_writing.is_set():
            i = rng.randrange(150)
            choice = rng.random()
            if choice < 0.4:
                document = {"name": f"u{i} v{written[0]}", "skills": [f"s{rng.randrange(6)}"]}
                mongo_db.users.replace_one({"_id": i}, document, upsert=True)
            elif choice < 0.6:
                mongo_db.users.delete_one({"_id": i})
            elif choice < 0.9:
                mongo_db.gigs.replace_one({"_id": i}, {"name": f"g{i}", "state": rng.choice(["done", "cancelled"]),
                                                       "poster": rng.randrange(150)}, upsert=True)
            else:
                mongo_db.gigs.delete_one({"_id": i})
            written[0] += 1
            time.sleep(0.002)

    env = {**os.environ, "DB_URL_PSQL": settings.pg_url, "DB_URL_MONGO": settings.mongo_url}
    command = [sys.executable, "-m", "gigsterpg.cli", "sync", "--follow"]
    rng = random.Random(9)
    writer = threading.Thread(target=write)
    writer.start()
    kills = int(os.environ.get("GIGSTERPG_SOAK", "1")) * 4
    applied_before_kills = []
    try:
        for _ in range(kills):
            before = applied(settings.pg_url)
            target = before + rng.randint(1, 60)  # killed once it has applied this many changes of its own
            process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            try:
                def following():
                    assert process.poll() is None, f"the follower ended by itself (exit {process.returncode})"
                    return one(settings.pg_url, "SELECT count(*) FROM sync_runs WHERE pid = %s AND mode = 'follow'"
                               " AND status = 'running'", process.pid) == (1,) and applied(settings.pg_url) >= target

                wait_until(following, f"the follower (pid {process.pid}) to apply {target - before} changes", 120)
            finally:
                process.kill()
            assert process.wait() == -signal.SIGKILL
            applied_before_kills.append(applied(settings.pg_url) - before)
    finally:
        stop_writing.set()
        writer.join()
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        wait_caught_up(settings.pg_url, mongo_db, timeout=120)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Stopped following:" in out and "the position is saved" in out
    assert len(applied_before_kills) == kills and all(n >= 1 for n in applied_before_kills), applied_before_kills
    assert state(settings.pg_url) == reference(pg_server_url, settings.mongo_url)
    assert_nothing_lost(mongo_db, settings.pg_url)
    FIGURES["kill points tried"] += kills
    FIGURES["kill points tried: follower under writes"] += kills


def test_a_position_too_old_resyncs_then_follows_again(pg_url, tmp_path, pg_server_url):
    if os.environ.get("TEST_DB_URL_MONGO"):
        pytest.skip("needs a server with a tiny oplog of its own")
    from gigsterpg.fixtures.embedded import EmbeddedMongo
    server = EmbeddedMongo(tmp_path / "small-oplog", extra_args=("--oplog-max-entries", "50"))
    try:
        mongo_url = server.url("shop")
        client = pymongo.MongoClient(mongo_url, tz_aware=True)
        database = client.shop
        database.users.insert_many([{"_id": i, "name": f"u{i}"} for i in range(20)])
        database.gigs.insert_one({"_id": 1, "name": "g", "state": "done", "poster": 1})
        settings = Settings(pg_url=pg_url, mongo_url=mongo_url)
        with Background(settings):
            wait_caught_up(pg_url, database)
        # While nobody follows, more changes than the server keeps history for.
        database.users.insert_many([{"_id": 1000 + i, "name": "while away"} for i in range(1500)])
        database.users.delete_one({"_id": 5})
        with Background(settings) as follower:
            wait_until(lambda: one(pg_url, "SELECT count(*) FROM users WHERE name = 'while away'") == (1500,),
                       "the full re-sync to bring the 1500 users inserted while nobody followed", every_s=0.2)
            database.users.insert_one({"_id": 5000, "name": "after the resync"})
            wait_caught_up(pg_url, database)
        assert follower.report.resyncs == 1
        assert one(pg_url, "SELECT count(*) FROM users WHERE _id IN ('5', '5000')") == (1,)
        assert state(pg_url) == reference(pg_server_url, mongo_url)
        client.close()
    finally:
        server.stop()


def test_status_shows_how_far_behind_a_follower_is(settings, mongo_db, tmp_path):
    mongo_db.users.insert_one({"_id": 1, "name": "u"})
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done"})
    with Background(settings):
        wait_caught_up(settings.pg_url, mongo_db)
        mongo_db.users.insert_one({"_id": 2, "name": "v"})
        wait_caught_up(settings.pg_url, mongo_db)
    mongo_db.users.insert_many([{"_id": 10 + i, "name": "pending"} for i in range(3)])
    followers = status_report.status(settings)["followers"]
    assert len(followers) == 1 and followers[0]["events_applied"] >= 1 and followers[0]["behind_events"] == 3
    shown = run_cli("status", cwd=tmp_path, env_extra={"DB_URL_PSQL": settings.pg_url,
                                                       "DB_URL_MONGO": settings.mongo_url})
    assert "Follower main: " in shown.stdout and "behind: 3 events" in shown.stdout


def test_a_follower_reconnects_after_losing_postgresql(settings, mongo_db, pg_server_url):
    mongo_db.users.insert_many([{"_id": i, "name": f"u{i}"} for i in range(10)])
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done", "poster": 1})
    with Background(settings) as follower:
        wait_caught_up(settings.pg_url, mongo_db)
        with psycopg.connect(settings.pg_url, autocommit=True) as admin:
            killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                   " WHERE datname = current_database() AND application_name = 'gigsterpg'"
                                   ).fetchone()[0]
        assert killed >= 1
        mongo_db.users.insert_one({"_id": 99, "name": "after the cut"})
        mongo_db.users.delete_one({"_id": 4})
        wait_caught_up(settings.pg_url, mongo_db)
    assert follower.report.retries >= 1
    with psycopg.connect(settings.pg_url) as connection:
        error = connection.execute("SELECT last_error FROM sync_followers").fetchone()[0]
    assert "terminating connection" in error or "closed" in error
    assert state(settings.pg_url) == reference(pg_server_url, settings.mongo_url)
    FIGURES["faults injected"] += 1


def test_a_dropped_collection_stops_the_follower_in_one_line(settings, mongo_db):
    mongo_db.users.insert_one({"_id": 1, "name": "u"})
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done"})
    follower = Background(settings)
    with pytest.raises(SourceError, match="collection 'gigs' was dropped in MongoDB"):
        with follower:
            wait_caught_up(settings.pg_url, mongo_db)
            mongo_db.gigs.drop()
            follower.thread.join(timeout=30)
    with psycopg.connect(settings.pg_url) as connection:
        assert connection.execute("SELECT status FROM sync_runs WHERE mode = 'follow'").fetchone() == ("failed",)
