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
import hmac
import logging
from typing import Optional

import pymongo
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from gigsterpg import __version__, commands
from gigsterpg.api import models, routers
from gigsterpg.api.deps import problems
from gigsterpg.api.jobs import Jobs
from gigsterpg.api.work import ApiError
from gigsterpg.config import Settings, mask_secrets_in
from gigsterpg.connections import MONGO_TIMEOUT_MS, open_pg
from gigsterpg.exc import GigsterPgError, TransientError

logger = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False, description="GIGSTERPG_API_TOKEN")


def create_app(settings: Settings, token: Optional[str], max_jobs: int = 4, source_timeout_s: float = 10) -> FastAPI:
    """The application over ``settings``' databases.

    Args:
        token: the bearer token every route but /health wants; None runs without one (asked for explicitly).
        max_jobs: jobs run at once; more wait as queued.
        source_timeout_s: how long to wait for an export's source PostgreSQL to answer.
    """
    settings.require_mongo()
    pg = open_pg(settings)
    commands.migrate(pg)
    mongo = pymongo.MongoClient(settings.mongo_url, serverSelectionTimeoutMS=MONGO_TIMEOUT_MS, tz_aware=True,
                                appname="gigsterpg-api")
    app = FastAPI(title="gigsterpg", version=__version__, lifespan=lifespan,
                  description="Start and watch PostgreSQL -> MongoDB exports and MongoDB -> PostgreSQL syncs;"
                              " read the replicated users and gigs. Every route but /health wants"
                              " `Authorization: Bearer <GIGSTERPG_API_TOKEN>`.")
    # What the routes take (gigsterpg/api/deps.py); nothing else holds a database.
    app.state.settings, app.state.pg, app.state.mongo = settings, pg, mongo
    app.state.jobs = Jobs(pg.engine, settings.pg_url, max_jobs, keep=settings.api_jobs_keep)
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
    app.state.mongo.close()
    app.state.pg.dispose()


def authorized(request: Request, credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
    """The bearer token check of every route but the open ones (none when the app runs without a token)."""
    token = request.app.state.token
    if token is None:
        return
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise ApiError(401, "unauthorized", "a valid bearer token is required",
                       "no Authorization header" if credentials is None else "the token does not match",
                       "send Authorization: Bearer <GIGSTERPG_API_TOKEN>", headers={"WWW-Authenticate": "Bearer"})


def known_query(request: Request) -> None:
    """Refuse a query parameter the route does not take, or one given twice."""
    # A misspelt filter (?stat=done) would silently list everything.
    route = request.scope.get("route")
    taken = {param.alias for param in route.dependant.query_params} if route else set()
    unknown = sorted(set(request.query_params) - taken)
    if unknown:
        raise ApiError(400, "bad_request", f"unknown query parameter {', '.join(map(repr, unknown))}",
                       f"this route takes {', '.join(sorted(taken)) or 'none'}", "see /docs")
    # Each takes one value: of ?after=1&after=9 FastAPI would keep the last without a word.
    repeated = sorted(name for name in taken if len(request.query_params.getlist(name)) > 1)
    if repeated:
        raise ApiError(400, "bad_request", f"query parameter {', '.join(map(repr, repeated))} given more than once",
                       "each takes one value", "see /docs")


async def refused(request: Request, err: ApiError):
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def bad_request(request: Request, err: RequestValidationError):
    # Each problem's place and message, never the value sent (it may be a password).
    why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
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
