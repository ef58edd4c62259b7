"""A projection: one SQL query over a PostgreSQL source whose rows become MongoDB documents.

A projection is a file (``gigsterpg/lib/mongo/projections/<name>.sql``, or one
of the user's own): its ``-- needs: table(columns)`` lines name what it reads,
checked against the source's catalog before the query runs; every column of
its result is a field of the document, except ``count: <reason>`` columns,
which the run adds up per reason. Numbers with a fraction inside json columns
load as ``Decimal`` (psycopg's default would be binary floats), so money stays
exact all the way to Decimal128.
"""
import hashlib
import json
import re
import struct
import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Dict, List, Sequence

import psycopg
from bson.decimal128 import Decimal128
from psycopg import sql
from psycopg.adapt import Loader

from gigsterpg.exc import ConfigError, PrivilegeError, SourceError
from gigsterpg.lib.mongo.export import to_bson
from gigsterpg.text import shown

COUNT_PREFIX = "count: "
_NEEDS = re.compile(r"^--\s*needs:\s*([^\s(]+)\s*\(([^)]*)\)\s*$", re.MULTILINE)


# The projections shipped with gigsterpg (the API offers these names only).
PROJECTIONS = tuple(sorted(entry.name[:-4] for entry in resources.files("gigsterpg.lib.mongo.projections").iterdir()
                           if entry.name.endswith(".sql")))


@dataclass
class Projection:
    """A projection's query, and the tables and columns it reads (table -> columns)."""

    name: str
    sql: str
    needs: Dict[str, List[str]] = field(default_factory=dict)

    @property
    def driving_table(self) -> str:
        """The first table it names: one document per row of it (for the progress bar's total)."""
        return next(iter(self.needs), "")


def load_projection(name_or_file: str) -> Projection:
    """The projection shipped under that name (``orders``), or the one in that file."""
    path = Path(name_or_file)
    try:
        a_file = path.suffix == ".sql" or path.exists()
    except (OSError, ValueError):  # a name longer than the system takes, a NUL byte: no file of that name
        a_file = False
    if a_file:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read the projection file {shown(name_or_file)}", type(err).__name__,
                              "give a readable UTF-8 .sql file, or the name of a shipped projection (orders)",
                              value=name_or_file) from err
        name = path.stem
    else:
        shipped = resources.files("gigsterpg.lib.mongo.projections") / f"{name_or_file}.sql"
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,99}", name_or_file) or not shipped.is_file():
            raise ConfigError(f"unknown projection {shown(name_or_file)}", "no such projection is shipped and no such"
                              " file exists", "use orders, or give the path of a .sql file", value=name_or_file)
        text, name = shipped.read_text(encoding="utf-8"), name_or_file
    needs = {table: [c.strip() for c in columns.split(",") if c.strip()] for table, columns in _NEEDS.findall(text)}
    return Projection(name, text, needs)


def tax_rate(value) -> Decimal:
    """The tax rate as an exact Decimal from 0 to 1, or a ConfigError."""
    try:
        rate = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        rate = None
    if rate is None or not rate.is_finite() or not 0 <= rate <= 1:
        raise ConfigError("bad tax rate", "it must be a decimal number from 0 to 1 (0.15 is 15 percent)",
                          "set --tax-rate or GIGSTERPG_TAX_RATE, e.g. 0.15", value=value)
    return rate


def time_zone(value) -> str:
    """The IANA time zone name, checked, or a ConfigError."""
    name = str(value or "UTC").strip()
    try:
        if not re.fullmatch(r"[A-Za-z0-9_+\-/]+", name):
            raise ValueError(name)
        zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise ConfigError("unknown time zone", "it must be an IANA name such as UTC or America/Mexico_City",
                          "fix --time-zone or GIGSTERPG_TIME_ZONE", value=name) from None
    return name


def prepare_source(connection) -> None:
    """A source connection as projections read it: read-only, json left as text until a document needs it."""
    connection.read_only = True
    for name in ("json", "jsonb"):
        connection.adapters.register_loader(name, _RawJsonLoader)


def check_source(connection, projection: Projection, params: dict) -> None:
    """Refuse, in one line naming everything missing, a source that lacks a table or column the projection
    needs or may not read it; then let PostgreSQL plan the query (EXPLAIN), which finds the rest."""
    missing, denied = [], []
    with connection.cursor() as cursor:
        for table, columns in projection.needs.items():
            cursor.execute("SELECT to_regclass(%s)::oid", (table,))
            oid = cursor.fetchone()[0]
            if oid is None:
                missing.append(f"table {table}")
                continue
            cursor.execute("SELECT attname, has_column_privilege(%s, attnum, 'SELECT') FROM pg_attribute"
                           " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped", (oid, oid))
            present = dict(cursor.fetchall())
            missing += [f"column {table}.{column}" for column in columns if column not in present]
            denied += [f"{table}.{column}" for column in columns if present.get(column) is False]
    connection.rollback()
    if missing:
        raise SourceError(f"the source lacks what projection {shown(projection.name)} reads",
                          "missing " + ", ".join(missing),
                          "point --pg at the shop's database, or adapt a copy of the projection to your names"
                          " (--projection FILE)")
    if denied:
        tables = sorted({name.rsplit(".", 1)[0] for name in denied})
        raise PrivilegeError(f"the PostgreSQL role may not read what projection {shown(projection.name)} reads",
                             "no SELECT on " + ", ".join(denied), f"GRANT SELECT ON {', '.join(tables)} to it")
    try:
        # Prepared (so one statement only: "SELECT ...; DROP ..." is refused before anything runs), and the
        # query as the run sends it (a data-modifying WITH is refused there too).
        connection.execute("EXPLAIN " + hashed(projection), params, prepare=True)
    except psycopg.OperationalError:
        raise  # the connection, not the projection
    except psycopg.DatabaseError as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, psycopg.errors.SyntaxError) and "multiple commands" in message:
            message = "it holds more than one statement, and a projection is one query that reads"
        error = PrivilegeError if isinstance(err, psycopg.errors.InsufficientPrivilege) else SourceError
        raise error(f"projection {shown(projection.name)} does not run on the source", message,
                    "fix the projection's SQL or its needs lines, or grant the role what it lacks") from err
    finally:
        connection.rollback()


