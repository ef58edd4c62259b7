"""The command line of the daily snapshots: ``pipeline STEP --day ...`` and ``generate-northwind``.

Only parses arguments, calls the verbs of ``gigsterpg.lib.files.snapshot``
and prints their reports; ``gigsterpg.cli`` adds these subcommands.
"""
import dataclasses
import datetime
import sys
from pathlib import Path
from typing import Dict, List

from gigsterpg import pipelines
from gigsterpg.config import Settings
from gigsterpg.connections import pg_errors
from gigsterpg.exc import ConfigError
from gigsterpg.lib.files import snapshot
from gigsterpg.lib.files.ledger import StatusRow, snapshot_status
from gigsterpg.lib.pg.db.snapshot import SNAPSHOT_STEPS
from gigsterpg.lib.pg.db.states import FAILED, INTERRUPTED, RUNNING, SUCCEEDED
from gigsterpg.pipelines.execute import note
from gigsterpg.pipelines.params import add_arguments
from gigsterpg.pipelines.snapshots import declared_kinds, days_asked, format_step
from gigsterpg.text import plural

ACTIONS = SNAPSHOT_STEPS + ("run", "status", "demo")
COMMANDS = ("pipeline", "generate-northwind")


def add_parsers(sub, common) -> None:
    """Add ``pipeline`` and ``generate-northwind`` to the CLI's subparsers."""
    pipeline = sub.add_parser("pipeline", parents=[common],
                              help="daily snapshots of a PostgreSQL database and a CSV file, then loaded and queried")
    pipeline.add_argument("action", choices=ACTIONS, metavar="{" + ",".join(ACTIONS) + "}",
                          help="a step (each runs alone), run (the four in order), status, or demo")
    add_arguments(pipeline, pipelines.get("snapshots"))  # the parameters gigsterpg/pipelines/snapshots/ declares
    # The arguments of the actions that are no run of the pipeline (status, demo).
    pipeline.add_argument("--days", type=int, default=14, help="status: how many recent days (default: 14)")
    pipeline.add_argument("--folder", type=Path, default=Path(".gigsterpg-pipeline-demo"),
                          help="demo: where the embedded server and the data go")

    generate = sub.add_parser("generate-northwind", parents=[common],
                              help="a Northwind-like source database and its order-details CSV (deterministic)")
    generate.add_argument("--pg", dest="source_pg", help="the database to (re)create the tables in"
                                                         " (default: GIGSTERPG_SNAPSHOT_SOURCE_PG)")
    generate.add_argument("--csv", help="the CSV file to write (default: GIGSTERPG_SNAPSHOT_CSV)")
    generate.add_argument("--orders", type=int, default=830, help="how many orders (default: 830, as Northwind)")
    generate.add_argument("--seed", type=int, default=7)


def overrides(args) -> Dict[str, object]:
    """The settings the flags of these commands give."""
    return {"snapshot_source_pg": getattr(args, "source_pg", None), "snapshot_csv": getattr(args, "csv", None),
            "snapshot_root": getattr(args, "root", None), "snapshot_tables": getattr(args, "tables", None)}


def generate_northwind(settings: Settings, args) -> int:
    from gigsterpg.fixtures.northwind import generate_northwind as generate

    if not settings.snapshot_source_pg or not settings.snapshot_csv:
        raise ConfigError("generate-northwind needs a database and a CSV path", "--pg or --csv is missing",
                          "pass --pg URL --csv PATH (or set GIGSTERPG_SNAPSHOT_SOURCE_PG and _CSV)")
    with pg_errors(settings.snapshot_source_pg, "GIGSTERPG_SNAPSHOT_SOURCE_PG"):
        report = generate(settings.snapshot_source_pg, Path(settings.snapshot_csv), args.orders, args.seed)
    print(f"Generated {len(report.tables)} tables ({sum(report.tables.values()):,} rows, {report.tables['orders']:,}"
          f" orders) and {report.details:,} order details in {report.csv_path}"
          f" ({report.orphan_details:,} of them name orders that do not exist).")
    return 0


def run(args, settings: Settings) -> int:
    """``pipeline`` or ``generate-northwind``, its flags over ``settings``: the exit code."""
    settings = dataclasses.replace(settings, **{key: value for key, value in overrides(args).items()
                                                if value is not None})
    if args.command == "generate-northwind":
        return generate_northwind(settings, args)
    return run_pipeline(settings, args)


