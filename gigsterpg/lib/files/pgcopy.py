"""COPY in and out of PostgreSQL: Arrow batches of a CSV file, and files in PostgreSQL's binary COPY format.

Shared by the daily snapshots and ``load-csv``. Every function takes an open
psycopg cursor and leaves the transaction to the caller, so that a load and
the bookkeeping beside it commit together or not at all.
"""
import dataclasses
import hashlib
import logging
from typing import BinaryIO, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from gigsterpg.exc import SourceError

from gigsterpg.lib.files import csvsource, pgbinary
from gigsterpg.lib.files.csvsource import Column

CHUNK = 1024 * 1024
logger = logging.getLogger(__name__)


def qualified(table: str, schema: Optional[str] = None) -> sql.Composable:
    """``"schema"."table"`` (or ``"table"``), quoted."""
    return sql.Identifier(schema, table) if schema else sql.Identifier(table)


def create_table(cursor, table: str, columns: Sequence[Tuple[str, str]], schema: Optional[str] = None,
                 replace: bool = False) -> None:
    """CREATE TABLE of ``columns`` (name, PostgreSQL type); with ``replace``, dropped first."""
    name = qualified(table, schema)
    if replace:
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
    cursor.execute(sql.SQL("CREATE TABLE {} ({})").format(name, sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(column), sql.SQL(kind)) for column, kind in columns)))


def pg_columns(columns: Sequence[Column]) -> list:
    """(name, PostgreSQL type) pairs of CSV columns."""
    return [(column.name, column.pg_type) for column in columns]


@dataclasses.dataclass
class LoadCount:
    """What a COPY of a CSV file wrote and what it set aside."""

    rows: int = 0
    bad: int = 0


def copy_batches(cursor, table: str, columns: Sequence[Tuple[str, str]], batches: Iterable,
                 schema: Optional[str] = None, retype: Optional[Callable[[csvsource.Retype], None]] = None,
                 numbered: Optional[str] = None) -> LoadCount:
    """Binary ``COPY table (columns) FROM STDIN`` of Arrow batches; returns the rows written.

    The batches are ``csvsource.read_batches``'s (or ``stream``'s): strings in
    the form PostgreSQL reads as the columns' types (dates ISO), bad lines
    already set aside. The file is read and each batch encoded (``pgbinary``,
    compiled code) on a thread of its own, a few batches ahead, while this one
    sends them: PostgreSQL writes one batch while the next is read. A
    ``csvsource.Retype`` in the stream ends the COPY, ``retype`` changes the
    table's columns, and a new COPY goes on in the same transaction. Should
    Arrow fail to cast a batch, it and the rest go by ``COPY ... (FORMAT csv)``
    instead (Arrow's CSV writer; PostgreSQL parses the text). No Python code
    touches a value but a numeric of more than 15 digits or with an exponent.
    ``numbered`` names a bigint column that gets each row's number (1, 2, ...
    in the order written: the lines' order), sent with the row: cheaper for
    the server than an identity column's ``nextval`` per row.
    """
    count = LoadCount()
    names = sql.SQL(", ").join(sql.Identifier(name) for name in [n for n, _ in columns] + [numbered] if name)
    statements = {True: sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(qualified(table, schema), names),
                  False: sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, ENCODING 'UTF8')").format(
                      qualified(table, schema), names)}
    binary, carry, done = True, None, False
    items = csvsource.Ahead(_encoded(batches, [kind for _, kind in columns], table, numbered is not None))
    try:
        while not done:
            retyped = None
            with cursor.copy(statements[binary]) as copy:
                if binary:
                    copy.write(pgbinary.HEADER)
                if carry is not None:
                    copy.write(csvsource.write_batch(_numbered(carry, numbered, count.rows)))
                    count.rows, carry = count.rows + carry.num_rows, None
                for item in items:
                    if isinstance(item, csvsource.Retype):
                        retyped = item
                        break
                    batch, data = item
                    if binary and data is None:
                        carry = batch
                        break
                    copy.write(data if binary else csvsource.write_batch(_numbered(batch, numbered, count.rows)))
                    count.rows += batch.num_rows
                else:
                    done = True
                if binary:
                    copy.write(pgbinary.TRAILER)
            binary = binary and carry is None
            if retyped is not None and retype is not None:
                retype(retyped)
    except (psycopg.errors.ProgramLimitExceeded, psycopg.errors.DataError) as err:
        raise SourceError(f"PostgreSQL refused a row of the CSV file for {table}", str(err).splitlines()[0],
                          "load fewer or narrower columns (a row must fit in 8 kB less its long texts)") from err
    finally:
        items.close()
    return count


def _numbered(batch, numbered: Optional[str], before: int):
    """The batch with its rows' numbers as a last column (for the CSV way in)."""
    if not numbered:
        return batch
    return batch.append_column(numbered, pa.array(np.arange(before + 1, before + 1 + batch.num_rows, dtype=np.int64)))


def _encoded(batches: Iterable, types: List[str], table: str, numbered: bool) -> Iterator:
    """``(batch, binary COPY bytes)`` of each batch (bytes None once a batch would not cast), Retypes as they come."""
    binary, before = True, 0
    for item in batches:
        if isinstance(item, csvsource.Retype):
            types = [column.pg_type for column in item.columns]
            yield item
            continue
        if not item.num_rows:
            continue
        data = None
        if binary:
            try:
                data = pgbinary.encode(item, types, before + 1 if numbered else None)
            except ValueError as err:
                logger.info("binary COPY into %s stops, the rest goes as CSV: %s", table, err)
                binary = False
        before += item.num_rows
        yield item, data


@dataclasses.dataclass
class FileCount:
    """Bytes moved by a file COPY and their SHA-256."""

    bytes: int = 0
    sha256: str = ""


def copy_out(cursor, query: sql.Composable, handle: BinaryIO) -> FileCount:
    """``COPY (query) TO STDOUT (FORMAT BINARY)`` streamed into ``handle``, hashed on the way."""
    digest, size = hashlib.sha256(), 0
    with cursor.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(query)) as copy:
        for chunk in copy:
            handle.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    return FileCount(size, digest.hexdigest())


def copy_in(cursor, table: str, column_names: Sequence[str], handle: BinaryIO,
            schema: Optional[str] = None) -> FileCount:
    """A binary COPY file streamed from ``handle`` into ``table`` (its columns in the file's order)."""
    digest, size = hashlib.sha256(), 0
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        qualified(table, schema), sql.SQL(", ").join(sql.Identifier(name) for name in column_names))
    with cursor.copy(statement) as copy:
        while True:
            chunk = handle.read(CHUNK)
            if not chunk:
                break
            copy.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    return FileCount(size, digest.hexdigest())


def sha256_file(path) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
