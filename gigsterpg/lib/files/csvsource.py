"""Reading a CSV file as typed columns on Apache Arrow's CSV reader: dialect, a required header, kinds, bad lines.

The one CSV reader of gigsterpg, shared by the daily snapshots (``extract-csv``,
their load step) and ``load-csv``. Three calls, each usable alone::

    dialect = detect_dialect(path)                       # encoding/BOM, delimiter, quote, header checked
    columns = infer_columns(path, dialect)               # every value of the file, read once; or declared={...}
    for batch in read_batches(path, dialect, columns, on_bad):   # Arrow record batches, bad lines to on_bad
        ...

The file is parsed by ``pyarrow.csv`` (C++, streamed in blocks: memory stays
flat) with every column read as a string; the kinds are decided here, not by
the library, with vectorised checks (Arrow compute, RE2 expressions; numpy on
the bytes where the values are plain) over each batch. Kinds
(``Column.kind``): integer (bigint), numeric (always exact, never floating
point), boolean, date, timestamp (timestamptz when every value carries an
offset), text. Dates come as ISO (``2022-09-26``), with
slashes month first (``9/26/2022``; ``day_first=True`` reads ``26/9/2022``)
or with dots day first (``26.09.2022``). A zero-padded number (``00123``) is
a code, so text. An empty field is NULL.

``read_batches`` gives each batch's values as strings in the form PostgreSQL
reads whatever its settings (dates ISO), ready for ``pgcopy.copy_batches``.
A line that does not fit (too many or too few fields, a value not of its
column's kind, a NUL byte) goes to ``on_bad`` as a ``BadLine`` with file,
physical line number, column and reason; reading goes on.
"""
import codecs
import collections
import concurrent.futures
import csv
import dataclasses
import io
import queue
import threading
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from gigsterpg.exc import ConfigError, SourceError
from gigsterpg.text import cut, shown

KINDS = ("integer", "numeric", "boolean", "date", "timestamp", "text")
PG_TYPES = {"integer": "bigint", "numeric": "numeric", "boolean": "boolean", "date": "date",
            "timestamp": "timestamp", "text": "text"}
DELIMITERS = (",", ";", "\t", "|")
SAMPLE_BYTES = 64 * 1024
SAMPLE_LINES = 50
MAX_COLUMNS = 1599  # PostgreSQL's limit of columns in a table (1,600), less the one gigsterpg adds (_row, snapshot_day)
BLOCK = 4 << 20  # bytes Arrow parses at a time: a batch
SAMPLE = 256  # values a kind is tried on before a whole batch
MAX_BLOCK = 256 << 20  # the longest record read (blocks grow to it)
NUMERIC_CHARS = 6000  # longer numbers are text (or bad lines of a declared numeric); with exponents of
# 4 digits at most, whatever is shorter fits PostgreSQL's numeric (131,072 digits before the point, 16,383 after)

_INTEGER = r"^[+-]?(?:0|[1-9][0-9]{0,18})$"  # no leading zero: 00123 is a code
_INTEGER_DECLARED = r"^[+-]?[0-9]+$"
_INT8_MAX = "9223372036854775807"
_NUMERIC = r"^[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?$"
_NUMERIC_DECLARED = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?$"
_BOOLEAN = "^(?:" + "|".join("".join(f"[{c.upper()}{c}]" for c in word) for word in (
    "true", "t", "yes", "y", "false", "f", "no", "n")) + ")$"  # ASCII only: the long s is no s
_BOOLEAN_WORDS = pa.array(["true", "t", "yes", "y", "false", "f", "no", "n"])
_ISO_DATE = r"^(?P<y>[0-9]{4})-(?P<m>[0-9]{2})-(?P<d>[0-9]{2})$"
_SLASH_DATE = r"^(?P<a>[0-9]{1,2})/(?P<b>[0-9]{1,2})/(?P<y>[0-9]{4})$"
_DOT_DATE = r"^(?P<d>[0-9]{1,2})\.(?P<m>[0-9]{1,2})\.(?P<y>[0-9]{4})$"
_CLOCK = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
_ISO_STAMP = (r"^(?P<day>[0-9]{4}-[0-9]{2}-[0-9]{2})[T ](?P<clock>" + _CLOCK + r")"
              r"(?P<zone>Z|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?$")
_ZONE = r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)$"  # the end of a value matching _ISO_STAMP: its offset
_OTHER_STAMP = (r"^(?P<day>[0-9]{1,2}/[0-9]{1,2}/[0-9]{4}|[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{4}) (?P<clock>"
                r"(?:[01]?[0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?)$")


@dataclasses.dataclass(frozen=True)
class Dialect:
    """How a CSV file is written: what ``detect_dialect`` found or was told."""

    encoding: str = "utf-8"  # "utf-8-sig" when the file starts with a BOM
    delimiter: str = ","
    quotechar: str = '"'
    day_first: bool = False  # 1/2/2022 is 1 February, not January 2

    def reader(self, handle, strict: bool = True):
        """A ``csv.reader`` over an open text ``handle`` in this dialect (the header and the sample)."""
        return csv.reader(handle, delimiter=self.delimiter, quotechar=self.quotechar, doublequote=True,
                          strict=strict, skipinitialspace=False)


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


# ---------------------------------------------------------------------------------------------- the dialect


