"""The bulk path: one batch of raw documents -> COPY into staging -> one set-wise merge.

A ``BatchLoader`` works for any sync model (``SyncModel``: ``UserSync``,
``GigSync``, ...) over one psycopg connection. Per batch, in one transaction:

1. the ids and hashes of every document go to staging, and into the run's
   table of seen ids (for the deletes after a complete scan);
2. PostgreSQL answers which documents are new or changed since they were
   stored (``sync_hashes``); only those are decoded and transformed;
3. their rows are COPYed to staging and merged set-wise, and rejects recorded.

A batch PostgreSQL refuses is split in halves until the one refused document
is found and recorded as a reject: one bad document never costs a good one.
"""
import base64
import contextlib
import copy
import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import timezone
from typing import List, Optional, Sequence

import bson
import psycopg
from bson import json_util
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.errors import InvalidBSON
from bson.raw_bson import RawBSONDocument

from gigsterpg import faults
from gigsterpg.exc import RejectedDocument
from gigsterpg.lib.pg.sync import document, registry
from gigsterpg.lib.pg.sync.contract import SyncModel
from gigsterpg.lib.pg.sync.engine import fingerprint
from gigsterpg.lib.pg.sync.engine.staging import copy_rows, create_staging

logger = logging.getLogger(__name__)

# Dates outside Python's range decode as DatetimeMS (and are then rejected), not as an error for the batch.
DECODE = CodecOptions(tz_aware=True, tzinfo=timezone.utc, datetime_conversion=DatetimeConversion.DATETIME_AUTO)
HASH_COLUMNS = (("seq", "int4"), ("_id", "text"), ("hash", "bytea"), ("id_key", "bytea"))
REJECT_COLUMNS = (("doc_id", "text"), ("reason", "text"), ("detail", "text"), ("document", "text"))
DUPLICATE_ID = "duplicate _id"
RAW_DOCUMENTS = CodecOptions(document_class=RawBSONDocument)
# The staged rejects (stage_rejects) opened, or refreshed if they differ; params: collection, run id.
OPEN_REJECTS = (
    "INSERT INTO sync_rejects AS r (collection, doc_id, run_id, reason, detail, document)"
    " SELECT DISTINCT ON (doc_id) %s, doc_id, %s, reason, detail, document::jsonb FROM stage_rejects"
    " ON CONFLICT (collection, doc_id) DO UPDATE SET run_id = excluded.run_id,"
    "  reason = excluded.reason, detail = excluded.detail, document = excluded.document,"
    "  changed_at = now(), resolved_at = NULL,"
    "  first_seen = CASE WHEN r.resolved_at IS NULL THEN r.first_seen ELSE now() END"
    " WHERE r.resolved_at IS NOT NULL OR (r.reason, r.detail, r.document)"
    "  IS DISTINCT FROM (excluded.reason, excluded.detail, excluded.document)")
# A collection's watermark, moved only by a scan that wrote something; params: collection, mark, run id, wrote.
SET_WATERMARK = ("INSERT INTO sync_watermarks AS w (collection, updated, run_id) VALUES (%s, %s, %s)"
                 " ON CONFLICT (collection) DO UPDATE SET updated = excluded.updated,"
                 "  run_id = excluded.run_id, set_at = now()"
                 " WHERE %s AND w.updated IS DISTINCT FROM excluded.updated")


def rollback(connection) -> None:
    """Roll back whatever is open; a dead connection has nothing to roll back."""
    with contextlib.suppress(psycopg.Error):
        connection.rollback()


def discard(raw) -> None:
    """Drop a pooled connection that may be broken, never back into the pool (closing it releases its locks)."""
    with contextlib.suppress(Exception):
        if raw is not None and raw.is_valid:
            raw.invalidate()


@dataclass
class Prepared:
    """A document as read, with what is known without decoding it, and its mapping if already done."""

    raw: object
    doc_id: str
    digest: bytes
    seq: int = 0  # place in its batch
    # Its row, or the RejectedDocument; the decoded document is not kept (memory): a reject decodes again.
    mapped: Optional[object] = None
    # Its id's place in MongoDB's order of ids (``document.id_order_key``); None for an id without one.
    key: Optional[bytes] = None


