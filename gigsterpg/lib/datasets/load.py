"""``load-csv``: CSV files into dataset tables, one transaction per file, by binary COPY.

Each file goes into a table named after it (or ``--table``) in the datasets
schema (or ``--schema``). Its dialect and column types come from the shared
CSV reader (``gigsterpg.lib.files.csvsource``, on Arrow's CSV reader: the
file read once, the kinds found as the batches go in, ``csvsource.stream``;
a file whose kind widens into text after rows were written is read again),
the binary COPY from ``gigsterpg.lib.files.pgcopy`` (each batch encoded on a
thread of its own, in the file's transaction). By default the file
replaces the table's content (a new table swapped in, see ``tables``); with ``merge`` and a
``key`` its rows are upserted by that key instead (the last line of a key
wins). Lines that do not fit are counted, and the first ``REJECTS_KEPT`` of
them recorded in ``csv_rejects`` with file, line, column and reason.
"""
import dataclasses
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from psycopg import sql

from gigsterpg import faults
from gigsterpg.config import Settings
from gigsterpg.exc import ConfigError
from gigsterpg.lib.datasets import tables
from gigsterpg.lib.files import csvsource, pgcopy
from gigsterpg.text import cut, shown

logger = logging.getLogger(__name__)

# Over HTTP: the files whose dialect and header are checked before the run is accepted (a folder of thousands
# is not read in the request; the run checks the rest).
HEADERS_CHECKED = 20
REJECTS_KEPT = 10_000  # per file: the count is always exact, the lines recorded are bounded (memory stays flat)


@dataclasses.dataclass
class FileLoad:
    """What one file became."""

    file: str
    dataset: str
    table: str  # schema.table
    mode: str  # "replace" or "merge"
    columns: List[dict]
    rows: int  # rows read from the file and written
    bad_lines: int
    table_rows: int  # rows in the table afterwards
    seconds: float
    parser: str  # "arrow": the engine that read the file (pyarrow.csv)
    rejects: List[csvsource.BadLine] = dataclasses.field(default_factory=list)  # the first few, for the summary

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclasses.dataclass
class LoadReport:
    """What ``load_csv`` did, file by file."""

    files: List[FileLoad]

    @property
    def rows(self) -> int:
        return sum(load.rows for load in self.files)

    @property
    def bad_lines(self) -> int:
        return sum(load.bad_lines for load in self.files)


