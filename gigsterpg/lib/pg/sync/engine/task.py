"""One task of a distributed full sync, run on a Dask worker: read one ``_id`` range, hash, map, stage.

The task writes nothing a reader of the target tables sees: only its own rows
of the run's scratch table (``scratch_table``), one row per document, keyed by
the document's record id:

- every document: its record id, text id and hash;
- a document whose hash differs from the stored one (new or changed; every
  document with ``--full-compare``): its bytes and its mapping (the row, or
  the reason it is rejected), pickled;
- any other: the BSON of its ``_id`` (the merge fetches it again in the rare
  case it needs the whole document: an id whose text form another id shares).

Idempotent: one transaction deletes the task's rows, writes them again and
records the attempt's end, under a lock of that task, so a retried task (its
worker died, or the first attempt's answer was lost) leaves exactly one copy.
"""
import json
import os
import pickle
import socket
import threading
from dataclasses import dataclass, field
from typing import Optional

import bson
import psycopg
import pymongo
from bson.raw_bson import RawBSONDocument

from gigsterpg.exc import RejectedDocument
from gigsterpg.lib.pg.sync import registry
from gigsterpg.lib.pg.sync.engine import fingerprint, parallel
from gigsterpg.lib.pg.sync.engine.bulk import BatchLoader, Prepared, map_document
from gigsterpg.lib.pg.sync.engine.plan import IdRange, find_range, split_record_id
from gigsterpg.lib.pg.sync.engine.reader import batches
from gigsterpg.lib.pg.sync.engine.staging import copy_rows

# ``id_key``: the id's place in MongoDB's order of ids; ``claims`` and ``adds``: of a mapped row, its unique
# values and the keys of the shared rows it refers to (``SyncModel.claims``, ``adds``); ``contested``: left to
# the coordinator's ordered replay (a rejected mapping here, the rest set-wise once the ranges are staged).
SCRATCH_COLUMNS = (("rec", "int8"), ("task", "int4"), ("doc_id", "text"), ("digest", "bytea"), ("raw", "bytea"),
                   ("idb", "bytea"), ("mapped", "bytea"), ("id_key", "bytea"), ("claims", "text[]"),
                   ("adds", "text[]"), ("contested", "bool"))
SCRATCH_PREFIX = "sync_dist_"


def scratch_table(run_id: int, collection: str) -> str:
    """The run's scratch table of one collection (UNLOGGED: a crash loses it, and the next run starts over)."""
    return f"{SCRATCH_PREFIX}{run_id}_{collection}"


def attempts_table(run_id: int) -> str:
    """The run's ledger of task attempts: one row per attempt, ``documents`` set when it committed."""
    return f"{SCRATCH_PREFIX}{run_id}_attempts"


def merges_table(run_id: int) -> str:
    """The run's ledger of merge tasks (``merge_range``): attempts, and the counts of the one that committed."""
    return f"{SCRATCH_PREFIX}{run_id}_merges"


def create_scratch(cursor, run_id: int, collections) -> None:
    """The run's scratch tables (the coordinator creates them before the tasks start)."""
    parallel.create_attempts(cursor, attempts_table(run_id))
    cursor.execute(f"CREATE UNLOGGED TABLE {merges_table(run_id)} (collection text, task int4, attempts int4"
                   " NOT NULL DEFAULT 1, pid int4, host text, counts jsonb, PRIMARY KEY (collection, task))")
    for name in collections:
        columns = ", ".join(f"{column} {kind}" for column, kind in SCRATCH_COLUMNS)
        cursor.execute(f"CREATE UNLOGGED TABLE {scratch_table(run_id, name)} ({columns}, PRIMARY KEY (rec))")


@dataclass(frozen=True)
class RangeTask:
    """What a worker needs for one range: where the data is and how to read it."""

    run_id: int
    collection: str
    part: IdRange
    # Not in the repr: Dask logs a failed task's arguments.
    pg_url: str = field(repr=False)  # a libpq URL (postgresql://...)
    mongo_url: str = field(repr=False)
    mongo_database: str
    batch_size: int
    skip_unchanged: bool = True
    # Unique per run: Dask hands back the result it holds for a key, and run ids repeat across databases.
    token: str = ""

    @property
    def key(self) -> str:
        """The task's name in Dask (and on its dashboard): no URL in it."""
        return f"gigsterpg-sync-{self.run_id}-{self.collection}-{self.part.index}-{self.token}"


