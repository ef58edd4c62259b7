"""``TableSync``: the bulk half of the ``SyncModel`` contract, generated from a model's declared columns.

A model declares its collection, table, mapped class, the staged ``columns``
(in its row's order) and its ``references``; from these ``TableSync`` makes the
staging table, the COPY, the merge (an ``UPDATE … WHERE … IS DISTINCT FROM``
of the rows there, then an ``INSERT`` of the new ones, counting both) and the late
linking of references. A model with more to do (users: skills and
user_skills) overrides ``stage`` / ``merge`` and calls ``upsert`` itself.
"""
import re
from typing import Dict, NamedTuple, Optional, Tuple

from sqlalchemy.dialects.postgresql import JSON, JSONB

from gigsterpg.lib.pg.sync.contract import Columns, Reference

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def _checked(*names: str) -> None:
    """Generated SQL quotes nothing: every declared name must be a plain lower-case identifier."""
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not a plain identifier")


def upsert_sql(table: str, stage: str, values: Dict[str, str]) -> Tuple[str, str]:
    """The merge of ``stage`` into ``table``: (the update of rows that differ, the insert of new ``_id``s),
    each counting and naming its rows (a row written and later displaced in the same run is then counted once).

    ``values``: target column -> SQL of its value over the staged row ``s``, ``_id`` first.
    A row whose values all equal the staged ones is not written (no dead tuple, no WAL). Two statements, not
    ``INSERT … ON CONFLICT DO UPDATE``: that one draws an id from the table's sequence for every staged row,
    updates too, so the ids of new rows would depend on how many rows were updated before them; here only an
    insert draws one, and new rows are numbered in the order they are inserted, however the updates are
    spread (the split merge of a re-sync updates in parallel sessions).
    """
    kept = [name for name in values if name != "_id"]
    update = (
        "WITH merged AS ("
        f" UPDATE {table} t SET {', '.join(f'{name} = v.{name}' for name in kept)}"
        f" FROM (SELECT {', '.join(f'{sql} AS {name}' for name, sql in values.items())} FROM {stage} s) v"
        f" WHERE t._id = v._id AND ({', '.join('t.' + name for name in kept)})"
        f"  IS DISTINCT FROM ({', '.join('v.' + name for name in kept)})"
        " RETURNING t._id)"
        " SELECT count(*), array_agg(_id) FROM merged")
    insert = (
        "WITH merged AS ("
        f" INSERT INTO {table} AS t ({', '.join(values)})"
        f" SELECT {', '.join(values.values())} FROM {stage} s"
        f" WHERE NOT EXISTS (SELECT 1 FROM {table} x WHERE x._id = s._id)"
        " RETURNING t._id)"
        " SELECT count(*), array_agg(_id) FROM merged")
    return update, insert


def insert_sql(table: str, stage: str, values: Dict[str, str]) -> str:
    """The first load of ``stage`` into ``table`` while it is empty: a plain insert, no conflict probe."""
    return (f"INSERT INTO {table} ({', '.join(values)}) SELECT {', '.join(values.values())} FROM {stage} s"
            " RETURNING _id")


def link_sql(table: str, reference: Reference) -> str:
    """Set a reference column on the rows whose parent arrived after them (probing the parent's ``_id``)."""
    return (f"UPDATE {table} t SET {reference.column} = p.id FROM {reference.parent.table} p"
            f" WHERE t.{reference.column} IS NULL AND t.{reference.ref} IS NOT NULL AND p._id = t.{reference.ref}")


