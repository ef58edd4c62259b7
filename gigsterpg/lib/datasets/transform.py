"""``transform``: a SELECT (joins, aggregation) over loaded tables becomes a dataset table, replaced atomically.

The query runs with the datasets schema first on the search path, so it
names loaded tables as they were loaded (``people``, ``trades``). A
transform is one query that reads, and PostgreSQL is made to hold it to that
before anything runs: the file must start with SELECT, WITH, VALUES or TABLE
(a look past comments and brackets, for the message); its text is parsed by
the extended protocol, which takes one statement only, and must describe
named columns; it then runs in a READ ONLY transaction, its rows going into a
temporary table (the one thing such a transaction may write). The dataset's
table is built from those rows under a working name, keyed by ``key``
(default: the query's first column), and swapped in for the old table at the
end of its own transaction (see ``tables``).
"""
import dataclasses
import logging
import re
import time
from pathlib import Path
from typing import List, Optional

import psycopg
from psycopg import pq, sql

from gigsterpg import faults
from gigsterpg.config import Settings
from gigsterpg.connections import pg_errors
from gigsterpg.exc import ConfigError, SourceError
from gigsterpg.lib.datasets import tables
from gigsterpg.text import shown

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TransformReport:
    """What ``transform`` made."""

    dataset: str
    table: str  # schema.table
    key: str
    columns: List[dict]
    rows: int
    seconds: float


READING = ("select", "with", "values", "table")  # the first words of a query that reads
ROWS = "gigsterpg_transform_rows"  # the temporary table the query's rows go into (pg_temp, this session's own)
_SKIPPED = re.compile(r"\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/|\(", re.S)  # before the first word: blanks, comments, (


def first_word(query: str) -> str:
    """The query's first word in lower case, past blanks, comments and brackets ('' when there is none)."""
    position = 0
    while True:
        skipped = _SKIPPED.match(query, position)
        if not skipped:
            break
        position = skipped.end()
    word = re.match(r"[A-Za-z_]+|\S?", query[position:])
    return word.group(0).lower()


def read_query(path) -> str:
    """The query of an SQL file, without its trailing semicolons; a ConfigError when it is none that reads."""
    path = Path(path)
    try:
        query = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the SQL file {path}", str(err), "check the path") from err
    query = query.strip().rstrip(";").strip()
    word = first_word(query)
    if not word:
        raise ConfigError(f"the SQL file {path} is empty", "it must hold one SELECT", "write the query in it")
    if word not in READING:
        raise ConfigError(f"the SQL file {path} is not a query that reads", f"it starts with {shown(word.upper())}",
                          "a transform is one SELECT (or WITH, VALUES, TABLE) query: write that alone")
    return query


def check(settings: Settings, sqlfile, into: str, schema: Optional[str] = None, key: Optional[str] = None):
    """(query, schema, table): what ``transform`` checks before it connects (the file read, the names), or a
    ConfigError."""
    query = read_query(sqlfile)
    schema = tables.check_schema(schema or settings.datasets_schema)
    table = tables.check_table(into, "dataset name (--into)")
    if key:
        tables.check_column_name(key, "key column (--key)")
    return query, schema, table


def transform(settings: Settings, sqlfile, into: str, schema: Optional[str] = None,
              key: Optional[str] = None) -> TransformReport:
    """Run the SELECT of ``sqlfile`` and make its rows the dataset ``into`` (replacing the old rows at once)."""
    started = time.perf_counter()
    faults.check()
    query, schema, table = check(settings, sqlfile, into, schema, key)
    name = tables.dataset_name(settings, schema, table)
    tables.migrate(settings)
    url = settings.require_pg()
    with tables.connected(settings) as connection:
        _query_rows(connection, url, schema, query, sqlfile)  # in transactions of their own, the last READ ONLY
        faults.point("transform-queried")
        with pg_errors(url), tables.kept(connection, url), connection.transaction(), connection.cursor() as cursor:
            tables.prepare(cursor, schema, name)
            tables.refuse_foreign(cursor, schema, table)
            work = tables.work_table(cursor, schema, table)
            made = sql.Identifier(schema, work)
            cursor.execute(sql.SQL("CREATE TABLE {} AS TABLE {}").format(made, sql.Identifier("pg_temp", ROWS)))
            cursor.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier("pg_temp", ROWS)))
            columns = tables.catalog_columns(cursor, schema, work)
            key = key or columns[0]["name"]
            tables.add_key(cursor, schema, work, key, f"transform into {schema}.{table}")
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, work)))
            rows = cursor.fetchone()[0]
            tables.swap(cursor, schema, work, table)
            faults.point("transform-swapped")
            cursor.execute("DELETE FROM datasets WHERE name = %s AND kind <> 'transform'", (name,))
            tables.register(cursor, tables.Registration(name, schema, table, "transform", key, columns, str(sqlfile),
                                                        rows))
            faults.point("transform-registered")
        faults.point("transform-committed")
    seconds = time.perf_counter() - started
    logger.info("transform %s into %s.%s: %d rows, %.1f s", sqlfile, schema, table, rows, seconds)
    return TransformReport(name, f"{schema}.{table}", key, columns, rows, seconds)