def detect_dialect(path: Union[str, Path], delimiter: Optional[str] = None, quotechar: Optional[str] = None,
                   encoding: Optional[str] = None, day_first: bool = False) -> Dialect:
    """Encoding (BOM or not), delimiter and quote of ``path``, from its first 64 KiB; given values win.

    Raises SourceError when the file is empty or its first line is not a header.
    """
    path = Path(path)
    if delimiter is not None and len(delimiter) != 1 or quotechar is not None and len(quotechar) != 1:
        raise ConfigError("bad CSV dialect", "the delimiter and the quote must be one character each",
                          "give --delimiter and --quote one character (or leave them out: detected)",
                          value=delimiter if delimiter is not None and len(delimiter) != 1 else quotechar)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(SAMPLE_BYTES)
    except OSError as err:
        raise SourceError(f"cannot read the CSV file {path}", err.strerror or str(err),
                          "check the path and its permissions") from err
    encoding = check_encoding(encoding or _detect_encoding(raw))
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
    _check_header(header(path, dialect), path)
    return dialect


def check_encoding(encoding: str) -> str:
    """``encoding`` when Python knows it, else a ConfigError."""
    try:
        codecs.lookup(encoding)
    except (LookupError, ValueError):  # ValueError: a NUL byte in the name
        raise ConfigError(f"unknown encoding {shown(encoding)}", "Python knows no encoding of that name",
                          "give an encoding Python knows, e.g. latin-1", value=encoding) from None
    return encoding


def _detect_encoding(raw: bytes) -> str:
    if raw.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return "utf-8"


def _decode_sample(raw: bytes, encoding: str, path: Path) -> str:
    try:
        return codecs.getincrementaldecoder(encoding)().decode(raw, final=len(raw) < SAMPLE_BYTES)
    except UnicodeDecodeError as err:
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


def header(path: Union[str, Path], dialect: Dialect) -> List[str]:
    """The column names of the file's first record, stripped (read in one linear pass, however wide)."""
    csv.field_size_limit(max(csv.field_size_limit(), 64 * 1024 * 1024))
    try:
        with open(Path(path), "r", encoding=dialect.encoding, newline="") as handle:
            return [name.strip() for name in next(dialect.reader(handle), [])]
    except csv.Error as err:
        raise SourceError(f"the CSV file {path} has no usable header", f"its first line: {err}",
                          "give a first line that names every column") from err
    except UnicodeDecodeError as err:
        raise SourceError(f"the CSV file {path} is not {dialect.encoding}", str(err),
                          "convert it to UTF-8 or give its encoding") from err


def _check_header(names: Sequence[str], path: Path) -> None:
    """A SourceError unless ``names`` can name a table's columns; linear in the number of names."""
    if len(names) > MAX_COLUMNS:
        raise SourceError(f"the CSV file {path} has {len(names):,} columns",
                          f"a PostgreSQL table holds at most {MAX_COLUMNS + 1:,} and gigsterpg adds one (the"
                          f" _row key or the snapshot day): {MAX_COLUMNS:,} at most",
                          "split the file into files of fewer columns")
    if not names or any(not name for name in names):
        raise SourceError(f"the CSV file {path} has no usable header", "a column name is empty",
                          "give a first line that names every column")
    duplicates = sorted(name for name, count in collections.Counter(names).items() if count > 1)
    if duplicates:
        raise SourceError(f"the CSV file {path} has no usable header", f"duplicate column names {duplicates[:10]}",
                          "give every column its own name")
    if _all(_data_like(pa.array(list(names), pa.string()))):
        raise SourceError(f"the CSV file {path} has no header", f"its first line {list(names[:5])} looks like data",
                          "add a first line that names the columns")


# ---------------------------------------------------------------------------------------------- the kinds


def _match(values: pa.Array, pattern: str) -> pa.Array:
    return pc.match_substring_regex(values, pattern)


def _all(mask: pa.Array) -> bool:
    """Whether every element is True (a null is not)."""
    return bool(pc.all(pc.fill_null(mask, False)).as_py()) if len(mask) else True


def _data_like(values: pa.Array) -> pa.Array:
    """Whether each value is of a kind other than text (a header of such names is data, not names)."""
    like = _integers(values)[1]
    for ok in (_numerics(values)[1], _booleans(values)[1], _stamps(values, False)[1]):
        like = pc.or_(like, ok)
    return like


def _integers(values: pa.Array, declared: bool = False) -> Tuple[pa.Array, pa.Array]:
    """The values as PostgreSQL reads them, and whether each is a bigint (19 digits: compared with its bounds).

    Inferred, a leading zero makes a code (text); a column declared integer takes it.
    """
    ok = _match(values, _INTEGER_DECLARED if declared else _INTEGER)
    if (pc.max(pc.utf8_length(values)).as_py() or 0) >= 19:
        digits = pc.utf8_ltrim(values, "+-0")
        long = pc.greater_equal(pc.utf8_length(digits), 19)
        bound = pc.if_else(pc.starts_with(values, "-"), pa.scalar("9223372036854775808"), pa.scalar(_INT8_MAX))
        fits = pc.and_(pc.equal(pc.utf8_length(digits), 19), pc.less_equal(digits, bound))
        ok = pc.and_(ok, pc.or_(pc.invert(long), fits))
    return values, ok


def _numerics(values: pa.Array, declared: bool = False) -> Tuple[pa.Array, pa.Array]:
    return values, pc.and_(_match(values, _NUMERIC_DECLARED if declared else _NUMERIC),
                           pc.less_equal(pc.utf8_length(values), NUMERIC_CHARS))


