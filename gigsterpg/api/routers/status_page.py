"""The status page for people: ``/`` (runs, rejects, follow, jobs, daily snapshots), a reject reason's
documents, sign in and out, and a failed job's restart.

Open router (a browser cannot send the bearer header), so each route checks
its viewer itself: the bearer token (scripts, tests) or the session cookie
that ``POST /login`` sets for the same token. Without either, the login form
and nothing else. The one action, restart, wants the session's CSRF token
(and a same-origin ``Origin`` when the browser sends one). The data is
``gigsterpg.lib.status``'s, the same that ``python -m gigsterpg.cli status`` prints.
"""
import uuid
from typing import Optional
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gigsterpg.api import deps, models
from gigsterpg.api.routers import exports, runs, syncs
from gigsterpg.api.work import ApiError
from gigsterpg.connections import mongo_errors_translated
from gigsterpg.lib import status as status_report
from gigsterpg.lib.pg.db.states import EXPORT, SYNC
from gigsterpg.web import page
from gigsterpg.web.session import COOKIE, MAX_AGE_S, Signer

# PostgreSQL text holds no NUL: a parameter with one is a 400, not an error from the server.
NO_NUL = r"^[^\x00]*$"
router = APIRouter(include_in_schema=False)


def signer(request: Request) -> Signer:
    """The application's signer (made once, from its token)."""
    state = request.app.state
    if getattr(state, "page_signer", None) is None:
        state.page_signer = Signer(state.token)
    return state.page_signer


def viewer_of(request: Request) -> Optional[page.Viewer]:
    return page.viewer(signer(request), request.app.state.token, request.headers.get("authorization"),
                       request.cookies.get(COOKIE))


def html(name: str, status_code: int = 200, **context) -> HTMLResponse:
    nonce = page.new_nonce()
    return HTMLResponse(page.render(name, nonce=nonce, **context), status_code=status_code,
                        headers=page.security_headers(nonce))


def login_form(problem: Optional[str] = None, status_code: int = 200) -> HTMLResponse:
    return html("login.html", status_code=status_code, problem=problem)


def sign_in_first(request: Request) -> Response:
    """A browser goes to the login form; a script whose bearer token is wrong gets a 401."""
    if request.headers.get("authorization"):
        return login_form("The bearer token does not match.", 401)
    return RedirectResponse("/login", status_code=303)


def read_status(request: Request) -> dict:
    """Every section, from the library (the CLI's ``status`` calls the same ``collect``)."""
    settings, mongo = deps.settings(request), deps.mongo(request)
    lag = status_report.follower_lag(mongo[settings.mongo_database],
                                     lambda: mongo_errors_translated(settings.mongo_url))
    with deps.reading(request) as connection:
        return status_report.collect(connection, lag=lag)


def status_page(request: Request, view: page.Viewer, notice: Optional[str] = None, notice_bad: bool = False,
                status_code: int = 200) -> HTMLResponse:
    return html("status.html", status_code=status_code,
                **page.status_context(read_status(request), view, notice, notice_bad))


@router.get("/", response_class=HTMLResponse)
def home(request: Request, restarted: Optional[uuid.UUID] = Query(None),
         started: Optional[int] = Query(None, ge=1, le=2 ** 63 - 1)):
    view = viewer_of(request)
    if view is None:
        return sign_in_first(request)
    notice = f"Restarted: the new job is {restarted}." if restarted else None
    if started:
        notice = f"Started: run {started} (its record is in the pipeline's section below)."
    return status_page(request, view, notice)


@router.get("/login", response_class=HTMLResponse)
def login_page():
    return login_form()


@router.post("/login")
async def login(request: Request):
    token = request.app.state.token
    if token is None:
        return RedirectResponse("/", status_code=303)
    sent = page.form_fields(await request.body()).get("token", "")
    if not page.viewer(signer(request), token, f"Bearer {sent}", None):
        return login_form("That is not this server's token.", 401)
    answer = RedirectResponse("/", status_code=303)
    answer.set_cookie(COOKIE, signer(request).new_session(), max_age=MAX_AGE_S, path="/", httponly=True,
                      samesite="strict", secure=request.url.scheme == "https")
    return answer


