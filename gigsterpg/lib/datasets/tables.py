"""What ``load-csv`` and ``transform`` share: a per-dataset lock, the atomic swap of a new table for the old one,
and the ``datasets`` row written in the same transaction.

A dataset's table is built beside the old one under a working name and put in
its place by DROP + RENAME at the very end of the transaction, so a reader
sees the old rows or the new ones, never a part: PostgreSQL resolves a
query's table once it holds its lock, and a query that waited for the swap
reads the new table (READ COMMITTED takes its snapshot after that).
"""
import contextlib
import dataclasses
import hashlib
import json
import re
from pathlib import PurePath
from typing import Iterator, List, Optional

import psycopg
from psycopg import sql

from gigsterpg.config import Settings, mask_url
from gigsterpg.connections import open_pg, pg_errors, short_reason
from gigsterpg.exc import ConfigError, ConnectError, SourceError
from gigsterpg.text import shown

# A name of ours for a PostgreSQL table: no quoting surprises in URLs, logs or SQL written by hand.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
# The working table of a dataset: its name cut, then a mark and a digest of schema.table, so two datasets never
# share one and no table of a user can have it (--table / --into names ending so are refused); 63 bytes at most.
WORK_MARK = "__gpw_"
WORKING = re.compile(re.escape(WORK_MARK) + r"[0-9a-f]{12}\Z")
KEY_SUFFIX = "_pkey"
SYSTEM_COLUMNS = ("tableoid", "xmin", "cmin", "xmax", "cmax", "ctid")  # in every table: no column may be named so
NAME_BYTES = 63  # PostgreSQL cuts a longer name to this many bytes
ROW_KEY = "_row"  # the key of a CSV dataset loaded without one: the rows' order in the file
# pg type (format_type) -> the kind a CSV column of it holds; anything else reads as text.
KINDS_OF_TYPES = {"bigint": "integer", "integer": "integer", "smallint": "integer", "numeric": "numeric",
                  "boolean": "boolean", "date": "date", "timestamp without time zone": "timestamp",
                  "timestamp with time zone": "timestamp", "text": "text"}


def check_name(value: str, what: str) -> str:
    """``value`` when it is a plain SQL name (letters, digits, _; 63 at most), else a ConfigError."""
    if not value or not NAME.match(value):
        raise ConfigError(f"bad {what} {shown(value)}", "it must be letters, digits and _ (not first), 63 at most",
                          f"give another {what}", value=value)
    return value


def check_column_name(value: str, what: str) -> str:
    """``value`` when it can name a column (a NUL byte or a line end cannot), else a ConfigError."""
    if "\x00" in value or "\n" in value or "\r" in value:
        raise ConfigError(f"bad {what} {shown(value)}", "a column's name holds no NUL byte and no line end",
                          f"give the {what} as the header names it", value=value)
    return value


def check_schema(value: str) -> str:
    """``value`` when it is a plain SQL name and not one of PostgreSQL's own schemas, else a ConfigError."""
    check_name(value, "schema")
    if value.lower().startswith("pg_") or value.lower() == "information_schema":
        raise ConfigError(f"bad schema {shown(value)}", "PostgreSQL's own schemas (pg_*, information_schema) hold no"
                          " datasets", "give another --schema", value=value)
    return value


def check_table(value: str, what: str) -> str:
    """``value`` when it is a plain SQL name that is not a working table's (``WORKING``), else a ConfigError."""
    check_name(value, what)
    if WORKING.search(value):
        raise ConfigError(f"bad {what} {shown(value)}", f"names ending {WORK_MARK} and 12 hex digits are gigsterpg's"
                          " working tables", f"give another {what}", value=value)
    return value


def check_columns(names: List[str], key: Optional[str], what: str) -> None:
    """A ConfigError when the columns ``names`` cannot make a dataset table as they are (``what``: its source).

    A system column's name, ``_row`` without a key (the key added then), or two names PostgreSQL would cut
    to the same 63 bytes: the user renames, or declares the key.
    """
    for name in names:
        if name in SYSTEM_COLUMNS:
            raise ConfigError(f"cannot load {what}: it has a column {shown(name)}", f"{', '.join(SYSTEM_COLUMNS)} are"
                              " the names of PostgreSQL's system columns, in every table",
                              "rename that column in the header", value=name)
    if ROW_KEY in names and not key:
        raise ConfigError(f"cannot load {what}: it has a column {ROW_KEY!r}", f"{ROW_KEY} is the key added when"
                          " none is declared (the lines' order)", f"give --key {ROW_KEY} if its values are a key,"
                          " --key another column, or rename it in the header", value=ROW_KEY)
    seen: dict = {}
    for name in names:
        cut = name.encode()[:NAME_BYTES].decode("utf-8", "ignore")
        if cut in seen:
            raise ConfigError(f"cannot load {what}: the columns {shown(seen[cut])} and {shown(name)} are the same in"
                              f" their first {NAME_BYTES} bytes", f"PostgreSQL cuts a name to {NAME_BYTES} bytes",
                              "shorten them in the header so that they differ sooner", value=name)
        seen[cut] = name


