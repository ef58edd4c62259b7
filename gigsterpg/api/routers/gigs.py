"""The replicated gigs: a page at a time, by state and by poster."""
from typing import Optional

from fastapi import APIRouter, Query, Request

from gigsterpg.api import deps, models
from gigsterpg.lib.pg.db import read

router = APIRouter()


@router.get("/gigs", response_model=models.GigPage, summary="Gigs, by id, a page at a time")
def get_gigs(request: Request, limit: int = deps.PageSize, after: Optional[int] = deps.After,
             state: Optional[models.GigState] = Query(None, description="only gigs in this state"),
             poster: Optional[str] = Query(None, pattern=models.NO_NUL,
                                           description="only gigs of the user with this _id")):
    with deps.reading(request) as connection:
        return deps.page(request, read.gigs_page(connection, after or 0, limit, state, poster))
