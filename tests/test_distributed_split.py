"""A re-sync on Dask with its merge split by range (``distributed.mark_contested``, ``task.merge_range``).

The same changes, synced by the single process into one database and by the split merge into another (1, 2 and
4 ranges, so 1, 2 and 4 merge sessions), must give the same tables to the last column, surrogate ids included,
the same rejects with their details, the same hashes and the same counts: what crosses ranges (an e-mail moved
between users of different ranges, one new skill spelt two ways in two ranges, a gig whose poster is in another
range, new users, deletes) is decided by the coordinator, and the rest by tasks that touch only their own rows.
"""
import os
import random
import signal
import threading

import psycopg
import pytest

from gigsterpg.lib.pg.db import SqlAlchemy
from gigsterpg.lib.pg.sync.engine.distributed import run_distributed
from gigsterpg.lib.pg.sync.engine.runner import run_sync
from tests.helpers import state, wait_until

BATCH = 6
USERS = 80
# Beyond tests.helpers.state (by MongoDB id): the surrogate keys and every column they link, the rejects' text.
EXACT = {
    "users": "SELECT id, _id, name, email FROM users ORDER BY id",
    "skills": "SELECT id, name FROM skills ORDER BY id",
    "links": "SELECT user_id, skill_id FROM user_skills ORDER BY 1, 2",
    "gigs": "SELECT id, _id, poster_id, poster_ref, state FROM gigs ORDER BY id",
    "rejects": "SELECT collection, doc_id, reason, detail, document::text FROM sync_rejects WHERE resolved_at IS NULL"
               " ORDER BY 1, 2",
    "watermarks": "SELECT collection, updated IS NOT NULL, run_id IS NOT NULL FROM sync_watermarks ORDER BY 1",
}


def _mongo_url(mongo_db) -> str:
    host, port = mongo_db.client.address
    return f"mongodb://{host}:{port}/{mongo_db.name}?directConnection=true"


def _single(url, mongo_db):
    pg = SqlAlchemy(url)
    try:
        return run_sync(pg.engine, mongo_db, batch_size=BATCH)
    finally:
        pg.dispose()


def _split(url, mongo_db, client, ranges, **kwargs):
    pg = SqlAlchemy(url)
    try:
        return run_distributed(pg.engine, mongo_db, client, url, _mongo_url(mongo_db), batch_size=BATCH,
                               ranges=ranges, **kwargs)
    finally:
        pg.dispose()


def _exact(url) -> dict:
    with psycopg.connect(url) as connection:
        return {name: connection.execute(query).fetchall() for name, query in EXACT.items()}


def _counts(report) -> dict:
    return {name: part.as_dict() | {"seconds": 0} for name, part in report.collections.items()}


def _versions(url) -> dict:
    """Each row's version (xmin): a row rewritten gets a new one."""
    with psycopg.connect(url) as connection:
        return {table: connection.execute(f"SELECT _id, xmin::text FROM {table} ORDER BY _id").fetchall()
                for table in ("users", "gigs")}


def _write(mongo_db):
    """Users 0..79 (ints: the ranges split them by value) and 40 gigs, inserted shuffled (scan order is not id
    order), with known skills only."""
    rng = random.Random(11)
    users = [{"_id": n, "name": f"user {n}", "email": f"user{n}@example.com", "skills": rng.sample(
        ["Python", "Go", "Rust", "SQL"], rng.randint(0, 2))} for n in range(USERS)]
    gigs = [{"_id": f"g{n:02d}", "name": f"gig {n}", "state": "unstarted", "poster": (n * 7) % USERS}
            for n in range(40)]
    rng.shuffle(users)
    rng.shuffle(gigs)
    mongo_db.users.insert_many(users)
    mongo_db.gigs.insert_many(gigs)


