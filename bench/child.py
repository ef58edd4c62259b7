"""One measured operation, run in its own process so that its time and peak RSS are its own.

``python -m bench.child OP PG_URL MONGO_URL BATCH_SIZE`` prints one JSON
object: ``docs``, ``seconds``, ``maxrss_mb`` and what the operation reports.
"""
import json
import os
import resource
import sys
import time

import pymongo
from sqlalchemy import select

from bench.rss import peak_rss_mb
from gigsterpg import commands
from gigsterpg.config import Settings
from gigsterpg.lib.pg.db import Gig, SqlAlchemy, User
from gigsterpg.lib.pg.sync.engine.bulk import BatchLoader, decode, prepare
from gigsterpg.lib.pg.sync.engine.reader import batches
from gigsterpg.lib.pg.sync.engine.runner import RAW, RunReport, begin_run, end_run
from gigsterpg.lib.pg.sync.engine.staging import copy_rows
from gigsterpg.lib.pg.sync.gig import GigSync
from gigsterpg.lib.pg.sync.user import UserSync

ORM_SAMPLE = 10_000


def _mongo(url):
    client = pymongo.MongoClient(url, tz_aware=True)
    return client, client.get_default_database()


def read_only(pg_url, mongo_url, batch_size):
    """Stream both collections as dicts, plain find(), batches of 10k: the ceiling the sync is measured against."""
    client, database = _mongo(mongo_url)
    started, docs = time.perf_counter(), 0
    for name in ("users", "gigs"):
        for _ in database[name].find({}, batch_size=10_000):
            docs += 1
    return {"docs": docs, "seconds": time.perf_counter() - started}


def sync(pg_url, mongo_url, batch_size, mode="auto"):
    """The whole sync, as the CLI runs it (migration check included)."""
    settings = Settings(pg_url=pg_url, mongo_url=mongo_url, batch_size=batch_size)
    started = time.perf_counter()
    report = commands.sync(settings, mode=mode)
    seconds = time.perf_counter() - started
    counts = {name: c.as_dict() for name, c in report.collections.items()}
    return {"docs": sum(c["seen"] for c in counts.values()), "seconds": seconds, "counts": counts}


def sync_workers(pg_url, mongo_url, batch_size, workers):
    """A first sync whose first load runs in ``workers`` processes (0: in this one)."""
    settings = Settings(pg_url=pg_url, mongo_url=mongo_url, batch_size=batch_size)
    started = time.perf_counter()
    report = commands.sync(settings, mode="full", load_workers=workers)
    counts = {name: c.as_dict() for name, c in report.collections.items()}
    stats = getattr(report, "load_workers", [])  # the workers are the fork server's children, not ours
    return {"docs": sum(c["seen"] for c in counts.values()), "seconds": time.perf_counter() - started,
            "counts": counts, "workers": workers, "workers_cpu_s": sum(cpu for cpu, _ in stats),
            "workers_maxrss_mb": max((rss for _, rss in stats), default=0)}


def sync_dask(pg_url, mongo_url, batch_size, workers):
    """A first sync whose batches are tasks of a local Dask cluster of ``workers`` processes (``sync --workers N``
    on Dask), the cluster started before the clock (a cluster is there before a sync uses it)."""
    import psutil

    from gigsterpg.lib.pg.sync.engine.distributed import open_cluster
    settings = Settings(pg_url=pg_url, mongo_url=mongo_url, batch_size=batch_size)
    with open_cluster(workers, dashboard=None) as cluster:
        pids = [int(info["pid"]) for info in cluster.scheduler_info()["workers"].values() if info.get("pid")] \
            or [child.pid for child in psutil.Process().children(recursive=True)]  # the nannies and workers

        def cpu():
            return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)
        before, started = cpu(), time.perf_counter()
        report = commands.sync_distributed(settings, cluster, mode="full")
        seconds, workers_cpu = time.perf_counter() - started, cpu() - before
    counts = {name: c.as_dict() for name, c in report.collections.items()}
    stats = getattr(report, "load_workers", [])
    return {"docs": sum(c["seen"] for c in counts.values()), "seconds": seconds, "counts": counts,
            "workers": workers, "workers_cpu_s": workers_cpu,
            "workers_maxrss_mb": max((rss for _, rss in stats), default=0), "tasks": report.tasks.as_dict()}


