"""Running a pipeline with its record: the one way the CLI and the API run every pipeline.

``settings_for`` applies the parameters that are settings (``Pipeline.settings``); ``recorded`` opens the
run's record (``runs.Run``), runs a body (the verb, or the command line's own code for the six pipelines
whose command is older than this registry, which hands its native report over with ``note``), and writes
how it ended with the ``Report``.
"""
import contextlib
import contextvars
import dataclasses
import logging
from typing import Any, Callable, Dict, Optional

import psycopg

from gigsterpg.config import Settings
from gigsterpg.connections import migrate, open_pg, pg_error, pg_errors
from gigsterpg.exc import ConfigError, SourceError
from gigsterpg.pipelines.contract import Context, Pipeline, Report
from gigsterpg.pipelines.runs import Run

logger = logging.getLogger(__name__)

_NATIVE: contextvars.ContextVar = contextvars.ContextVar("gigsterpg_pipeline_native", default=None)


def note(native) -> None:
    """The command line's code hands the pipeline's native report to the run being recorded (if any)."""
    holder = _NATIVE.get()
    if holder is not None:
        holder["native"] = native


def settings_for(pipeline: Pipeline, settings: Settings, params: Dict[str, Any]) -> Settings:
    """``settings`` with the parameters that override a setting (given ones only)."""
    changes = {field: params[name] for name, field in pipeline.settings.items() if params.get(name) is not None}
    return dataclasses.replace(settings, **changes) if changes else settings


def check(pipeline: Pipeline, settings: Settings, params: Dict[str, Any]) -> None:
    """The pipeline's checks that touch no server (``Pipeline.check``); any error a user's values cause comes out
    as a ConfigError (a file that is empty or not in its encoding is a SourceError in the verb)."""
    if pipeline.check is None:
        return
    try:
        pipeline.check(settings, params)
    except SourceError as err:
        raise ConfigError(err.what, err.why, err.todo) from err


def ensure_record(settings: Settings) -> str:
    """gigsterpg's PostgreSQL URL, migrated when it has no ``pipeline_runs`` yet (a run's first)."""
    url = settings.require_pg()
    with pg_errors(url), psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1),
                                         autocommit=True) as connection:
        present = connection.execute("SELECT to_regclass('pipeline_runs') IS NOT NULL").fetchone()[0]
    if not present:
        _migrate(settings)
    return url


def _migrate(settings: Settings) -> None:
    pg = open_pg(settings)
    try:
        migrate(pg)
    finally:
        pg.dispose()


def open_run(pipeline: Pipeline, settings: Settings, params: Dict[str, Any], source: str,
             restart_of: Optional[int] = None) -> Run:
    """Record a queued run in gigsterpg's PostgreSQL, migrating it first when it has no ``pipeline_runs``."""
    url = settings.require_pg()
    for attempt in range(2):
        try:
            return Run.open(url, pipeline, params, source, keep=settings.api_jobs_keep, restart_of=restart_of)
        except psycopg.errors.UndefinedTable as err:
            if attempt:
                raise pg_error(err, url) from err
            _migrate(settings)
        except psycopg.Error as err:
            raise pg_error(err, url) from err
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def recorded(pipeline: Pipeline, settings: Settings, params: Dict[str, Any], source: str,
             restart_of: Optional[int] = None, run: Optional[Run] = None):
    """Record the block's run: yields a holder whose ``native`` (set by the block, or by ``note``) becomes the
    record's Report; an error or an interrupt ends the record failed or interrupted and goes on."""
    if run is None:
        run = open_run(pipeline, settings, params, source, restart_of)
    holder: Dict[str, Any] = {"native": None, "id": run.id, "ok": True}
    token = _NATIVE.set(holder)
    try:
        run.running()
        yield holder
    except BaseException as err:
        run.failed(err)
        raise
    finally:
        _NATIVE.reset(token)
    report = pipeline.report(holder["native"]) if holder["native"] is not None else Report()
    if not holder["ok"] and report.ok:
        report = dataclasses.replace(report, ok=False, error=report.error or "the command ended with an error")
    run.succeeded(report)
    holder["report"] = report


def run_verb(pipeline: Pipeline, context: Context, params: Dict[str, Any], holder: dict):
    """The verb, its native report kept in ``holder``."""
    holder["native"] = pipeline.run(context, params)
    return holder["native"]


Body = Callable[[], int]
