"""The read API's queries: the datasets, and a dataset's rows in key order, a page at a time.

Rows come out of PostgreSQL as JSON text (``to_json`` of the row): numbers as
numbers (exact: a numeric is never passed through a float), booleans as
booleans, dates and timestamps as ISO 8601 strings, NULL as null, in the
table's column order. Each page is one statement, so it is all old rows or all
new ones while a load or transform replaces the table; the registry is read
just before, and should the table have been replaced in between (its key
column gone), the page is read again.
"""
import dataclasses
from pathlib import PurePath
from typing import List, Optional

import psycopg
from psycopg import sql

from gigsterpg.exc import ConfigError, SourceError
from gigsterpg.text import shown

ATTEMPTS = 3


class UnknownDataset(SourceError):
    """No dataset of that name (answered 404)."""


class MissingTable(SourceError):
    """A dataset whose table is gone or changed by hand (answered 404)."""


class BadAfter(ConfigError):
    """An ``after`` that is not a value of the dataset's key type (answered 400)."""


@dataclasses.dataclass
class Page:
    """Rows of a dataset as JSON texts, and where the next page starts (None: this is the last)."""

    dataset: str
    items: List[str]
    next_after: Optional[str]

    def items_json(self) -> str:
        return "[" + ",".join(self.items) + "]"


LIST = ("SELECT name, kind, key, columns, rows, bad_lines, replaced_at, source FROM datasets ORDER BY name")


def datasets(connection: psycopg.Connection) -> List[dict]:
    """Every dataset: name, kind, key, columns, rows, bad_lines, replaced_at, source (a file's name, no folder)."""
    with connection.cursor() as cursor:
        cursor.execute(LIST)
        names = [column.name for column in cursor.description]
        found = [dict(zip(names, row)) for row in cursor.fetchall()]
    for dataset in found:  # rows registered before only the name was stored held the whole path
        dataset["source"] = PurePath(dataset["source"]).name
    return found


def page(connection: psycopg.Connection, name: str, limit: int, after: Optional[str] = None) -> Page:
    """Up to ``limit`` rows of dataset ``name`` in key order, after the key value ``after`` (text) if given."""
    if "\x00" in name:
        raise UnknownDataset(f"no dataset {shown(name)}", "a name holds no NUL character",
                             "GET /read lists the datasets")
    if after is not None and "\x00" in after:
        raise BadAfter("bad after", "it holds a NUL character", "give the `after` of the previous page's next link")
    for attempt in range(ATTEMPTS):
        try:
            with connection.transaction():
                return _page(connection, name, limit, after)
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as err:
            if attempt == ATTEMPTS - 1:  # not a swap met halfway: the table went another way
                raise MissingTable(f"dataset {shown(name)} has no table", "its table or key column was dropped or"
                                   " altered outside gigsterpg", "load or transform it again") from err
    raise AssertionError("unreachable")  # pragma: no cover


def _page(connection, name: str, limit: int, after: Optional[str]) -> Page:
    with connection.cursor() as cursor:
        cursor.execute("SELECT schema_name, table_name, key, columns FROM datasets WHERE name = %s", (name,))
        found = cursor.fetchone()
        if found is None:
            raise UnknownDataset(f"no dataset {shown(name)}", "nothing was loaded or transformed under that name",
                                 "GET /read lists the datasets")
        schema, table, key, columns = found
        key_type = next((column["type"] for column in columns if column["name"] == key), "text")
        where = sql.SQL("")
        params: list = []
        if after is not None:
            where = sql.SQL("WHERE t.{} > %s::{}").format(sql.Identifier(key), sql.SQL(key_type))
            params.append(after)
        params.append(limit + 1)
        # t.* is the row whatever the columns are named (a bare t would be a column named t).
        statement = sql.SQL("SELECT to_json(t.*)::text, t.{key}::text FROM {table} t {where} ORDER BY t.{key}"
                            " LIMIT %s").format(key=sql.Identifier(key), table=sql.Identifier(schema, table),
                                                where=where)
        try:
            with connection.transaction():
                cursor.execute(statement, params)
        except psycopg.errors.DataError as err:
            raise BadAfter("bad after (the value sent is not shown)",
                           f"it is not a value of the key {key!r} ({key_type})",
                           "give the `after` of the previous page's next link") from err
        rows = cursor.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(name, [row[0] for row in rows], rows[-1][1] if more else None)
