"""The first load: into empty tables, data first and keys after, the way ``pg_restore`` builds a database.

A full run of every collection into tables that hold nothing yet (a first sync, or ``rebuild``, which
empties them in the same transaction) needs none of the merge's row-by-row care: no row can conflict,
change or be deleted. So, in ONE transaction:

1. the foreign keys of the synced tables, and the indexes and keys of the tables nothing is looked
   up in while loading (gigs, user_skills), are dropped (their definitions read from the catalog);
2. each collection is read and loaded batch by batch as the merge path does (the same mapping, the
   same duplicate-id and duplicate-e-mail rules, so the same rows and rejects), but by plain inserts
   (``SyncModel.insert``) and without the changed-documents probe; the hashes collect in a temp table;
3. the indexes and keys are created again, each foreign key added ``NOT VALID`` then validated in one
   set-wise pass, and the hash cache filled in one statement; then the one commit.

A crash or an error anywhere rolls all of it back (PostgreSQL's DDL is transactional): the tables are
empty again, with their keys, and the next run loads from the start. The tables are locked ACCESS
EXCLUSIVE from step 1 to the commit: a reader either saw them empty before, or waits and then sees
the whole load with every key checked, never a part. The run's progress goes through a second
connection (autocommit), so ``gigsterpg status`` shows it while the load runs.

``load_parallel`` is the same load with step 2 in worker processes (``parallel``), each with its own
session, writing into load tables; the one transaction then moves their rows into the tables set-wise,
by the same rules, so the tables, ids and rejects are the same for any number of workers.
"""
import contextlib
import logging
import threading
import time
from typing import List

import psycopg
from bson.raw_bson import RawBSONDocument

from gigsterpg import faults
from gigsterpg.lib.pg.db.states import FULL
from gigsterpg.lib.pg.sync import registry
from gigsterpg.lib.pg.sync.engine import parallel
from gigsterpg.lib.pg.sync.engine.bulk import (DUPLICATE_ID, OPEN_REJECTS, REJECT_COLUMNS, SET_WATERMARK,
                                               BatchLoader, CollectionCounts, copy_rows, document_json,
                                               link_children, rollback)
from gigsterpg.lib.pg.sync.engine.collection import RAW, CollectionReport, server_time
from gigsterpg.lib.pg.sync.engine.reader import ReadAhead
from gigsterpg.lib.pg.sync.engine.staging import create_staging

logger = logging.getLogger(__name__)


def tables(cursor) -> List[str]:
    """The tables a first load fills: each model's table, and the tables with keys into them (user_skills)."""
    models = [model.table for model in registry.MODELS]
    cursor.execute("SELECT DISTINCT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f'"
                   " AND confrelid = ANY(%s::regclass[]) AND NOT conrelid = ANY(%s::regclass[]) ORDER BY 1",
                   (models, models))
    return models + [row[0] for row in cursor.fetchall()]


def probed() -> set:
    """The tables looked up by key while loading (a child's reference, a conflict): they keep their keys."""
    return {ref.parent.table for model in registry.MODELS for ref in getattr(model, "references", ())}


def applies(cursor, collections, rebuild: bool) -> bool:
    """Whether a first load may run: every collection, and (unless ``rebuild``) nothing synced yet."""
    if tuple(collections) != registry.COLLECTIONS:
        return False
    if rebuild:
        return True
    for table in tables(cursor):
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {table})")
        if cursor.fetchone()[0]:
            return False
    cursor.execute("SELECT EXISTS (SELECT 1 FROM sync_hashes WHERE collection = ANY(%(c)s))"
                   " OR EXISTS (SELECT 1 FROM sync_rejects WHERE collection = ANY(%(c)s) AND resolved_at IS NULL)",
                   {"c": list(collections)})
    return not cursor.fetchone()[0]


