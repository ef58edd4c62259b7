"""Property tests: for any value in any field, a mapping gives a valid row or a reject, never an exception.

Documents are generated as Python values, encoded to BSON and handed to the
sync as raw bytes, exactly as they arrive from MongoDB.
"""
import json
import math
from datetime import datetime, timezone
from decimal import Decimal

import bson
from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.errors import InvalidDocument
from bson.raw_bson import RawBSONDocument
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from gigsterpg.exc import RejectedDocument
from gigsterpg.lib.pg.db.gig import GIG_NAME_MAX, GIG_STATES
from gigsterpg.lib.pg.db.user import USER_NAME_MAX
from gigsterpg.lib.pg.sync import document
from gigsterpg.lib.pg.sync.engine.bulk import map_document
from gigsterpg.lib.pg.sync.gig import GigRow, GigSync
from gigsterpg.lib.pg.sync.user import EMAIL_MAX, UserRow, UserSync
from tests.figures import FIGURES

# Any text, NULs and every plane included (BSON cannot carry lone surrogates: they are tested as raw bytes).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=80)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 63, 2 ** 63 - 1), st.floats(allow_nan=True, allow_infinity=True),
    TEXT, st.datetimes(timezones=st.just(timezone.utc)),
    st.decimals(allow_nan=True, allow_infinity=True).map(lambda d: Decimal128(d) if _fits128(d) else None),
    st.binary(max_size=16).map(lambda b: Binary(b, 0)), st.uuids().map(lambda u: Binary.from_uuid(u)),
    st.builds(bson.ObjectId), st.sampled_from(sorted(GIG_STATES)),
    st.sampled_from(["a@b.co", " MAILTO:X@Y.ORG ", "no-at", "1e400", "2026-01-01T00:00:00+05:00", "0001-01-01T00:00"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXT.filter(lambda k: "\x00" not in k), inner, max_size=4)),
    max_leaves=12)
USER_FIELDS = ("_id", "created", "updated", "name", "email", "skills")
GIG_FIELDS = ("_id", "created", "updated", "name", "description", "state", "poster", "budget")


def _fits128(value: Decimal) -> bool:
    try:
        Decimal128(value)
        return True
    except Exception:
        return False


def documents(fields):
    """Documents with any subset of ``fields`` holding any value, plus unknown fields."""
    known = st.fixed_dictionaries({}, optional={name: VALUES for name in fields})
    unknown = st.dictionaries(TEXT.filter(lambda k: k and "\x00" not in k and k not in fields), VALUES, max_size=3)
    return st.tuples(known, unknown).map(lambda parts: {**parts[1], **parts[0]})


def raw(doc: dict) -> RawBSONDocument:
    try:
        return RawBSONDocument(bson.encode(doc))
    except (InvalidDocument, OverflowError):  # not a document MongoDB could hold
        assume(False)


def check_common(row) -> None:
    for value in row:
        if isinstance(value, str):
            assert "\x00" not in value
        if isinstance(value, datetime):
            assert value.tzinfo is not None and value.utcoffset().total_seconds() == 0
    assert row.mongo_id and isinstance(row.mongo_id, str)
    assert isinstance(json.loads(row.extra), dict)


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(documents(USER_FIELDS))
def test_any_user_document_maps_to_a_valid_row_or_a_reject(doc):
    result = map_document(UserSync, raw(doc))
    if isinstance(result, RejectedDocument):
        assert result.reason and result.detail
        FIGURES["random documents through the property tests"] += 1
        return
    assert isinstance(result, UserRow)
    check_common(result)
    assert 0 < len(result.name) <= USER_NAME_MAX
    assert result.email is None or (len(result.email) <= EMAIL_MAX and result.email == result.email.lower())
    keys = [key for _, key in result.skills]
    assert len(keys) == len(set(keys)) and all(name and key == name.lower() for name, key in result.skills)
    FIGURES["random documents through the property tests"] += 1


@PROPERTY
@given(documents(GIG_FIELDS))
def test_any_gig_document_maps_to_a_valid_row_or_a_reject(doc):
    result = map_document(GigSync, raw(doc))
    if isinstance(result, RejectedDocument):
        assert result.reason and result.detail
        FIGURES["random documents through the property tests"] += 1
        return
    assert isinstance(result, GigRow)
    check_common(result)
    assert 0 < len(result.name) <= GIG_NAME_MAX and result.state in GIG_STATES
    if result.budget is not None:
        assert result.budget.is_finite()
        assert result.budget.as_tuple().exponent >= document.NUMERIC_MIN_EXPONENT
        assert not result.budget or result.budget.adjusted() <= document.NUMERIC_MAX_ADJUSTED
    FIGURES["random documents through the property tests"] += 1


@PROPERTY
@given(VALUES)
def test_any_id_has_a_text_form_or_is_rejected(value):
    try:
        text = document.id_text(value)
    except RejectedDocument as err:
        assert err.reason == "unsupported _id" or err.reason == "NUL character"
        assert document.describe_id(value)  # the rejects table still gets a readable key
    else:
        assert text and "\x00" not in text
    FIGURES["random ids through the property tests"] += 1


def test_edges_the_generators_might_miss():
    assert document.number({"b": "1e131071"}, "b") == Decimal("1e131071")  # PostgreSQL's largest (tested there too)
    for bad, reason in (("1e131072", "b out of range"), ("1e-16384", "b out of range"),
                        (math.inf, "b is not a finite number")):
        try:
            document.number({"b": bad}, "b")
        except RejectedDocument as err:
            assert err.reason == reason
        else:
            raise AssertionError(f"{bad!r} was accepted")
    assert document.number({"b": Decimal128("0E-6176")}, "b") == 0
    for late in ("0001-01-01T00:00:00+01:00", 2 ** 62):
        try:
            document.timestamp({"t": late}, "t")
        except RejectedDocument as err:
            assert err.reason == "unparseable t"
        else:
            raise AssertionError(f"{late!r} was accepted")
