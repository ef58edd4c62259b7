"""Reading a CSV file as typed rows: encoding, dialect, a required header, column types, bad lines kept.

The one CSV reader of gigsterpg, shared by the daily snapshots (``extract-csv``)
and ``load-csv``. Three calls, each usable alone::

    dialect = detect_dialect(path)                       # encoding/BOM, delimiter, quote
    columns = infer_columns(path, dialect)               # whole file read once; or declared={...}
    for record in read_rows(path, dialect, columns):     # a tuple of typed values, or a BadLine
        ...

Types (``Column.kind``): integer (bigint), numeric, boolean, date, timestamp
(timestamptz when the values carry an offset), text. Dates come as ISO
(``2022-09-26``), with slashes month first (``9/26/2022``; ``day_first=True``
reads ``26/9/2022``) or with dots day first (``26.09.2022``). An empty field
is NULL (Python's csv module cannot tell ``""`` from nothing). A line that
does not fit (too many or too few fields, a broken quote, a value not of its
column's type) comes out as a ``BadLine`` with file, line number, column and
reason; reading goes on. Memory stays flat: rows are streamed.
"""
import codecs
import csv
import dataclasses
import datetime
import itertools
import re
from decimal import Decimal
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Union

from gigsterpg.exc import ConfigError, SourceError
from gigsterpg.lib.files import csvkinds

KINDS = ("integer", "numeric", "boolean", "date", "timestamp", "text")
PG_TYPES = {"integer": "bigint", "numeric": "numeric", "boolean": "boolean", "date": "date",
            "timestamp": "timestamp", "text": "text"}
DELIMITERS = (",", ";", "\t", "|")
SAMPLE_BYTES = 64 * 1024
SAMPLE_LINES = 50
# A field may be long (a text column of a few MB), but an unclosed quote must not eat the file unbounded.
FIELD_LIMIT = 16 * 1024 * 1024
_INT8 = (-2 ** 63, 2 ** 63 - 1)
BATCH = 4096  # records a batch of the inference pass

_INTEGER = re.compile(r"[+-]?\d+\Z")
_NUMERIC = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")
_TRUE = frozenset({"true", "t", "yes", "y"})
_FALSE = frozenset({"false", "f", "no", "n"})
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})\Z")
_SLASH_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})\Z")
_DOT_DATE = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})\Z")
_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?\Z")


@dataclasses.dataclass(frozen=True)
class Dialect:
    """How a CSV file is written: what ``detect_dialect`` found or was told."""

    encoding: str = "utf-8"  # "utf-8-sig" when the file starts with a BOM
    delimiter: str = ","
    quotechar: str = '"'
    day_first: bool = False  # 1/2/2022 is 1 February, not January 2

    def reader(self, handle):
        """A ``csv.reader`` over an open text ``handle`` in this dialect (strict: a broken quote is an error)."""
        return csv.reader(handle, delimiter=self.delimiter, quotechar=self.quotechar, doublequote=True,
                          strict=True, skipinitialspace=False)


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a CSV file: its header name and its type."""

    name: str
    kind: str
    timezone: bool = False  # a timestamp column whose values carry an offset (timestamptz)

    @property
    def pg_type(self) -> str:
        """The PostgreSQL type the column loads into."""
        return "timestamptz" if self.kind == "timestamp" and self.timezone else PG_TYPES[self.kind]


@dataclasses.dataclass(frozen=True)
class BadLine:
    """A line that did not fit, and why: recorded, never silently dropped."""

    file: str
    line: int  # the physical line number where the record starts (the header is line 1)
    column: Optional[str]  # the column whose value did not fit; None for a line-level fault
    reason: str
    text: str = ""  # the raw fields, cut short

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def detect_dialect(path: Union[str, Path], delimiter: Optional[str] = None, quotechar: Optional[str] = None,
                   encoding: Optional[str] = None, day_first: bool = False) -> Dialect:
    """Encoding (BOM or not), delimiter and quote of ``path``, from its first 64 KiB; given values win.

    Raises SourceError when the file is empty or its first line is not a header.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(SAMPLE_BYTES)
    except OSError as err:
        raise SourceError(f"cannot read the CSV file {path}", err.strerror or str(err),
                          "check the path and its permissions") from err
    encoding = encoding or _detect_encoding(raw)
    text = _decode_sample(raw, encoding, path)
    if not text.strip():
        raise SourceError(f"the CSV file {path} is empty", "a header line is required",
                          "give a file whose first line names the columns")
    quotechar = quotechar or '"'
    lines = text.splitlines(keepends=True)
    if len(raw) == SAMPLE_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line of a cut sample is partial
    if delimiter is None:
        delimiter = _detect_delimiter(lines[:SAMPLE_LINES], quotechar)
    dialect = Dialect(encoding=encoding, delimiter=delimiter, quotechar=quotechar, day_first=day_first)
    header = next(dialect.reader(iter(lines)), [])
    _check_header(header, path)
    return dialect