def deferred(cursor, keep_probed: bool = True, also: tuple = ()) -> List[tuple]:
    """(table, name, kind, definition) of what the load goes without: foreign keys of the loaded tables,
    and the keys and indexes of those not probed while loading (with ``keep_probed=False``, of all of them:
    the parallel load looks nothing up in them until its end), and of the tables ``also`` names; in the
    order they are put back."""
    loaded = tables(cursor)
    unprobed = [table for table in loaded if not keep_probed or table not in probed()] + list(also)
    cursor.execute(
        "SELECT 1, c.conrelid::regclass::text, quote_ident(c.conname), 'constraint', pg_get_constraintdef(c.oid)"
        " FROM pg_constraint c WHERE c.contype IN ('p', 'u') AND c.conrelid = ANY(%(unprobed)s::regclass[])"
        "  AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = c.conindid"
        "   AND NOT f.conrelid = ANY(%(loaded)s::regclass[]))"
        " UNION ALL"
        " SELECT 2, i.indrelid::regclass::text, quote_ident(x.relname), 'index', pg_get_indexdef(i.indexrelid)"
        " FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid WHERE i.indrelid = ANY(%(unprobed)s::regclass[])"
        "  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid"
        "   AND c.contype IN ('p', 'u', 'x'))"
        " UNION ALL"
        " SELECT 3, c.conrelid::regclass::text, quote_ident(c.conname), 'foreign key', pg_get_constraintdef(c.oid)"
        " FROM pg_constraint c WHERE c.contype = 'f' AND c.conrelid = ANY(%(loaded)s::regclass[])"
        "  AND c.convalidated"
        " ORDER BY 1, 2, 3", {"loaded": loaded, "unprobed": unprobed})
    return [row[1:] for row in cursor.fetchall()]


def drop(cursor, items: List[tuple]) -> None:
    """Drop ``deferred``'s items, foreign keys first."""
    for table, name, kind, _ in reversed(items):
        if kind == "index":
            cursor.execute(f"DROP INDEX {name}")
        else:
            cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")


def restore(cursor, items: List[tuple]) -> None:
    """Put ``deferred``'s items back: keys and indexes built once, each foreign key checked in one pass."""
    for table, name, kind, definition in items:
        if kind == "index":
            cursor.execute(definition)
        elif kind == "constraint":
            cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
        else:
            cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition} NOT VALID")
            cursor.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")