def _booleans(values: pa.Array) -> Tuple[pa.Array, pa.Array]:
    # what _BOOLEAN matches, without a regular expression: ASCII letters lowered (the long s stays no s)
    return values, pc.is_in(pc.ascii_lower(values), value_set=_BOOLEAN_WORDS)


def _distinct(check: Callable, values: pa.Array, *args) -> tuple:
    """``check(values, *args)`` worked out once per distinct value (dates repeat), then spread over the values."""
    encoded = pc.dictionary_encode(values)
    if len(encoded.dictionary) * 2 > len(values):
        return check(values, *args)
    return tuple(pc.take(result, encoded.indices) for result in check(encoded.dictionary, *args))


def _dates(values: pa.Array, day_first: bool) -> Tuple[pa.Array, pa.Array]:
    """ISO ``yyyy-mm-dd`` strings of the values (null where none), and whether each is a day that exists."""
    return _distinct(_each_date, values, day_first)


def _each_date(values: pa.Array, day_first: bool) -> Tuple[pa.Array, pa.Array]:
    iso = pc.extract_regex(values, _ISO_DATE)
    slash = pc.extract_regex(values, _SLASH_DATE)
    dot = pc.extract_regex(values, _DOT_DATE)
    first, second = pc.struct_field(slash, "a"), pc.struct_field(slash, "b")
    month = pc.coalesce(pc.struct_field(iso, "m"), second if day_first else first, pc.struct_field(dot, "m"))
    day = pc.coalesce(pc.struct_field(iso, "d"), first if day_first else second, pc.struct_field(dot, "d"))
    year = pc.coalesce(pc.struct_field(iso, "y"), pc.struct_field(slash, "y"), pc.struct_field(dot, "y"))
    text = pc.binary_join_element_wise(year, pc.utf8_lpad(month, 2, "0"), pc.utf8_lpad(day, 2, "0"), "-")
    parsed = pc.strptime(text, format="%Y-%m-%d", unit="s", error_is_null=True)
    # strptime rolls 2/30 over to 3/2: the day must come back as it was written, and year 0 does not exist
    ok = pc.and_(pc.and_(pc.equal(pc.day(parsed), pc.cast(day, pa.int64())),
                         pc.equal(pc.month(parsed), pc.cast(month, pa.int64()))),
                 pc.greater_equal(pc.year(parsed), 1))
    ok = pc.fill_null(ok, False)
    return text, ok


def _stamps(values: pa.Array, day_first: bool) -> Tuple[pa.Array, pa.Array, pa.Array]:
    """ISO timestamps of the values (a date is midnight), whether each is one, and whether it carries an offset.

    Values all written as ISO timestamps (the common case) go as they are, their days checked once each.
    """
    iso = _match(values, _ISO_STAMP)
    if _all(pc.or_(iso, pc.is_null(values))):
        _, day_ok = _dates(pc.utf8_slice_codeunits(values, 0, 10), day_first)
        return values, day_ok, _match(values, _ZONE)
    return _distinct(_each_stamp, values, day_first)


def _each_stamp(values: pa.Array, day_first: bool) -> Tuple[pa.Array, pa.Array, pa.Array]:
    iso = pc.extract_regex(values, _ISO_STAMP)
    other = pc.extract_regex(values, _OTHER_STAMP)
    day_part = pc.coalesce(pc.struct_field(iso, "day"), pc.struct_field(other, "day"), values)
    day, day_ok = _dates(day_part, day_first)
    clock = pc.coalesce(pc.struct_field(iso, "clock"), pc.struct_field(other, "clock"))
    clock = pc.if_else(_match(clock, "^[0-9]:"), pc.binary_join_element_wise("0", clock, ""), clock)
    zone = pc.fill_null(pc.struct_field(iso, "zone"), "")
    stamp = pc.binary_join_element_wise(day, pc.fill_null(clock, "00:00"), "T")
    stamp = pc.binary_join_element_wise(stamp, zone, "")
    # a value that is neither stamp form is a date or nothing: day_part is then the whole value
    ok = pc.and_(day_ok, pc.or_(pc.is_valid(clock), pc.equal(day_part, values)))
    return stamp, pc.fill_null(ok, False), pc.greater(pc.utf8_length(zone), 0)


def _texts(values: pa.Array) -> Tuple[pa.Array, pa.Array]:
    """Text as it is; a NUL byte PostgreSQL's text cannot hold makes the line a bad one."""
    if not _has_nul(values):  # the common case, found in one scan of the batch's bytes
        return values, pa.array(np.ones(len(values), dtype=bool))
    return values, pc.invert(pc.match_substring(values, "\x00"))


def _bytes(values: pa.Array) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The offsets (n + 1) and the bytes of a string array's values, without a copy; None for another layout."""
    if values.type != pa.string() or not len(values):
        return None
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset:values.offset + len(values) + 1]
    data = values.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    return offsets, data[offsets[0]:offsets[-1]]


def _has_nul(values: pa.Array) -> bool:
    """Whether a value may hold a NUL byte (the bytes of NULL slots count too: then each value is looked at)."""
    found = _bytes(values)
    if found is None:
        return bool(len(values)) and bool(pc.any(pc.match_substring(values, "\x00")).as_py())
    return b"\x00" in found[1].tobytes()


def _plain_integers(values: pa.Array) -> bool:
    """Whether every value (no NULL) is digits of fewer than 19, without a leading zero: integers for sure.

    False says nothing: the values are then checked by ``_integers``.
    """
    if not _all(pc.ascii_is_decimal(values)):
        return False
    lengths = pc.binary_length(values)
    if (pc.max(lengths).as_py() or 0) >= 19:
        return False
    return not pc.any(pc.and_(pc.starts_with(values, "0"), pc.greater(lengths, 1))).as_py()


