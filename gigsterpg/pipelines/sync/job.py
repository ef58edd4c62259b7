"""``sync`` as a job of the API: ``POST /syncs`` (``routers/syncs.py``), refused while another sync runs."""
import uuid
from typing import Dict, Optional

from sqlalchemy import text

from gigsterpg import commands, pipelines
from gigsterpg.api.jobs import Job, Jobs
from gigsterpg.api.work import ApiError, active_job, ping_mongo, start
from gigsterpg.config import Settings
from gigsterpg.lib.pg.db.states import API, SYNC
from gigsterpg.lib.pg.sync.engine.runner import LOCK_KEY, Progress, RunReport
from gigsterpg.pipelines.execute import recorded  # every run of a pipeline, old routes too, in pipeline_runs


class JobProgress(Progress):
    """A sync's progress, as the job's rows done and total (MongoDB's estimated counts).

    Per collection, so a collection scanned again after a reconnection is not counted twice.
    """

    needs_total = True

    def __init__(self, job: Job):
        self.job = job
        self.totals: Dict[str, int] = {}
        self.done: Dict[str, int] = {}
        self.collection = ""

    def start(self, collection: str, total: int) -> None:
        self.collection = collection
        self.totals[collection] = total
        self.done[collection] = 0
        self.job.total(sum(self.totals.values()))

    def advance(self, count: int) -> None:
        self.done[self.collection] += count
        self.job.progress(sum(self.done.values()))


def run_report(report: RunReport) -> dict:
    return {"run_id": report.run_id, "status": report.status, "mode": report.mode, "balanced": report.balanced,
            "collections": {name: part.as_dict() for name, part in report.collections.items()}}


def start_sync(jobs: Jobs, settings: Settings, mongo, params: dict,
               restart_of: Optional[uuid.UUID] = None) -> uuid.UUID:
    """Refuse while a sync runs (a job, the nightly CLI or a follower), else start the sync job."""
    def busy(running) -> ApiError:
        return ApiError(409, "sync_running", "a sync job is running" + (f" (job {running})" if running else ""),
                        "one sync at a time writes the target database", "wait for it: GET /syncs/{id}")

    running = active_job(jobs, SYNC)
    if running is not None:
        raise busy(running)
    with jobs.engine.begin() as connection:
        # A transaction lock, free again at commit, so the sync itself can take it a moment later; shared, as a
        # follower's batch takes it: a sync runs beside a follower, not beside another sync (exclusive).
        if not connection.execute(text("SELECT pg_try_advisory_xact_lock_shared(:key)"), {"key": LOCK_KEY}).scalar():
            raise ApiError(409, "sync_running", "another sync holds the sync lock (the CLI or a follower's catch-up)",
                           "one sync at a time writes the target database", "try again when it has ended")
    ping_mongo(mongo)

    def work(job: Job) -> dict:
        shown = {"collections": ",".join(params["collections"]), "mode": params["mode"]}
        with recorded(pipelines.get("sync"), settings, shown, API) as run:
            report = run["native"] = commands.sync(settings, params["collections"], progress=JobProgress(job),
                                                   mode=params["mode"])
        if not report.balanced:
            job.errors.append("rows + open rejects differ from the documents read: see result.collections")
        return run_report(report)

    return start(jobs, SYNC, params, work, busy(None), restart_of=restart_of)
