"""A full sync on a Dask cluster: workers read, hash and map ``_id`` ranges, and merge what is theirs alone.

Into empty tables a first load runs (``_first_load``): the cluster's tasks are its batches. Into full tables (a
re-sync), the result must equal the single-process sync's, ids included. That one's result depends on the
order it meets documents in (a plain scan's, the record ids) and on its batches only where documents meet:
of users with one e-mail, and of documents whose ids share a text form (1 and "1"), the one whose ``_id``
comes first in MongoDB's order of ids keeps it, but the detail of a reject and whether a loser is met before
or after its winner follow the scan; a new skill is spelt as the first batch holding it spells it; a new
row's id follows the order of the inserts (only inserts draw ids: the merge updates, then inserts). So:

1. plan (``plan``): each collection in ``_id`` ranges from sampled split points;
   one Dask task per range (``task.stage_range``, retried by Dask);
2. the tasks, in parallel, read their range with each document's record id,
   hash it, map it if it is new or changed, and stage the result in the run's
   UNLOGGED scratch table of that collection (idempotently, per task), with what the row would claim
   (its e-mail) and add (its skills' keys);
3. once every range of a collection is staged, the coordinator marks set-wise the documents that meet
   another (``mark_contested``): new or rejected ones, ids of a shared text form, new skills, and every
   document, stored holder included, of an e-mail two documents claim. The rule reads only the staged rows
   and the stored tables: neither the scan order nor the number of ranges changes what it marks;
4. one merge task per range (``task.merge_range``, retried by Dask) runs the single-process ``BatchLoader``
   over its range's other changed documents, in its own session and one transaction: they touch only their
   own rows (users, their user_skills, hashes), so the sessions never wait on each other, and any order of
   them gives the same rows. Documents unchanged when staged and not contested are only counted as seen;
5. the coordinator replays the contested documents in record-id order, each in the batch the single process
   would have read it in, through the same ``BatchLoader``, then deletes what was not seen, links, and
   accounts, exactly as it does: users' merge finishes before gigs' begins (gigs' tasks run meanwhile), so a
   gig's poster, in whatever range, is there.

The counts are the merge tasks' loaders' plus the coordinator's: the same as the single process's
(tests/test_distributed_split.py, at 1, 2 and 4 ranges). No deadlock is possible: the stage tasks write only
their own scratch rows; the merge tasks write disjoint rows (whatever two documents share is the
coordinator's), while the coordinator waits; everything shared (skills, e-mails, rejects, deletes) is written
by the one coordinator session, which holds the sync lock. On an unchanged re-sync nobody merges anything but
the rejected documents (they have no hash, so they are looked at again every run).

Incremental runs and ``--follow`` stay single-process: they apply changes in
the order they happened (a change stream is one ordered log; an incremental
scan is small), and there is nothing to split.
"""
import contextlib
import json
import logging
import math
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import psycopg
from bson.raw_bson import RawBSONDocument

from gigsterpg import faults
from gigsterpg.config import mask_url
from gigsterpg.connections import is_transient, short_reason
from gigsterpg.exc import ConfigError, ConnectError, GigsterPgError, TerminalError
from gigsterpg.lib.pg.db.states import FAILED, FULL, INTERRUPTED, SUCCEEDED
from gigsterpg.lib.pg.sync import registry
from gigsterpg.lib.pg.sync.engine import fingerprint, firstload, parallel, runner
from gigsterpg.lib.pg.sync.engine.bulk import BatchLoader, CollectionCounts, Prepared, rollback
from gigsterpg.lib.pg.sync.engine.plan import RAW, plan
from gigsterpg.lib.pg.sync.engine.reader import ReadAhead
from gigsterpg.lib.pg.sync.engine.task import (SCRATCH_PREFIX, BatchTask, MergeTask, RangeTask, attempts_table,
                                               create_scratch, load_batch, merge_range, merges_table, restore,
                                               scratch_table, stage_range)

