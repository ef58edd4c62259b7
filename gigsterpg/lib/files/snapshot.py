"""The daily snapshots' steps: extract-postgres, extract-csv, load, query; ``run`` chains them per day.

Each step is a library verb that returns a ``StepReport`` and never prints;
none runs another (``run_days`` is the only chain). Every step records its
state in the ledger (``gigsterpg.lib.files.ledger``) in the target database;
a failure is recorded with its one-line error and the command that picks up
from there, then raised as a ``StepFailed``.
"""
import dataclasses
import datetime
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import psycopg

from gigsterpg.config import Settings, check_pg_conninfo, mask_url
from gigsterpg.connections import pg_errors
from gigsterpg.exc import ConfigError, GigsterPgError, TerminalError
from gigsterpg.lib.files import extract, load, result
from gigsterpg.lib.files.ledger import Ledger, libpq_url, rerun_command
from gigsterpg.lib.files.partition import read_manifest
from gigsterpg.lib.pg.db import SqlAlchemy
from gigsterpg.lib.pg.db.snapshot import SNAPSHOT_STEPS
from gigsterpg.lib.pg.db.states import SKIPPED, SUCCEEDED


class StepFailed(TerminalError):
    """A step of the daily snapshots failed; the message names the step, the day and the command to rerun."""

    def __init__(self, what: str, why: str = "", todo: str = "", step: str = "", day=None):
        self.step = step
        self.day = day
        super().__init__(what, why, todo)


class StepRefused(StepFailed):
    """A step cannot run yet: a step it depends on has not succeeded for that day."""


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """What the steps work on: the target (ledger and loaded data), the sources and the data folder."""

    target_url: str
    root: Path = Path("data")
    source_url: Optional[str] = None
    csv_path: Optional[Path] = None
    tables: Optional[str] = None  # comma-separated globs of schema.table; !glob excludes
    csv_types: Optional[Dict[str, str]] = None  # declared kinds of CSV columns; the others are inferred
    workers: Optional[int] = None  # sessions that extract and load tables at once (default: one per core, <= 4)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Pipeline":
        source = settings.snapshot_source_pg and check_pg_conninfo(
            settings.snapshot_source_pg, "--source-pg (GIGSTERPG_SNAPSHOT_SOURCE_PG)")
        return cls(libpq_url(settings.require_pg()), Path(settings.snapshot_root or "data"),
                   libpq_url(source) if source else None,
                   Path(settings.snapshot_csv) if settings.snapshot_csv else None, settings.snapshot_tables)


@dataclasses.dataclass
class StepReport:
    """What one step did for one day."""

    day: datetime.date
    step: str
    state: str  # SUCCEEDED, or SKIPPED (an extract that had already succeeded)
    rows: int = 0
    tables: int = 0
    bytes: int = 0
    bad_lines: int = 0
    path: str = ""
    seconds: float = 0.0
    columns: List[str] = dataclasses.field(default_factory=list)  # extract-csv: "name kind", as typed


def _source(step: str) -> str:
    return {"extract-postgres": "postgres", "extract-csv": "csv"}.get(step, "target")


def _rerun(pipeline: Pipeline, step: str, day: datetime.date) -> str:
    """The command that runs ``step`` for ``day`` again with this pipeline's folder and sources (no password)."""
    flags = {}
    if step == "extract-postgres":
        flags = {"source_pg": pipeline.source_url, "tables": pipeline.tables}
    elif step == "extract-csv":
        types = ",".join(f"{name}={kind}" for name, kind in (pipeline.csv_types or {}).items())
        flags = {"csv": str(pipeline.csv_path) if pipeline.csv_path else None, "csv_types": types or None}
    return rerun_command(step, day, str(pipeline.root), **flags)


def ensure_ledger(url: str) -> None:
    """Migrate the target (``alembic upgrade head``) when it has no ledger yet: a fresh database just works."""
    with pg_errors(url), psycopg.connect(url, autocommit=True) as connection:
        if connection.execute("SELECT to_regclass('snapshot_ledger')").fetchone()[0] is not None:
            return
    handle = SqlAlchemy(url)
    try:
        with pg_errors(url):
            handle.migrate_head()
    finally:
        handle.dispose()


