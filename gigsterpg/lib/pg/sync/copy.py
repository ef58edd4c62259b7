"""Binary COPY of Python rows into a table: the fastest way psycopg has to load rows."""
from typing import Iterable, Sequence, Tuple

from psycopg import sql


def copy_rows(cursor, table: str, columns: Sequence[Tuple[str, str]], rows: Iterable[Sequence]) -> None:
    """COPY ``rows`` into ``table``; ``columns`` are (name, PostgreSQL type) pairs in row order."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(name) for name, _ in columns))
    with cursor.copy(statement) as copy:
        copy.set_types([kind for _, kind in columns])
        for row in rows:
            copy.write_row(row)
