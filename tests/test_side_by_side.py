"""A follower and a scan (full, reconcile, incremental) side by side: never writing at once, nothing lost,
nothing applied twice to any effect. The follower stands aside while a scan writes, then applies again
every change since its saved position."""
import logging
import threading
from datetime import datetime, timezone

import bson
import psycopg
import pytest

from gigsterpg import commands
from gigsterpg.config import Settings
from gigsterpg.exc import SyncLockedError
from gigsterpg.lib.pg.sync.engine.follow import behind
from gigsterpg.lib.pg.sync.engine.runner import FOLLOWER_BATCH_WAIT_S, LOCK_KEY, Progress, RetryPolicy, run_sync
from tests.helpers import TEMPLATE, assert_nothing_lost, copy_database, drop_database, state, wait_until, with_database

FAST = RetryPolicy(attempts=5, first_delay=0.05, max_delay=0.5)
PAUSED = "paused: a sync run is writing"


def one(url, query, *params):
    with psycopg.connect(url) as connection:
        return connection.execute(query, params).fetchone()


class Following:
    """``commands.follow`` in a thread; stopped on exit, its error raised there."""

    def __init__(self, settings):
        self.settings, self.stop = settings, threading.Event()
        self.error = self.report = None
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        try:
            self.report = commands.follow(self.settings, stop=self.stop, retry=FAST)
        except BaseException as err:  # handed to the test
            self.error = err

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the follower did not stop"
        if self.error is not None:
            raise self.error


def wait_caught_up(url, mongo_db):
    """Until the follower's saved position has no event after it."""
    def caught_up():
        row = one(url, "SELECT token, last_event_at FROM sync_followers WHERE name = 'main'")
        if not row or not row[0]:
            return False
        return behind(mongo_db, bson.decode(row[0]), row[1], budget_s=1.0)["events"] == 0

    wait_until(caught_up, "the follower to catch up", 90, every_s=0.1)


def follower_stage(url):
    row = one(url, "SELECT stage FROM sync_runs WHERE mode = 'follow' AND status = 'running'")
    return row[0] if row else None


def reference(pg_server_url, mongo_url):
    """The tables an undisturbed full sync of MongoDB as it is now gives, in a database of their own."""
    name = copy_database(pg_server_url, TEMPLATE)
    url = with_database(pg_server_url, name)
    try:
        commands.sync(Settings(pg_url=url, mongo_url=mongo_url), mode="full")
        return state(url)
    finally:
        drop_database(pg_server_url, name)


class ChangesMidScan(Progress):
    """After the scan's first batch: change MongoDB, then hold the scan until the follower has stood aside."""

    def __init__(self, mongo_db, url, change):
        self.mongo_db, self.url, self.change = mongo_db, url, change
        self.batches = 0

    def advance(self, count: int) -> None:
        self.batches += 1
        if self.batches == 1:
            self.change(self.mongo_db)
            wait_until(lambda: follower_stage(self.url) == PAUSED, "the follower to stand aside for the scan", 60)


def now():
    return datetime.now(timezone.utc)


def change_everything(mongo_db):
    """Changes that meet the scan wherever it is: written already, read ahead, not read yet; and new ones."""
    for user_id in (1, 290, 580):
        changed = {"name": f"changed {user_id}", "skills": ["Zig"], "updated": now()}
        mongo_db.users.update_one({"_id": user_id}, {"$set": changed})
    mongo_db.users.delete_many({"_id": {"$in": [2, 300, 590]}})
    mongo_db.users.insert_one({"_id": 1000, "name": "new during the scan", "email": "new@example.com",
                               "updated": now()})
    mongo_db.gigs.update_many({"_id": {"$in": [5, 450]}}, {"$set": {"state": "cancelled", "updated": now()}})
    mongo_db.gigs.delete_many({"_id": {"$in": [7, 460]}})
    mongo_db.gigs.insert_one({"_id": 2000, "name": "new gig", "state": "unstarted", "poster": 1000,
                              "updated": now()})


@pytest.mark.parametrize("mode", ["full", "incremental"])
def test_a_scan_runs_beside_a_follower_and_the_tables_match_an_undisturbed_run(settings, mongo_db, pg_server_url,
                                                                               mode):
    # Dated now: an incremental run reads them all (they are within its overlap), as a full one does.
    mongo_db.users.insert_many([{"_id": i, "name": f"u{i}", "skills": [f"s{i % 7}"], "updated": now()}
                                for i in range(600)])
    mongo_db.gigs.insert_many([{"_id": i, "name": f"g{i}", "state": "done", "poster": i, "updated": now()}
                               for i in range(600)])
    url = settings.pg_url
    with Following(settings) as following:
        wait_caught_up(url, mongo_db)
        assert follower_stage(url) != PAUSED
        report = commands.sync(settings, progress=ChangesMidScan(mongo_db, url, change_everything), mode=mode)
        assert report.status == "succeeded" and report.mode == mode
        wait_caught_up(url, mongo_db)
        assert follower_stage(url) == "following"
        mongo_db.users.update_one({"_id": 3}, {"$set": {"name": "after the scan", "updated": now()}})
        wait_caught_up(url, mongo_db)
    assert following.report.pauses == 1 and following.report.resyncs == 0
    assert one(url, "SELECT name FROM users WHERE _id = '580'") == ("changed 580",)
    assert one(url, "SELECT count(*) FROM users WHERE _id IN ('2', '300', '590')") == (0,)
    assert state(url) == reference(pg_server_url, settings.mongo_url)
    assert_nothing_lost(mongo_db, url)
    with psycopg.connect(url) as connection:
        runs = connection.execute("SELECT mode, status FROM sync_runs ORDER BY id").fetchall()
    assert runs == [("full", "succeeded"), ("follow", "succeeded"), (mode, "succeeded")]