def _plain_numerics(values: pa.Array) -> bool:
    """Whether every value (no NULL) is digits with at most one point and no leading zero: what ``_NUMERIC``
    matches without a sign or an exponent. Checked on the bytes; False says nothing (``_numerics`` then)."""
    found = _bytes(values)
    if found is None or values.null_count:
        return False
    offsets, data = found
    lengths = np.diff(offsets)
    if not len(data) or lengths.min() < 1 or lengths.max() > NUMERIC_CHARS:
        return False
    point = data == 46
    if not (((data - 48) <= 9) | point).all():  # a byte below '0' wraps around: above 9 too
        return False
    starts = offsets[:-1] - offsets[0]
    points = np.add.reduceat(point, starts, dtype=np.int32)
    if (points > 1).any() or (lengths - points < 1).any():
        return False
    second = data[np.minimum(starts + 1, len(data) - 1)]
    return not ((data[starts] == 48) & (lengths >= 2) & ((second - 48) <= 9)).any()


_STAMP_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]  # yyyy-mm-dd hh:mm:ss
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _plain_stamps(values: pa.Array) -> bool:
    """Whether every value (no NULL) is ``yyyy-mm-dd hh:mm:ss`` (or with a T) of a day that exists: ISO stamps
    ``_stamps`` takes as they are, without an offset. Checked on the bytes; False says nothing."""
    found = _bytes(values)
    if found is None or values.null_count:
        return False
    offsets, data = found
    if len(data) != 19 * len(values) or not (np.diff(offsets) == 19).all():
        return False
    chars = data.reshape(len(values), 19)
    digits = (chars[:, _STAMP_DIGITS] - 48).astype(np.int32)  # a byte below '0' wraps around: above 9 too
    if not (digits <= 9).all() or not ((chars[:, 4] == 45) & (chars[:, 7] == 45) & (chars[:, 13] == 58)
                                       & (chars[:, 16] == 58) & ((chars[:, 10] == 32) | (chars[:, 10] == 84))).all():
        return False
    number = (lambda first, count: sum(digits[:, first + i] * 10 ** (count - 1 - i) for i in range(count)))
    year, month, day = number(0, 4), number(4, 2), number(6, 2)
    hour, minute, second = number(8, 2), number(10, 2), number(12, 2)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    last = _MONTH_DAYS[np.clip(month, 0, 12)] + ((month == 2) & leap)
    return bool(((year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= last) & (hour <= 23)
                 & (minute <= 59) & (second <= 59)).all())


def _batch_kind(values: pa.Array, day_first: bool) -> Tuple[str, set]:
    """The narrowest kind holding every non-null value of ``values`` (and, for timestamps, their offsets).

    Each kind is tried on the first SAMPLE values before the whole batch: most kinds fail there, cheaply.
    """
    values = values.drop_null()
    if not len(values):
        return "", set()
    sample = values.slice(0, SAMPLE)
    checks = (("integer", lambda v: _integers(v)[1]), ("numeric", lambda v: _numerics(v)[1]),
              ("boolean", lambda v: _booleans(v)[1]), ("date", lambda v: _dates(v, day_first)[1]),
              ("timestamp", lambda v: _stamps(v, day_first)[1]))
    for kind, check in checks:
        if _all(check(sample)) and (len(values) <= SAMPLE or _all(check(values))):
            if kind == "timestamp":
                return kind, {bool(flag) for flag in pc.unique(_stamps(values, day_first)[2]).to_pylist()}
            return kind, set()
    return "text", set()


def _keeps(kind: str, values: pa.Array, day_first: bool, zones: set) -> bool:
    """Whether every value of the batch leaves the column's kind (and offsets) as they are: one check, mostly."""
    values = values.drop_null()
    if not len(values):
        return True
    if kind == "integer":
        return _plain_integers(values) or _all(_integers(values)[1])
    if kind == "numeric":
        return _plain_numerics(values) or _all(_numerics(values)[1])
    if kind == "boolean":
        return _all(_booleans(values)[1])
    if kind == "date":
        return _all(_dates(values, day_first)[1])
    if kind == "timestamp":
        if _plain_stamps(values):
            return False in zones
        _, ok, zoned = _stamps(values, day_first)
        return _all(ok) and {bool(flag) for flag in pc.unique(zoned).to_pylist()} <= zones
    return True  # text holds anything


def _widen(current: str, kind: str) -> str:
    """The kind that holds values of both kinds: integer widens to numeric, date to timestamp, else text."""
    if not current or current == kind:
        return kind or current
    if not kind:
        return current
    if {current, kind} == {"integer", "numeric"}:
        return "numeric"
    if {current, kind} == {"date", "timestamp"}:
        return "timestamp"
    return "text"