class FirstLoader(BatchLoader):
    """``BatchLoader`` for a first load: every batch in the one open transaction, plain inserts.

    What decides the rows and rejects (``_mark_seen``, ``_rows``, the model's ``conflicts``,
    ``_merge``'s split of a refused batch) is the merge path's own.
    """

    def __init__(self, connection, side, model, run_id: int, source=None):
        self.side = side  # autocommit: the progress is seen while the load's transaction is open
        self.hashes = f"first_hashes_{model.collection}"
        self.rejects = f"first_rejects_{model.collection}"
        self.watermark = None
        super().__init__(connection, model, run_id, skip_unchanged=True, source=source)
        self.map_ahead = True  # nothing is stored: every document is mapped
        self.keys = self.hashes  # the stored rows' id order keys: nothing is in sync_hashes until the end
        self.gone: List[str] = []  # stored earlier in the load, displaced in this batch: their hashes go

    def begin(self, cursor) -> None:
        """The temp tables the stored documents' hashes and the rejects collect in (dropped at the commit).

        Rejects and the watermark are written at the end: their key to ``sync_runs`` would lock the
        run's row against those who wait for the run there (``SELECT … FOR UPDATE``) for all the load.
        """
        cursor.execute(f"CREATE TEMP TABLE {self.hashes} (_id text, hash bytea, id_key bytea) ON COMMIT DROP")
        # Looked up by the model's conflicts (a user whose e-mail another holds), as sync_hashes is.
        cursor.execute(f"CREATE INDEX ON {self.hashes} (_id)")
        cursor.execute(f"CREATE TEMP TABLE {self.rejects} (n serial, doc_id text, reason text, detail text,"
                       " document text) ON COMMIT DROP")

    @staticmethod
    def _clear(cursor, tables) -> None:
        # One transaction: DELETE would leave every batch's dead rows for the next batches to scan.
        cursor.execute(f"TRUNCATE {', '.join(tables)}")

    def _store(self, cursor) -> dict:
        return self.model.insert(cursor)

    def _changed(self, cursor, batch):
        return list(batch)  # nothing is stored yet

    def _stored_keys(self, cursor, todo):
        return {}  # nothing was stored before the load

    def _record_progress(self, cursor, stage: str, documents: int) -> None:
        with self.side.cursor() as side:
            super()._record_progress(side, f"first load: {stage}", documents)

    def _record_rejects(self, cursor, rejects, stored_ids) -> None:
        """Keep the batch's rejects for the end; no row of theirs exists, and no open reject of a stored one."""
        if rejects:
            copy_rows(cursor, self.rejects, REJECT_COLUMNS,
                      ((r.doc_id, r.reason, r.detail, r.document) for r in rejects))

    def _displace(self, cursor, displaced, reason, delete=True, unseen=frozenset()):
        self.gone.extend(doc_id for doc_id, *_ in displaced)
        return super()._displace(cursor, displaced, reason, delete, unseen)

    def _record_hashes(self, cursor, stored_seqs, rejected_ids) -> None:
        if self.gone:  # rare: a stored document lost its e-mail or its id's text form to a later one
            cursor.execute(f"DELETE FROM {self.hashes} WHERE _id = ANY(%s)", (self.gone,))
            self.gone = []
        if stored_seqs:
            cursor.execute(f"INSERT INTO {self.hashes} SELECT s._id, s.hash, s.id_key FROM stage_hashes s"
                           " JOIN unnest(%s::int4[]) AS k(seq) ON k.seq = s.seq", (stored_seqs,))

    def finish(self, complete: bool = True, watermark=None) -> None:
        """The collection's tail: nothing to delete (the tables were empty), children linked, watermark."""
        with self.connection.cursor() as cursor:
            faults.point("deleting")
            extra = link_children(cursor, self.model.collection)
            self.watermark = watermark
            cursor.execute(f"DROP TABLE IF EXISTS {self.seen_table}")
        self._record_progress(None, "loaded, keys not yet checked", self.counts.seen)
        self.counts.extra.update(extra)
        faults.point("finished")

    def close(self, cursor) -> None:
        """The hash cache in one statement; the rejects (the last of one id, as batch by batch); the watermark."""
        cursor.execute(f"INSERT INTO sync_hashes (collection, _id, hash, id_key) SELECT %s, _id, hash, id_key"
                       f" FROM {self.hashes} ORDER BY _id", (self.model.collection,))
        cursor.execute("TRUNCATE stage_rejects")
        cursor.execute(f"INSERT INTO stage_rejects SELECT DISTINCT ON (doc_id) doc_id, reason, detail, document"
                       f" FROM {self.rejects} ORDER BY doc_id, n DESC")
        cursor.execute(OPEN_REJECTS, (self.model.collection, self.run_id))
        self.model.settle(cursor)
        if self.watermark is not None:
            cursor.execute(SET_WATERMARK, (self.model.collection, self.watermark[0], self.run_id,
                                           bool(self.counts.inserted)))


