"""The checks made before an API job starts (each failure with its HTTP status) and the start of a job.

What each job does is its pipeline's ``job.py`` (``gigsterpg/pipelines/<name>/job.py``).
"""
import contextlib
import dataclasses
import logging
import uuid
from typing import Callable, Optional

import psycopg
from pymongo import errors as mongo_errors
from sqlalchemy import text

from gigsterpg.config import mask_secrets_in
from gigsterpg.connections import pg_error, short_reason
from gigsterpg.exc import (AuthError, ConfigError, GigsterPgError, NoPrimaryKeyError, PrivilegeError,
                           TableNotFoundError)
from gigsterpg.lib.mongo import export
from gigsterpg.api.jobs import Job, JobRefused, Jobs
from gigsterpg.lib.pg.db.states import ACTIVE_JOB_STATES, EXPORT, sql_in
from gigsterpg.text import shown

logger = logging.getLogger(__name__)


class ApiError(GigsterPgError):
    """A refusal with its HTTP status; the body is ``{error, message, why, todo}``."""

    def __init__(self, status: int, error: str, message: str, why: str = "", todo: str = "",
                 headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.error, self.message, self.why, self.todo = status, error, message, why, todo
        self.headers = headers

    def body(self) -> dict:
        return mask_secrets_in({"error": self.error, "message": self.message, "why": self.why, "todo": self.todo})


def where(params: dict) -> str:
    """An export source as people read it: host:port/database."""
    return f"{params['host']}:{params['port']}/{params['database']}"


def open_source(params: dict, password: str, timeout_s: float) -> psycopg.Connection:
    """A connection to an export's source, or the ApiError that says why there is none."""
    extra = {"sslmode": params["sslmode"]} if params.get("sslmode") else {}
    at = where(params)
    try:
        return export.connect(host=params["host"], port=params["port"], user=params["user"], password=password,
                              dbname=params["database"], timeout_s=timeout_s, **extra)
    except psycopg.OperationalError as err:
        reason, cause = short_reason(err), pg_error(err, at)  # the one classifier of connection failures
        if isinstance(cause, AuthError):
            raise ApiError(401, "source_auth_failed",
                           f"PostgreSQL at {at} refused the login of {shown(params['user'])}", reason,
                           "check user and password") from err
        if isinstance(cause, ConfigError):  # the database is missing
            raise ApiError(404, "database_not_found", f"no database {shown(params['database'])} at {at}",
                           reason, "check the database name") from err
        raise ApiError(502, "source_unreachable", f"cannot connect to PostgreSQL at {at}", reason,
                       "check host, port and sslmode, and that the server accepts connections from here") from err
    except (psycopg.Error, ValueError) as err:  # details libpq or the resolver cannot use (UnicodeError too)
        raise ApiError(400, "bad_request", f"cannot use the connection details for {at}", short_reason(err),
                       "check host, port and sslmode") from err


def describe_source(connection, params: dict) -> export.Table:
    """The table as the catalog describes it, or the ApiError for a missing, keyless or unreadable one."""
    try:
        return export.describe(connection, params["table"], params.get("schema"))
    except TableNotFoundError as err:
        raise ApiError(404, "table_not_found", err.what, err.why, err.todo) from err
    except NoPrimaryKeyError as err:
        raise ApiError(422, "no_primary_key", err.what, err.why, err.todo) from err
    except PrivilegeError as err:
        raise ApiError(403, "permission_denied", err.what, err.why, err.todo) from err
    except psycopg.Error as err:
        raise ApiError(502, "source_error", "PostgreSQL failed while reading the catalog", short_reason(err),
                       "try again; if it persists, check the server's log") from err


def ping_mongo(client) -> None:
    """Raise the 503 ApiError when gigsterpg's MongoDB cannot be reached."""
    try:
        client.admin.command("ping")
    except mongo_errors.PyMongoError as err:
        raise ApiError(503, "mongo_unreachable", "gigsterpg's MongoDB cannot be reached", short_reason(err),
                       "check the MongoDB server and DB_URL_MONGO; GET /health tells when it is back") from err


def active_job(jobs: Jobs, kind: str, collection: Optional[str] = None) -> Optional[uuid.UUID]:
    """A queued or running job of ``kind`` (for an export: into ``collection``), of any live server."""
    jobs.reconcile()  # a dead server's job is in nobody's way
    query = f"SELECT id FROM api_jobs WHERE kind = :kind AND {sql_in('state', ACTIVE_JOB_STATES)}"
    if collection is not None:
        query += " AND params->>'collection' = :collection"
    with jobs.engine.connect() as connection:
        return connection.execute(text(query + " LIMIT 1"), {"kind": kind, "collection": collection}).scalar()


def export_running(collection: str, running: Optional[uuid.UUID] = None) -> ApiError:
    """The 409 for an export into ``collection`` while another export into it is active (job ``running``)."""
    return ApiError(409, "export_running", f"an export into {shown(collection)} is running"
                    + (f" (job {running})" if running else ""),
                    "two exports into one collection would delete each other's documents",
                    "wait for it (GET /exports/{id}), or name another collection")


def require_free_collection(jobs: Jobs, collection: str) -> None:
    """Refuse (409) an export or projection into ``collection`` while another export job writes into it."""
    running = active_job(jobs, EXPORT, collection)
    if running is not None:
        raise export_running(collection, running)


@contextlib.contextmanager
def closed_on_failure(source: psycopg.Connection):
    """The checks of an export's source and the start of its job: ``source`` closed should they fail (once the
    job started, the job closes it)."""
    try:
        yield source
    except BaseException:
        source.close()
        raise


def start_export_job(jobs: Jobs, params: dict, work: Callable[[Job], object], source: psycopg.Connection,
                     restart_of: Optional[uuid.UUID] = None) -> uuid.UUID:
    """Start an export job (a table's or a projection's) into ``params["collection"]``, reading ``source``, which
    is closed when the job ends; ``work`` returns the export's report, the job's result (with its rate)."""
    def result(job: Job) -> dict:
        report = work(job)
        return {**dataclasses.asdict(report), "rate": round(report.rate, 1)}

    return start(jobs, EXPORT, params, result, export_running(params["collection"]), cleanup=source.close,
                 restart_of=restart_of)


def start(jobs: Jobs, kind: str, params: dict, work, busy: ApiError, **options) -> uuid.UUID:
    """``jobs.start``, its refusals as ApiErrors: ``busy`` when one like it won the race, 429 when full."""
    try:
        return jobs.start(kind, params, work, **options)
    except JobRefused as err:
        if err.busy:
            raise busy from err
        raise ApiError(429, "too_many_jobs", "the server has its fill of jobs", str(err),
                       "try again when some have ended", headers={"Retry-After": "30"}) from err