def convert(column: Column, values: pa.Array, day_first: bool, trusted: bool = False) -> Tuple[pa.Array, pa.Array]:
    """The column's values as PostgreSQL reads them, and whether each fits the column (True for null).

    ``trusted``: ``infer_columns`` found every value of the column of its kind, so only the forms PostgreSQL
    reads otherwise (dates with slashes or dots) are rewritten, and text is checked for NUL bytes.
    """
    kind = column.kind
    if trusted and kind in ("integer", "numeric", "boolean"):
        return values, pa.array(np.ones(len(values), dtype=bool))
    if trusted and kind == "timestamp" and (_plain_stamps(values)
                                            or not pc.any(_match(values, "^[0-9]{1,2}[/.]")).as_py()):
        return values, pa.array(np.ones(len(values), dtype=bool))  # ISO already (a date alone is midnight)
    if kind == "integer":
        out, ok = _integers(values, declared=True)
    elif kind == "numeric":
        out, ok = _numerics(values, declared=True)
    elif kind == "boolean":
        out, ok = _booleans(values)
    elif kind == "date":
        out, ok = _dates(values, day_first)
    elif kind == "timestamp":
        out, ok, zoned = _stamps(values, day_first)
        ok = pc.and_(ok, pc.equal(zoned, column.timezone))
    else:
        out, ok = _texts(values)
    return out, pc.or_(pc.is_null(values), pc.fill_null(ok, False))


# ---------------------------------------------------------------------------------------------- the file


class Ahead:
    """The items of ``source`` made on a thread of their own, at most ``depth`` ahead of the one taking them.

    Arrow's reader and kernels let go of the GIL, so the reading and encoding
    of the next batches go on while this thread waits for PostgreSQL. An
    exception of the source comes out where the items are taken; ``close``
    stops the source (closed on its own thread) and waits for it.
    """

    _END = object()

    def __init__(self, source: Iterable, depth: int = 2, name: str = "gigsterpg-csv"):
        self.queue: queue.Queue = queue.Queue(depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(iter(source),), name=name,
                                       daemon=True)
        self.thread.start()

    def _run(self, source: Iterator) -> None:
        try:
            for item in source:
                if not self._put((item, None)):
                    break
            else:
                self._put((self._END, None))
        except BaseException as err:  # handed to the taking thread, raised there
            self._put((None, err))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def _put(self, entry) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        item, err = self.queue.get()
        if err is not None:
            self.queue.put((None, err))  # raised again should it be asked again
            raise err
        if item is self._END:
            self.queue.put((self._END, None))
            raise StopIteration
        return item

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


class _Reader:
    """One streamed pass of Arrow's CSV reader over the file, every column a string, misfit rows set aside.

    Arrow parses the file a block at a time, and a record must fit in one: a
    longer one (a text of many MB) makes the pass start again with blocks
    eight times as large, the rows already given skipped, up to MAX_BLOCK.
    """

    def __init__(self, path: Path, dialect: Dialect, names: Sequence[str], threads: bool = False):
        """``threads``: Arrow parses on several threads, and cannot then say the misfits' row numbers."""
        self.path, self.dialect, self.names, self.threads = path, dialect, list(names), threads
        self.misfits: List[Tuple[int, int, str]] = []  # (Arrow's row number, fields, text)
        self.rows = 0

    def _invalid(self, row) -> str:
        self.misfits.append((row.number, row.actual_columns, row.text))
        return "skip"

    def batches(self) -> Iterator[pa.RecordBatch]:
        block = BLOCK
        while True:
            try:
                yield from self._pass(block)
                return
            except pa.ArrowInvalid as err:
                if "straddl" not in str(err) or block >= MAX_BLOCK:
                    raise self._error(err) from err
                block *= 8
                del self.misfits[:]  # the new pass starts from the top: it finds them again, in the same order
            except UnicodeDecodeError as err:
                raise self._error(err) from err

    def _pass(self, block: int) -> Iterator[pa.RecordBatch]:
        encoding = "utf8" if self.dialect.encoding.replace("-", "").lower() in ("utf8", "utf8sig") \
            else self.dialect.encoding
        names = [f"c{i}" for i in range(len(self.names))]
        read = pacsv.ReadOptions(use_threads=self.threads, block_size=block, encoding=encoding, skip_rows=1,
                                 column_names=names)
        parse = pacsv.ParseOptions(delimiter=self.dialect.delimiter, quote_char=self.dialect.quotechar,
                                   double_quote=True, newlines_in_values=True, invalid_row_handler=self._invalid)
        convert_options = pacsv.ConvertOptions(column_types={name: pa.string() for name in names},
                                               strings_can_be_null=True, quoted_strings_can_be_null=True,
                                               null_values=[""])
        skip = self.rows  # given by an earlier pass with smaller blocks
        # read(), not a memory map: the file's pages would count in the process's RSS as it is read
        with pa.OSFile(str(self.path), "rb") as source:
            yield from self._parsed(source, read, parse, convert_options, skip)

    def _parsed(self, source, read, parse, convert_options, skip: int) -> Iterator[pa.RecordBatch]:
        for batch in pacsv.open_csv(source, read_options=read, parse_options=parse, convert_options=convert_options):
            if skip:
                cut = min(skip, batch.num_rows)
                batch, skip = batch.slice(cut), skip - cut
                if not batch.num_rows:
                    continue
            self.rows += batch.num_rows
            yield batch

    def tagged(self) -> Iterator[Tuple[pa.RecordBatch, List[Tuple[int, int, str]]]]:
        """Each batch with the misfit rows Arrow set aside up to its end and not given with an earlier one."""
        given = 0
        for batch in self.batches():
            found = self.misfits[given:]
            given += len(found)
            yield batch, found
        if self.misfits[given:]:  # set aside after the last batch: given with an empty one
            empty = pa.array([], pa.string())
            yield pa.RecordBatch.from_arrays([empty] * len(self.names), names=list(self.names)), self.misfits[given:]

    def _error(self, err: Exception) -> SourceError:
        text = str(err).splitlines()[0]
        if isinstance(err, UnicodeDecodeError) or "utf8" in text.lower() or "decode" in text.lower():
            return SourceError(f"the CSV file {self.path} is not {self.dialect.encoding} after line {self.rows + 1}",
                               text, "convert it to UTF-8 or give its encoding")
        if "straddl" in text:
            return SourceError(f"cannot read the CSV file {self.path}",
                               f"a record after line {self.rows + 1} is longer than {MAX_BLOCK >> 20} MB"
                               " (an unclosed quote?)", "close the quote, or split the value")
        return SourceError(f"cannot read the CSV file {self.path}", text, "check that it is a CSV file")