def csv_files(paths: Sequence) -> List[Path]:
    """The files named, a folder standing for its ``*.csv`` files (sorted); a ConfigError when none is found."""
    found: List[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv" and p.is_file()))
        else:
            found.append(path)
    if not found:
        raise ConfigError("no CSV file to load", f"no *.csv file in {', '.join(map(str, paths)) or 'no path'}",
                          "name CSV files or a folder that holds some")
    return found


def check_options(settings: Settings, paths: Sequence, table: Optional[str] = None, schema: Optional[str] = None,
                  key: Optional[str] = None, merge: bool = False, delimiter: Optional[str] = None,
                  quotechar: Optional[str] = None, encoding: Optional[str] = None) -> Tuple[List[Path], str]:
    """The files named and the schema, once the options are checked (a ConfigError): what ``load_csv`` checks
    before it connects. Reads no file (a folder's listing only)."""
    files = csv_files(paths)
    if table and len(files) > 1:
        raise ConfigError("--table names one table", f"{len(files)} files were given",
                          "load one file with --table, or leave it out (each file names its table)")
    if merge and not key:
        raise ConfigError("a merge needs a key", "--merge upserts rows by a declared key", "give --key COLUMN")
    schema = tables.check_schema(schema or settings.datasets_schema)
    tables.check_dialect(delimiter, quotechar)
    if encoding is not None:
        csvsource.check_encoding(encoding)
    if key:
        tables.check_column_name(key, "key column (--key)")
    return files, schema


def check(settings: Settings, paths: Sequence, table: Optional[str] = None, schema: Optional[str] = None,
          declared: Optional[Dict[str, str]] = None, key: Optional[str] = None, merge: bool = False,
          delimiter: Optional[str] = None, quotechar: Optional[str] = None, encoding: Optional[str] = None,
          day_first: bool = False) -> None:
    """Everything ``load_csv`` checks without a server, up front: the options, and of the first
    ``HEADERS_CHECKED`` files their table's name, their dialect and header (64 KiB read of each) against
    ``key`` and ``declared``. A ConfigError or SourceError (a file unreadable, empty, not in its encoding)."""
    files, _ = check_options(settings, paths, table, schema, key, merge, delimiter, quotechar, encoding)
    options = dict(delimiter=delimiter, quotechar=quotechar, encoding=encoding, day_first=day_first)
    names: set = set()
    for path in files[:HEADERS_CHECKED]:
        tables.check_table(table or path.stem, "table name")
        dialect = csvsource.detect_dialect(path, **options)
        tables.check_dialect(dialect.delimiter, dialect.quotechar)
        header = csvsource.header(path, dialect)
        _check_key(path, header, key)
        names.update(header)
        if declared and len(files) == 1 and not merge:  # a merge into a table takes the table's kinds
            csvsource.check_declared(path, header, declared)
    unknown = sorted(set(declared or ()) - names)
    if unknown and len(files) > 1 and len(files) <= HEADERS_CHECKED:
        raise ConfigError("bad column declaration", f"no file has the columns {cut(unknown)}",
                          "declare columns of the files' headers", value=declared)


def load_csv(settings: Settings, paths: Sequence, table: Optional[str] = None, schema: Optional[str] = None,
             declared: Optional[Dict[str, str]] = None, key: Optional[str] = None, merge: bool = False,
             delimiter: Optional[str] = None, quotechar: Optional[str] = None, encoding: Optional[str] = None,
             day_first: bool = False) -> LoadReport:
    """Load each CSV file of ``paths`` into its dataset table; returns what each became.

    Args:
        table: the table (one file only); default: the file's name without ``.csv``.
        declared: column name -> kind (``csvsource.KINDS``) taken as given instead of inferred.
        key: the column rows are keyed, ordered and paged by (made the primary key); default: ``_row``,
            the lines' order in the file.
        merge: upsert the file's rows into the existing table by ``key`` instead of replacing it.
    """
    faults.check()
    files, schema = check_options(settings, paths, table, schema, key, merge, delimiter, quotechar, encoding)
    tables.migrate(settings)
    options = dict(delimiter=delimiter, quotechar=quotechar, encoding=encoding, day_first=day_first)
    if declared and len(files) > 1:
        _check_declared(files, declared, options)
    loads = []
    for path in files:
        name = tables.check_table(table or path.stem, "table name")
        loads.append(_load_file(settings, path, schema, name, declared, key, merge, options, len(files) > 1))
    return LoadReport(loads)


def _load_file(settings, path: Path, schema: str, table: str, declared, key, merge, options,
               several: bool) -> FileLoad:
    started = time.perf_counter()
    dialect = csvsource.detect_dialect(path, **options)
    tables.check_dialect(dialect.delimiter, dialect.quotechar)  # a --quote that is the delimiter detected
    name = tables.dataset_name(settings, schema, table)
    with tables.transaction(settings) as connection, connection.cursor() as cursor:
        tables.prepare(cursor, schema, name)
        faults.point("csv-locked")
        tables.refuse_foreign(cursor, schema, table)
        current = tables.registered(cursor, schema, table)
        merging = merge and current is not None and tables.exists(cursor, schema, table)
        if merging:
            if current["key"] != key:
                raise ConfigError(f"cannot merge {path} into {schema}.{table} by {shown(key)}",
                                  f"the dataset is keyed by {current['key']!r}", f"give --key {current['key']}")
            # The file's values must fit the table's columns: their kinds are declared, not inferred.
            declared = {column["name"]: column["kind"] for column in current["columns"]}
        if several or merging:
            declared = _for_file(declared, path, dialect)
        rejects: List[csvsource.BadLine] = []
        bad = 0

        def keep(line: csvsource.BadLine) -> None:
            nonlocal bad
            bad += 1
            if len(rejects) < REJECTS_KEPT:
                rejects.append(line)

        # One read: the kinds are found as the rows go in, each batch checked before it is written
        items = csvsource.stream(path, dialect, declared, keep)
        try:
            first = next(items)
            _check_key(path, [column.name for column in first.columns], key)
            try:
                with connection.transaction():  # a savepoint: the file is loaded again should a kind widen into text
                    count, columns = (_merge if merging else _replace)(cursor, schema, table, first.columns, key,
                                                                       items)
            except csvsource.KindsChanged as err:
                logger.info("%s after rows were written: %s is read again, its kinds inferred first", err, path)
                bad = 0
                rejects.clear()
                columns = csvsource.infer_columns(path, dialect, declared)
                trusted = [column.name for column in columns if column.name not in (declared or {})]
                count, columns = (_merge if merging else _replace)(
                    cursor, schema, table, columns, key, csvsource.read_batches(path, dialect, columns, keep, trusted))
        finally:
            items.close()
        count.bad, parser = bad, "arrow"
        faults.point("csv-swapped")
        table_rows = count.rows
        if merging:
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
            table_rows = cursor.fetchone()[0]
        described = tables.catalog_columns(cursor, schema, table)
        kinds = {column.name: column.kind for column in columns}
        for column in described:
            column["kind"] = kinds.get(column["name"], column["kind"])
        cursor.execute("DELETE FROM datasets WHERE name = %s AND kind <> 'csv'", (name,))
        tables.register(cursor, tables.Registration(name, schema, table, "csv", key or tables.ROW_KEY, described,
                                                    str(path), table_rows, count.bad))
        cursor.execute("DELETE FROM csv_rejects WHERE dataset = %s", (name,))
        if rejects:
            cursor.executemany("INSERT INTO csv_rejects (dataset, file, line, column_name, reason, text)"
                               " VALUES (%s, %s, %s, %s, %s, %s)",
                               [(name, bad.file, bad.line, bad.column, bad.reason, bad.text) for bad in rejects])
        faults.point("csv-registered")
    faults.point("csv-committed")
    seconds = time.perf_counter() - started
    logger.info("loaded %s into %s.%s: %d rows, %d bad lines, %.1f s", path, schema, table, count.rows, count.bad,
                seconds)
    return FileLoad(str(path), name, f"{schema}.{table}", "merge" if merging else "replace", described, count.rows,
                    count.bad, table_rows, seconds, parser, rejects[:20])


def _check_declared(files: List[Path], declared: Dict[str, str], options: dict) -> None:
    """A ConfigError when a declared column is in none of the files (each file takes the ones it has)."""
    names = set()
    for path in files:
        names.update(csvsource.header(path, csvsource.detect_dialect(path, **options)))
    unknown = sorted(set(declared) - names)
    if unknown:
        raise ConfigError("bad column declaration", f"no file has the columns {cut(unknown)}",
                          "declare columns of the files' headers", value=declared)


def _for_file(declared, path: Path, dialect) -> Optional[Dict[str, str]]:
    """The declarations that name a column of this file."""
    if not declared:
        return None
    names = set(csvsource.header(path, dialect))
    return {name: kind for name, kind in declared.items() if name in names}


def _check_key(path: Path, names: List[str], key: Optional[str]) -> None:
    tables.check_columns(names, key, str(path))
    if key and key not in names:
        raise ConfigError(f"no key column {shown(key)} in {path}", f"its columns are {cut(names, 200)}",
                          "give --key one of them", value=key)


def _retyping(cursor, schema: str, table: str, columns):
    """A ``Retype`` handler for ``copy_batches``: the table's columns changed in place; ``.columns`` the last."""
    def retype(change: csvsource.Retype) -> None:
        changed = [column for column in change.columns if column.name in change.changed]
        cursor.execute(sql.SQL("ALTER TABLE {} {}").format(
            sql.Identifier(schema, table) if schema else sql.Identifier(table), sql.SQL(", ").join(
                sql.SQL("ALTER COLUMN {0} TYPE {1} USING {0}::{1}").format(
                    sql.Identifier(column.name), sql.SQL(column.pg_type)) for column in changed)))
        retype.columns = list(change.columns)

    retype.columns = list(columns)
    return retype


def _replace(cursor, schema, table, columns, key, batches):
    work = tables.work_table(cursor, schema, table)
    pairs = pgcopy.pg_columns(columns)
    pgcopy.create_table(cursor, work, pairs, schema=schema)
    if not key:
        # the lines' order, numbered by gigsterpg in the COPY: an identity column's nextval per row cost the
        # server about 40 % over the COPY itself
        cursor.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} bigint NOT NULL").format(
            sql.Identifier(schema, work), sql.Identifier(tables.ROW_KEY)))
    retype = _retyping(cursor, schema, work, columns)
    count = pgcopy.copy_batches(cursor, work, pairs, batches, schema=schema, retype=retype,
                                numbered=None if key else tables.ROW_KEY)
    # The key's index is sorted in memory (the default 64 MB spills a few million keys to disk).
    cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
    tables.add_key(cursor, schema, work, key or tables.ROW_KEY, f"loading {schema}.{table}")
    tables.swap(cursor, schema, work, table)
    return count, retype.columns


