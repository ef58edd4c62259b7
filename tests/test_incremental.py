"""Incremental runs: only what changed since the watermark is read; the watermark never runs ahead of the data."""
import signal
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from gigsterpg import commands
from gigsterpg.config import Settings
from tests.helpers import rows, run_cli

OLD = datetime(2024, 1, 1, tzinfo=timezone.utc)


def now():
    return datetime.now(timezone.utc)


def watermarks(url):
    with psycopg.connect(url) as connection:
        return dict(connection.execute("SELECT collection, (updated, set_at) FROM sync_watermarks").fetchall())


@pytest.fixture
def synced(settings, mongo_db):
    """200 users and 100 gigs last updated long ago, synced in full."""
    mongo_db.users.insert_many([{"_id": i, "name": f"user {i}", "updated": OLD + timedelta(days=i), "skills": ["Go"]}
                                for i in range(200)])
    mongo_db.gigs.insert_many([{"_id": i, "name": f"gig {i}", "state": "done", "poster": i, "updated": OLD}
                               for i in range(100)])
    report = commands.sync(settings)
    assert report.mode == "full" and report.balanced
    return settings


def test_an_incremental_run_reads_only_what_changed(synced, pg, mongo_db):
    mongo_db.users.update_many({"_id": {"$in": [3, 4, 5]}}, {"$set": {"name": "changed", "updated": now()}})
    mongo_db.users.insert_many([{"_id": 1000 + i, "name": "new", "updated": now()} for i in range(4)])
    mongo_db.gigs.insert_one({"_id": 500, "name": "new gig", "state": "unstarted", "poster": 1001,
                              "updated": now()})
    # Changes an incremental run cannot see: a deletion, and an edit without a usable `updated`.
    mongo_db.users.delete_one({"_id": 7})
    mongo_db.users.update_one({"_id": 8}, {"$set": {"name": "edited quietly"}, "$unset": {"updated": ""}})

    report = commands.sync(synced, mode="incremental")
    users, gigs = report.collections["users"], report.collections["gigs"]
    assert report.mode == "incremental" and users.scope == "incremental"
    assert (users.counts.seen, users.counts.updated, users.counts.inserted, users.counts.deleted) == (7, 3, 4, 0)
    assert (gigs.counts.seen, gigs.counts.inserted) == (1, 1)
    assert users.balanced is None  # nothing to balance: not every document was read
    assert rows(pg, "SELECT count(*) FROM users WHERE name = 'changed'") == [(3,)]
    assert rows(pg, "SELECT u._id FROM gigs g JOIN users u ON u.id = g.poster_id WHERE g._id = '500'") == [("1001",)]
    assert rows(pg, "SELECT name FROM users WHERE _id IN ('7', '8') ORDER BY _id") == [("user 7",), ("user 8",)]

    # The reconcile (full) run catches both.
    full = commands.sync(synced, mode="full")
    assert full.collections["users"].counts.deleted == 1 and full.collections["users"].balanced
    assert rows(pg, "SELECT name FROM users WHERE _id IN ('7', '8')") == [("edited quietly",)]


def test_an_incremental_run_on_unchanged_data_reads_nothing_and_moves_nothing(synced, pg):
    before = watermarks(synced.pg_url)
    report = commands.sync(synced, mode="incremental")
    assert [c.counts.seen for c in report.collections.values()] == [0, 0]
    assert watermarks(synced.pg_url) == before  # nothing written, nothing moved (the data contract)
    commands.sync(synced, mode="full")
    assert watermarks(synced.pg_url) == before  # a full run on unchanged data neither


def test_the_overlap_rereads_recent_documents_without_rewriting_them(synced, pg, mongo_db):
    mongo_db.users.update_one({"_id": 1}, {"$set": {"updated": now() - timedelta(seconds=30)}})
    commands.sync(synced, mode="incremental")
    again = commands.sync(synced, mode="incremental")  # 30 s ago is inside the 300 s overlap
    users = again.collections["users"].counts
    assert (users.seen, users.updated, users.inserted) == (1, 0, 0)


def test_incremental_without_a_watermark_reads_in_full(settings, mongo_db):
    mongo_db.users.insert_many([{"_id": i, "name": "u"} for i in range(5)])
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done"})
    report = commands.sync(settings, mode="incremental")
    assert [c.scope for c in report.collections.values()] == ["full", "full"]
    assert report.collections["users"].balanced


def test_auto_mode_runs_incremental_after_a_full_run_and_reconciles_every_n(settings, mongo_db):
    mongo_db.users.insert_one({"_id": 1, "name": "u", "updated": OLD})
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done", "updated": OLD})
    auto = Settings(pg_url=settings.pg_url, mongo_url=settings.mongo_url, incremental=True, reconcile_every=3)
    modes = [commands.sync(auto).mode for _ in range(7)]
    assert modes == ["full", "incremental", "incremental", "full", "incremental", "incremental", "full"]
    assert commands.sync(settings).mode == "full"  # not the default unless the settings say so


def test_a_crash_mid_run_never_moves_the_watermark_past_unwritten_data(synced, mongo_db, tmp_path):
    mongo_db.users.update_many({"_id": {"$lt": 150}}, {"$set": {"name": "second version", "updated": now()}})
    before = watermarks(synced.pg_url)
    env = {"DB_URL_PSQL": synced.pg_url, "DB_URL_MONGO": synced.mongo_url}
    killed = run_cli("sync", "--incremental", "--batch-size", "40", cwd=tmp_path,
                     env_extra={**env, "GIGSTERPG_KILL_AT": "committed:2"})
    assert killed.returncode == -signal.SIGKILL
    assert watermarks(synced.pg_url) == before  # two batches written, the watermark where it was
    done = run_cli("sync", "--incremental", "--batch-size", "40", cwd=tmp_path, env_extra=env)
    assert done.returncode == 0, done.stderr
    assert "Sync run 3 (incremental) succeeded." in done.stdout
    with psycopg.connect(synced.pg_url) as connection:
        assert connection.execute("SELECT count(*) FROM users WHERE name = 'second version'").fetchone() == (150,)
    assert watermarks(synced.pg_url)["users"][0] > before["users"][0]


def test_incremental_and_reconcile_exclude_each_other(tmp_path):
    result = run_cli("sync", "--incremental", "--reconcile", cwd=tmp_path)
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