logger = logging.getLogger(__name__)

# Ranges per worker: a straggler or a retried task then costs a fraction of a worker's share.
RANGES_PER_WORKER = 4
# Dask runs a failed task again this many times (a worker that dies is counted by Dask apart); as many as
# the local load workers load again a batch whose process died.
TASK_RETRIES = parallel.TASK_RETRIES
SCHEDULER_TIMEOUT_S = 10
# Dask keeps the last messages of each connection, for debugging (``distributed.admin.low-level-log-length``,
# 1000 by default): every message under 1 MB, so a first load's raw batch under 1 MB (5000 users) in the
# client's log of what it sent and again in the in-process scheduler's log of each worker's connection, up to
# 1000 of them: the coordinator's memory grew with the collection (BENCHMARKS.md). None kept: flat.
DASK_LOG_LENGTH = 0


@dataclass
class TaskStats:
    """What the cluster did: tasks planned, completed, attempts beyond one per task, failed."""

    workers: int = 0
    tasks: int = 0
    ran: int = 0
    attempts: int = 0
    retried: int = 0
    failed: int = 0
    coordinator_retries: int = 0  # reconnections of the coordinator after a transient error
    merges: int = 0  # merge tasks of a re-sync (``task.merge_range``), one per range with uncontested changes
    merge_retried: int = 0  # attempts at merge tasks beyond one each
    contested: Dict[str, int] = field(default_factory=dict)  # documents the coordinator replayed, per collection
    split_s: Dict[str, float] = field(default_factory=dict)  # seconds of the marking and the merge tasks
    ranges: Dict[str, int] = field(default_factory=dict)
    planned: Dict[str, int] = field(default_factory=dict)  # each collection's count when it was planned
    read: Dict[str, int] = field(default_factory=dict)  # documents the tasks read, per collection
    dashboard: Optional[str] = None

    def as_dict(self) -> dict:
        return {"workers": self.workers, "tasks": self.tasks, "ran": self.ran, "attempts": self.attempts,
                "retried": self.retried, "failed": self.failed, "coordinator_retries": self.coordinator_retries,
                "ranges": self.ranges, "planned": self.planned, "read": self.read, "merges": self.merges,
                "merge_retried": self.merge_retried, "contested": self.contested, "split_s": self.split_s}


@contextlib.contextmanager
def open_cluster(workers: Optional[int] = None, scheduler: Optional[str] = None, dashboard: Optional[str] = ":8787"):
    """A Dask client: of the cluster at ``scheduler``, else of a local cluster of ``workers`` processes.

    Raises:
        ConfigError: Dask is not installed.
        ConnectError: the scheduler does not answer.
    """
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("the distributed sync needs Dask", "dask.distributed is not installed",
                          "pip install 'gigsterpg[dask]'") from None
    # For the cluster's whole life: the logs are made with each connection (a worker restarted after it died).
    with dask.config.set({"distributed.admin.low-level-log-length": DASK_LOG_LENGTH}):
        if scheduler:
            try:
                client = Client(scheduler, timeout=SCHEDULER_TIMEOUT_S)
            except (OSError, TimeoutError) as err:
                raise ConnectError(f"cannot reach the Dask scheduler at {mask_url(scheduler)}", short_reason(err)
                                   or type(err).__name__, "start it (dask scheduler) or fix --scheduler"
                                   " / GIGSTERPG_DASK_SCHEDULER", url=mask_url(scheduler)) from None
            with client:
                yield client
            return
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=dashboard)
        with cluster, Client(cluster) as client:
            yield client


