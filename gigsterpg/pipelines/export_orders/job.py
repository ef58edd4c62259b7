"""Projections (``export-orders``) as export jobs of the API: ``POST /exports`` with a projection's name.

The checks made before the job starts answer with their HTTP status (login refused 401, tables or
columns missing 404, no SELECT 403, collection busy 409, MongoDB down 503); then the job runs the same
``project`` as the CLI, on gigsterpg's own PostgreSQL (hashes, rejects, the run's record) and MongoDB database.
"""
import logging
import uuid
from typing import Optional

import psycopg

from gigsterpg import pipelines
from gigsterpg.api.jobs import Job, Jobs
from gigsterpg.api.work import (ApiError, closed_on_failure, open_source, ping_mongo, require_free_collection,
                                start_export_job, where)
from gigsterpg.config import Settings
from gigsterpg.connections import mongo_errors_translated, short_reason
from gigsterpg.exc import ConfigError, GigsterPgError, PrivilegeError, SourceError
from gigsterpg.lib.mongo.orders import OrdersReport, project
from gigsterpg.lib.mongo.projection import (check_source, count_rows, load_projection, prepare_source, tax_rate,
                                            time_zone)
from gigsterpg.lib.mongo.runs import recorded
from gigsterpg.lib.pg.db.states import API
from gigsterpg.pipelines.execute import recorded as recorded_run

logger = logging.getLogger(__name__)


def start_projection(jobs: Jobs, settings: Settings, mongo, params: dict, password: str, timeout_s: float,
                     restart_of: Optional[uuid.UUID] = None) -> uuid.UUID:
    """Check the time zone, the source against the projection, and the target, then start the job;
    ``params`` has no password."""
    try:
        zone = time_zone(params.get("time_zone") or settings.time_zone)
    except ConfigError as err:
        raise ApiError(404, "time_zone_not_found", err.what, err.why, "give an IANA name such as UTC or"
                       " America/Mexico_City") from err
    rate = tax_rate(params.get("tax_rate") or settings.tax_rate)  # the model's pattern admits only good ones
    projection = load_projection(params["projection"])  # one of the shipped ones, by the model
    params = {**params, "collection": params.get("collection") or projection.name, "tax_rate": str(rate),
              "time_zone": zone}
    source = open_source(params, password, timeout_s)
    with closed_on_failure(source):
        try:
            source.execute("SELECT set_config('TimeZone', %s, false)", (zone,))
            source.commit()
            prepare_source(source)
            check_source(source, projection, {"tax_rate": rate})
        except PrivilegeError as err:
            raise ApiError(403, "permission_denied", err.what, err.why, err.todo) from err
        except SourceError as err:
            raise ApiError(404, "table_not_found", err.what, err.why, err.todo) from err
        except psycopg.Error as err:
            raise ApiError(502, "source_error", "PostgreSQL failed while checking the source", short_reason(err),
                           "try again; if it persists, check the server's log") from err

        require_free_collection(jobs, params["collection"])
        ping_mongo(mongo)
        collection = mongo[settings.mongo_database][params["collection"]]

        def work(job: Job) -> OrdersReport:
            target = f"{settings.mongo_database}.{params['collection']}"
            with recorded(settings.pg_url, projection.name, target, f"api job {job.id}") as record, \
                    recorded_run(pipelines.get("export-orders"), settings, params, API) as run:
                try:
                    with mongo_errors_translated(settings.mongo_url), \
                            psycopg.connect(settings.pg_url, application_name="gigsterpg-orders") as ledger, \
                            psycopg.connect(settings.pg_url, application_name="gigsterpg-orders") as hashes:
                        job.total(count_rows(source, projection))
                        report = record.report = project(source, ledger, hashes, collection, projection, rate, zone,
                                                         params["batch_size"], progress=job.progress)
                        run["native"] = report
                except psycopg.Error as err:
                    raise GigsterPgError(f"PostgreSQL failed during the export from {where(params)}",
                                         short_reason(err), "restart the job (POST /exports/{id}/restart): the export"
                                         " is idempotent") from err
            return report

        return start_export_job(jobs, params, work, source, restart_of)