def check_dialect(delimiter: Optional[str], quotechar: Optional[str]) -> None:
    """A ConfigError when ``--delimiter`` or ``--quote`` is not one character that can be one."""
    for flag, value in (("--delimiter", delimiter), ("--quote", quotechar)):
        if value is not None and (len(value) != 1 or value in "\r\n" or (flag == "--quote" and value.isalnum())):
            raise ConfigError(f"bad {flag} {shown(value)}", "it must be one character, not a line end"
                              + (" nor a letter or digit" if flag == "--quote" else ""),
                              f"give {flag} one character (e.g. {flag} ';')" if flag == "--delimiter"
                              else "give --quote one character (e.g. --quote \"'\"), or leave it out", value=value)
    if delimiter is not None and delimiter == (quotechar or '"'):
        raise ConfigError(f"the delimiter {shown(delimiter)} is also the quote character", "a field could not be told"
                          " from a quoted one", "give --quote another character, or another --delimiter",
                          value=delimiter)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:12]


def work_name(schema: str, table: str) -> str:
    """The name the new table of ``schema.table`` is built under (see ``WORKING``)."""
    mark = WORK_MARK + _digest(schema, table)
    return table[:63 - len(mark)] + mark


def key_name(table: str) -> str:
    """The primary key's name of a dataset table: ``<table>_pkey``, cut and told apart by a digest when long."""
    if len(table) + len(KEY_SUFFIX) <= 63:
        return table + KEY_SUFFIX
    mark = "_" + _digest(table) + KEY_SUFFIX
    return table[:63 - len(mark)] + mark


def dataset_name(settings: Settings, schema: str, table: str) -> str:
    """The name readers use: the table's in the datasets schema, ``schema.table`` elsewhere."""
    return table if schema == settings.datasets_schema else f"{schema}.{table}"


def migrate(settings: Settings) -> None:
    """Bring gigsterpg's schema (the ``datasets`` registry among it) to the newest migration."""
    pg = open_pg(settings)
    try:
        with pg_errors(pg.url):
            pg.migrate_head()
    finally:
        pg.dispose()


@contextlib.contextmanager
def connected(settings: Settings) -> Iterator[psycopg.Connection]:
    """A psycopg connection of the datasets' writers (no transaction begun), closed at the end of the block."""
    url = settings.require_pg()
    with pg_errors(url):
        connection = psycopg.connect(url, application_name="gigsterpg-datasets", connect_timeout=10)
    try:
        yield connection
    finally:
        connection.close()


@contextlib.contextmanager
def kept(connection: psycopg.Connection, url: str) -> Iterator[None]:
    """The connection lost inside the block (server stopped, backend terminated): one line naming the rerun.

    Inside ``pg_errors``, which would call it "cannot connect".
    """
    try:
        yield
    except psycopg.OperationalError as err:
        if not connection.broken:
            raise
        raise ConnectError(f"lost the connection to PostgreSQL at {mask_url(url)}", short_reason(err),
                           "nothing of the file or query in hand was committed: run the same command again once"
                           " PostgreSQL answers", url=mask_url(url)) from err


@contextlib.contextmanager
def transaction(settings: Settings) -> Iterator[psycopg.Connection]:
    """A psycopg connection in one transaction (committed at the end of the block); errors translated."""
    url = settings.require_pg()
    with connected(settings) as connection, pg_errors(url), kept(connection, url), connection.transaction():
        yield connection


def prepare(cursor, schema: str, name: str) -> None:
    """Take the dataset's lock (one writer at a time) and make its schema when it is missing."""
    cursor.execute("SELECT pg_advisory_xact_lock(hashtext('gigsterpg dataset ' || %s))", (name,))
    cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


def exists(cursor, schema: str, table: str) -> bool:
    cursor.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL", (schema, table))
    return cursor.fetchone()[0]