def run_distributed(engine, mongo_db, client, pg_url: str, mongo_url: str, collections=registry.COLLECTIONS,
                    batch_size: int = 5000, progress: Optional[runner.Progress] = None, skip_unchanged: bool = True,
                    wait_s: Optional[float] = None, ranges: Optional[int] = None,
                    retries: int = TASK_RETRIES, retry: runner.RetryPolicy = runner.RetryPolicy(),
                    first_load: bool = True) -> runner.RunReport:
    """A full sync of ``collections`` with the reading and mapping done by ``client``'s workers.

    The result equals ``runner.run_sync``'s on the same data (see the module's docstring).
    The report's ``tasks`` (a ``TaskStats``) says what the cluster did; it is recorded in the
    run's counts under ``"tasks"``.

    Args:
        client: a ``distributed.Client`` (``open_cluster``).
        pg_url, mongo_url: the URLs the workers connect to (a libpq URL for PostgreSQL).
        ranges: ranges per collection (default: ``RANGES_PER_WORKER`` per worker).
        retries: how often Dask runs a failed task again.
        retry: how often the coordinator reconnects after a transient error (a lost connection) and
            replays the collection it was merging from its start (what was committed is skipped by hash).
        first_load: into empty tables, a first load whose batches are the cluster's tasks
            (``_first_load``); False stages ranges and merges, as into full tables.
    """
    faults.check()
    progress = progress or runner.Progress()
    ordered = list(registry.ordered(collections))
    stats = TaskStats(dashboard=getattr(client, "dashboard_link", None))
    # The runner's state of a run (connection, lock, reconnection, counts carried across retries).
    run = runner._Run(engine, mongo_db, batch_size, None, progress, skip_unchanged)
    run.connect()
    report, futures = None, {}
    try:
        report = run.report = runner.RunReport(runner.begin_run(run.connection, ordered, wait_s, mode=FULL),
                                               mode=FULL)
        report.tasks = stats
        _drop_scratch(run.connection)
        with run.connection.cursor() as cursor:
            first = first_load and firstload.applies(cursor, ordered, False)
            create_scratch(cursor, report.run_id, () if first else ordered)  # a first load: the attempts only
        run.connection.commit()
        stats.workers = max(1, len(client.scheduler_info().get("workers", {})))
        if first:
            _first_load(run, client, pg_url, ordered, stats, retries)
            report.status = SUCCEEDED
            _end(engine, run.connection, run.raw, report, stats, None)
            run.close()
            return report
        # Each collection's watermark: the server's clock before anything of it is read.
        marks = {name: runner.server_time(mongo_db) for name in ordered}
        futures = _submit(client, report.run_id, mongo_db, ordered, stats, pg_url, mongo_url, batch_size,
                          skip_unchanged, ranges or stats.workers * RANGES_PER_WORKER, retries)
        merges = sum(math.ceil(stats.planned[name] / batch_size) for name in ordered)
        progress.start("tasks", stats.tasks + merges)
        try:
            for name in ordered:
                stats.read[name] = _gather(futures[name], progress, stats)
                if stats.read[name] != stats.planned[name]:  # the ranges cover every id: only a change can do it
                    logger.warning("%s: the tasks read %d documents, the collection held %d when planned (it"
                                   " changed during the run)", name, stats.read[name], stats.planned[name])
                split = _split(run, client, name, stats, pg_url, retries)
                report.collections[name] = _merge_retrying(run, name, marks[name], stats, retry, split)
        finally:
            progress.close()
    except BaseException as err:
        for pending in futures.values():
            client.cancel(pending)
        if report is not None:
            report.status = INTERRUPTED if isinstance(err, KeyboardInterrupt) else FAILED
            _end(engine, run.connection, run.raw, report, stats, mask_url(str(err)) or type(err).__name__)
        run.close()
        raise
    report.status = SUCCEEDED
    _end(engine, run.connection, run.raw, report, stats, None)
    run.close()
    return report