def run_pipeline(settings: Settings, args) -> int:
    """``pipeline ACTION``: the exit code."""
    if args.action == "demo":
        from gigsterpg.fixtures.snapshots_demo import demo
        report = demo(args.folder)
        print(format_demo(report))
        if report.run.failures:  # one line on stderr, as every command's failure
            more = len(report.run.failures) - 1
            print(f"FAILED: {report.run.failures[0]}" + (f" (and {more} more)" if more else ""), file=sys.stderr)
        return 0 if report.run.ok else 1
    pipeline = snapshot.Pipeline.from_settings(settings)
    if getattr(args, "csv_types", None):
        pipeline = dataclasses.replace(pipeline, csv_types=declared_kinds(args.csv_types))
    if getattr(args, "workers", None):
        pipeline = dataclasses.replace(pipeline, workers=args.workers)
    if args.action == "status":
        with pg_errors(pipeline.target_url):
            print(format_status(snapshot_status(pipeline.target_url, days=args.days)))
        return 0
    if args.action == "run":
        days = days_asked(args)
        report = snapshot.run_days(pipeline, days, force=args.force,
                                   on_step=lambda step: print(format_step(step), flush=True))
        report.planned = len(days) * len(SNAPSHOT_STEPS)
        note(report)  # a failure: one FAILED line on stderr, by the run's record (gigsterpg/pipelines)
        return 0 if report.ok else 1
    if args.day is None:
        raise ConfigError(f"pipeline {args.action} needs a day", "--day is missing", "pass --day YYYY-MM-DD")
    verb = snapshot.STEPS[args.action]
    step = verb(pipeline, args.day, args.force) if args.action.startswith("extract") else verb(pipeline, args.day)
    print(format_step(step))
    return 0


def _cell(row: StatusRow) -> str:
    when = f" {row.finished_at:%m-%d %H:%M}" if row.finished_at else ""
    if row.state == SUCCEEDED:
        bad = f" ({row.bad_lines:,} bad)" if row.bad_lines else ""
        return f"ok {plural(row.rows or 0, 'row')}{bad}{when}"
    return {FAILED: "FAILED", INTERRUPTED: "INTERRUPTED", RUNNING: RUNNING}[row.state] + when


def format_status(rows: List[StatusRow]) -> str:
    """A table of days x steps, then for each failure its error and the command that picks up from there."""
    if not rows:
        return "No day has run yet: python -m gigsterpg.cli pipeline run --day YYYY-MM-DD"
    days: Dict[datetime.date, Dict[str, StatusRow]] = {}
    for row in rows:
        days.setdefault(row.day, {})[row.step] = row
    cells = {day: [_cell(steps[s]) if s in steps else "-" for s in SNAPSHOT_STEPS] for day, steps in days.items()}
    # Each column as wide as its widest cell (a "(N bad)" cell included), two spaces between.
    widths = [max([len(step)] + [len(row[i]) for row in cells.values()]) + 2 for i, step in enumerate(SNAPSHOT_STEPS)]
    lines = ["day         " + "".join(f"{step:<{width}}" for step, width in zip(SNAPSHOT_STEPS, widths)).rstrip()]
    for day, row in cells.items():
        lines.append(f"{day}  " + "".join(f"{cell:<{width}}" for cell, width in zip(row, widths)).rstrip())
    problems = [row for row in rows if row.state in (FAILED, INTERRUPTED)]
    if problems:
        lines.append("")
    for row in problems:
        reason = row.error or "the process died while it ran (killed, or the machine stopped)"
        lines.append(f"{row.day} {row.step} {row.state}: {reason}")
        lines.append(f"    rerun: {row.rerun}")
    return "\n".join(lines)


def format_demo(report) -> str:
    """The demo's steps, status and the first lines of a result."""
    lines = [format_step(step) for step in report.run.steps]
    lines += ["", format_status(report.status), "", f"The first lines of {report.result_path}:"]
    lines += report.result_head
    return "\n".join(lines)


def status_dicts(rows: List[StatusRow]) -> List[dict]:
    """Status rows as plain dicts (dates as ISO): what an API or a page can serialize."""
    return [{key: value.isoformat() if isinstance(value, (datetime.date, datetime.datetime)) else value
             for key, value in dataclasses.asdict(row).items()} for row in rows]