def registered(cursor, schema: str, table: str) -> Optional[dict]:
    """The ``datasets`` row of the table, or None."""
    cursor.execute("SELECT name, kind, key, columns FROM datasets WHERE schema_name = %s AND table_name = %s",
                   (schema, table))
    row = cursor.fetchone()
    return dict(zip(("name", "kind", "key", "columns"), row)) if row else None


def refuse_foreign(cursor, schema: str, table: str) -> None:
    """A SourceError when ``schema.table`` exists but is no dataset (a replicated table, say): never replaced."""
    if exists(cursor, schema, table) and registered(cursor, schema, table) is None:
        raise SourceError(f"the table {schema}.{table} exists and is not a dataset", "load-csv and transform only"
                          " replace tables they made", "choose another --table / --into or --schema")


def work_table(cursor, schema: str, table: str) -> str:
    """The working name the new table is built under; a SourceError when a table of that name exists.

    It is made in the transaction that swaps it in, so a crash never leaves one behind: a table of that
    name is someone else's and is never dropped.
    """
    work = work_name(schema, table)
    if exists(cursor, schema, work):
        raise SourceError(f"cannot build {schema}.{table}: a table {schema}.{work} exists that gigsterpg did not"
                          " make", "gigsterpg builds the new table under that name", f"rename or drop {schema}.{work}")
    return work


def add_key(cursor, schema: str, table: str, key: str, what: str) -> None:
    """PRIMARY KEY (key) on the new table; a SourceError naming the column when its values are not a key."""
    try:
        with cursor.connection.transaction():
            cursor.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                sql.Identifier(schema, table), sql.Identifier(key)))
    except (psycopg.errors.UniqueViolation, psycopg.errors.NotNullViolation) as err:
        raise SourceError(f"{what}: the key column {shown(key)} is not a key", str(err).splitlines()[0],
                          "declare a column whose values are unique and never empty (--key)") from err
    except psycopg.errors.UndefinedColumn as err:
        raise ConfigError(f"{what}: no key column {shown(key)}", "the table has no such column",
                          "give --key one of its columns", value=key) from err


def swap(cursor, schema: str, work: str, table: str) -> None:
    """Put the new table in the old one's place (its primary key renamed to match), at the end of the transaction."""
    refuse_foreign(cursor, schema, table)  # again: a table made meanwhile by someone else is not dropped either
    cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, table)))
    cursor.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(schema, work), sql.Identifier(table)))
    cursor.execute("SELECT conname FROM pg_constraint WHERE conrelid = format('%%I.%%I', %s::text, %s::text)::regclass"
                   " AND contype = 'p'", (schema, table))
    wanted = key_name(table)
    for (name,) in cursor.fetchall():
        # The old table's key went with it; a relation of another's holding the name keeps the key's own.
        if name != wanted and not exists(cursor, schema, wanted):
            cursor.execute(sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                sql.Identifier(schema, table), sql.Identifier(name), sql.Identifier(wanted)))


def catalog_columns(cursor, schema: str, table: str) -> List[dict]:
    """The table's columns in order: name, PostgreSQL type, and the CSV kind of that type."""
    cursor.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                   " WHERE attrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND attnum > 0"
                   " AND NOT attisdropped ORDER BY attnum", (schema, table))
    return [{"name": name, "type": kind, "kind": KINDS_OF_TYPES.get(kind.split("(")[0], "text")}
            for name, kind in cursor.fetchall()]


@dataclasses.dataclass
class Registration:
    """The ``datasets`` row of a table just replaced."""

    name: str
    schema: str
    table: str
    kind: str
    key: str
    columns: List[dict]
    source: str  # the file's path: its name alone is stored (/read shows it, never a folder of the machine)
    rows: int
    bad_lines: int = 0


def register(cursor, entry: Registration) -> None:
    """Insert or replace the dataset's row (in the transaction that replaced its table)."""
    cursor.execute(
        "INSERT INTO datasets (name, schema_name, table_name, kind, key, columns, source, rows, bad_lines,"
        " replaced_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())"
        " ON CONFLICT (name) DO UPDATE SET schema_name = EXCLUDED.schema_name, table_name = EXCLUDED.table_name,"
        " kind = EXCLUDED.kind, key = EXCLUDED.key, columns = EXCLUDED.columns, source = EXCLUDED.source,"
        " rows = EXCLUDED.rows, bad_lines = EXCLUDED.bad_lines, replaced_at = now()",
        (entry.name, entry.schema, entry.table, entry.kind, entry.key, json.dumps(entry.columns),
         PurePath(entry.source).name,
         entry.rows, entry.bad_lines))
