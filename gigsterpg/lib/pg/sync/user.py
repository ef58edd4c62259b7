"""Sync of MongoDB ``users`` into ``users``, ``skills`` and ``user_skills``.

``user_row`` is the one document -> row mapping; ``UserSync.mongo_to_pg``
(one ORM instance) and the bulk path (COPY + set-wise merge) both use it.
"""
import re
from typing import Mapping, NamedTuple, Optional, Tuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gigsterpg.exc import RejectedDocument
from gigsterpg.lib.pg.db.skill import Skill
from gigsterpg.lib.pg.db.user import USER_NAME_MAX, User
from gigsterpg.lib.pg.db.user_skill import UserSkill
from gigsterpg.lib.pg.sync import document
from gigsterpg.lib.pg.sync.table import TableSync

KNOWN_FIELDS = frozenset({"_id", "created", "updated", "name", "email", "skills"})
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
EMAIL_MAX = 254
# The staged skills not known yet (compared ignoring case), the first spelling in sort order.
ADD_SKILLS = ("INSERT INTO skills (name)"
              " SELECT DISTINCT ON (s.key) s.name FROM stage_user_skills s"
              " WHERE NOT EXISTS (SELECT 1 FROM skills k WHERE lower(k.name) = s.key)"
              " ORDER BY s.key, s.name"
              " ON CONFLICT DO NOTHING")
# The staged (user, skill) pairs as ids, once the users and skills are stored.
STAGE_SKILL_IDS = (
    "INSERT INTO stage_user_skill_ids (user_id, skill_id)"
    " SELECT l.user_id, k.id FROM (SELECT (SELECT u.id FROM users u WHERE u._id = s._id) AS user_id, s.key"
    "  FROM stage_user_skills s) l JOIN skills k ON lower(k.name) = l.key WHERE l.user_id IS NOT NULL")


class UserRow(NamedTuple):
    """One ``users`` row and the user's skills, as the sync stores them."""

    mongo_id: str
    created: object
    updated: object
    name: str
    email: Optional[str]
    extra: str
    # (display name, lower-case key) per distinct skill, in document order.
    skills: Tuple[Tuple[str, str], ...]
    # The id's place in MongoDB's order of ids (``document.id_order_key``): of users with one e-mail, the
    # first keeps it.
    order_key: Optional[bytes] = None


def user_row(doc: Mapping) -> UserRow:
    """Map one ``users`` document to its row, or raise RejectedDocument."""
    return UserRow(
        mongo_id=document.id_text(doc.get("_id")),
        created=document.timestamp(doc, "created"),
        updated=document.timestamp(doc, "updated"),
        name=document.required_name(doc, "name", USER_NAME_MAX),
        email=clean_email(doc.get("email")),
        extra=document.extra_json(doc, KNOWN_FIELDS),
        skills=clean_skills(doc.get("skills")),
        order_key=document.id_order_key(doc.get("_id")),
    )


def clean_email(value) -> Optional[str]:
    """Lower-case, without ``mailto:`` or spaces; None when absent; reject when invalid."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise RejectedDocument("invalid email", "email", value)
    email = "".join(value.split())
    if email[:7].lower() == "mailto:":
        email = email[7:]
    email = email.lower()
    if not email:
        return None
    if len(email) > EMAIL_MAX or not _EMAIL.match(email):
        raise RejectedDocument("invalid email", "email", value)
    return document.check_text(email, "email")


def clean_skills(value) -> Tuple[Tuple[str, str], ...]:
    """Distinct skills as (name, key): spaces folded, compared ignoring case."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RejectedDocument("skills is not an array", "skills", value)
    skills = {}
    for item in value:
        if not isinstance(item, str):
            raise RejectedDocument("skills holds a non-text value", "skills", item)
        name = document.check_text(document.collapse_spaces(item), "skills")
        if name:
            skills.setdefault(name.lower(), name)
    return tuple((name, key) for key, name in skills.items())


