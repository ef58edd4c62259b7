"""``export-orders``: orders from a read-only PostgreSQL shop into MongoDB, one denormalized document each.

The projection (``projections/orders.sql``, or a file of the user's) computes
every field set-wise in PostgreSQL: items with their product's name and brand,
subtotal, taxes and total in exact decimals, the most popular brand, the
promotion day. Its rows are streamed with a server-side cursor in a read-only
transaction; each becomes a document whose BSON bytes are hashed. Only the
documents whose hash differs from the one stored in gigsterpg's own PostgreSQL
(``projection_hashes``) are written, as unordered bulk operations, and their
hashes stored after them, so an unchanged order costs no write at all. After a
complete run the documents of orders no longer at the source are deleted.
Orders without a uid (or a uid seen twice), and orders with a number that Decimal128 cannot hold (NaN, more
than 34 digits: money is Decimal128 or the order is a reject), are rejects in ``sync_rejects``. Every order
read is in exactly one of written, unchanged (a document equal to the one stored counts here, whatever its
hash said) and rejected.
Each run (CLI or API job) leaves a record in ``projection_runs`` (``runs.recorded``) that ``status`` reads.
"""
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Callable, Dict, Optional

import psycopg
from psycopg.conninfo import conninfo_to_dict

from gigsterpg import faults
from gigsterpg.config import Settings, check_pg_conninfo, mask_url
from gigsterpg.connections import migrate, mongo_errors_translated, open_mongo, open_pg, pg_error, pg_errors
from gigsterpg.exc import ConfigError, GigsterPgError
from gigsterpg.lib.mongo import bulk
from gigsterpg.lib.mongo.bulk import check_collection
from gigsterpg.lib.mongo.ledger import Ledger, digest, remember
from gigsterpg.lib.mongo.projection import (NotDecimal128, Projection, Shape, check_source, count_rows, hashed,
                                            load_projection, prepare_source, row_hash, tax_rate, time_zone)
from gigsterpg.lib.mongo.runs import recorded

logger = logging.getLogger(__name__)

NO_UID, DUPLICATE_UID, NOT_DECIMAL128 = "no uid", "duplicate uid", "number beyond Decimal128"


@dataclass
class OrdersReport:
    """What a run did: rows read, documents written, unchanged, deleted, rejects, and counts per reason."""

    projection: str
    target: str
    tax_rate: str
    time_zone: str
    rows: int = 0
    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    counts: Dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def read(self) -> int:
        return self.rows

    @property
    def outcomes(self) -> Dict[str, int]:
        """Where each order read went: every one in exactly one of these (they add up to ``read``)."""
        return {"written": self.written, "unchanged": self.unchanged, "rejected": self.rejected}


class _Sessions:
    """A PostgreSQL session per writer thread for the hashes: the first thread gets ``first``, each other one
    its own from ``connect()`` (closed by ``close``)."""

    def __init__(self, first, connect: Optional[Callable[[], object]]):
        self.first, self.connect, self.made = first, connect, []
        self.local = threading.local()
        self.lock = threading.Lock()
        self.taken = False

    def get(self):
        connection = getattr(self.local, "connection", None)
        if connection is None:
            with self.lock:
                if not self.taken or self.connect is None:
                    self.taken, connection = True, self.first
                else:
                    connection = self.connect()
                    self.made.append(connection)
            self.local.connection = connection
        return connection

    def close(self) -> None:
        for connection in self.made:
            with contextlib.suppress(Exception):
                connection.close()