def incremental(pg_url, mongo_url, batch_size):
    """An incremental run (documents updated since the watermarks), as ``sync --incremental`` runs it."""
    return sync(pg_url, mongo_url, batch_size, mode="incremental")


EXPORT_TABLE = "export_bench"


def export_table(pg_url, mongo_url, batch_size):
    """export-table of a 100k-row table (scaled by the caller's row count in batch_size's place: see
    bench.__main__), against COPY ... TO of the same table and a plain insert_many of the same documents."""
    from gigsterpg.lib.mongo import export
    rows = batch_size
    client, database = _mongo(mongo_url)
    with export.connect(pg_url) as connection:
        connection.execute(
            f"CREATE TABLE {EXPORT_TABLE} (id int PRIMARY KEY, name text, price numeric(10, 2), ok boolean,"
            " score float8, created timestamptz, tags text[])")
        connection.execute(
            f"INSERT INTO {EXPORT_TABLE} SELECT i, 'row ' || i, (i %% 10000) / 100.0, i %% 2 = 0, i * 0.5,"
            " '2024-01-01'::timestamptz + i * interval '1 minute', ARRAY['a', 'b'] FROM generate_series(1, %s) i",
            (rows,))
        connection.commit()
        table = export.describe(connection, EXPORT_TABLE)
        database.drop_collection("export_bench")
        started = time.perf_counter()
        report = export.export(connection, database.export_bench, table)
        exported = time.perf_counter() - started

        started = time.perf_counter()
        with connection.cursor().copy(f"COPY {EXPORT_TABLE} TO STDOUT (FORMAT BINARY)") as copy:
            for _ in copy:
                pass
        copied = time.perf_counter() - started
        connection.rollback()

        names = [column.name for column in table.columns]
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT * FROM {EXPORT_TABLE}")
            documents = [export.document_of(table, names, row) for row in cursor.fetchall()]
    # secantusdb slows down as its database grows: each of the three writes starts from an empty database.
    database.drop_collection("export_bench")
    database.drop_collection("export_plain")
    started = time.perf_counter()
    for start in range(0, len(documents), 2000):
        database.export_plain.insert_many(documents[start:start + 2000], ordered=False)
    inserted = time.perf_counter() - started
    database.drop_collection("export_plain")
    client.close()
    return {"docs": report.rows, "seconds": exported, "copy_seconds": copied, "insert_seconds": inserted,
            "written": report.written, "api_seconds": _export_through_the_api(pg_url, mongo_url), "api_poll_s": POLL_S}


POLL_S = float(os.environ.get("BENCH_POLL_S", "0.25"))


def _export_through_the_api(pg_url, mongo_url) -> float:
    """Seconds from POST /exports of the same table (into a new collection) to the job's success."""
    from fastapi.testclient import TestClient
    from psycopg.conninfo import conninfo_to_dict

    from gigsterpg.api.app import create_app

    source = conninfo_to_dict(pg_url)
    body = {"host": source.get("host", "localhost"), "port": int(source.get("port", 5432)),
            "user": source.get("user", "postgres"), "password": source.get("password", ""),
            "database": source["dbname"], "table": EXPORT_TABLE, "collection": "export_api"}
    with TestClient(create_app(Settings(pg_url=pg_url, mongo_url=mongo_url), None)) as api:
        started = time.perf_counter()
        status_url = api.post("/exports", json=body).json()["status_url"]
        while (job := api.get(status_url).json())["state"] in ("queued", "running"):
            time.sleep(POLL_S)
        seconds = time.perf_counter() - started
    client, database = _mongo(mongo_url)
    database.drop_collection("export_api")
    client.close()
    if job["state"] != "succeeded":
        raise RuntimeError(f"the API's export ended {job['state']}: {job['errors']}")
    return seconds


