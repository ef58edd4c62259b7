"""The pure document -> row mappings, without any server: every messy variant of the data contract."""
import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from bson import ObjectId
from bson.decimal128 import Decimal128

from gigsterpg.exc import RejectedDocument
from gigsterpg.lib.pg.sync import document
from gigsterpg.lib.pg.sync.gig import gig_row
from gigsterpg.lib.pg.sync.user import clean_email, clean_skills, user_row

OID = ObjectId("5f1b2c3d4e5f60718293a4b5")
UTC = timezone.utc


def user(**fields):
    doc = {"_id": OID, "name": "Ada Lovelace", "email": "ada@example.com", "skills": ["Python"]}
    doc.update(fields)
    return {key: value for key, value in doc.items() if value is not ...}


def gig(**fields):
    doc = {"_id": OID, "name": "Build an app", "state": "done", "poster": OID, "budget": 100}
    doc.update(fields)
    return {key: value for key, value in doc.items() if value is not ...}


def rejected(mapping, doc) -> str:
    with pytest.raises(RejectedDocument) as info:
        mapping(doc)
    return info.value.reason


# ---- ids ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, text", [(OID, "5f1b2c3d4e5f60718293a4b5"), (0, "0"), (42, "42"),
                                       ("legacy-7", "legacy-7")])
def test_ids_become_text(raw, text):
    assert user_row(user(_id=raw)).mongo_id == text


@pytest.mark.parametrize("raw", [True, 1.5, "", {"a": 1}, None])
def test_unsupported_ids_are_rejected(raw):
    assert rejected(user_row, user(_id=raw)) == "unsupported _id"


def test_describe_id_never_raises():
    assert document.describe_id({"a": 1}) == '{"a": 1}'
    assert document.describe_id(OID) == str(OID)


# ---- timestamps --------------------------------------------------------------------------

def test_timestamps_from_every_encoding_are_utc():
    row = user_row(user(created=datetime(2021, 5, 4, 3, 2, 1), updated="2021-05-04T05:02:01+02:00"))
    assert row.created == datetime(2021, 5, 4, 3, 2, 1, tzinfo=UTC)
    assert row.updated == datetime(2021, 5, 4, 3, 2, 1, tzinfo=UTC)
    assert user_row(user(created=1620097321000)).created == datetime(2021, 5, 4, 3, 2, 1, tzinfo=UTC)
    assert user_row(user(created="2021-05-04T03:02:01Z")).created == datetime(2021, 5, 4, 3, 2, 1, tzinfo=UTC)
    assert user_row(user(created="2021-05-04 03:02:01")).created == datetime(2021, 5, 4, 3, 2, 1, tzinfo=UTC)


def test_missing_timestamps_are_null():
    row = user_row(user())
    assert row.created is None and row.updated is None


@pytest.mark.parametrize("raw", ["yesterday", 10 ** 20, [2021], True])
def test_unparseable_timestamps_are_rejected(raw):
    assert rejected(user_row, user(created=raw)) == "unparseable created"


# ---- users: name, email, skills ----------------------------------------------------------

def test_name_is_trimmed_and_keeps_curly_quotes_and_dashes():
    assert user_row(user(name="  Ada \u201cthe first\u201d \u2013 O\u2019Neil ")).name == (
        "Ada \u201cthe first\u201d \u2013 O\u2019Neil")


@pytest.mark.parametrize("name, reason", [(..., "name missing"), (None, "name missing"), ("   ", "name missing"),
                                          (7, "name is not text"), ("x" * 65, "name too long")])
def test_bad_names_are_rejected(name, reason):
    assert rejected(user_row, user(name=name)) == reason


def test_name_at_the_length_limit_loads():
    assert user_row(user(name="x" * 64)).name == "x" * 64


@pytest.mark.parametrize("raw, clean", [
    ("mailto:Ada@Example.com", "ada@example.com"),
    ("MAILTO:ada@example.com", "ada@example.com"),
    ("ADA@EXAMPLE.COM", "ada@example.com"),
    ("  ada @ example.com ", "ada@example.com"),
    (None, None),
    ("   ", None),
])
def test_emails_are_cleaned(raw, clean):
    assert clean_email(raw) == clean


@pytest.mark.parametrize("raw", ["ada", "ada@", "@example.com", "ada@example", "a@b@c.com", 12, "x" * 250 + "@a.com"])
def test_invalid_emails_are_rejected(raw):
    assert rejected(user_row, user(email=raw)) == "invalid email"


