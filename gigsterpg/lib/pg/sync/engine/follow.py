"""Continuous sync: follow MongoDB's change streams of the registry's collections into PostgreSQL.

One change stream over the database (every registered collection, in the order MongoDB
wrote them), read in small batches. Per batch, each document's last event
wins: an insert, update or replace stores the document as it is now
(``fullDocument: updateLookup``) through the same loader as a scan (hash
guard, mapping, rejects); a delete deletes its row. The batch's changes and
the stream's position (the resume token of its last event) are committed in
one transaction, so a restart resumes exactly after the last committed batch:
nothing applied twice to any effect, nothing skipped.

Hand-over from the snapshot: the stream's position is taken before the
catch-up sync starts, and the stream is read from there afterwards; the
changes that happened during the sync are applied again, which the merge
absorbs. A position MongoDB no longer has (too old) ends in one log line, a
new catch-up sync, and following again.

Beside a scan (a full, reconcile or incremental run, the nightly one say): a
follower holds a lock of its own, and takes the sync lock shared for each batch
it applies; a scan holds that lock exclusive for its whole run. So the two never
write at once: while a scan runs, the follower's next batch finds the lock
taken, rolls back, closes the stream and waits; once the scan ends it reopens
the stream at its saved position (taken before the scan's first write) and
applies again every change since. Whatever the scan wrote from a document read
before a later change is overwritten by that change; a document deleted during
the scan and written back by it is deleted again; one inserted during the scan
and deleted by its end (not seen) is inserted again. Each change is applied as
the document is when it is applied, so applying one twice changes nothing.
"""
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Dict, Optional

import bson
from pymongo import errors as mongo_errors

from gigsterpg import faults
from gigsterpg.connections import is_transient, short_reason
from gigsterpg.exc import SourceError, SyncLockedError, TerminalError
from gigsterpg.lib.pg.sync import registry
from gigsterpg.lib.pg.sync.engine import fingerprint
from gigsterpg.lib.pg.sync.engine.bulk import BatchLoader, discard, link_children, prepare, rollback
from gigsterpg.lib.pg.db.states import FAILED, FOLLOW, INTERRUPTED, SUCCEEDED
from gigsterpg.lib.pg.sync.engine.runner import LOCK_KEY, LOCK_POLL_S, RAW, RetryPolicy, RunReport, begin_run, end_run

logger = logging.getLogger(__name__)

NAME = "main"
PIPELINE = [{"$match": {"ns.coll": {"$in": list(registry.COLLECTIONS)}}}]
APPLIED = frozenset({"insert", "update", "replace", "delete"})
ENDINGS = {"drop": "dropped", "rename": "renamed", "dropDatabase": "dropped", "invalidate": "invalidated"}
# The stream's position is gone: history lost, fatal stream error, a token the server cannot use.
POSITION_LOST = frozenset({286, 280, 260, 9})
NO_CHANGE_STREAMS = 40573  # a standalone server
BEHIND_CAP = 10_000


@dataclass
class FollowReport:
    """What a follower did until it stopped."""

    events: int = 0
    batches: int = 0
    resyncs: int = 0
    retries: int = 0
    # Times it stood aside for a scan (and applied the changes since its position again after it).
    pauses: int = 0
    # MongoDB's time of the last change applied (the heartbeat's "last change").
    last_event_at: Optional[datetime] = None


class ScanRunning(Exception):
    """A scan holds the sync lock: the batch in hand is rolled back, the follower waits for the scan's end."""


class PositionLost(TerminalError):
    """The change stream cannot resume from the stored position (the follower syncs again, then follows)."""

    def __init__(self, reason: str):
        super().__init__("the change stream cannot resume from the saved position", reason,
                         "sync again, then follow from there (the follower does this itself)")
        self.reason = reason


def load_token(connection) -> Optional[dict]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT token FROM sync_followers WHERE name = %s", (NAME,))
        row = cursor.fetchone()
    connection.commit()
    return bson.decode(row[0]) if row and row[0] else None


def save_token(cursor, token: dict, events: int = 0, last_event_at: Optional[datetime] = None) -> None:
    """The stream's position (and what was applied up to it), in the caller's transaction."""
    cursor.execute(
        "INSERT INTO sync_followers AS f (name, token, events_applied, last_event_at, applied_at)"
        " VALUES (%s, %s, %s, %s, CASE WHEN %s > 0 THEN now() END)"
        " ON CONFLICT (name) DO UPDATE SET token = excluded.token,"
        "  events_applied = f.events_applied + excluded.events_applied,"
        "  last_event_at = coalesce(excluded.last_event_at, f.last_event_at),"
        "  applied_at = coalesce(excluded.applied_at, f.applied_at)",
        (NAME, bson.encode(token), events, last_event_at, events))


def start_position(mongo_db) -> dict:
    """A resume token for "now", taken before a snapshot begins."""
    with mongo_db.with_options(codec_options=RAW).watch(PIPELINE) as stream:
        return bson.decode(stream.resume_token.raw)