def _change(mongo_db):
    """Changes in every range, and the ones that cross ranges."""
    users, gigs = mongo_db.users, mongo_db.gigs
    for n in (1, 21, 41, 61, 78):  # changed, nobody else's business: the merge tasks' part
        users.update_one({"_id": n}, {"$set": {"name": f"renamed {n}"}})
    users.update_one({"_id": 11}, {"$set": {"skills": ["Go", "sql"]}})
    users.insert_many([{"_id": 100, "name": "new 100", "email": "new100@example.com", "skills": ["Go"]},
                       {"_id": "new-a", "name": "new a", "email": "user7@example.com"},  # a deleted user's address
                       {"_id": 30.5, "name": "a double id is rejected"}])
    users.delete_many({"_id": {"$in": [7, 47]}})
    # An e-mail moved between users of different ranges: 65 takes 5's address while 5 takes a new one.
    users.update_one({"_id": 65}, {"$set": {"email": "user5@example.com"}})
    users.update_one({"_id": 5}, {"$set": {"email": "five@example.com"}})
    # A user whose id comes first takes a stored address of a later user, unchanged, in another range.
    users.update_one({"_id": 9}, {"$set": {"email": "user70@example.com"}})
    # One new skill, spelt two ways by users of different ranges.
    users.update_one({"_id": 3}, {"$set": {"skills": ["Knitting", "Go"]}})
    users.update_one({"_id": 66}, {"$set": {"skills": ["KNITTING"]}})
    users.update_one({"_id": 44}, {"$set": {"email": "not an e-mail"}})  # rejected
    # Gigs whose poster is in another range, or new.
    gigs.update_one({"_id": "g05"}, {"$set": {"poster": 79}})
    gigs.update_one({"_id": "g30"}, {"$set": {"poster": 100, "state": "done"}})
    gigs.update_one({"_id": "g12"}, {"$set": {"state": "in_progress"}})
    gigs.insert_one({"_id": "g50", "name": "gig 50", "state": "done", "poster": 64})
    gigs.delete_one({"_id": "g20"})


@pytest.mark.parametrize("ranges", [1, 2, 4])
def test_a_split_re_sync_equals_the_single_process_re_sync(cluster, mongo_db, pg_url, second_pg_url, ranges):
    _write(mongo_db)
    _single(pg_url, mongo_db)
    _single(second_pg_url, mongo_db)
    assert _exact(second_pg_url) == _exact(pg_url)
    _change(mongo_db)
    single = _single(pg_url, mongo_db)
    split = _split(second_pg_url, mongo_db, cluster, ranges)
    assert state(second_pg_url) == state(pg_url)
    assert _exact(second_pg_url) == _exact(pg_url)
    assert _counts(split) == _counts(single)
    users = single.collections["users"].counts
    assert users.inserted >= 1 and users.updated >= 7 and users.deleted == 2, users
    assert users.rejected["duplicate email"] >= 2 and users.rejected["invalid email"] == 1, users
    assert single.collections["users"].counts.extra["skills_added"] == 1
    # The split happened: the tasks merged the renamed users, the coordinator replayed the contested ones only.
    tasks = split.tasks
    print("merges", tasks.as_dict())
    assert tasks.merges >= (2 if ranges == 1 else 3)
    assert 0 < tasks.contested["users"] < 20 and 0 < tasks.contested["gigs"] < 5, tasks.contested
    assert tasks.merge_retried == 0 and tasks.failed == 0
    assert split.balanced

    # Run again: what the order decided in the last run settles (a user rejected for an address its holder left
    # in the same run gets it now), the same way in both.
    settled = _split(second_pg_url, mongo_db, cluster, ranges)
    assert _counts(settled) == _counts(_single(pg_url, mongo_db))
    assert _exact(second_pg_url) == _exact(pg_url)
    # Unchanged: nothing merged by anyone, no row rewritten, the same counts.
    before = _versions(second_pg_url)
    single = _single(pg_url, mongo_db)
    again = _split(second_pg_url, mongo_db, cluster, ranges)
    assert _versions(second_pg_url) == before, "an unchanged re-sync rewrote rows"
    assert _counts(again) == _counts(single)
    assert again.collections["users"].counts.inserted == again.collections["users"].counts.updated == 0
    # Only the rejected documents are looked at again (they have no row, no hash), by the coordinator, with the
    # holder of the address one of them claims (9 holds 70's old address).
    assert again.collections["users"].open_rejects == 3 and again.collections["gigs"].open_rejects == 0
    assert again.tasks.merges == 0 and again.tasks.contested == {"users": 4, "gigs": 0}
    assert _exact(second_pg_url) == _exact(pg_url)


