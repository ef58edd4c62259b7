"""Every pipeline as a job: ``GET /pipelines``, ``POST /runs``, ``GET /runs``, ``GET /runs/{id}``, restart.

The pipelines and their parameters come from the registry (``gigsterpg.pipelines``); the runs from the one
record (``pipeline_runs``), whichever started them, the CLI or this API.
"""
from datetime import datetime
from typing import Any, Dict, List, Literal, Optional

from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import BaseModel, Field

from gigsterpg import pipelines
from gigsterpg.api import deps
from gigsterpg.api.work import ApiError
from gigsterpg.exc import ConfigError
from gigsterpg.lib.pg.db.states import ACTIVE_JOB_STATES, JOB_STATES, QUEUED
from gigsterpg.pipelines import params, runs
from gigsterpg.text import shown

router = APIRouter()

RunId = Path(ge=1, le=2 ** 63 - 1, description="the run's id, as POST /runs answered it")


class PipelineInfo(BaseModel):
    """A pipeline of the registry: its name, what it does, and the JSON schema of its parameters."""

    name: str
    help: str
    command: str = Field(description="the CLI command that runs it")
    params: Dict[str, Any] = Field(description="JSON schema of the parameters POST /runs takes (the CLI's names)")


class PipelineList(BaseModel):
    items: List[PipelineInfo]


class RunRequest(BaseModel):
    """A run to start: the pipeline's name and its parameters (see GET /pipelines)."""

    pipeline: str = Field(min_length=1, max_length=200, description="a name GET /pipelines lists")
    params: Dict[str, Any] = Field(default_factory=dict, description="the parameters, by the CLI's names")


class RunStarted(BaseModel):
    id: int
    state: Literal[JOB_STATES]
    url: str = Field(description="where the run's record is read: GET /runs/{id}")


class Run(BaseModel):
    """One run's record, from the CLI or the API: `read` things, `outcomes` summing to it, `details`."""

    id: int
    pipeline: str
    params: Dict[str, Any] = Field(description="the parameters, connection strings masked")
    source: Literal["cli", "api"]
    state: Literal[JOB_STATES]
    created_at: datetime
    started_at: Optional[datetime]
    ended_at: Optional[datetime]
    seconds: Optional[float]
    error: Optional[str] = Field(description="one line, connection strings masked")
    read: Optional[int]
    outcomes: Dict[str, int] = Field(description="what became of what was read; the values sum to `read`")
    details: Dict[str, Any]
    restart_of: Optional[int]
    url: str


class RunList(BaseModel):
    items: List[Run]
    next: Optional[str] = Field(description="the next (older) page, null on the last")


def _runs(request: Request):
    return request.app.state.runs


def _url(request: Request, run_id: int) -> str:
    return str(request.url_for("get_run", run_id=run_id))


def _shown(request: Request, run: dict) -> dict:
    return {**run, "url": _url(request, run["id"])}


def start(request: Request, name: str, given: Dict[str, Any], restart_of: Optional[int] = None) -> dict:
    """Start a run of pipeline ``name`` (POST /runs, a restart, the page's form): its id, state and URL."""
    pipeline = pipelines.get(name)
    if pipeline is None:
        raise ApiError(404, "pipeline_not_found", f"no pipeline {shown(name)}",
                       f"the pipelines are {', '.join(pipelines.names())}", "GET /pipelines lists them")
    try:
        run_id = _runs(request).start(pipeline, given, restart_of)
    except ConfigError as err:  # bad parameters, a file outside GIGSTERPG_FILES_ROOT
        raise ApiError(400, "bad_params", err.what, err.why, err.todo) from err
    return {"id": run_id, "state": QUEUED, "url": _url(request, run_id)}


@router.get("/pipelines", response_model=PipelineList, summary="The pipelines and the parameters each takes")
def list_pipelines():
    return {"items": [{"name": each.name, "help": each.help, "command": each.cli_command,
                       "params": params.json_schema(each)} for each in pipelines.PIPELINES.values()]}


@router.post("/runs", response_model=RunStarted, status_code=202, summary="Start a run of a pipeline",
             responses=deps.problems(404))
def post_run(request: Request, body: RunRequest = Body()):
    """Records the run (queued) and answers at once while it runs in the background; its record at `url`.
    Files named in the parameters are read only inside the folder GIGSTERPG_FILES_ROOT names (any other
    path is a 400 naming the setting); the databases are the server's own."""
    return start(request, body.pipeline, body.params)


@router.get("/runs", response_model=RunList, summary="The runs of every pipeline, newest first (CLI and API)")
def list_runs(request: Request, pipeline: Optional[str] = Query(None, max_length=200, description="only its runs"),
              state: Optional[Literal[JOB_STATES]] = Query(None, description="only the runs in this state"),
              limit: int = Query(20, ge=1, le=500, description="runs per page"),
              before: Optional[int] = Query(None, ge=1, le=2 ** 63 - 1,
                                            description="the id of the last run of the previous page")):
    with deps.reading(request) as connection:
        found, more = runs.page(connection, pipeline, state, limit, before)
    items = [_shown(request, run) for run in found]
    following = str(request.url.include_query_params(before=items[-1]["id"])) if more and items else None
    return {"items": items, "next": following}


@router.get("/runs/{run_id}", response_model=Run, name="get_run", summary="A run: state, counts, error",
            responses=deps.problems(404))
def get_run(request: Request, run_id: int = RunId):
    with deps.reading(request) as connection:
        run = runs.get(connection, run_id)
    if run is None:
        raise ApiError(404, "run_not_found", f"no run {run_id}", "", "GET /runs lists the runs")
    return _shown(request, run)


@router.post("/runs/{run_id}/restart", response_model=RunStarted, status_code=202,
             summary="Run an ended run again, with its parameters", responses=deps.problems(404, 409))
def restart_run(request: Request, run_id: int = RunId):
    """A new run of the same pipeline with the parameters the API takes of the old one's (a CLI run's
    connection URLs are not kept: the new run uses the server's databases)."""
    run = get_run(request, run_id)
    if run["state"] in ACTIVE_JOB_STATES:
        raise ApiError(409, "run_active", f"run {run_id} is {run['state']}", "only an ended run restarts",
                       f"wait for it: GET {run['url']}")
    pipeline = pipelines.get(run["pipeline"])
    taken = {param.name for param in pipeline.params if param.http} if pipeline else set()
    given = {key: value for key, value in (run["params"] or {}).items() if key in taken and value is not None}
    return start(request, run["pipeline"], given, restart_of=run_id)