def project(source, ledger_connection, hash_connection, collection, projection: Projection, rate: Decimal,
            zone: str = "UTC", batch_size: int = bulk.BATCH,
            progress: Optional[Callable[[int], None]] = None, writers: int = 1,
            connect: Optional[Callable[[], object]] = None) -> OrdersReport:
    """Run ``projection`` on ``source`` into ``collection``; bookkeeping on the two connections to
    gigsterpg's own database (the second stores hashes from the writer thread).

    PostgreSQL hashes each result row (``md5`` of its text); a document is built, hashed and written only
    when that hash differs from the one stored for its ``_id``, so an unchanged order costs a look-up.
    The writes (documents, then their hashes) run on threads of their own while the next batch is read:
    ``writers`` of them, each batch (a range of the projection's orders, its ``_id``s its own: duplicates are
    rejected before) written by whichever is free, each thread storing its hashes through its own session
    (``connect()`` makes those beyond ``hash_connection``; without it, one writer).
    """
    target = f"{collection.database.name}.{collection.name}"
    report = OrdersReport(projection.name, target, str(rate), zone)
    started = time.monotonic()
    ledger = Ledger(ledger_connection, target)
    documents = collection.estimated_document_count()
    trusted = ledger.trust(documents)
    writer = bulk.BulkWriter(collection, empty=documents == 0)
    writers = max(1, writers) if connect is not None else 1
    background = bulk.Background(depth=2 * writers, threads=writers)
    sessions = _Sessions(hash_connection, connect)
    # Documents sent that the server found equal to the stored ones, and the report's counts, as the writer
    # threads count them.
    equal = [0, threading.Lock()]
    try:
        only_text_ids = _batches(source, ledger, sessions, writer, background, projection, rate, batch_size,
                                 progress, report, equal)
        background.drain()
    except BaseException:
        background.stop()
        raise
    finally:
        report.unchanged += equal[0]
        sessions.close()
    if trusted and only_text_ids:  # the hashes mirror the collection: what was not seen is what to delete
        for gone in ledger.unseen(batch_size):
            report.deleted += collection.delete_many({"_id": {"$in": gone}}).deleted_count
            faults.point("orders-deleting")
    else:  # ask the collection itself, a batch of _ids at a time
        report.deleted = bulk.delete_gone(collection, ledger.gone, batch_size, point="orders-deleting")
    ledger.finish()
    faults.point("orders-finished")
    report.seconds = time.monotonic() - started
    return report


def _batches(source, ledger, sessions, writer, background, projection, rate, batch_size, progress,
             report, equal) -> bool:
    """Read, compare and hand the changed documents to the writer thread; whether every _id was text."""
    only_text_ids = True
    for names, rows in bulk.stream(source, hashed(projection), {"tax_rate": rate}, batch_size):
        shape = Shape(names[1:])
        kept, rejects = [], []
        for row in rows:
            for place, reason in shape.counts:
                if row[place + 1]:
                    report.counts[reason] = report.counts.get(reason, 0) + int(row[place + 1])
            doc_id = row[shape.id_place + 1]
            if doc_id is None or doc_id == "":
                rejects.append(_reject(NO_UID, "the order has no uid, which is the document's _id",
                                       shape.shown(row[1:])))
            else:
                only_text_ids = only_text_ids and isinstance(doc_id, str)
                kept.append(row)
        ids = [str(row[shape.id_place + 1]) for row in kept]
        first = set(ledger.first_seen(ids))
        for place, row in enumerate(kept):
            if place not in first:
                rejects.append(_reject(DUPLICATE_UID, f"another order has the uid {ids[place]!r}",
                                       shape.shown(row[1:]), doc_id=ids[place]))
        kept, ids = [kept[place] for place in sorted(first)], [ids[place] for place in sorted(first)]
        hashes = [row_hash(row[0], projection) for row in kept]
        changed = ledger.changed(ids, hashes)
        documents, written = [], []
        for place in changed:
            try:
                documents.append(shape.document(kept[place][1:]))
                written.append(place)
            except NotDecimal128 as err:
                rejects.append(_reject(
                    NOT_DECIMAL128, f"{err.field} is {err.value}: money is stored as Decimal128, which holds finite"
                    " numbers of at most 34 digits; fix the value at the source", shape.shown(kept[place][1:]),
                    doc_id=ids[place], duplicate=False))
        background.submit(partial(_write, writer, sessions, ledger.target, documents,
                                  [ids[place] for place in written], [hashes[place] for place in written], report,
                                  equal))
        if rejects:
            ledger.reject(rejects)
        report.rows += len(rows)
        report.unchanged += len(kept) - len(changed)
        report.rejected += len(rejects)
        for reject in rejects:
            report.counts[reject["reason"]] = report.counts.get(reject["reason"], 0) + 1
        if progress:
            progress(report.rows)
    return only_text_ids


def _write(writer, sessions: _Sessions, target: str, documents, ids, hashes, report: OrdersReport, equal) -> None:
    """On a writer thread: the documents, then their hashes (committed: never ahead of MongoDB). A document
    the server found equal to the stored one (a rerun after a kill, a setting that changed the row's text but
    not its document) is unchanged."""
    written = writer.write(documents)
    with equal[1]:
        report.written += written
        equal[0] += len(documents) - written
    faults.point("orders-written")
    remember(sessions.get(), target, ids, hashes)
    faults.point("orders-remembered")


