"""Arrow batches of a CSV file's strings into PostgreSQL's binary COPY format, column by column in compiled code.

``csvsource.read_batches`` gives each value as a string PostgreSQL reads as
its column's type. Here each column is parsed by Arrow's casts (bigint, date,
timestamp: C++), turned into its binary COPY field (a 4-byte length, then the
value in network order) as a numpy array (adjacent fixed-width fields one
block), and a row's blocks and texts joined once by Arrow's
``binary_join_element_wise``: the rows' bytes are then one buffer,
with no Python code per value. A numeric is PostgreSQL's own form (base-10000
digits, each value its own scale); one of more than 18 significant digits or
with an exponent is encoded from Python's Decimal, value by value (rare). A
batch Arrow cannot cast (``ValueError``) is the caller's to send otherwise.

The server then parses no text: binary COPY is the cheapest way in.
"""
import struct
from decimal import Decimal
from typing import List, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER = struct.pack("!h", -1)
_PG_EPOCH_DAYS = 10957  # 2000-01-01 - 1970-01-01
_PG_EPOCH_US = _PG_EPOCH_DAYS * 86400 * 1_000_000
_POW10 = np.array([10 ** i for i in range(19)], dtype=np.int64)


# A column's binary fields are "segments": a numpy (rows, bytes) uint8 block of fixed width, or a binary Arrow
# array of variable width (NULL: nothing). A row is its segments' bytes one after the other: adjacent blocks are
# stacked into one, and the rows joined once (Arrow's ``binary_join_element_wise``), so a fixed-width column costs
# no copy of its own.
Segments = List[Union[np.ndarray, pa.Array]]


def _lengths(lengths: np.ndarray) -> np.ndarray:
    """The 4-byte big-endian length of each field as a (rows, 4) block (-1: NULL)."""
    return np.ascontiguousarray(lengths, dtype=">i4").view(np.uint8).reshape(len(lengths), 4)


def _fields(payload: np.ndarray, valid: np.ndarray) -> Segments:
    """The fields of fixed-width big-endian ``payload`` rows (n, w): the length, then the bytes; NULL for invalid."""
    n, width = payload.shape
    if valid.all():
        out = np.empty((n, 4 + width), dtype=np.uint8)
        out[:, :4] = np.frombuffer(struct.pack("!i", width), dtype=np.uint8)
        out[:, 4:] = payload
        return [out]
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(valid * width, out=offsets[1:])
    return [_lengths(np.where(valid, width, -1)), _binary(offsets, np.ascontiguousarray(payload[valid]))]


def _binary(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    """A binary Arrow array over ``offsets`` (n + 1 int32) and ``data`` (bytes), without a copy."""
    return pa.Array.from_buffers(pa.binary(), len(offsets) - 1,
                                 [None, pa.py_buffer(offsets), pa.py_buffer(data.reshape(-1))])


def _block(block: np.ndarray) -> pa.Array:
    """The rows of a (n, w) block as a binary array, without a copy."""
    n, width = block.shape
    return _binary(np.arange(0, (n + 1) * width, width, dtype=np.int32), np.ascontiguousarray(block))


def _valid(values: pa.Array) -> np.ndarray:
    if not values.null_count:
        return np.ones(len(values), dtype=bool)
    return np.asarray(pc.is_valid(values).to_numpy(zero_copy_only=False), dtype=bool)


def _be(array: pa.Array, dtype: str, shift: int = 0) -> np.ndarray:
    numbers = np.asarray(array.fill_null(0).to_numpy(zero_copy_only=False)).astype(np.int64) - shift
    return numbers.astype(dtype).view(np.uint8).reshape(len(array), -1)


def _bigint(values: pa.Array) -> Segments:
    try:
        numbers = pc.cast(values, pa.int64())
    except pa.ArrowInvalid:  # Arrow's cast reads no plus sign
        numbers = pc.cast(pc.utf8_ltrim(values, "+"), pa.int64())
    return _fields(_be(numbers, ">i8"), _valid(values))


def _boolean(values: pa.Array) -> Segments:
    """True for a value starting with t or y (true, yes: the values were checked as booleans), from the bytes."""
    valid = _valid(values)
    if values.type == pa.string() and len(values):
        offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset:values.offset + len(values)]
        data = values.buffers()[2]
        data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
        first = data[np.minimum(offsets, len(data) - 1)] if len(data) else np.zeros(len(values), dtype=np.uint8)
        truth = np.isin(first | 0x20, np.frombuffer(b"ty", dtype=np.uint8)) & valid  # | 0x20: ASCII lower case
    else:
        first = pc.utf8_lower(pc.utf8_slice_codeunits(values, 0, 1))
        truth = np.asarray(pc.is_in(first, pa.array(["t", "y"])).fill_null(False).to_numpy(zero_copy_only=False),
                           dtype=bool)
    return _fields(truth.astype(np.uint8).reshape(-1, 1), valid)


def _date(values: pa.Array) -> Segments:
    days = pc.cast(pc.cast(values, pa.date32()), pa.int32())
    return _fields(_be(days, ">i4", _PG_EPOCH_DAYS), _valid(values))


def _timestamp(values: pa.Array, zoned: bool) -> Segments:
    stamps = pc.cast(values, pa.timestamp("us", "UTC") if zoned else pa.timestamp("us"))
    return _fields(_be(pc.cast(stamps, pa.int64()), ">i8", _PG_EPOCH_US), _valid(values))


