"""A deterministic Gigster dataset with a sprinkling of every messy variant of the data contract.

The same (size, messy rate, seed) always gives the same documents, timestamps
included, so regenerating a dataset and syncing it again changes nothing.
"""
import logging
import random
import struct
from datetime import datetime, timedelta, timezone
from typing import Callable, Dict, Iterator, List

from bson import ObjectId

from gigsterpg.exc import ConfigError

logger = logging.getLogger(__name__)

WRITE_BATCH = 2000
START = datetime(2020, 1, 1, tzinfo=timezone.utc)
# Creation dates spread over five years from START whatever the size, so that no date (updated is up to
# 400 days later) lies in the future: an incremental run re-reads future-dated documents every time.
SPAN_MINUTES = 5 * 365 * 24 * 60
SKILLS = ("Python", "JavaScript", "TypeScript", "Go", "Rust", "Java", "React", "Node.js", "Django", "SQL",
          "PostgreSQL", "MongoDB", "Docker", "Kubernetes", "AWS", "Swift", "Kotlin", "Figma", "UI Design",
          "Machine Learning", "Data Science", "DevOps", "GraphQL", "Vue.js", "Ruby on Rails")
NEW_SKILLS = ("Elixir", "Haskell", "Solidity", "Terraform", "Svelte")
FIRST = ("Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Edsger", "Radia",
         "Guido", "Katherine", "Donald", "Hedy", "Tim")
LAST = ("Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen",
        "Dijkstra", "Perlman", "van Rossum", "Johnson", "Knuth", "Lamarr", "O'Neil")
WORDS = ("build", "a", "mobile", "app", "for", "the", "marketplace", "with", "payments", "dashboard", "api",
         "redesign", "landing", "page", "data", "pipeline", "migration", "audit", "chatbot", "integration")
STATES = ("cancelled", "done", "in_progress", "unstarted")


def object_id(seed: int, kind: int, index: int) -> ObjectId:
    """A deterministic ObjectId: a timestamp-like prefix, then seed, kind and index."""
    return ObjectId(struct.pack(">IHBxI", 1_577_836_800 + index, seed & 0xFFFF, kind, index))