def _reject(reason: str, detail: str, document: dict, doc_id: Optional[str] = None, duplicate: bool = True) -> dict:
    if doc_id is None:
        doc_id = "(no uid) " + digest({k: v for k, v in document.items() if k != "_id"}).hex()
    elif duplicate:
        doc_id = f"{doc_id} (duplicate {digest(document).hex()[:12]})"
    return {"doc_id": doc_id, "reason": reason, "detail": detail, "document": document}


def export_orders(settings: Settings, collection: str = "orders", projection: str = "orders",
                  batch_size: int = bulk.BATCH, progress: Optional[Callable[[int], None]] = None,
                  total: Optional[Callable[[int], None]] = None, writers: Optional[int] = None) -> OrdersReport:
    """The orders of the source (``settings.source_pg_url``) into ``collection`` of ``settings.mongo_url``'s
    database; hashes and rejects in gigsterpg's own PostgreSQL (``settings.pg_url``). ``total`` is told the
    number of rows to come before the first is read. ``writers``: threads writing batches at once, each with
    its own session (default ``bulk.default_writers()``)."""
    check_collection(collection)
    source_url = require_source(settings)
    own_url = settings.require_pg()
    if _same_database(source_url, own_url):
        raise ConfigError("the source is gigsterpg's own database", "export-orders never writes to its source,"
                          " and it keeps its hashes and rejects in DB_URL_PSQL",
                          "give gigsterpg a database of its own in DB_URL_PSQL (or --pg-url)", value=mask_url(own_url))
    rate, zone, found = tax_rate(settings.tax_rate), time_zone(settings.time_zone), load_projection(projection)
    client, database = open_mongo(settings)
    with contextlib.ExitStack() as stack:
        stack.callback(client.close)
        own = open_pg(settings)
        stack.callback(own.dispose)
        migrate(own)
        with pg_errors(own_url):
            record = stack.enter_context(recorded(own_url, found.name, f"{database.name}.{collection}", "cli"))
            ledger_connection = stack.enter_context(psycopg.connect(own_url, application_name="gigsterpg-orders"))
            hash_connection = stack.enter_context(psycopg.connect(own_url, application_name="gigsterpg-orders"))
        with source_errors(source_url):
            source = stack.enter_context(bulk.connect(source_url, time_zone=zone))
            prepare_source(source)
            check_source(source, found, {"tax_rate": rate})
            if total:
                total(count_rows(source, found))
        with source_errors(source_url), mongo_errors_translated(settings.mongo_url):
            try:
                record.report = project(
                    source, ledger_connection, hash_connection, database[collection], found, rate, zone, batch_size,
                    progress, bulk.default_writers() if writers is None else writers,
                    connect=lambda: psycopg.connect(own_url, application_name="gigsterpg-orders"))
                return record.report
            except psycopg.Error as err:
                if any(c.broken or c.closed for c in (ledger_connection, hash_connection)):  # not the source's
                    raise pg_error(err, own_url) from err
                raise


@contextlib.contextmanager
def source_errors(url: str):
    """``pg_errors`` for the source: its advice names the source's setting, not gigsterpg's own database's."""
    try:
        with pg_errors(url):
            yield
    except GigsterPgError as err:
        if "DB_URL_PSQL" not in err.todo:
            raise
        err.todo = err.todo.replace("DB_URL_PSQL", "--pg (GIGSTERPG_ORDERS_SOURCE_PG)")
        err.args = (", ".join(part for part in (err.what, err.why, err.todo) if part),)
        raise


def require_source(settings: Settings, command: str = "export-orders") -> str:
    """The source's URL, or a ConfigError saying how to give one (to ``command``)."""
    if not settings.orders_source_pg:
        if command == "generate-shop":
            raise ConfigError("no database for the shop", "generate-shop writes the shop into a PostgreSQL database",
                              "pass --pg URL or set GIGSTERPG_ORDERS_SOURCE_PG")
        raise ConfigError("no source database", "export-orders reads the shop from a PostgreSQL database of its own",
                          "pass --pg URL or set GIGSTERPG_ORDERS_SOURCE_PG")
    return check_pg_conninfo(settings.orders_source_pg, "--pg (GIGSTERPG_ORDERS_SOURCE_PG)")


def _same_database(one: str, other: str) -> bool:
    """Whether two PostgreSQL URLs name the same database (host, port and name; users may differ)."""
    try:
        a, b = conninfo_to_dict(one), conninfo_to_dict(other)
    except psycopg.ProgrammingError:
        return one == other
    keys = ("host", "port", "dbname")
    return all(str(a.get(key) or "") == str(b.get(key) or "") for key in keys)
