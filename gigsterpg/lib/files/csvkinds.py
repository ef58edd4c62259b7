"""Batch checks for ``csvsource.infer_columns``: does a whole batch of a column's values keep the column's kind?

Inference value by value in Python costs about 5 µs a row. Most batches
change nothing: once a column is integer, the next 4,096 values are integers
too. ``keeps`` answers that for a batch with one compiled regular expression
over the batch's values joined by newlines (C speed), plus the true per-value
check (``kind_of``) of each *distinct* date a batch holds, once per column
(dates repeat). It answers True only when every non-empty value is certainly
of a kind that leaves the column's kind (and a timestamp column's offsets)
as they are; False means "not known", and the caller checks that batch value
by value, so what is inferred is exactly what the per-value pass infers.
"""
import operator
import re
from typing import Callable, Dict, Iterable, Optional, Sequence

_DIGITS18 = r"[+-]?+\d{1,18}+"  # 18 digits always fit a bigint; 19 are checked value by value
# csvsource._NUMERIC, which integers match too (they widen to numeric)
_NUMBER = r"[+-]?+(?>\d++\.?+\d*+|\.\d++)(?:[eE][+-]?+\d++)?+"
_BOOLEAN = "|".join("".join(f"[{c.upper()}{c}]" for c in word) for word in ("true", "t", "yes", "y",
                                                                            "false", "f", "no", "n"))
# the form of csvsource's dates (ISO, slashes, dots); whether the day exists is checked per distinct value
_DATE = r"(?>\d{4}-\d{2}-\d{2}|\d{1,2}+/\d{1,2}+/\d{4}|\d{1,2}+\.\d{1,2}+\.\d{4})"
_ISO_DAY = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_STAMP = _ISO_DAY + r"[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"  # no offset


def _all(value: str) -> "re.Pattern":
    """Values joined by newlines, each empty or matching ``value``.

    Possessive and atomic (no backtracking: about a third faster): no value
    holds a newline, and in each form a shorter match would leave a character
    that is not one, so the first match is the only one that can do.
    """
    return re.compile(rf"(?:{value})?+(?:\n(?:{value})?+)*+")


_PATTERNS = {"integer": _all(_DIGITS18), "numeric": _all(_NUMBER), "boolean": _all(_BOOLEAN),
             "date": _all(_DATE), "timestamp": _all(_STAMP)}
_DAY_OF_STAMP = operator.itemgetter(slice(0, 10))  # a matched stamp's first 10 characters: its day
CACHE_LIMIT = 1 << 16  # distinct dates remembered per column; past it, they are checked batch by batch


def keeps(kind: Optional[str], zones: set, values: Sequence[str], kind_of: Callable[[str], tuple],
          known: Dict[str, bool]) -> bool:
    """Whether every non-empty value of ``values`` leaves a column of ``kind`` (with ``zones``) unchanged.

    ``kind_of`` is the per-value check (``value -> (kind, has offset)``);
    ``known`` holds the dates already checked for this column.
    """
    pattern = _PATTERNS.get(kind or "")
    if pattern is None or (kind == "timestamp" and zones != {False}):
        return False
    joined = "\n".join(values)
    if joined.count("\n") != len(values) - 1 or not pattern.fullmatch(joined):
        return False  # a value holding a newline, or one of another form
    if kind == "date":
        return _dates_are(values, "date", kind_of, known)
    if kind == "timestamp":
        return _dates_are(map(_DAY_OF_STAMP, values), "date", kind_of, known)
    return True


def _dates_are(days: Iterable[str], kind: str, kind_of, known: Dict[str, bool]) -> bool:
    """Whether each distinct value of ``days`` is of ``kind`` (2/30/2022 has the form of a date but is none)."""
    fresh = set(days).difference(known)
    fresh.discard("")
    if len(known) + len(fresh) > CACHE_LIMIT:
        known.clear()
    for day in fresh:
        if kind_of(day)[0] != kind:
            return False
        known[day] = True
    return True