def prepare(docs: Sequence, model: Optional[SyncModel] = None) -> List[Prepared]:
    """Id and hash of each raw document; with ``model``, also its mapping.

    Runs on the prepare thread (reader.py), so what it does overlaps with PostgreSQL's work
    on the previous batch.
    """
    prepared = []
    for seq, doc in enumerate(docs):
        raw = doc.raw if isinstance(doc, RawBSONDocument) else bson.encode(doc)
        item = Prepared(doc, fingerprint.doc_id(doc), fingerprint.digest(raw), seq, key=fingerprint.order_key(doc))
        if model is not None:
            item.mapped = map_document(model, item.raw)
        prepared.append(item)
    return prepared


def map_document(model: SyncModel, raw):
    """The document's row, or the RejectedDocument that says why there is none."""
    try:
        return model.to_row(decode(raw))
    except RejectedDocument as err:
        return err
    except InvalidBSON as err:  # e.g. a string that is not UTF-8: this document only
        return RejectedDocument("undecodable document", detail=f"undecodable document: {err}")
    except RecursionError:  # sub-documents nested deeper than Python follows
        return RejectedDocument("too deeply nested", detail="too deeply nested: sub-documents nested deeper"
                                f" than {sys.getrecursionlimit()} levels")


def document_json(raw) -> str:
    """The document as readable extended JSON; its raw bytes (base64) if it cannot be decoded."""
    try:
        return document.document_json(decode(raw))
    except (InvalidBSON, RecursionError):
        return json.dumps({"undecodable_bson_base64": base64.b64encode(raw.raw).decode("ascii")})


def decode(doc) -> dict:
    """A plain dict of the document (tz-aware UTC datetimes)."""
    return bson.decode(doc.raw, codec_options=DECODE) if isinstance(doc, RawBSONDocument) else doc


def link_children(cursor, collection: str) -> Counter:
    """After ``collection``'s rows changed: each model referencing it links the rows that waited for one."""
    linked = Counter()
    for child in registry.children(collection):
        linked.update(child.link(cursor))
    return linked


@dataclass
class Reject:
    """A document that could not be stored, ready for ``sync_rejects``."""

    doc_id: str
    reason: str
    detail: str
    document: str
    # False for a displaced stored document this run has not read (yet): counted when read, if it is.
    counted: bool = True


def _duplicate(item: Prepared, holder: str = "another document of this collection") -> Reject:
    """The reject of a document whose id has the text form of another's (1 and "1").

    The one whose id comes first in MongoDB's order of ids keeps the row (the data contract: a rule that
    does not depend on scan order); this one is recorded under its id and a piece of its hash.
    """
    return Reject(f"{item.doc_id} (duplicate {item.digest.hex()[:12]})", DUPLICATE_ID,
                  f"{DUPLICATE_ID}: {item.doc_id!r} is already used by {holder} (an id of another type"
                  " with the same text form)", document_json(item.raw))


def _first(key: Optional[bytes]) -> tuple:
    """Sorts ids in MongoDB's order of ids; an id without a key (never stored) after every other."""
    return (key is None, key or b"")


@dataclass
class CollectionCounts:
    """What one run did to one collection."""

    seen: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    rejected: Counter = field(default_factory=Counter)
    extra: Counter = field(default_factory=Counter)

    @property
    def unchanged(self) -> int:
        return self.seen - self.inserted - self.updated - sum(self.rejected.values())

    def as_dict(self) -> dict:
        return {"seen": self.seen, "inserted": self.inserted, "updated": self.updated,
                "unchanged": self.unchanged, "deleted": self.deleted,
                "rejected": dict(self.rejected), **dict(self.extra)}