def stage_range(task: RangeTask) -> dict:
    """Read, hash and map ``task``'s range into the scratch table; its counts.

    Runs on a worker. Any error goes back to Dask, which retries the task.
    """
    model = registry.model(task.collection)
    connection = psycopg.connect(task.pg_url)
    client = pymongo.MongoClient(task.mongo_url)  # after the connection: a failed connect leaks no client
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {attempts_table(task.run_id)} (collection, task, pid, host)"
                           " VALUES (%s, %s, %s, %s) RETURNING id",
                           (task.collection, task.part.index, os.getpid(), socket.gethostname()))
            attempt = cursor.fetchone()[0]
        connection.commit()  # the attempt is counted even if this process dies now
        table = scratch_table(task.run_id, task.collection)
        counts = {"documents": 0, "mapped": 0}
        with connection.cursor() as cursor:
            # Another attempt at this task (one Dask thought lost) finishes or dies before this one goes on.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", (table, task.part.index))
            cursor.execute(f"DELETE FROM {table} WHERE task = %s", (task.part.index,))
            source = find_range(client[task.mongo_database][task.collection], task.part, task.batch_size)
            for batch in batches(source, task.batch_size):
                copy_rows(cursor, table, SCRATCH_COLUMNS, _rows(cursor, model, task, batch, counts))
            cursor.execute(f"UPDATE {attempts_table(task.run_id)} SET documents = %s WHERE id = %s",
                           (counts["documents"], attempt))
        connection.commit()
        return counts
    finally:
        connection.close()
        client.close()


def _rows(cursor, model, task: RangeTask, batch, counts: dict) -> list:
    """The scratch rows of one batch of documents read with their record ids."""
    read = []
    for doc in batch:
        record, raw = split_record_id(doc.raw)
        plain = RawBSONDocument(raw)
        read.append((record, plain, fingerprint.doc_id(plain), fingerprint.digest(raw)))
    stored = {}
    if task.skip_unchanged:
        cursor.execute("SELECT _id, hash FROM sync_hashes WHERE collection = %s AND _id = ANY(%s)",
                       (task.collection, [doc_id for _, _, doc_id, _ in read]))
        stored = dict(cursor.fetchall())
    rows = []
    for record, plain, doc_id, digest in read:
        key = fingerprint.order_key(plain)
        if stored.get(doc_id) == digest:
            rows.append((record, task.part.index, doc_id, digest, None, _id_bson(plain), None, key, None, None, False))
        else:
            mapped = map_document(model, plain)
            rejected = isinstance(mapped, RejectedDocument)
            rows.append((record, task.part.index, doc_id, digest, plain.raw, None,
                         pickle.dumps(_portable(mapped), protocol=pickle.HIGHEST_PROTOCOL), key,
                         None if rejected else list(model.claims(mapped)),
                         None if rejected else list(model.adds(mapped)), rejected))
            counts["mapped"] += 1
    counts["documents"] += len(read)
    return rows


@dataclass(frozen=True)
class MergeTask:
    """One partition of a re-sync's split merge: the uncontested changed documents of one range."""

    run_id: int
    collection: str
    index: int  # the range's (``RangeTask``'s part's) index
    pg_url: str = field(repr=False)  # a libpq URL (postgresql://...); not in the repr: Dask logs arguments
    batch_size: int
    skip_unchanged: bool = True
    token: str = ""

    @property
    def key(self) -> str:
        """The task's name in Dask: no URL in it."""
        return f"gigsterpg-merge-{self.run_id}-{self.collection}-{self.index}-{self.token}"


class _PartitionLoader(BatchLoader):
    """The single-process loader in a merge task's session: the run's progress is the coordinator's to record
    (one row every session would update: the sessions would wait on each other)."""

    def _record_progress(self, cursor, stage: str, documents: int) -> None:
        pass