def _detect_encoding(raw: bytes) -> str:
    if raw.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return "utf-8"


def _decode_sample(raw: bytes, encoding: str, path: Path) -> str:
    try:
        return codecs.getincrementaldecoder(encoding)().decode(raw, final=len(raw) < SAMPLE_BYTES)
    except (UnicodeDecodeError, LookupError) as err:
        raise SourceError(f"the CSV file {path} is not {encoding}", str(err),
                          "convert it to UTF-8 or give its encoding") from err


def _detect_delimiter(lines: List[str], quotechar: str) -> str:
    """The candidate that splits the sample's lines into the same number (> 1) of fields most often."""
    best, best_score = ",", (0, 0)
    for candidate in DELIMITERS:
        try:
            counts = [len(row) for row in csv.reader(lines, delimiter=candidate, quotechar=quotechar) if row]
        except csv.Error:
            continue
        if not counts or counts[0] < 2:
            continue
        score = (sum(count == counts[0] for count in counts), counts[0])
        if score > best_score:
            best, best_score = candidate, score
    return best


def _check_header(header: Sequence[str], path: Path) -> None:
    names = [name.strip() for name in header]
    if not names or any(not name for name in names):
        raise SourceError(f"the CSV file {path} has no usable header", "a column name is empty",
                          "give a first line that names every column")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SourceError(f"the CSV file {path} has no usable header", f"duplicate column names {duplicates}",
                          "give every column its own name")
    if all(_kind_of(name, False)[0] != "text" for name in names):
        raise SourceError(f"the CSV file {path} has no header", f"its first line {names[:5]} looks like data",
                          "add a first line that names the columns")


def _parse_date(value: str, day_first: bool) -> Optional[datetime.date]:
    try:
        match = _ISO_DATE.match(value)
        if match:
            return datetime.date(int(match[1]), int(match[2]), int(match[3]))
        match = _SLASH_DATE.match(value)
        if match:
            first, second = int(match[1]), int(match[2])
            month, day = (second, first) if day_first else (first, second)
            return datetime.date(int(match[3]), month, day)
        match = _DOT_DATE.match(value)
        if match:
            return datetime.date(int(match[3]), int(match[2]), int(match[1]))
    except ValueError:
        return None
    return None


def _parse_timestamp(value: str, day_first: bool) -> Optional[datetime.datetime]:
    if len(value) < 12:
        return None
    if value[4:5] == "-" and value[10:11] in ("T", " "):
        try:
            return datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
    day, _, clock = value.partition(" ")
    date = _parse_date(day, day_first)
    match = _TIME.match(clock.strip()) if date else None
    if not match:
        return None
    try:
        return datetime.datetime.combine(date, datetime.time(int(match[1]), int(match[2]), int(match[3] or 0),
                                                             int((match[4] or "0").ljust(6, "0"))))
    except ValueError:
        return None


def _parse_boolean(value: str) -> Optional[bool]:
    lowered = value.lower()
    return True if lowered in _TRUE else False if lowered in _FALSE else None


def _kind_of(value: str, day_first: bool):
    """The narrowest kind ``value`` is, and for a timestamp whether it carries an offset."""
    if _INTEGER.match(value):
        return ("integer", False) if _INT8[0] <= int(value) <= _INT8[1] else ("numeric", False)
    if _NUMERIC.match(value):
        return "numeric", False
    if _parse_boolean(value) is not None:
        return "boolean", False
    if _parse_date(value, day_first) is not None:
        return "date", False
    stamp = _parse_timestamp(value, day_first)
    if stamp is not None:
        return "timestamp", stamp.tzinfo is not None
    return "text", False