def _first_load(run, client, pg_url: str, ordered: list, stats: TaskStats, retries: int) -> None:
    """A first load (``firstload.load_parallel``) whose batches are tasks of the cluster (``DaskBatches``).

    The coordinator reads each collection through one cursor, as the local first load does, and submits
    each raw batch as a task that runs the local load workers' own code (``task.load_batch``); the same
    set-wise transaction then puts the rows into the tables: the same tables as any local first load.
    """
    token = uuid.uuid4().hex[:8]
    pending = list(ordered)
    batches = []

    def pool(count: int, _url: str) -> "DaskBatches":
        batches.append(DaskBatches(client, pg_url, count, retries, token))
        return batches[0]

    try:
        firstload.load_parallel(run, pending, False, stats.workers, pool=pool)
    finally:
        for made in batches:
            stats.tasks, stats.failed = made.submitted, made.failed
            stats.read.update(made.documents)
            stats.planned.update(made.documents)
            stats.ranges.update(made.batches)


class DaskBatches:
    """``parallel.Workers``' interface over a Dask cluster: each raw batch one task (``task.load_batch``).

    At most ``QUEUED_PER_WORKER`` batches per worker wait beyond those running (raw bytes held by the
    coordinator until their task ends): memory stays bounded. Dask runs a task again when its worker dies
    (``retries`` more times when it fails); ``task.load_batch`` makes that idempotent.
    """

    def __init__(self, client, pg_url: str, count: int, retries: int, token: str):
        self.client, self.pg_url, self.count, self.retries, self.token = client, pg_url, count, retries, token
        self.stats: List[tuple] = []
        self.submitted = self.failed = 0
        self.documents: Dict[str, int] = {}
        self.batches: Dict[str, int] = {}
        self.results: "queue.Queue" = queue.Queue()
        self.room = threading.Semaphore(count * (parallel.QUEUED_PER_WORKER + 1))
        self.pending: set = set()
        self.lock = threading.Lock()
        self.closed = False

    def put(self, task) -> None:
        """Submit a batch, waiting for room (raises once the pool is closed)."""
        model, run_id, base, payload = task
        while not self.room.acquire(timeout=parallel._POLL_S):
            if self.closed:
                raise TerminalError("the load was stopped", "the run ended", "see the run's error")
        batch = BatchTask(run_id, model, base, payload, self.pg_url, self.token)
        future = self.client.submit(load_batch, batch, key=batch.key, retries=self.retries, pure=False)
        with self.lock:
            self.pending.add(future)
            self.submitted += 1
            self.batches[model.collection] = self.batches.get(model.collection, 0) + 1
        future.add_done_callback(lambda done: self._done(done, model.collection, base))

    def _done(self, future, collection: str, base: int) -> None:
        """A task ended (on Dask's callback thread): its answer to ``results``, its room back."""
        try:
            answer = (collection, base, future.result(), None)
        except BaseException as err:  # noqa: every error of a task goes to the coordinator
            answer = (None, future.key, 0, err)
        with self.lock:
            self.pending.discard(future)
        self.results.put(answer)
        self.room.release()

    def get(self, check=None):
        """The next loaded batch: (collection, base, documents); raises a task's error, or ``check()``'s."""
        while True:
            try:
                collection, base, documents, error = self.results.get(timeout=parallel._POLL_S)
            except queue.Empty:
                if check is not None:
                    check()
                continue
            if error is not None:
                self.failed += 1
                if isinstance(error, GigsterPgError):
                    raise error
                raise TerminalError(f"sync task {base} failed", short_reason(error) or type(error).__name__,
                                    "see the Dask workers' logs, then run the sync again") from error
            self.documents[collection] = self.documents.get(collection, 0) + documents
            return collection, base, documents

    def check(self) -> None:
        """Nothing to check here: Dask reschedules a dead worker's tasks, and a failed task answers."""

    def close(self, timeout: float = 5.0) -> None:
        """Cancel what has not run; ``stats`` then holds (CPU seconds, peak RSS MB) of each worker process
        (its whole life: a cluster's workers outlive runs)."""
        self.closed = True
        with self.lock:
            pending = list(self.pending)
        if pending:
            with contextlib.suppress(Exception):
                self.client.cancel(pending)
        with contextlib.suppress(Exception):
            self.stats = list(self.client.run(_usage, wait=True).values())