def load(run, pending: list, rebuild: bool = False) -> None:
    """Load ``pending`` (every collection) into empty tables in one transaction; fills ``run.report``.

    ``run`` is the runner's ``_Run``; its connection holds the sync lock. ``rebuild`` empties the
    tables (and the collections' hashes, rejects and watermarks) first, in the same transaction.
    """
    side_raw = run.engine.raw_connection()
    side = side_raw.driver_connection
    side.autocommit = True
    connection = run.connection
    try:
        with contextlib.ExitStack() as readers:
            pipelines = []
            for name in pending:
                loader = FirstLoader(connection, side, registry.model(name), run.report.run_id, run.mongo_db[name])
                mark = server_time(run.mongo_db)
                cursor = run.mongo_db[name].with_options(codec_options=RAW).find({}, batch_size=run.batch_size)
                readers.callback(cursor.close)
                pipelines.append((loader, mark, readers.enter_context(
                    ReadAhead(cursor, run.batch_size, loader.prepare))))
            with connection.cursor() as cursor:
                _empty(cursor, pending if rebuild else ())
                items = deferred(cursor)
                drop(cursor, items)
                for loader, _, _ in pipelines:
                    loader.begin(cursor)
            started = {}
            for index, (loader, mark, pipeline) in enumerate(pipelines):
                following = pipelines[index + 1][2] if index + 1 < len(pipelines) else None
                name = loader.model.collection
                started[name] = time.monotonic()
                run.progress.start(name, run.mongo_db[name].estimated_document_count()
                                   if run.progress.needs_total else 0)
                try:
                    for batch in pipeline:
                        loader.load(batch, commit=False)
                        run.progress.advance(len(batch))
                        if following is not None and pipeline.fetched:
                            following.start()
                finally:
                    run.progress.close()
                loader.finish(True, watermark=(mark,))
                started[name] = time.monotonic() - started[name]
        ended = time.monotonic()
        faults.point("first-load-loaded")
        with connection.cursor() as cursor:
            restore(cursor, items)
            for loader, _, _ in pipelines:
                loader.close(cursor)
        faults.point("first-load-keyed")
        connection.commit()
    except BaseException:
        rollback(connection)
        raise
    finally:
        with contextlib.suppress(Exception):
            side.autocommit = False
            side_raw.close()
    for loader, _, _ in pipelines:
        name = loader.model.collection
        # The keys, the hash cache and the commit are counted in the last collection's time.
        seconds = started[name] if loader is not pipelines[-1][0] else time.monotonic() - ended + started[name]
        report = CollectionReport(name, loader.counts, True, FULL, documents=loader.counts.seen, seconds=seconds)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {loader.model.table}")
            report.rows = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM sync_rejects WHERE collection = %s AND resolved_at IS NULL", (name,))
            report.open_rejects = cursor.fetchone()[0]
        connection.commit()
        run.report.collections[name] = report
        logger.info("%s (first load): %s", name, report.as_dict())
    pending.clear()


def _empty(cursor, collections) -> None:
    """The tables emptied (in the load's transaction), their ids from 1 again; with ``collections`` (a
    rebuild) what is known about those collections too.

    Emptied even when empty: the lock on them all at once, and the ids an undisturbed first load gives
    even after a crashed one burnt some. Skills stay: a dictionary the migrations seed and syncs only add
    to, as the merge path does.
    """
    cursor.execute(f"TRUNCATE {', '.join(tables(cursor))} RESTART IDENTITY")
    for table in ("sync_hashes", "sync_rejects", "sync_watermarks"):
        cursor.execute(f"DELETE FROM {table} WHERE collection = ANY(%s)", (list(collections),))


