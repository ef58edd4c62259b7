"""The dataset generator: deterministic, and it does carry every messy variant."""
import pytest

from gigsterpg.exc import ConfigError, RejectedDocument
from gigsterpg.fixtures.generate import Generator
from gigsterpg.lib.pg.sync.gig import gig_row
from gigsterpg.lib.pg.sync.user import user_row


def dataset(**kwargs):
    generator = Generator(**kwargs)
    return list(generator.users()), list(generator.gigs())


def test_same_seed_same_documents_other_seed_other_documents():
    assert dataset(users=50, gigs=80, seed=3) == dataset(users=50, gigs=80, seed=3)
    assert dataset(users=50, gigs=80, seed=3) != dataset(users=50, gigs=80, seed=4)


def test_messy_variants_are_all_there():
    users, gigs = dataset(users=2000, gigs=2000, messy_rate=0.5, seed=11)
    reasons = set()
    for doc, mapping in [(doc, user_row) for doc in users] + [(doc, gig_row) for doc in gigs]:
        try:
            mapping(doc)
        except RejectedDocument as err:
            reasons.add(err.reason)
    assert {"name missing", "invalid email", "unknown state"} <= reasons
    assert any(isinstance(doc["_id"], int) for doc in users) and any(isinstance(doc["_id"], str) for doc in gigs)
    assert any(isinstance(doc.get("created"), str) for doc in users)
    assert any(isinstance(doc.get("updated"), int) for doc in gigs)
    assert any("mailto:" in (doc.get("email") or "") for doc in users)
    assert any(doc.get("email") is None and "email" in doc for doc in users)
    assert any("skills" not in doc for doc in users)
    assert any("referral" in doc for doc in users)
    assert any("upsert" in doc for doc in gigs)
    assert any(isinstance(doc.get("budget"), str) for doc in gigs)
    assert sum(doc.get("email") == "shared.address@example.com" for doc in users) > 1


def test_a_clean_dataset_has_no_reject():
    users, gigs = dataset(users=300, gigs=300, messy_rate=0, seed=1)
    for doc in users:
        user_row(doc)
    for doc in gigs:
        gig_row(doc)


@pytest.mark.parametrize("kwargs", [{"users": -1, "gigs": 1}, {"users": 1, "gigs": 1, "messy_rate": 1.5}])
def test_bad_sizes_are_refused(kwargs):
    with pytest.raises(ConfigError):
        Generator(**kwargs)