def _usage() -> tuple:
    """(CPU seconds, peak RSS MB) of this process (run on each Dask worker)."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def _submit(client, run_id, mongo_db, ordered, stats, pg_url, mongo_url, batch_size, skip_unchanged, ranges,
            retries) -> Dict[str, list]:
    """Plan every collection and hand all its ranges to the cluster (gigs are read while users merge)."""
    futures, token = {}, uuid.uuid4().hex[:8]
    for name in ordered:
        collection = mongo_db[name]
        stats.planned[name] = collection.count_documents({})
        parts = plan(collection, ranges)
        stats.ranges[name] = len(parts)
        logger.info("%s: %d documents in %d ranges: %s", name, stats.planned[name], len(parts),
                    ", ".join(part.describe() for part in parts))
        tasks = [RangeTask(run_id, name, part, pg_url, mongo_url, mongo_db.name, batch_size, skip_unchanged, token)
                 for part in parts]
        futures[name] = [client.submit(stage_range, task, key=task.key, retries=retries, pure=False)
                         for task in tasks]
        stats.tasks += len(tasks)
    return futures


def _answers(futures: list, stats: TaskStats):
    """Each task's answer as it ends; a failed task (counted in ``stats``) raises its error, one readable line."""
    from distributed import as_completed

    for future in as_completed(futures):
        try:
            answer = future.result()
        except Exception as err:
            stats.failed += 1
            if isinstance(err, GigsterPgError):
                raise
            raise TerminalError(f"sync task {future.key} failed", short_reason(err) or type(err).__name__,
                                "see the Dask workers' logs, then run the sync again") from err
        yield answer


def _gather(futures: list, progress, stats: TaskStats) -> int:
    """Wait for a collection's tasks, advancing the bar as each ends; the documents they read."""
    documents = 0
    for answer in _answers(futures, stats):
        documents += answer["documents"]
        progress.advance(1)
    _release(futures)
    return documents


def _release(futures: list) -> None:
    """Let Dask forget finished tasks: it runs a task again when the worker holding its result dies while
    a future of it is held, and a range staged again once merging began would rewrite its scratch rows."""
    for future in futures:
        future.release()
    futures.clear()


class _FetchedLater(RawBSONDocument):
    """A document a task did not ship (unchanged when it read it): fetched by its ``_id`` if ever needed.

    Needed only to record it as a reject (its id's text form is another document's too).
    """

    def __init__(self, id_bson: bytes, collection):  # noqa: super().__init__ is called once fetched
        self._id_bson, self._collection, self._fetched = id_bson, collection, None

    @property
    def raw(self) -> bytes:
        if self._fetched is None:
            wanted = RawBSONDocument(self._id_bson)
            found = self._collection.with_options(codec_options=RAW).find_one(
                {"_id": wanted["_id"]}) if "_id" in wanted else None
            self._fetched = bytes(found.raw) if found is not None else self._id_bson
        return self._fetched


def _prepared(rows, collection) -> List[Prepared]:
    """Scratch rows (in record-id order) as the batch ``BatchLoader.load`` takes."""
    return [Prepared(RawBSONDocument(bytes(raw)) if raw is not None else _FetchedLater(bytes(idb), collection),
                     doc_id, bytes(digest), seq, restore(mapped),
                     fingerprint.order_key(RawBSONDocument(bytes(raw if raw is not None else idb))))
            for seq, (doc_id, digest, raw, idb, mapped) in enumerate(rows)]


class _Quiet(runner.Progress):
    """The collection's own bar stays off: the run has one bar, of tasks and merged batches."""


@dataclass
class _Split:
    """What the merge tasks of one collection did (their loaders' counts, summed), and what is left to replay."""

    counts: CollectionCounts
    contested: int  # documents the coordinator replays in scan order


