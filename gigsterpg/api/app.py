"""The HTTP API: exports and syncs started and watched as jobs, the replicated data read by key, health.

``create_app`` opens gigsterpg's databases (PostgreSQL checked and migrated
at once, so a bad setting fails before the server listens) and returns the
FastAPI application; ``python -m gigsterpg.cli serve`` runs it on uvicorn.
Every route but ``/health`` (and the documentation) wants the bearer token.
"""
import contextlib
import hmac
import logging
import uuid
from datetime import datetime, timezone
from typing import Optional

import pymongo
from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from sqlalchemy import text

from gigsterpg import __version__, commands
from gigsterpg.api import models
from gigsterpg.api.jobs import ACTIVE, Jobs
from gigsterpg.api.work import ApiError, start_export, start_sync
from gigsterpg.config import COLLECTIONS, Settings
from gigsterpg.connections import MONGO_TIMEOUT_MS, open_pg, pg_errors, short_reason
from gigsterpg.exc import GigsterPgError, TransientError

logger = logging.getLogger(__name__)

USER_GIGS_SHOWN = 100
JOB_COLUMNS = ("id, kind, state, params, created_at, started_at, finished_at, rows_done, rows_total, result, errors,"
               " restart_of")


def _problems(*statuses: int) -> dict:
    return {status: {"model": models.Problem} for status in statuses}


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
    jobs = Jobs(pg.engine, settings.pg_url, max_jobs)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        jobs.reconcile()
        yield
        jobs.stop()
        mongo.close()
        pg.dispose()

    app = FastAPI(title="gigsterpg", version=__version__, lifespan=lifespan,
                  description="Start and watch PostgreSQL -> MongoDB exports and MongoDB -> PostgreSQL syncs;"
                              " read the replicated users and gigs. Every route but /health wants"
                              " `Authorization: Bearer <GIGSTERPG_API_TOKEN>`.")
    app.state.jobs = jobs

    @app.exception_handler(ApiError)
    async def refused(request: Request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError):
        # Each problem's place and message, never the value sent (it may be a password).
        why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        return JSONResponse(models.Problem(error="bad_request", message="the request does not fit the API",
                                           why=why[:2000], todo="see /docs for what each field takes").model_dump(),
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        # FastAPI's own refusals (a body that is not JSON, an unknown path, a wrong method) in the same shape.
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        return JSONResponse(models.Problem(error=codes.get(err.status_code, "http_error"), message=str(err.detail),
                                           todo="see /docs").model_dump(),
                            status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(GigsterPgError)
    async def database_error(request: Request, err: GigsterPgError):
        transient = isinstance(err, TransientError)
        return JSONResponse(models.Problem(error="database_unavailable" if transient else "database_error",
                                           message=err.what, why=err.why, todo=err.todo).model_dump(),
                            status_code=503 if transient else 500)

    bearer = HTTPBearer(auto_error=False, description="GIGSTERPG_API_TOKEN")

    def authorized(credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if token is None:
            return
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise ApiError(401, "unauthorized", "a valid bearer token is required",
                           "no Authorization header" if credentials is None else "the token does not match",
                           "send Authorization: Bearer <GIGSTERPG_API_TOKEN>", headers={"WWW-Authenticate": "Bearer"})

    def known_query(request: Request) -> None:
        # A misspelt filter (?stat=done) would silently list everything: refuse what the route does not take.
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

    api = APIRouter(dependencies=[Depends(authorized), Depends(known_query)], responses=_problems(400, 401, 503))

    def reads():
        return pg_errors(settings.pg_url)

    # Jobs ---------------------------------------------------------------------------------------------

    def job_view(request: Request, row) -> dict:
        job = dict(row)
        started, ended = job["started_at"], job["finished_at"] or datetime.now(timezone.utc)
        seconds = (ended - started).total_seconds() if started else 0
        job["rate"] = round(job["rows_done"] / seconds, 1) if seconds > 0 else None
        job["status_url"] = status_url(request, job["kind"], job["id"])
        return job

    def status_url(request: Request, kind: str, job_id: uuid.UUID) -> str:
        return str(request.url_for(f"get_{kind}", job_id=job_id))

    def find_job(request: Request, kind: str, job_id: uuid.UUID) -> dict:
        jobs.reconcile()
        with reads(), pg.engine.connect() as connection:
            row = connection.execute(text(f"SELECT {JOB_COLUMNS} FROM api_jobs WHERE id = :id AND kind = :kind"),
                                     {"id": job_id, "kind": kind}).mappings().first()
        if row is None:
            raise ApiError(404, "job_not_found", f"no {kind} job {job_id}", "", f"GET /{kind}s lists the jobs")
        return job_view(request, row)

    def list_jobs(request: Request, kind: str, limit: int) -> dict:
        jobs.reconcile()
        with reads(), pg.engine.connect() as connection:
            rows = connection.execute(text(f"SELECT {JOB_COLUMNS} FROM api_jobs WHERE kind = :kind"
                                           " ORDER BY created_at DESC LIMIT :n"), {"kind": kind, "n": limit}).mappings()
            return {"items": [job_view(request, row) for row in rows]}

    def started(request: Request, kind: str, job_id: uuid.UUID) -> dict:
        return {"id": job_id, "state": "queued", "status_url": status_url(request, kind, job_id)}

    def restartable(request: Request, kind: str, job_id: uuid.UUID) -> dict:
        job = find_job(request, kind, job_id)
        if job["state"] in ACTIVE:
            raise ApiError(409, "job_active", f"{kind} job {job_id} is {job['state']}", "only an ended job restarts",
                           f"wait for it: GET {job['status_url']}")
        return job

    JobId = Path(description="the job's id, as POST answered it")
    Limit = Query(20, ge=1, le=500, description="how many, newest first")

    @api.post("/exports", response_model=models.JobStarted, summary="Start exporting a PostgreSQL table into MongoDB",
              responses=_problems(401, 403, 404, 409, 422, 429, 502))
    def post_export(request: Request, body: models.ExportRequest):
        """Connects with the given details, checks that the table exists, has a primary key and is readable,
        then answers at once while the rows are written in the background, one document per row with `_id` =
        the primary key. Each refusal has its own status: 401 login refused, 403 no SELECT right, 404 no such
        database or table, 409 an export into that collection is running, 422 no primary key, 429 the server
        has its fill of jobs, 502 the server cannot be reached, 503 gigsterpg's MongoDB cannot be reached."""
        params = body.model_dump(exclude={"password"}, by_alias=True)
        job_id = start_export(jobs, settings, mongo, params, body.password.get_secret_value(), source_timeout_s)
        return started(request, "export", job_id)

    @api.post("/exports/{job_id}/restart", response_model=models.JobStarted, summary="Run an ended export again",
              responses=_problems(401, 403, 404, 409, 422, 429, 502))
    def restart_export(request: Request, job_id: uuid.UUID = JobId,
                       body: models.RestartExport = Body(default_factory=models.RestartExport)):
        """A new job with the same source and collection (the password, which no job keeps, in the body);
        the export is idempotent, so it simply runs again from the start."""
        job = restartable(request, "export", job_id)
        new_id = start_export(jobs, settings, mongo, job["params"], body.password.get_secret_value(),
                              source_timeout_s, restart_of=job_id)
        return started(request, "export", new_id)

    @api.post("/syncs", response_model=models.JobStarted, summary="Start a MongoDB -> PostgreSQL sync",
              responses=_problems(409, 429))
    def post_sync(request: Request, body: models.SyncRequest = Body(default_factory=models.SyncRequest)):
        """The sync of the CLI, on gigsterpg's configured databases; 409 while another sync runs."""
        params = {"collections": [c for c in COLLECTIONS if c in (body.collections or COLLECTIONS)], "mode": body.mode}
        return started(request, "sync", start_sync(jobs, settings, mongo, params))

    def job_reads(kind: str, what: str) -> None:
        """GET /{kind}s (the newest jobs) and GET /{kind}s/{id} (one job)."""
        @api.get(f"/{kind}s", response_model=models.JobList, summary=f"Recent {kind} jobs", name=f"list_{kind}s")
        def list_kind(request: Request, limit: int = Limit):
            return list_jobs(request, kind, limit)

        @api.get(f"/{kind}s/{{job_id}}", response_model=models.Job, name=f"get_{kind}",
                 summary=f"A{'n' if kind == 'export' else ''} {kind} job: state, {what}, rate, errors",
                 responses=_problems(404))
        def get_kind(request: Request, job_id: uuid.UUID = JobId):
            return find_job(request, kind, job_id)

    job_reads("export", "rows")
    job_reads("sync", "documents")

    @api.post("/syncs/{job_id}/restart", response_model=models.JobStarted, summary="Run an ended sync again",
              responses=_problems(404, 409, 429))
    def restart_sync(request: Request, job_id: uuid.UUID = JobId):
        job = restartable(request, "sync", job_id)
        return started(request, "sync", start_sync(jobs, settings, mongo, job["params"], restart_of=job_id))

    # The replicated data ------------------------------------------------------------------------------

    PageSize = Query(50, ge=1, le=1000, description="items per page")
    After = Query(None, ge=0, le=2 ** 63 - 1, description="the `id` of the last item of the previous page")

    def page(request: Request, items: list, limit: int) -> dict:
        more = len(items) > limit
        items = items[:limit]
        return {"items": items,
                "next": str(request.url.include_query_params(after=items[-1]["id"])) if more else None}

    user_columns = "u.id, u._id, u.name, u.email, u.created, u.updated"
    gig_query = ("SELECT g.id, g._id, g.name, g.description, g.state, g.budget::text AS budget, g.created, g.updated,"
                 " u._id AS poster, g.poster_ref FROM gigs g LEFT JOIN users u ON u.id = g.poster_id")

    @api.get("/users", response_model=models.UserPage, summary="Users, by id, a page at a time")
    def get_users(request: Request, limit: int = PageSize, after: Optional[int] = After):
        with reads(), pg.engine.connect() as connection:
            rows = connection.execute(text(f"SELECT {user_columns} FROM users u WHERE u.id > :after"
                                           " ORDER BY u.id LIMIT :n"), {"after": after or 0, "n": limit + 1})
            return page(request, [dict(row) for row in rows.mappings()], limit)

    @api.get("/users/{mongo_id:path}", response_model=models.UserDetail, summary="One user, with skills and gigs",
             responses=_problems(404))
    def get_user(request: Request,
                 mongo_id: str = Path(pattern=models.NO_NUL, description="the user's MongoDB _id, as text")):
        with reads(), pg.engine.connect() as connection:
            user = connection.execute(text(
                f"SELECT {user_columns}, ARRAY(SELECT s.name FROM user_skills us JOIN skills s ON s.id = us.skill_id"
                " WHERE us.user_id = u.id ORDER BY lower(s.name)) AS skills,"
                " (SELECT count(*) FROM gigs g WHERE g.poster_id = u.id) AS gigs_total"
                " FROM users u WHERE u._id = :id"), {"id": mongo_id}).mappings().first()
            if user is None:
                raise ApiError(404, "user_not_found", f"no user with _id {mongo_id!r}", "",
                               "GET /users lists them; the _id is the MongoDB one, as text")
            gigs = connection.execute(text(f"{gig_query} WHERE g.poster_id = :id ORDER BY g.id LIMIT :n"),
                                      {"id": user["id"], "n": USER_GIGS_SHOWN}).mappings()
            return {**user, "gigs": [dict(gig) for gig in gigs],
                    "gigs_url": str(request.url_for("get_gigs").include_query_params(poster=mongo_id))}

    @api.get("/gigs", response_model=models.GigPage, summary="Gigs, by id, a page at a time")
    def get_gigs(request: Request, limit: int = PageSize, after: Optional[int] = After,
                 state: Optional[models.GigState] = Query(None, description="only gigs in this state"),
                 poster: Optional[str] = Query(None, pattern=models.NO_NUL,
                                               description="only gigs of the user with this _id")):
        where, values = ["g.id > :after"], {"after": after or 0, "n": limit + 1}
        if state is not None:
            where.append("g.state = :state")
            values["state"] = state
        if poster is not None:
            where.append("g.poster_id = (SELECT id FROM users WHERE _id = :poster)")
            values["poster"] = poster
        with reads(), pg.engine.connect() as connection:
            rows = connection.execute(text(f"{gig_query} WHERE {' AND '.join(where)} ORDER BY g.id LIMIT :n"), values)
            return page(request, [dict(row) for row in rows.mappings()], limit)

    app.include_router(api)

    @app.get("/health", response_model=models.Health, summary="Whether each database is reachable (no token)",
             responses={503: {"model": models.Health}})
    def health():
        checks = {"postgres": _check(lambda: _select_one(pg.engine)),
                  "mongo": _check(lambda: mongo.admin.command("ping"))}
        ok = all(check["reachable"] for check in checks.values())
        return JSONResponse(models.Health(status="ok" if ok else "degraded", **checks).model_dump(),
                            status_code=200 if ok else 503)

    return app


def _select_one(engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _check(probe) -> dict:
    try:
        probe()
        return {"reachable": True, "error": None}
    except Exception as err:  # whatever the driver raises, the answer is "not reachable, because..."
        return {"reachable": False, "error": short_reason(err)}
