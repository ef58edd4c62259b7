"""The distributed full sync (Dask) against the real servers: plans, equality with the single-process sync, a
worker killed mid-run, the CLI's flags.

Two worker processes (``LocalCluster``, one thread each) serve the whole module. "Equal" means the digests of
``tests.helpers.state`` (every table's rows, open rejects with their reasons and details, the hashes) after
the same runs on the same MongoDB data.
"""
import os
import random
import signal
import threading
import uuid
from datetime import datetime, timezone

import bson
import psycopg
import pytest
from bson import Int64, ObjectId
from bson.binary import Binary, UuidRepresentation

from gigsterpg import cli
from gigsterpg.config import Settings, load_settings
from gigsterpg.lib.pg.db import SqlAlchemy
from gigsterpg.lib.pg.sync.document import id_order_key, id_text
from gigsterpg.lib.pg.sync.engine import distributed
from gigsterpg.lib.pg.sync.engine.distributed import run_distributed
from gigsterpg.lib.pg.sync.engine.plan import RAW, find_range, plan, split_record_id
from gigsterpg.lib.pg.sync.engine.runner import run_sync
from gigsterpg.pipelines.sync import distributed as distributed_cli
from tests.helpers import run_held, state, wait_until, with_database

BATCH = 7  # small batches: duplicates fall inside one batch and across batches
RANGES = 4


def _uuid(n: int) -> Binary:
    return Binary.from_uuid(uuid.UUID(int=n), UuidRepresentation.STANDARD)


def _ids(count: int):
    """Ids of every type MongoDB orders, cycling, with pairs that share a text form (7 and "7", an ObjectId
    and its hex string); a double and a sub-document cannot be stored (rejected) but must be read."""
    oid = ObjectId("5f0000000000000000000001")
    special = [7, "7", oid, str(oid), 2.5, {"k": 1}, Int64(2 ** 40), _uuid(5), str(uuid.UUID(int=5))]
    cycle = [lambda i: ObjectId(f"60{i:022x}"), lambda i: 1000 + i, lambda i: Int64(2 ** 33 + i),
             lambda i: f"u{i:04d}"]
    return special + [cycle[i % len(cycle)](i) for i in range(count - len(special))]


def _messy(mongo_db, users: int = 90, gigs: int = 70, seed: int = 7):
    """Users and gigs in a shuffled insertion order (natural order is not ``_id`` order), with duplicate
    e-mails across types (so across ranges), skills spelled differently, rejects, posters not there yet."""
    rng = random.Random(seed)
    ids = _ids(users)
    rng.shuffle(ids)
    skills = ["Python", "python ", "GO", "Go", "Rust", "new  Skill", "NEW skill", "Zig"]
    docs = []
    for n, _id in enumerate(ids):
        doc = {"_id": _id, "name": f"user {n}", "created": datetime(2024, 1, 1 + n % 28, tzinfo=timezone.utc),
               "skills": rng.sample(skills, rng.randint(0, 3))}
        doc["email"] = f"shared{n % 11}@example.com" if n % 3 == 0 else f"User{n}@Example.com"
        if n % 17 == 5:
            doc["email"] = f"mailto:SHARED{n % 11}@example.com "
        if n % 23 == 4:
            del doc["name"]
        docs.append(doc)
    mongo_db.users.insert_many(docs)
    posters = [doc["_id"] for doc in docs if isinstance(doc["_id"], ObjectId)]
    gig_docs = []
    for n in range(gigs):
        poster = rng.choice(posters) if n % 4 else ObjectId(f"70{n:022x}")  # a poster still to come
        state_ = rng.choice(["done", "in_progress", "unstarted", "cancelled", "lost"])
        gig_docs.append({"_id": [ObjectId(f"65{n:022x}"), 5000 + n, f"g{n}"][n % 3], "name": f"gig {n}",
                         "state": state_, "poster": poster, "budget": rng.choice([None, 10, "12.5", 3.25])})
    mongo_db.gigs.insert_many(gig_docs)
    return docs, gig_docs


