"""The API's routes, one router per resource; ``create_app`` includes the routers listed here, in order.

To add a resource (a new pipeline's jobs, a read API):

1. Write ``gigsterpg/api/routers/<resource>.py`` with ``router = APIRouter()`` and its routes. A route
   takes what it needs from the application's state as dependencies (``jobs: deps.JobsDep``,
   ``settings: deps.SettingsDep``, ``mongo: deps.MongoDep``, ``pg: deps.PgDep``; see ``gigsterpg/api/deps.py``)
   and reads PostgreSQL through ``with deps.reading(request) as connection:`` and a query function of the
   library (``gigsterpg/lib/pg/db/read.py``), never SQL of its own. A refusal raises
   ``gigsterpg.api.work.ApiError(status, code, ...)``; its statuses are declared with
   ``responses=deps.problems(404, ...)``; bodies are pydantic models in ``gigsterpg/api/models.py``.
   A job kind starts its work with ``gigsterpg.api.work.start`` and gets ``GET /<kind>s`` and
   ``GET /<kind>s/{id}`` from ``job_routes.add_job_reads(router, kind, what)`` (the kind goes into
   ``gigsterpg/lib/pg/db/states.py``'s ``JOB_KINDS``, with a migration for the CHECK constraint).
2. Add one line: the router to ``ROUTERS`` below (wants the bearer token, takes no unknown query parameter,
   may answer 400/401/503), or to ``OPEN_ROUTERS`` (no token: for probes and pages a browser opens).
3. Test it in ``tests/test_api_<resource>.py`` against the real servers; ``tests/test_api_contract.py`` then
   checks its OpenAPI contract with every other route's.
"""
from gigsterpg.api.routers import exports, gigs, health, read, runs, snapshots, status_page, syncs, users

# Routes anyone may call, without the token.
# read.router checks the token itself: reading may be made public (GIGSTERPG_READ_PUBLIC).
OPEN_ROUTERS = (health.router, status_page.router, read.router)
# Routes behind the bearer token; the order is the order of the OpenAPI document.
ROUTERS = (runs.router, exports.router, syncs.router, users.router, gigs.router, snapshots.router)
