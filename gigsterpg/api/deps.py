"""What routes take: the application's state (set once by ``create_app``) as FastAPI dependencies.

A route names what it needs in its signature, e.g. ``jobs: JobsDep``; nothing
is a module global, so two applications in one process (the tests do that)
each use their own databases. ``reading`` opens a connection to gigsterpg's
PostgreSQL whose failures become the error family's (answered 503 / 500).
"""
import contextlib
from typing import Annotated, Iterator

from fastapi import Depends, Query, Request
from pymongo import MongoClient
from sqlalchemy.engine import Connection

from gigsterpg.api import models
from gigsterpg.api.jobs import Jobs
from gigsterpg.config import Settings
from gigsterpg.connections import pg_errors
from gigsterpg.lib.pg.db import SqlAlchemy
from gigsterpg.lib.pg.db.read import Page


def settings(request: Request) -> Settings:
    return request.app.state.settings


def pg(request: Request) -> SqlAlchemy:
    return request.app.state.pg


def mongo(request: Request) -> MongoClient:
    return request.app.state.mongo


def jobs(request: Request) -> Jobs:
    return request.app.state.jobs


def source_timeout_s(request: Request) -> float:
    """How long to wait for an export's source PostgreSQL to answer."""
    return request.app.state.source_timeout_s


SettingsDep = Annotated[Settings, Depends(settings)]
PgDep = Annotated[SqlAlchemy, Depends(pg)]
MongoDep = Annotated[MongoClient, Depends(mongo)]
JobsDep = Annotated[Jobs, Depends(jobs)]
SourceTimeoutDep = Annotated[float, Depends(source_timeout_s)]


@contextlib.contextmanager
def reading(request: Request) -> Iterator[Connection]:
    """A connection to gigsterpg's PostgreSQL for the route's reads; a failure raises a GigsterPgError."""
    state = request.app.state
    with pg_errors(state.settings.pg_url), state.pg.engine.connect() as connection:
        yield connection


def problems(*statuses: int) -> dict:
    """The ``responses`` of a route that may answer ``statuses`` with a Problem body."""
    return {status: {"model": models.Problem} for status in statuses}


# The paging parameters of every list of replicated rows.
PageSize = Query(50, ge=1, le=1000, description="items per page")
After = Query(None, ge=0, le=2 ** 63 - 1, description="the `id` of the last item of the previous page")


def page(request: Request, found: Page) -> dict:
    """A page's body: its items and the URL of the next page (null on the last)."""
    more = found.more and found.last_id is not None
    return {"items": found.items,
            "next": str(request.url.include_query_params(after=found.last_id)) if more else None}