def _change(mongo_db, docs, gig_docs) -> None:
    """Deletes, e-mails moved between users (the order decides again), late posters arriving, a fix."""
    for doc in docs[:6]:
        mongo_db.users.delete_one({"_id": doc["_id"]})
    for doc in docs[10:20]:
        mongo_db.users.update_one({"_id": doc["_id"]}, {"$set": {"email": "moved@example.com", "skills": ["Go"]}})
    mongo_db.users.update_one({"_id": docs[30]["_id"]}, {"$set": {"email": "shared1@example.com"}})
    mongo_db.users.insert_many([{"_id": ObjectId(f"70{n:022x}"), "name": f"late {n}",
                                 "email": f"shared{n % 11}@example.com"} for n in range(0, 40, 4)])
    for doc in gig_docs[:5]:
        mongo_db.gigs.delete_one({"_id": doc["_id"]})
    mongo_db.gigs.update_many({"state": "lost"}, {"$set": {"state": "done"}})


def _distributed(url, mongo_db, client, **kwargs):
    pg = SqlAlchemy(url)
    try:
        return run_distributed(pg.engine, mongo_db, client, url, _mongo_url(mongo_db), batch_size=BATCH,
                               ranges=RANGES, **kwargs)
    finally:
        pg.dispose()


def _single(url, mongo_db):
    pg = SqlAlchemy(url)
    try:
        return run_sync(pg.engine, mongo_db, batch_size=BATCH)
    finally:
        pg.dispose()


def _mongo_url(mongo_db) -> str:
    host, port = mongo_db.client.address
    return f"mongodb://{host}:{port}/{mongo_db.name}?directConnection=true"


# ---- plans ---------------------------------------------------------------------------------------


def _covered(collection, parts) -> list:
    """The ids each range reads, checking each document's bytes once its record id is taken off, and that the
    record ids put the documents in the order of a plain scan (the order the single-process sync sees)."""
    scan = [(bson.encode({"_id": bson.decode(doc.raw)["_id"]}), bytes(doc.raw))
            for doc in collection.with_options(codec_options=RAW).find({})]
    plain = dict(scan)
    read, placed = [], []
    for part in parts:
        ids = []
        for doc in find_range(collection, part, 13):
            record, raw = split_record_id(doc.raw)
            key = bson.encode({"_id": bson.decode(raw)["_id"]})
            assert plain[key] == raw, "the bytes differ from a plain scan's: the hashes would differ"
            ids.append(key)
            placed.append((record, key))
        read.append(ids)
    assert [key for _, key in sorted(placed)] == [key for key, _ in scan], "record ids out of scan order"
    return read


@pytest.mark.parametrize("kind", ["int", "string", "mixed"])
def test_a_plan_covers_every_id_once_in_ranges_of_about_equal_size(mongo_db, kind):
    count = 2000
    if kind == "int":
        ids = list(range(count))
    elif kind == "string":
        ids = [f"k{n:05d}" for n in range(count)]
    else:  # numbers of three types, strings, ObjectIds, UUIDs, dates, booleans, sub-documents, MinKey
        makers = [lambda n: n, lambda n: Int64(2 ** 40 + n), lambda n: n + 0.5, lambda n: f"s{n}",
                  lambda n: ObjectId(f"61{n:022x}"), lambda n: _uuid(n), lambda n: {"sub": n},
                  lambda n: datetime.fromtimestamp(n, timezone.utc)]
        ids = [makers[n % len(makers)](n) for n in range(count - 3)] + [True, False, bson.MinKey()]
    random.Random(1).shuffle(ids)
    mongo_db.plan.insert_many([{"_id": _id, "n": n} for n, _id in enumerate(ids)])
    parts = plan(mongo_db.plan, 4)
    assert len(parts) == 4
    assert parts[0].low is None and parts[-1].high is None
    assert all(a.high == b.low for a, b in zip(parts, parts[1:])), "ranges must meet without a gap"
    # Ids of one type are read by $gte/$lt through the index; ranges across types between index bounds.
    if kind != "mixed":
        assert [part.by_filter for part in parts] == [True] * 4
    read = _covered(mongo_db.plan, parts)
    every = [key for ids_ in read for key in ids_]
    # Proved by counting: the ranges' documents add up to the collection's count, none read twice.
    assert len(every) == mongo_db.plan.count_documents({}) == count
    assert len(set(every)) == count
    for part, ids_ in zip(parts, read):
        if part.by_filter:
            assert len({key[4] for key in ids_} - {0x10, 0x12}) <= 1 and ids_, part.describe()
    ideal = count / 4
    sizes = [len(ids_) for ids_ in read]
    assert all(0.4 * ideal <= size <= 2 * ideal for size in sizes), sizes
    if kind == "mixed":
        # Type order: the first range starts with MinKey and numbers, the last ends with the booleans and dates.
        assert bson.decode(read[0][0])["_id"] == bson.MinKey()
        assert isinstance(bson.decode(read[-1][-1])["_id"], datetime)


