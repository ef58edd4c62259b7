"""Pure helpers shared by the per-model document -> row mappings.

Nothing here touches a database: every function takes BSON-decoded values
and returns a clean value or raises ``RejectedDocument`` with a reason a
person understands.
"""
import json
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import AbstractSet, Any, Mapping, Optional

from uuid import UUID

from bson import ObjectId, json_util
from bson.binary import UUID_SUBTYPE, Binary
from bson.decimal128 import Decimal128

from gigsterpg.exc import RejectedDocument

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
JSON_OPTIONS = json_util.RELAXED_JSON_OPTIONS
_ESCAPED_NUL = "\\u0000"
_VISIBLE_NUL = "\\u2400"  # SYMBOL FOR NULL: keeps a NUL readable where PostgreSQL cannot store it
# PostgreSQL numeric holds up to 131072 digits before the decimal point and 16383 after it.
NUMERIC_MAX_ADJUSTED = 131071
NUMERIC_MIN_EXPONENT = -16383


def id_text(value: Any, field: str = "_id") -> str:
    """The text form of a MongoDB id: ObjectId -> 24 hex chars, int 0 -> '0', UUID -> its canonical form,
    a string as is. Other types (binary, sub-documents, doubles...) have no text form that could not
    collide with a string id: they are rejected."""
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, Binary) and value.subtype == UUID_SUBTYPE:
        return str(value.as_uuid())
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value:
        check_text(value, field)
        return value
    raise RejectedDocument(f"unsupported {field}", field, value)


# MongoDB's order of ids (BSON comparison order) as bytes that PostgreSQL's bytea order (memcmp, then
# length) keeps: a class byte in BSON's type order (numbers < strings < binary < ObjectIds), then the value
# in an order-keeping form. Only the id types ``id_text`` accepts have a key.
_KEY_NUMBER, _KEY_STRING, _KEY_BINARY, _KEY_OBJECT_ID = b"\x01", b"\x02", b"\x03", b"\x04"
_INT64_BIAS = 1 << 63


def id_order_key(value: Any) -> Optional[bytes]:
    """The sort key of an id in MongoDB's own order of ids; None for an id ``id_text`` rejects.

    Numbers by value, strings by their UTF-8 bytes, binary (UUID) by length, subtype, then bytes,
    ObjectIds by their 12 bytes: the order of MongoDB's ``_id`` index, whatever order a scan returns.
    """
    if isinstance(value, ObjectId):
        return _KEY_OBJECT_ID + value.binary
    if isinstance(value, UUID):
        value = Binary.from_uuid(value)
    if isinstance(value, Binary) and value.subtype == UUID_SUBTYPE:
        return _KEY_BINARY + len(value).to_bytes(4, "big") + bytes((value.subtype,)) + bytes(value)
    if isinstance(value, int) and not isinstance(value, bool) and -_INT64_BIAS <= value < _INT64_BIAS:
        return _KEY_NUMBER + (value + _INT64_BIAS).to_bytes(8, "big")
    if isinstance(value, str) and value and "\x00" not in value:
        return _KEY_STRING + value.encode("utf-8", "surrogatepass")
    return None


def id_from_order_key(key: bytes) -> Any:
    """The id an ``id_order_key`` was made from (an int for any number: a query for it finds int32 and int64)."""
    kind, body = key[:1], bytes(key[1:])
    if kind == _KEY_OBJECT_ID:
        return ObjectId(body)
    if kind == _KEY_BINARY:
        return Binary(body[5:], body[4])
    if kind == _KEY_NUMBER:
        return int.from_bytes(body, "big") - _INT64_BIAS
    return body.decode("utf-8", "surrogatepass")


def describe_id(value: Any) -> str:
    """The id as text for the rejects table, whatever its type (never raises)."""
    try:
        return id_text(value)
    except RejectedDocument:
        return json_util.dumps(value, json_options=JSON_OPTIONS).replace(_ESCAPED_NUL, _VISIBLE_NUL)