def test_the_contested_documents_are_those_that_share_something(cluster, mongo_db, pg_url):
    """Which documents the coordinator keeps: read off the scratch table the run leaves while it is held."""
    from gigsterpg.lib.pg.sync.engine import distributed
    _write(mongo_db)
    _single(pg_url, mongo_db)
    _change(mongo_db)
    seen = {}
    marking = distributed.mark_contested

    def spy(cursor, run_id, name):
        marking(cursor, run_id, name)
        cursor.execute(f"SELECT doc_id FROM {distributed.scratch_table(run_id, name)} WHERE contested ORDER BY 1")
        seen[name] = sorted(doc_id for (doc_id,) in cursor.fetchall())

    distributed.mark_contested = spy
    try:
        _split(pg_url, mongo_db, cluster, 4)
    finally:
        distributed.mark_contested = marking
    # New (100, new-a), rejected (30.5, 44), e-mails claimed twice (65 and 5; 9 and 70; new-a's address is
    # stored by nobody once 7 is gone, but 7 is deleted: its row still holds it), a new skill (3, 66).
    assert seen["users"] == sorted(["100", "new-a", "30.5", "44", "65", "5", "9", "70", "3", "66"]), seen
    assert seen["gigs"] == ["g50"], seen  # new; g05 and g30 change posters, but only their own rows


def test_a_merge_task_whose_worker_dies_is_run_again_and_changes_nothing(cluster, mongo_db, pg_url, second_pg_url):
    _write(mongo_db)
    _single(pg_url, mongo_db)
    _single(second_pg_url, mongo_db)
    _change(mongo_db)
    _single(pg_url, mongo_db)
    holder = psycopg.connect(second_pg_url)
    # A merge task updates user 41's row: holding it holds that task mid-transaction, its attempt recorded.
    holder.execute("SELECT 1 FROM users WHERE _id = '41' FOR UPDATE")
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(report=_split(second_pg_url, mongo_db, cluster, 4)))
    runner.start()
    try:
        def waiting_merge():
            with psycopg.connect(second_pg_url, autocommit=True) as look:
                return look.execute("SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
                                    " AND wait_event_type = 'Lock' AND application_name LIKE 'gigsterpg merge users %'"
                                    ).fetchone()
        # The session of a merge task names the worker process it serves.
        name = wait_until(waiting_merge, "a merge task held on user 41's row", timeout_s=120)[0]
        victim = int(name.rsplit(" ", 1)[1])
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not _alive(victim), f"worker process {victim} to die")
    finally:
        holder.rollback()
        holder.close()
    runner.join(timeout=300)
    assert not runner.is_alive(), "the run did not end within 300 s of the worker's death"
    report = outcome["report"]
    assert report.tasks.merge_retried >= 1 and report.tasks.failed == 0
    assert state(second_pg_url) == state(pg_url)
    assert _exact(second_pg_url) == _exact(pg_url)
    single = _single(pg_url, mongo_db)  # unchanged: both say so
    again = _split(second_pg_url, mongo_db, cluster, 4)
    assert _counts(again) == _counts(single)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_merge_task_run_again_after_it_committed_merges_nothing_twice(mongo_db, pg_url):
    """Dask runs a task again when it lost the answer of one that committed: the second attempt merges nothing
    and answers the first one's counts (the rows, hashes and counts are those of one merge)."""
    from gigsterpg.lib.pg.sync.engine.distributed import mark_contested
    from gigsterpg.lib.pg.sync.engine.plan import IdRange
    from gigsterpg.lib.pg.sync.engine.task import (MergeTask, RangeTask, create_scratch, merge_range, merges_table,
                                                   stage_range)
    _write(mongo_db)
    _single(pg_url, mongo_db)
    mongo_db.users.update_many({"_id": {"$in": [2, 3, 40]}}, {"$set": {"name": "renamed"}})
    with psycopg.connect(pg_url, autocommit=True) as connection, connection.cursor() as cursor:
        run_id = cursor.execute("INSERT INTO sync_runs (collections, pid, hostname, mode) VALUES"
                                " ('users', 1, 'here', 'full') RETURNING id").fetchone()[0]
        create_scratch(cursor, run_id, ["users"])
    stage_range(RangeTask(run_id, "users", IdRange(0), pg_url, _mongo_url(mongo_db), mongo_db.name, BATCH))
    with psycopg.connect(pg_url) as connection, connection.cursor() as cursor:
        mark_contested(cursor, run_id, "users")
    task = MergeTask(run_id, "users", 0, pg_url, BATCH)
    assert "postgresql" not in repr(task), "Dask logs a task's arguments: no URL in them"
    first = merge_range(task)
    versions = _versions(pg_url)
    assert merge_range(task) == first
    assert _versions(pg_url) == versions, "the second attempt wrote rows"
    assert (first["seen"], first["updated"], first["inserted"]) == (3, 3, 0)
    with psycopg.connect(pg_url) as connection:
        assert connection.execute(f"SELECT attempts FROM {merges_table(run_id)}").fetchall() == [(2,)]
        assert connection.execute("SELECT count(*) FROM users WHERE name = 'renamed'").fetchone()[0] == 3