def count_rows(connection, projection: Projection) -> int:
    """The rows of the driving table (the documents to come, rejects included), for the progress bar."""
    if not projection.driving_table:
        return 0
    try:
        parts = projection.driving_table.split(".")
        name = sql.SQL(".").join(map(sql.Identifier, parts))
        return connection.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()[0]
    finally:
        connection.rollback()


class RawJson(str):
    """A json value's text, parsed only when its row becomes a document (most rows of a re-run do not)."""


class _RawJsonLoader(Loader):
    def load(self, data) -> RawJson:
        return RawJson(bytes(data).decode("utf-8"))


# What a document is made of, besides the row: bump it when Shape.document changes, so every document is
# written again once.
DOCUMENT_FORMAT = b"gigsterpg document format 1"
HASH_COLUMN = "gigsterpg_row_md5"


def hashed(projection: Projection) -> str:
    """The projection's query with the md5 of each row's text in front (PostgreSQL hashes it)."""
    body = projection.sql.rstrip().rstrip(";")
    return f"SELECT md5(q::text) AS {HASH_COLUMN}, q.* FROM (\n{body}\n) AS q"


def row_hash(md5_hex: str, projection: Projection) -> bytes:
    """The hash stored for a document: its row's md5, the projection's text and the document format."""
    return hashlib.blake2b(md5_hex.encode() + projection.sql.encode() + DOCUMENT_FORMAT, digest_size=16).digest()


class Shape:
    """The columns of a projection's result: where ``_id`` is, which are counts, how a row becomes a document."""

    def __init__(self, names: Sequence[str]):
        if "_id" not in names:
            raise SourceError("the projection's result has no _id column", "each document's _id is a column",
                              "select the order's key AS _id")
        self.names = list(names)
        self.id_place = self.names.index("_id")
        self.counts = [(place, name[len(COUNT_PREFIX):]) for place, name in enumerate(self.names)
                       if name.startswith(COUNT_PREFIX)]
        self.fields = [(place, name) for place, name in enumerate(self.names) if not name.startswith(COUNT_PREFIX)]

    def document(self, row: Sequence) -> dict:
        """The document of one row: every column but the counts, json parsed with exact decimals.

        Raises:
            NotDecimal128: a number of the row has no exact Decimal128 (its ``field`` names the column).
        """
        try:
            return {name: bson_value(row[place]) for place, name in self.fields}
        except NotDecimal128 as err:
            err.field = next((name for place, name in self.fields if not _fits(row[place])), "")
            raise

    def shown(self, row: Sequence) -> dict:
        """The row as a reject shows it: like ``document``, a number Decimal128 cannot hold kept as its text."""
        return {name: _lenient(row[place]) for place, name in self.fields}


class NotDecimal128(ValueError):
    """A number that Decimal128 cannot hold exactly: NaN, an infinity, more than 34 digits, or out of range.

    Money is Decimal128 or the order is a reject, never a string in one document and a number in the next.
    """

    def __init__(self, value, field: str = ""):
        self.value = value
        self.field = field
        super().__init__(str(value))


def _fits(value) -> bool:
    try:
        bson_value(value)
    except NotDecimal128:
        return False
    return True


def _lenient(value):
    try:
        return bson_value(value)
    except NotDecimal128:
        if type(value) is RawJson:
            return to_bson(json.loads(value, parse_float=Decimal))
        return to_bson(value)


_DECIMALS: Dict[str, Decimal128] = {}  # prices repeat: each distinct text is converted once
_PLAIN = (str, bool, float, type(None))


def bson_value(value):
    """``export.to_bson`` for a projection's values, fast on what they are made of (text, numbers, json)."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is int:
        return value if -2 ** 63 <= value < 2 ** 63 else str(value)
    if kind is Decimal:
        return decimal128(value)
    if kind is RawJson:
        return bson_value(json.loads(value, parse_float=Decimal))
    if kind is list:
        return [bson_value(item) for item in value]
    if kind is dict:
        return {key: bson_value(item) for key, item in value.items()}
    return to_bson(value)


def decimal128(value: Decimal) -> Decimal128:
    """A Decimal as Decimal128, exactly (its BID encoding built directly).

    Raises:
        NotDecimal128: NaN, an infinity, more than 34 significant digits, or an exponent out of range.
    """
    text = str(value)
    found = _DECIMALS.get(text)
    if found is None:
        sign, digits, exponent = value.as_tuple()
        if not value.is_finite() or len(digits) > 34 or not -6176 <= exponent <= 6111:
            raise NotDecimal128(value)
        coefficient = int("".join(map(str, digits)))
        high = (sign << 63) | ((exponent + 6176) << 49) | (coefficient >> 64)
        found = Decimal128.from_bid(struct.pack("<QQ", coefficient & 0xFFFFFFFFFFFFFFFF, high))
        if len(_DECIMALS) > 100_000:
            _DECIMALS.clear()
        _DECIMALS[text] = found
    return found