def _merge(cursor, schema, table, columns, key, batches):
    pairs = pgcopy.pg_columns(columns)
    staging, order = "gigsterpg_merge", "_ord"
    while order in [n for n, _ in pairs]:  # a column of the file's own name
        order = "_" + order
    cursor.execute(sql.SQL("CREATE TEMPORARY TABLE {} ({}, {} bigint GENERATED ALWAYS AS IDENTITY)"
                           " ON COMMIT DROP").format(
        sql.Identifier(staging),
        sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in pairs),
        sql.Identifier(order)))
    retype = _retyping(cursor, None, staging, columns)
    count = pgcopy.copy_batches(cursor, staging, pairs, batches, retype=retype)
    pairs = pgcopy.pg_columns(retype.columns)
    names = sql.SQL(", ").join(sql.Identifier(n) for n, _ in pairs)
    updates = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n, _ in pairs if n != key)
    cursor.execute(sql.SQL("INSERT INTO {table} ({names}) SELECT DISTINCT ON ({key}) {names} FROM {staging}"
                           " WHERE {key} IS NOT NULL ORDER BY {key}, {order} DESC"
                           " ON CONFLICT ({key}) DO {action}").format(
        table=sql.Identifier(schema, table), names=names, key=sql.Identifier(key), staging=sql.Identifier(staging),
        order=sql.Identifier(order),
        action=sql.SQL("UPDATE SET {}").format(updates) if len(pairs) > 1 else sql.SQL("NOTHING")))
    return count, retype.columns