def mark_contested(cursor, run_id: int, name: str) -> None:
    """Mark the staged documents whose merge may depend on another document's, set-wise (the rule does not
    depend on the scan order, nor on how the ids were split into ranges).

    Contested, so replayed by the coordinator in scan order and in the single process's batches: a new
    document (its insert draws the row's id: in scan order, as the single process draws them); a rejected one
    (its row goes); one whose id's text form another document has (read in this run, stored, or rejected);
    one that adds a shared row (a skill not known yet: the batch that holds it first spells it); and every
    document of a unique value (an e-mail) that two documents claim, as stored or as read, the stored holder
    included (which of them keeps it, and which order the single process meets them in, is the replay's).
    What is left touches only its own rows: any session may merge it, in any order.
    """
    model, table = registry.model(name), scratch_table(run_id, name)
    cursor.execute(f"ANALYZE {table}")
    mark = f"UPDATE {table} s SET contested = true"
    cursor.execute(f"{mark} WHERE NOT s.contested AND NOT EXISTS (SELECT 1 FROM {model.table} t"
                   " WHERE t._id = s.doc_id)")
    cursor.execute(f"{mark} FROM (SELECT doc_id FROM {table} GROUP BY doc_id HAVING count(*) > 1) d"
                   " WHERE s.doc_id = d.doc_id AND NOT s.contested")
    cursor.execute(f"{mark} FROM sync_hashes h WHERE h.collection = %s AND h._id = s.doc_id"
                   " AND h.id_key IS DISTINCT FROM s.id_key AND NOT s.contested", (name,))
    cursor.execute(f"{mark} FROM (SELECT DISTINCT split_part(doc_id, ' (duplicate ', 1) AS doc_id FROM sync_rejects"
                   " WHERE collection = %s AND resolved_at IS NULL) r WHERE s.doc_id = r.doc_id AND NOT s.contested",
                   (name,))
    if model.unknown_adds:
        cursor.execute(f"{mark} WHERE NOT s.contested AND s.adds <> '{{}}' AND EXISTS (SELECT 1 FROM unnest(s.adds)"
                       f" AS a(key) WHERE {model.unknown_adds})")
    if model.unique:
        stored = " UNION ".join(
            f"SELECT t._id, '{column}:' || t.{column} FROM {model.table} t WHERE t.{column} IN"
            f" (SELECT substr(claim, {len(column) + 2}) FROM new WHERE starts_with(claim, '{column}:'))"
            for column in model.unique)
        cursor.execute(
            f"WITH new AS (SELECT s.doc_id, c.claim FROM {table} s, unnest(s.claims) AS c(claim)),"
            f" owners AS (SELECT doc_id, claim FROM new UNION {stored}),"
            " shared AS (SELECT claim FROM owners GROUP BY claim HAVING count(*) > 1)"
            f" {mark} FROM (SELECT DISTINCT o.doc_id FROM owners o JOIN shared USING (claim)) x"
            " WHERE s.doc_id = x.doc_id AND NOT s.contested")


