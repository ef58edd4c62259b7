"""The replicated users: a page at a time, or one with its skills and first gigs."""
from typing import Optional

from fastapi import APIRouter, Path, Request

from gigsterpg.api import deps, models
from gigsterpg.api.work import ApiError
from gigsterpg.lib.pg.db import read
from gigsterpg.text import shown

router = APIRouter()


@router.get("/users", response_model=models.UserPage, summary="Users, by id, a page at a time")
def get_users(request: Request, limit: int = deps.PageSize, after: Optional[int] = deps.After):
    with deps.reading(request) as connection:
        return deps.page(request, read.users_page(connection, after or 0, limit))


@router.get("/users/{mongo_id:path}", response_model=models.UserDetail, summary="One user, with skills and gigs",
            responses=deps.problems(404))
def get_user(request: Request,
             mongo_id: str = Path(pattern=models.NO_NUL, description="the user's MongoDB _id, as text")):
    with deps.reading(request) as connection:
        user = read.user_detail(connection, mongo_id)
    if user is None:
        raise ApiError(404, "user_not_found", f"no user with _id {shown(mongo_id)}", "",
                       "GET /users lists them; the _id is the MongoDB one, as text")
    return {**user, "gigs_url": str(request.url_for("get_gigs").include_query_params(poster=mongo_id))}