class KindsChanged(Exception):
    """A column's kind changed after rows of it were written, into one their text would not survive (text).

    ``stream`` raises it; the caller starts again with the kinds of the whole file (``infer_columns``).
    """


@dataclasses.dataclass(frozen=True)
class Retype:
    """In ``stream``: the columns' types from the next batch on (the first item: the types to make the table with)."""

    columns: Tuple[Column, ...]
    changed: Tuple[str, ...] = ()  # the names of the columns whose type changed (none in the first)


class _Kinds:
    """The kinds of a file's columns as its batches are read: each batch checked against the kinds so far."""

    def __init__(self, names: Sequence[str], declared: Dict[str, str], day_first: bool):
        self.names, self.declared, self.day_first = list(names), declared, day_first
        self.kinds = [""] * len(self.names)
        self.zones: List[set] = [set() for _ in self.names]
        self.open = [index for index, name in enumerate(self.names) if name not in declared]
        # Arrow's kernels let go of the GIL: the columns of a batch are checked on two threads
        self.pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="gigsterpg-csv")
        self.batch: Optional[pa.RecordBatch] = None  # the batch checked last, and its date columns as ISO text:
        # index -> (ISO text, whether each is a day); (values, None) for timestamps found ISO as they are
        self.dated: Dict[int, Tuple[pa.Array, Optional[pa.Array]]] = {}

    def close(self) -> None:
        self.pool.shutdown()

    def _check(self, index: int, values: pa.Array) -> None:
        kinds, zones = self.kinds, self.zones
        if kinds[index] == "date":
            # the ISO text is kept for the batch's conversion (``dated``): the dates are worked out once
            out, ok = _dates(values, self.day_first)
            self.dated[index] = (out, ok)
            if _all(pc.or_(pc.is_null(values), pc.fill_null(ok, False))):
                return
        elif kinds[index] == "timestamp" and False in zones[index] and _plain_stamps(values):
            self.dated[index] = (values, None)  # ISO already, without an offset: converted as they are
            return
        elif kinds[index] and _keeps(kinds[index], values, self.day_first, zones[index]):
            return
        previous = kinds[index]
        kind, found = _batch_kind(values, self.day_first)
        kinds[index] = _widen(previous, kind)
        if kinds[index] == "timestamp":
            # a date in a timestamp column is midnight, with no offset
            zones[index] |= found | ({False} if "date" in (kind, previous) else set())

    def check(self, batch: pa.RecordBatch) -> None:
        """Widen the kinds to hold every value of ``batch``."""
        self.dated, self.batch = {}, batch
        if self.open:
            list(self.pool.map(lambda index: self._check(index, batch.column(index)), self.open))
            self.open = [index for index in self.open if self.kinds[index] != "text"]  # nothing widens text

    def columns(self) -> List[Column]:
        """The columns of the kinds so far (a column with no value yet is text)."""
        columns = []
        for index, name in enumerate(self.names):
            if name in self.declared:
                columns.append(Column(name, self.declared[name]))
                continue
            kind = self.kinds[index] or "text"
            if kind == "timestamp" and len(self.zones[index]) > 1:
                kind = "text"  # offsets on some values and none on others: no one type says what they mean
            columns.append(Column(name, kind, timezone=kind == "timestamp" and self.zones[index] == {True}))
        return columns


def _lossless(before: Column, after: Column, empty: bool) -> bool:
    """Whether values written as ``before`` become exactly what ``after`` would have made of their text.

    A column with no value yet (``empty``) takes any type; bigint widens to numeric and a date to midnight
    of a timestamp without offset, exactly; into text, a value's own text is not PostgreSQL's (1e3, +5,
    9/26/2022, yes): those are lost, so not lossless.
    """
    if empty or before == after:
        return True
    return (before.kind, after.kind) == ("integer", "numeric") or \
        (before.kind, after.kind, after.timezone) == ("date", "timestamp", False)


def check_declared(path: Path, names: Sequence[str], declared: Dict[str, str]) -> None:
    unknown = sorted(set(declared) - set(names))
    bad_kinds = sorted(f"{name}={kind}" for name, kind in declared.items() if kind not in KINDS)
    if unknown or bad_kinds:
        raise ConfigError(f"bad column declaration for {path}",
                          f"unknown columns {cut(unknown)}" if unknown else f"unknown kinds {cut(bad_kinds)}",
                          f"declare columns of {cut(list(names), 200)} as one of {', '.join(KINDS)}", value=declared)


