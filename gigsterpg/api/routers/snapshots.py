"""The daily snapshots' ledger over HTTP: ``GET /snapshots``, days x steps as ``pipeline status`` shows them."""
from datetime import date, datetime
from typing import List, Optional

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from gigsterpg.api import deps
from gigsterpg.connections import pg_errors
from gigsterpg.lib.files.ledger import snapshot_status

router = APIRouter()


class SnapshotStepStatus(BaseModel):
    """One step of one day: its state, counts, and for a failure the error and the command to rerun."""

    day: date
    step: str = Field(description="extract-postgres, extract-csv, load or query")
    state: str = Field(description="running, succeeded, failed, or interrupted (its process died)")
    rows: Optional[int]
    bad_lines: Optional[int] = Field(description="CSV lines that did not fit, left out and recorded")
    tables: int = Field(description="the tables the step wrote or loaded")
    started_at: Optional[datetime]
    finished_at: Optional[datetime]
    error: Optional[str]
    rerun: Optional[str] = Field(description="the command that picks up from there")
    path: Optional[str]


@router.get("/snapshots", response_model=List[SnapshotStepStatus],
            summary="The daily snapshots: the steps of the last days, newest first")
def get_snapshots(settings: deps.SettingsDep, pg: deps.PgDep,
                  days: int = Query(14, ge=1, le=3660, description="how many recent days")):
    with pg_errors(settings.pg_url):
        return [row.__dict__ for row in snapshot_status(pg.engine, days)]
