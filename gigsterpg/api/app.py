"""The HTTP API: exports and syncs started and watched as jobs, the replicated data read by key, health.

``create_app`` opens gigsterpg's databases (PostgreSQL checked and migrated
at once, so a bad setting fails before the server listens) and returns the
FastAPI application; ``python -m gigsterpg.cli serve`` runs it on uvicorn.
The routes are in ``gigsterpg/api/routers/`` (one router per resource, listed
in its ``__init__``); here are the application's state they take, the error
answers and the guards: every route but the open ones (``/health``, the
documentation) wants the bearer token.
"""
import contextlib
import logging
from typing import Optional

import pymongo
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gigsterpg import __version__
from gigsterpg.api import models, routers
from gigsterpg.api.deps import problems
from gigsterpg.api.guards import authorized, bearer, known_query  # noqa: F401 (bearer: the API's scheme, here too)
from gigsterpg.api.jobs import Jobs
from gigsterpg.api.pipeline_runs import PipelineRuns
from gigsterpg.api.work import ApiError
from gigsterpg.config import Settings, mask_secrets_in
from gigsterpg.connections import MONGO_TIMEOUT_MS, migrate, open_pg
from gigsterpg.text import place
from gigsterpg.exc import GigsterPgError, TransientError

logger = logging.getLogger(__name__)


def create_app(settings: Settings, token: Optional[str], max_jobs: int = 4, source_timeout_s: float = 10) -> FastAPI:
    """The application over ``settings``' databases.

    Args:
        token: the bearer token every route but /health wants; None runs without one (asked for explicitly).
        max_jobs: jobs run at once; more wait as queued.
        source_timeout_s: how long to wait for an export's source PostgreSQL to answer.
    """
    settings.require_mongo()
    pg = open_pg(settings)
    migrate(pg)
    mongo = pymongo.MongoClient(settings.mongo_url, serverSelectionTimeoutMS=MONGO_TIMEOUT_MS, tz_aware=True,
                                appname="gigsterpg-api")
    app = FastAPI(title="gigsterpg", version=__version__, lifespan=lifespan,
                  description="Start and watch PostgreSQL -> MongoDB exports and MongoDB -> PostgreSQL syncs;"
                              " read the replicated users and gigs. Every route but /health wants"
                              " `Authorization: Bearer <GIGSTERPG_API_TOKEN>`.")
    # What the routes take (gigsterpg/api/deps.py); nothing else holds a database.
    app.state.settings, app.state.pg, app.state.mongo = settings, pg, mongo
    app.state.jobs = Jobs(pg.engine, settings.pg_url, max_jobs, keep=settings.api_jobs_keep)
    app.state.runs = PipelineRuns(settings, max_jobs)  # POST /runs: every pipeline, recorded in pipeline_runs
    app.state.token, app.state.source_timeout_s = token, source_timeout_s

    app.add_exception_handler(ApiError, refused)
    app.add_exception_handler(RequestValidationError, bad_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(GigsterPgError, database_error)

    for router in routers.OPEN_ROUTERS:
        app.include_router(router)
    for router in routers.ROUTERS:
        app.include_router(router, dependencies=[Depends(authorized), Depends(known_query)],
                           responses=problems(400, 401, 503))
    return app


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    app.state.jobs.reconcile()
    app.state.jobs.prune()
    yield
    app.state.jobs.stop()
    app.state.runs.stop()
    app.state.mongo.close()
    app.state.pg.dispose()


async def refused(request: Request, err: ApiError):
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def bad_request(request: Request, err: RequestValidationError):
    # Each problem's place and message, never the value sent (it may be a password).
    why = "; ".join(f"{place(e['loc'])}: {e['msg']}" for e in err.errors())
    return JSONResponse(models.Problem(error="bad_request", message="the request does not fit the API",
                                       why=why[:2000], todo="see /docs for what each field takes").model_dump(),
                        status_code=400)


async def http_error(request: Request, err: StarletteHTTPException):
    # FastAPI's own refusals (a body that is not JSON, an unknown path, a wrong method) in the same shape.
    codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
    return JSONResponse(mask_secrets_in(models.Problem(error=codes.get(err.status_code, "http_error"),
                                                       message=str(err.detail), todo="see /docs").model_dump()),
                        status_code=err.status_code, headers=getattr(err, "headers", None))


async def database_error(request: Request, err: GigsterPgError):
    transient = isinstance(err, TransientError)
    return JSONResponse(mask_secrets_in(models.Problem(error="database_unavailable" if transient else "database_error",
                                                       message=err.what, why=err.why, todo=err.todo).model_dump()),
                        status_code=503 if transient else 500)
