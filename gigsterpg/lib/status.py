"""What ``status`` and the status page show: the last runs, open rejects, followers, API jobs, daily snapshots,
projection runs.

Each reader takes an open SQLAlchemy connection to gigsterpg's PostgreSQL
and returns plain data (dicts, lists), so the CLI's tables, its JSON and the
page render the very same values. Every query is bounded: a LIMIT, and an
index that serves it (sync_runs' and projection_runs' primary keys, the open rejects' partial
index, api_jobs' (kind, created_at)), so a page answers as quickly with a
million rejects as with ten. Connection strings in errors are masked.
"""
import json
import logging
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional

import bson
from sqlalchemy import text

from gigsterpg import pipelines
from gigsterpg.config import Settings, mask_url
from gigsterpg.connections import mongo_errors_translated, open_mongo, open_pg, pg_errors
from gigsterpg.exc import GigsterPgError
from gigsterpg.lib.pg.db.snapshot import SNAPSHOT_STEPS
from gigsterpg.lib.pg.db.states import (ACTIVE_JOB_STATES, FAILED, FOLLOW, INTERRUPTED, JOB_KINDS, RUNNING, SUCCEEDED,
                                        sql_in)
from gigsterpg.lib.pg.sync.engine.follow import behind
from gigsterpg.lib.pg.sync.engine.runner import FOLLOW_LOCK_KEY, LOCK_KEY
from gigsterpg.pipelines.runs import latest

logger = logging.getLogger(__name__)

RUNS_SHOWN = 10
REASONS_SHOWN = 200
REJECTS_COUNTED = 100000  # per reason; past it the page says "more than 100,000"
JOBS_SHOWN = 20
SNAPSHOT_DAYS = 14
REJECTS_PER_PAGE = 25
RAW_DOCUMENT_CHARS = 20000  # a 10 MB document is cut, not sent whole to a browser
COUNTS = ("seen", "inserted", "updated", "unchanged", "deleted", "rejected")


def table_exists(connection, name: str) -> bool:
    return bool(connection.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name}).scalar())


