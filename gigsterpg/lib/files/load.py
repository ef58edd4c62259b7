"""Step 2 of the daily snapshots: a day's partitions into the target PostgreSQL, replacing that day whole.

Each source table ``schema.name`` becomes ``snap_<schema>.<name>`` in the
target (the CSV: ``snap_csv.<file name>``), a table partitioned by list of
``snapshot_day`` with one partition per day. A day is loaded into new tables
beside the old ones (COPY, binary, no lock on what readers use), then in the
same transaction the day's old partitions are dropped and the new ones
attached: readers see the day as it was or as it is, never half, and a rerun
replaces exactly what that day loaded before.
"""
import codecs
import contextlib
import dataclasses
import datetime
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from psycopg import sql

from gigsterpg import faults
from gigsterpg.exc import SourceError
from gigsterpg.lib.files import csvsource, extract, partition, pgcopy
from gigsterpg.lib.files.ledger import rerun_command

DAY_COLUMN = "snapshot_day"
CSV_SCHEMA = "snap_csv"
# The advisory lock under which a parallel load's sessions make their new tables, one at a time.
NEW_TABLES_LOCK = 0x676967736E617073  # "gigsnaps"
KINDS_OF_TYPES = {"bigint": "integer", "numeric": "numeric", "boolean": "boolean", "date": "date",
                  "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamp", "text": "text"}


def target_schema(source_schema: str) -> str:
    """The target schema of a source schema's tables: ``snap_<schema>``, one of its own for every source schema.

    The source schema ``csv`` would be the CSV's own ``snap_csv``, and a name past 58 bytes would be cut to
    another's 63: those become ``snap_pg_csv`` and ``snap_pg_<first 40 bytes>_<md5>``. No user schema can
    start with ``pg_``, so no ``snap_pg_`` name is ever another schema's ``snap_<schema>``.
    """
    name = "snap_" + source_schema
    if name == CSV_SCHEMA:
        return "snap_pg_csv"
    if len(name.encode()) > 63:
        head = source_schema.encode()[:40].decode(errors="ignore")
        return f"snap_pg_{head}_{hashlib.md5(source_schema.encode()).hexdigest()[:8]}"
    return name


def partition_name(table: str, day: datetime.date) -> str:
    """``<table>__<yyyymmdd>``, shortened with a hash of the name when it would pass PostgreSQL's 63 bytes."""
    suffix = f"__{day:%Y%m%d}"
    if len((table + suffix + "_n").encode()) <= 63:
        return table + suffix
    return table.encode()[:40].decode(errors="ignore") + "_" + hashlib.md5(table.encode()).hexdigest()[:8] + suffix


@dataclasses.dataclass
class Loaded:
    """One table of a day, loaded: its target, rows, bytes read and their checksum, lines set aside."""

    source: str  # "postgres" or "csv"
    target: str  # schema.table in the target
    rows: int
    bytes: int = 0
    sha256: str = ""
    bad_lines: int = 0


