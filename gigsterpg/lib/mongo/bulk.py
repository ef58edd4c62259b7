"""The machinery every PostgreSQL -> MongoDB pipeline shares (``export-table``, ``export-orders``).

A query streamed in batches through a server-side cursor, documents written
with unordered bulk operations (plain inserts into a collection that was
empty, upserts otherwise), and the deletion of documents whose source is gone,
found by streaming the collection's ``_id``s a batch at a time. Memory stays
bounded by the batch size.
"""
import logging
import os
import queue
import threading
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import psycopg
from pymongo import DeleteMany, ReplaceOne
from pymongo.errors import BulkWriteError

from gigsterpg import faults
from gigsterpg.exc import ConfigError
from gigsterpg.text import shown

logger = logging.getLogger(__name__)

BATCH = 2000
DUPLICATE_KEY = 11000


def check_collection(name: str) -> str:
    """``name`` when MongoDB takes it for a collection of ours, else a ConfigError (checked before connecting)."""
    if not name or "$" in name or "\x00" in name or name.startswith("system.") or name.startswith(".") \
            or name.endswith(".") or ".." in name:
        raise ConfigError(f"bad collection {shown(name)}", "a collection's name is not empty and holds no '$', NUL"
                          " byte or empty part ('..', a dot first or last); system.* are MongoDB's own",
                          "give another --collection", value=name)
    return name


def connect(url: str = "", timeout_s: float = 10, time_zone: str = "UTC", **params) -> psycopg.Connection:
    """A connection to a source, from a URL or keyword parameters (host, port, user, password, dbname,
    sslmode); in ``time_zone`` (UTC by default, so dates and naive timestamps mean the same on the way
    back) with ISO dates, and room for a projection's sorts and hashes in memory (work_mem, this session's)."""
    return psycopg.connect(url, connect_timeout=max(1, round(timeout_s)), application_name="gigsterpg-export",
                           options=f"-c TimeZone={time_zone} -c DateStyle=ISO -c work_mem=64MB", **params)


def stream(connection, query, params: Optional[Sequence] = None,
           batch_size: int = BATCH) -> Iterator[Tuple[List[str], List[tuple]]]:
    """(column names, rows) of ``query``, a batch at a time, read with a server-side cursor in one transaction."""
    with connection.transaction(), connection.cursor(name="gigsterpg_export") as cursor:
        cursor.itersize = batch_size
        cursor.execute(query, params)
        names = [column.name for column in cursor.description]
        while True:
            rows = cursor.fetchmany(batch_size)
            if not rows:
                break
            yield names, rows


class BulkWriter:
    """Writes documents into one collection with unordered bulk operations; counts what the server wrote.

    Into a collection empty when the writer was made, plain inserts do (a third of the server's work of an
    upsert on the test server); otherwise each document replaces the one of its ``_id`` (an upsert). If
    documents appear while inserting (someone else writes there too), every batch from then on is upserted.
    """

    def __init__(self, collection, empty: Optional[bool] = None):
        self.collection = collection
        self.first = collection.estimated_document_count() == 0 if empty is None else empty

    def write(self, documents: List[dict]) -> int:
        """Write ``documents``; the number the server inserted, upserted or modified."""
        if not documents:
            return 0
        try:
            if self.first:  # insert_many: no operation object per document to build
                return len(self.collection.insert_many(documents, ordered=False).inserted_ids)
            result = self.collection.bulk_write(upserts(documents), ordered=False)
        except BulkWriteError as err:
            if not self.first or any(e.get("code") != DUPLICATE_KEY for e in err.details.get("writeErrors", [])):
                raise
            logger.info("%s: documents appeared during the first export; upserting from here on",
                        self.collection.name)
            self.first = False
            inserted = err.details.get("nInserted", 0)  # these are found equal by the upserts: written once
            result = self.collection.bulk_write(upserts(documents), ordered=False)
            return inserted + result.upserted_count + result.modified_count
        return result.inserted_count + result.upserted_count + result.modified_count


def upserts(documents: List[dict]) -> List[ReplaceOne]:
    return [ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in documents]


def delete_gone(collection, gone: Callable[[List], List], batch_size: int = BATCH, point: str = "") -> int:
    """Delete the documents whose source is gone: the collection's ``_id``s, a batch at a time, are
    passed to ``gone``, which answers those to delete. Returns how many were deleted. ``point``: the kill
    point passed after each batch of deletes (``gigsterpg.faults``)."""
    deleted = 0
    batch: List = []

    def flush():
        nonlocal deleted
        doomed = gone(batch)
        if doomed:
            deleted += collection.bulk_write([DeleteMany({"_id": {"$in": doomed}})], ordered=False).deleted_count
            if point:
                faults.point(point)
        batch.clear()

    for doc in collection.find({}, {"_id": 1}, batch_size=batch_size):
        batch.append(doc["_id"])
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return deleted


def default_writers() -> int:
    """Writer threads when none are asked for: one per core, at most 4 (each with its own sessions)."""
    return max(1, min(4, os.cpu_count() or 1))


class Background:
    """Runs submitted work on ``threads`` threads of its own (one: in order), at most ``depth`` pieces waiting.

    The writes to MongoDB wait on the server; meanwhile the caller reads and builds the next batch. An
    error in a thread stops them all and is raised again by the next ``submit`` or by ``drain``. Work on
    several threads must not depend on its order (``export-orders``' batches hold disjoint ``_id``s).
    """

    def __init__(self, depth: int = 2, threads: int = 1):
        self.queue: "queue.Queue" = queue.Queue(maxsize=max(depth, threads))
        self.error: Optional[BaseException] = None
        self.stopped = False
        self.threads = [threading.Thread(target=self._run, name=f"gigsterpg-writer-{index}", daemon=True)
                        for index in range(max(1, threads))]
        for thread in self.threads:
            thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self.threads[0]

    def _run(self) -> None:
        while True:
            work = self.queue.get()
            if work is None:
                return
            if self.error is None and not self.stopped:
                try:
                    work()
                except BaseException as err:  # handed to the caller's thread
                    if self.error is None:
                        self.error = err

    def submit(self, work: Callable[[], None]) -> None:
        self._raise()
        self.queue.put(work)

    def drain(self) -> None:
        """Wait for everything submitted; raise the first error met."""
        alive = [thread for thread in self.threads if thread.is_alive()]
        for _ in alive:
            self.queue.put(None)
        for thread in alive:
            thread.join()
        self._raise()

    def stop(self) -> None:
        """Skip what is still waiting and end the thread (after an error of the caller's)."""
        self.stopped = True
        self.drain()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