def _in_memory_batches(database, batch_size):
    """Each collection's batches, read before the clock starts."""
    for model in (UserSync, GigSync):
        collection = database[model.collection].with_options(codec_options=RAW)
        cursor = collection.find({}, batch_size=batch_size)
        yield model, list(batches(cursor, batch_size))


def transform_load(pg_url, mongo_url, batch_size):
    """Transform + load of documents already in memory, no MongoDB in the timed part."""
    client, database = _mongo(mongo_url)
    pg = SqlAlchemy(pg_url)
    pg.migrate_head()
    raw = pg.engine.raw_connection()
    connection = raw.driver_connection
    run_id = begin_run(connection, ["users", "gigs"])
    seconds, docs = 0.0, 0
    for model, loaded in _in_memory_batches(database, batch_size):
        loader = BatchLoader(connection, model, run_id, source=database[model.collection])
        started = time.perf_counter()
        for batch in loaded:
            loader.load(prepare(batch))
            docs += len(batch)
        loader.finish(True)
        seconds += time.perf_counter() - started
        del loaded
    end_run(connection, RunReport(run_id, "succeeded"), None)
    raw.close()
    return {"docs": docs, "seconds": seconds}


def transform_first_load(pg_url, mongo_url, batch_size):
    """``transform_load`` by the first-load path (engine/firstload.py): keys dropped, plain inserts in one
    transaction, keys and indexes put back and the hash cache filled at the end (all in the timed part)."""
    from gigsterpg.lib.pg.sync.engine import firstload

    client, database = _mongo(mongo_url)
    pg = SqlAlchemy(pg_url)
    pg.migrate_head()
    raw, side_raw = pg.engine.raw_connection(), pg.engine.raw_connection()
    connection, side = raw.driver_connection, side_raw.driver_connection
    side.autocommit = True
    run_id = begin_run(connection, ["users", "gigs"])
    loaders = [firstload.FirstLoader(connection, side, model, run_id, database[model.collection])
               for model in (UserSync, GigSync)]
    seconds, docs = 0.0, 0
    started = time.perf_counter()
    with connection.cursor() as cursor:
        items = firstload.deferred(cursor)
        firstload.drop(cursor, items)
        for loader in loaders:
            loader.begin(cursor)
    seconds += time.perf_counter() - started
    for loader, (model, loaded) in zip(loaders, _in_memory_batches(database, batch_size)):
        started = time.perf_counter()
        for batch in loaded:
            loader.load(prepare(batch), commit=False)
            docs += len(batch)
        loader.finish(True)
        seconds += time.perf_counter() - started
        del loaded
    started = time.perf_counter()
    with connection.cursor() as cursor:
        firstload.restore(cursor, items)
        for loader in loaders:
            loader.close(cursor)
    connection.commit()
    seconds += time.perf_counter() - started
    end_run(connection, RunReport(run_id, "succeeded"), None)
    side_raw.close()
    raw.close()
    return {"docs": docs, "seconds": seconds}


def sync_merge(pg_url, mongo_url, batch_size):
    """A first sync by the merge path (``first_load=False``): what the first load is compared with."""
    settings = Settings(pg_url=pg_url, mongo_url=mongo_url, batch_size=batch_size)
    started = time.perf_counter()
    report = commands.sync(settings, mode="full", first_load=False)
    counts = {name: c.as_dict() for name, c in report.collections.items()}
    return {"docs": sum(c["seen"] for c in counts.values()), "seconds": time.perf_counter() - started,
            "counts": counts}