class Follower:
    """Tails the change streams until ``stop`` is set (or Ctrl-C / SIGTERM).

    Args:
        engine: SQLAlchemy engine of the target database (migrated).
        mongo_db: pymongo Database holding the registry's collections.
        catch_up: ``catch_up(full)`` runs a sync that brings PostgreSQL up to date: a full one when
            ``full`` (after a lost position), else the caller's choice.
        batch_size: at most this many events per transaction.
        max_wait_ms: how long a read waits for new events, and the longest an event waits in a batch
            before the batch is applied.
    """

    def __init__(self, engine, mongo_db, catch_up: Callable[[bool], RunReport], batch_size: int = 1000,
                 max_wait_ms: int = 200, retry: RetryPolicy = RetryPolicy(), stop: Optional[threading.Event] = None,
                 on_idle: Optional[Callable[[FollowReport], None]] = None):
        self.engine, self.mongo_db, self.catch_up, self.on_idle = engine, mongo_db, catch_up, on_idle
        self.batch_size, self.max_wait_ms, self.retry = batch_size, max_wait_ms, retry
        self.stop = stop or threading.Event()
        self.report = FollowReport()
        self.raw = self.connection = None
        self.run_id: Optional[int] = None
        self.loaders: Dict[str, BatchLoader] = {}
        self.full_next = False

    def run(self) -> FollowReport:
        faults.check()
        failures, batches_then = 0, 0
        try:
            while not self.stop.is_set():
                try:
                    self._session()
                except PositionLost as lost:
                    logger.warning("change stream position lost (%s): syncing again, then following", lost.reason)
                    self._close(INTERRUPTED, f"position lost: {lost.reason}")
                    self._forget_position()
                    self.full_next = True  # deletions in the gap are found only by a full scan
                    self.report.resyncs += 1
                except BaseException as err:
                    if self.report.batches > batches_then:  # it got going again since: a new run of failures
                        failures, batches_then = 0, self.report.batches
                    if isinstance(err, KeyboardInterrupt) or not is_transient(err) or failures >= self.retry.attempts:
                        raise
                    failures += 1
                    self.report.retries += 1
                    delay = self.retry.delay(failures)
                    logger.warning("following: %s; reconnecting in %.1f s (%d of %d)", short_reason(err), delay,
                                   failures, self.retry.attempts)
                    self._close(INTERRUPTED, short_reason(err), error=True)
                    self.stop.wait(delay)
        except KeyboardInterrupt:
            logger.info("stopped by a signal; the batch in hand was rolled back, the position is saved")
        except BaseException as err:
            # A refusal (another follower runs) is not the running follower's error to record.
            self._close(FAILED, short_reason(err), error=not isinstance(err, SyncLockedError))
            raise
        self._close(SUCCEEDED, None)
        return self.report

    # ---- one connected stretch: from a saved (or fresh) position until stopped or broken ----------

    def _session(self) -> None:
        self.raw = self.engine.raw_connection()
        self.connection = self.raw.driver_connection
        token = load_token(self.connection)
        if token is None:
            token = start_position(self.mongo_db)
            logger.info("no saved position: syncing first, then following from before that sync")
            self.catch_up(self.full_next)
            self.full_next = False
            with self.connection.cursor() as cursor:
                save_token(cursor, token)
            self.connection.commit()
        # The follower's own lock: one follower per database; a scan may run beside it.
        self.run_id = begin_run(self.connection, registry.COLLECTIONS, mode=FOLLOW)
        self.loaders = {name: BatchLoader(self.connection, registry.model(name), self.run_id, scan=False,
                                          source=self.mongo_db[name]) for name in registry.COLLECTIONS}
        while not self.stop.is_set():
            try:
                self._follow(token)
            except ScanRunning:
                self._pause()
                token = load_token(self.connection)

    def _follow(self, token: dict) -> None:
        """Read the change stream from ``token`` and apply it, batch by batch, until stopped."""
        try:
            with self.mongo_db.with_options(codec_options=RAW).watch(
                    PIPELINE, full_document="updateLookup", resume_after=token, max_await_time_ms=self.max_wait_ms,
                    batch_size=self.batch_size) as stream:
                while not self.stop.is_set():
                    # A batch ends when the stream has nothing more, when it is full, or when its first
                    # event has waited max_wait_ms: under a steady load the stream is never empty.
                    events, deadline = [], None
                    while len(events) < self.batch_size and (deadline is None or time.monotonic() < deadline):
                        event = stream.try_next()
                        if event is None:
                            break
                        events.append(event)
                        deadline = deadline or time.monotonic() + self.max_wait_ms / 1000
                    if events:
                        self._apply(events)
                    else:
                        self._caught_up()
        except mongo_errors.OperationFailure as err:
            if err.code in POSITION_LOST:
                raise PositionLost(short_reason(err)) from err
            if err.code == NO_CHANGE_STREAMS:
                raise SourceError("MongoDB has no change streams here", short_reason(err),
                                  "run it as a replica set (one member is enough) to use --follow") from err
            raise

    def _pause(self) -> None:
        """Stand aside (the stream closed) until the scan that holds the sync lock has ended."""
        self.report.pauses += 1
        logger.info("a sync run is writing: following paused; once it ends, the changes since the saved"
                    " position are applied again")
        self._stage("paused: a sync run is writing")
        while not self.stop.is_set():
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock_shared(%s)", (LOCK_KEY,))
                free = cursor.fetchone()[0]
            self.connection.rollback()
            if free:
                break
            self.stop.wait(LOCK_POLL_S)
        self._stage("following")

    def _stage(self, stage: str) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute("UPDATE sync_runs SET stage = %s WHERE id = %s", (stage, self.run_id))
        self.connection.commit()

    def _apply(self, events) -> None:
        """One transaction: each document's last event, parents before children, then the position.

        Raises ScanRunning (nothing applied) while a scan holds the sync lock.
        """
        latest: Dict[str, dict] = {name: {} for name in registry.COLLECTIONS}
        for event in events:
            kind, collection = event["operationType"], event["ns"]["coll"]
            if kind not in APPLIED:
                raise SourceError(f"collection {collection!r} was {ENDINGS.get(kind, kind)} in MongoDB",
                                  "the change stream cannot go on", "check the source, then run sync --follow again",
                                  collection=collection)
            # By id, not by its text form: 1 and "1" are two documents (the one that comes first keeps the row).
            key = (fingerprint.doc_id(event["documentKey"]), fingerprint.order_key(event["documentKey"]))
            latest[collection].pop(key, None)
            latest[collection][key] = event
        try:
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock_shared(%s)", (LOCK_KEY,))
                if not cursor.fetchone()[0]:
                    raise ScanRunning()
                for name in registry.COLLECTIONS:
                    deletes = [key for key, event in latest[name].items() if event["operationType"] == "delete"]
                    documents = [event["fullDocument"] for event in latest[name].values()
                                 if event["operationType"] != "delete" and event.get("fullDocument") is not None]
                    if deletes:
                        self.loaders[name].delete([text for text, _ in deletes], [key for _, key in deletes])
                    if documents:
                        self.loaders[name].load(prepare(documents), commit=False)
                    if documents:  # rows that arrived before this parent's (gigs before their poster)
                        link_children(cursor, name)
                save_token(cursor, bson.decode(events[-1]["_id"].raw), len(events),
                           events[-1]["clusterTime"].as_datetime())
            self.connection.commit()
        except BaseException:
            rollback(self.connection)
            raise
        self.report.events += len(events)
        self.report.batches += 1
        self.report.last_event_at = events[-1]["clusterTime"].as_datetime()

    def _caught_up(self) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute("UPDATE sync_followers SET caught_up_at = now() WHERE name = %s", (NAME,))
        self.connection.commit()
        if self.on_idle is not None:  # the stream is drained: caught up
            self.on_idle(self.report)

    def _forget_position(self) -> None:
        with self.engine.begin() as connection:
            connection.exec_driver_sql("UPDATE sync_followers SET token = NULL WHERE name = %(name)s",
                                       {"name": NAME})

    def _close(self, status: str, message: Optional[str], error: bool = False) -> None:
        """End this stretch's run record (releasing the lock) and the connection."""
        if self.connection is None:
            return
        rollback(self.connection)
        if self.run_id is not None:
            report = RunReport(self.run_id, status, mode=FOLLOW)
            end_run(self.connection, report, message if status != SUCCEEDED else None, self.engine, self.raw)
        if self.connection.broken or self.connection.closed:
            discard(self.raw)  # not back into the pool
        with contextlib.suppress(Exception):
            self.raw.close()
        self.raw = self.connection = None
        self.run_id = None
        if error and message:  # on a connection of its own: the follower's may be what failed
            with contextlib.suppress(Exception), self.engine.begin() as connection:
                connection.exec_driver_sql("UPDATE sync_followers SET last_error = %(error)s, last_error_at = now()"
                                           " WHERE name = %(name)s", {"error": message, "name": NAME})


def behind(mongo_db, token: Optional[dict], last_event_at: Optional[datetime], budget_s: float = 2.0) -> dict:
    """How far a follower is behind MongoDB: the events after its position (counted up to a cap) and
    the seconds between its last applied change and the newest one."""
    if token is None:
        return {"events": None, "seconds": None}
    count, newest = 0, None
    deadline = time.monotonic() + budget_s
    with mongo_db.with_options(codec_options=RAW).watch(PIPELINE, resume_after=token, max_await_time_ms=50) as stream:
        while count < BEHIND_CAP and time.monotonic() < deadline:
            event = stream.try_next()
            if event is None:
                break
            count += 1
            newest = event["clusterTime"].as_datetime()
    seconds = 0.0
    if count and newest is not None and last_event_at is not None:
        seconds = max(0.0, (newest - last_event_at.astimezone(timezone.utc)).total_seconds())
    return {"events": count if count < BEHIND_CAP else f">={BEHIND_CAP}", "seconds": seconds}
