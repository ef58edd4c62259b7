"""One sync run: lock, record, stream each collection in batches, delete, account.

Collections are synced parents first, in the registry's order (users, with
their skills and user_skills, then gigs). Memory is bounded by the batch
size: documents are streamed from a MongoDB cursor, and the ids seen (for deletes) are kept in a
PostgreSQL temp table, not in Python.
"""
import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Dict, Optional

import psycopg

from gigsterpg import faults
from gigsterpg.config import mask_url
from gigsterpg.connections import is_transient, short_reason
from gigsterpg.exc import ConfigError, SyncLockedError
from gigsterpg.lib.pg.db.states import FAILED, FOLLOW, FULL, INCREMENTAL, INTERRUPTED, RUNNING, SUCCEEDED
from gigsterpg.lib.pg.sync import registry
from gigsterpg.lib.pg.sync.engine import firstload, parallel
from gigsterpg.lib.pg.sync.engine.bulk import BatchLoader, CollectionCounts, discard, rollback
from gigsterpg.lib.pg.sync.engine.collection import RAW, CollectionReport, server_time
from gigsterpg.lib.pg.sync.engine.reader import ReadAhead

logger = logging.getLogger(__name__)

# One key for "a sync is writing to this database"; session-level, so it dies with a crashed process.
# The sync lock: a scan (full or incremental run) holds it, exclusive, for the whole run; a follower takes it
# shared for each batch it applies, so it never writes while a scan does (it pauses, then replays; see follow.py).
LOCK_KEY = 0x6769677374657270  # "gigsterp"
# One follower per database: it holds this one, exclusive, for as long as it follows.
FOLLOW_LOCK_KEY = 0x67696773666f6c6c  # "gigsfoll"
LOCK_POLL_S = 1.0
# How long a scan waits for a follower's batch in hand (milliseconds, usually) before it takes the lock.
FOLLOWER_BATCH_WAIT_S = 30.0
# Incremental runs read from the watermark minus this much: clocks of application servers differ.
DEFAULT_OVERLAP_S = 300.0


@dataclass
class RunReport:
    """The outcome of one run."""

    run_id: int
    status: str = RUNNING
    mode: str = FULL
    collections: Dict[str, CollectionReport] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return all(report.balanced is not False for report in self.collections.values())


class Progress:
    """Receives progress; the CLI passes one that draws a bar."""

    # Counting a collection costs a scan on some servers: only a bar that shows a total asks for it.
    needs_total = False

    def start(self, collection: str, total: int) -> None:
        """A collection's scan begins."""

    def advance(self, count: int) -> None:
        """``count`` more documents are done."""

    def close(self) -> None:
        """The collection's scan ended."""


