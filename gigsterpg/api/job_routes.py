"""What every kind of job has in the API: its listing, its status, and the answers of POST and restart.

A router of a job kind (``routers/exports.py``) starts its jobs itself and
calls ``add_job_reads(router, kind, ...)`` for ``GET /{kind}s`` and
``GET /{kind}s/{id}``, named ``list_{kind}s`` and ``get_{kind}`` (status URLs
are built from those names).
"""
import uuid
from datetime import datetime, timezone

from fastapi import APIRouter, Path, Query, Request

from gigsterpg.api import deps, models
from gigsterpg.api.work import ApiError
from gigsterpg.config import mask_secrets_in
from gigsterpg.lib.pg.db import read
from gigsterpg.lib.pg.db import states

JobId = Path(description="the job's id, as POST answered it")
Limit = Query(20, ge=1, le=500, description="how many, newest first")


def status_url(request: Request, kind: str, job_id: uuid.UUID) -> str:
    """Where a job's state is read: GET /{kind}s/{id}."""
    return str(request.url_for(f"get_{kind}", job_id=job_id))


def started(request: Request, kind: str, job_id: uuid.UUID) -> dict:
    """The answer to a POST that started a job."""
    return {"id": job_id, "state": states.QUEUED, "status_url": status_url(request, kind, job_id)}


def job_view(request: Request, job: dict) -> dict:
    """A job row as the API shows it: with its rate so far and its status URL."""
    started_at, ended = job["started_at"], job["finished_at"] or datetime.now(timezone.utc)
    seconds = (ended - started_at).total_seconds() if started_at else 0
    rate = round(job["rows_done"] / seconds, 1) if seconds > 0 else None
    shown = {key: mask_secrets_in(job[key]) for key in ("params", "errors", "result") if key in job}
    return {**job, **shown, "rate": rate, "status_url": status_url(request, job["kind"], job["id"])}


def find_job(request: Request, kind: str, job_id: uuid.UUID) -> dict:
    """The job, as the API shows it, or the 404 ApiError."""
    deps.jobs(request).reconcile()
    with deps.reading(request) as connection:
        job = read.job(connection, kind, job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no {kind} job {job_id}", "", f"GET /{kind}s lists the jobs")
    return job_view(request, job)


def restartable(request: Request, kind: str, job_id: uuid.UUID) -> dict:
    """The job, when it has ended; the 404 or 409 ApiError otherwise."""
    job = find_job(request, kind, job_id)
    if job["state"] in states.ACTIVE_JOB_STATES:
        raise ApiError(409, "job_active", f"{kind} job {job_id} is {job['state']}", "only an ended job restarts",
                       f"wait for it: GET {job['status_url']}")
    return job


def add_job_reads(router: APIRouter, kind: str, what: str) -> None:
    """GET /{kind}s (the newest jobs) and GET /{kind}s/{id} (one job), on ``router``.

    Args:
        what: what the job counts in rows_done, for the summary ("rows", "documents").
    """
    @router.get(f"/{kind}s", response_model=models.JobList, summary=f"Recent {kind} jobs", name=f"list_{kind}s")
    def list_kind(request: Request, limit: int = Limit):
        deps.jobs(request).reconcile()
        with deps.reading(request) as connection:
            return {"items": [job_view(request, job) for job in read.recent_jobs(connection, kind, limit)]}

    @router.get(f"/{kind}s/{{job_id}}", response_model=models.Job, name=f"get_{kind}",
                summary=f"A{'n' if kind[0] in 'aeiou' else ''} {kind} job: state, {what}, rate, errors",
                responses=deps.problems(404))
    def get_kind(request: Request, job_id: uuid.UUID = JobId):
        return find_job(request, kind, job_id)