@router.post("/logout")
async def logout(request: Request):
    view = viewer_of(request)
    fields = page.form_fields(await request.body())
    if view is not None and view.by == "cookie" and not signer(request).csrf_ok(view.nonce, fields.get("csrf")):
        return html("login.html", 403, problem="The form was stale: sign out again.")
    answer = RedirectResponse("/login", status_code=303)
    answer.delete_cookie(COOKIE, path="/")
    return answer


@router.get("/page/rejects", response_class=HTMLResponse)
def rejects(request: Request, collection: str = Query(..., max_length=200, pattern=NO_NUL),
            reason: str = Query(..., max_length=500, pattern=NO_NUL),
            after: Optional[str] = Query(None, max_length=2000, pattern=NO_NUL)):
    view = viewer_of(request)
    if view is None:
        return sign_in_first(request)
    with deps.reading(request) as connection:
        found = status_report.reject_page(connection, collection, reason, after, raw=True)
    return html("rejects.html", page=found, after=after, csrf=view.csrf, signed_in_by_cookie=view.by == "cookie")


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host")


@router.post("/page/jobs/{kind}/{job_id}/restart")
async def restart(request: Request, kind: str, job_id: uuid.UUID):
    view = viewer_of(request)
    if view is None:
        return login_form("Sign in to restart a job.", 401)
    fields = page.form_fields(await request.body())
    forged = not same_origin(request) or not signer(request).csrf_ok(view.nonce, fields.get("csrf"))
    if view.by != "bearer" and forged:
        return await run_in_threadpool(status_page, request, view, "The restart was refused: the form did not come"
                                       " from this page (reload it and try again).", True, 403)
    try:
        started = await run_in_threadpool(start_again, request, kind, job_id, fields.get("password", ""))
    except ApiError as err:
        why = "; ".join(part for part in (err.why, err.todo) if part)
        return await run_in_threadpool(status_page, request, view, f"Not restarted: {err.message}"
                                       + (f" ({why})" if why else ""), True, err.status)
    return RedirectResponse(f"/?restarted={started['id']}#jobs", status_code=303)


@router.post("/page/runs/{pipeline}")
async def start_run(request: Request, pipeline: str):
    """A pipeline's form on the page: POST /runs with its fields (the same checks, the same record)."""
    view = viewer_of(request)
    if view is None:
        return login_form("Sign in to start a run.", 401)
    fields = page.form_fields(await request.body())
    forged = not same_origin(request) or not signer(request).csrf_ok(view.nonce, fields.get("csrf"))
    if view.by != "bearer" and forged:
        return await run_in_threadpool(status_page, request, view, "The run was refused: the form did not come"
                                       " from this page (reload it and try again).", True, 403)
    try:
        started = await run_in_threadpool(runs.start, request, pipeline, page.run_params(pipeline, fields))
    except ApiError as err:
        why = "; ".join(part for part in (err.why, err.todo) if part)
        return await run_in_threadpool(status_page, request, view, f"Not started: {err.message}"
                                       + (f" ({why})" if why else ""), True, err.status)
    return RedirectResponse(f"/?started={started['id']}#pipelines", status_code=303)


def start_again(request: Request, kind: str, job_id: uuid.UUID, password: str) -> dict:
    """The restart of the API's own route for ``kind`` (the same checks, the same new job)."""
    state = request.app.state
    if kind == SYNC:
        return syncs.restart_sync(request, state.jobs, state.settings, state.mongo, job_id)
    if kind == EXPORT:
        return exports.restart_export(request, state.jobs, state.settings, state.mongo, state.source_timeout_s,
                                      job_id, body=models.RestartExport(password=password))
    raise ApiError(404, "job_not_found", f"no job kind {kind!r} restarts here", "", "restart it through the API")