def load_parallel(run, pending: list, rebuild: bool, workers: int, pool=None) -> None:
    """``load`` with the decoding, mapping and COPY encoding in ``workers`` processes (``parallel``).

    ``pool(workers, pg_url)`` makes what runs the batches (default ``parallel.Workers``, processes of this
    machine; ``distributed.DaskBatches``: tasks on a Dask cluster), made once the load tables exist.

    The coordinator reads each collection through one cursor and numbers its documents in scan order;
    the workers load them into the run's load tables through their own sessions; then, in the load's one
    transaction (which holds the tables from the start, as ``load``'s does), each collection's rows go into
    its table set-wise, decided by the merge path's rules over the scan order (``_finish_loaded``): the
    same tables and rejects as ``load`` and as the merge path, whatever ``workers`` is.
    """
    run_id = run.report.run_id
    side_raw = run.engine.raw_connection()
    side = side_raw.driver_connection
    side.autocommit = True
    connection = run.connection
    try:
        with side.cursor() as cursor:
            parallel.create_load_tables(cursor, run_id, pending)
    except psycopg.errors.InsufficientPrivilege as err:  # no CREATE on the database: the load of one process
        logger.warning("the first load runs in this process: %s (the load workers' tables need CREATE on the"
                       " database)", str(err).strip().splitlines()[0])
        with contextlib.suppress(Exception):
            side.autocommit = False
            side_raw.close()
        load(run, pending, rebuild)
        return
    pool = (pool or parallel.Workers)(workers, parallel.libpq_url(run.engine))
    stop, read, failed = threading.Event(), {}, []
    reader = None
    try:
        for name in reversed(pending):  # where the run is from its start (a run killed before any batch)
            _side_progress(side, run_id, name, "loading", 0)
        marks = {name: server_time(run.mongo_db) for name in pending}
        with connection.cursor() as cursor:
            _empty(cursor, pending if rebuild else ())
            # Every key and index of the loaded tables, and the hash cache's, built once at the end.
            items = deferred(cursor, keep_probed=False, also=("sync_hashes",))
            drop(cursor, items)
            create_staging(cursor, "stage_rejects", REJECT_COLUMNS)

        def read_all():
            try:
                for name in pending:
                    read[name] = parallel.read_batches(run.mongo_db[name], run.batch_size, run_id, pool, stop)
            except BaseException as err:  # raised by the main thread
                failed.append(err)

        def check():
            if failed:
                raise failed[0]

        reader = threading.Thread(target=read_all, name="gigsterpg-load-reader", daemon=True)
        reader.start()
        seen = dict.fromkeys(pending, 0)
        started, reports = {}, {}
        for name in pending:
            started[name] = time.monotonic()
            run.progress.start(name, run.mongo_db[name].estimated_document_count() if run.progress.needs_total else 0)
            run.progress.advance(seen[name])
            try:
                while read.get(name) != seen[name]:
                    collection, _, documents = pool.get(check)
                    seen[collection] += documents
                    if collection == name:
                        run.progress.advance(documents)
                    _side_progress(side, run_id, collection, "loading", seen[collection])
                    faults.point("merged")  # the kill points of a batch (the reliability tests')
                    faults.point("committed")
                check()
            finally:
                run.progress.close()
            loaded = time.monotonic()
            with connection.cursor() as cursor:
                reports[name] = _finish_loaded(run, cursor, registry.model(name), seen[name])
            logger.info("%s: %d documents read and loaded by %d workers in %.2f s, into the table in %.2f s", name,
                        seen[name], workers, loaded - started[name], time.monotonic() - loaded)
            _side_progress(side, run_id, name, "loaded, keys not yet checked", seen[name])
            faults.point("finished")
            started[name] = time.monotonic() - started[name]
        ended = time.monotonic()
        faults.point("first-load-loaded")
        with connection.cursor() as cursor:
            restore(cursor, items)
            for name in pending:
                _close_loaded(run, cursor, name, reports[name], marks[name])
        faults.point("first-load-keyed")
        connection.commit()
        logger.info("keys, rejects and the commit in %.2f s", time.monotonic() - ended)
    except BaseException:
        stop.set()
        rollback(connection)
        raise
    finally:
        stop.set()
        if reader is not None:
            reader.join()
        pool.close()
        run.report.load_workers = pool.stats  # (CPU seconds, peak RSS MB) of each worker, for the benchmark
        if pool.stats:
            logger.info("%d load workers: CPU %s s, peak RSS %s MB", len(pool.stats),
                        " / ".join(f"{cpu:.1f}" for cpu, _ in pool.stats),
                        " / ".join(f"{rss:.0f}" for _, rss in pool.stats))
        with contextlib.suppress(Exception):
            with side.cursor() as cursor:
                parallel.drop_load_tables(cursor)
        with contextlib.suppress(Exception):
            side.autocommit = False
            side_raw.close()
    for name in pending:
        counts = reports[name]
        seconds = started[name] if name != pending[-1] else time.monotonic() - ended + started[name]
        report = CollectionReport(name, counts, True, FULL, documents=counts.seen, seconds=seconds)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {registry.model(name).table}")
            report.rows = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM sync_rejects WHERE collection = %s AND resolved_at IS NULL", (name,))
            report.open_rejects = cursor.fetchone()[0]
        connection.commit()
        run.report.collections[name] = report
        logger.info("%s (first load, %d workers): %s", name, workers, report.as_dict())
    pending.clear()


def _side_progress(side, run_id: int, collection: str, stage: str, documents: int) -> None:
    with side.cursor() as cursor:
        cursor.execute("UPDATE sync_runs SET stage = %s, progress = progress || jsonb_build_object(%s::text, %s)"
                       " WHERE id = %s", (f"{collection}: first load: {stage}", collection, documents, run_id))