def infer_columns(path: Union[str, Path], dialect: Dialect,
                  declared: Optional[Dict[str, str]] = None, counts: Optional[dict] = None) -> List[Column]:
    """The columns of ``path`` with their kinds, inferred from every value of the file (one read).

    ``declared`` maps column names to kinds (one of ``KINDS``) that are taken as
    given; a column with no value at all is text. Lines with the wrong number
    of fields take no part (``read_batches`` reports them). ``counts``, when
    given, receives ``records`` (the records of the header's width, a last
    record with a quote never closed left out), ``misfits`` (the others) and
    ``unclosed`` (1 for such a last record: ``read_batches`` reports it).
    """
    path, names, declared, kinds = _checked(path, dialect, declared)
    reader = _Reader(path, dialect, names, threads=True)
    last = None
    try:
        for batch in reader.batches():
            kinds.check(batch)
            last = batch if batch.num_rows else last
    finally:
        kinds.close()
    if counts is not None:
        unclosed = int(last is not None and _unclosed(path, dialect, last))
        counts.update(records=reader.rows - unclosed, misfits=len(reader.misfits), unclosed=unclosed)
    return kinds.columns()


def _checked(path: Union[str, Path], dialect: Dialect, declared: Optional[Dict[str, str]]):
    """The file's path, its header's names and the declared kinds, each checked, and the kinds to infer."""
    path = Path(path)
    names = header(path, dialect)
    _check_header(names, path)
    declared = dict(declared or {})
    check_declared(path, names, declared)
    return path, names, declared, _Kinds(names, declared, dialect.day_first)


