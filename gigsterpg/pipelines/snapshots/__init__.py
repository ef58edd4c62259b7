"""``snapshots``: the daily ``pipeline run``, the four steps of each day (extract PostgreSQL and the CSV, load,
query) over ``gigsterpg.lib.files.snapshot``.

Its detail stays in ``snapshot_ledger`` (a row per day and step); the run record counts steps: ``read`` is the
steps the run had to make (days x 4), each succeeded, skipped (already done), failed, or not run (after a
failure of its day).
"""
import datetime
import types

from gigsterpg.lib.files import snapshot
from gigsterpg.lib.pg.db.snapshot import SNAPSHOT_STEPS
from gigsterpg.pipelines.contract import DAY, FLAG, INTEGER, PATH, Context, Param, Pipeline, Report

PARAMS = (
    Param("day", DAY, "the day of the data, YYYY-MM-DD (names the partitions)"),
    Param("from", DAY, "the first day of a backfill", dest="first"),
    Param("to", DAY, "the last day of a backfill", dest="last"),
    Param("source_pg", help="the source PostgreSQL URL (default: GIGSTERPG_SNAPSHOT_SOURCE_PG)", http=False),
    Param("csv", PATH, "the CSV file of order details (default: GIGSTERPG_SNAPSHOT_CSV)"),
    Param("root", help="the data folder (default: GIGSTERPG_SNAPSHOT_ROOT, else ./data)", http=False),
    Param("tables", help="comma-separated globs of schema.table to extract, !glob to leave out"),
    Param("csv_types", help="declared kinds of CSV columns, COL=KIND,..."),
    Param("force", FLAG, "extract again a day that already succeeded", default=False),
    Param("max_days", INTEGER, "the longest backfill started without asking", default=snapshot.MAX_DAYS,
          minimum=1),
)


def run(context: Context, params: dict):
    import dataclasses

    from gigsterpg.pipelines.snapshots.cli import _days, _declared, format_step

    pipeline = snapshot.Pipeline.from_settings(context.settings)
    if params["csv_types"]:
        pipeline = dataclasses.replace(pipeline, csv_types=_declared(params["csv_types"]))
    days = _days(types.SimpleNamespace(day=_date(params["day"]), first=_date(params["from"]),
                                       last=_date(params["to"]), max_days=params["max_days"]))
    done = snapshot.run_days(pipeline, days, force=params["force"],
                             on_step=lambda step: context.say(format_step(step)))
    done.planned = len(days) * len(SNAPSHOT_STEPS)
    return done


def _date(value):
    return datetime.date.fromisoformat(value) if isinstance(value, str) else value


def report(native) -> Report:
    planned = getattr(native, "planned", None) or len(native.steps) + len(native.failures)
    succeeded = sum(1 for step in native.steps if step.state != "skipped")
    skipped = len(native.steps) - succeeded
    failed = len(native.failures)
    outcomes = {"succeeded": succeeded, "skipped": skipped, "failed": failed,
                "not_run": max(0, planned - succeeded - skipped - failed)}
    details = {"rows": {f"{step.day} {step.step}": step.rows for step in native.steps},
               "bad_lines": sum(step.bad_lines for step in native.steps),
               "failures": [str(failure) for failure in native.failures]}
    error = None
    if native.failures:
        error = str(native.failures[0]).splitlines()[0]
        if len(native.failures) > 1:
            error += f" (and {len(native.failures) - 1} more failed day(s): pipeline status lists them)"
    return Report(planned, outcomes, details, ok=native.ok, error=error)


def text(native) -> str:
    from gigsterpg.pipelines.snapshots.cli import format_step
    return "\n".join(format_step(step) for step in native.steps)


PIPELINE = Pipeline("snapshots", "daily snapshots of a PostgreSQL database and a CSV file, loaded and queried",
                    PARAMS, run, report, text, command="pipeline", step=("action", "run"),
                    settings={"source_pg": "snapshot_source_pg", "csv": "snapshot_csv", "root": "snapshot_root",
                              "tables": "snapshot_tables"})