def _finish_loaded(run, cursor, model, seen: int) -> CollectionCounts:
    """One collection's loaded documents into its table, set-wise, in the load's transaction; its counts.

    The rules are the merge path's, by MongoDB's order of ids (the data contract: not the scan order):
    of documents whose ids share a text form (1 and "1"), the first in that order keeps it; the model's own
    (``reject_loaded``: of users with one e-mail, the first in that order keeps it); rows in scan order (so
    the ids are the merge path's); a row PostgreSQL refuses found by splitting, as the merge path splits a
    batch.
    """
    run_id, batch_size, name = run.report.run_id, run.batch_size, model.collection
    load = parallel.load_table(run_id, name)
    children = {child: parallel.load_table(run_id, child) for child in getattr(model, "load_children", {})}
    counts = CollectionCounts(seen=seen)
    steps = _Steps(name)
    # ``held``: a reject the batch-by-batch paths store first and reject later, when a document whose id
    # comes first arrives; stored here too, then deleted, so that the ids (and the skills) come out the same.
    cursor.execute(f"ALTER TABLE {load} ADD COLUMN held bool NOT NULL DEFAULT false")
    _reject_duplicate_ids(run, cursor, load)
    steps("duplicate ids")
    if hasattr(model, "reject_loaded"):
        model.reject_loaded(cursor, load, batch_size)
        steps("model's rejects")
    counts.inserted = _insert_loaded(cursor, model, load, batch_size)
    cursor.execute(f"DELETE FROM {model.table} t USING {load} s WHERE s.held AND t._id = s._id")
    counts.inserted -= cursor.rowcount  # rejects in the end: counted there, as the merge path counts them
    steps("insert")
    if hasattr(model, "after_loaded"):
        counts.extra.update(model.after_loaded(cursor, load, children, batch_size))
        steps("children")
    faults.point("deleting")
    counts.extra.update(link_children(cursor, name))
    # The documents of rejects decided here (the workers wrote only the mapping's rejects' documents).
    cursor.execute(f"SELECT array_agg(pos) FROM {load} WHERE reason IS NOT NULL AND document IS NULL")
    wanted = cursor.fetchone()[0]
    documents = []
    if wanted:
        cursor.execute(f"SELECT pos, raw FROM {parallel.raw_table(run_id, name)} WHERE pos = ANY(%s)", (wanted,))
        documents = [(pos, document_json(RawBSONDocument(bytes(raw)))) for pos, raw in cursor.fetchall()]
    if documents:
        cursor.execute(f"UPDATE {load} l SET document = d.document FROM unnest(%s::int8[], %s::text[])"
                       " AS d(pos, document) WHERE l.pos = d.pos", tuple(map(list, zip(*documents))))
    cursor.execute(f"SELECT reason, count(*) FROM {load} WHERE reason IS NOT NULL GROUP BY reason")
    counts.rejected.update(dict(cursor.fetchall()))
    steps("rejects")
    cursor.execute(f"INSERT INTO sync_hashes (collection, _id, hash, id_key) SELECT %s, _id, hash, id_key FROM {load}"
                   " WHERE reason IS NULL ORDER BY _id", (name,))
    steps("hashes")
    logger.debug("%s into its table: %s", name, steps)
    return counts


class _Steps:
    """Seconds per step, for the log."""

    def __init__(self, name: str):
        self.name, self.last, self.seconds = name, time.monotonic(), {}

    def __call__(self, step: str) -> None:
        now = time.monotonic()
        self.seconds[step] = round(now - self.last, 2)
        self.last = now

    def __str__(self) -> str:
        return ", ".join(f"{step} {seconds} s" for step, seconds in self.seconds.items())


def _close_loaded(run, cursor, name: str, counts: CollectionCounts, mark) -> None:
    """A collection's rejects and watermark, at the load's end: their key to ``sync_runs`` would lock the
    run's row against those who wait for the run there (``SELECT … FOR UPDATE``) for all the load."""
    load = parallel.load_table(run.report.run_id, name)
    cursor.execute("TRUNCATE stage_rejects")
    cursor.execute(f"INSERT INTO stage_rejects SELECT DISTINCT ON (_id) _id, reason, detail, document FROM {load}"
                   " WHERE reason IS NOT NULL ORDER BY _id, pos DESC")
    cursor.execute(OPEN_REJECTS, (name, run.report.run_id))
    cursor.execute(SET_WATERMARK, (name, mark, run.report.run_id, bool(counts.inserted)))


