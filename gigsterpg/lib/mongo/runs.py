"""The record of each projection run (``export-orders``, CLI or API job) in gigsterpg's own PostgreSQL.

``recorded`` opens a connection of its own, inserts a ``projection_runs`` row (state running) and holds a
session advisory lock keyed by the run until it ends; then it writes succeeded with the report's counts,
failed with the error (one line, connection strings masked), or interrupted (Ctrl-C, the process stopping).
A process that dies writes nothing, but its lock goes with its connection: ``recent`` (what ``status``
reads) shows a running record whose lock is free as interrupted, and the next run records it so.
"""
import contextlib
import logging
from typing import Iterator, List, Optional

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import text

from gigsterpg.config import mask_url
from gigsterpg.lib.pg.db.states import FAILED, INTERRUPTED, RUNNING, SUCCEEDED

logger = logging.getLogger(__name__)

LOCK_PREFIX = "gigsterpg projection run "
RUNS_SHOWN = 10
DIED = "its process ended before it finished"


def run_lock_sql(prefix: str):
    """(key, free) SQL templates of the per-run advisory lock, for the run ``{id}``: the key takes and tests the
    lock; ``free`` holds when no session of this database holds it (the run's process is gone)."""
    key = "hashtextextended('" + prefix + "' || {id}::text, 0)"
    free = ("NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND (l.classid::bigint << 32 | l.objid::bigint) = " + key + ")")
    return key, free


LOCK_KEY_SQL, LOCK_FREE_SQL = run_lock_sql(LOCK_PREFIX)

# The newest runs, by the primary key; a running one whose lock is free reads as interrupted.
RECENT_SQL = (f"SELECT id, projection, collection, origin, started_at, finished_at, counts, error,"
              f" CASE WHEN state = '{RUNNING}' AND {LOCK_FREE_SQL.format(id='r.id')} THEN '{INTERRUPTED}'"
              f" ELSE state END AS state, extract(epoch FROM finished_at - started_at)::float AS seconds"
              f" FROM projection_runs r ORDER BY id DESC LIMIT :n")
# The next run records as interrupted the runs left running by a process that died (the partial index finds them).
RECONCILE_SQL = (f"UPDATE projection_runs r SET state = %s, finished_at = now(), error = %s"
                 f" WHERE state = '{RUNNING}' AND {LOCK_FREE_SQL.format(id='r.id')}")


class Record:
    """The run being recorded: its id, and the report to store when it succeeds (set by the caller)."""

    def __init__(self, run_id: int):
        self.id = run_id
        self.report = None


def counts_of(report) -> dict:
    """An ``OrdersReport`` as the record's counts."""
    if report is None:
        return {}
    return {"read": report.rows, "written": report.written, "unchanged": report.unchanged,
            "deleted": report.deleted, "rejected": report.rejected, "reasons": dict(report.counts),
            "tax_rate": report.tax_rate, "time_zone": report.time_zone, "seconds": round(report.seconds, 3)}


@contextlib.contextmanager
def recorded(own_url: str, projection: str, collection: str, origin: str) -> Iterator[Record]:
    """Record the run of the block; ``collection`` is ``database.collection``, ``origin`` "cli" or
    "api job <id>". The block sets ``record.report`` before it ends well."""
    connection = psycopg.connect(own_url, autocommit=True, application_name="gigsterpg-orders-run")
    try:
        connection.execute(RECONCILE_SQL, (INTERRUPTED, DIED))
        run_id = connection.execute(
            "INSERT INTO projection_runs (projection, collection, origin) VALUES (%s, %s, %s) RETURNING id",
            (projection, collection, origin)).fetchone()[0]
        connection.execute(f"SELECT pg_advisory_lock({LOCK_KEY_SQL.format(id='%s')})", (run_id,))
        record = Record(run_id)
        try:
            yield record
        except BaseException as err:
            state = FAILED if isinstance(err, Exception) else INTERRUPTED
            _end(connection, run_id, state, record.report, mask_url(str(err) or type(err).__name__))
            raise
        _end(connection, run_id, SUCCEEDED, record.report, None)
    finally:
        connection.close()  # the lock goes with it


def _end(connection, run_id: int, state: str, report, error: Optional[str]) -> None:
    """Write how the run ended; a failure to write it is logged, never hides the run's own outcome (a record
    left running with its lock free reads as interrupted)."""
    try:
        connection.execute("UPDATE projection_runs SET state = %s, finished_at = now(), counts = %s, error = %s"
                           " WHERE id = %s", (state, Jsonb(counts_of(report)), error, run_id))
    except psycopg.Error as err:
        logger.warning("could not record how projection run %s ended: %s", run_id, mask_url(str(err)))


def recent(connection, limit: int = RUNS_SHOWN) -> List[dict]:
    """The last ``limit`` projection runs, newest first (``connection``: SQLAlchemy). A running record whose
    lock is free is shown as interrupted, as the next run would record it (this only reads)."""
    rows = connection.execute(text(RECENT_SQL), {"n": limit}).mappings().all()
    shown = []
    for row in rows:
        run = dict(row)
        counts = run.pop("counts") or {}
        for key in ("read", "written", "unchanged", "deleted", "rejected"):
            run[key] = counts.get(key)
        run["reasons"] = counts.get("reasons") or {}
        run["tax_rate"], run["time_zone"] = counts.get("tax_rate"), counts.get("time_zone")
        if run["state"] == INTERRUPTED and not run["error"]:
            run["error"] = DIED
        run["error"] = mask_url(run["error"]) if run["error"] else None
        run["rate"] = run["read"] / run["seconds"] if run["read"] and run["seconds"] else None
        shown.append(run)
    return shown
