"""Exports (PostgreSQL table -> MongoDB collection) as jobs: start, restart, list, read one."""
import uuid
from typing import Union

from fastapi import APIRouter, Body, Request

from gigsterpg.api import deps, models
from gigsterpg.api.job_routes import JobId, add_job_reads, restartable, started
from gigsterpg.lib.pg.db.states import EXPORT
from gigsterpg.pipelines.export_orders.job import start_projection
from gigsterpg.pipelines.export_table.job import start_export

router = APIRouter()


@router.post("/exports", response_model=models.JobStarted, summary="Start exporting a PostgreSQL table into MongoDB",
             responses=deps.problems(401, 403, 404, 409, 422, 429, 502))
def post_export(request: Request, body: Union[models.ExportRequest, models.ProjectionRequest], jobs: deps.JobsDep,
                settings: deps.SettingsDep, mongo: deps.MongoDep, timeout_s: deps.SourceTimeoutDep):
    """Connects with the given details, checks that the table exists, has a primary key and is readable,
    then answers at once while the rows are written in the background, one document per row with `_id` =
    the primary key. With `projection` instead of `table` (orders), the tables and columns the projection
    reads are checked instead, and each document is one of its rows (one per order, with its items and
    totals; unchanged documents are not written again). Each refusal has its own status: 401 login
    refused, 403 no SELECT right, 404 no such database or table (or column a projection reads), 409 an
    export into that collection is running, 422 no primary key, 429 the server has its fill of jobs, 502
    the server cannot be reached, 503 gigsterpg's MongoDB cannot be reached."""
    params = body.model_dump(exclude={"password"}, by_alias=True)
    begin = start_projection if params.get("projection") else start_export
    job_id = begin(jobs, settings, mongo, params, body.password.get_secret_value(), timeout_s)
    return started(request, EXPORT, job_id)


@router.post("/exports/{job_id}/restart", response_model=models.JobStarted, summary="Run an ended export again",
             responses=deps.problems(401, 403, 404, 409, 422, 429, 502))
def restart_export(request: Request, jobs: deps.JobsDep, settings: deps.SettingsDep, mongo: deps.MongoDep,
                   timeout_s: deps.SourceTimeoutDep, job_id: uuid.UUID = JobId,
                   body: models.RestartExport = Body(default_factory=models.RestartExport)):
    """A new job with the same source and collection (the password, which no job keeps, in the body);
    the export is idempotent, so it simply runs again from the start."""
    job = restartable(request, EXPORT, job_id)
    begin = start_projection if job["params"].get("projection") else start_export
    new_id = begin(jobs, settings, mongo, job["params"], body.password.get_secret_value(), timeout_s,
                   restart_of=job_id)
    return started(request, EXPORT, new_id)


add_job_reads(router, EXPORT, "rows")