def _existing_columns(cursor, schema: str, table: str) -> Optional[List[Tuple[str, str]]]:
    cursor.execute("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
                   " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                   (sql.Identifier(schema, table).as_string(cursor),))
    found = cursor.fetchall()
    return [(name, kind) for name, kind in found] or None


def _check_types(cursor, columns: Sequence[Tuple[str, str]]) -> None:
    """Each type named by a manifest is a type (the manifest is a file on disk, read into SQL)."""
    for _, kind in columns:
        cursor.execute("SELECT %s::regtype", (kind,))


def ensure_parent(cursor, schema: str, table: str, new: str, what: str) -> None:
    """The partitioned table shaped as the new table ``new``, created if missing; refused if its columns differ.

    Both sides are read back from the catalog, so the types compare in PostgreSQL's own spelling.
    """
    wanted = _existing_columns(cursor, schema, new)
    existing = _existing_columns(cursor, schema, table)
    if existing is None:
        cursor.execute(sql.SQL("CREATE TABLE {} ({}) PARTITION BY LIST ({})").format(
            sql.Identifier(schema, table), _definition(wanted, not_null=DAY_COLUMN), sql.Identifier(DAY_COLUMN)))
        return
    if existing != wanted:
        raise SourceError(f"the columns of {what} are not those of the days already loaded into {schema}.{table}",
                          f"loaded: {_names(existing)}; now: {_names(wanted)}",
                          f"drop {schema}.{table} to reload every day with the new columns, or rename it to keep them")


def _names(columns) -> str:
    return ", ".join(f"{name} {kind}" for name, kind in columns[1:])


def _definition(columns, not_null: str = "", default_day: Optional[datetime.date] = None) -> sql.Composable:
    parts = []
    for name, kind in columns:
        part = sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind))
        if name == not_null:
            part = sql.SQL("{} NOT NULL").format(part)
        if name == DAY_COLUMN and default_day is not None:
            part = sql.SQL("{} NOT NULL DEFAULT {} CHECK ({} = {})").format(
                part, sql.Literal(default_day), sql.Identifier(DAY_COLUMN), sql.Literal(default_day))
        parts.append(part)
    return sql.SQL(", ").join(parts)


def _new_table(cursor, schema: str, table: str, columns, day: datetime.date) -> str:
    """A standalone table of the day's rows, shaped to be attached as the day's partition (parent made if missing).

    One a load in parallel sessions left behind (its tables are committed before the one transaction that
    attaches them) is dropped first: the step's lock says its writer is gone.
    """
    cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    name = partition_name(table, day) + "_n"
    cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, name)))
    cursor.execute(sql.SQL("CREATE TABLE {} ({})").format(
        sql.Identifier(schema, name), _definition([(DAY_COLUMN, "date")] + list(columns), default_day=day)))
    return name


def _default_rerun(day: datetime.date):
    return lambda step: rerun_command(step, day) + " --force"


def _manifest(folder: Path, step: str, fields: dict, column_keys: tuple, rerun) -> dict:
    """The partition's manifest, checked field by field; its absence or damage names the extract to run again."""
    try:
        manifest = partition.read_manifest(folder)
        if manifest is None:
            raise SourceError(f"the partition {folder} is missing", "it was removed after the extract",
                              f"rerun: {rerun(step)}")
        path = Path(folder) / partition.MANIFEST
        partition.check_fields(path, manifest, fields)
        partition.check_columns(path, manifest["columns"], column_keys)
    except partition.DamagedManifest as err:
        raise partition.DamagedManifest(err.path, err.why, f"extract that day again: {rerun(step)}") from None
    return manifest


POSTGRES_FIELDS = {"file": str, "schema": str, "table": str, "rows": int, "sha256": str, "columns": list}
CSV_FIELDS = {"file": str, "table": str, "rows": int, "bad_lines": int, "bytes": int, "sha256": str,
              "dialect": dict, "columns": list}


def _postgres_table(cursor, folder: Path, day: datetime.date, rerun=None, parent: bool = True,
                    made=None) -> Tuple[Loaded, tuple]:
    """A table's partition into a new table of the target; (what was loaded, (schema, table, new table, what)).

    ``parent``: also the partitioned table made or checked now (else by the caller, before attaching).
    ``made``: called once the new table exists (a parallel load commits it there).
    """
    manifest = _manifest(folder, "extract-postgres", POSTGRES_FIELDS, ("name", "type"), rerun or _default_rerun(day))
    columns = [(column["name"], column["type"]) for column in manifest["columns"]]
    _check_types(cursor, columns)
    schema, table = target_schema(manifest["schema"]), manifest["table"]
    new = _new_table(cursor, schema, table, columns, day)
    what = f"{manifest['schema']}.{table}"
    if parent:
        ensure_parent(cursor, schema, table, new, what)
    if made is not None:
        made()
    with open(Path(folder) / manifest["file"], "rb") as handle:
        count = pgcopy.copy_in(cursor, new, [name for name, _ in columns], handle, schema)
    rows = cursor.rowcount
    if count.sha256 != manifest["sha256"] or rows != manifest["rows"]:
        raise SourceError(f"the partition {folder} changed on disk since it was extracted",
                          f"{rows} rows and sha256 {count.sha256[:12]}, the manifest says {manifest['rows']} and "
                          f"{manifest['sha256'][:12]}",
                          f"re-extract it: {(rerun or _default_rerun(day))('extract-postgres')}")
    loaded = Loaded("postgres", f"{schema}.{table}", rows, count.bytes, count.sha256)
    return loaded, (schema, table, new, what)


