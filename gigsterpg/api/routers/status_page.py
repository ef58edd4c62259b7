"""The status page for people: ``/`` (runs, rejects, follow, jobs, daily snapshots), a reject reason's
documents, sign in and out, and a failed job's restart.

Open router (a browser cannot send the bearer header), so each route checks
its viewer itself: the bearer token (scripts, tests) or the session cookie
that ``POST /login`` sets for the same token. Without either, the login form
and nothing else. The one action, restart, wants the session's CSRF token
(and a same-origin ``Origin``, scheme, host and port, when the browser sends one). A cookie counts only
while its session is open in ``page_sessions`` (``gigsterpg.web.session``): sign-out ends it. The data is
``gigsterpg.lib.status``'s, the same that ``python -m gigsterpg.cli status`` prints.
"""
import contextlib
import uuid
from typing import Optional
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gigsterpg.api import deps, models
from gigsterpg.api.routers import exports, runs, syncs
from gigsterpg.api.work import ApiError
from gigsterpg.connections import mongo_errors_translated, pg_errors
from gigsterpg.lib import status as status_report
from gigsterpg.lib.pg.db.states import EXPORT, SYNC
from gigsterpg.text import shown
from gigsterpg.web import page
from gigsterpg.web.session import COOKIE, MAX_AGE_S, Signer, close_session, open_session, session_is_open

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
    """The viewer, or None; a signed cookie counts only while its session is open (queries the database)."""
    view = page.viewer(signer(request), request.app.state.token, request.headers.get("authorization"),
                       request.cookies.get(COOKIE))
    if view is not None and view.by == "cookie":
        with deps.reading(request) as connection:
            if not session_is_open(connection, view.nonce):
                return None
    return view


@contextlib.contextmanager
def writing(request: Request):
    """A transaction on gigsterpg's PostgreSQL, for the sessions; a failure raises a GigsterPgError."""
    state = request.app.state
    with pg_errors(state.settings.pg_url), state.pg.engine.begin() as connection:
        yield connection


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
    cookie = signer(request).new_session()
    await run_in_threadpool(start_session, request, signer(request).session_nonce(cookie))
    answer = RedirectResponse("/", status_code=303)
    answer.set_cookie(COOKIE, cookie, max_age=MAX_AGE_S, path="/", httponly=True,
                      samesite="strict", secure=request.url.scheme == "https")
    return answer


def start_session(request: Request, nonce: str) -> None:
    with writing(request) as connection:
        open_session(connection, nonce, signer(request).max_age_s)


def end_session(request: Request, nonce: str) -> None:
    with writing(request) as connection:
        close_session(connection, nonce)


@router.post("/logout")
async def logout(request: Request):
    view = await run_in_threadpool(viewer_of, request)
    fields = page.form_fields(await request.body())
    if view is not None and view.by == "cookie":
        if not signer(request).csrf_ok(view.nonce, fields.get("csrf")):
            return html("login.html", 403, problem="The form was stale: sign out again.")
        await run_in_threadpool(end_session, request, view.nonce)  # the cookie, even if kept, is refused now
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
    """False when the browser says the form came from another origin: scheme, host or port differ."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    try:
        parts = urlsplit(origin)
    except ValueError:  # "http://[::1": not an origin a browser sends
        return False
    return parts.scheme == request.url.scheme and parts.netloc == request.headers.get("host")


def forged(request: Request, view, fields: dict) -> bool:
    """A form of a signed-in page that did not come from this page (origin or CSRF token); a bearer is trusted."""
    return view.by != "bearer" and (not same_origin(request)
                                    or not signer(request).csrf_ok(view.nonce, fields.get("csrf")))


async def _refused(request: Request, view, what: str):
    return await run_in_threadpool(status_page, request, view, f"{what}: the form did not come from this page"
                                   " (reload it and try again).", True, 403)


async def _failed(request: Request, view, what: str, err: ApiError):
    why = "; ".join(part for part in (err.why, err.todo) if part)
    return await run_in_threadpool(status_page, request, view, f"{what}: {err.message}" + (f" ({why})" if why else ""),
                                   True, err.status)


@router.post("/page/jobs/{kind}/{job_id}/restart")
async def restart(request: Request, kind: str, job_id: uuid.UUID):
    view = await run_in_threadpool(viewer_of, request)
    if view is None:
        return login_form("Sign in to restart a job.", 401)
    fields = page.form_fields(await request.body())
    if forged(request, view, fields):
        return await _refused(request, view, "The restart was refused")
    try:
        started = await run_in_threadpool(start_again, request, kind, job_id, fields.get("password", ""))
    except ApiError as err:
        return await _failed(request, view, "Not restarted", err)
    return RedirectResponse(f"/?restarted={started['id']}#jobs", status_code=303)


@router.post("/page/runs/{pipeline}")
async def start_run(request: Request, pipeline: str):
    """A pipeline's form on the page: POST /runs with its fields (the same checks, the same record)."""
    view = viewer_of(request)
    if view is None:
        return login_form("Sign in to start a run.", 401)
    fields = page.form_fields(await request.body())
    if forged(request, view, fields):
        return await _refused(request, view, "The run was refused")
    try:
        started = await run_in_threadpool(runs.start, request, pipeline, page.run_params(pipeline, fields))
    except ApiError as err:
        return await _failed(request, view, "Not started", err)
    return RedirectResponse(f"/?started={started['id']}#pipelines", status_code=303)


def start_again(request: Request, kind: str, job_id: uuid.UUID, password: str) -> dict:
    """The restart of the API's own route for ``kind`` (the same checks, the same new job)."""
    state = request.app.state
    if kind == SYNC:
        return syncs.restart_sync(request, state.jobs, state.settings, state.mongo, job_id)
    if kind == EXPORT:
        return exports.restart_export(request, state.jobs, state.settings, state.mongo, state.source_timeout_s,
                                      job_id, body=models.RestartExport(password=password))
    raise ApiError(404, "job_not_found", f"no job kind {shown(kind)} restarts here", "", "restart it through the API")