def _widen(current: Optional[str], kind: str) -> str:
    """The kind that holds values of both kinds: integer widens to numeric, date to timestamp, else text."""
    if current is None or current == kind:
        return kind
    if {current, kind} == {"integer", "numeric"}:
        return "numeric"
    if {current, kind} == {"date", "timestamp"}:
        return "timestamp"
    return "text"


def _open(path: Path, dialect: Dialect):
    return open(path, "r", encoding=dialect.encoding, newline="")


def _records(path: Path, dialect: Dialect) -> Iterator:
    """(start line, fields or None, error) for each record after the header; a csv.Error becomes a record."""
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    with _open(path, dialect) as handle:
        reader = dialect.reader(handle)
        try:
            next(reader)
        except StopIteration:
            return
        previous = reader.line_num
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield previous + 1, None, f"broken quoting: {err}"
            except UnicodeDecodeError as err:
                raise SourceError(f"the CSV file {path} is not {dialect.encoding} after line {previous}", str(err),
                                  "convert it to UTF-8 or give its encoding") from err
            else:
                if fields:  # a blank line is no record
                    yield previous + 1, fields, None
            previous = reader.line_num


def _batches(path: Path, dialect: Dialect, size: int) -> Iterator:
    """(records, broken) for each run of up to ``size`` records after the header, blank lines left out.

    ``broken`` counts the records with broken quoting; the same reading as ``_records``, without line numbers.
    """
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    with _open(path, dialect) as handle:
        reader = dialect.reader(handle)
        next(reader, None)  # the header
        while True:
            rows: list = []
            broken = 0
            try:
                rows.extend(itertools.islice(reader, size))  # what was read before an error stays in rows
            except csv.Error:
                broken = 1
            except UnicodeDecodeError as err:
                raise SourceError(f"the CSV file {path} is not {dialect.encoding} after line {reader.line_num}",
                                  str(err), "convert it to UTF-8 or give its encoding") from err
            if not rows and not broken:
                return
            yield [fields for fields in rows if fields], broken


def header(path: Union[str, Path], dialect: Dialect) -> List[str]:
    """The column names of the file's first line, stripped."""
    with _open(Path(path), dialect) as handle:
        return [name.strip() for name in next(dialect.reader(handle), [])]


def infer_columns(path: Union[str, Path], dialect: Dialect,
                  declared: Optional[Dict[str, str]] = None, counts: Optional[dict] = None) -> List[Column]:
    """The columns of ``path`` with their kinds, inferred from every value of the file (one read).

    ``declared`` maps column names to kinds (one of ``KINDS``) that are taken as
    given; a column with no value at all is text. Lines with the wrong number
    of fields or broken quoting take no part (``read_rows`` reports them).
    ``counts``, when given, receives ``records`` (the records of the header's
    width) and ``misfits`` (the others): ``load-csv`` hands a clean file to
    PostgreSQL's own COPY parser and checks that it found the same records.
    """
    path = Path(path)
    names = header(path, dialect)
    _check_header(names, path)
    declared = dict(declared or {})
    unknown = sorted(set(declared) - set(names))
    bad_kinds = sorted(f"{name}={kind}" for name, kind in declared.items() if kind not in KINDS)
    if unknown or bad_kinds:
        raise ConfigError(f"bad column declaration for {path}",
                          f"unknown columns {unknown}" if unknown else f"unknown kinds {bad_kinds}",
                          f"declare columns of {names} as one of {', '.join(KINDS)}", value=declared)
    open_columns = [index for index, name in enumerate(names) if name not in declared]
    kinds: List[Optional[str]] = [None] * len(names)
    zones: List[set] = [set() for _ in names]
    known: List[dict] = [{} for _ in names]  # per column, the distinct dates already checked
    settled = set()  # columns already text: nothing can widen them further

    def kind_of(value: str):
        return _kind_of(value, dialect.day_first)

    records = misfits = 0
    for rows, broken in _batches(path, dialect, BATCH):
        widths = set(map(len, rows))
        good = rows if widths <= {len(names)} else [fields for fields in rows if len(fields) == len(names)]
        records += len(good)
        misfits += broken + len(rows) - len(good)
        batch = list(zip(*good))
        for index in open_columns:
            if index in settled or not batch:
                continue
            values = batch[index]
            if csvkinds.keeps(kinds[index], zones[index], values, kind_of, known[index]):
                continue  # the whole batch leaves the column's kind as it is
            for value in values:
                if not value:
                    continue
                kind, zone = kind_of(value)
                kinds[index] = _widen(kinds[index], kind)
                if kind == "timestamp":
                    zones[index].add(zone)
                if kinds[index] == "text":
                    settled.add(index)
                    break
    if counts is not None:
        counts.update(records=records, misfits=misfits)
    columns = []
    for index, name in enumerate(names):
        if name in declared:
            columns.append(Column(name, declared[name]))
            continue
        kind = kinds[index] or "text"
        if kind == "timestamp" and len(zones[index]) > 1:
            kind = "text"  # offsets on some values and none on others: no one type says what they mean
        columns.append(Column(name, kind, timezone=kind == "timestamp" and zones[index] == {True}))
    return columns


