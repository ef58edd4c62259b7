"""Jobs of the HTTP API: work run in a thread of the server, recorded in PostgreSQL (``api_jobs``).

A job's row is written before its work starts and updated as it goes
(state, rows done, the outcome), so a restarted server still lists every
job. While a job is queued or running, its worker holds a session advisory
lock keyed by the job's id on a connection of its own: if the server dies,
PostgreSQL drops the lock with the connection, and ``reconcile`` (run at
start-up and whenever jobs are listed) shows such a job as interrupted.
At most ``max_running`` jobs run at once; the others wait as queued.
Of each kind, the newest ``keep`` ended jobs are kept: older ones are
deleted when a job ends and when a server starts (``prune``).
"""
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import text

from gigsterpg.config import mask_secrets_in
from gigsterpg.connections import PG_CONNECT_TIMEOUT_S, short_reason
from gigsterpg.exc import GigsterPgError, Interrupted, TransientError
from gigsterpg.lib.pg.db.states import (ACTIVE_JOB_STATES, ENDED_JOB_STATES, FAILED, INTERRUPTED, JOB_KINDS, RUNNING,
                                        SUCCEEDED, sql_in)

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5
PRUNE_BATCH = 1000
SERVER_GONE = ("the server running it stopped (or lost its connection to PostgreSQL) before it ended;"
               " restart it with POST .../{id}/restart")


class JobRefused(TransientError):
    """A job that cannot start now: one like it is active (``busy``), or too many are queued."""

    def __init__(self, message: str, busy: bool):
        super().__init__(message)
        self.busy = busy


class JobInterrupted(Interrupted):
    """Raised in a job's thread at its next progress report once the server is stopping.

    A KeyboardInterrupt, so the sync records its run as interrupted, as it does for Ctrl-C.
    """


def lock_key(job_id: uuid.UUID) -> int:
    """The advisory lock key of a job: the top 64 bits of its UUID, as PostgreSQL's signed bigint."""
    key = job_id.int >> 64
    return key - 2 ** 64 if key >= 2 ** 63 else key


@dataclass
class Job:
    """What the worker knows of its job; reports go through its own connection."""

    id: uuid.UUID
    kind: str
    connection: psycopg.Connection
    stopping: threading.Event
    rows_done: int = 0
    rows_total: Optional[int] = None
    # What went wrong without stopping the work (e.g. an unbalanced sync): the job ends as failed.
    errors: List[str] = field(default_factory=list)
    _reported: float = 0.0

    def _update(self, assignments: str, params: tuple = ()) -> None:
        try:
            self.connection.execute(f"UPDATE api_jobs SET {assignments} WHERE id = %s", (*params, self.id))
        except psycopg.Error as err:  # not the work's own database: say whose connection it was
            raise TransientError("lost the connection to gigsterpg's PostgreSQL, which records the job",
                                 short_reason(err), "the job shows as interrupted once it is back; restart it") from err

    def running(self) -> None:
        self._update("state = %s, started_at = now()", (RUNNING,))

    def total(self, rows_total: int) -> None:
        self.rows_total = rows_total
        self._update("rows_total = %s", (rows_total,))

    def progress(self, rows_done: int) -> None:
        """``rows_done`` so far; written at most every PROGRESS_EVERY_S. Raises JobInterrupted once stopping."""
        self.rows_done = rows_done
        if self.stopping.is_set():
            raise JobInterrupted()
        now = time.monotonic()
        if now - self._reported >= PROGRESS_EVERY_S:
            self._reported = now
            self._update("rows_done = %s", (rows_done,))

    def finish(self, state: str, result: Optional[dict] = None, errors: List[str] = ()) -> None:
        self._update("state = %s, finished_at = now(), rows_done = %s, result = %s, errors = errors || %s",
                     (state, self.rows_done, Jsonb(mask_secrets_in(result)) if result is not None else None,
                      Jsonb(mask_secrets_in(list(errors)))))


Work = Callable[[Job], dict]


