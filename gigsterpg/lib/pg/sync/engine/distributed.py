"""A full sync on a Dask cluster: workers read, hash and map ``_id`` ranges; one session merges them in scan order.

The single-process sync's result depends on the order it sees documents in,
which is the order of a plain scan (natural order, the record ids), and on its
batches: of two users with one e-mail, or two documents whose ids share a text
form (1 and "1"), the later-seen one is rejected, with a detail that says
whether the holder was in the same batch; a new skill is named as the first
batch holding it spells it; ``users.id`` follows the order of the inserts. To
be equal, not merely similar, the distributed run decides in that same order:

1. plan (``plan``): each collection in ``_id`` ranges from sampled split points;
   one Dask task per range (``task.stage_range``, retried by Dask);
2. the tasks, in parallel, read their range with each document's record id,
   hash it, map it if it is new or changed, and stage the result in the run's
   UNLOGGED scratch table of that collection (idempotently, per task);
3. once every range of a collection is staged, the coordinator replays the
   scratch table in record-id order, in batches of the same size, through the
   same ``BatchLoader`` the single-process sync uses (mapping already done),
   then deletes what was not seen, links, and accounts, exactly as it does:
   users' merge finishes before gigs' begins (gigs' tasks run meanwhile).

No deadlock is possible: the tasks write only their own rows of the scratch
tables (keyed by record id, one lock per task), and read ``sync_hashes``;
every shared table (skills, users' unique e-mails, user_skills, gigs,
rejects, hashes) is written by the one coordinator session, which holds the
sync lock. The price is that PostgreSQL's merge is not spread: it is the
ceiling of the distributed run (BENCHMARKS.md models it).

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
from gigsterpg.lib.pg.sync.engine.bulk import BatchLoader, Prepared, rollback
from gigsterpg.lib.pg.sync.engine.plan import RAW, plan
from gigsterpg.lib.pg.sync.engine.reader import ReadAhead
from gigsterpg.lib.pg.sync.engine.task import (SCRATCH_PREFIX, BatchTask, RangeTask, attempts_table, create_scratch,
                                               load_batch, restore, scratch_table, stage_range)

logger = logging.getLogger(__name__)

# Ranges per worker: a straggler or a retried task then costs a fraction of a worker's share.
RANGES_PER_WORKER = 4
# Dask runs a failed task again this many times (a worker that dies is counted by Dask apart); as many as
# the local load workers load again a batch whose process died.
TASK_RETRIES = parallel.TASK_RETRIES
SCHEDULER_TIMEOUT_S = 10


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
    ranges: Dict[str, int] = field(default_factory=dict)
    planned: Dict[str, int] = field(default_factory=dict)  # each collection's count when it was planned
    read: Dict[str, int] = field(default_factory=dict)  # documents the tasks read, per collection
    dashboard: Optional[str] = None

    def as_dict(self) -> dict:
        return {"workers": self.workers, "tasks": self.tasks, "ran": self.ran, "attempts": self.attempts,
                "retried": self.retried, "failed": self.failed, "coordinator_retries": self.coordinator_retries,
                "ranges": self.ranges, "planned": self.planned, "read": self.read}


@contextlib.contextmanager
def open_cluster(workers: Optional[int] = None, scheduler: Optional[str] = None, dashboard: Optional[str] = ":8787"):
    """A Dask client: of the cluster at ``scheduler``, else of a local cluster of ``workers`` processes.

    Raises:
        ConfigError: Dask is not installed.
        ConnectError: the scheduler does not answer.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("the distributed sync needs Dask", "dask.distributed is not installed",
                          "pip install 'gigsterpg[dask]'") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout=SCHEDULER_TIMEOUT_S)
        except (OSError, TimeoutError) as err:
            raise ConnectError(f"cannot reach the Dask scheduler at {mask_url(scheduler)}", short_reason(err) or
                               type(err).__name__, "start it (dask scheduler) or fix --scheduler"
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
                report.collections[name] = _merge_retrying(run, name, marks[name], stats, retry)
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


def _gather(futures: list, progress, stats: TaskStats) -> int:
    """Wait for a collection's tasks, advancing the bar as each ends; the documents they read."""
    from distributed import as_completed

    documents = 0
    for future in as_completed(futures):
        try:
            documents += future.result()["documents"]
        except Exception as err:
            stats.failed += 1
            if isinstance(err, GigsterPgError):
                raise
            raise TerminalError(f"sync task {future.key} failed", short_reason(err) or type(err).__name__,
                                "see the Dask workers' logs, then run the sync again") from err
        progress.advance(1)
    return documents


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


def _merge_retrying(run, name: str, mark, stats: TaskStats, retry: runner.RetryPolicy):
    """``_merge``, again from the collection's start after a transient error, as the single-process run does."""
    while True:
        loader = None
        try:
            loader = BatchLoader(run.connection, registry.model(name), run.report.run_id, run.skip_unchanged,
                                 source=run.mongo_db[name])
            report = _merge(run, loader, name, mark, stats.read[name])
        except BaseException as err:
            if loader is not None:
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


def _merge(run, loader, name, mark, expected: int):
    """Replay a collection's scratch table in scan order through the single-process loader; its report."""
    run_id, batch_size, mongo_db = run.report.run_id, run.batch_size, run.mongo_db
    reader = run.engine.raw_connection()  # its own: the loader commits each batch, a named cursor lives in one
    try:
        with reader.driver_connection.cursor(name=f"gigsterpg_replay_{name}") as cursor:
            cursor.itersize = batch_size
            cursor.execute(f"SELECT doc_id, digest, raw, idb, mapped FROM {scratch_table(run_id, name)} ORDER BY rec",
                           binary=True)  # bytea as it is, not hex text to parse
            with ReadAhead(cursor, batch_size, lambda rows: _prepared(rows, mongo_db[name])) as pipeline:
                report = runner._sync_collection(run.connection, mongo_db, loader, runner.Scan({}, FULL, mark),
                                                 _advancing(pipeline, run.progress, name, expected), None, None,
                                                 _Quiet())
        reader.driver_connection.rollback()
    finally:
        _close(reader)
    return report


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