def _reject_duplicate_ids(run, cursor, load: str) -> None:
    """Of documents whose ids have one text form (1 and "1"), the one whose id comes first in MongoDB's
    order of ids keeps it (an int before a string), whichever the scan met first."""
    cursor.execute(f"SELECT pos, _id, hash, reason IS NULL FROM {load} WHERE _id IN"
                   f" (SELECT _id FROM {load} GROUP BY _id HAVING count(*) > 1) ORDER BY _id, id_key, pos")
    losers, holder, first_batch = [], None, 0
    for pos, doc_id, digest, mapped in cursor.fetchall():
        batch = pos // run.batch_size
        if doc_id == holder:
            # Stored for a while by the batch-by-batch paths if no id before it in order came in a batch
            # before it (or in its own).
            held = mapped and batch < first_batch
            losers.append((pos, f"{doc_id} (duplicate {bytes(digest).hex()[:12]})", DUPLICATE_ID,
                           f"{DUPLICATE_ID}: {doc_id!r} is already used by another document of this collection"
                           " (an id of another type with the same text form)", held))
            first_batch = min(first_batch, batch)
        else:
            holder, first_batch = doc_id, batch
    if losers:
        cursor.execute(f"UPDATE {load} l SET _id = d.doc_id, reason = d.reason, detail = d.detail, document = NULL,"
                       " held = d.held FROM unnest(%s::int8[], %s::text[], %s::text[], %s::text[], %s::bool[])"
                       " AS d(pos, doc_id, reason, detail, held) WHERE l.pos = d.pos", tuple(map(list, zip(*losers))))


def _insert_loaded(cursor, model, load: str, batch_size: int) -> int:
    """The loaded rows into the model's table in scan order; rows PostgreSQL refuses become rejects.

    One statement; if PostgreSQL refuses it, batch by batch, a refused batch split in halves down to the
    refused row, as the merge path does.
    """
    values, joins = model.values(), ""
    for number, ref in enumerate(getattr(model, "references", ())):  # one hash join, not a probe per row
        values[ref.column] = f"p{number}.id"
        joins += f" LEFT JOIN {ref.parent.table} p{number} ON p{number}._id = s.{ref.ref}"
    statement = (f"INSERT INTO {model.table} ({', '.join(values)}) SELECT {', '.join(values.values())}"
                 f" FROM {load} s{joins} WHERE (s.reason IS NULL OR s.held){{}} ORDER BY s.pos")
    cursor.execute("SAVEPOINT load_all")
    try:
        cursor.execute(statement.format(""))
        inserted = cursor.rowcount
        cursor.execute("RELEASE SAVEPOINT load_all")
        return inserted
    except (psycopg.DataError, psycopg.IntegrityError):
        cursor.execute("ROLLBACK TO SAVEPOINT load_all")
    cursor.execute(f"SELECT pos FROM {load} WHERE reason IS NULL OR held ORDER BY pos")
    positions = [pos for (pos,) in cursor.fetchall()]
    some = statement.format(" AND s.pos = ANY(%s)")
    return sum(_insert_positions(cursor, some, load, positions[at:at + batch_size])
               for at in range(0, len(positions), batch_size))


def _insert_positions(cursor, statement: str, load: str, positions: list) -> int:
    if not positions:
        return 0
    cursor.execute("SAVEPOINT load_part")
    try:
        cursor.execute(statement, (positions,))
        cursor.execute("RELEASE SAVEPOINT load_part")
        return len(positions)
    except (psycopg.DataError, psycopg.IntegrityError) as err:
        cursor.execute("ROLLBACK TO SAVEPOINT load_part")
        if len(positions) == 1:
            message = str(err).strip().splitlines()[0]
            cursor.execute(f"UPDATE {load} SET reason = 'refused by PostgreSQL', detail = %s, held = false"
                           " WHERE pos = %s",
                           (f"refused by PostgreSQL: {message}", positions[0]))
            return 0
    half = len(positions) // 2
    return (_insert_positions(cursor, statement, load, positions[:half])
            + _insert_positions(cursor, statement, load, positions[half:]))