class Jobs:
    """Starts jobs, and answers for the ones of every server sharing the database.

    Args:
        engine: SQLAlchemy engine of gigsterpg's PostgreSQL database (migrated).
        url: the same database's URL, for each worker's own connection.
        max_running: jobs run at once; more wait as queued, up to ``QUEUED_PER_SLOT`` times as many
            (each holds a connection or two while it waits), then new ones are refused.
        keep: ended jobs kept of each kind, the newest (GIGSTERPG_API_JOBS_KEEP).
    """

    QUEUED_PER_SLOT = 4

    def __init__(self, engine, url: str, max_running: int = 4, keep: int = 1000):
        self.engine = engine
        self.url = url
        self.keep = keep
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.max_live = max_running * (1 + self.QUEUED_PER_SLOT)
        self.slots = threading.BoundedSemaphore(max_running)
        self.stopping = threading.Event()
        self.live: Dict[uuid.UUID, threading.Thread] = {}
        self._guard = threading.Lock()

    def start(self, kind: str, params: dict, work: Work, cleanup: Callable[[], None] = lambda: None,
              restart_of: Optional[uuid.UUID] = None) -> uuid.UUID:
        """Record a queued job, then run ``work`` in a thread; ``cleanup`` runs when it ends, however.

        Raises JobRefused when one like it is active (the database's unique indexes decide, whichever
        server started it) or when this server already has its fill of jobs.
        """
        if len(self.live) >= self.max_live:
            raise JobRefused(f"this server has {len(self.live)} jobs running or queued", busy=False)
        job_id = uuid.uuid4()
        connection = psycopg.connect(self.url, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_S,
                                     application_name=f"gigsterpg-job-{kind}")
        try:
            connection.execute("SELECT pg_advisory_lock(%s)", (lock_key(job_id),))
            connection.execute("INSERT INTO api_jobs (id, kind, params, owner, restart_of) VALUES (%s, %s, %s, %s, %s)",
                               (job_id, kind, Jsonb(mask_secrets_in(params)), self.owner, restart_of))
        except psycopg.errors.UniqueViolation as err:
            connection.close()
            raise JobRefused(f"an active {kind} job is in the way", busy=True) from err
        except BaseException:
            connection.close()
            raise
        job = Job(job_id, kind, connection, self.stopping)
        thread = threading.Thread(target=self._run, args=(job, work, cleanup), name=f"job-{kind}-{job_id.hex[:8]}",
                                  daemon=True)
        with self._guard:
            self.live[job_id] = thread
        thread.start()
        logger.info("job %s (%s) queued", job_id, kind)
        return job_id

    def _run(self, job: Job, work: Work, cleanup: Callable[[], None]) -> None:
        try:
            with self.slots:
                if self.stopping.is_set():
                    raise JobInterrupted()
                job.running()
                logger.info("job %s (%s) running", job.id, job.kind)
                result = work(job)
            job.finish(FAILED if job.errors else SUCCEEDED, result, job.errors)
            logger.info("job %s (%s) ended%s", job.id, job.kind, f": {job.errors}" if job.errors else "")
        except JobInterrupted:
            self._end(job, INTERRUPTED, "the server was stopped; restart the job with POST .../{id}/restart")
        except GigsterPgError as err:
            self._end(job, FAILED, str(err))
        except Exception as err:  # still recorded, with the traceback in the log
            logger.exception("job %s (%s) failed unexpectedly", job.id, job.kind)
            self._end(job, FAILED, f"unexpected error {type(err).__name__}: {err}")
        finally:
            try:
                cleanup()
            finally:
                job.connection.close()  # releases the advisory lock
                self._prune_quietly(job.kind)
                with self._guard:
                    self.live.pop(job.id, None)

    def _end(self, job: Job, state: str, error: str) -> None:
        logger.warning("job %s (%s) %s: %s", job.id, job.kind, state, error)
        try:
            job.finish(state, errors=[error])
        except TransientError as err:  # its connection is gone: reconcile will show it as interrupted
            logger.warning("could not record the end of job %s: %s", job.id, err)

    def reconcile(self) -> int:
        """Mark interrupted every queued or running job whose server is gone; returns how many."""
        marked = 0
        with self.engine.begin() as connection:
            active = connection.execute(text(f"SELECT id FROM api_jobs WHERE {sql_in('state', ACTIVE_JOB_STATES)}"))
            for job_id in [job_id for job_id in active.scalars() if job_id not in self.live]:
                # The owner's session lock, if it still lives, makes this try fail; a transaction lock ends here.
                key = {"key": lock_key(job_id)}
                if connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), key).scalar():
                    marked += connection.execute(text(
                        "UPDATE api_jobs SET state = :interrupted, finished_at = now(),"
                        " errors = errors || jsonb_build_array(CAST(:why AS text))"
                        f" WHERE id = :id AND {sql_in('state', ACTIVE_JOB_STATES)}"),
                        {"id": job_id, "why": SERVER_GONE, "interrupted": INTERRUPTED}).rowcount
        if marked:
            logger.warning("%d job(s) of a server that stopped are now shown as interrupted", marked)
        return marked

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask every job of this server to stop at its next progress report, and wait for them a while."""
        self.stopping.set()
        deadline = time.monotonic() + timeout_s
        for thread in list(self.live.values()):
            thread.join(max(0.0, deadline - time.monotonic()))

    def prune(self, kinds: Iterable[str] = JOB_KINDS, batches: Optional[int] = None) -> int:
        """Delete the ended jobs of each kind older than its newest ``keep``; returns how many.

        Queued and running jobs are never deleted. Each statement deletes at most PRUNE_BATCH jobs and reads
        at most ``keep`` + PRUNE_BATCH of them, newest first, through ``ix_api_jobs_kind_created_at``;
        ``batches`` bounds how many statements run per kind (None: until none is left to delete).
        """
        deleted = 0
        for kind in kinds:
            done = 0
            while batches is None or done < batches:
                with self.engine.begin() as connection:
                    count = connection.execute(PRUNE, {"kind": kind, "keep": self.keep, "n": PRUNE_BATCH}).rowcount
                deleted, done = deleted + count, done + 1
                if count < PRUNE_BATCH:
                    break
        if deleted:
            logger.info("deleted %d ended job(s) beyond the newest %d of each kind", deleted, self.keep)
        return deleted

    def _prune_quietly(self, kind: str) -> None:
        """After a job of ``kind`` ends: one batch of ``prune``; a failure only logged (the job has ended)."""
        try:
            self.prune((kind,), batches=1)
        except Exception as err:  # the bookkeeping's database may be gone: the next start prunes
            logger.warning("could not delete old %s jobs: %s", kind, short_reason(err))


# Up to :n ended jobs of a kind, past its newest :keep ended ones.
PRUNE = text(
    "DELETE FROM api_jobs WHERE id IN (SELECT id FROM api_jobs"
    f" WHERE kind = :kind AND {sql_in('state', ENDED_JOB_STATES)}"
    " ORDER BY created_at DESC OFFSET :keep LIMIT :n)")