def _query_rows(connection: psycopg.Connection, url: str, schema: str, query: str, sqlfile) -> None:
    """The query's rows into the temporary table ``ROWS``; a one-line error when it is not one query that reads."""
    search_path = sql.SQL("SET LOCAL search_path TO {}, public, pg_temp").format(sql.Identifier(schema))
    failed = f"the query of {sqlfile} failed"
    fix = "fix it: a transform is one query that reads, run with the datasets schema first on the search path"
    with pg_errors(url), tables.kept(connection, url), connection.cursor() as cursor:
        # Parse and describe only (nothing runs), by the extended protocol: one statement, or an error.
        with connection.transaction():
            cursor.execute(search_path)
            parsed = connection.pgconn.prepare(b"", query.encode(connection.info.encoding))
            if parsed.status != pq.ExecStatus.COMMAND_OK:
                reason = _first_line(parsed.error_message, connection)
                if connection.broken:
                    raise psycopg.OperationalError(reason)  # told as the connection lost, by ``tables.kept``
                if "multiple commands" in reason:
                    raise ConfigError(f"the SQL file {sqlfile} holds more than one statement",
                                      "a transform is one query that reads", "keep the SELECT alone in the file")
                raise SourceError(failed, reason, fix)
            described = connection.pgconn.describe_prepared(b"")
            if described.nfields == 0:
                raise ConfigError(f"the query of {sqlfile} has no column", "a transform makes a table of its rows",
                                  "name what it selects (SELECT expression AS name, ...)")
            cursor.execute("SELECT format_type(oid, modifier) FROM unnest(%s::oid[], %s::int[])"
                           " WITH ORDINALITY AS c (oid, modifier, n) ORDER BY n",
                           ([described.ftype(i) for i in range(described.nfields)],
                            [described.fmod(i) for i in range(described.nfields)]))
            types = [row[0] for row in cursor.fetchall()]
            names = [described.fname(i).decode(connection.info.encoding) for i in range(described.nfields)]
            cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("pg_temp", ROWS)))
            try:
                with connection.transaction():
                    cursor.execute(sql.SQL("CREATE TEMPORARY TABLE {} ({})").format(
                        sql.Identifier(ROWS), sql.SQL(", ").join(
                            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in zip(names, types))))
            except psycopg.DatabaseError as err:
                if connection.broken:
                    raise
                raise SourceError(failed, str(err).strip().splitlines()[0], fix) from err
        with connection.transaction():
            cursor.execute("SET TRANSACTION READ ONLY")
            cursor.execute(search_path)
            try:
                with connection.transaction():
                    cursor.execute(sql.SQL("INSERT INTO {} ").format(sql.Identifier("pg_temp", ROWS))
                                   + sql.SQL(query), prepare=True)
            except psycopg.errors.ReadOnlySqlTransaction as err:
                raise SourceError(f"the query of {sqlfile} writes", str(err).strip().splitlines()[0],
                                  "a transform is one query that reads: remove what writes") from err
            except psycopg.DatabaseError as err:
                if connection.broken:
                    raise
                raise SourceError(failed, str(err).strip().splitlines()[0], fix) from err


def _first_line(message: bytes, connection) -> str:
    text = message.decode(connection.info.encoding, "replace").strip()
    return (text.splitlines() or [""])[0].removeprefix("ERROR:").strip()
