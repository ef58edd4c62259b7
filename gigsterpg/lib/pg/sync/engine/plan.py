"""Splitting a collection into ``_id`` ranges of about equal size, for a distributed full sync.

Split points come from the collection itself: ``$sample`` draws ids, MongoDB
sorts them in its own order (BSON type order first: numbers < strings <
ObjectIds ..., then value), and every ``len / ranges``-th one is a split
point. A range is read through the ``_id`` index, never by skip/limit. The
first range has no lower bound and the last no upper one, so the ranges cover
every type present, in type order, by construction; the run proves it by
counting (the tasks' documents add up to the collection's count).

A comparison operator only matches values of its own type (``{"_id": {"$lt":
3}}`` misses every string id), so a range is read with ``$gte``/``$lt`` only
where every id in it is of one type: its two ends (the collection's first or
last id at an open end) are of one type whose query order is the index's
(ints and longs, strings, binary, ObjectIds, dates). Any other range is read
between index bounds (``min`` inclusive, ``max`` exclusive), which cross types
as the index does; a server may apply those by filtering a whole scan (the
test server does), so they are kept for the ranges that need them.

Documents are read with their record id (a projection of ``{"$meta":
"recordId"}``, MongoDB 4.4+, which adds it after every field): their place in a
plain scan (natural order), which is the order the single-process sync sees
them in and the distributed merge replays (see ``distributed``). Not
``showRecordId``: a server may number the documents of an index scan as it
returns them (the test server does) instead of giving their record ids.
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from gigsterpg.exc import SourceError

RAW = CodecOptions(document_class=RawBSONDocument)
# Ids drawn per range: more draws, more even ranges (the error of a quantile shrinks as 1/sqrt(draws)).
SAMPLES_PER_RANGE = 50
# The field the record id comes in: added by the server after the document's own fields, taken off again.
RECORD_FIELD = "__gigsterpg_record_id"
_RECORD_ID = RECORD_FIELD.encode() + b"\x00"


@dataclass(frozen=True)
class IdRange:
    """One task's part of a collection: ``_id`` from ``low`` (inclusive) to ``high`` (exclusive).

    A bound is the BSON of ``{"_id": value}`` (bytes travel to the workers as they are); None is the
    start or the end of the ``_id`` index.
    """

    index: int
    low: Optional[bytes] = None
    high: Optional[bytes] = None
    # Every id in the range is of the one type of its ends: read with $gte/$lt (else with min/max).
    by_filter: bool = False

    def describe(self) -> str:
        """``[1, 'abc')`` as a person reads it."""
        low = "start" if self.low is None else repr(bson.decode(self.low)["_id"])
        high = "end" if self.high is None else repr(bson.decode(self.high)["_id"])
        return f"[{low}, {high})"


def plan(collection, ranges: int, samples_per_range: int = SAMPLES_PER_RANGE) -> List[IdRange]:
    """``collection`` as at most ``ranges`` ranges of about equal size, covering every ``_id``.

    Fewer ranges when the sample holds fewer distinct ids than asked for (a small collection).
    """
    if ranges <= 1:
        return [IdRange(0)]
    size = ranges * samples_per_range
    drawn = [doc.raw for doc in collection.with_options(codec_options=RAW).aggregate(
        [{"$sample": {"size": size}}, {"$project": {"_id": 1}}, {"$sort": {"_id": 1}}])]
    distinct = list(dict.fromkeys(drawn))  # $sample may draw a document twice; the order stays MongoDB's
    if not distinct:  # an empty collection
        return [IdRange(0)]
    points = list(dict.fromkeys(distinct[len(distinct) * part // ranges] for part in range(1, ranges)))
    bounds = [None] + points + [None]
    first, last = _edge(collection, 1), _edge(collection, -1)
    return [IdRange(index, bounds[index], bounds[index + 1],
                    _one_type(bounds[index] or first, bounds[index + 1] or last))
            for index in range(len(bounds) - 1)]


# BSON types whose comparison operators order them as the index does, by their type byte: int32 and int64
# (one class: numbers; doubles and decimals are left out for NaN, which sorts below every number), strings,
# binary, ObjectIds, dates.
_ONE_ORDER = {0x10: "number", 0x12: "number", 0x02: "string", 0x05: "binary", 0x07: "objectId", 0x09: "date"}


def _edge(collection, direction: int) -> Optional[bytes]:
    """The BSON of ``{"_id": ...}`` of the collection's first (1) or last (-1) id in index order."""
    found = list(collection.with_options(codec_options=RAW).find({}, {"_id": 1}).sort("_id", direction).limit(1))
    return bytes(found[0].raw) if found else None


def _one_type(low: Optional[bytes], high: Optional[bytes]) -> bool:
    """Whether both ends are of one type of ``_ONE_ORDER`` (types are contiguous in index order)."""
    return low is not None and high is not None and _ONE_ORDER.get(low[4]) is not None \
        and _ONE_ORDER.get(low[4]) == _ONE_ORDER.get(high[4])


def find_range(collection, part: IdRange, batch_size: int):
    """A cursor over the raw documents of ``part``, each with its record id (see ``split_record_id``)."""
    projection = {RECORD_FIELD: {"$meta": "recordId"}}
    if part.by_filter:
        wanted = {}
        if part.low is not None:
            wanted["$gte"] = bson.decode(part.low)["_id"]
        if part.high is not None:
            wanted["$lt"] = bson.decode(part.high)["_id"]
        return collection.with_options(codec_options=RAW).find(
            {"_id": wanted}, projection, batch_size=batch_size).hint([("_id", 1)])
    cursor = collection.with_options(codec_options=RAW).find(
        {}, projection, batch_size=batch_size).hint([("_id", 1)])
    if part.low is not None:
        cursor = cursor.min(list(bson.decode(part.low).items()))
    if part.high is not None:
        cursor = cursor.max(list(bson.decode(part.high).items()))
    return cursor


def split_record_id(raw: bytes) -> Tuple[int, bytes]:
    """(record id, the document's bytes as a plain scan returns them) of a document read with its record id.

    The server adds the record id as the last element; taking it off restores the bytes (and so
    the hash) the single-process sync computes.

    Raises:
        SourceError: the server gave no integer record id (a clustered collection has none).
    """
    for kind, width in ((0x12, 8), (0x10, 4)):
        tail = 1 + len(_RECORD_ID) + width + 1
        if len(raw) >= tail + 4 and raw[-tail] == kind and raw[-tail + 1:-width - 1] == _RECORD_ID:
            record = int.from_bytes(raw[-width - 1:-1], "little", signed=True)
            body = raw[4:-tail]
            return record, (len(body) + 5).to_bytes(4, "little") + body + b"\x00"
    raise SourceError("a document came without an integer record id",
                      "the distributed sync replays the order of a plain scan, which it takes from the record ids"
                      " (a clustered collection has none)",
                      "run this collection's sync without --workers/--scheduler")
