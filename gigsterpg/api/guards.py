"""The guards of the API's routes: the bearer token, and no unknown or repeated query parameter.

Apart from ``app.py`` so that a router that checks them itself (``routers/read.py``: reading may be public)
imports them without importing the application that includes it.
"""
import hmac
from typing import Optional

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gigsterpg.api.work import ApiError
from gigsterpg.text import shown

bearer = HTTPBearer(auto_error=False, description="GIGSTERPG_API_TOKEN")


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
        raise ApiError(400, "bad_request", f"unknown query parameter {', '.join(map(shown, unknown))}",
                       f"this route takes {', '.join(sorted(taken)) or 'none'}", "see /docs")
    # Each takes one value: of ?after=1&after=9 FastAPI would keep the last without a word.
    repeated = sorted(name for name in taken if len(request.query_params.getlist(name)) > 1)
    if repeated:
        raise ApiError(400, "bad_request", f"query parameter {', '.join(map(shown, repeated))} given more than once",
                       "each takes one value", "see /docs")