def test_skills_are_deduplicated_ignoring_case_and_spacing():
    assert clean_skills(["Python", " python ", "Machine   Learning", "machine learning", "Go", ""]) == (
        ("Python", "python"), ("Machine Learning", "machine learning"), ("Go", "go"))


def test_missing_skills_are_none():
    assert user_row(user(skills=...)).skills == ()
    assert user_row(user(skills=None)).skills == ()


@pytest.mark.parametrize("raw, reason", [("Python", "skills is not an array"),
                                         (["Python", 3], "skills holds a non-text value")])
def test_bad_skills_are_rejected(raw, reason):
    assert rejected(user_row, user(skills=raw)) == reason


def test_unknown_user_fields_go_to_extra_as_extended_json():
    row = user_row(user(referral={"by": OID, "at": datetime(2020, 1, 1, tzinfo=UTC)}, score=Decimal128("1.5")))
    extra = json.loads(row.extra)
    assert extra == {"referral": {"by": {"$oid": str(OID)}, "at": {"$date": "2020-01-01T00:00:00Z"}},
                     "score": {"$numberDecimal": "1.5"}}
    assert user_row(user()).extra == "{}"


def test_nul_characters_are_rejected_wherever_they_hide():
    assert rejected(user_row, user(name="Ada\x00")) == "NUL character"
    assert rejected(user_row, user(notes={"deep": ["ok", {"k": "bad\x00"}]})) == "NUL character"
    assert rejected(user_row, user(notes={"bad\x00key": 1})) == "NUL character"


def test_reject_detail_names_field_and_value_but_stays_short():
    with pytest.raises(RejectedDocument) as info:
        user_row(user(name="y" * 10_000_000))
    assert info.value.field == "name"
    assert "10000000 characters" in info.value.detail and len(info.value.detail) < 200


# ---- gigs ----------------------------------------------------------------------------------

def test_clean_gig():
    row = gig_row(gig(description="It\u2019s \u201cquick\u201d", upsert={"x": 1}, created=1000))
    assert row.mongo_id == str(OID)
    assert row.poster_ref == str(OID)
    assert row.budget == Decimal(100)
    assert row.description == "It\u2019s \u201cquick\u201d"
    assert row.created == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert row.extra == "{}", "upsert is never stored"


@pytest.mark.parametrize("state", ["cancelled", "done", "in_progress", "unstarted"])
def test_every_known_state_loads(state):
    assert gig_row(gig(state=state)).state == state


@pytest.mark.parametrize("state", ["open", "DONE", None, ..., 3])
def test_unknown_states_are_rejected(state):
    assert rejected(gig_row, gig(state=state)) == "unknown state"


@pytest.mark.parametrize("raw, value", [(None, None), (..., None), ("12.50", Decimal("12.50")), (" 7 ", Decimal(7)),
                                        (2.5, Decimal("2.5")), (Decimal128("3.25"), Decimal("3.25")),
                                        (10 ** 30, Decimal(10 ** 30))])
def test_budgets(raw, value):
    assert gig_row(gig(budget=raw)).budget == value


@pytest.mark.parametrize("raw, reason", [("lots", "budget is not a number"), (True, "budget is not a number"),
                                         (float("nan"), "budget is not a finite number"),
                                         (float("inf"), "budget is not a finite number"),
                                         ("Infinity", "budget is not a finite number"),
                                         (Decimal128("NaN"), "budget is not a finite number")])
def test_bad_budgets_are_rejected(raw, reason):
    assert rejected(gig_row, gig(budget=raw)) == reason


def test_poster_may_be_missing_or_legacy():
    assert gig_row(gig(poster=...)).poster_ref is None
    assert gig_row(gig(poster=None)).poster_ref is None
    assert gig_row(gig(poster=12)).poster_ref == "12"
    assert rejected(gig_row, gig(poster={"$ref": "users"})) == "unsupported poster"


def test_gig_name_and_description_rules():
    assert rejected(gig_row, gig(name=...)) == "name missing"
    assert rejected(gig_row, gig(name="n" * 129)) == "name too long"
    assert gig_row(gig(name="n" * 128)).name == "n" * 128
    assert gig_row(gig(description=None)).description is None
    assert gig_row(gig(description="d" * 1_000_000)).description == "d" * 1_000_000
    assert rejected(gig_row, gig(description=["not", "text"])) == "description is not text"


def test_document_json_keeps_a_nul_readable():
    text = document.document_json({"_id": 1, "name": "a\x00b"})
    assert "\\u0000" not in text and json.loads(text)["name"] == "a\u2400b"