def lock_held(connection, key: int) -> bool:
    """Whether some session holds the advisory lock ``key`` (a bigint key) in this database."""
    return bool(connection.execute(text(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND (classid::bigint << 32 | objid::bigint) = :key)"), {"key": key}).scalar())


def sync_lock_held(connection) -> bool:
    """Whether a scan (full, incremental) runs: it holds the sync lock for its run."""
    return lock_held(connection, LOCK_KEY)


def follower_lock_held(connection) -> bool:
    """Whether a follower runs: it holds the follower's lock while it follows."""
    return lock_held(connection, FOLLOW_LOCK_KEY)


def runs(connection, limit: int = RUNS_SHOWN) -> List[dict]:
    """The last ``limit`` sync runs, newest first, each with its counts per collection and its rate."""
    rows = connection.execute(text(
        "SELECT id, started_at, finished_at, status, mode, collections, error, stage, retries, counts, progress,"
        " extract(epoch FROM finished_at - started_at)::float AS seconds"
        " FROM sync_runs ORDER BY id DESC LIMIT :n"), {"n": limit}).mappings().all()
    return [_run(dict(row)) for row in rows]


def _run(run: dict) -> dict:
    counts, progress = run.pop("counts") or {}, run.pop("progress") or {}
    collections = []
    for name in run["collections"].split(","):
        part = counts.get(name)
        if part is None:
            collections.append({"name": name, **{key: None for key in COUNTS}, "balanced": None,
                                "done": progress.get(name)})
            continue
        values = {key: part.get(key, 0) for key in COUNTS}
        values["rejected"] = sum((part.get("rejected") or {}).values())
        collections.append({"name": name, **values, "balanced": part.get("balanced"),
                            "rows": part.get("rows"), "open_rejects": part.get("open_rejects"),
                            "documents": part.get("documents"), "done": progress.get(name)})
    seen = [part["seen"] for part in collections if part["seen"] is not None]
    run["documents"] = sum(seen) if seen else None
    run["rate"] = (run["documents"] / run["seconds"]) if seen and run["seconds"] else None
    checked = [part["balanced"] for part in collections if part["balanced"] is not None]
    run["balanced"] = all(checked) if checked else None
    run["collections"] = collections
    run["error"] = mask_url(run["error"]) if run["error"] else None
    return run


def rejects(connection, limit: int = REASONS_SHOWN, cap: int = REJECTS_COUNTED) -> List[tuple]:
    """Open rejects as (collection, reason, count), most frequent first within a collection.

    Bounded however many rejects there are: the (collection, reason) pairs are found by a skip scan of
    the open rejects' index (one probe per pair), and each pair is counted up to ``cap`` + 1 rows
    (a count above ``cap`` means "more than ``cap``").
    """
    return [tuple(row) for row in connection.execute(text(
        "WITH RECURSIVE pairs AS ("
        " (SELECT collection, reason FROM sync_rejects WHERE resolved_at IS NULL ORDER BY collection, reason LIMIT 1)"
        " UNION ALL SELECT n.collection, n.reason FROM pairs p CROSS JOIN LATERAL (SELECT collection, reason"
        "  FROM sync_rejects WHERE resolved_at IS NULL AND (collection, reason) > (p.collection, p.reason)"
        "  ORDER BY collection, reason LIMIT 1) n)"
        " SELECT p.collection, p.reason, (SELECT count(*) FROM (SELECT 1 FROM sync_rejects r"
        "  WHERE r.resolved_at IS NULL AND r.collection = p.collection AND r.reason = p.reason LIMIT :cap + 1) c) AS n"
        " FROM (SELECT * FROM pairs LIMIT :n) p ORDER BY p.collection DESC, n DESC, p.reason"),
        {"n": limit, "cap": cap})]


def reject_page(connection, collection: str, reason: str, after: Optional[str] = None,
                limit: int = REJECTS_PER_PAGE, raw: bool = False) -> dict:
    """One page of the open rejects of ``reason`` in ``collection``, by document id after ``after``.

    Each item: id, field, value (as the reason's detail names them), when first seen, the run that
    found it, and with ``raw`` the stored document (extended JSON, cut at RAW_DOCUMENT_CHARS).
    ``next`` is the id to pass as ``after`` for the next page, None on the last one.
    """
    document = (f", left(document::text, {RAW_DOCUMENT_CHARS}) AS document,"
                f" length(document::text) > {RAW_DOCUMENT_CHARS} AS cut") if raw else ""
    rows = connection.execute(text(
        f"SELECT doc_id, detail, first_seen, run_id{document} FROM sync_rejects"
        " WHERE collection = :collection AND reason = :reason AND resolved_at IS NULL AND doc_id > :after"
        " ORDER BY doc_id LIMIT :n"),
        {"collection": collection, "reason": reason, "after": after or "", "n": limit + 1}).mappings().all()
    items = []
    for row in rows[:limit]:
        field, value = split_detail(reason, row["detail"])
        item = {"id": row["doc_id"], "field": field, "value": value, "first_seen": row["first_seen"],
                "run_id": row["run_id"]}
        if raw:
            shown = row["document"] if row["cut"] else json.dumps(json.loads(row["document"]), indent=2,
                                                                  ensure_ascii=False)
            item["document"] = shown
            item["document_cut"] = row["cut"]
        items.append(item)
    return {"collection": collection, "reason": reason, "items": items,
            "next": items[-1]["id"] if len(rows) > limit else None}


def split_detail(reason: str, detail: str) -> tuple:
    """``"invalid email: email='x'"`` -> ("email", "'x'"); a detail that names no field -> ("", rest)."""
    rest = detail[len(reason) + 2:] if detail.startswith(reason + ": ") else detail
    field, sep, value = rest.partition("=")
    if sep and field and " " not in field:
        return field, value
    return "", "" if rest == reason else rest


def followers(connection, lag: Optional[Callable[[Optional[bytes], Optional[datetime]], dict]] = None,
              following: Optional[bool] = None) -> List[dict]:
    """The change-stream followers: position, events applied, last change, lag (``lag(token, last)``).

    ``running``: a follow run is recorded as running and the follower's lock is held.
    """
    if not table_exists(connection, "sync_followers"):
        return []
    found = [dict(row) for row in connection.execute(text(
        "SELECT name, token, events_applied, last_event_at, applied_at, caught_up_at, last_error, last_error_at,"
        " EXISTS (SELECT 1 FROM sync_runs r WHERE r.status = :running AND r.mode = :follow) AS follow_running"
        " FROM sync_followers ORDER BY name LIMIT 20"), {"running": RUNNING, "follow": FOLLOW}).mappings()]
    held = follower_lock_held(connection) if found and following is None else following
    for follower in found:
        token = follower.pop("token")
        follower["running"] = bool(follower.pop("follow_running") and held)
        follower["last_error"] = mask_url(follower["last_error"]) if follower["last_error"] else None
        follower.update(lag(token, follower["last_event_at"]) if lag else
                        {"behind_events": None, "behind_seconds": None, "behind_unknown": "MongoDB not asked"})
    return found


def follower_lag(database, errors) -> Callable[[Optional[bytes], Optional[datetime]], dict]:
    """A ``lag`` for ``followers``: asks ``database`` (pymongo) inside ``errors()`` (a translating context)."""
    def lag(token: Optional[bytes], last_event_at: Optional[datetime]) -> dict:
        if token is None:
            return {"behind_events": None, "behind_seconds": None, "behind_unknown": "no position saved yet"}
        try:
            with errors():
                found = behind(database, bson.decode(token), last_event_at)
        except GigsterPgError as err:
            return {"behind_events": None, "behind_seconds": None, "behind_unknown": err.what}
        return {"behind_events": found["events"], "behind_seconds": found["seconds"], "behind_unknown": None}
    return lag


def jobs(connection, limit: int = JOBS_SHOWN) -> List[dict]:
    """The newest API jobs of every kind (one index probe per kind), newest first.

    A queued or running job whose owner's advisory lock is free belongs to a server that is gone: it is
    shown as interrupted, as the API's ``Jobs.reconcile`` would record it (this only reads).
    """
    if not table_exists(connection, "api_jobs"):
        return []
    rows = connection.execute(text(
        f"SELECT j.id, j.kind, CASE WHEN {sql_in('j.state', ACTIVE_JOB_STATES)} AND NOT EXISTS ("
        "SELECT 1 FROM pg_locks l"
        "  WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT oid FROM"
        "  pg_database WHERE datname = current_database()) AND (l.classid::bigint << 32 | l.objid::bigint)"
        "  = ('x' || left(replace(j.id::text, '-', ''), 16))::bit(64)::bigint) THEN :interrupted ELSE j.state END"
        " AS state, j.params, j.created_at, j.started_at, j.finished_at, j.rows_done,"
        " j.rows_total, j.errors, j.restart_of FROM unnest(CAST(:kinds AS text[])) AS k(kind)"
        " CROSS JOIN LATERAL (SELECT * FROM api_jobs WHERE kind = k.kind ORDER BY created_at DESC LIMIT :n) j"
        " ORDER BY j.created_at DESC LIMIT :n"),
        {"kinds": list(JOB_KINDS), "n": limit, "interrupted": INTERRUPTED}).mappings().all()
    shown = [_job(dict(row)) for row in rows]
    restarts = {job["restart_of"]: job["id"] for job in reversed(shown) if job["restart_of"]}
    for job in shown:
        # Restarted already (the newest restart, among the jobs shown): offer that one's restart instead.
        job["restarted_as"] = restarts.get(job["id"])
        job["restartable"] = job["restartable"] and job["restarted_as"] is None
    return shown


def _job(job: dict) -> dict:
    params = job.pop("params") or {}
    job["what"] = mask_url(job_subject(job["kind"], params))
    job["errors"] = [mask_url(str(error)) for error in job["errors"] or []]
    done, total = job["rows_done"], job["rows_total"]
    job["percent"] = min(100.0, 100.0 * done / total) if total else (100.0 if job["state"] == SUCCEEDED else None)
    job["restartable"] = job["state"] in (FAILED, INTERRUPTED)
    # An export's restart asks for the source's password again: no job keeps it.
    job["needs_password"] = job["kind"] == "export"
    return job


def job_subject(kind: str, params: dict) -> str:
    """What a job works on, as people read it (never a password: jobs do not keep one)."""
    if kind == "export":
        source = f"{params.get('host')}:{params.get('port')}/{params.get('database')}"
        table = params.get("projection") or ".".join(p for p in (params.get("schema"), params.get("table")) if p)
        return f"{source} {table} -> {params.get('collection') or '?'}"
    if kind == "sync":
        return f"{', '.join(params.get('collections') or [])} ({params.get('mode', 'auto')})"
    return ", ".join(f"{key}={value}" for key, value in sorted(params.items()) if key != "password")


def snapshots(connection, days: int = SNAPSHOT_DAYS) -> Optional[dict]:
    """The daily snapshots' grid: the last ``days`` days (newest first) x the steps.

    Each cell is the step as a whole, as ``pipeline status`` reads it (``snapshot_status``: a step
    recorded as running whose process died is ``interrupted``): state, rows, when, and for a failure
    its error and the command that picks up from there. None when the ledger does not exist here.
    """
    if not table_exists(connection, "snapshot_ledger"):
        return None
    from gigsterpg.lib.files.ledger import snapshot_status

    grid: Dict[str, dict] = {}
    for row in snapshot_status(connection.engine, days):
        grid.setdefault(row.day.isoformat(), {})[row.step] = {
            "state": row.state, "rows": row.rows, "bad_lines": row.bad_lines,
            "error": mask_url(row.error) if row.error else None,
            "command": row.rerun if row.state in (FAILED, INTERRUPTED) else None,
            "started_at": row.started_at, "finished_at": row.finished_at}
    return {"steps": list(SNAPSHOT_STEPS), "days": [{"day": day, "cells": cells} for day, cells in grid.items()],
            "active": any(cell["state"] == RUNNING for cells in grid.values() for cell in cells.values())}


def projections(connection, limit: int = RUNS_SHOWN) -> List[dict]:
    """The last projection runs (``export-orders``, CLI and API jobs), newest first; [] before migration 0012."""
    if not table_exists(connection, "projection_runs"):
        return []
    from gigsterpg.lib.mongo.runs import recent
    return recent(connection, limit)


def pipeline_runs(connection, limit: int = 5) -> List[dict]:
    """Every pipeline of the registry with its newest runs (``pipeline_runs``, CLI and API), in the registry's
    order: a section each, built by looping over the registry."""
    found = latest(connection, list(pipelines.names()), limit)
    return [{"name": each.name, "help": each.help, "command": each.cli_command,
             "params": [param.name for param in each.params if param.http], "runs": found[each.name]}
            for each in pipelines.PIPELINES.values()]


def collect(connection, runs_shown: int = RUNS_SHOWN, jobs_shown: int = JOBS_SHOWN,
            lag: Optional[Callable] = None) -> Dict[str, object]:
    """Every section of the status, read on one connection.

    Keys: pipelines (each pipeline's newest runs), runs, rejects, followers, jobs, snapshots, projections,
    active (something runs: a scan or a follower holds its lock, a job or a pipeline run is queued or running, a
    snapshot step or a projection runs), as_of.
    """
    if not table_exists(connection, "sync_runs"):
        return {"pipelines": pipeline_runs(connection), "runs": [], "rejects": [], "followers": [], "jobs": [],
                "snapshots": None, "projections": [], "active": False, "as_of": datetime.now(timezone.utc)}
    following = follower_lock_held(connection)
    held = following or sync_lock_held(connection)
    found = {"runs": runs(connection, runs_shown), "rejects": rejects(connection),
             "followers": followers(connection, lag, following), "jobs": jobs(connection, jobs_shown),
             "snapshots": snapshots(connection), "projections": projections(connection, runs_shown)}
    found["pipelines"] = pipeline_runs(connection)
    found["active"] = (held or any(job["state"] in ACTIVE_JOB_STATES for job in found["jobs"])
                       or any(run["state"] in ACTIVE_JOB_STATES for each in found["pipelines"] for run in each["runs"])
                       or bool(found["snapshots"] and found["snapshots"].get("active"))
                       or any(run["state"] == RUNNING for run in found["projections"]))
    found["as_of"] = datetime.now(timezone.utc)
    return found


def status(settings: Settings, runs_shown: int = 10, jobs_shown: int = 20) -> Dict[str, object]:
    """The verb of ``status``: every section (``collect``) on the configured databases: the last runs,
    the open rejects by collection and reason, the followers and their lag, the API's jobs, the daily snapshots."""
    pg = open_pg(settings)
    try:
        with pg_errors(pg.url), pg.engine.connect() as connection:
            return collect(connection, runs_shown, jobs_shown, lag=lambda token, last: _behind(settings, token, last))
    finally:
        pg.dispose()


def _behind(settings: Settings, token: Optional[bytes], last_event_at) -> dict:
    """A follower's lag, asked of MongoDB; unknown (with why) when it cannot be asked."""
    if not settings.mongo_url or token is None:
        return {"behind_events": None, "behind_seconds": None, "behind_unknown": "no MongoDB URL or no position"}
    try:
        client, database = open_mongo(settings)
    except GigsterPgError as err:
        return {"behind_events": None, "behind_seconds": None, "behind_unknown": err.what}
    try:
        with mongo_errors_translated(settings.mongo_url):
            lag = behind(database, bson.decode(token), last_event_at)
        return {"behind_events": lag["events"], "behind_seconds": lag["seconds"], "behind_unknown": None}
    except GigsterPgError as err:
        return {"behind_events": None, "behind_seconds": None, "behind_unknown": err.what}
    finally:
        client.close()
