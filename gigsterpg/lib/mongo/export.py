"""The other direction: any PostgreSQL table into MongoDB documents, one per row.

The table's structure is read from the catalog at run time; its name is
looked up there (never spliced into SQL as text) and quoted by psycopg. Each
row becomes a document whose ``_id`` is the primary key's value (a composite
key: a sub-document of its columns). Rows are streamed with a server-side
cursor and written with unordered bulk replaces (upserts), so a second export
updates in place; documents whose row is gone are then deleted, found by
streaming the collection's ``_id``s and asking the table which still exist.
Memory stays bounded by the batch size. The streaming, bulk writes and deletes
are ``gigsterpg.lib.mongo.bulk``, shared with the other projections.
"""
import datetime
import logging
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, List, Optional, Sequence

import psycopg
from bson.binary import Binary
from bson.decimal128 import Decimal128
from psycopg import sql

from gigsterpg import faults
from gigsterpg.exc import ConfigError, NoPrimaryKeyError, PrivilegeError, SourceError, TableNotFoundError
from gigsterpg.lib.mongo.bulk import BATCH, BulkWriter, connect, delete_gone, stream
from gigsterpg.text import shown

logger = logging.getLogger(__name__)

__all__ = ["BATCH", "Column", "ExportReport", "Table", "connect", "count_rows", "delete_missing", "describe",
           "document_of", "export", "from_bson_key", "split_name", "to_bson"]


@dataclass
class Column:
    name: str
    type: str  # as format_type() gives it: "integer", "character varying(20)", "numeric(10,2)[]"...


@dataclass
class Table:
    """A table as the catalog describes it."""

    schema: str
    name: str
    columns: List[Column]
    key: List[str]
    estimated_rows: int = 0

    @property
    def qualified(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.name))

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass
class ExportReport:
    table: str
    collection: str
    rows: int = 0
    written: int = 0
    deleted: int = 0
    seconds: float = 0.0
    errors: List[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def split_name(table: str, schema: Optional[str] = None):
    """(schema or None, name) from ``[schema.]name``; an explicit ``schema`` keeps dots in the name."""
    if not table:
        raise ConfigError("no table given", "the export needs a table name", "pass --table [schema.]name")
    if schema is None and "." in table:
        schema, table = table.split(".", 1)
    return schema, table


def describe(connection, table: str, schema: Optional[str] = None) -> Table:
    """Look the table up in the catalog (exact names; without a schema, along the search path)."""
    schema, name = split_name(table, schema)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.oid, n.nspname, c.relname, greatest(c.reltuples, 0)::bigint FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
            "  AND (n.nspname = %s::text OR (%s::text IS NULL AND n.nspname = ANY(current_schemas(false))))"
            " ORDER BY array_position(current_schemas(false), n.nspname) NULLS LAST LIMIT 1",
            (name, schema, schema))
        found = cursor.fetchone()
        if found is None:
            where = f"schema {shown(schema)}" if schema else "the search path"
            raise TableNotFoundError(f"table {shown(name)} not found in {where}", "no such table or view",
                                     "check the table name (it is case-sensitive) and the schema")
        oid, schema, name, estimate = found
        cursor.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                       " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (oid,))
        columns = [Column(n, t) for n, t in cursor.fetchall()]
        cursor.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
                       " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s AND i.indisprimary"
                       " ORDER BY array_position(i.indkey::int2[], a.attnum)", (oid,))
        key = [row[0] for row in cursor.fetchall()]
        if not key:
            raise NoPrimaryKeyError(f"table {schema}.{name} has no primary key",
                                    "each document's _id is the row's primary key",
                                    "add a primary key to the table, or export a view of one that has it")
        cursor.execute("SELECT has_schema_privilege(%s, 'USAGE'), has_table_privilege(%s, 'SELECT')", (schema, oid))
        usage, select = cursor.fetchone()
        if not (usage and select):
            grant = f"GRANT SELECT ON {schema}.{name}" if not select else f"GRANT USAGE ON SCHEMA {schema}"
            raise PrivilegeError(f"the PostgreSQL role may not read {schema}.{name}",
                                 "permission denied" + ("" if usage else f" for schema {schema}"), f"{grant} to it")
    connection.rollback()
    return Table(schema, name, columns, key, estimate)