class BatchLoader:
    """Loads batches of one collection's documents through its sync model.

    Args:
        connection: a psycopg connection, not in autocommit mode.
        model: the collection's ``SyncModel`` (``UserSync``, ``GigSync``, ...).
        run_id: the ``sync_runs`` row the rejects are recorded under.
        skip_unchanged: skip documents whose hash matches the stored one
            (False re-maps and compares every document).
    """

    def __init__(self, connection, model: SyncModel, run_id: int, skip_unchanged: bool = True, scan: bool = True,
                 source=None):
        self.connection = connection
        # The collection (pymongo): a stored document that loses what it shared to one whose id comes
        # first is read back from it for its reject's document.
        self.source = source
        # The stored rows' id order keys (``_id``, ``id_key``), for the model's ``conflicts``.
        self.keys = f"(SELECT _id, id_key FROM sync_hashes WHERE collection = '{model.collection}')"
        self.model = model
        self.run_id = run_id
        self.skip_unchanged = skip_unchanged
        # A scan sees each document once and keeps the ids it saw (deletes, repeated ids); a follower
        # of the change streams sees a document again at each change, and deletes what it is told.
        self.scan = scan
        self.counts = CollectionCounts()
        self.seen_table = f"seen_{model.collection}"
        with connection.cursor() as cursor:
            # Map documents ahead, on the reader thread, while most of them turn out changed
            # (a first sync); stop once most are skipped, so an unchanged run decodes nothing.
            cursor.execute("SELECT NOT EXISTS (SELECT 1 FROM sync_hashes WHERE collection = %s)",
                           (model.collection,))
            self.map_ahead = cursor.fetchone()[0] or not skip_unchanged
            for table, columns in {**model.staging, "stage_hashes": HASH_COLUMNS,
                                   "stage_rejects": REJECT_COLUMNS}.items():
                create_staging(cursor, table, columns)
            # Every id seen in this run, for the deletes after a complete scan.
            cursor.execute(f"DROP TABLE IF EXISTS {self.seen_table}")
            # Keyed, so a second document with an id already seen in this run (1 and "1") is caught.
            # ``id_key``: of the document that holds the id's text form; ``presumed``: the stored row's document,
            # not met by the scan yet (another document of that text form was); ``wrote``: 'i' or 'u' if this
            # run inserted or updated its row (a row displaced later in the run then moves to the rejects).
            cursor.execute(f"CREATE TEMP TABLE {self.seen_table} (_id text PRIMARY KEY, id_key bytea,"
                           " presumed bool NOT NULL DEFAULT false, wrote \"char\")")
            self._record_progress(cursor, "loading", 0)
        connection.commit()

    def prepare(self, docs: Sequence) -> List[Prepared]:
        """``prepare`` for this collection: with the mapping while mapping ahead pays."""
        return prepare(docs, self.model if self.map_ahead else None)

    def load(self, batch: Sequence[Prepared], commit: bool = True) -> None:
        """Store one prepared batch, or record why not, in one transaction (with the run's progress).

        ``commit=False`` leaves the transaction open for the caller to add to it and commit
        (the follower stores its position with the changes); the counts are then the caller's to undo.
        """
        before = copy.deepcopy(self.counts)
        try:
            with self.connection.cursor() as cursor:
                # Staging empties at commit; emptied here too, as _merge does the model's, because a
                # follower loads both collections in one transaction.
                self._clear(cursor, ("stage_hashes", "stage_rejects"))
                copy_rows(cursor, "stage_hashes", HASH_COLUMNS,
                          ((seq, item.doc_id, item.digest, item.key) for seq, item in enumerate(batch)))
                todo = self._changed(cursor, batch)
                again, displaced = self._mark_seen(cursor, batch, self._stored_keys(cursor, todo))
                if self.skip_unchanged:
                    self.map_ahead = len(todo) * 2 > len(batch)
                todo = [item for item in todo if item.seq not in again]  # no two of one id left
                rows, originals, rejects = self._rows(todo)
                rejects.extend(_duplicate(batch[seq]) for seq in sorted(again))
                rejects.extend(self._displace(cursor, [(doc_id, key) for doc_id, key, _ in displaced], DUPLICATE_ID,
                                              unseen={doc_id for doc_id, _, presumed in displaced if presumed}))
                stored = [row.mongo_id for row in self._merge(cursor, rows, originals, rejects)]
                self._record_rejects(cursor, rejects, stored)
                self._mark_seen_keys(cursor, [r.doc_id for r in rejects if r.reason == DUPLICATE_ID])
                seq_of = {item.doc_id: item.seq for item in todo}
                self._record_hashes(cursor, [seq_of[doc_id] for doc_id in stored if doc_id in seq_of],
                                    [r.doc_id for r in rejects])
                if self.scan:
                    self._record_progress(cursor, "loading", self.counts.seen + len(batch))
            faults.point("merged")
            if commit:
                self.connection.commit()
        except BaseException:
            self.counts = before  # nothing of the batch was committed
            rollback(self.connection)
            raise
        faults.point("committed")
        self.counts.seen += len(batch)
        self.counts.rejected.update(reject.reason for reject in rejects if reject.counted)

    def _record_progress(self, cursor, stage: str, documents: int) -> None:
        """Where the run is, committed with the batch it describes: a crash leaves it telling the truth."""
        cursor.execute("UPDATE sync_runs SET stage = %s, progress = progress || jsonb_build_object(%s::text, %s)"
                       " WHERE id = %s", (f"{self.model.collection}: {stage}", self.model.collection, documents,
                                          self.run_id))

    def _stored_keys(self, cursor, todo: Sequence[Prepared]) -> dict:
        """{text id: id key} of the documents that hold ``todo``'s ids' text forms from earlier runs, where
        that is another document (another id of the text form: 1 and "1"): a stored row's (its key in the
        hash cache), or an open reject's (its key from the reject's document). Only changed or rejected
        documents can be such a one: an unchanged run asks nothing."""
        if not todo:
            return {}
        cursor.execute("SELECT _id, id_key, stored, rejected FROM (SELECT s._id, s.id_key,"
                       "  (SELECT h.id_key FROM sync_hashes h WHERE h.collection = %(c)s AND h._id = s._id) AS stored,"
                       "  (SELECT (r.document->'_id')::text FROM sync_rejects r WHERE r.collection = %(c)s"
                       "   AND r.doc_id = s._id AND r.resolved_at IS NULL) AS rejected"
                       "  FROM stage_hashes s WHERE s.seq = ANY(%(seqs)s)) x"
                       " WHERE stored IS DISTINCT FROM id_key AND (stored IS NOT NULL OR rejected IS NOT NULL)",
                       {"c": self.model.collection, "seqs": [item.seq for item in todo]})
        found = {}
        for doc_id, own, stored, rejected in cursor.fetchall():
            if stored is None:
                try:
                    stored = document.id_order_key(json_util.loads(rejected))
                except (ValueError, TypeError):
                    continue
            if stored is not None and bytes(stored) != (own and bytes(own)):
                found[doc_id] = bytes(stored)
        return found

    def _mark_seen(self, cursor, batch: Sequence[Prepared], stored: dict):
        """Add the batch's ids to the ids seen in this run: (the seqs that lose their id's text form, the
        (text, key) of the documents that held it, stored or seen earlier in the run, and lose it now).

        Two documents whose ids have one text form (1 and "1"): the one whose id comes first in MongoDB's
        order of ids keeps the row (an int before a string), whichever the scan meets first, in this run or
        an earlier one (``stored``: the keys of rows another document of the text form was stored from).
        """
        if not stored and len({item.doc_id for item in batch}) == len(batch) and (
                not self.scan or self._insert_seen(cursor)):
            return set(), []
        earlier = {}  # text -> (key, presumed) of what holds it, seen before this batch
        if self.scan:
            cursor.execute(f"SELECT x._id, x.id_key, x.presumed FROM {self.seen_table} x"
                           " WHERE x._id IN (SELECT _id FROM stage_hashes)")
            earlier = {doc_id: (key, presumed) for doc_id, key, presumed in cursor.fetchall()}
        claims = {}
        for item in batch:
            claims.setdefault(item.doc_id, []).append(item)
        again, displaced, holders = set(), [], []
        for doc_id, items in claims.items():
            held = earlier.get(doc_id)
            if held is None and doc_id in stored:
                held = (stored[doc_id], True)  # the stored row's document: presumed to come later
            if len(items) == 1 and held is None:
                continue
            winner = min(items, key=lambda item: _first(item.key))  # the first in the batch of equal keys
            again.update(item.seq for item in items if item is not winner)
            if held is None:
                holders.append((doc_id, winner.key, False))
            elif held[0] is not None and held[0] == winner.key:  # the presumed holder itself
                holders.append((doc_id, winner.key, False))
            elif _first(held[0]) <= _first(winner.key):
                again.add(winner.seq)
                holders.append((doc_id, held[0], held[1]))
            else:
                displaced.append((doc_id, held[0], held[1]))
                holders.append((doc_id, winner.key, False))
        if self.scan:
            cursor.execute(f"INSERT INTO {self.seen_table} (_id, id_key) SELECT _id, id_key FROM stage_hashes"
                           " ON CONFLICT DO NOTHING")
            if holders:
                cursor.execute(f"UPDATE {self.seen_table} x SET id_key = k.id_key, presumed = k.presumed"
                               " FROM unnest(%s::text[], %s::bytea[], %s::bool[]) AS k(_id, id_key, presumed)"
                               " WHERE x._id = k._id", tuple(map(list, zip(*holders))))
        return again, displaced

    def _insert_seen(self, cursor) -> bool:
        """The batch's ids into the seen ids by a plain insert; False (and nothing inserted) if one was there.

        The common case, no id seen before, costs half of what the ``ON CONFLICT … RETURNING`` that
        finds the repeated ones does; that one runs only after a refusal here.
        """
        cursor.execute("SAVEPOINT seen_ids")
        try:
            cursor.execute(f"INSERT INTO {self.seen_table} (_id, id_key) SELECT _id, id_key FROM stage_hashes")
        except psycopg.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT seen_ids")
            return False
        cursor.execute("RELEASE SAVEPOINT seen_ids")
        return True

    def _displace(self, cursor, displaced: List[tuple], reason: str, delete: bool = True,
                  unseen=frozenset()) -> List[Reject]:
        """Rejects of stored documents (text id, id key) that lose what they shared to one whose id comes first:
        their rows deleted, each read back from MongoDB for its reject's document (one deleted there since
        is left to the deletes).

        ``reason`` ``duplicate _id``: the reject is keyed by the text and a piece of the loser's hash, as
        ``_duplicate`` keys it; any other: by the text, with the detail each tuple ends with (the model's).
        ``unseen``: texts whose holder the scan has not met (presumed to come), whatever the seen ids say.
        """
        if not displaced:
            return []
        if delete:
            self._delete_rows(cursor, [doc_id for doc_id, *_ in displaced])
        rejects, holders = [], []
        for doc_id, key, *own in displaced:
            if key is None:
                continue
            wanted = {"_id": document.id_from_order_key(key)}
            if self.source is None:  # a loader without its collection: the reject names the id only
                raw = RawBSONDocument(bson.encode(wanted))
            else:
                raw = self.source.with_options(codec_options=RAW_DOCUMENTS).find_one(wanted)
                if raw is None:  # deleted from MongoDB since: the deletes see to it
                    continue
            item = Prepared(raw, doc_id, fingerprint.digest(raw.raw), key=key)
            rejects.append(_duplicate(item) if reason == DUPLICATE_ID
                           else Reject(doc_id, reason, own[0], document_json(raw)))
            holders.append(doc_id)
        self._unwrite(cursor, holders, rejects, unseen)
        return rejects

    def _unwrite(self, cursor, doc_ids: List[str], rejects: List[Reject], unseen) -> None:
        """Count each displaced holder (``doc_ids``, one per reject) once in the run: one this run inserted or
        updated moves from there to the rejects; one it read unchanged is a reject (so no longer unchanged);
        one it has not read is not counted now (it is when read: it is then rejected again)."""
        if not self.scan or not doc_ids:
            return
        cursor.execute(f"SELECT _id, wrote, presumed FROM {self.seen_table} WHERE _id = ANY(%s)", (doc_ids,))
        seen = {doc_id: (wrote, presumed) for doc_id, wrote, presumed in cursor.fetchall()}
        cursor.execute(f"UPDATE {self.seen_table} SET wrote = NULL WHERE _id = ANY(%s) AND wrote IS NOT NULL",
                       (doc_ids,))
        for doc_id, reject in zip(doc_ids, rejects):
            wrote, presumed = seen.get(doc_id, (None, True))
            if presumed or doc_id in unseen:
                reject.counted = False
            elif wrote == "i":
                self.counts.inserted -= 1
            elif wrote == "u":
                self.counts.updated -= 1

    def _delete_rows(self, cursor, doc_ids: List[str]) -> None:
        """Delete the rows of ``doc_ids`` and the rows that belong to them (``model.dependents``: a first
        load holds no foreign keys to cascade)."""
        for table, column in getattr(self.model, "dependents", ()):
            cursor.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT id FROM {self.model.table}"
                           " WHERE _id = ANY(%s))", (doc_ids,))
        cursor.execute(f"DELETE FROM {self.model.table} WHERE _id = ANY(%s)", (doc_ids,))

    def _mark_seen_keys(self, cursor, keys: List[str]) -> None:
        """Count the keys of duplicate-id rejects as seen, so the end of the scan does not close them."""
        if keys and self.scan:
            cursor.execute(f"INSERT INTO {self.seen_table} (_id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                           (keys,))

    def _changed(self, cursor, batch: Sequence[Prepared]) -> List[Prepared]:
        """The documents not stored yet, or stored from other bytes (or all, without skipping)."""
        if not self.skip_unchanged:
            return list(batch)
        # One index probe per staged document (a scalar subquery is never turned into a hash join):
        # a join let PostgreSQL hash the whole collection's hashes for every batch.
        # One array, not a row per document: the answer is most of the batch in a first sync.
        cursor.execute("SELECT array_agg(s.seq ORDER BY s.seq) FROM stage_hashes s WHERE s.hash IS DISTINCT FROM"
                       " (SELECT h.hash FROM sync_hashes h WHERE h.collection = %s AND h._id = s._id)",
                       (self.model.collection,))
        return [batch[seq] for seq in cursor.fetchone()[0] or ()]

    def _rows(self, todo: Sequence[Prepared]):
        """Map each document (unless mapped ahead): rows to merge, their raw documents, and rejects.

        ``todo`` holds no two documents of one id (``_mark_seen`` took the later ones out).
        """
        rows, originals, rejects = [], [], []
        for item in todo:
            row = item.mapped if item.mapped is not None else map_document(self.model, item.raw)
            if isinstance(row, RejectedDocument):
                rejects.append(Reject(item.doc_id, row.reason, row.detail, document_json(item.raw)))
            else:
                rows.append(row)
                originals.append(item.raw)
        return rows, originals, rejects

    def _merge(self, cursor, rows: List, originals: List, rejects: List[Reject]) -> List:
        """Merge ``rows``; split on a refused batch. Returns the rows stored."""
        if not rows:
            return []
        cursor.execute("SAVEPOINT merge_batch")
        try:
            self._clear(cursor, self.model.staging)
            self.model.stage(lambda table, values: copy_rows(cursor, table, self.model.staging[table], values), rows)
            found = {doc_id: (reason, detail) for doc_id, reason, detail in self.model.conflicts(cursor, self.keys)}
            if found:
                self.model.unstage(cursor, list(found))
            displaced = self.model.displaced(cursor, self.keys)
            if displaced:
                self._delete_rows(cursor, [doc_id for doc_id, *_ in displaced])
            counts = self._store(cursor)
            written = counts.pop("written", None)
            if written and self.scan:
                cursor.execute(f"UPDATE {self.seen_table} x SET wrote = k.wrote FROM unnest(%s::text[], %s::\"char\"[])"
                               " AS k(_id, wrote) WHERE x._id = k._id",
                               (written["inserted"] + written["updated"],
                                ["i"] * len(written["inserted"]) + ["u"] * len(written["updated"])))
        except (psycopg.DataError, psycopg.IntegrityError) as err:
            cursor.execute("ROLLBACK TO SAVEPOINT merge_batch")
            if len(rows) == 1:
                message = str(err).strip().splitlines()[0]
                rejects.append(Reject(rows[0].mongo_id, "refused by PostgreSQL", f"refused by PostgreSQL: {message}",
                                      document_json(originals[0])))
                return []
            half = len(rows) // 2
            logger.info("%s: PostgreSQL refused a batch of %d, splitting it", self.model.collection, len(rows))
            return (self._merge(cursor, rows[:half], originals[:half], rejects)
                    + self._merge(cursor, rows[half:], originals[half:], rejects))
        cursor.execute("RELEASE SAVEPOINT merge_batch")
        rejects.extend(self._displace(cursor, [(doc_id, key, detail) for doc_id, key, _, detail in displaced],
                                      displaced[0][2], delete=False) if displaced else [])
        self.counts.inserted += counts.pop("inserted")
        self.counts.updated += counts.pop("updated")
        self.counts.extra.update(counts)
        stored = []
        for row, original in zip(rows, originals):
            if row.mongo_id in found:
                reason, detail = found[row.mongo_id]
                rejects.append(Reject(row.mongo_id, reason, detail, document_json(original)))
            else:
                stored.append(row)
        return stored

    @staticmethod
    def _clear(cursor, tables) -> None:
        """Empty staging tables before a batch (a first load, in one transaction, truncates them instead)."""
        for table in tables:
            cursor.execute(f"DELETE FROM {table}")

    def _store(self, cursor) -> dict:
        """Write the staged rows into the tables: the model's merge (a first load inserts instead)."""
        return self.model.merge(cursor)

    def _record_rejects(self, cursor, rejects: List[Reject], stored_ids: List[str]) -> None:
        """Open (or refresh) the batch's rejects and close those of documents now stored.

        A rejected document's old row is deleted: the table then holds exactly
        the documents that are stored, and the rejects the ones that are not.
        """
        collection = self.model.collection
        if rejects:
            copy_rows(cursor, "stage_rejects", REJECT_COLUMNS,
                      ((r.doc_id, r.reason, r.detail, r.document) for r in rejects))
            cursor.execute(OPEN_REJECTS, (collection, self.run_id))
            cursor.execute(f"DELETE FROM {self.model.table} WHERE _id = ANY(%s)", ([r.doc_id for r in rejects],))
        if stored_ids:
            cursor.execute("UPDATE sync_rejects r SET resolved_at = now(), changed_at = now()"
                           " FROM unnest(%s::text[]) AS k(_id)"
                           " WHERE r.collection = %s AND r.resolved_at IS NULL AND r.doc_id = k._id",
                           (stored_ids, collection))

    def _record_hashes(self, cursor, stored_seqs: List[int], rejected_ids: List[str]) -> None:
        """Remember the bytes of what is stored (by place in the batch: no two of one id); forget what
        is not, so it is looked at again."""
        collection = self.model.collection
        if stored_seqs:
            cursor.execute(
                "INSERT INTO sync_hashes AS h (collection, _id, hash, id_key)"
                " SELECT %s, s._id, s.hash, s.id_key FROM stage_hashes s JOIN unnest(%s::int4[]) AS k(seq)"
                " ON k.seq = s.seq ON CONFLICT (collection, _id) DO UPDATE SET hash = excluded.hash,"
                " id_key = excluded.id_key WHERE (h.hash, h.id_key) IS DISTINCT FROM (excluded.hash, excluded.id_key)",
                (collection, stored_seqs))
        if rejected_ids:
            cursor.execute("DELETE FROM sync_hashes WHERE collection = %s AND _id = ANY(%s)",
                           (collection, rejected_ids))

    def delete(self, doc_ids: List[str], keys: Optional[List[Optional[bytes]]] = None) -> None:
        """Delete the rows of documents deleted in MongoDB, close their rejects, forget their hashes.

        With ``keys`` (the deleted ids' order keys), a row another id of the same text form was stored
        from (1 and "1") is left to that one. Does not commit (the follower commits with its position).
        User deletes cascade to user_skills; gigs of a deleted user keep ``poster_ref`` and lose ``poster_id``.
        """
        collection = self.model.collection
        with self.connection.cursor() as cursor:
            if keys is not None:
                cursor.execute("SELECT k._id FROM unnest(%s::text[], %s::bytea[]) AS k(_id, id_key) WHERE EXISTS"
                               " (SELECT 1 FROM sync_hashes h WHERE h.collection = %s AND h._id = k._id"
                               "  AND h.id_key IS NOT NULL AND h.id_key IS DISTINCT FROM k.id_key)",
                               (doc_ids, keys, collection))
                others = {doc_id for (doc_id,) in cursor.fetchall()}
                self._close_duplicates(cursor, [(doc_id, key) for doc_id, key in zip(doc_ids, keys)
                                                if doc_id in others])
                doc_ids = [doc_id for doc_id in doc_ids if doc_id not in others]
            cursor.execute(f"DELETE FROM {self.model.table} WHERE _id = ANY(%s)", (doc_ids,))
            self.counts.deleted += cursor.rowcount
            cursor.execute("UPDATE sync_rejects SET resolved_at = now(), changed_at = now()"
                           " WHERE collection = %s AND resolved_at IS NULL AND doc_id = ANY(%s)", (collection, doc_ids))
            cursor.execute("DELETE FROM sync_hashes WHERE collection = %s AND _id = ANY(%s)", (collection, doc_ids))

    def _close_duplicates(self, cursor, deleted: List[tuple]) -> None:
        """Close the ``duplicate _id`` rejects of deleted documents (text id, order key): keyed by the text and
        a piece of their hash, they are found by the id in their document."""
        if not deleted:
            return
        cursor.execute("SELECT doc_id, (document->'_id')::text FROM sync_rejects WHERE collection = %s"
                       " AND resolved_at IS NULL AND reason = %s AND split_part(doc_id, ' (duplicate ', 1) = ANY(%s)",
                       (self.model.collection, DUPLICATE_ID, [doc_id for doc_id, _ in deleted]))
        gone = set(deleted)
        closed = []
        for doc_id, value in cursor.fetchall():
            with contextlib.suppress(ValueError, TypeError):
                if (doc_id.split(" (duplicate ")[0], document.id_order_key(json_util.loads(value))) in gone:
                    closed.append(doc_id)
        if closed:
            cursor.execute("UPDATE sync_rejects SET resolved_at = now(), changed_at = now()"
                           " WHERE collection = %s AND resolved_at IS NULL AND doc_id = ANY(%s)",
                           (self.model.collection, closed))

    def finish(self, complete: bool, watermark: Optional[tuple] = None) -> None:
        """After the scan: delete what MongoDB no longer has (only if the scan was complete), and set
        the collection's watermark (``(datetime or None,)``) in the same transaction."""
        collection = self.model.collection
        deleted = 0
        with self.connection.cursor() as cursor:
            if complete:
                # A stored row's document presumed to come, that did not: deleted from MongoDB.
                cursor.execute(f"DELETE FROM {self.seen_table} WHERE presumed")
                cursor.execute(f"ANALYZE {self.seen_table}")
                cursor.execute(f"DELETE FROM {self.model.table} t WHERE NOT EXISTS"
                               f" (SELECT 1 FROM {self.seen_table} s WHERE s._id = t._id)")
                deleted = cursor.rowcount
                cursor.execute("UPDATE sync_rejects r SET resolved_at = now(), changed_at = now()"
                               " WHERE collection = %s AND resolved_at IS NULL AND NOT EXISTS"
                               f" (SELECT 1 FROM {self.seen_table} s WHERE s._id = r.doc_id)", (collection,))
                cursor.execute("DELETE FROM sync_hashes h WHERE collection = %s AND NOT EXISTS"
                               f" (SELECT 1 FROM {self.seen_table} s WHERE s._id = h._id)", (collection,))
                faults.point("deleting")
            self.model.settle(cursor)
            extra = link_children(cursor, self.model.collection)
            if watermark is not None:
                # Moved only by a scan that wrote something: a re-run on unchanged data changes nothing,
                # its watermark included (keeping an older one is always safe: it only reads more).
                wrote = bool(self.counts.inserted or self.counts.updated or deleted)
                cursor.execute(SET_WATERMARK, (collection, watermark[0], self.run_id, wrote))
            cursor.execute(f"DROP TABLE IF EXISTS {self.seen_table}")
            self._record_progress(cursor, "done" if complete else "done (no deletes: partial scan)",
                                  self.counts.seen)
        self.connection.commit()
        # Counted once committed: a retry after a lost connection must not count them twice.
        self.counts.deleted = deleted
        self.counts.extra.update(extra)
        faults.point("finished")