def _text(values: pa.Array) -> Segments:
    """The length (-1 for NULL), then the bytes as they are (a NULL's none: skipped by the join)."""
    valid = _valid(values)
    lengths = np.asarray(pc.binary_length(values).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return [_lengths(np.where(valid, lengths, -1)), values.cast(pa.binary())]


def numeric_field(value: str) -> bytes:
    """One numeric value's binary COPY field (length included), from its text: any size, any exponent."""
    number = Decimal(value)
    sign, digits, exponent = number.as_tuple()
    scale = max(0, -exponent)
    # the digits as an integer times 10**exponent, padded to whole base-10000 groups on both sides of the point
    integer = int("".join(map(str, digits)) or "0")
    pad = (4 - scale % 4) % 4
    integer *= 10 ** pad
    groups_after = (-exponent + pad) // 4 if exponent < 0 else 0
    if exponent > 0:
        integer *= 10 ** exponent
    groups: List[int] = []
    while integer:
        integer, group = divmod(integer, 10000)
        groups.append(group)
    groups.reverse()
    weight = len(groups) - groups_after - 1
    body = struct.pack(f"!hhhh{len(groups)}h", len(groups), weight if groups else 0, 0x4000 if sign else 0,
                       scale, *groups)
    return struct.pack("!i", len(body)) + body


def _unscaled(values: pa.Array) -> np.ndarray:
    """The digits of plain numbers (no exponent) as integers, the point left out; ArrowInvalid if one is not."""
    digits = pc.replace_substring(values, ".", "")
    if pc.any(pc.match_substring(digits, "+")).as_py():
        digits = pc.utf8_ltrim(digits, "+")
    return np.asarray(pc.cast(digits.fill_null("0"), pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _numeric(values: pa.Array) -> Segments:
    """Values of up to 15 characters without an exponent in numpy; the others one by one."""
    n = len(values)
    valid = _valid(values)
    # bytes, not characters: a value that is not ASCII is no number (Arrow's cast refuses it)
    length = np.asarray(pc.binary_length(values).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    plain = length <= 15
    unscaled = None
    if plain.all():
        try:
            unscaled = _unscaled(values)  # the common case: no exponent anywhere
        except pa.ArrowInvalid:
            pass
    if unscaled is None:
        plain &= np.asarray(pc.find_substring(values, "e", ignore_case=True).fill_null(-1)
                            .to_numpy(zero_copy_only=False)) < 0
        values_used = pc.if_else(pa.array(plain), values, pa.scalar("0"))
        unscaled = _unscaled(values_used)
    else:
        values_used = values
    point = np.asarray(pc.find_substring(values_used, ".").fill_null(-1).to_numpy(zero_copy_only=False),
                       dtype=np.int64)
    length = np.where(plain, length, 1)
    scale = np.where(point >= 0, length - point - 1, 0)
    pad = (4 - scale % 4) % 4
    rest = np.abs(unscaled) * _POW10[pad]  # 15 digits * 1000: below 2**63
    groups = max(1, (len(str(int(rest.max()))) + 3) // 4) if n else 1  # base-10000 digits the largest needs
    out = np.empty((n, 4 + groups), dtype=np.int16)  # in this machine's order, swapped once
    out[:, 0] = groups
    out[:, 1] = groups - 1 - (scale + pad) // 4
    out[:, 2] = np.where(unscaled < 0, 0x4000, 0)
    out[:, 3] = scale
    for index in range(3 + groups, 3, -1):
        rest, out[:, index] = np.divmod(rest, 10000)
    fields = _fields(out.astype(">i2").view(np.uint8).reshape(n, 2 * (4 + groups)), valid)
    slow = np.flatnonzero(valid & ~plain)
    if len(slow):
        texts = values.take(pa.array(slow)).to_pylist()
        patched = _joined(fields).to_pylist()
        for index, text in zip(slow, texts):
            patched[index] = numeric_field(text)
        fields = [pa.array(patched, pa.binary())]
    return fields


def _joined(segments: Segments) -> pa.Array:
    """The segments' bytes row by row: one binary array (adjacent blocks stacked first)."""
    arrays, blocks = [], []
    for segment in segments + [None]:
        if isinstance(segment, np.ndarray):
            blocks.append(segment)
            continue
        if blocks:
            arrays.append(_block(blocks[0] if len(blocks) == 1 else np.hstack(blocks)))
            blocks = []
        if segment is not None:
            arrays.append(segment)
    if len(arrays) == 1:
        return arrays[0]
    return pc.binary_join_element_wise(*arrays, pa.scalar(b"", pa.binary()), null_handling="skip")


def encode(batch: pa.RecordBatch, pg_types: Sequence[str], numbered_from: Optional[int] = None) -> memoryview:
    """The batch's rows in binary COPY format (no header, no trailer); ValueError when a column will not cast.

    ``numbered_from``: a last bigint field, the rows numbered from it.
    """
    n = batch.num_rows
    segments: Segments = [np.full(n, batch.num_columns + (numbered_from is not None), ">i2").view(np.uint8)
                          .reshape(n, 2)]
    for values, kind in zip(batch.columns, pg_types):
        try:
            if kind == "bigint":
                segments += _bigint(values)
            elif kind == "numeric":
                segments += _numeric(values)
            elif kind == "boolean":
                segments += _boolean(values)
            elif kind == "date":
                segments += _date(values)
            elif kind in ("timestamp", "timestamptz"):
                segments += _timestamp(values, kind == "timestamptz")
            else:
                segments += _text(values)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise ValueError(f"{kind}: {err}") from err
    if numbered_from is not None:
        numbers = np.arange(numbered_from, numbered_from + n, dtype=">i8")
        segments += _fields(numbers.view(np.uint8).reshape(n, 8), np.ones(n, bool))
    rows = _joined(segments)
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32)
    start, end = int(offsets[rows.offset]), int(offsets[rows.offset + len(rows)])
    return memoryview(rows.buffers()[2].slice(start, end - start))
