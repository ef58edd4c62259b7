"""Whether gigsterpg's databases answer: open, without the token (for load balancers and monitors)."""
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from gigsterpg.api import deps, models
from gigsterpg.connections import short_reason

router = APIRouter()


@router.get("/health", response_model=models.Health, summary="Whether each database is reachable (no token)",
            responses={503: {"model": models.Health}})
def health(pg: deps.PgDep, mongo: deps.MongoDep):
    checks = {"postgres": _check(lambda: _select_one(pg.engine)),
              "mongo": _check(lambda: mongo.admin.command("ping"))}
    ok = all(check["reachable"] for check in checks.values())
    return JSONResponse(models.Health(status="ok" if ok else "degraded", **checks).model_dump(),
                        status_code=200 if ok else 503)


def _select_one(engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _check(probe) -> dict:
    try:
        probe()
        return {"reachable": True, "error": None}
    except Exception as err:  # whatever the driver raises, the answer is "not reachable, because..."
        return {"reachable": False, "error": short_reason(err)}