def copy_only(pg_url, mongo_url, batch_size):
    """COPY of the rows the transform builds, into empty tables shaped like the four targets."""
    client, database = _mongo(mongo_url)
    pg = SqlAlchemy(pg_url)
    raw = pg.engine.raw_connection()
    connection = raw.driver_connection
    with connection.cursor() as cursor:
        for table in ("users", "user_skills", "gigs"):
            cursor.execute(f"DROP TABLE IF EXISTS copy_{table}")
            cursor.execute(f"CREATE TABLE copy_{table} (LIKE {table} INCLUDING ALL)")
            if table != "user_skills":  # the rows carry extra as JSON text, as staging does
                cursor.execute(f"ALTER TABLE copy_{table} ALTER COLUMN extra TYPE text")
    connection.commit()
    seconds, docs, rows = 0.0, 0, 0
    skill_ids, unique_keys = {}, set()
    for model, loaded in _in_memory_batches(database, batch_size):
        for batch in loaded:
            built = []
            for doc in batch:
                try:
                    row = model.to_row(decode(doc))
                except Exception:
                    continue
                # Unique keys as in the real tables: a duplicate would abort the COPY.
                keys = [(model.table, row.mongo_id)] + ([row.email] if model is UserSync and row.email else [])
                if any(key in unique_keys for key in keys):
                    continue
                unique_keys.update(keys)
                built.append((rows + len(built) + 1, row))
            docs += len(batch)
            rows += len(built)
            with connection.cursor() as cursor:
                started = time.perf_counter()
                if model is UserSync:
                    copy_rows(cursor, "copy_users", (("id", "int8"),) + UserSync.columns,
                              ((row_id,) + row[:6] for row_id, row in built))
                    copy_rows(cursor, "copy_user_skills", (("user_id", "int8"), ("skill_id", "int4")),
                              ((row_id, skill_ids.setdefault(key, len(skill_ids) + 1))
                               for row_id, row in built for _, key in row.skills))
                else:
                    copy_rows(cursor, "copy_gigs", (("id", "int8"),) + GigSync.columns,
                              ((row_id,) + tuple(row) for row_id, row in built))
                connection.commit()
                seconds += time.perf_counter() - started
    with connection.cursor() as cursor:
        for table in ("users", "user_skills", "gigs"):
            cursor.execute(f"DROP TABLE copy_{table}")
    connection.commit()
    raw.close()
    return {"docs": docs, "seconds": seconds, "rows": rows}


def orm(pg_url, mongo_url, batch_size):
    """The textbook ORM way, ``session.merge()`` per document, on a sample."""
    client, database = _mongo(mongo_url)
    pg = SqlAlchemy(pg_url)
    pg.migrate_head()
    session = pg.session()
    started, docs = time.perf_counter(), 0
    for model, mapped in ((UserSync, User), (GigSync, Gig)):
        for doc in database[model.collection].find({}).limit(ORM_SAMPLE // 2):
            try:
                row = model.to_row(doc)
            except Exception:
                continue
            instance = session.scalars(select(mapped).where(mapped.mongo_id == row.mongo_id)).one_or_none()
            instance = model.mongo_to_pg(session, doc, instance or mapped())
            session.merge(instance)
            try:
                session.commit()
            except Exception:  # a duplicate e-mail: the textbook way has no better answer than skipping it
                session.rollback()
            docs += 1
    return {"docs": docs, "seconds": time.perf_counter() - started}


OPERATIONS = {"read": read_only, "sync": sync, "incremental": incremental, "transform_load": transform_load,
              "transform_first_load": transform_first_load, "sync_merge": sync_merge,
              "copy": copy_only, "orm": orm, "export": export_table}


def main(argv):
    op, pg_url, mongo_url, batch_size = argv[0], argv[1], argv[2], int(argv[3])
    if op.startswith("sync_w"):  # sync_w<N>: a first sync with N load workers
        result = sync_workers(pg_url, mongo_url, batch_size, int(op[len("sync_w"):]))
    elif op.startswith("dask_w"):  # dask_w<N>: a first sync on a local Dask cluster of N workers
        result = sync_dask(pg_url, mongo_url, batch_size, int(op[len("dask_w"):]))
    else:
        result = OPERATIONS[op](pg_url, mongo_url, batch_size)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["maxrss_mb"] = peak_rss_mb()  # not ru_maxrss: it survives exec (bench/rss.py)
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    # Worker processes (the first load's), once ended: their CPU, and the peak RSS of the largest.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["children_cpu_s"] = children.ru_utime + children.ru_stime
    result["children_maxrss_mb"] = children.ru_maxrss / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