class UserSync(TableSync):
    """Fills ``User`` rows from ``users`` documents, one at a time or in bulk."""

    collection = "users"
    table = "users"
    mapped = User
    # Staged columns and their types, in UserRow's order; extra is JSON text, cast on merge.
    columns = (("_id", "text"), ("created", "timestamptz"), ("updated", "timestamptz"), ("name", "text"),
               ("email", "text"), ("extra", "text"))
    to_row = staticmethod(user_row)
    # What two users may claim at once: an e-mail; a skill the merge adds, spelt as its batch spells it.
    unique = ("email",)
    unknown_adds = "NOT EXISTS (SELECT 1 FROM skills k WHERE lower(k.name) = a.key)"

    @staticmethod
    def adds(row: UserRow) -> Tuple[str, ...]:
        """The keys of the user's skills (the merge adds those not in ``skills``)."""
        return tuple(key for _, key in row.skills)

    @staticmethod
    def mongo_to_pg(session: Session, mongo_entry: Mapping, instance: User) -> User:
        """Fill ``instance`` from one document, its ``UserSkill`` rows included.

        Skills are resolved by name, ignoring case, to the existing ``Skill``
        rows; a name not seen before becomes a new ``Skill``.
        """
        row = user_row(mongo_entry)
        document.fill(instance, row, skip=("skills", "order_key"))
        wanted = _skills_by_key(session, row.skills)
        kept = [link for link in instance.skills if link.skill.name.lower() in wanted]
        have = {link.skill.name.lower() for link in kept}
        kept.extend(UserSkill(skill=skill) for key, skill in wanted.items() if key not in have)
        instance.skills = kept
        return instance

    # ---- bulk path: staging tables, COPY and a set-wise merge -------------------------

    # Staging tables and their columns: the temp tables are created from these, and COPY uses them.
    # ``id_key`` (``UserRow.order_key``) decides which of two users with one e-mail keeps it.
    staging = {
        "stage_users": (("id_key", "bytea"),) + columns,
        "stage_user_skills": (("_id", "text"), ("name", "text"), ("key", "text")),
        "stage_user_skill_ids": (("user_id", "int8"), ("skill_id", "int4")),
    }

    @staticmethod
    def stage(copy, rows) -> None:
        """COPY the batch's rows and (user, skill) pairs into the staging tables."""
        copy("stage_users", ((row.order_key,) + row[:6] for row in rows))
        copy("stage_user_skills", ((row.mongo_id, name, key) for row in rows for name, key in row.skills))

    # Of users with one e-mail, the one whose ``_id`` comes first in MongoDB's order of ids keeps it (the data
    # contract; not the first the scan met). A stored holder whose key is unknown (``keys`` has none: a
    # row of before the keys, or after a crash emptied the hash cache) keeps it.

    @staticmethod
    def conflicts(cursor, keys: str):
        """Staged users whose e-mail a user whose id comes first holds (stored, not in the batch) or is
        given in the batch; ``keys``: the stored users' (``_id``, ``id_key``), a FROM item."""
        cursor.execute(
            "SELECT s._id, 'duplicate email', 'duplicate email: ' || s.email || ' is already used by user ' || u._id"
            " FROM stage_users s CROSS JOIN LATERAL"
            f"  (SELECT u._id FROM users u LEFT JOIN {keys} h ON h._id = u._id WHERE u.email = s.email"
            "   AND u._id <> s._id AND NOT EXISTS (SELECT 1 FROM stage_users x WHERE x._id = u._id)"
            "   AND (h.id_key IS NULL OR h.id_key < s.id_key) LIMIT 1) u"
            " UNION ALL"
            " SELECT _id, 'duplicate email', 'duplicate email: ' || email || ' is already used by user ' || first_id"
            " FROM (SELECT _id, email, first_value(_id) OVER w AS first_id, row_number() OVER w AS n"
            "  FROM stage_users WHERE email IS NOT NULL WINDOW w AS (PARTITION BY email ORDER BY id_key)) d"
            " WHERE n > 1")
        return cursor.fetchall()

    @staticmethod
    def displaced(cursor, keys: str):
        """(``_id``, ``id_key``, reason, detail) of stored users (not in the batch) whose e-mail a staged
        user (left after ``conflicts``) takes, its id coming first: they become rejects."""
        cursor.execute(
            "SELECT u._id, h.id_key, 'duplicate email', 'duplicate email: ' || u.email || ' is already used by user '"
            f" || s._id FROM stage_users s JOIN users u ON u.email = s.email AND u._id <> s._id JOIN {keys} h"
            " ON h._id = u._id WHERE s.id_key < h.id_key AND NOT EXISTS (SELECT 1 FROM stage_users x"
            " WHERE x._id = u._id)")
        return cursor.fetchall()

    @staticmethod
    def settle(cursor) -> None:
        """After a scan: each open duplicate-e-mail reject names the user that holds the address in the end
        (a holder may have lost it since to a user whose id comes first)."""
        cursor.execute(
            "UPDATE sync_rejects r SET detail = 'duplicate email: ' || u.email || ' is already used by user '"
            " || u._id, changed_at = now() FROM users u WHERE r.collection = 'users' AND r.resolved_at IS NULL"
            " AND r.reason = 'duplicate email' AND u.email = split_part(r.detail, ' ', 3)"
            " AND r.detail <> 'duplicate email: ' || u.email || ' is already used by user ' || u._id")

    # A user's rows elsewhere, deleted with the user's (a first load has no foreign key to cascade).
    dependents = (("user_skills", "user_id"),)

    @classmethod
    def merge(cls, cursor) -> dict:
        """Merge the staged batch: new skills, then users (``merge_sql``), then their user_skills.

        Users are looked up one index probe per staged row (scalar subqueries, ``= ANY(ARRAY(…))``):
        with joins, PostgreSQL hashed the whole ``users`` table (and scanned ``user_skills``) for
        every batch, so a batch cost more the bigger the tables were.
        """
        cursor.execute(ADD_SKILLS)
        skills_added = cursor.rowcount
        counts = super().merge(cursor)
        cursor.execute(STAGE_SKILL_IDS)
        cursor.execute(
            "DELETE FROM user_skills us WHERE us.user_id = ANY(ARRAY("
            "  SELECT (SELECT u.id FROM users u WHERE u._id = s._id) FROM stage_users s)) AND NOT EXISTS ("
            "  SELECT 1 FROM stage_user_skill_ids w WHERE w.user_id = us.user_id AND w.skill_id = us.skill_id)")
        links_deleted = cursor.rowcount
        cursor.execute("INSERT INTO user_skills (user_id, skill_id) SELECT user_id, skill_id"
                       " FROM stage_user_skill_ids ON CONFLICT DO NOTHING")
        links_inserted = cursor.rowcount
        return {**counts, "skills_added": skills_added, "user_skills_inserted": links_inserted,
                "user_skills_deleted": links_deleted}

    @classmethod
    def insert(cls, cursor) -> dict:
        """The first load's ``merge``: new skills, users and their links by plain inserts (no links to
        delete, no conflict to probe; the keys of user_skills are checked once, at the load's end)."""
        cursor.execute(ADD_SKILLS)
        skills_added = cursor.rowcount
        counts = super().insert(cursor)
        cursor.execute(STAGE_SKILL_IDS)
        cursor.execute("INSERT INTO user_skills (user_id, skill_id) SELECT user_id, skill_id FROM stage_user_skill_ids")
        return {**counts, "skills_added": skills_added, "user_skills_inserted": cursor.rowcount,
                "user_skills_deleted": 0}

    # ---- first load in worker processes (engine/parallel.py, engine/firstload.py) ----------

    # The child rows a worker loads beside each user's row (keyed by the user's place in the scan).
    load_children = {"user_skills": (("name", "text"), ("key", "text"))}

    @staticmethod
    def child_load_rows(row: UserRow) -> dict:
        """A user's skills, (name, key) each, for the load table of ``user_skills``."""
        return {"user_skills": row.skills} if row.skills else {}

    @staticmethod
    def reject_loaded(cursor, load: str, batch_size: int) -> None:
        """Of the loaded users with one e-mail, the one whose id comes first in MongoDB's order of ids keeps
        it; the others are rejected.

        The merge path's rule, decided set-wise over the whole collection: the same rejects with the same
        details, whatever the scan order and the number of workers that loaded them.
        """
        cursor.execute(
            f"UPDATE {load} l SET reason = 'duplicate email', detail = 'duplicate email: ' || d.email"
            "  || ' is already used by user ' || d.holder"
            " FROM (SELECT pos, email, first_value(_id) OVER e AS holder, row_number() OVER e AS n"
            f"  FROM {load} WHERE reason IS NULL AND email IS NOT NULL"
            "  WINDOW e AS (PARTITION BY email ORDER BY id_key, pos)) d"
            " WHERE d.n > 1 AND l.pos = d.pos")
        # Held: a loser the batch-by-batch paths store until a user whose id comes first arrives (none with
        # one before its own in a batch up to its own).
        cursor.execute(
            f"UPDATE {load} l SET held = true FROM (SELECT pos, id_key, reason,"
            # min() of bytea is PostgreSQL 18's; hex in the C collation sorts as the bytes do, on every version.
            "  min(encode(id_key, 'hex') COLLATE \"C\") OVER (PARTITION BY email ORDER BY pos / %s) AS least"
            f"  FROM {load} WHERE email IS NOT NULL AND (reason IS NULL OR reason = 'duplicate email')) d"
            " WHERE d.reason = 'duplicate email' AND encode(d.id_key, 'hex') = d.least AND l.pos = d.pos",
            (batch_size,))

    @staticmethod
    def after_loaded(cursor, load: str, children: dict, batch_size: int) -> dict:
        """Once the users are in: the new skills (each spelt as the first batch holding it spells it first in
        sort order, numbered batch by batch, as the merge path adds them), then every user's links."""
        skills = children["user_skills"]
        cursor.execute(
            "INSERT INTO skills (name) SELECT f.name FROM (SELECT DISTINCT ON (k.key) k.key, k.name, k.pos / %s AS b"
            f"  FROM {skills} k JOIN {load} s ON s.pos = k.pos WHERE s.reason IS NULL OR s.held"
            "  ORDER BY k.key, k.pos / %s,"
            "  k.name) f WHERE NOT EXISTS (SELECT 1 FROM skills x WHERE lower(x.name) = f.key)"
            " ORDER BY f.b, f.key ON CONFLICT DO NOTHING", (batch_size, batch_size))
        skills_added = cursor.rowcount
        cursor.execute(f"INSERT INTO user_skills (user_id, skill_id) SELECT u.id, x.id FROM {skills} k"
                       f" JOIN {load} s ON s.pos = k.pos AND s.reason IS NULL JOIN users u ON u._id = s._id"
                       " JOIN skills x ON lower(x.name) = k.key")
        linked = cursor.rowcount
        # The links of held users (stored, then rejected), which the batch-by-batch paths insert and delete.
        cursor.execute(f"SELECT count(*) FROM {skills} k JOIN {load} s ON s.pos = k.pos AND s.held")
        linked += cursor.fetchone()[0]
        return {"skills_added": skills_added, "user_skills_inserted": linked, "user_skills_deleted": 0}


def _skills_by_key(session: Session, skills) -> dict:
    """The Skill row for each (name, key), adding the ones not in the table yet."""
    keys = [key for _, key in skills]
    found = {skill.name.lower(): skill for skill in session.scalars(
        select(Skill).where(func.lower(Skill.name).in_(keys)))} if keys else {}
    result = {}
    for name, key in skills:
        if key not in found:
            found[key] = Skill(name=name)
            session.add(found[key])
        result[key] = found[key]
    return result