def _csv_table(cursor, folder: Path, day: datetime.date, on_bad, rerun=None, parent: bool = True,
               made=None) -> Tuple[Loaded, tuple]:
    rerun = rerun or _default_rerun(day)
    manifest = _manifest(folder, "extract-csv", CSV_FIELDS, ("name", "kind", "type"), rerun)
    try:
        known = {field.name for field in dataclasses.fields(csvsource.Dialect)}
        unknown = sorted(set(manifest["dialect"]) - known)
        if unknown:
            raise ValueError(f"unknown dialect field {unknown[0]!r}")
        dialect = extract.dialect_of(manifest)
        codecs.lookup(dialect.encoding)
        if not all(isinstance(one, str) and len(one) == 1 for one in (dialect.delimiter, dialect.quotechar)) \
                or not isinstance(dialect.day_first, bool):
            raise ValueError("a delimiter and a quote of one character each, day_first true or false")
        unknown = [column["kind"] for column in manifest["columns"] if column["kind"] not in csvsource.KINDS]
        if unknown:
            raise ValueError(f"unknown column kind {unknown[0]!r}")
    except (TypeError, ValueError, LookupError) as err:
        raise partition.DamagedManifest(Path(folder) / partition.MANIFEST, f"its 'dialect' or 'columns' are not"
                                        f" what an extract writes ({err})",
                                        f"extract that day again: {rerun('extract-csv')}") from None
    table = manifest["table"]
    columns = extract.columns_of(manifest)
    existing = _existing_columns(cursor, CSV_SCHEMA, table)
    if existing and [name for name, _ in existing[1:]] == [column.name for column in columns] \
            and all(kind in KINDS_OF_TYPES for _, kind in existing[1:]):
        # The days already loaded fixed the types: a value of this day that does not fit is a bad line.
        columns = [csvsource.Column(name, KINDS_OF_TYPES[kind], kind == "timestamp with time zone")
                   for name, kind in existing[1:]]
    typed = pgcopy.pg_columns(columns)
    new = _new_table(cursor, CSV_SCHEMA, table, typed, day)
    what = f"the CSV file {manifest['file']}"
    if parent:
        ensure_parent(cursor, CSV_SCHEMA, table, new, what)
    if made is not None:
        made()
    path = Path(folder) / manifest["file"]
    if pgcopy.sha256_file(path) != manifest["sha256"]:
        raise SourceError(f"the partition {folder} changed on disk since it was extracted", "its checksum differs",
                          f"re-extract it: {rerun('extract-csv')}")
    bad = 0

    def record(line: csvsource.BadLine) -> None:
        nonlocal bad
        bad += 1
        on_bad(line)

    count = pgcopy.copy_batches(cursor, new, typed, csvsource.read_batches(path, dialect, columns, record),
                                schema=CSV_SCHEMA)
    count.bad = bad
    return Loaded("csv", f"{CSV_SCHEMA}.{table}", count.rows, manifest["bytes"], manifest["sha256"], count.bad), \
        (CSV_SCHEMA, table, new, what)


