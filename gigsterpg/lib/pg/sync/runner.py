"""One sync run: lock, record, stream each collection in batches, delete, account.

Collections are synced parents first (users, with their skills and
user_skills, then gigs). Memory is bounded by the batch size: documents are
streamed from a MongoDB cursor, and the ids seen (for deletes) are kept in a
PostgreSQL temp table, not in Python.
"""
import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Dict, Optional

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from gigsterpg.config import COLLECTIONS, mask_url
from gigsterpg.exc import SyncLockedError
from gigsterpg.lib.pg.sync.bulk import BatchLoader, CollectionCounts
from gigsterpg.lib.pg.sync.gig import GigSync
from gigsterpg.lib.pg.sync.reader import ReadAhead
from gigsterpg.lib.pg.sync.user import UserSync

logger = logging.getLogger(__name__)

MODELS = {"users": UserSync, "gigs": GigSync}
# One key for "a sync is writing to this database"; session-level, so it dies with a crashed process.
LOCK_KEY = 0x6769677374657270  # "gigsterp"
# Documents arrive undecoded: most of an unchanged collection is never decoded at all.
RAW = CodecOptions(document_class=RawBSONDocument)


@dataclass
class CollectionReport:
    """The outcome of one collection in one run.

    ``documents`` is the number of documents the scan read: after a complete
    scan, every one of them must be a row or an open reject.
    """

    name: str
    counts: CollectionCounts
    complete: bool
    rows: int = 0
    open_rejects: int = 0
    documents: int = 0
    seconds: float = 0.0

    @property
    def balanced(self) -> Optional[bool]:
        """Whether rows + open rejects = documents; None when the scan was partial."""
        return (self.rows + self.open_rejects == self.documents) if self.complete else None

    def as_dict(self) -> dict:
        return {**self.counts.as_dict(), "complete": self.complete, "rows": self.rows,
                "open_rejects": self.open_rejects, "documents": self.documents, "balanced": self.balanced,
                "seconds": round(self.seconds, 3)}


@dataclass
class RunReport:
    """The outcome of one run."""

    run_id: int
    status: str = "running"
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


def run_sync(engine, mongo_db, collections=COLLECTIONS, batch_size: int = 5000, limit: Optional[int] = None,
             progress: Optional[Progress] = None, skip_unchanged: bool = True) -> RunReport:
    """Sync ``collections`` of ``mongo_db`` into the database of ``engine`` (migrated already).

    Args:
        engine: SQLAlchemy engine of the target database.
        mongo_db: pymongo Database holding ``users`` and ``gigs``.
        limit: read at most this many documents per collection (no deletes then).
        skip_unchanged: skip documents whose bytes match those their row was
            made from; False re-maps and compares every document.

    Raises:
        SyncLockedError: another sync is writing to this database.
    """
    progress = progress or Progress()
    ordered = [name for name in COLLECTIONS if name in collections]
    raw = engine.raw_connection()
    connection = raw.driver_connection
    try:
        run_id = begin_run(connection, ordered)
        report = RunReport(run_id)
        try:
            with contextlib.ExitStack() as readers:
                # The next collection starts reading once this one is fetched to its end: gigs are
                # read while the last users are written, and no cursor sits idle long enough to time out.
                pipelines = []
                for name in ordered:
                    loader = BatchLoader(connection, MODELS[name], run_id, skip_unchanged)
                    cursor = mongo_db[name].with_options(codec_options=RAW).find(
                        {}, batch_size=batch_size, limit=limit or 0)
                    readers.callback(cursor.close)
                    pipelines.append((loader, readers.enter_context(ReadAhead(cursor, batch_size, loader.prepare))))
                for index, (loader, pipeline) in enumerate(pipelines):
                    following = pipelines[index + 1][1] if index + 1 < len(pipelines) else None
                    report.collections[loader.model.collection] = _sync_collection(
                        connection, mongo_db, loader, pipeline, following, limit, progress)
        except BaseException as err:
            connection.rollback()
            report.status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
            end_run(connection, report, mask_url(str(err)) or type(err).__name__)
            raise
        report.status = "succeeded"
        end_run(connection, report, None)
        return report
    finally:
        raw.close()


def begin_run(connection, collections) -> int:
    """Take the sync lock, mark dead runs interrupted, and record this run as running."""
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
        if not cursor.fetchone()[0]:
            cursor.execute("SELECT id, started_at, pid, hostname FROM sync_runs WHERE status = 'running'"
                           " ORDER BY id DESC LIMIT 1")
            running = cursor.fetchone()
            who = (f"run {running[0]} started {running[1]:%Y-%m-%d %H:%M:%S %Z} by pid {running[2]} on {running[3]}"
                   if running else "another sync")
            raise SyncLockedError(f"another sync is running ({who})", "only one sync may write at a time",
                                  "wait for it to finish (gigsterpg status shows it)")
        # We hold the lock, so any run still marked running belongs to a dead process.
        cursor.execute("UPDATE sync_runs SET status = 'interrupted', finished_at = now(),"
                       " error = coalesce(error, 'the process ended before the run finished')"
                       " WHERE status = 'running'")
        cursor.execute("INSERT INTO sync_runs (collections, pid, hostname) VALUES (%s, %s, %s) RETURNING id",
                       (",".join(collections), os.getpid(), socket.gethostname()))
        run_id = cursor.fetchone()[0]
    connection.autocommit = False
    logger.info("sync run %d started: %s", run_id, ", ".join(collections))
    return run_id


def end_run(connection, report: RunReport, error: Optional[str]) -> None:
    """Record how the run ended and release the lock."""
    counts = {name: collection.as_dict() for name, collection in report.collections.items()}
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("UPDATE sync_runs SET status = %s, finished_at = now(), counts = %s, error = %s"
                           " WHERE id = %s", (report.status, json.dumps(counts), error, report.run_id))
            cursor.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    except Exception:  # the connection itself may be what failed; the lock dies with it
        logger.warning("could not record the end of run %d", report.run_id, exc_info=True)
    logger.info("sync run %d %s", report.run_id, report.status)


def _sync_collection(connection, mongo_db, loader: BatchLoader, pipeline: ReadAhead,
                     following: Optional[ReadAhead], limit: Optional[int], progress: Progress) -> CollectionReport:
    """Load one collection's prepared batches, then delete and account."""
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
    complete = limit is None or read < limit
    loader.finish(complete)
    report = CollectionReport(model.collection, loader.counts, complete, seconds=time.monotonic() - started)
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
