"""The run record of every pipeline (``pipeline_runs``): written by every run, from the CLI or the API.

``Run.open`` connects to gigsterpg's PostgreSQL on a connection of its own, inserts the record (queued) and
takes a session advisory lock keyed by the run, held until the run ends (as ``lib/mongo/runs.py`` does for
projection runs and ``api/jobs.py`` for API jobs). A process that dies writes nothing more, but its lock goes
with its connection: every reader shows a queued or running record whose lock is free as interrupted, and the
next run to open records it so. Ended runs beyond the newest ``keep`` of a pipeline are deleted when one of
its runs ends (GIGSTERPG_API_JOBS_KEEP, as for API jobs).
"""
import datetime
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import text

from gigsterpg.config import mask_url
from gigsterpg.connections import PG_CONNECT_TIMEOUT_S, pg_errors
from gigsterpg.lib.mongo.runs import run_lock_sql
from gigsterpg.lib.pg.db.states import (ACTIVE_JOB_STATES, ENDED_JOB_STATES, FAILED, INTERRUPTED, RUNNING,
                                        SUCCEEDED, sql_in)
from gigsterpg.pipelines.contract import Pipeline, Report

logger = logging.getLogger(__name__)

LOCK_PREFIX = "gigsterpg pipeline run "
DIED = "its process ended before it finished (killed, or the machine stopped); run it again"
PRUNE_BATCH = 1000
ACTIVE = sql_in("state", ACTIVE_JOB_STATES)
LOCK_KEY_SQL, LOCK_FREE_SQL = run_lock_sql(LOCK_PREFIX)  # the projection runs' technique, a prefix of its own
# A record as every reader shows it: a queued or running one whose lock is free is interrupted.
SHOWN = (f"SELECT id, pipeline, params, source, CASE WHEN {ACTIVE} AND {LOCK_FREE_SQL.format(id='r.id')}"
         f" THEN '{INTERRUPTED}' ELSE state END AS state, created_at, started_at, ended_at, error, read, outcomes,"
         f" details, restart_of FROM pipeline_runs r")
RECONCILE_SQL = (f"UPDATE pipeline_runs r SET state = '{INTERRUPTED}', ended_at = now(), error = %s"
                 f" WHERE {ACTIVE} AND {LOCK_FREE_SQL.format(id='r.id')}")
PRUNE_SQL = (f"DELETE FROM pipeline_runs WHERE id IN (SELECT id FROM pipeline_runs WHERE pipeline = %s AND"
             f" {sql_in('state', ENDED_JOB_STATES)} ORDER BY id DESC OFFSET %s LIMIT {PRUNE_BATCH})")
FIELDS = ("id", "pipeline", "params", "source", "state", "created_at", "started_at", "ended_at", "error", "read",
          "outcomes", "details", "restart_of")


def shown_params(pipeline: Pipeline, values: Dict[str, Any]) -> Dict[str, Any]:
    """The parameters as the record keeps them: JSON values, every URL's password masked, secrets left out."""
    kept = {}
    for param in pipeline.params:
        value = values.get(param.name)
        if param.secret and value:
            value = "***"
        kept[param.name] = _plain(value)
    return kept


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, Path):
        value = str(value)
    return mask_url(value) if isinstance(value, str) else value


def one_line(error: BaseException) -> str:
    """An error as the record keeps it: its first line, masked."""
    message = str(error) or type(error).__name__
    return mask_url(message.strip().splitlines()[0] if message.strip() else type(error).__name__)[:2000]


