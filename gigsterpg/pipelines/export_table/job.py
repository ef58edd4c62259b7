"""``export-table`` as an export job of the API: ``POST /exports`` with a table (``routers/exports.py``).

The checks made before the job starts answer with their HTTP status (``gigsterpg.api.work``); then the job runs
``lib/mongo/export.py``'s export, recorded in ``pipeline_runs``.
"""
import uuid
from typing import Optional

import psycopg

from gigsterpg import pipelines
from gigsterpg.api.jobs import Job, Jobs
from gigsterpg.api.work import (closed_on_failure, describe_source, open_source, ping_mongo, require_free_collection,
                                start_export_job, where)
from gigsterpg.config import Settings
from gigsterpg.connections import mongo_errors_translated, short_reason
from gigsterpg.exc import GigsterPgError
from gigsterpg.lib.mongo import export
from gigsterpg.lib.pg.db.states import API
from gigsterpg.pipelines.execute import recorded  # every run of a pipeline, old routes too, in pipeline_runs


def start_export(jobs: Jobs, settings: Settings, mongo, params: dict, password: str, timeout_s: float,
                 restart_of: Optional[uuid.UUID] = None) -> uuid.UUID:
    """Check the source table and the target, then start the export job; ``params`` has no password."""
    source = open_source(params, password, timeout_s)
    with closed_on_failure(source):
        table = describe_source(source, params)
        params = {**params, "schema": table.schema, "table": table.name,
                  "collection": params.get("collection") or table.name}

        require_free_collection(jobs, params["collection"])
        ping_mongo(mongo)
        collection = mongo[settings.mongo_database][params["collection"]]

        def work(job: Job) -> export.ExportReport:
            try:
                with recorded(pipelines.get("export-table"), settings, params, API) as run, \
                        mongo_errors_translated(settings.mongo_url):
                    job.total(export.count_rows(source, table))
                    run["native"] = export.export(source, collection, table, params["batch_size"],
                                                  progress=job.progress)
            except psycopg.Error as err:
                raise GigsterPgError(f"PostgreSQL at {where(params)} failed during the export", short_reason(err),
                                     "restart the job (POST /exports/{id}/restart): the export is idempotent") from err
            return run["native"]

        return start_export_job(jobs, params, work, source, restart_of)