def _run_step(pipeline: Pipeline, step: str, day: datetime.date, body: Callable[[Ledger], StepReport]) -> StepReport:
    """Run ``body`` as ``step`` of ``day``: locked, recorded as running, then succeeded or failed."""
    started = time.perf_counter()
    ensure_ledger(pipeline.target_url)
    ledger = Ledger(pipeline.target_url, rerun=_rerun(pipeline, step, day))
    try:
        if not ledger.lock(day, step):
            raise StepFailed(f"{step} for {day} is already running", "another process holds its lock",
                             "wait for it to finish (pipeline status shows it)", step=step, day=day)
        try:
            report = body(ledger)
        except StepFailed as err:
            command = err.todo.split(": ", 1)[-1] if isinstance(err, StepRefused) else _rerun(pipeline, step, day)
            ledger.fail(day, step, _source(step), str(err), command)
            raise
        except (GigsterPgError, psycopg.Error, OSError, KeyboardInterrupt) as err:
            why = "interrupted" if isinstance(err, KeyboardInterrupt) else mask_url(
                str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
            command = _rerun(pipeline, step, day)
            ledger.fail(day, step, _source(step), why, command)
            if isinstance(err, KeyboardInterrupt):
                raise
            raise StepFailed(f"{step} for {day} failed", why, f"fix that, then rerun: {command}",
                             step=step, day=day) from err
        report.seconds = time.perf_counter() - started
        return report
    finally:
        ledger.close()


def extract_postgres(pipeline: Pipeline, day: datetime.date, force: bool = False) -> StepReport:
    """Every table of the source database into ``<root>/postgres/<table>/<day>/``; a no-op if done, unless forced."""
    step = "extract-postgres"
    if not pipeline.source_url:
        raise ConfigError("no source PostgreSQL URL for extract-postgres", "GIGSTERPG_SNAPSHOT_SOURCE_PG is not set",
                          "set it or pass --source-pg")

    def body(ledger: Ledger) -> StepReport:
        if not force and _already_done(ledger, day, step):
            return _skipped(ledger, day, step)
        ledger.start(day, step, "postgres")
        previous = {row["table_name"] for row in ledger.rows(day, step, tables=True)}
        done = extract.extract_postgres(
            pipeline.source_url, pipeline.root, day, pipeline.tables,
            on_table=lambda table, path: ledger.start(day, step, "postgres", table, path),
            on_done=lambda e: ledger.succeed(day, step, "postgres", e.table, e.rows, e.bytes, e.sha256, path=e.path),
            workers=pipeline.workers)
        for gone in previous - {e.table for e in done}:
            ledger.forget(day, step, "postgres", gone)
        rows, size = sum(e.rows for e in done), sum(e.bytes for e in done)
        folder = str(Path(pipeline.root) / "postgres")
        ledger.succeed(day, step, "postgres", rows=rows, size=size, path=folder)
        _outdate(ledger, pipeline, day, step)
        return StepReport(day, step, SUCCEEDED, rows, len(done), size, path=folder)

    return _run_step(pipeline, step, day, body)


def extract_csv(pipeline: Pipeline, day: datetime.date, force: bool = False) -> StepReport:
    """The CSV file into ``<root>/csv/<day>/``; a no-op if done, unless forced."""
    step = "extract-csv"
    if not pipeline.csv_path:
        raise ConfigError("no CSV file for extract-csv", "GIGSTERPG_SNAPSHOT_CSV is not set",
                          "set it or pass --csv")

    def body(ledger: Ledger) -> StepReport:
        if not force and _already_done(ledger, day, step):
            return _skipped(ledger, day, step)
        ledger.start(day, step, "csv")
        done = extract.extract_csv(pipeline.csv_path, pipeline.root, day, pipeline.csv_types)
        ledger.succeed(day, step, "csv", rows=done.rows, size=done.bytes, checksum=done.sha256,
                       bad_lines=done.bad_lines, path=done.path)
        _outdate(ledger, pipeline, day, step)
        return StepReport(day, step, SUCCEEDED, done.rows, 1, done.bytes, done.bad_lines, done.path,
                          columns=_csv_columns(done.path))

    return _run_step(pipeline, step, day, body)


def _outdate(ledger: Ledger, pipeline: Pipeline, day: datetime.date, extracted: str) -> None:
    """A day extracted again: its load and query, if they had succeeded, are from the replaced partitions."""
    for later in ("load", "query"):
        if ledger.state(day, later) == SUCCEEDED:
            ledger.fail(day, later, "target", f"{extracted} of {day} ran again after this {later}; run it again",
                        _rerun(pipeline, later, day))


def _csv_columns(folder: str) -> List[str]:
    manifest = read_manifest(Path(folder)) or {}
    columns = manifest.get("columns")
    return [f"{column.get('name')} {column.get('kind')}" for column in columns if isinstance(column, dict)] \
        if isinstance(columns, list) else []


def _already_done(ledger: Ledger, day: datetime.date, step: str) -> bool:
    """The step succeeded for ``day`` and every partition it wrote is still there."""
    if ledger.state(day, step) != SUCCEEDED:
        return False
    rows = ledger.rows(day, step, tables=True) if step == "extract-postgres" else ledger.rows(day, step)
    return all(row["path"] and (Path(row["path"]) / "manifest.json").is_file() for row in rows)


def _skipped(ledger: Ledger, day: datetime.date, step: str) -> StepReport:
    row = ledger.rows(day, step)[0]
    tables = len(ledger.rows(day, step, tables=True)) if step == "extract-postgres" else 1
    return StepReport(day, step, SKIPPED, row["rows"] or 0, tables, row["bytes"] or 0, row["bad_lines"] or 0,
                      row["path"] or "", columns=_csv_columns(row["path"]) if step == "extract-csv" else [])


def _require(ledger: Ledger, pipeline: Pipeline, day: datetime.date, step: str, needs: str) -> None:
    state = ledger.state(day, needs)
    if state != SUCCEEDED:
        command = _rerun(pipeline, needs, day)
        raise StepRefused(f"{step} for {day} refused", f"{needs} for {day} has not succeeded ({state or 'never run'})",
                          f"run it first: {command}", step=step, day=day)


def load_day(pipeline: Pipeline, day: datetime.date) -> StepReport:
    """Both extracts of ``day`` into the target, replacing that day whole in one transaction."""
    step = "load"

    def body(ledger: Ledger) -> StepReport:
        _require(ledger, pipeline, day, step, "extract-postgres")
        _require(ledger, pipeline, day, step, "extract-csv")
        ledger.start(day, step, "target")
        folders = [Path(row["path"]) for row in ledger.rows(day, "extract-postgres", tables=True)
                   if row["state"] == SUCCEEDED]
        csv_folder = Path(ledger.rows(day, "extract-csv")[0]["path"])
        previous = [row["table_name"] for row in ledger.rows(day, step, tables=True)]
        with psycopg.connect(pipeline.target_url) as connection:
            loaded = load.load_day(connection, day, folders, csv_folder, previous,
                                   rerun=lambda extract_step: _rerun(pipeline, extract_step, day) + " --force",
                                   connect=lambda: psycopg.connect(pipeline.target_url), workers=pipeline.workers)
            with connection.cursor() as cursor:
                for gone in set(previous) - {done.target for done in loaded}:
                    ledger.forget(day, step, "target", gone, cursor=cursor)
                for done in loaded:
                    ledger.succeed(day, step, "target", done.target, done.rows, done.bytes, done.sha256,
                                   done.bad_lines, cursor=cursor)
                rows, bad = sum(done.rows for done in loaded), sum(done.bad_lines for done in loaded)
                size = sum(done.bytes for done in loaded)
                ledger.succeed(day, step, "target", rows=rows, size=size, bad_lines=bad, cursor=cursor)
            connection.commit()
        return StepReport(day, step, SUCCEEDED, rows, len(loaded), size, bad)

    return _run_step(pipeline, step, day, body)


def query_day(pipeline: Pipeline, day: datetime.date) -> StepReport:
    """The orders with their details from the day's loaded data, to ``<root>/results/<day>/`` (CSV and JSON)."""
    step = "query"

    def body(ledger: Ledger) -> StepReport:
        _require(ledger, pipeline, day, step, "load")
        ledger.start(day, step, "target")
        targets = [row["table_name"] for row in ledger.rows(day, "load", tables=True)]
        orders = _pick(targets, "orders", day, lambda t: not t.startswith(load.CSV_SCHEMA + "."))
        details = _pick(targets, None, day, lambda t: t.startswith(load.CSV_SCHEMA + "."))
        with psycopg.connect(pipeline.target_url) as connection:
            rows, folder = result.write_result(connection, pipeline.root, day, orders, details)
        ledger.succeed(day, step, "target", rows=rows, path=str(folder))
        return StepReport(day, step, SUCCEEDED, rows, 1, path=str(folder))

    return _run_step(pipeline, step, day, body)


def _pick(targets: List[str], name: Optional[str], day: datetime.date, keep) -> tuple:
    found = sorted((t for t in targets if keep(t) and (name is None or t.split(".", 1)[1] == name)),
                   key=lambda t: (t != f"snap_public.{name}", t))
    if not found:
        what = f"{name} table" if name else "CSV table"
        raise StepFailed(f"query for {day} failed", f"the day's load has no {what}",
                         "extract a source that has one, then load again", step="query", day=day)
    return tuple(found[0].split(".", 1))


STEPS = {"extract-postgres": extract_postgres, "extract-csv": extract_csv, "load": load_day, "query": query_day}
assert tuple(STEPS) == SNAPSHOT_STEPS


@dataclasses.dataclass
class DaysReport:
    """What ``run_days`` did: the steps that ran, and the failures (one per day at most).

    (Named for its days: the sync's report is ``gigsterpg.lib.pg.sync.engine.runner.RunReport``.)
    """

    steps: List[StepReport] = dataclasses.field(default_factory=list)
    failures: List[StepFailed] = dataclasses.field(default_factory=list)
    planned: Optional[int] = None  # the steps the run had to make (days x 4), when the caller counted them

    @property
    def ok(self) -> bool:
        return not self.failures


MAX_DAYS = 366  # the longest backfill ``run`` starts without being told more (--max-days)


def days_between(first: datetime.date, last: datetime.date, limit: Optional[int] = MAX_DAYS) -> List[datetime.date]:
    """Every day from ``first`` to ``last``, both included; a range of more than ``limit`` days is refused
    (``--from 0001-01-01 --to 9999-12-31`` would be 3.65 million days of work), None for no limit."""
    if last < first:
        raise ConfigError(f"bad range {first} to {last}", "the last day is before the first", "swap --from and --to")
    count = (last - first).days + 1
    if limit is not None and count > limit:
        raise ConfigError(f"a backfill of {count:,} days ({first} to {last})",
                          f"more than {limit:,} days is refused unless asked for",
                          f"check --from and --to, or pass --max-days {count} to run them all")
    return [first + datetime.timedelta(days=offset) for offset in range((last - first).days + 1)]


def run_days(pipeline: Pipeline, days: List[datetime.date], force: bool = False,
             on_step: Callable[[StepReport], None] = lambda report: None) -> DaysReport:
    """The four steps in order for each day, each day on its own: a failed day stops there, the next goes on."""
    report = DaysReport()
    for day in days:
        for step, verb in STEPS.items():
            try:
                done = verb(pipeline, day, force) if step.startswith("extract") else verb(pipeline, day)
            except StepFailed as err:
                report.failures.append(err)
                break
            report.steps.append(done)
            on_step(done)
    return report