def load_day(connection, day: datetime.date, postgres_folders: Sequence[Path], csv_folder: Path,
             previous: Sequence[str] = (), on_bad=lambda bad: None, rerun=None, connect=None,
             workers: Optional[int] = None) -> List[Loaded]:
    """Load the day's partitions in the caller's transaction (the caller commits).

    ``previous``: the targets (``schema.table``) this day loaded before; a
    table no longer among the partitions loses its partition for the day.
    ``rerun(step)``: the command that extracts the day again, for the advice of a damaged partition.
    ``connect()``: a new session of the target; given, the tables are COPYed by ``workers`` sessions at once
    (default ``extract.default_workers()``; ``_load_parallel``), else all in the caller's transaction.
    """
    workers = extract.default_workers() if workers is None else max(1, workers)
    with connection.cursor() as cursor:
        if connect is not None and workers > 1:
            loaded, swaps = _load_parallel(connect, workers, day, postgres_folders, csv_folder, on_bad, rerun)
            for schema, table, new, what in swaps:
                ensure_parent(cursor, schema, table, new, what)
        else:
            loaded, swaps = [], []
            for folder in postgres_folders:
                done, swap = _postgres_table(cursor, Path(folder), day, rerun)
                loaded.append(done)
                swaps.append(swap)
            done, swap = _csv_table(cursor, Path(csv_folder), day, on_bad, rerun)
            loaded.append(done)
            swaps.append(swap)
        for schema, table, new, _ in swaps:
            _swap(cursor, schema, table, new, day)
        now = {done.target for done in loaded}
        for target in sorted(set(previous) - now):
            schema, _, table = target.partition(".")
            cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(
                sql.Identifier(schema, partition_name(table, day))))
        faults.point("snapshot-loaded")
    return loaded


def _load_parallel(connect, workers: int, day: datetime.date, postgres_folders: Sequence[Path], csv_folder: Path,
                   on_bad, rerun) -> Tuple[List[Loaded], list]:
    """Each partition COPYed into its new table by one of ``workers`` sessions, and committed there (the new
    tables are standalone: no reader of the partitioned tables sees them); the caller's one transaction then
    checks the partitioned tables and attaches them all. The CSV, the largest part, goes first.

    A load that dies here leaves new tables behind, which its rerun drops (``_new_table``).
    """
    jobs = [lambda cursor, made: _csv_table(cursor, Path(csv_folder), day, on_bad, rerun, False, made)] + [
        (lambda cursor, made, folder=folder: _postgres_table(cursor, Path(folder), day, rerun, False, made))
        for folder in postgres_folders]
    local = threading.local()
    sessions = []

    def one(job):
        if getattr(local, "connection", None) is None:
            local.connection = connect()
            sessions.append(local.connection)
        connection = local.connection
        with connection.cursor() as cursor:
            # CREATE SCHEMA IF NOT EXISTS in two sessions at once fails in one: the new tables are made and
            # committed one session at a time (their rows then COPY in parallel).
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (NEW_TABLES_LOCK,))
            result = job(cursor, connection.commit)
        connection.commit()
        return result

    pool = ThreadPoolExecutor(min(workers, len(jobs)), thread_name_prefix="gigsterpg-load")
    try:
        futures = [pool.submit(one, job) for job in jobs]
        results = [future.result() for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for session in sessions:
            with contextlib.suppress(Exception):
                session.close()
    results = results[1:] + results[:1]  # the order of the load in one session: the tables, then the CSV
    return [done for done, _ in results], [swap for _, swap in results]


def _swap(cursor, schema: str, table: str, new: str, day: datetime.date) -> None:
    """The day's old partition dropped, the new table renamed and attached in its place."""
    name = partition_name(table, day)
    cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, name)))
    cursor.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(schema, new), sql.Identifier(name)))
    # The CHECK on the day lets PostgreSQL attach without scanning the rows.
    cursor.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
        sql.Identifier(schema, table), sql.Identifier(schema, name), sql.Literal(day)))