def check_text(value: str, field: str) -> str:
    """``value`` unchanged, unless PostgreSQL text cannot hold it."""
    if "\x00" in value:
        raise RejectedDocument("NUL character", field, value)
    return value


def optional_text(doc: Mapping, field: str) -> Optional[str]:
    """A string field that may be missing or null."""
    value = doc.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RejectedDocument(f"{field} is not text", field, value)
    return check_text(value, field)


def required_name(doc: Mapping, field: str, max_length: int) -> str:
    """A required, trimmed string of at most ``max_length`` characters."""
    value = doc.get(field)
    if value is None:
        raise RejectedDocument(f"{field} missing", field, value)
    if not isinstance(value, str):
        raise RejectedDocument(f"{field} is not text", field, value)
    value = check_text(value.strip(), field)
    if not value:
        raise RejectedDocument(f"{field} missing", field, value)
    if len(value) > max_length:
        raise RejectedDocument(f"{field} too long", field, value)
    return value


def timestamp(doc: Mapping, field: str) -> Optional[datetime]:
    """A UTC timestamp from a BSON date, an ISO-8601 string or epoch milliseconds."""
    value = doc.get(field)
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is timezone.utc:  # what the sync's decoder gives: nothing to do
            return value
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return EPOCH + timedelta(milliseconds=value)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.strip())
            return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # not a date, or one outside years 1-9999 once in UTC
        pass
    raise RejectedDocument(f"unparseable {field}", field, value)


def number(doc: Mapping, field: str) -> Optional[Decimal]:
    """A finite number from an int, a double, a Decimal128 or a numeric string."""
    value = doc.get(field)
    if value is None:
        return None
    if isinstance(value, bool):
        raise RejectedDocument(f"{field} is not a number", field, value)
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RejectedDocument(f"{field} is not a finite number", field, value)
        return Decimal(repr(value))
    try:
        result = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, TypeError, ValueError):
        raise RejectedDocument(f"{field} is not a number", field, value) from None
    if not result.is_finite():
        raise RejectedDocument(f"{field} is not a finite number", field, value)
    if result.as_tuple().exponent < NUMERIC_MIN_EXPONENT:
        if not result:  # 0E-20000 is 0
            return Decimal(0)
        raise RejectedDocument(f"{field} out of range", field, value)
    if result.adjusted() > NUMERIC_MAX_ADJUSTED:
        raise RejectedDocument(f"{field} out of range", field, value)
    return result


def extra_json(doc: Mapping, known: AbstractSet[str]) -> str:
    """Every field not in ``known``, as relaxed extended JSON for a JSONB column."""
    if known.issuperset(doc):
        return "{}"
    extra = {key: value for key, value in doc.items() if key not in known}
    text = json_util.dumps(extra, json_options=JSON_OPTIONS)
    if _ESCAPED_NUL in text:
        for key, value in extra.items():
            if _contains_nul(value):
                raise RejectedDocument("NUL character", key, value)
    return text


def fill(instance, row: tuple, skip=()) -> None:
    """Copy a row's fields onto the mapped instance of the same names; ``extra`` is parsed from its JSON."""
    for name, value in zip(row._fields, row):
        if name not in skip:
            setattr(instance, name, json.loads(value) if name == "extra" else value)


def document_json(doc: Mapping) -> str:
    """The whole document as readable extended JSON, for the rejects table (never raises on NUL)."""
    return json_util.dumps(doc, json_options=JSON_OPTIONS).replace(_ESCAPED_NUL, _VISIBLE_NUL)


def _contains_nul(value: Any) -> bool:
    """Whether a NUL hides in any string or key of a nested value (iterative: no recursion limit)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def collapse_spaces(value: str) -> str:
    """Trim and fold runs of white space into one space."""
    return " ".join(value.split())