@dataclass(frozen=True)
class Scan:
    """What one collection's scan reads, and the watermark it sets once read to its end."""

    query: dict
    scope: str  # "full" or "incremental"
    mark: Optional[datetime]


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and after how long, a run retries after a transient error (lost connection, restart).

    ``attempts`` retries in all for the run; the n-th waits ``first_delay * 2**(n-1)`` seconds, at most
    ``max_delay``.
    """

    attempts: int = 5
    first_delay: float = 1.0
    max_delay: float = 30.0

    def delay(self, retry: int) -> float:
        return min(self.max_delay, self.first_delay * 2 ** (retry - 1))


def run_sync(engine, mongo_db, collections=registry.COLLECTIONS, batch_size: int = 5000, limit: Optional[int] = None,
             progress: Optional[Progress] = None, skip_unchanged: bool = True,
             retry: RetryPolicy = RetryPolicy(), wait_s: Optional[float] = None, incremental: bool = False,
             overlap_s: float = DEFAULT_OVERLAP_S, first_load: bool = True, rebuild: bool = False,
             load_workers: Optional[int] = None) -> RunReport:
    """Sync ``collections`` of ``mongo_db`` into the database of ``engine`` (migrated already).

    Every batch commits on its own. After a transient error the run reconnects
    (with backoff, ``retry.attempts`` times at most) and scans the collection
    it was in again from its start: the batches already committed are known
    by their hashes and cost a read, not a write.

    Args:
        engine: SQLAlchemy engine of the target database.
        mongo_db: pymongo Database holding the collections.
        collections: names from the registry; synced in its order (parents first).
        limit: read at most this many documents per collection (no deletes then).
        skip_unchanged: skip documents whose bytes match those their row was
            made from; False re-maps and compares every document.
        wait_s: if another sync is running, wait this long for it instead of refusing.
        incremental: read only the documents whose ``updated`` is at or after the collection's
            watermark minus ``overlap_s`` seconds (no deletes); a collection without a watermark
            (no complete scan yet) is read in full.
        first_load: a full run of every collection into empty tables loads them the way pg_restore
            does (``firstload``: keys after the data, one transaction); False merges as into full ones.
        rebuild: empty the tables and load them again by a first load, in one transaction (a full run
            of every collection only).
        load_workers: processes that decode, map and COPY a first load (``parallel``; default: one per
            core); 0 does it in this process (``firstload.load``). The tables come out the same.

    Raises:
        SyncLockedError: another sync is writing to this database.
        ConfigError: the kill-point variable of the reliability tests is malformed; a rebuild of
            less than a full run of every collection.
    """
    faults.check()
    run = _Run(engine, mongo_db, batch_size, limit, progress or Progress(), skip_unchanged)
    run.incremental, run.overlap = incremental, timedelta(seconds=overlap_s)
    run.first_load, run.rebuild = first_load, rebuild
    run.load_workers = parallel.default_workers() if load_workers is None else load_workers
    ordered = list(registry.ordered(collections))
    if rebuild and (incremental or limit is not None or tuple(ordered) != registry.COLLECTIONS):
        raise ConfigError("cannot rebuild part of the data", "a rebuild empties every synced table and loads"
                          f" all of {registry.names()} again in full", "leave out --rebuild, or the options"
                          " that narrow the run (--collections, --limit, incremental mode)")
    try:
        run.connect()
        mode = INCREMENTAL if incremental else FULL
        run.report = RunReport(begin_run(run.connection, ordered, wait_s, mode=mode), mode=mode)
        pending = list(ordered)
        retries = 0
        lost = False
        while pending:
            try:
                if lost:  # the server may still be starting: a refused connection is one more retry
                    run.reconnect()
                    lost = False
                run.sync(pending)
            except BaseException as err:
                if not is_transient(err) or retries >= retry.attempts:
                    raise
                retries += 1
                delay = retry.delay(retries)
                logger.warning("sync run %d: %s; retry %d of %d in %.1f s, from the start of %s",
                               run.report.run_id, short_reason(err), retries, retry.attempts, delay, pending[0])
                time.sleep(delay)
                lost = True
    except BaseException as err:
        if run.report is not None:
            run.report.status = INTERRUPTED if isinstance(err, KeyboardInterrupt) else FAILED
            run.end(mask_url(str(err)) or type(err).__name__)
        run.close()
        raise
    run.report.status = SUCCEEDED
    run.end(None)
    run.close()
    return run.report


class _Run:
    """The state of one run across retries: the connection, the report, the counts carried over."""

    first_load = rebuild = False  # run_sync's choices (a distributed run makes its own _Run)
    load_workers = 0

    def __init__(self, engine, mongo_db, batch_size, limit, progress, skip_unchanged):
        self.engine, self.mongo_db = engine, mongo_db
        self.batch_size, self.limit, self.progress, self.skip_unchanged = batch_size, limit, progress, skip_unchanged
        self.raw = self.connection = None
        self.report: Optional[RunReport] = None
        # What earlier attempts committed, per collection: a retried scan counts from zero again.
        self.carried: Dict[str, CollectionCounts] = {}

    def connect(self) -> None:
        self.raw = self.engine.raw_connection()
        self.connection = self.raw.driver_connection

    def reconnect(self) -> None:
        """After a transient error: keep the connection if it still works (it holds the lock), else a
        new one that takes the lock again; the retry is recorded either way."""
        if self._alive():
            resume_run(self.connection, self.report.run_id, relock=False)
            return
        discard(self.raw)
        self.connect()
        resume_run(self.connection, self.report.run_id)

    def _alive(self) -> bool:
        if self.connection is None or self.connection.closed or self.connection.broken:
            return False
        try:
            self.connection.rollback()
            self.connection.execute("SELECT 1")
            self.connection.rollback()
            return True
        except psycopg.Error:
            return False

    def sync(self, pending: list) -> None:
        """Sync the ``pending`` collections in order, removing each from the list once it is done."""
        if self.first_load and not self.incremental and self.limit is None:
            with self.connection.cursor() as cursor:
                empty = firstload.applies(cursor, pending, self.rebuild)
            self.connection.commit()
            if empty:
                if self.load_workers > 0:
                    firstload.load_parallel(self, pending, self.rebuild, self.load_workers)
                else:
                    firstload.load(self, pending, self.rebuild)
                return
        with contextlib.ExitStack() as readers:
            # The next collection starts reading once this one is fetched to its end: gigs are
            # read while the last users are written, and no cursor sits idle long enough to time out.
            pipelines = []
            for name in pending:
                loader = BatchLoader(self.connection, registry.model(name), self.report.run_id, self.skip_unchanged)
                scan = self._plan(name)
                cursor = self.mongo_db[name].with_options(codec_options=RAW).find(
                    scan.query, batch_size=self.batch_size, limit=self.limit or 0)
                readers.callback(cursor.close)
                pipelines.append((loader, scan, readers.enter_context(
                    ReadAhead(cursor, self.batch_size, loader.prepare))))
            for index, (loader, scan, pipeline) in enumerate(pipelines):
                following = pipelines[index + 1][2] if index + 1 < len(pipelines) else None
                try:
                    report = _sync_collection(self.connection, self.mongo_db, loader, scan, pipeline, following,
                                              self.limit, self.progress)
                except BaseException:
                    self._carry(loader.counts, loader.model.collection)
                    raise
                self._carry(report.counts, loader.model.collection)
                report.counts = self.carried.pop(loader.model.collection)
                self.report.collections[loader.model.collection] = report
                pending.remove(loader.model.collection)

    def _plan(self, name: str) -> "Scan":
        """What to read of ``name``: everything, or (incremental) what changed since its watermark.

        The watermark is the server's clock before the cursor opens: whatever changes during
        the scan is newer, and the next incremental run reads it.
        """
        mark = server_time(self.mongo_db)
        if self.incremental:
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT updated FROM sync_watermarks WHERE collection = %s", (name,))
                row = cursor.fetchone()
            self.connection.commit()
            if row is not None:
                query = {} if row[0] is None else {"updated": {"$gte": row[0] - self.overlap}}
                return Scan(query, INCREMENTAL, mark)
            logger.info("%s: no watermark yet, reading it in full", name)
        return Scan({}, FULL, mark)

    def _carry(self, counts: CollectionCounts, name: str) -> None:
        """Keep what an attempt committed; ``seen`` and the rejects come from the last (whole) scan only."""
        carried = self.carried.setdefault(name, CollectionCounts())
        carried.inserted += counts.inserted
        carried.updated += counts.updated
        carried.deleted += counts.deleted
        carried.extra.update(counts.extra)
        carried.seen, carried.rejected = counts.seen, counts.rejected

    def end(self, error: Optional[str]) -> None:
        if self.connection is not None:
            rollback(self.connection)
            end_run(self.connection, self.report, error, self.engine, self.raw)

    def close(self) -> None:
        if self.raw is not None:
            with contextlib.suppress(Exception):
                self.raw.close()


def begin_run(connection, collections, wait_s: Optional[float] = None, mode: str = FULL) -> int:
    """Take the lock of the run's kind (waiting up to ``wait_s`` for it), mark dead runs of that kind
    interrupted, record this run.

    A scan takes the sync lock (one scan at a time); a follower (``mode`` follow) takes the
    follower's lock (one follower at a time), so a scan and a follower run side by side.
    """
    follower = mode == FOLLOW
    connection.autocommit = True
    with connection.cursor() as cursor:
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while not (_try_lock(cursor, FOLLOW_LOCK_KEY) if follower else _lock_scan(cursor)):
            holder = _running(cursor, follower)
            if deadline is None or time.monotonic() >= deadline:
                waited = "" if deadline is None else f" (waited {wait_s:g} s)"
                if follower:
                    raise SyncLockedError(f"another follower is running ({holder}){waited}",
                                          "one follower per database applies the change streams",
                                          "stop it first, or let it follow (gigsterpg status shows it)")
                raise SyncLockedError(f"another sync is running ({holder}){waited}",
                                      "only one sync may write at a time",
                                      "wait for it to finish (gigsterpg status shows it), or pass --wait")
            logger.info("waiting for %s to finish", holder)
            time.sleep(min(LOCK_POLL_S, max(0.0, deadline - time.monotonic())))
        # We hold the lock of our kind, so any run of that kind still marked running belongs to a dead process.
        cursor.execute("UPDATE sync_runs SET status = %s, finished_at = now(),"
                       " error = coalesce(error, 'the process ended before the run finished')"
                       " WHERE status = %s AND (mode = %s) = %s", (INTERRUPTED, RUNNING, FOLLOW, follower))
        cursor.execute("INSERT INTO sync_runs (collections, pid, hostname, mode) VALUES (%s, %s, %s, %s)"
                       " RETURNING id", (",".join(collections), os.getpid(), socket.gethostname(), mode))
        run_id = cursor.fetchone()[0]
    connection.autocommit = False
    logger.info("sync run %d (%s) started: %s", run_id, mode, ", ".join(collections))
    return run_id


def resume_run(connection, run_id: int, relock: bool = True) -> None:
    """After a transient error: take the lock again (on a new connection) and count the retry."""
    connection.autocommit = True
    with connection.cursor() as cursor:
        if relock and not _lock_scan(cursor):
            raise SyncLockedError(f"another sync took over while run {run_id} reconnected ({_running(cursor)})",
                                  "only one sync may write at a time", "let it finish; it does this run's work")
        cursor.execute("UPDATE sync_runs SET status = %s, finished_at = NULL, retries = retries + 1"
                       " WHERE id = %s", (RUNNING, run_id))
    connection.autocommit = False


def _try_lock(cursor, key: int = LOCK_KEY) -> bool:
    cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
    return cursor.fetchone()[0]


def _lock_scan(cursor) -> bool:
    """Take the sync lock for a scan: at once, or after a follower's batch in hand; False while a scan holds it.

    Only followers' batches hold it shared: then this queues for it (at most FOLLOWER_BATCH_WAIT_S),
    and a request in the queue makes the followers' next batches pause instead of overtaking it.
    """
    if _try_lock(cursor):
        return True
    cursor.execute("SELECT pg_try_advisory_lock_shared(%s)", (LOCK_KEY,))
    if not cursor.fetchone()[0]:
        return False  # held exclusive: a scan runs
    cursor.execute("SELECT pg_advisory_unlock_shared(%s)", (LOCK_KEY,))
    cursor.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(FOLLOWER_BATCH_WAIT_S * 1000)}ms",))
    try:
        cursor.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        return True
    except psycopg.errors.LockNotAvailable:
        return False
    finally:
        cursor.execute("RESET lock_timeout")


def _running(cursor, follower: bool = False) -> str:
    """Which run holds the lock (a scan's, or with ``follower`` the follower's), as a person reads it."""
    cursor.execute("SELECT id, started_at, pid, hostname FROM sync_runs WHERE status = %s AND (mode = %s) = %s"
                   " ORDER BY id DESC LIMIT 1", (RUNNING, FOLLOW, follower))
    running = cursor.fetchone()
    return (f"run {running[0]} started {running[1]:%Y-%m-%d %H:%M:%S %Z} by pid {running[2]} on {running[3]}"
            if running else "another sync")


END_RUN = ("UPDATE sync_runs SET status = %(status)s, finished_at = now(), counts = %(counts)s, error = %(error)s"
           " WHERE id = %(id)s")


def end_run(connection, report: RunReport, error: Optional[str], engine=None, raw=None) -> None:
    """Record how the run ended and release the lock.

    The run's own connection may be what failed, or be stuck in the command a signal
    interrupted: then (given ``engine`` and the pooled ``raw`` connection) that connection is
    dropped, which releases the lock, and the end is recorded on a new one.
    """
    ending = {"status": report.status, "error": error, "id": report.run_id,
              "counts": json.dumps({name: collection.as_dict() for name, collection in report.collections.items()})}
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(END_RUN, ending)
            cursor.execute("SELECT pg_advisory_unlock(%s)", (FOLLOW_LOCK_KEY if report.mode == FOLLOW else LOCK_KEY,))
    except Exception as err:
        logger.debug("recording the end of run %d on its own connection failed", report.run_id, exc_info=True)
        recorded = False
        if engine is not None:
            discard(raw)  # closes it: the lock goes with it
            with contextlib.suppress(Exception), engine.connect() as fresh:
                fresh.exec_driver_sql(END_RUN, ending)
                fresh.commit()
                recorded = True
        if not recorded:
            logger.warning("could not record the end of run %d (%s): the next run will mark it interrupted",
                           report.run_id, short_reason(err))
    logger.info("sync run %d %s", report.run_id, report.status)


def _sync_collection(connection, mongo_db, loader: BatchLoader, scan: Scan, pipeline: ReadAhead,
                     following: Optional[ReadAhead], limit: Optional[int], progress: Progress) -> CollectionReport:
    """Load one collection's prepared batches, then delete (after a full scan), set the watermark, account."""
    started = time.monotonic()
    model = loader.model
    total = mongo_db[model.collection].estimated_document_count() if progress.needs_total else 0
    progress.start(model.collection, min(total, limit) if limit else total)
    read = 0
    try:
        for batch in pipeline:
            loader.load(batch)
            read += len(batch)
            progress.advance(len(batch))
            if following is not None and pipeline.fetched:
                following.start()
    finally:
        progress.close()
    to_the_end = limit is None or read < limit
    complete = to_the_end and scan.scope == FULL
    loader.finish(complete, watermark=(scan.mark,) if to_the_end else None)
    report = CollectionReport(model.collection, loader.counts, complete, scan.scope,
                              seconds=time.monotonic() - started)
    if complete:  # the accounting; a partial scan has nothing to balance, and a count costs a table scan
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {model.table}")
            report.rows = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM sync_rejects WHERE collection = %s AND resolved_at IS NULL",
                           (model.collection,))
            report.open_rejects = cursor.fetchone()[0]
        connection.commit()
    # The complete scan itself counted the collection; a second count would read it all again.
    report.documents = loader.counts.seen
    logger.info("%s: %s", model.collection, report.as_dict())
    return report
