"""Staging tables and binary COPY of Python rows into them: the fastest way psycopg has to load rows."""
from typing import Iterable, Sequence, Tuple

import psycopg
from psycopg import sql
from psycopg.adapt import PyFormat

# COPY's ``set_types`` finds a column's dumper by its type: for bytea that is the DB-API ``Binary`` dumper,
# written in Python (~2 µs a value, one hash per document); psycopg's dumper for ``bytes`` is its C one.
_BYTES = psycopg.adapters.get_dumper(bytes, PyFormat.BINARY)


def create_staging(cursor, table: str, columns: Sequence[Tuple[str, str]]) -> None:
    """A temp table of ``columns`` (name, type), emptied at each commit; the same list COPY uses."""
    cursor.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in columns)))


def copy_rows(cursor, table: str, columns: Sequence[Tuple[str, str]], rows: Iterable[Sequence]) -> None:
    """COPY ``rows`` into ``table`` (``schema.table`` names one in a schema); ``columns`` are (name,
    PostgreSQL type) pairs in row order."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(*table.split(".")), sql.SQL(", ").join(sql.Identifier(name) for name, _ in columns))
    if any(kind == "bytea" for _, kind in columns):
        cursor.adapters.register_dumper(bytes, _BYTES)
    with cursor.copy(statement) as copy:
        copy.set_types([kind for _, kind in columns])
        for row in rows:
            copy.write_row(row)
