"""What a projection remembers in gigsterpg's own PostgreSQL: the hash of each document it wrote, the ids a
run has seen, and its rejects. Nothing of it is written to the source database.

One connection per run. A session advisory lock keyed by the target lets one run at a time write a
collection. The ids seen go to a temp table, so memory stays flat however many orders there are.
"""
import hashlib
import json
import logging
from typing import Dict, Iterator, List, Sequence

import bson
from bson import json_util
from psycopg.types.json import Jsonb

from gigsterpg.exc import TerminalError

logger = logging.getLogger(__name__)

JSON_OPTIONS = json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED, tz_aware=True)


def digest(document: dict) -> bytes:
    """The hash of a document's BSON bytes: equal hashes, equal documents (field order included)."""
    return hashlib.blake2b(bson.encode(document), digest_size=16).digest()


def remember(connection, target: str, ids: Sequence[str], hashes: Sequence[bytes]) -> None:
    """Store the hashes of documents just written into ``target``, and commit."""
    if ids:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO projection_hashes AS h (target, _id, hash)"
                           " SELECT %s, k._id, k.hash FROM unnest(%s::text[], %s::bytea[]) AS k(_id, hash)"
                           " ON CONFLICT (target, _id) DO UPDATE SET hash = excluded.hash",
                           (target, list(ids), list(hashes)))
    connection.commit()


class Busy(TerminalError):
    """Another run writes the same collection."""


class Ledger:
    """The bookkeeping of one run into ``target`` (``database.collection``), on ``connection``."""

    def __init__(self, connection, target: str):
        self.connection = connection
        self.target = target
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", ("gigsterpg projection " + target,))
            if not cursor.fetchone()[0]:
                connection.rollback()
                raise Busy(f"another run is writing {target}", "two runs into one collection would delete each"
                           " other's documents", "wait for it to end, or write into another collection")
            cursor.execute("CREATE TEMP TABLE IF NOT EXISTS projection_seen (_id text PRIMARY KEY)")
            cursor.execute("CREATE TEMP TABLE IF NOT EXISTS projection_rejects_seen (doc_id text PRIMARY KEY)")
            cursor.execute("TRUNCATE projection_seen, projection_rejects_seen")
        connection.commit()

    def trust(self, documents_in_collection: int) -> bool:
        """Forget the hashes unless there is one per document in the collection (it was dropped or emptied,
        or a run died between its writes and its hashes): every document is then compared by MongoDB."""
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM projection_hashes WHERE target = %s", (self.target,))
            hashes = cursor.fetchone()[0]
            if hashes != documents_in_collection:
                if hashes:
                    logger.info("%s: %d hashes for %d documents; every document is written again",
                                self.target, hashes, documents_in_collection)
                cursor.execute("DELETE FROM projection_hashes WHERE target = %s", (self.target,))
        self.connection.commit()
        return hashes == documents_in_collection

    def first_seen(self, ids: Sequence[str]) -> List[int]:
        """Remember ``ids`` as seen; the places (0-based) of those not seen before in this run."""
        with self.connection.cursor() as cursor:
            cursor.execute("INSERT INTO projection_seen SELECT k._id FROM unnest(%s::text[]) WITH ORDINALITY"
                           " AS k(_id, n) ORDER BY k.n ON CONFLICT DO NOTHING RETURNING _id", (list(ids),))
            inserted = {row[0] for row in cursor.fetchall()}
        places, taken = [], set()
        for place, doc_id in enumerate(ids):
            if doc_id in inserted and doc_id not in taken:
                taken.add(doc_id)
                places.append(place)
        return places

    def changed(self, ids: Sequence[str], hashes: Sequence[bytes]) -> List[int]:
        """The places of the documents whose hash differs from the one stored (or that have none)."""
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT k.n - 1 FROM unnest(%s::text[], %s::bytea[]) WITH ORDINALITY AS k(_id, hash, n)"
                           " WHERE NOT EXISTS (SELECT 1 FROM projection_hashes h WHERE h.target = %s"
                           "  AND h._id = k._id AND h.hash = k.hash) ORDER BY k.n",
                           (list(ids), list(hashes), self.target))
            return [row[0] for row in cursor.fetchall()]

    def reject(self, rejects: List[dict]) -> None:
        """Open (or refresh) rejects: dicts of doc_id, reason, detail, document. Commits."""
        with self.connection.cursor() as cursor:
            for reject in rejects:
                document = json.loads(json_util.dumps(reject["document"], json_options=JSON_OPTIONS))
                cursor.execute(
                    "INSERT INTO sync_rejects AS r (collection, doc_id, reason, detail, document)"
                    " VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (collection, doc_id) DO UPDATE SET run_id = NULL, reason = excluded.reason,"
                    "  detail = excluded.detail, document = excluded.document, changed_at = now(),"
                    "  resolved_at = NULL,"
                    "  first_seen = CASE WHEN r.resolved_at IS NULL THEN r.first_seen ELSE now() END"
                    " WHERE r.resolved_at IS NOT NULL OR (r.reason, r.detail, r.document)"
                    "  IS DISTINCT FROM (excluded.reason, excluded.detail, excluded.document)",
                    (self.target, reject["doc_id"], reject["reason"], reject["detail"], Jsonb(document)))
                cursor.execute("INSERT INTO projection_rejects_seen VALUES (%s) ON CONFLICT DO NOTHING",
                               (reject["doc_id"],))
        self.connection.commit()

    def gone(self, ids: List) -> List:
        """Of the collection's ``ids``, those this run did not see (their order is gone from the source)."""
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT k.n - 1 FROM unnest(%s::text[]) WITH ORDINALITY AS k(_id, n)"
                           " WHERE NOT EXISTS (SELECT 1 FROM projection_seen s WHERE s._id = k._id)",
                           ([str(doc_id) for doc_id in ids],))
            places = [row[0] for row in cursor.fetchall()]
        self.connection.commit()
        return [ids[place] for place in places]

    def unseen(self, batch_size: int) -> Iterator[List[str]]:
        """The ``_id``s that have a hash but were not seen by this run, a batch at a time."""
        with self.connection.cursor(name="gigsterpg_unseen") as cursor:
            cursor.execute("SELECT _id FROM projection_hashes h WHERE target = %s AND NOT EXISTS"
                           " (SELECT 1 FROM projection_seen s WHERE s._id = h._id)", (self.target,))
            while True:
                rows = cursor.fetchmany(batch_size)
                if not rows:
                    break
                yield [row[0] for row in rows]
        self.connection.commit()

    def finish(self) -> Dict[str, int]:
        """After a complete run: forget the hashes of documents deleted, close the rejects not met again."""
        with self.connection.cursor() as cursor:
            cursor.execute("DELETE FROM projection_hashes h WHERE target = %s AND NOT EXISTS"
                           " (SELECT 1 FROM projection_seen s WHERE s._id = h._id)", (self.target,))
            forgotten = cursor.rowcount
            cursor.execute("UPDATE sync_rejects r SET resolved_at = now(), changed_at = now()"
                           " WHERE collection = %s AND resolved_at IS NULL AND NOT EXISTS"
                           " (SELECT 1 FROM projection_rejects_seen s WHERE s.doc_id = r.doc_id)", (self.target,))
            resolved = cursor.rowcount
        self.connection.commit()
        return {"hashes forgotten": forgotten, "rejects resolved": resolved}
