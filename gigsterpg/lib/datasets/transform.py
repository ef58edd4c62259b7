"""``transform``: a SELECT (joins, aggregation) over loaded tables becomes a dataset table, replaced atomically.

The query runs with the datasets schema first on the search path, so it
names loaded tables as they were loaded (``people``, ``trades``). Its rows
are written by ``CREATE TABLE ... AS`` under a working name, keyed by
``key`` (default: the query's first column), and swapped in for the old
table at the end of the one transaction (see ``tables``).
"""
import dataclasses
import logging
import time
from pathlib import Path
from typing import List, Optional

import psycopg
from psycopg import sql

from gigsterpg.config import Settings
from gigsterpg.exc import ConfigError, SourceError
from gigsterpg.lib.datasets import tables

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


def read_query(path) -> str:
    """The SELECT of an SQL file, without its trailing semicolons; a ConfigError when there is none."""
    path = Path(path)
    try:
        query = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the SQL file {path}", str(err), "check the path") from err
    query = query.strip().rstrip(";").strip()
    if not query:
        raise ConfigError(f"the SQL file {path} is empty", "it must hold one SELECT", "write the query in it")
    return query


def transform(settings: Settings, sqlfile, into: str, schema: Optional[str] = None,
              key: Optional[str] = None) -> TransformReport:
    """Run the SELECT of ``sqlfile`` and make its rows the dataset ``into`` (replacing the old rows at once)."""
    started = time.perf_counter()
    query = read_query(sqlfile)
    schema = tables.check_name(schema or settings.datasets_schema, "schema")
    table = tables.check_table(into, "dataset name (--into)")
    name = tables.dataset_name(settings, schema, table)
    tables.migrate(settings)
    with tables.transaction(settings) as connection, connection.cursor() as cursor:
        tables.prepare(cursor, schema, name)
        tables.refuse_foreign(cursor, schema, table)
        work = tables.work_table(cursor, schema, table)
        cursor.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema)))
        try:
            with connection.transaction():
                # The file's text is the operator's SQL; CREATE TABLE AS takes a SELECT (or VALUES) only.
                cursor.execute(sql.SQL("CREATE TABLE {} AS ").format(sql.Identifier(schema, work)) + sql.SQL(query))
        except psycopg.DatabaseError as err:
            raise SourceError(f"the query of {sqlfile} failed", str(err).strip().splitlines()[0],
                              "fix the SELECT (it runs with the datasets schema first on the search path)") from err
        cursor.execute("SET LOCAL search_path TO DEFAULT")
        columns = tables.catalog_columns(cursor, schema, work)
        key = key or columns[0]["name"]
        tables.add_key(cursor, schema, work, key, f"transform into {schema}.{table}")
        cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, work)))
        rows = cursor.fetchone()[0]
        tables.swap(cursor, schema, work, table)
        cursor.execute("DELETE FROM datasets WHERE name = %s AND kind <> 'transform'", (name,))
        tables.register(cursor, tables.Registration(name, schema, table, "transform", key, columns, str(sqlfile),
                                                    rows))
    seconds = time.perf_counter() - started
    logger.info("transform %s into %s.%s: %d rows, %.1f s", sqlfile, schema, table, rows, seconds)
    return TransformReport(name, f"{schema}.{table}", key, columns, rows, seconds)
