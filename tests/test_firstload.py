"""The first load (sync/engine/firstload.py): the same result as the merge path, keys after the data.

Each test loads one MongoDB database twice, into two fresh databases: by the first load (a full run
into empty tables) and by the merge path (``first_load=False``), and compares what they hold.
"""
import signal

import psycopg
import pytest
from bson import ObjectId

from gigsterpg import cli, commands
from gigsterpg.config import Settings
from gigsterpg.exc import ConfigError
from gigsterpg.fixtures.generate import write_dataset
from gigsterpg.lib.pg.sync.engine.runner import run_sync
from gigsterpg.lib.pg.db import SqlAlchemy
from tests.helpers import (TEMPLATE, assert_nothing_lost, assert_one_line_failure, copy_database, drop_database,
                           run_cli, run_held, state, with_database)

BATCH = 7

# Beyond the surrogate-key-free digests of tests.helpers.state: the keys themselves, and the rejects' text.
EXACT = {
    "user ids": "SELECT id, _id FROM users ORDER BY id",
    "gig ids": "SELECT id, _id, poster_id FROM gigs ORDER BY id",
    "skill ids": "SELECT id, name FROM skills ORDER BY id",
    "links": "SELECT user_id, skill_id FROM user_skills ORDER BY 1, 2",
    "rejects": "SELECT collection, doc_id, reason, detail, document::text, resolved_at IS NULL FROM sync_rejects"
               " ORDER BY 1, 2",
    "watermarks": "SELECT collection, updated IS NOT NULL FROM sync_watermarks ORDER BY 1",
}
CATALOG = {
    "constraints": "SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid), convalidated"
                   " FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
    "columns": "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default"
               " FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 3",
}


def query_all(url: str, queries: dict) -> dict:
    with psycopg.connect(url) as connection:
        return {name: connection.execute(query).fetchall() for name, query in queries.items()}


def messy(database) -> None:
    """Generated messy data, and the duplicates the merge path resolves: ids of one text form (1 and "1",
    an ObjectId and its hex) in one batch and in different batches, e-mails taken in and across batches."""
    write_dataset(database, 120, 240, messy_rate=0.1, seed=11)
    oid = ObjectId()
    database.users.insert_many([
        {"_id": 1, "name": "int one", "email": "Same@Example.com", "skills": ["Go", "go ", "Rust"]},
        {"_id": "1", "name": "text one", "skills": ["Elm"]},  # same batch as 1: a duplicate id
        {"_id": "dup-a", "name": "a", "email": "same@example.com"},  # same batch: e-mail taken earlier in it
        {"_id": oid, "name": "oid", "email": "other@example.com", "skills": ["go"]},
    ] + [{"_id": f"filler-{i}", "name": f"filler {i}", "skills": [f"S{i % 4}"]} for i in range(10)] + [
        {"_id": str(oid), "name": "hex of the oid"},  # another batch: a duplicate id
        {"_id": "dup-b", "name": "b", "email": "OTHER@example.com"},  # another batch: e-mail of a stored user
        {"_id": "dup-c", "name": "c", "email": "other@example.com"},  # ... and again in the same batch
        {"_id": 2, "name": 5},  # rejected by the mapping
        {"_id": "2", "name": "two"},  # the first of its text form was rejected: still a duplicate
    ])
    database.gigs.insert_many([
        {"_id": 7, "name": "g", "state": "done", "poster": 1},
        {"_id": "7", "name": "g again", "state": "done", "poster": "1"},
        {"_id": "late", "name": "poster unknown", "state": "unstarted", "poster": "nobody"},
        {"_id": "to-oid", "name": "poster by oid", "state": "unstarted", "poster": oid},
    ])


@pytest.fixture
def two_databases(pg_server_url, template_url):
    """Two fresh migrated databases (URLs); dropped afterwards."""
    names = [copy_database(pg_server_url, TEMPLATE) for _ in range(2)]
    yield [with_database(pg_server_url, name) for name in names]
    for name in names:
        drop_database(pg_server_url, name)


