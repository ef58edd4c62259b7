"""``snapshots``: the daily ``pipeline run``, the four steps of each day (extract PostgreSQL and the CSV, load,
query) over ``gigsterpg.lib.files.snapshot``.

Its detail stays in ``snapshot_ledger`` (a row per day and step); the run record counts steps: ``read`` is the
steps the run had to make (days x 4), each succeeded, skipped (already done), failed, or not run (after a
failure of its day).
"""
import datetime
import types
from typing import Dict, List

from gigsterpg.exc import ConfigError
from gigsterpg.lib.files import snapshot
from gigsterpg.lib.files.csvsource import KINDS
from gigsterpg.lib.pg.db.snapshot import SNAPSHOT_STEPS
from gigsterpg.lib.pg.db.states import FAILED, SKIPPED, SUCCEEDED
from gigsterpg.pipelines.contract import DAY, FLAG, INTEGER, PATH, Context, Param, Pipeline, Report
from gigsterpg.text import plural, shown

PARAMS = (
    Param("day", DAY, "the day of the data, YYYY-MM-DD (names the partitions)"),
    Param("from", DAY, "run: the first day of a backfill", dest="first"),
    Param("to", DAY, "run: the last day of a backfill", dest="last"),
    Param("source_pg", help="the source PostgreSQL URL (default: GIGSTERPG_SNAPSHOT_SOURCE_PG)", http=False),
    Param("csv", PATH, "the CSV file of order details (default: GIGSTERPG_SNAPSHOT_CSV)"),
    Param("root", help="the data folder (default: GIGSTERPG_SNAPSHOT_ROOT, else ./data)", http=False),
    Param("tables", help="comma-separated globs of schema.table to extract, !glob to leave out"
                         " (default: every table; GIGSTERPG_SNAPSHOT_TABLES)"),
    Param("csv_types", help=f"declared kinds of CSV columns ({', '.join(KINDS)}); the others are inferred",
          metavar="COL=KIND,..."),
    Param("workers", INTEGER, "extract and load: N tables at once, each in its own session (default: one per"
                              " core, at most 4; 1: one after the other)", minimum=1, metavar="N"),
    Param("force", FLAG, "extract again a day that already succeeded", default=False),
    Param("max_days", INTEGER, "run: the longest backfill started without asking (default: %(default)s days)",
          default=snapshot.MAX_DAYS, minimum=1, parse=int),
)


def run(context: Context, params: dict):
    import dataclasses

    pipeline = snapshot.Pipeline.from_settings(context.settings)
    if params["csv_types"]:
        pipeline = dataclasses.replace(pipeline, csv_types=declared_kinds(params["csv_types"]))
    if params["workers"]:
        pipeline = dataclasses.replace(pipeline, workers=params["workers"])
    days = _days(params)
    done = snapshot.run_days(pipeline, days, force=params["force"],
                             on_step=lambda step: context.say(format_step(step)))
    done.planned = len(days) * len(SNAPSHOT_STEPS)
    return done


def _days(params: dict) -> List[datetime.date]:
    return days_asked(types.SimpleNamespace(day=_date(params["day"]), first=_date(params["from"]),
                                            last=_date(params["to"]), max_days=params["max_days"]))


def check(settings, params: dict) -> None:
    """The days asked (one, or a range not longer than max_days) and the CSV's declared kinds."""
    _days(params)
    if params["csv_types"]:
        declared_kinds(params["csv_types"])


def _date(value):
    return datetime.date.fromisoformat(value) if isinstance(value, str) else value


def report(native) -> Report:
    planned = native.planned or len(native.steps) + len(native.failures)
    succeeded = sum(1 for step in native.steps if step.state != SKIPPED)
    skipped = len(native.steps) - succeeded
    failed = len(native.failures)
    outcomes = {SUCCEEDED: succeeded, SKIPPED: skipped, FAILED: failed,
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
    return "\n".join(format_step(step) for step in native.steps)


def declared_kinds(text: str) -> Dict[str, str]:
    declared = {}
    for item in text.split(","):
        name, sep, kind = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"bad --csv-types item {shown(item)}", "each item is COL=KIND",
                              "e.g. --csv-types order_id=integer,discount=numeric")
        if kind.strip() not in KINDS:
            raise ConfigError(f"bad --csv-types item {shown(item)}", f"the kinds are {', '.join(KINDS)}",
                              "e.g. --csv-types order_id=integer,discount=numeric")
        declared[name.strip()] = kind.strip()
    return declared


def days_asked(args) -> List[datetime.date]:
    if args.day and not (args.first or args.last):
        return [args.day]
    if args.first and args.last and not args.day:
        return snapshot.days_between(args.first, args.last, limit=getattr(args, "max_days", snapshot.MAX_DAYS))
    raise ConfigError("pipeline run needs one day or a range", "give either --day, or both --from and --to",
                      "e.g. --day 2021-01-01, or --from 2021-01-01 --to 2021-01-03")


def _size(count: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1000
    return ""  # pragma: no cover


def format_step(report: snapshot.StepReport) -> str:
    """One line per step: what it did, where, how long."""
    tables, rows, bad = plural(report.tables, "table"), plural(report.rows, "row"), plural(report.bad_lines, "bad line")
    what = {"extract-postgres": f"{tables}, {rows}, {_size(report.bytes)}",
            "extract-csv": f"{rows}, {bad}, {_size(report.bytes)}",
            "load": f"{tables}, {rows}, {bad} set aside",
            "query": rows}[report.step]
    where = f" -> {report.path}" if report.path else ""
    if report.columns:
        where += f" [{', '.join(report.columns)}]"
    if report.state == SKIPPED:
        return f"{report.step} {report.day}: already done ({what}){where}; --force extracts it again"
    return f"{report.step} {report.day}: {report.state}, {what}{where} ({report.seconds:.1f} s)"


PIPELINE = Pipeline("snapshots", "daily snapshots of a PostgreSQL database and a CSV file, loaded and queried",
                    PARAMS, run, report, text, command="pipeline", step=("action", "run"),
                    settings={"source_pg": "snapshot_source_pg", "csv": "snapshot_csv", "root": "snapshot_root",
                              "tables": "snapshot_tables"}, check=check)
