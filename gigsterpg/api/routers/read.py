"""The datasets of ``load-csv`` and ``transform``, read over HTTP: the list, a first chunk, pages by key.

Behind the same bearer token as every other route, unless the deployment
makes reading public (``GIGSTERPG_READ_PUBLIC``, as docker compose's ``api``
does for the brief's ``curl http://127.0.0.1:5000/read/first-chunk``). The
rows are JSON objects with typed values, straight from PostgreSQL (see
``gigsterpg.lib.datasets.read``); a page is all old rows or all new ones
while a dataset is replaced.
"""
import json
from datetime import datetime
from typing import Any, Dict, List, Optional

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from gigsterpg.api import deps, guards
from gigsterpg.api.work import ApiError
from gigsterpg.lib.datasets import read

bearer = HTTPBearer(auto_error=False, description="GIGSTERPG_API_TOKEN")


def read_access(request: Request, credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
    """The token check of the other routes (skipped when reading is public), and no unknown query parameter."""
    if not request.app.state.settings.read_public:
        guards.authorized(request, credentials)
    guards.known_query(request)


router = APIRouter(dependencies=[Depends(read_access)], responses=deps.problems(400, 401, 503))

DatasetName = Path(pattern=r"^[^\x00/]+$", description="the dataset's name, as GET /read lists it")
Limit = Query(10, ge=1, le=1000, description="rows in the answer")
PageLimit = Query(100, ge=1, le=1000, description="rows per page")
After = Query(None, min_length=1, max_length=1000,
              description="the key of the last row of the previous page (as its `next` link gives it)")
Row = Dict[str, Any]


class DatasetColumn(BaseModel):
    name: str
    kind: str = Field(description="integer, numeric, boolean, date, timestamp or text")
    type: str = Field(description="the PostgreSQL type")


class DatasetInfo(BaseModel):
    """One dataset: where it came from, its key and columns, and when its rows were last replaced."""

    name: str
    kind: str = Field(description="csv (load-csv) or transform")
    key: str = Field(description="the column rows are ordered and paged by (_row: the lines' order in the file)")
    columns: List[DatasetColumn]
    rows: int
    bad_lines: int = Field(description="CSV lines that did not fit (recorded in csv_rejects)")
    replaced_at: datetime
    source: str
    url: str = Field(description="its first page")


class DatasetList(BaseModel):
    items: List[DatasetInfo]


class DatasetPage(BaseModel):
    """A page of rows in key order, and the URL of the next (null on the last)."""

    dataset: str
    items: List[Row]
    next: Optional[str]


def _json(text: str) -> Response:
    return Response(text, media_type="application/json")


def _page(request: Request, name: str, limit: int, after: Optional[str]) -> read.Page:
    try:
        with deps.reading(request) as connection:
            return read.page(connection.connection.driver_connection, name, limit, after)
    except (read.UnknownDataset, read.MissingTable) as err:
        raise ApiError(404, "dataset_not_found", err.what, err.why, err.todo) from err
    except read.BadAfter as err:
        raise ApiError(400, "bad_request", err.what, err.why, err.todo) from err


@router.get("/read", response_model=DatasetList, summary="The datasets (load-csv and transform made them)")
def list_datasets(request: Request):
    with deps.reading(request) as connection:
        found = read.datasets(connection.connection.driver_connection)
    return {"items": [{**dataset, "url": str(request.url_for("read_dataset", dataset=dataset["name"]))}
                      for dataset in found]}


@router.get("/read/first-chunk", response_model=List[Row], responses=deps.problems(404),
            summary="The first rows of the default dataset (GIGSTERPG_READ_DEFAULT), in key order")
def read_default_first_chunk(request: Request, settings: deps.SettingsDep, limit: int = Limit):
    if not settings.read_default:
        raise ApiError(404, "dataset_not_found", "no default dataset", "GIGSTERPG_READ_DEFAULT is not set",
                       "set it to a dataset's name, or GET /read/{dataset}/first-chunk")
    return _json(_page(request, settings.read_default, limit, None).items_json())


@router.get("/read/{dataset}/first-chunk", response_model=List[Row], responses=deps.problems(404),
            summary="The first rows of a dataset, in key order")
def read_first_chunk(request: Request, dataset: str = DatasetName, limit: int = Limit):
    return _json(_page(request, dataset, limit, None).items_json())


@router.get("/read/{dataset}", response_model=DatasetPage, responses=deps.problems(404),
            summary="A dataset's rows in key order, a page at a time (follow `next`)")
def read_dataset(request: Request, dataset: str = DatasetName, limit: int = PageLimit, after: Optional[str] = After):
    found = _page(request, dataset, limit, after)
    following = None
    if found.next_after is not None:
        following = str(request.url_for("read_dataset", dataset=dataset).include_query_params(
            limit=limit, after=found.next_after))
    return _json('{"dataset":' + json.dumps(found.dataset) + ',"items":' + found.items_json() + ',"next":'
                 + json.dumps(following) + "}")