def sync(url: str, mongo_db, **kwargs):
    pg = SqlAlchemy(url)
    try:
        return run_sync(pg.engine, mongo_db, batch_size=BATCH, **kwargs)
    finally:
        pg.dispose()


def counts(report) -> dict:
    """A run's report, without its timings."""
    return {name: {key: value for key, value in collection.as_dict().items() if key != "seconds"}
            for name, collection in report.collections.items()}


def stage_of_last_run(url: str) -> str:
    with psycopg.connect(url) as connection:
        return connection.execute("SELECT stage FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone()[0]


def test_a_first_load_stores_what_the_merge_path_stores(two_databases, mongo_db):
    messy(mongo_db)
    first, merged = two_databases
    loaded = sync(first, mongo_db)
    reference = sync(merged, mongo_db, first_load=False)
    assert stage_of_last_run(first).startswith("gigs: first load")
    assert not stage_of_last_run(merged).startswith("gigs: first load")
    assert state(first) == state(merged)
    assert query_all(first, EXACT) == query_all(merged, EXACT)
    assert counts(loaded) == counts(reference)
    assert loaded.balanced
    # Worked out from the documents above, not from either path.
    rejects = {doc_id: reason for _, doc_id, reason, *_ in query_all(first, EXACT)["rejects"]}
    assert rejects["2"] == "name is not text" or rejects["2"].startswith("name")
    for holder, rejected in (("1", "1 ("), ("2", "2 ("), ("7", "7 (")):
        assert [r for d, r in rejects.items() if d.startswith(rejected)] == ["duplicate _id"], holder
    # Of users with one e-mail, the one whose _id comes first in MongoDB's order of ids keeps it (the data
    # contract; it replaced "the later-seen one is rejected"): 1 (a number) before "dup-a", "dup-b" before
    # "dup-c"; the ObjectId user lost its id's text form to the string of its hex, which comes first.
    assert rejects["dup-a"] == rejects["dup-c"] == "duplicate email" and "dup-b" not in rejects
    assert_nothing_lost(mongo_db, first)
    # A second run finds the tables full: the merge path, with nothing to write.
    again = sync(first, mongo_db)
    assert not stage_of_last_run(first).startswith("gigs: first load")
    assert again.collections["users"].counts.inserted == again.collections["users"].counts.updated == 0
    sync(merged, mongo_db, first_load=False)
    assert state(first) == state(merged)


def test_the_schema_after_a_first_load_is_alembics(two_databases, mongo_db):
    messy(mongo_db)
    first, merged = two_databases
    sync(first, mongo_db)
    sync(merged, mongo_db, first_load=False)
    catalog = query_all(first, CATALOG)
    assert catalog == query_all(merged, CATALOG)
    keys = [(row[0], row[3], row[4]) for row in catalog["constraints"] if row[2] == "f"]
    assert ("gigs", "FOREIGN KEY (poster_id) REFERENCES users(id) ON DELETE SET NULL", True) in keys, keys
    assert any(row[1] == "ix_gigs_unlinked_poster_ref" for row in catalog["indexes"])


def test_a_rebuild_loads_again_what_is_there_in_one_transaction(two_databases, mongo_db):
    messy(mongo_db)
    first, merged = two_databases
    sync(first, mongo_db)
    mongo_db.users.delete_many({"_id": {"$in": ["dup-a", "filler-3"]}})
    mongo_db.users.insert_one({"_id": "newcomer", "name": "new", "skills": ["Zig"]})
    sync(merged, mongo_db, first_load=False)
    rebuilt = sync(first, mongo_db, rebuild=True)
    assert stage_of_last_run(first).startswith("gigs: first load")
    assert rebuilt.collections["users"].counts.deleted == 0
    assert state(first) == state(merged)
    assert query_all(first, CATALOG) == query_all(merged, CATALOG)
    with pytest.raises(ConfigError, match="cannot rebuild part"):
        sync(first, mongo_db, rebuild=True, collections=("users",))


@pytest.mark.parametrize("point", ["merged:3", "deleting:1", "first-load-loaded:1", "first-load-keyed:1"])
def test_a_killed_first_load_leaves_empty_tables_the_next_run_loads(two_databases, mongo_db, mongo_url,
                                                                    tmp_path, point):
    messy(mongo_db)
    first, merged = two_databases
    sync(merged, mongo_db)  # undisturbed
    env = {"DB_URL_PSQL": first, "DB_URL_MONGO": mongo_url}
    killed = run_cli("sync", "--batch-size", str(BATCH), cwd=tmp_path, env_extra={**env, "GIGSTERPG_KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    after_crash = state(first)
    assert all(count == 0 for name, (count, _) in after_crash.items() if name != "skills"), after_crash
    assert query_all(first, CATALOG) == query_all(merged, CATALOG)  # keys and indexes back: rolled back
    assert stage_of_last_run(first).startswith("users: first load") or "gigs" in stage_of_last_run(first)
    again = run_cli("sync", "--batch-size", str(BATCH), cwd=tmp_path, env_extra=env)
    assert again.returncode == 0, again.stderr
    assert state(first) == state(merged)
    same = ("user ids", "gig ids", "rejects", "watermarks")  # skill ids burnt by the crash are not given again
    assert {name: query_all(first, EXACT)[name] for name in same} == \
        {name: query_all(merged, EXACT)[name] for name in same}


def test_readers_during_a_first_load_wait_then_see_all_of_it(two_databases, mongo_db):
    messy(mongo_db)
    first, _ = two_databases
    outcome = {}
    import threading
    runner = threading.Thread(target=lambda: outcome.setdefault("report", sync(first, mongo_db)))
    runner.start()
    try:
        with run_held(first, lambda progress: (progress.get("gigs") or 0) >= 3 * BATCH, "gigs loading"):
            with psycopg.connect(first) as reader:
                reader.execute("SET lock_timeout = '300ms'")
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    reader.execute("SELECT count(*) FROM users")
    finally:
        runner.join(timeout=120)
    assert outcome["report"].status == "succeeded"
    with psycopg.connect(first) as reader:
        assert reader.execute("SELECT count(*) FROM users").fetchone()[0] == outcome["report"].collections[
            "users"].rows > 0


def test_the_cli_rebuilds(pg_url, mongo_url, mongo_db, capsys):
    messy(mongo_db)
    commands.sync(Settings(pg_url=pg_url, mongo_url=mongo_url, batch_size=BATCH))
    before = state(pg_url)
    assert cli.main(["sync", "--rebuild", "--batch-size", str(BATCH), "--pg-url", pg_url,
                     "--mongo-url", mongo_url]) == 0
    assert state(pg_url) == before
    assert stage_of_last_run(pg_url).startswith("gigs: first load")
    assert cli.main(["sync", "--rebuild", "--collections", "users", "--pg-url", pg_url, "--mongo-url", mongo_url]) == 2
    failures = [line for line in capsys.readouterr().err.splitlines() if line.startswith("FAILED: ")]
    assert len(failures) == 1 and "cannot rebuild part of the data" in failures[0], failures


def test_the_benchmarks_first_load_stores_what_a_sync_stores(two_databases, mongo_db, mongo_url):
    from bench import child
    messy(mongo_db)
    first, merged = two_databases
    measured = child.transform_first_load(first, mongo_url, BATCH)
    by_merge = child.sync_merge(merged, mongo_url, BATCH)
    documents = mongo_db.users.count_documents({}) + mongo_db.gigs.count_documents({})
    assert measured["docs"] == by_merge["docs"] == documents
    assert not stage_of_last_run(merged).startswith("gigs: first load")
    assert state(first) == state(merged)


def test_any_number_of_load_workers_gives_the_same_tables(pg_server_url, template_url, mongo_db):
    """The first load in 1, 2 or 4 worker processes, and in this process: every table, the ids and the
    rejects (their details too) come out the same. The duplicates are decided by MongoDB's order of ids,
    after the parallel part, so which worker loaded what does not matter."""
    messy(mongo_db)
    # More of what crosses batches (and so workers): e-mails and skills shared across the scan.
    mongo_db.users.insert_many([{"_id": f"late-{i}", "name": f"late {i}", "email": f"shared{i % 3}@example.com",
                                 "skills": [f"Late{i % 5}", f"late{i % 5} "]} for i in range(40)])
    names = [copy_database(pg_server_url, TEMPLATE) for _ in range(4)]
    try:
        urls = [with_database(pg_server_url, name) for name in names]
        results = []
        for url, workers in zip(urls, (0, 1, 2, 4)):
            report = sync(url, mongo_db, load_workers=workers)
            assert report.balanced
            results.append((state(url), query_all(url, EXACT), counts(report)))
        assert stage_of_last_run(urls[2]).startswith("gigs: first load")
        assert all(result == results[0] for result in results[1:])
        rejects = [row for row in results[0][1]["rejects"] if row[2] == "duplicate email"]
        assert len(rejects) == 2 + 37, rejects  # dup-a, -c (-b comes first); of the 40 late users 3 keep theirs
        with psycopg.connect(urls[3]) as connection:  # nothing of the load tables is left
            assert connection.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'gigsterpg_load'"
                                      ).fetchone()[0] == 0
    finally:
        for name in names:
            drop_database(pg_server_url, name)


def run_counts(url: str) -> dict:
    """The last run's counts as recorded, without their timings."""
    with psycopg.connect(url) as connection:
        recorded = connection.execute("SELECT counts FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone()[0]
    return {name: {key: value for key, value in collection.items() if key != "seconds"}
            for name, collection in recorded.items()}


# The batch of users holding their 30th document: its first is number 29 (28 before it, batches of 7).
DEATH = "a load worker process died while it loaded the batch of users from document 29"


def test_a_killed_load_worker_is_replaced_and_the_run_equals_an_undisturbed_one(two_databases, mongo_db,
                                                                                mongo_url, tmp_path):
    messy(mongo_db)
    first, undisturbed = two_databases
    args = ("sync", "--batch-size", str(BATCH), "--load-workers", "2")
    reference = run_cli(*args, cwd=tmp_path, env_extra={"DB_URL_PSQL": undisturbed, "DB_URL_MONGO": mongo_url})
    assert reference.returncode == 0, reference.stderr
    marker = tmp_path / "killed-once"
    # The worker loading that batch kills itself once, its rows COPied and not committed; the one that
    # replaces it finds the marker and lives.
    killed = run_cli(*args, cwd=tmp_path, env_extra={"DB_URL_PSQL": first, "DB_URL_MONGO": mongo_url,
                                                     "GIGSTERPG_KILL_AT": "load-batch:30",
                                                     "GIGSTERPG_KILL_ONCE": str(marker)})
    assert killed.returncode == 0, killed.stderr
    assert marker.exists() and killed.stderr.count(DEATH) == 1, killed.stderr
    assert stage_of_last_run(first).startswith("gigs: first load")
    assert state(first) == state(undisturbed)
    assert query_all(first, EXACT) == query_all(undisturbed, EXACT)
    assert query_all(first, CATALOG) == query_all(undisturbed, CATALOG)
    assert run_counts(first) == run_counts(undisturbed)
    assert_nothing_lost(mongo_db, first)


def test_a_batch_that_kills_its_load_worker_every_time_fails_the_run_in_one_line(two_databases, mongo_db,
                                                                                 mongo_url, tmp_path):
    messy(mongo_db)
    first, undisturbed = two_databases
    sync(undisturbed, mongo_db)
    env = {"DB_URL_PSQL": first, "DB_URL_MONGO": mongo_url}
    args = ("sync", "--batch-size", str(BATCH), "--load-workers", "2")
    poisoned = run_cli(*args, cwd=tmp_path, env_extra={**env, "GIGSTERPG_KILL_AT": "load-batch:30"})
    assert_one_line_failure(poisoned, "the batch of 7 users documents from number 29 of the scan killed its load"
                            " worker process 4 times, killed by SIGKILL", "db.users.find().skip(28).limit(7)")
    assert poisoned.stderr.count(DEATH) == 3, poisoned.stderr  # loaded again 3 times, then the run ends
    after = state(first)
    assert all(count == 0 for name, (count, _) in after.items() if name != "skills"), after
    assert query_all(first, CATALOG) == query_all(undisturbed, CATALOG)  # keys and indexes back: rolled back
    with psycopg.connect(first) as connection:
        assert connection.execute("SELECT status FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone()[0] == "failed"
        assert connection.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'gigsterpg_load'"
                                  ).fetchone()[0] == 0
    again = run_cli(*args, cwd=tmp_path, env_extra=env)
    assert again.returncode == 0, again.stderr
    assert state(first) == state(undisturbed)


def test_load_workers_killed_at_any_moment_load_every_batch_once(pg_url):
    """Worker processes SIGKILLed from outside, wherever they are (loading, reading their pipe, idle): each is
    replaced, and every batch is answered once and in the load tables once."""
    import os
    import threading
    import time

    import bson

    from gigsterpg.lib.pg.sync.engine import parallel
    from gigsterpg.lib.pg.sync.user import UserSync
    run_id, size, batches = 98, 5, 60
    with psycopg.connect(pg_url, autocommit=True) as connection, connection.cursor() as cursor:
        parallel.create_load_tables(cursor, run_id, ["users"])
    pool = parallel.Workers(2, pg_url)
    answers = []
    try:
        def feed():
            for batch in range(batches):
                payload = b"".join(bson.encode({"_id": n, "name": f"user {n}"})
                                   for n in range(batch * size, (batch + 1) * size))
                pool.put((UserSync, run_id, batch * size, payload))
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        killed = []
        while len(answers) < batches:
            answers.append(pool.get())
            if len(answers) in (5, 20, 40):  # the one that loaded the last, and then the other
                victim = pool.slots[len(killed) % 2].process
                os.kill(victim.pid, signal.SIGKILL)
                killed.append(victim)
                while victim.exitcode is None:
                    time.sleep(0.01)
        feeder.join(timeout=30)
        assert all(pool.slots[index].process not in killed for index in range(2)), "each killed one is replaced"
    finally:
        pool.close()
    assert len(pool.stats) == 2  # the replacements ended by themselves
    assert sorted(base for _, base, _ in answers) == [batch * size for batch in range(batches)]
    assert {(collection, documents) for collection, _, documents in answers} == {("users", size)}
    with psycopg.connect(pg_url) as connection:
        loaded = connection.execute(f"SELECT pos FROM {parallel.load_table(run_id, 'users')} ORDER BY pos").fetchall()
        raw = connection.execute(f"SELECT count(*) FROM {parallel.raw_table(run_id, 'users')}").fetchone()[0]
        done = connection.execute(f"SELECT count(*) FROM {parallel.load_attempts(run_id)} WHERE documents IS NOT NULL"
                                  ).fetchone()[0]
    assert [pos for (pos,) in loaded] == list(range(batches * size)) and raw == batches * size
    assert done == batches


def test_a_batch_beyond_two_billion_documents_is_loaded_once(pg_url):
    """The number of a batch's first document is an int8 everywhere: the ledger, the lock, the load tables."""
    import bson

    from gigsterpg.lib.pg.sync.engine import parallel
    from gigsterpg.lib.pg.sync.user import UserSync
    run_id, base = 97, 2 ** 31 + 10
    payload = b"".join(bson.encode({"_id": n, "name": f"user {n}"}) for n in range(5))
    with psycopg.connect(pg_url, autocommit=True) as connection, connection.cursor() as cursor:
        parallel.create_load_tables(cursor, run_id, ["users"])
    with psycopg.connect(pg_url) as connection:
        for _ in range(2):  # the second time: loaded already, nothing again
            assert parallel.load_once(connection, parallel.load_attempts(run_id), UserSync, run_id, base, payload) == 5
        loaded = connection.execute(f"SELECT pos FROM {parallel.load_table(run_id, 'users')} ORDER BY pos").fetchall()
        attempts = connection.execute(f"SELECT task, documents FROM {parallel.load_attempts(run_id)} ORDER BY id"
                                      ).fetchall()
    assert [pos for (pos,) in loaded] == list(range(base, base + 5))
    assert attempts == [(base, 5), (base, None)]
