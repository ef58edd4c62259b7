"""Staging tables and binary COPY of Python rows into them: the fastest way psycopg has to load rows."""
from typing import Iterable, Sequence, Tuple

from psycopg import sql


def create_staging(cursor, table: str, columns: Sequence[Tuple[str, str]]) -> None:
    """A temp table of ``columns`` (name, type), emptied at each commit; the same list COPY uses."""
    cursor.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in columns)))


def copy_rows(cursor, table: str, columns: Sequence[Tuple[str, str]], rows: Iterable[Sequence]) -> None:
    """COPY ``rows`` into ``table``; ``columns`` are (name, PostgreSQL type) pairs in row order."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(name) for name, _ in columns))
    with cursor.copy(statement) as copy:
        copy.set_types([kind for _, kind in columns])
        for row in rows:
            copy.write_row(row)