def read_batches(path: Union[str, Path], dialect: Dialect, columns: Sequence[Column],
                 on_bad: Callable[[BadLine], None], trusted: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
    """The file's records as Arrow batches of strings PostgreSQL reads as the columns' types; bad lines to ``on_bad``.

    Each batch has the columns' names. A record of the wrong width, or with a
    value that does not fit its column, is left out and handed to ``on_bad``
    with its physical line number. ``trusted`` names the columns whose kinds
    ``infer_columns`` just found over this file: their values are not checked again.
    """
    path = Path(path)
    names = header(path, dialect)
    if names != [column.name for column in columns]:
        raise SourceError(f"the header of {path} changed", f"it is {names}, not {[c.name for c in columns]}",
                          "infer the columns again")
    return _read(path, dialect, names, list(columns), on_bad, trusted, None)


def stream(path: Union[str, Path], dialect: Dialect, declared: Optional[Dict[str, str]],
           on_bad: Callable[[BadLine], None]) -> Iterator[Union[Retype, pa.RecordBatch]]:
    """``read_batches`` with the kinds inferred as the file is read: one pass instead of two.

    The first item is a ``Retype``: the columns as the first batch shows them
    (the table is made of those). Then the batches; before a batch whose
    values widen a column, a ``Retype`` naming the columns changed, whose
    rows already written convert exactly (no value yet, bigint to numeric,
    date to timestamp: ``ALTER ... TYPE`` in place). A change whose earlier
    values would not survive (into text) raises ``KindsChanged``. The last
    ``Retype`` gives what ``infer_columns`` would have found.
    """
    path, names, declared, kinds = _checked(path, dialect, declared)
    trusted = [name for name in names if name not in declared]
    try:
        yield from _read(path, dialect, names, None, on_bad, trusted, kinds)
    finally:
        kinds.close()


def _read(path: Path, dialect: Dialect, names: List[str], columns: Optional[List[Column]],
          on_bad: Callable[[BadLine], None], trusted: Sequence[str],
          kinds: Optional[_Kinds]) -> Iterator[Union[Retype, pa.RecordBatch]]:
    reader = _Reader(path, dialect, names)
    # Arrow parses the next batches on a thread of its own while this one checks, converts (and the caller encodes)
    parsed = Ahead(reader.tagged(), name="gigsterpg-csv-parse")
    try:
        yield from _converted(path, dialect, names, columns, on_bad, trusted, kinds, parsed)
    finally:
        parsed.close()


def _converted(path: Path, dialect: Dialect, names: List[str], columns: Optional[List[Column]],
               on_bad: Callable[[BadLine], None], trusted: Sequence[str], kinds: Optional[_Kinds],
               parsed: Iterable) -> Iterator[Union[Retype, pa.RecordBatch]]:
    lines = _Lines(path, dialect)
    shown, width, good = str(path), len(names), 0
    pending, seen = None, []  # seen: the misfits so far (Arrow's row number, fields, text)
    for batch, misfits in parsed:
        seen.extend(misfits)
        if kinds is not None:
            empty = [not kind for kind in kinds.kinds]
            kinds.check(batch)
            now = kinds.columns()
            if columns is None:
                columns = now
                yield Retype(tuple(columns))
            elif now != columns:
                if not all(_lossless(*pair, was_empty) for pair, was_empty in zip(zip(columns, now), empty)):
                    raise KindsChanged(f"{path}: {[c.name for c, n in zip(columns, now) if c != n]} widen to text")
                if pending is not None:
                    yield pending[0]  # written in the kinds it was read in
                    pending = None
                changed = tuple(c.name for c, n in zip(columns, now) if c != n)
                columns = now
                yield Retype(tuple(columns), changed)
        outs, oks = [], []
        dated = kinds.dated if kinds is not None and kinds.batch is batch else {}
        for index, (column, values) in enumerate(zip(columns, batch.columns)):
            if column.kind == "date" and index in dated:  # worked out by the check just made
                out, ok = dated[index][0], pc.or_(pc.is_null(values), pc.fill_null(dated[index][1], False))
            elif column == Column(column.name, "timestamp") and index in dated and dated[index][1] is None:
                out, ok = values, pa.array(np.ones(len(values), dtype=bool))
            else:
                out, ok = convert(column, values, dialect.day_first, column.name in trusted)
            outs.append(out)
            oks.append(ok)
        every = oks[0]
        for ok in oks[1:]:
            every = pc.and_(every, ok)
        # misfit rows Arrow found up to this batch, reported in line order with the bad values
        bad_values = [] if _all(every) else pc.indices_nonzero(pc.invert(every)).to_pylist()
        found = []
        for index in bad_values:
            row = lines.row_of_good(good + index, seen)
            for column, ok, values in zip(columns, oks, batch.columns):
                if not ok[index].as_py():
                    value = values[index].as_py()
                    found.append((row, column.name, _reason(column, value),
                                  _cut([v[index].as_py() or "" for v in batch.columns], dialect.delimiter)))
                    break
        for number, fields, text in misfits:
            found.append((number, None, f"{fields} fields, the header has {width}", _cut([text], "")))
        for number, column_name, reason, text in sorted(found, key=lambda item: item[0]):
            on_bad(BadLine(shown, lines.line(number), column_name, reason, text))
        table = pa.RecordBatch.from_arrays(outs, names=[column.name for column in columns])
        if pending is not None:
            yield pending[0]
        pending = (table if not bad_values else table.filter(every), batch, good + batch.num_rows - 1,
                   bool(every[batch.num_rows - 1].as_py()) if batch.num_rows else False)
        good += batch.num_rows
    if columns is None:
        yield Retype(tuple(kinds.columns()))  # no record at all: every column text
    if pending is None:
        return
    table, batch, ordinal, kept = pending
    if kept and _unclosed(path, dialect, batch):
        # Arrow reads a quote never closed as a value running to the end of the file: the record is set aside
        row = lines.row_of_good(ordinal, seen)
        on_bad(BadLine(shown, lines.line(row), None, "a quote opened on this record is never closed: the rest of"
                       " the file would be one value", _cut([v[-1].as_py() or "" for v in batch.columns],
                                                            dialect.delimiter)))
        table = table.slice(0, table.num_rows - 1)
    yield table


def _unclosed(path: Path, dialect: Dialect, batch: pa.RecordBatch) -> bool:
    """Whether the file's last record holds a line end and the file an odd number of quotes (one left open)."""
    last = [values[-1].as_py() or "" for values in batch.columns]
    if not any("\n" in value or "\r" in value for value in last):
        return False
    quote, count = dialect.quotechar.encode(dialect.encoding.replace("-sig", "")), 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            count += chunk.count(quote)
    return count % 2 == 1


def _reason(column: Column, value: Optional[str]) -> str:
    if value is not None and "\x00" in value:
        return f"{_show(value)} holds a NUL byte, which PostgreSQL's text cannot hold ({column.kind})"
    article = "an" if column.kind == "integer" else "a"
    what = {"timestamp": "timestamp" + (" with an offset" if column.timezone else " without an offset")}.get(
        column.kind, column.kind)
    if column.kind == "numeric" and value is not None and len(value) > NUMERIC_CHARS:
        return f"{_show(value)} is a number of more than {NUMERIC_CHARS} characters ({column.kind})"
    return f"{_show(value)} is not {article} {what} ({column.kind})"


def _show(value: Optional[str], limit: int = 60) -> str:
    value = value or ""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _cut(fields: Sequence[str], delimiter: str, limit: int = 200) -> str:
    text = delimiter.join(fields).replace("\x00", "\\0")
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


class _Lines:
    """Arrow's row numbers (records, blank lines left out) as physical line numbers, worked out only when needed.

    A file whose records are one line each and has no blank line numbers its
    lines as Arrow numbers its rows; otherwise the file is scanned once (by
    Python's csv module, the first time a bad line is reported) for where each
    record starts.
    """

    def __init__(self, path: Path, dialect: Dialect):
        self.path, self.dialect = path, dialect
        self.starts: Optional[List[int]] = None

    def row_of_good(self, ordinal: int, misfits: Sequence[Tuple[int, int, str]]) -> int:
        """Arrow's row number of the ``ordinal``-th (0-based) record of the header's width."""
        row = ordinal + 2  # the header is row 1
        for number in sorted(number for number, _, _ in misfits):
            if number <= row:
                row += 1
            else:
                break
        return row

    def line(self, row: int) -> int:
        if self.starts is None:
            self.starts = self._scan()
        return self.starts[row - 1] if row - 1 < len(self.starts) else row

    def _scan(self) -> List[int]:
        starts = []
        with open(self.path, "rb") as handle:
            simple = True
            newlines = 0
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                newlines += chunk.count(b"\n")
                simple = simple and self.dialect.quotechar.encode() not in chunk and b"\n\n" not in chunk \
                    and b"\r" not in chunk
        if simple:
            return list(range(1, newlines + 2))
        with open(self.path, "r", encoding=self.dialect.encoding, newline="", errors="replace") as handle:
            reader = self.dialect.reader(handle, strict=False)
            previous = 0
            for fields in reader:
                if fields:
                    starts.append(previous + 1)
                previous = reader.line_num
        return starts


def records(batches: Iterator[pa.RecordBatch]) -> List[tuple]:
    """The rows of ``batches`` as tuples of strings (for tests and small files)."""
    out: List[tuple] = []
    for batch in batches:
        out.extend(zip(*(column.to_pylist() for column in batch.columns)))
    return out


def write_batch(batch: pa.RecordBatch) -> bytes:
    """A batch as CSV for PostgreSQL's ``COPY ... (FORMAT csv)``: every value quoted, NULL an empty field."""
    sink = io.BytesIO()
    pacsv.write_csv(batch, sink, pacsv.WriteOptions(include_header=False, quoting_style="all_valid"))
    return sink.getvalue()