class Generator:
    """Builds the users and gigs documents; ``users()`` must run before ``gigs()``."""

    def __init__(self, users: int, gigs: int, messy_rate: float = 0.05, seed: int = 42):
        if users < 0 or gigs < 0:
            raise ConfigError("bad dataset size", "--users and --gigs must be 0 or more", "give positive counts")
        if not 0 <= messy_rate <= 1:
            raise ConfigError(f"bad messy rate {messy_rate}", "it must be between 0 and 1", "e.g. --messy-rate 0.05",
                              value=messy_rate)
        self.user_count, self.gig_count = users, gigs
        self.messy_rate, self.seed = messy_rate, seed
        self.rng = random.Random(seed)
        self.user_ids: List = []

    # ---- users ----------------------------------------------------------------------

    def users(self) -> Iterator[Dict]:
        for index in range(self.user_count):
            spread = SPAN_MINUTES * index // max(1, self.user_count)
            created = START + timedelta(minutes=spread + self.rng.randrange(17))
            first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
            doc = {
                "_id": object_id(self.seed, 1, index),
                "created": created,
                "updated": created + timedelta(days=self.rng.randrange(400)),
                "name": f"{first} {last}",
                "email": f"{first}.{last}.{index}@example.com".lower().replace(" ", "").replace("'", ""),
                "skills": self.rng.sample(SKILLS, self.rng.randrange(6)),
            }
            if self.rng.random() < self.messy_rate:
                self.rng.choice(USER_MESS)(self, doc, index)
            self.user_ids.append(doc["_id"])
            yield doc

    def _legacy_id(self, doc: Dict, index: int) -> None:
        doc["_id"] = 10_000_000 + index if self.rng.random() < 0.5 else f"legacy-{index}"

    def _odd_dates(self, doc: Dict, index: int) -> None:
        choice = self.rng.randrange(3)
        if choice == 0:
            del doc["created"]
        elif choice == 1:
            doc["created"] = doc["created"].isoformat().replace("+00:00", "Z")
        else:
            doc["updated"] = int(doc["updated"].timestamp() * 1000)

    def _odd_user_name(self, doc: Dict, index: int) -> None:
        choice = self.rng.randrange(3)
        if choice == 0:
            doc["name"] = doc["name"].replace("'", "\u2019") + " \u2013 \u201cfreelancer\u201d"
        elif choice == 1:
            doc["name"] = f"  {doc['name']} "
        else:
            del doc["name"]  # rejected: name missing

    def _odd_email(self, doc: Dict, index: int) -> None:
        choice = self.rng.randrange(6)
        if choice == 0:
            doc["email"] = "mailto:" + doc["email"]
        elif choice == 1:
            doc["email"] = doc["email"].upper()
        elif choice == 2:
            doc["email"] = f" {doc['email']} "
        elif choice == 3:
            doc["email"] = None
        elif choice == 4:
            doc["email"] = doc["email"].replace("@", " at ")  # rejected: invalid email
        else:
            doc["email"] = "shared.address@example.com"  # every user after the first one is rejected

    def _odd_skills(self, doc: Dict, index: int) -> None:
        choice = self.rng.randrange(4)
        if choice == 0:
            del doc["skills"]
        elif choice == 1:
            doc["skills"] = doc["skills"] + doc["skills"]
        elif choice == 2:
            doc["skills"] = [f"  {name.upper()} " for name in doc["skills"]]
        else:
            doc["skills"] = doc["skills"] + [self.rng.choice(NEW_SKILLS)]

    def _unknown_field(self, doc: Dict, index: int) -> None:
        doc["referral"] = {"code": f"R{index}", "at": doc.get("created"), "by": object_id(self.seed, 9, index)}

    # ---- gigs -----------------------------------------------------------------------

    def gigs(self) -> Iterator[Dict]:
        for index in range(self.gig_count):
            spread = SPAN_MINUTES * index // max(1, self.gig_count)
            created = START + timedelta(minutes=spread + self.rng.randrange(7))
            doc = {
                "_id": object_id(self.seed, 2, index),
                "created": created,
                "updated": created + timedelta(days=self.rng.randrange(60)),
                "name": " ".join(self.rng.choices(WORDS, k=self.rng.randrange(2, 7))).capitalize(),
                "description": " ".join(self.rng.choices(WORDS, k=self.rng.randrange(5, 30))),
                "state": self.rng.choice(STATES),
                "poster": self.rng.choice(self.user_ids) if self.user_ids else None,
                "budget": self.rng.randrange(100, 50_000),
            }
            if self.rng.random() < 0.3:
                doc["upsert"] = {"ts": created, "source": "legacy-import"}
            if self.rng.random() < self.messy_rate:
                self.rng.choice(GIG_MESS)(self, doc, index)
            yield doc

    def _odd_gig_name(self, doc: Dict, index: int) -> None:
        del doc["name"]  # rejected: name missing

    def _odd_description(self, doc: Dict, index: int) -> None:
        choice = self.rng.randrange(3)
        if choice == 0:
            doc["description"] = None
        elif choice == 1:
            doc["description"] = "\u201cUrgent\u201d \u2013 " + doc["description"] * 200
        else:
            doc["description"] = "It\u2019s a \u201cquick\u201d job"

    def _odd_state(self, doc: Dict, index: int) -> None:
        doc["state"] = self.rng.choice(("open", "DONE", "archived"))  # rejected: unknown state

    def _odd_poster(self, doc: Dict, index: int) -> None:
        if self.rng.random() < 0.5:
            del doc["poster"]
        else:
            doc["poster"] = object_id(self.seed, 7, index)  # a user that does not exist

    def _odd_budget(self, doc: Dict, index: int) -> None:
        doc["budget"] = None if self.rng.random() < 0.5 else f"{doc['budget']}.50"


USER_MESS: List[Callable] = [Generator._legacy_id, Generator._odd_dates, Generator._odd_user_name,
                             Generator._odd_email, Generator._odd_skills, Generator._unknown_field]
GIG_MESS: List[Callable] = [Generator._legacy_id, Generator._odd_dates, Generator._odd_gig_name,
                            Generator._odd_description, Generator._odd_state, Generator._odd_poster,
                            Generator._odd_budget, Generator._unknown_field]


def write_dataset(database, users: int, gigs: int, messy_rate: float = 0.05, seed: int = 42,
                  replace: bool = False) -> Dict[str, int]:
    """Write a generated dataset into ``database`` (a pymongo Database), in batches.

    Args:
        replace: drop ``users`` and ``gigs`` first; without it, non-empty
            collections are refused rather than mixed with generated data.
    """
    generator = Generator(users, gigs, messy_rate, seed)
    for name in ("users", "gigs"):
        if replace:
            database.drop_collection(name)
        elif database[name].estimated_document_count():
            raise ConfigError(f"collection {name!r} of {database.name!r} is not empty",
                              "generate writes only into empty collections", "pass --replace to drop them first")
    written = {}
    for name, documents in (("users", generator.users()), ("gigs", generator.gigs())):
        written[name] = 0
        batch = []
        for doc in documents:
            batch.append(doc)
            if len(batch) == WRITE_BATCH:
                database[name].insert_many(batch, ordered=False)
                written[name] += len(batch)
                batch = []
        if batch:
            database[name].insert_many(batch, ordered=False)
            written[name] += len(batch)
        logger.info("generated %d %s", written[name], name)
    return written