class Run:
    """A run being recorded: its id, and the connection that holds its lock (the run's lifeline)."""

    def __init__(self, connection: psycopg.Connection, run_id: int, pipeline: str, keep: int):
        self.connection, self.id, self.pipeline, self.keep = connection, run_id, pipeline, keep

    @classmethod
    def open(cls, url: str, pipeline: Pipeline, params: Dict[str, Any], source: str, keep: int = 1000,
             restart_of: Optional[int] = None) -> "Run":
        """Record a queued run of ``pipeline`` and take its lock (``url``: gigsterpg's migrated PostgreSQL)."""
        url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        with pg_errors(url):
            connection = psycopg.connect(url, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_S,
                                         application_name=f"gigsterpg-run-{pipeline.name}"[:63])
        try:
            connection.execute(RECONCILE_SQL, (DIED,))
            run_id = connection.execute(
                "INSERT INTO pipeline_runs (pipeline, params, source, restart_of) VALUES (%s, %s, %s, %s) RETURNING id",
                (pipeline.name, Jsonb(shown_params(pipeline, params)), source, restart_of)).fetchone()[0]
            connection.execute(f"SELECT pg_advisory_lock({LOCK_KEY_SQL.format(id='%s')})", (run_id,))
        except BaseException:
            connection.close()
            raise
        return cls(connection, run_id, pipeline.name, keep)

    def running(self) -> None:
        self._write("state = %s, started_at = now()", (RUNNING,))

    def succeeded(self, report: Report) -> None:
        self._end(SUCCEEDED if report.ok else FAILED, report.error, report)

    def failed(self, error: BaseException) -> None:
        # Ctrl-C, SIGTERM, a server stopping (JobInterrupted is a KeyboardInterrupt too): interrupted.
        stopped = isinstance(error, KeyboardInterrupt) or not isinstance(error, Exception)
        self._end(INTERRUPTED if stopped else FAILED, one_line(error), None)

    def interrupted(self, why: str) -> None:
        self._end(INTERRUPTED, why, None)

    def _end(self, state: str, error: Optional[str], report: Optional[Report]) -> None:
        """Write how the run ended, then let its lock go; a failure to write is logged, never hides the run's
        own outcome (a record left active with its lock free reads as interrupted)."""
        counts = (report.read, Jsonb(report.outcomes), Jsonb(_plain(report.details))) if report else (None,) * 3
        try:
            self._write("state = %s, ended_at = now(), error = %s, read = %s, outcomes = coalesce(%s, outcomes),"
                        " details = coalesce(%s, details)", (state, error, *counts))
            self.connection.execute(PRUNE_SQL, (self.pipeline, self.keep))
        except psycopg.Error as err:
            logger.warning("could not record how pipeline run %s ended: %s", self.id, mask_url(str(err)))
        finally:
            self.connection.close()  # the lock goes with it

    def _write(self, assignments: str, params: tuple) -> None:
        self.connection.execute(f"UPDATE pipeline_runs SET {assignments} WHERE id = %s", (*params, self.id))


def view(row) -> dict:
    """A record as the CLI's ``runs``, ``GET /runs/{id}`` and the page show it."""
    run = {key: row[key] for key in FIELDS}
    if run["state"] == INTERRUPTED and not run["error"]:
        run["error"] = DIED
    run["error"] = mask_url(run["error"]) if run["error"] else None
    ended = run["ended_at"]
    run["seconds"] = round((ended - run["started_at"]).total_seconds(), 3) if ended and run["started_at"] else None
    return run


def get(connection, run_id: int) -> Optional[dict]:
    """One run (``connection``: SQLAlchemy), or None."""
    row = connection.execute(text(SHOWN + " WHERE id = :id"), {"id": run_id}).mappings().first()
    return view(row) if row else None


def page(connection, pipeline: Optional[str] = None, state: Optional[str] = None, limit: int = 20,
         before: Optional[int] = None) -> tuple:
    """The newest runs (of ``pipeline``, in ``state``) with ids below ``before``: (runs, more)."""
    inner = SHOWN + " WHERE (CAST(:pipeline AS text) IS NULL OR pipeline = :pipeline) AND id < :before"
    rows = connection.execute(text(
        f"SELECT * FROM ({inner} ORDER BY id DESC) s WHERE CAST(:state AS text) IS NULL OR state = :state"
        " ORDER BY id DESC LIMIT :n"),
        {"pipeline": pipeline, "state": state, "before": before if before is not None else 2 ** 63 - 1,
         "n": limit + 1}).mappings().all()
    return [view(row) for row in rows[:limit]], len(rows) > limit


def latest(connection, names: List[str], limit: int = 5) -> Dict[str, List[dict]]:
    """The newest ``limit`` runs of each pipeline of ``names`` (one index probe each); [] before migration 0013."""
    if not connection.execute(text("SELECT to_regclass('pipeline_runs') IS NOT NULL")).scalar():
        return {name: [] for name in names}
    rows = connection.execute(text(
        f"SELECT r.* FROM unnest(CAST(:names AS text[])) AS p(name) CROSS JOIN LATERAL ({SHOWN}"
        " WHERE r.pipeline = p.name ORDER BY r.id DESC LIMIT :n) r"), {"names": list(names), "n": limit}).mappings()
    found: Dict[str, List[dict]] = {name: [] for name in names}
    for row in rows:
        found[row["pipeline"]].append(view(row))
    for runs in found.values():
        runs.sort(key=lambda run: run["id"], reverse=True)
    return found


def as_json(run: dict) -> str:
    """A run as one JSON object (times in ISO 8601)."""
    return json.dumps(run, default=lambda value: value.isoformat() if hasattr(value, "isoformat") else str(value))