def to_bson(value):
    """A PostgreSQL value (as psycopg loads it) as the BSON value that keeps its meaning."""
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, int) and not isinstance(value, bool) and not -2 ** 63 <= value < 2 ** 63:
            return str(value)  # beyond int64 (numeric with no scale loads as int): text keeps every digit
        return value
    if isinstance(value, Decimal):
        if value.is_finite():
            try:
                exact = Decimal128(value)
                if exact.to_decimal() == value:
                    return exact
            except Exception:  # too many digits for Decimal128
                pass
        return str(value)  # NaN, Infinity or more than 34 digits: text keeps it exactly
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    if isinstance(value, datetime.date):  # BSON has no date: midnight UTC
        return datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.timezone.utc)
    if isinstance(value, (datetime.time, datetime.timedelta)):
        return str(value)
    if isinstance(value, uuid.UUID):
        return Binary.from_uuid(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Binary(bytes(value))
    if isinstance(value, (list, tuple)):
        return [to_bson(item) for item in value]
    if isinstance(value, dict):  # json / jsonb
        return {str(k): to_bson(v) for k, v in value.items()}
    return str(value)  # inet, money, ranges, geometric types...: their text form


def document_of(table: Table, names: Sequence[str], row: Sequence) -> dict:
    doc = {name: to_bson(value) for name, value in zip(names, row)}
    if len(table.key) == 1:
        doc["_id"] = doc[table.key[0]]
    else:
        doc["_id"] = {name: doc[name] for name in table.key}
    return doc


def export(connection, collection, table: Table, batch_size: int = BATCH,
           progress: Optional[Callable[[int], None]] = None) -> ExportReport:
    """Every row of ``table`` into ``collection``; then delete the documents whose row is gone."""
    report = ExportReport(table.label, collection.name)
    started = time.monotonic()
    names = [column.name for column in table.columns]
    writer = BulkWriter(collection)
    query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(map(sql.Identifier, names)), table.qualified)
    for _, rows in stream(connection, query, batch_size=batch_size):
        report.written += writer.write([document_of(table, names, row) for row in rows])
        faults.point("export-written")
        report.rows += len(rows)
        if progress:
            progress(report.rows)
    report.deleted = delete_missing(connection, collection, table, batch_size)
    report.seconds = time.monotonic() - started
    return report


def delete_missing(connection, collection, table: Table, batch_size: int = BATCH) -> int:
    """Delete the documents whose row no longer exists: their ids, a batch at a time, checked against the table."""
    keys = {column.name: column.type for column in table.columns if column.name in table.key}
    wanted = sql.SQL(", ").join(
        sql.SQL("{}::{}[]").format(sql.Placeholder(), sql.SQL(keys[name])) for name in table.key)
    probe = sql.SQL("SELECT k.n FROM unnest({}, {}::int[]) AS k({}, n) WHERE NOT EXISTS"
                    " (SELECT 1 FROM {} t WHERE {})").format(
        wanted, sql.Placeholder(), sql.SQL(", ").join(map(sql.Identifier, table.key)), table.qualified,
        sql.SQL(" AND ").join(sql.SQL("t.{0} = k.{0}").format(sql.Identifier(name)) for name in table.key))

    def gone(batch: List) -> List:
        try:
            columns = [[from_bson_key(doc_id, name, table) for doc_id in batch] for name in table.key]
            with connection.cursor() as cursor:
                cursor.execute(probe, (*columns, list(range(len(batch)))))
                return [batch[n] for (n,) in cursor.fetchall()]
        except (psycopg.DataError, psycopg.ProgrammingError, KeyError, TypeError) as err:
            raise SourceError(f"collection {shown(collection.name)} holds documents this export did not write",
                              f"an _id does not fit the key of {table.label} ({type(err).__name__})",
                              "export into a collection of its own (--collection)") from err
        finally:
            connection.rollback()

    return delete_gone(collection, gone, batch_size, point="export-deleting")


def from_bson_key(doc_id, name: str, table: Table):
    """One key column's value from a document's ``_id`` (back to what psycopg sends for it)."""
    value = doc_id[name] if len(table.key) > 1 else doc_id
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, Binary) and value.subtype == 4:
        return value.as_uuid()
    if isinstance(value, Binary):
        return bytes(value)
    return value


def count_rows(connection, table: Table) -> int:
    """The table's exact row count (a scan, but a cheap one next to the export's)."""
    try:
        return connection.execute(sql.SQL("SELECT count(*) FROM {}").format(table.qualified)).fetchone()[0]
    finally:
        connection.rollback()