def _split(run, client, name: str, stats: TaskStats, pg_url: str, retries: int) -> _Split:
    """A re-sync's merge split by range: mark what is contested, then merge the rest of each range in its own
    task (``task.merge_range``), in parallel sessions; what they did."""
    run_id, table = run.report.run_id, scratch_table(run.report.run_id, name)
    started = time.monotonic()
    with run.connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        staged = cursor.fetchone()[0]
        if staged != stats.read[name]:
            raise TerminalError(f"the merge of {name} found {staged} of the {stats.read[name]} documents its tasks"
                                " staged", "PostgreSQL lost the run's scratch tables (UNLOGGED: a crash empties"
                                " them)", "run the sync again")
        mark_contested(cursor, run_id, name)
        cursor.execute(f"SELECT count(*) FILTER (WHERE contested), count(*) FILTER (WHERE NOT contested AND raw IS"
                       " NULL), array_agg(DISTINCT task) FILTER (WHERE NOT contested AND raw IS NOT NULL)"
                       f" FROM {table}")
        contested, skipped, parts = cursor.fetchone()
        if parts:  # each merge task reads its range's rows in record-id order
            cursor.execute(f"CREATE INDEX ON {table} (task, rec)")
    run.connection.commit()
    stats.contested[name] = contested
    token = uuid.uuid4().hex[:8]
    tasks = [MergeTask(run_id, name, index, pg_url, run.batch_size, run.skip_unchanged, token)
             for index in sorted(parts or ())]
    # Before the ranges of the next collection still waiting for a worker: this merge is what the run waits for.
    futures = [client.submit(merge_range, task, key=task.key, retries=retries, pure=False, priority=10)
               for task in tasks]
    stats.merges += len(tasks)
    # Unchanged when staged, and nobody else's business: seen, nothing to write.
    counts = CollectionCounts(seen=skipped)
    try:
        for answer in _answers(futures, stats):
            counts.seen += answer["seen"]
            counts.inserted += answer["inserted"]
            counts.updated += answer["updated"]
            counts.rejected.update(answer["rejected"])
            counts.extra.update(answer["extra"])
    except BaseException:
        client.cancel(futures)
        raise
    _release(futures)
    stats.split_s[name] = round(time.monotonic() - started, 3)
    logger.info("%s: %d documents merged by %d tasks, %d left to the coordinator (contested)", name,
                counts.seen, len(tasks), contested)
    return _Split(counts, contested)


def _shift(counts: CollectionCounts, other: CollectionCounts, sign: int) -> None:
    """Add (``sign`` 1) or take away (-1) ``other``'s counts."""
    counts.seen += sign * other.seen
    counts.inserted += sign * other.inserted
    counts.updated += sign * other.updated
    for key, value in other.rejected.items():
        counts.rejected[key] += sign * value
    for key, value in other.extra.items():
        counts.extra[key] += sign * value


def _merge_retrying(run, name: str, mark, stats: TaskStats, retry: runner.RetryPolicy, split: _Split):
    """``_merge``, again from the collection's start after a transient error, as the single-process run does
    (the merge tasks' part is committed: it is not done again)."""
    while True:
        loader = None
        try:
            loader = BatchLoader(run.connection, registry.model(name), run.report.run_id, run.skip_unchanged,
                                 source=run.mongo_db[name])
            report = _merge(run, loader, name, mark, split)
        except BaseException as err:
            if loader is not None:
                _shift(loader.counts, split.counts, -1)
                run._carry(loader.counts, name)
            if not is_transient(err) or stats.coordinator_retries >= retry.attempts:
                raise
            stats.coordinator_retries += 1
            delay = retry.delay(stats.coordinator_retries)
            logger.warning("sync run %d: %s; retry %d of %d in %.1f s, from the start of %s's merge",
                           run.report.run_id, short_reason(err), stats.coordinator_retries, retry.attempts,
                           delay, name)
            time.sleep(delay)
            run.reconnect()
            continue
        run._carry(report.counts, name)
        report.counts = run.carried.pop(name)
        return report