def merge_range(task: MergeTask) -> dict:
    """Merge the uncontested changed documents of one range (``distributed``) through the single-process
    loader, in one transaction of this task's own session; the loader's counts.

    Runs on a worker; Dask runs it again if it fails or its worker dies. Idempotent: the attempt is counted
    first (committed); then one transaction, under a lock of this task, checks that no earlier attempt
    committed, merges every batch, and records its counts with it. An attempt that dies commits nothing;
    one after an attempt that committed merges nothing and answers that one's counts.
    The documents of different tasks touch disjoint rows (the coordinator leaves to itself whatever two
    documents share): the sessions never wait on each other, whatever order they run in.
    """
    model, ledger = registry.model(task.collection), merges_table(task.run_id)
    # Named, so a session in pg_stat_activity says whose it is.
    connection = psycopg.connect(task.pg_url, application_name=f"gigsterpg merge {task.collection} {task.index}"
                                 f" pid {os.getpid()}")
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {ledger} AS m (collection, task, pid, host) VALUES (%s, %s, %s, %s)"
                           " ON CONFLICT (collection, task) DO UPDATE SET attempts = m.attempts + 1,"
                           " pid = excluded.pid, host = excluded.host",
                           (task.collection, task.index, os.getpid(), socket.gethostname()))
        connection.commit()
        loader = _PartitionLoader(connection, model, task.run_id, task.skip_unchanged)  # commits its temp tables
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", (ledger + task.collection, task.index))
            cursor.execute(f"SELECT counts FROM {ledger} WHERE collection = %s AND task = %s",
                           (task.collection, task.index))
            done = cursor.fetchone()[0]
            if done is not None:
                connection.commit()
                return done
            table, last = scratch_table(task.run_id, task.collection), -1
            while True:
                cursor.execute(f"SELECT rec, doc_id, digest, raw, mapped, id_key FROM {table} WHERE task = %s"
                               " AND rec > %s AND raw IS NOT NULL AND NOT contested ORDER BY rec LIMIT %s",
                               (task.index, last, task.batch_size), binary=True)
                rows = cursor.fetchall()
                if not rows:
                    break
                last = rows[-1][0]
                loader.load([Prepared(RawBSONDocument(bytes(raw)), doc_id, bytes(digest), seq, restore(mapped),
                                      key and bytes(key))
                             for seq, (_, doc_id, digest, raw, mapped, key) in enumerate(rows)], commit=False)
            counts = loader.counts
            answer = {"seen": counts.seen, "inserted": counts.inserted, "updated": counts.updated,
                      "rejected": dict(counts.rejected), "extra": dict(counts.extra)}
            cursor.execute(f"UPDATE {ledger} SET counts = %s::jsonb WHERE collection = %s AND task = %s",
                           (json.dumps(answer), task.collection, task.index))
        connection.commit()
        return answer
    finally:
        connection.close()  # rolls back whatever an attempt that failed left open


def _id_bson(doc: RawBSONDocument) -> bytes:
    """The BSON of ``{"_id": ...}`` of a raw document (a document without one: an empty document)."""
    try:
        return bson.encode({"_id": doc["_id"]})
    except KeyError:
        return bson.encode({})


def _portable(mapped):
    """A mapping that pickles: the row as it is, a rejection as its reason and detail."""
    if isinstance(mapped, RejectedDocument):
        return ("rejected", mapped.reason, mapped.detail)
    return mapped


def restore(mapped: Optional[bytes]):
    """The row, or the RejectedDocument, a task pickled (None stays None)."""
    if mapped is None:
        return None
    value = pickle.loads(mapped)
    if type(value) is tuple and value[:1] == ("rejected",):  # a row is a NamedTuple, never a plain tuple
        return RejectedDocument(value[1], detail=value[2])
    return value


# ---- a first load on the cluster: one raw batch per task, the local load workers' own code ----------------

@dataclass(frozen=True)
class BatchTask:
    """One raw batch of a first load (``parallel``'s worker code, run by a Dask worker)."""

    run_id: int
    model: type  # the model itself, as the local workers get it (pickled by reference: importable there)
    base: int  # the batch's first document's number in the scan
    payload: bytes = field(repr=False)
    pg_url: str = field(repr=False)  # a libpq URL (postgresql://...)
    token: str = ""

    @property
    def key(self) -> str:
        """The task's name in Dask: no URL in it."""
        return f"gigsterpg-load-{self.run_id}-{self.model.collection}-{self.base}-{self.token}"


# A Dask worker's sessions, one per URL and thread: kept from task to task (a connection costs more than a batch).
_SESSIONS: dict = {}


def _session(pg_url: str):
    key = (pg_url, threading.get_ident())
    connection = _SESSIONS.get(key)
    if connection is None or connection.closed or connection.broken:
        connection = _SESSIONS[key] = parallel.connect(pg_url)
    return connection


def load_batch(task: BatchTask) -> int:
    """Load one raw batch into the run's load tables (``parallel.load_once``, idempotent); the documents it held.

    Runs on a Dask worker; Dask runs it again if its worker dies (or it fails): an attempt after one that
    committed (Dask lost its answer) loads nothing.
    """
    connection = _session(task.pg_url)
    try:
        return parallel.load_once(connection, attempts_table(task.run_id), task.model, task.run_id, task.base,
                                  task.payload)
    except BaseException:
        _SESSIONS.pop((task.pg_url, threading.get_ident()), None)
        connection.close()  # rolls back: nothing of this attempt but its record
        raise