def test_a_small_collection_gets_fewer_ranges_and_an_empty_one_a_single_range(mongo_db):
    mongo_db.few.insert_many([{"_id": n} for n in range(3)])
    parts = plan(mongo_db.few, 8)
    assert 1 < len(parts) <= 4  # at most one more than the distinct ids drawn
    assert sum(len(ids) for ids in _covered(mongo_db.few, parts)) == 3
    assert [part.describe() for part in plan(mongo_db.empty, 4)] == ["[start, end)"]
    assert plan(mongo_db.few, 1)[0].describe() == "[start, end)"


def test_a_document_without_an_integer_record_id_is_refused(mongo_db):
    from gigsterpg.exc import SourceError
    with pytest.raises(SourceError, match="record"):
        split_record_id(bson.encode({"_id": 1}))


# ---- the distributed run equals the single-process run -------------------------------------------


def test_a_distributed_run_equals_the_single_process_run_on_messy_data(cluster, mongo_db, pg_url, second_pg_url):
    docs, gig_docs = _messy(mongo_db)
    single = _single(pg_url, mongo_db)
    spread = _distributed(second_pg_url, mongo_db, cluster)
    assert state(second_pg_url) == state(pg_url)
    assert spread.balanced and single.balanced
    # Into empty tables, a first load: one task per raw batch of the one cursor (the local load workers' code).
    batches = {"users": -(-len(docs) // BATCH), "gigs": -(-len(gig_docs) // BATCH)}
    assert spread.tasks.as_dict() | {"workers": 0} == {
        "workers": 0, "tasks": sum(batches.values()), "ran": sum(batches.values()),
        "attempts": sum(batches.values()), "retried": 0, "failed": 0, "coordinator_retries": 0,
        "ranges": batches, "planned": {"users": len(docs), "gigs": len(gig_docs)},
        "read": {"users": len(docs), "gigs": len(gig_docs)}, "merges": 0, "merge_retried": 0, "contested": {},
        "split_s": {}}
    for name in ("users", "gigs"):
        assert spread.collections[name].as_dict() | {"seconds": 0} == single.collections[name].as_dict() | {
            "seconds": 0}
    # What the ids decide, worked out here (the data contract: MongoDB's order of ids, not the scan order, which
    # replaced "the later-seen one is rejected"): of the users of an address, the one whose id comes first keeps
    # it; of two ids with one text form, 7 and "7", the one that comes first keeps the row; a double or
    # sub-document id is refused.
    holder, texts = {}, set()
    for doc in sorted((doc for doc in docs if not isinstance(doc["_id"], (float, dict))),
                      key=lambda doc: id_order_key(doc["_id"])):
        text = id_text(doc["_id"])
        if text in texts:
            continue
        texts.add(text)
        if "name" in doc:
            holder.setdefault(doc["email"].replace("mailto:", "").strip().lower(), text)
    with psycopg.connect(second_pg_url) as connection:
        stored = dict(connection.execute("SELECT email, _id FROM users").fetchall())
        record = connection.execute("SELECT counts->'tasks'->>'ran' FROM sync_runs WHERE id = %s",
                                    (spread.run_id,)).fetchone()[0]
        leftovers = connection.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'sync\\_dist\\_%'")
        assert leftovers.fetchone()[0] == 0, "the scratch tables are dropped at the end of the run"
    assert record == str(sum(batches.values()))
    for email, first in holder.items():
        assert stored[email] == first, email

    _change(mongo_db, docs, gig_docs)
    single = _single(pg_url, mongo_db)
    spread = _distributed(second_pg_url, mongo_db, cluster)  # into full tables: ranges staged, then merged
    assert spread.tasks.ran == spread.tasks.tasks == 2 * RANGES
    assert state(second_pg_url) == state(pg_url)
    # Merging into full tables, the replay inserts in the single-process order and batches: even the surrogate
    # keys agree (a first sync into empty tables may take issue 16's first-load path, numbered its own way).
    assert _keys(second_pg_url) == _keys(pg_url)
    deleted = single.collections["users"].counts.deleted
    assert spread.collections["users"].counts.deleted == deleted and deleted > 0
    assert spread.collections["gigs"].counts.extra == single.collections["gigs"].counts.extra
    assert spread.balanced


def test_full_compare_and_an_unchanged_rerun_equal_the_single_process_run(cluster, mongo_db, pg_url, second_pg_url):
    _messy(mongo_db, users=40, gigs=20, seed=3)
    _single(pg_url, mongo_db)
    _distributed(second_pg_url, mongo_db, cluster)
    again = _distributed(second_pg_url, mongo_db, cluster)  # unchanged: the tasks map nothing, nothing written
    assert again.collections["users"].counts.inserted == again.collections["users"].counts.updated == 0
    compared = _distributed(second_pg_url, mongo_db, cluster, skip_unchanged=False)
    assert compared.collections["users"].counts.updated == 0
    assert state(second_pg_url) == state(pg_url)


@pytest.mark.parametrize("first_load", [False, True], ids=["ranges-merged", "first-load"])
def test_a_worker_killed_mid_run_changes_nothing(cluster, mongo_db, pg_url, second_pg_url, first_load):
    _messy(mongo_db)
    _single(pg_url, mongo_db)
    holder = psycopg.connect(second_pg_url)
    if first_load:
        # A first load's task takes a lock of its batch before its transaction writes: holding every such lock
        # of the run (the database's first: run 1) holds the tasks mid-batch, their attempts recorded.
        holder.execute("SELECT pg_advisory_lock(hashtext('sync_dist_1_attemptsusers'), base)"
                       " FROM generate_series(0, 200) AS base")
    else:
        # Every range task reads sync_hashes inside its transaction: holding that table holds the tasks mid-run.
        holder.execute("LOCK TABLE sync_hashes IN ACCESS EXCLUSIVE MODE")
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(report=_distributed(
        second_pg_url, mongo_db, cluster, first_load=first_load)))
    runner.start()
    try:
        def running_attempts():
            with psycopg.connect(second_pg_url, autocommit=True) as look:
                tables = look.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE '%\\_attempts'").fetchall()
                if not tables:
                    return None
                return look.execute(f"SELECT DISTINCT pid FROM {tables[0][0]}").fetchall()
        pids = wait_until(lambda: (found := running_attempts()) and len(found) == 2 and found,
                          "both workers holding a task", timeout_s=120)
        victim = pids[0][0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not _alive(victim), f"worker process {victim} to die")
    finally:
        holder.rollback()
        holder.close()
    runner.join(timeout=300)
    assert not runner.is_alive(), "the run did not end within 300 s of the worker's death"
    report = outcome["report"]
    assert state(second_pg_url) == state(pg_url)
    assert report.tasks.retried >= 1 and report.tasks.failed == 0
    assert report.tasks.ran == report.tasks.tasks == (sum(report.tasks.ranges.values()) if first_load else 2 * RANGES)
    assert report.balanced


def test_a_first_load_leaves_no_batch_held_by_the_client_or_the_scheduler(cluster, mongo_db, pg_url):
    # Dask's per-connection logs kept every message under 1 MB, so every raw batch (in the client's log of what it
    # submitted, and in the in-process scheduler's of what it sent each worker): memory grew with the collection.
    _messy(mongo_db, users=40, gigs=20, seed=3)
    report = _distributed(pg_url, mongo_db, cluster)
    assert report.tasks.ran == report.tasks.tasks == 9  # 6 batches of users, 3 of gigs
    prefix = f"gigsterpg-load-{report.run_id}-"
    scheduler = cluster.cluster.scheduler  # in this process: a local cluster's
    streams = [cluster.scheduler_comm, *scheduler.stream_comms.values(), *scheduler.client_comms.values()]
    held = [message for stream in streams for message in stream.recent_message_log if prefix in repr(message)]
    assert held == []
    assert not [key for key in (*cluster.futures, *scheduler.tasks) if str(key).startswith(prefix)]


def test_a_first_load_batch_run_again_after_it_committed_loads_nothing_twice(pg_url):
    """Dask runs a task again when it lost the answer of one that committed: the second attempt loads nothing."""
    from gigsterpg.lib.pg.sync.engine import parallel
    from gigsterpg.lib.pg.sync.engine.task import BatchTask, attempts_table, create_scratch, load_batch
    from gigsterpg.lib.pg.sync.user import UserSync
    payload = b"".join(bson.encode({"_id": n, "name": f"user {n}", "email": f"u{n}@example.com"}) for n in range(5))
    with psycopg.connect(pg_url, autocommit=True) as connection, connection.cursor() as cursor:
        parallel.create_load_tables(cursor, 99, ["users"])
        create_scratch(cursor, 99, ())
    task = BatchTask(99, UserSync, 10, payload, pg_url, "t")
    assert "postgresql" not in repr(task), "Dask logs a task's arguments: no URL in them"
    assert load_batch(task) == 5
    assert load_batch(task) == 5  # the same batch again (the same key): its rows are there once
    with psycopg.connect(pg_url) as connection:
        loaded = connection.execute(f"SELECT pos FROM {parallel.load_table(99, 'users')} ORDER BY pos").fetchall()
        attempts = connection.execute(f"SELECT task, documents FROM {attempts_table(99)} ORDER BY id").fetchall()
        raw = connection.execute(f"SELECT count(*) FROM {parallel.raw_table(99, 'users')}").fetchone()[0]
    assert [pos for (pos,) in loaded] == [10, 11, 12, 13, 14] and raw == 5
    assert attempts == [(10, 5), (10, None)]  # two attempts counted, one committed the batch


def _keys(url: str) -> list:
    with psycopg.connect(url) as connection:
        return [connection.execute(f"SELECT id, {column} FROM {table} ORDER BY id").fetchall()
                for table, column in (("users", "_id"), ("gigs", "_id"), ("skills", "name"))]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---- the CLI ---------------------------------------------------------------------------------------


def _cli(capsys, *args):
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_sync_scheduler_runs_on_the_cluster_and_records_its_tasks(cluster, mongo_db, mongo_url, pg_url,
                                                                  second_pg_url, capsys):
    _messy(mongo_db, users=30, gigs=20, seed=5)
    _single(pg_url, mongo_db)
    code, out, err = _cli(capsys, "sync", "--scheduler", cluster.scheduler.address, "--pg-url", second_pg_url,
                          "--mongo-url", mongo_url, "--batch-size", str(BATCH), "--no-progress")
    assert code == 0, err
    # Into empty tables, a first load: a task per raw batch (30 users and 20 gigs in batches of 7: 5 + 3).
    assert "Dask: 2 workers, 8 tasks (8 ran, 0 retried, 0 failed)" in out
    assert f"Dask dashboard: {cluster.dashboard_link}" in err.splitlines()
    assert state(second_pg_url) == state(pg_url)
    mongo_db.users.delete_one({})
    _single(pg_url, mongo_db)
    code, out, err = _cli(capsys, "sync", "--scheduler", cluster.scheduler.address, "--pg-url", second_pg_url,
                          "--mongo-url", mongo_url, "--batch-size", str(BATCH), "--no-progress")
    assert code == 0, err
    # Into full tables: RANGES_PER_WORKER ranges per worker and collection (fewer only when the sample holds
    # fewer ids), staged, then merged.
    assert "Dask: 2 workers, 16 tasks (16 ran, 0 retried, 0 failed)" in out
    # One user deleted: nothing changed to merge in parallel; the rejects are looked at again by the coordinator.
    assert "Dask merge: 0 tasks in parallel sessions (0 retried), " in out
    assert state(second_pg_url) == state(pg_url)
    with psycopg.connect(second_pg_url) as connection:
        tasks = connection.execute("SELECT counts->'tasks' FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert (tasks["tasks"], tasks["ran"], tasks["retried"], tasks["failed"]) == (16, 16, 0, 0)


def test_sync_workers_loads_first_in_local_processes_then_starts_a_local_cluster(mongo_db, mongo_url, pg_url,
                                                                                 second_pg_url, capsys):
    _messy(mongo_db, users=20, gigs=10, seed=9)
    _single(pg_url, mongo_db)
    args = ("sync", "--workers", "2", "--pg-url", second_pg_url, "--mongo-url", mongo_url, "--batch-size", str(BATCH),
            "--no-progress")
    code, out, err = _cli(capsys, *args)
    assert code == 0, err
    # Into empty tables: the load workers of this machine (no cluster: they cost less CPU a document than one).
    assert "Load workers: 2 processes of this machine (a first load: no Dask cluster needed)" in out
    assert "Dask" not in (out + err).replace("no Dask cluster", "")
    assert state(second_pg_url) == state(pg_url)
    mongo_db.users.delete_one({})
    _single(pg_url, mongo_db)
    code, out, err = _cli(capsys, *args)  # into full tables: ranges on a local cluster, merged
    assert code == 0, err
    assert "Dask: 2 workers, " in out and " 0 failed)" in out
    assert state(second_pg_url) == state(pg_url)


def test_an_unreachable_scheduler_fails_in_one_line(mongo_url, pg_url, capsys, monkeypatch):
    monkeypatch.setattr(distributed, "SCHEDULER_TIMEOUT_S", 2)
    code, out, err = _cli(capsys, "sync", "--scheduler", "tcp://127.0.0.1:9", "--pg-url", pg_url,
                          "--mongo-url", mongo_url)
    failures = [line for line in err.splitlines() if line.startswith("FAILED: ")]
    assert code == 1 and len(failures) == 1, err
    assert failures[0].startswith("FAILED: cannot reach the Dask scheduler at tcp://127.0.0.1:9, ")
    assert failures[0].endswith("start it (dask scheduler) or fix --scheduler / GIGSTERPG_DASK_SCHEDULER")
    assert "Traceback" not in err
    with psycopg.connect(pg_url) as connection:
        assert connection.execute("SELECT count(*) FROM sync_runs").fetchone()[0] == 0, "no run began"


@pytest.mark.parametrize("flag, words", [("--incremental", "--workers cannot be combined with --incremental"),
                                         ("--follow", "--workers cannot be combined with --follow"),
                                         ("--limit=5", "--workers cannot be combined with --limit")])
def test_workers_with_a_single_writer_mode_is_refused(mongo_url, pg_url, capsys, flag, words):
    code, out, err = _cli(capsys, "sync", "--workers", "2", flag, "--pg-url", pg_url, "--mongo-url", mongo_url)
    assert code == 2
    assert [line for line in err.splitlines() if line.startswith("FAILED: ")] == [
        f"FAILED: {words}, " + err.split(f"{words}, ", 1)[1].splitlines()[0]]
    assert "in one process" in err


def test_the_scheduler_setting_sends_full_syncs_only(tmp_path):
    settings = load_settings({}, environ={"GIGSTERPG_DASK_SCHEDULER": "tcp://h:8786"}, dotenv_path=tmp_path / "none")
    assert settings.dask_scheduler == "tcp://h:8786"
    assert Settings().dask_scheduler is None
    parser = cli.build_parser()
    assert distributed_cli.wanted(parser.parse_args(["sync"]), settings)
    assert not distributed_cli.wanted(parser.parse_args(["sync", "--follow"]), settings)
    assert not distributed_cli.wanted(parser.parse_args(["sync", "--incremental"]), settings)
    assert not distributed_cli.wanted(parser.parse_args(["sync"]), Settings())
    assert distributed_cli.wanted(parser.parse_args(["sync", "--workers", "3"]), Settings())


def test_an_incremental_run_asked_of_the_cluster_is_made_in_process(cluster, mongo_db, mongo_url, pg_url):
    from gigsterpg import commands
    _messy(mongo_db, users=12, gigs=6, seed=2)
    settings = Settings(pg_url=pg_url, mongo_url=mongo_url, batch_size=BATCH)
    full = commands.sync_distributed(settings, cluster)
    assert full.mode == "full" and full.tasks.ran == full.tasks.tasks
    incremental = commands.sync_distributed(settings, cluster, mode="incremental")
    assert incremental.mode == "incremental" and not hasattr(incremental, "tasks")


def test_an_unchanged_document_that_becomes_a_later_duplicate_is_fetched_again_for_its_reject(
        cluster, mongo_db, pg_url, second_pg_url):
    mongo_db.users.insert_many([{"_id": 7, "name": "int seven"}, {"_id": "7", "name": "text seven"},
                                {"_id": 8, "name": "eight"}])
    for url, sync in ((pg_url, _single), (second_pg_url, lambda url, db: _distributed(url, db, cluster))):
        sync(url, mongo_db)
    # The int 7 comes back unchanged but after "7" in scan order: it keeps the row all the same (the data
    # contract: the id that comes first in MongoDB's order of ids, a number before a string, not the first
    # seen), and "7" stays the duplicate; the single process and the replay agree.
    mongo_db.users.delete_one({"_id": 7})
    mongo_db.users.insert_one({"_id": 7, "name": "int seven"})
    _single(pg_url, mongo_db)
    _distributed(second_pg_url, mongo_db, cluster)
    assert state(second_pg_url) == state(pg_url)
    rejects = []
    for url in (pg_url, second_pg_url):
        with psycopg.connect(url) as connection:
            rejects.append(connection.execute("SELECT doc_id, reason, document FROM sync_rejects"
                                              " WHERE resolved_at IS NULL").fetchall())
    assert rejects[0] == rejects[1]
    assert [(reason, document["name"]) for _, reason, document in rejects[1]] == [("duplicate _id", "text seven")]


@pytest.mark.parametrize("first_load, key", [(False, "gigsterpg-sync-1-users-"), (True, "gigsterpg-load-1-users-")])
def test_a_task_failing_every_attempt_fails_the_run_in_one_line(cluster, mongo_db, pg_url, pg_server_url,
                                                                first_load, key):
    _messy(mongo_db, users=10, gigs=5)
    pg = SqlAlchemy(pg_url)
    try:
        with pytest.raises(Exception) as raised:  # the workers are given a database that does not exist
            run_distributed(pg.engine, mongo_db, cluster, with_database(pg_server_url, "no_such_db"),
                            _mongo_url(mongo_db), batch_size=BATCH, ranges=2, retries=1, first_load=first_load)
    finally:
        pg.dispose()
    assert str(raised.value).startswith(f"sync task {key}")
    assert "no_such_db" in str(raised.value) and str(raised.value).endswith(
        "see the Dask workers' logs, then run the sync again")
    with psycopg.connect(pg_url) as connection:
        status, error, tasks = connection.execute("SELECT status, error, counts->'tasks' FROM sync_runs").fetchone()
        leftovers = connection.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'sync\\_dist\\_%'")
        assert leftovers.fetchone()[0] == 0
    assert status == "failed" and error.startswith("sync task ")
    assert tasks["failed"] == 1 and tasks["ran"] == 0


def test_the_task_bar_counts_tasks_and_a_first_loads_documents():
    import io
    import time
    from gigsterpg.pipelines.progress import Bar
    stream = io.StringIO()
    bar = Bar(stream, units={"tasks": " tasks"})  # as the CLI makes it for a Dask run
    bar.start("tasks", 4)
    time.sleep(1.1)  # slower than one a second: still "tasks/s" (tqdm's own says "1.10s/ tasks")
    bar.advance(1)
    bar.start("users", 1000)  # a first load on the cluster counts each collection's documents
    bar.advance(300)
    bar.close()
    tasks, users = stream.getvalue().split("users")[0], stream.getvalue().split("users")[-1]
    assert "1/4" in tasks and " tasks/s]" in tasks and "s/ tasks" not in tasks, tasks
    assert "300/1000" in users and " docs/s]" in users and "tasks" not in users, users


def test_the_benchmark_runs_at_a_tiny_scale(project_root, tmp_path):
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "bench.distributed", "--scale", "0.002", "--json",
                             str(tmp_path / "d.json")], cwd=project_root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "- distributed full sync, first sync of 600 documents, in one run: single process " in result.stdout
    assert "--workers 2 " in result.stdout and "  - modelled (from the --workers 2 costs" in result.stdout


def test_the_coordinator_reconnects_after_losing_its_connection_mid_merge(cluster, mongo_db, pg_url, second_pg_url):
    from gigsterpg.lib.pg.sync.engine.runner import RetryPolicy
    _messy(mongo_db)
    _single(pg_url, mongo_db)
    outcome = {}
    pg = SqlAlchemy(second_pg_url)
    runner = threading.Thread(target=lambda: outcome.update(report=run_distributed(
        pg.engine, mongo_db, cluster, second_pg_url, _mongo_url(mongo_db), batch_size=BATCH, ranges=RANGES,
        retry=RetryPolicy(first_delay=0.01), first_load=False)))
    runner.start()
    try:
        with run_held(second_pg_url, lambda progress: progress.get("users", 0) >= 2 * BATCH, "two users' batches"):
            with psycopg.connect(second_pg_url, autocommit=True) as admin:
                # The coordinator waits at its next batch for the run's row this test holds: its session ends.
                pid = wait_until(lambda: admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    " AND query LIKE 'UPDATE sync_runs%'").fetchone(), "the coordinator waiting for the run's row")[0]
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        runner.join(timeout=300)
        pg.dispose()
    assert not runner.is_alive()
    report = outcome["report"]
    assert state(second_pg_url) == state(pg_url)
    assert report.tasks.coordinator_retries == 1 and report.balanced
    with psycopg.connect(second_pg_url) as connection:
        assert connection.execute("SELECT retries FROM sync_runs WHERE id = %s", (report.run_id,)).fetchone()[0] == 1


def test_a_merge_that_finds_fewer_documents_than_staged_fails_before_deleting():
    from gigsterpg.exc import TerminalError
    from gigsterpg.lib.pg.sync.engine.distributed import _advancing
    from gigsterpg.lib.pg.sync.engine.runner import Progress
    assert list(_advancing([[1, 2], [3]], Progress(), "users", 3)) == [[1, 2], [3]]
    replay = _advancing([[1, 2], [3]], Progress(), "users", 5)
    assert next(replay) == [1, 2] and next(replay) == [3]
    with pytest.raises(TerminalError, match="the merge of users found 3 of the 5 documents its tasks staged"):
        next(replay)
