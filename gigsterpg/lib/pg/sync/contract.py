"""The contract of a sync model: what the engine (bulk, runner, follow) asks of ``UserSync``, ``GigSync``, ...

The engine knows a model only through ``SyncModel``; ``TableSync``
(``gigsterpg.lib.pg.sync.table``) fulfils most of it from a model's declared
columns, so a model of one table writes only its mapping. The models are listed
once, parents first, in ``gigsterpg.lib.pg.sync.registry``.
"""
from typing import Callable, Iterable, List, Mapping, NamedTuple, Optional, Protocol, Sequence, Tuple

# (name, PostgreSQL type) of a staged column, in the order of the values COPY writes.
Columns = Tuple[Tuple[str, str], ...]
# copy(staging table, rows): COPY ``rows`` into a staging table the model declared.
Copy = Callable[[str, Iterable[Sequence]], None]


class Reference(NamedTuple):
    """A column that points at a parent's row, resolved from the MongoDB reference kept beside it.

    ``gigs.poster_id`` holds ``users.id`` of the user whose ``_id`` is ``gigs.poster_ref``:
    ``Reference("poster_id", "poster_ref", UserSync)``. The merge resolves it; a reference to a
    parent not stored yet stays NULL (the raw reference kept) until ``link`` runs after the parent's.
    """

    column: str
    ref: str
    parent: "SyncModel"


class SyncModel(Protocol):
    """What a sync model provides; the engine uses nothing else.

    A model maps the documents of one MongoDB collection to the rows of one
    PostgreSQL table (plus any child tables it owns, as users own user_skills),
    keyed by the text form of ``_id`` in the table's column ``_id``.
    """

    collection: str
    """The MongoDB collection; also the key of its hashes, rejects and watermark in the bookkeeping tables."""

    table: str
    """The PostgreSQL table with one row per stored document, unique on ``_id`` (text).

    Deletes (documents gone from MongoDB, rejected documents) delete from it by ``_id``; whatever
    hangs off a row must go with it (``ON DELETE CASCADE``) or let go of it (``SET NULL``).
    """

    parents: Tuple[str, ...]
    """The collections whose rows this one's rows reference: the registry syncs them first, and ``link``
    runs after each of their scans."""

    staging: Mapping[str, Columns]
    """The temp tables ``stage`` fills and ``merge`` reads, with their columns: created once per
    loader, emptied before each batch (and at each commit)."""

    unique: Tuple[str, ...]
    """Columns of ``table`` whose values no two rows share (users: ``email``): what the split merge of a
    re-sync (``engine.distributed``) leaves to the one ordered session when two documents claim one value."""

    unknown_adds: Optional[str]
    """A SQL predicate over ``a.key``, true of a shared row (a skill) the merge would add for a document
    (``adds``): such a document is merged by the one ordered session (what it adds depends on its batch)."""

    @staticmethod
    def claims(row: NamedTuple) -> Tuple[str, ...]:
        """The values of ``unique`` columns ``row`` would hold, as ``column:value``."""

    @staticmethod
    def adds(row: NamedTuple) -> Tuple[str, ...]:
        """The keys of shared rows ``row`` refers to (users: its skills' keys)."""

    @staticmethod
    def to_row(doc: Mapping) -> NamedTuple:
        """Map one decoded document to its row, or raise ``RejectedDocument``; pure, no I/O.

        The row's field ``mongo_id`` is the text form of the ``_id`` (``document.id_text``).
        """

    @staticmethod
    def mongo_to_pg(session, mongo_entry: Mapping, instance):
        """Fill a mapped instance from one document through the ORM (the Gigster practical's path)."""

    @staticmethod
    def stage(copy: Copy, rows: Sequence[NamedTuple]) -> None:
        """COPY a batch of rows (no two of one ``_id``) into the staging tables."""

    @staticmethod
    def conflicts(cursor, keys: str) -> List[Tuple[str, str, str]]:
        """(``_id``, reason, detail) of staged rows the table's constraints would refuse (a taken e-mail):
        recorded as rejects instead of failing the batch. Runs before ``merge``. ``keys`` is a FROM item of
        the stored rows' (``_id``, ``id_key``): what two documents share goes to the one whose id comes first
        in MongoDB's order of ids."""

    @staticmethod
    def displaced(cursor, keys: str) -> List[Tuple[str, bytes, str, str]]:
        """(``_id``, ``id_key``, reason, detail) of stored rows (not staged) that lose what they share to a
        staged row whose id comes first: rejected (read back from MongoDB) and deleted before ``merge``."""

    @staticmethod
    def settle(cursor) -> None:
        """After a scan, set-wise: what the batches decided one by one made to not depend on their order
        (the rejects' details)."""

    @staticmethod
    def unstage(cursor, mongo_ids: List[str]) -> None:
        """Take the rows ``conflicts`` found out of the staging tables."""

    @staticmethod
    def merge(cursor) -> dict:
        """Merge the staged rows into the table (set-wise, touching only rows that differ).

        Returns the counts: ``inserted`` and ``updated`` rows, and any of the model's own
        (``skills_added``, ...), which the run report shows as they are; ``written`` (optional):
        ``{"inserted": [_id, ...], "updated": [...]}``, so a row displaced later in the run is counted once.
        """

    @staticmethod
    def insert(cursor) -> dict:
        """``merge`` for a first load (``engine.firstload``): the staged rows into tables that were empty
        when the run began, by plain inserts, the foreign keys off until the load's end. The same counts."""

    @staticmethod
    def link(cursor) -> dict:
        """Resolve references to a parent that were stored before the parent's row arrived.

        Runs after each scan of a parent collection (and after each batch of a follower that
        changed one), in the same transaction. Returns counts, e.g. ``{"gigs_linked": 3}``.
        """
