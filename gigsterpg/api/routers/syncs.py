"""Syncs (MongoDB -> PostgreSQL, on gigsterpg's configured databases) as jobs: start, restart, list, read one."""
import uuid

from fastapi import APIRouter, Body, Request

from gigsterpg.api import deps, models
from gigsterpg.api.job_routes import JobId, add_job_reads, restartable, started
from gigsterpg.lib.pg.db.states import SYNC
from gigsterpg.lib.pg.sync.registry import COLLECTIONS
from gigsterpg.pipelines.sync.job import start_sync

router = APIRouter()


@router.post("/syncs", response_model=models.JobStarted, summary="Start a MongoDB -> PostgreSQL sync",
             responses=deps.problems(409, 429))
def post_sync(request: Request, jobs: deps.JobsDep, settings: deps.SettingsDep, mongo: deps.MongoDep,
              body: models.SyncRequest = Body(default_factory=models.SyncRequest)):
    """The sync of the CLI, on gigsterpg's configured databases; 409 while another sync runs."""
    params = {"collections": [c for c in COLLECTIONS if c in (body.collections or COLLECTIONS)], "mode": body.mode}
    return started(request, SYNC, start_sync(jobs, settings, mongo, params))


add_job_reads(router, SYNC, "documents")


@router.post("/syncs/{job_id}/restart", response_model=models.JobStarted, summary="Run an ended sync again",
             responses=deps.problems(404, 409, 429))
def restart_sync(request: Request, jobs: deps.JobsDep, settings: deps.SettingsDep, mongo: deps.MongoDep,
                 job_id: uuid.UUID = JobId):
    job = restartable(request, SYNC, job_id)
    return started(request, SYNC, start_sync(jobs, settings, mongo, job["params"], restart_of=job_id))