def _merge(run, loader, name, mark, split: _Split):
    """Replay a collection's contested documents in scan order, each in the batch the single process would
    have read it in, through the single-process loader, after the merge tasks' part; its report."""
    run_id, batch_size, mongo_db = run.report.run_id, run.batch_size, run.mongo_db
    table = scratch_table(run_id, name)
    with run.connection.cursor() as cursor:
        # What the merge tasks merged, and what nobody needed to: seen (the deletes spare them).
        cursor.execute(f"INSERT INTO {loader.seen_table} (_id, id_key) SELECT doc_id, id_key FROM {table}"
                       " WHERE NOT contested")
    run.connection.commit()
    _shift(loader.counts, split.counts, 1)
    reader = run.engine.raw_connection()  # its own: the loader commits each batch, a named cursor lives in one
    try:
        with reader.driver_connection.cursor(name=f"gigsterpg_replay_{name}") as cursor:
            cursor.itersize = batch_size
            cursor.execute(f"SELECT s.doc_id, s.digest, s.raw, s.idb, s.mapped, b.batch FROM (SELECT rec, contested,"
                           f" (row_number() OVER (ORDER BY rec) - 1) / %s AS batch FROM {table}) b"
                           f" JOIN {table} s ON s.rec = b.rec WHERE b.contested ORDER BY b.rec", (batch_size,),
                           binary=True)  # bytea as it is, not hex text to parse
            # Fetched and prepared on ReadAhead's threads, a batch ahead of the loader (one "row" a batch).
            with ReadAhead(_grouped(cursor), 1, lambda groups: _prepared(groups[0], mongo_db[name])) as pipeline:
                report = runner._sync_collection(run.connection, mongo_db, loader, runner.Scan({}, FULL, mark),
                                                 _advancing(pipeline, run.progress, name, split.contested), None,
                                                 None, _Quiet())
        reader.driver_connection.rollback()
    finally:
        _close(reader)
    return report


def _grouped(cursor):
    """The replayed rows in the single process's batches (the rows of one batch number, together)."""
    batch, current = [], None
    for *row, number in cursor:
        if batch and number != current:
            yield batch
            batch = []
        current = number
        batch.append(row)
    if batch:
        yield batch


def _advancing(pipeline, progress, name: str, expected: int):
    """The batches of ``pipeline``, one step of the run's bar each; an error instead of the end of the
    collection if fewer documents came than the tasks wrote (the deletes would delete the rest)."""
    replayed = 0
    for batch in pipeline:
        yield batch
        replayed += len(batch)
        progress.advance(1)
    if replayed != expected:
        raise TerminalError(f"the merge of {name} found {replayed} of the {expected} documents its tasks staged",
                            "PostgreSQL lost the run's scratch tables (UNLOGGED: a crash empties them)",
                            "run the sync again")


def _drop_scratch(connection) -> None:
    """Drop the scratch tables of runs that died (the caller holds the sync lock: no live run has any)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE %s",
                       (SCRATCH_PREFIX.replace("_", r"\_") + "%",))
        for (table,) in cursor.fetchall():
            cursor.execute(f'DROP TABLE IF EXISTS "{table}"')
    connection.commit()


def _end(engine, connection, raw, report, stats: TaskStats, error: Optional[str]) -> None:
    """Count the attempts, drop the scratch tables, record the run's end (releasing the lock), add the tasks."""
    rollback(connection)
    with contextlib.suppress(psycopg.Error):
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*), count(DISTINCT (collection, task)),"
                           f" count(DISTINCT (collection, task)) FILTER (WHERE documents IS NOT NULL)"
                           f" FROM {attempts_table(report.run_id)}")
            stats.attempts, attempted, stats.ran = cursor.fetchone()
            stats.retried = stats.attempts - attempted
            cursor.execute(f"SELECT coalesce(sum(attempts) - count(*), 0) FROM {merges_table(report.run_id)}")
            stats.merge_retried = cursor.fetchone()[0]
        connection.commit()
    rollback(connection)
    with contextlib.suppress(psycopg.Error):
        _drop_scratch(connection)
    runner.end_run(connection, report, error, engine, raw)
    with contextlib.suppress(Exception), engine.begin() as fresh:
        fresh.exec_driver_sql("UPDATE sync_runs SET counts = counts || jsonb_build_object('tasks', %(tasks)s::jsonb)"
                              " WHERE id = %(id)s", {"tasks": json.dumps(stats.as_dict()), "id": report.run_id})
    logger.info("sync run %d on %d workers: %s", report.run_id, stats.workers, stats.as_dict())


def _close(raw) -> None:
    with contextlib.suppress(Exception):
        raw.close()