def test_a_second_follower_refuses_in_one_line(settings, mongo_db):
    mongo_db.users.insert_one({"_id": 1, "name": "Ada"})
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done", "poster": 1})
    with Following(settings):
        wait_caught_up(settings.pg_url, mongo_db)
        with pytest.raises(SyncLockedError, match=r"^another follower is running \(run 2 started .*, one follower per"
                                                  r" database applies the change streams, stop it first"):
            commands.follow(settings, stop=threading.Event(), retry=FAST)
        assert follower_stage(settings.pg_url) != PAUSED
    assert one(settings.pg_url, "SELECT last_error FROM sync_followers") == (None,)  # not the running one's error


def test_a_scan_waits_for_a_followers_batch_in_hand_and_later_batches_wait_for_it(settings, pg, mongo_db):
    mongo_db.users.insert_one({"_id": 1, "name": "Ada"})
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done"})
    url = settings.pg_url
    with psycopg.connect(url) as batch_in_hand, psycopg.connect(url) as next_batch:
        assert batch_in_hand.execute("SELECT pg_try_advisory_xact_lock_shared(%s)", (LOCK_KEY,)).fetchone() == (True,)
        result = {}
        scan = threading.Thread(target=lambda: result.update(report=run_sync(pg.engine, mongo_db)))
        scan.start()
        try:
            wait_until(lambda: one(url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                                        " AND mode = 'ExclusiveLock' AND database = (SELECT oid FROM pg_database"
                                        "  WHERE datname = current_database())") == (1,),
                       "the scan to queue for the lock", 30)
            # A scan in the queue: a follower's next batch stands aside rather than overtake it.
            assert next_batch.execute("SELECT pg_try_advisory_xact_lock_shared(%s)", (LOCK_KEY,)).fetchone() == (
                False,)
            assert one(url, "SELECT count(*) FROM users") == (0,)
        finally:
            batch_in_hand.rollback()  # the batch commits: the lock is free
            scan.join(timeout=FOLLOWER_BATCH_WAIT_S + 30)
    assert result["report"].status == "succeeded"
    assert one(url, "SELECT count(*) FROM users") == (1,)


def test_a_scan_refuses_when_a_batch_in_hand_outlasts_its_wait(settings, pg, mongo_db, monkeypatch):
    from gigsterpg.lib.pg.sync.engine import runner
    monkeypatch.setattr(runner, "FOLLOWER_BATCH_WAIT_S", 0.2)
    with psycopg.connect(settings.pg_url) as batch_in_hand:
        batch_in_hand.execute("SELECT pg_advisory_xact_lock_shared(%s)", (LOCK_KEY,))
        with pytest.raises(SyncLockedError, match=r"^another sync is running \(another sync\), only one sync may"):
            run_sync(pg.engine, mongo_db)
    assert one(settings.pg_url, "SELECT count(*) FROM sync_runs") == (0,)


def test_a_follower_that_must_catch_up_waits_for_a_running_sync(settings, mongo_db, sync_lock):
    mongo_db.users.insert_one({"_id": 1, "name": "Ada"})
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done", "poster": 1})
    waiting = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("waiting for another sync to finish"):
                waiting.set()

    seen, runner_log = Seen(), logging.getLogger("gigsterpg.lib.pg.sync.engine.runner")
    runner_log.addHandler(seen)
    # setLevel, not an assignment to .level: only setLevel clears the loggers' cached isEnabledFor answers.
    level = runner_log.level
    runner_log.setLevel(logging.INFO)
    try:
        with Following(settings) as following:
            assert waiting.wait(60), "the follower's catch-up did not wait for the running sync"
            assert one(settings.pg_url, "SELECT count(*) FROM sync_runs") == (0,)
            sync_lock.close()  # the running sync ends
            wait_caught_up(settings.pg_url, mongo_db)
    finally:
        runner_log.removeHandler(seen)
        runner_log.setLevel(level)
    assert following.report.resyncs == 0
    assert one(settings.pg_url, "SELECT count(*) FROM users") == (1,)