def converter(column: Column, day_first: bool = False) -> Callable[[str], object]:
    """A function from a non-empty field to the column's Python value; raises ValueError when it does not fit."""
    kind = column.kind

    def integer(value: str) -> int:
        if not _INTEGER.match(value) or not _INT8[0] <= int(value) <= _INT8[1]:
            raise ValueError(f"{value!r} is not an integer")
        return int(value)

    def numeric(value: str) -> Decimal:
        if not _NUMERIC.match(value):
            raise ValueError(f"{value!r} is not a number")
        return Decimal(value)

    def boolean(value: str) -> bool:
        parsed = _parse_boolean(value)
        if parsed is None:
            raise ValueError(f"{value!r} is not a boolean")
        return parsed

    def date(value: str) -> datetime.date:
        parsed = _parse_date(value, day_first)
        if parsed is None:
            raise ValueError(f"{value!r} is not a date")
        return parsed

    def timestamp(value: str) -> datetime.datetime:
        parsed = _parse_timestamp(value, day_first) or _as_midnight(_parse_date(value, day_first))
        if parsed is None or (parsed.tzinfo is not None) != column.timezone:
            offset = " with an offset" if column.timezone else " without an offset"
            raise ValueError(f"{value!r} is not a timestamp{offset}")
        return parsed

    return {"integer": integer, "numeric": numeric, "boolean": boolean, "date": date, "timestamp": timestamp,
            "text": str}[kind]


def _as_midnight(day: Optional[datetime.date]) -> Optional[datetime.datetime]:
    return datetime.datetime.combine(day, datetime.time()) if day is not None else None


def read_rows(path: Union[str, Path], dialect: Dialect, columns: Sequence[Column]) -> Iterator[Union[tuple, BadLine]]:
    """Each record of ``path`` after the header: a tuple of typed values (None for empty), or a BadLine."""
    path = Path(path)
    names = header(path, dialect)
    if names != [column.name for column in columns]:
        raise SourceError(f"the header of {path} changed", f"it is {names}, not {[c.name for c in columns]}",
                          "infer the columns again")
    converters = [converter(column, dialect.day_first) for column in columns]
    width = len(columns)
    shown = str(path)
    for line, fields, error in _records(path, dialect):
        if fields is None:
            yield BadLine(shown, line, None, error)
            continue
        if len(fields) != width:
            yield BadLine(shown, line, None, f"{len(fields)} fields, the header has {width}", _cut(fields))
            continue
        try:
            row = tuple(convert(value) if value else None for convert, value in zip(converters, fields))
        except ValueError:
            yield _first_misfit(shown, line, columns, converters, fields)
            continue
        yield row


def _first_misfit(shown: str, line: int, columns, converters, fields) -> BadLine:
    for column, convert, value in zip(columns, converters, fields):
        try:
            if value:
                convert(value)
        except ValueError as err:
            return BadLine(shown, line, column.name, f"{err} ({column.kind})", _cut(fields))
    raise AssertionError("no field failed twice")  # pragma: no cover


def _cut(fields: Sequence[str], limit: int = 200) -> str:
    text = ",".join(fields)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