class TableSync:
    """Base of a model of one table: declare the class attributes below, write ``to_row`` and ``mongo_to_pg``.

    Declared by the model:
        collection, table: as in ``SyncModel``.
        mapped: the mapped class of ``table`` (its column types decide the casts of the merge).
        columns: the staged (name, PostgreSQL type) pairs, in the order of ``to_row``'s fields
            (``_id`` first, where the row has ``mongo_id``); each is a column of ``table``.
        references: ``Reference``s to parent models.

    Derived here (once, when the class is defined): ``parents``, ``staging`` (unless declared),
    ``merge_sql``, ``link_sqls``.
    """

    collection: str
    table: str
    mapped: type
    columns: Columns
    references: Tuple[Reference, ...] = ()
    # Columns whose values no two rows share (users' e-mail): what two documents may claim at once.
    unique: Tuple[str, ...] = ()
    # A predicate over ``a.key`` that is true of a shared row a document would add (users: a skill not known).
    unknown_adds: Optional[str] = None

    parents: Tuple[str, ...]
    staging: Dict[str, Columns]
    merge_sql: Tuple[str, str]
    insert_sql: str
    link_sqls: Tuple[str, ...]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _checked(cls.collection, cls.table, *(name for name, _ in cls.columns),
                 *(name for ref in cls.references for name in (ref.column, ref.ref)))
        if cls.columns[0][0] != "_id":
            raise ValueError(f"{cls.__name__}.columns must start with _id")
        cls.parents = tuple(dict.fromkeys(ref.parent.collection for ref in cls.references))
        if "staging" not in cls.__dict__:  # a model with more tables declares them all
            cls.staging = {cls.stage_table(): cls.columns}
        cls.merge_sql = upsert_sql(cls.table, cls.stage_table(), cls.values())
        cls.insert_sql = insert_sql(cls.table, cls.stage_table(), cls.values())
        cls.link_sqls = tuple(link_sql(cls.table, ref) for ref in cls.references)

    @classmethod
    def stage_table(cls) -> str:
        """The staging table of the model's own rows."""
        return f"stage_{cls.collection}"

    @classmethod
    def values(cls) -> Dict[str, str]:
        """Each column of the table the merge writes, and the SQL of its value over the staged row ``s``.

        A staged column goes in as it is, cast to ``jsonb`` where the table stores JSON (COPY sends it
        as text); a reference is one index probe into its parent's table by ``_id`` (a scalar subquery:
        a join let PostgreSQL hash the whole parent table for every batch).
        """
        table = cls.mapped.__table__
        values = {}
        for name, _ in cls.columns:
            cast = "::jsonb" if isinstance(table.c[name].type, (JSON, JSONB)) else ""
            values[name] = f"s.{name}{cast}"
        for ref in cls.references:
            values[ref.column] = f"(SELECT p.id FROM {ref.parent.table} p WHERE p._id = s.{ref.ref})"
        return values

    @classmethod
    def stage(cls, copy, rows) -> None:
        """COPY the batch's rows, as they are, into the staging table."""
        copy(cls.stage_table(), rows)

    @staticmethod
    def conflicts(cursor, keys: str):
        """No constraint beyond what ``to_row`` checks."""
        return []

    @staticmethod
    def displaced(cursor, keys: str):
        """No stored row loses anything to a staged one."""
        return []

    @staticmethod
    def settle(cursor) -> None:
        """Nothing to settle after a scan."""

    @classmethod
    def claims(cls, row: NamedTuple) -> Tuple[str, ...]:
        """The unique values ``row`` would hold, as ``column:value`` (``unique``)."""
        return tuple(f"{name}:{value}" for name in cls.unique if (value := getattr(row, name)) is not None)

    @staticmethod
    def adds(row: NamedTuple) -> Tuple[str, ...]:
        """The keys of shared rows ``row`` refers to, which its merge adds if they are not there
        (``unknown_adds`` says which are not)."""
        return ()

    @classmethod
    def unstage(cls, cursor, mongo_ids) -> None:
        """Take rows out of every staging table that has an ``_id``."""
        for name, columns in cls.staging.items():
            if any(column == "_id" for column, _ in columns):
                cursor.execute(f"DELETE FROM {name} WHERE _id = ANY(%s)", (list(mongo_ids),))

    @classmethod
    def merge(cls, cursor) -> dict:
        """Merge the staged rows (``merge_sql``: updates, then inserts): counts of rows inserted and updated,
        and (``written``) the ``_id``s of each."""
        update, insert = cls.merge_sql
        cursor.execute(update)
        updated, updated_ids = cursor.fetchone()
        cursor.execute(insert)
        inserted, inserted_ids = cursor.fetchone()
        return {"inserted": inserted, "updated": updated,
                "written": {"inserted": inserted_ids or [], "updated": updated_ids or []}}

    @classmethod
    def insert(cls, cursor) -> dict:
        """The first load's ``merge``: the staged rows into the table that was empty when the run began
        (no two of one ``_id``; the first load checks the keys once, at its end). The same counts."""
        cursor.execute(cls.insert_sql)
        inserted_ids = [_id for (_id,) in cursor.fetchall()]
        return {"inserted": len(inserted_ids), "updated": 0, "written": {"inserted": inserted_ids, "updated": []}}

    @classmethod
    def link(cls, cursor) -> dict:
        """Resolve the references stored before their parent's row: ``{"<table>_linked": rows}``."""
        if not cls.link_sqls:
            return {}
        linked = 0
        for statement in cls.link_sqls:
            cursor.execute(statement)
            linked += cursor.rowcount
        return {f"{cls.table}_linked": linked}
