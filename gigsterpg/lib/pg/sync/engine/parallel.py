"""Worker processes for the first load: decode, map and encode rows for COPY off the coordinator's GIL.

The coordinator reads each collection through ONE cursor, as raw BSON batches
(``find_raw_batches``: the bytes as the server sent them, never split into
Python objects), and numbers the documents in the order of that scan
(``pos``, the same whatever the number of workers). Each batch goes to
whichever of N worker processes is free; the worker, through its own
PostgreSQL session, decodes, hashes and maps the batch's documents and COPYs
the result into the run's UNLOGGED load tables (``load_tables``):

- one row per document: its ``pos``, hash, raw bytes, text id, and either its
  mapped columns or why the mapping rejected it;
- the model's child rows (a user's skills), keyed by the same ``pos``.

A worker decides nothing that depends on another document: the duplicate ids,
the duplicate e-mails, the spelling of a new skill, the ids and every key are
decided once all of a collection is in, set-wise, by the coordinator
(``firstload``), in its one transaction. A value PostgreSQL refuses already
in the load table (a number out of range) is found by splitting the batch, as
the merge path does, and loaded as a reject.

At most two batches per worker wait in the queue (raw bytes), so memory is
bounded whatever the size of the collection. A worker whose coordinator dies
(killed) notices within ``_POLL_S`` and ends; its load tables are dropped by
the next run.
"""
import contextlib
import logging
import multiprocessing
import os
import queue
import resource
import struct
import threading
import time
from typing import Dict, List, Sequence, Tuple

import psycopg
from bson.raw_bson import RawBSONDocument
from psycopg.adapt import Dumper
from psycopg.pq import Format
from sqlalchemy.dialects.postgresql import JSON, JSONB

from gigsterpg import faults
from gigsterpg.connections import is_transient, short_reason
from gigsterpg.exc import RejectedDocument, TerminalError, TransientError
from gigsterpg.lib.pg.sync import registry
from gigsterpg.lib.pg.sync.engine import fingerprint
from gigsterpg.lib.pg.sync.engine.bulk import document_json, map_document
from gigsterpg.lib.pg.sync.engine.staging import copy_rows

logger = logging.getLogger(__name__)

# The load tables live in a schema of their own: nothing of a killed run shows among the synced tables, and
# the run that follows drops the whole schema (it holds the sync lock: no live run has any).
LOAD_SCHEMA = "gigsterpg_load"
# The columns of a collection's load table before the model's own (``model.columns``, ``_id`` first).
# ``id_key``: the id's place in MongoDB's order of ids (``document.id_order_key``), which decides what two
# documents share (an e-mail, an id's text form).
LOAD_COLUMNS = (("pos", "int8"), ("hash", "bytea"), ("id_key", "bytea"), ("reason", "text"), ("detail", "text"),
                ("document", "text"))
# The documents' bytes, apart: read only for the few rejects decided after the parallel part, so the
# statements that move the rows into the tables scan narrow rows.
RAW_COLUMNS = (("pos", "int8"), ("raw", "bytea"))
# Raw batches waiting per worker.
QUEUED_PER_WORKER = 2
_POLL_S = 0.5
_LENGTH = struct.Struct("<i")


def default_workers() -> int:
    """Worker processes when none are asked for: one per core (BENCHMARKS.md, "Parallel writes")."""
    return max(1, os.cpu_count() or 1)


def load_table(run_id: int, name: str) -> str:
    """The run's load table of a collection, or of a child table a model declares (``user_skills``)."""
    return f"{LOAD_SCHEMA}.run{run_id}_{name}"


def raw_table(run_id: int, collection: str) -> str:
    """The run's table of a collection's raw documents (``pos``, bytes)."""
    return load_table(run_id, collection + "_raw")


def load_tables(run_id: int, model) -> Dict[str, Tuple[Tuple[str, str], ...]]:
    """A collection's load tables and their columns: its rows first, then each child table the model declares.

    A column the table stores as JSON is ``jsonb`` here already: the workers' sessions parse it, in
    parallel, not the one transaction that moves the rows into the table.
    """
    table = model.mapped.__table__
    columns = tuple((name, "jsonb" if isinstance(table.c[name].type, (JSON, JSONB)) else kind)
                    for name, kind in model.columns)
    tables = {load_table(run_id, model.collection): LOAD_COLUMNS + columns,
              raw_table(run_id, model.collection): RAW_COLUMNS}
    for name, columns in getattr(model, "load_children", {}).items():
        tables[load_table(run_id, name)] = (("pos", "int8"),) + tuple(columns)
    return tables


def create_load_tables(cursor, run_id: int, collections: Sequence[str]) -> None:
    """The run's load tables, in a new ``LOAD_SCHEMA`` (UNLOGGED: a crash empties them; the run that follows
    drops them)."""
    drop_load_tables(cursor)
    cursor.execute(f"CREATE SCHEMA {LOAD_SCHEMA}")
    for name in collections:
        for table, columns in load_tables(run_id, registry.model(name)).items():
            cursor.execute(f"CREATE UNLOGGED TABLE {table} ({', '.join(f'{c} {t}' for c, t in columns)})")


def drop_load_tables(cursor) -> None:
    """Drop every load table, of this run or of one that died (the caller holds the sync lock)."""
    cursor.execute(f"DROP SCHEMA IF EXISTS {LOAD_SCHEMA} CASCADE")


def split_batch(payload: bytes) -> List[bytes]:
    """The documents of a raw batch (BSON documents one after the other)."""
    docs, at, end = [], 0, len(payload)
    while at < end:
        size = _LENGTH.unpack_from(payload, at)[0]
        docs.append(payload[at:at + size])
        at += size
    return docs


def count_documents(payload: bytes) -> int:
    """How many documents a raw batch holds (their lengths walked, nothing decoded)."""
    count, at, end = 0, 0, len(payload)
    while at < end:
        at += _LENGTH.unpack_from(payload, at)[0]
        count += 1
    return count


def load_rows(model, base: int, docs: Sequence[bytes]) -> Tuple[list, Dict[str, list]]:
    """The load-table rows of a batch whose first document is number ``base`` of the scan."""
    width = len(model.columns)
    empty = (None,) * (width - 1)
    rows, children = [], {}
    child_rows = getattr(model, "child_load_rows", None)
    for index, raw in enumerate(docs):
        pos = base + index
        doc = RawBSONDocument(raw)
        digest = fingerprint.digest(raw)
        key = fingerprint.order_key(doc)
        mapped = map_document(model, doc)
        if isinstance(mapped, RejectedDocument):
            rows.append((pos, digest, key, mapped.reason, mapped.detail, document_json(doc),
                         fingerprint.doc_id(doc)) + empty)
            continue
        rows.append((pos, digest, key, None, None, None) + tuple(mapped[:width]))
        if child_rows is not None:
            for table, values in child_rows(mapped).items():
                children.setdefault(table, []).extend((pos,) + value for value in values)
    return rows, children


def write_batch(connection, model, run_id: int, rows: list, docs: Sequence[bytes],
                children: Dict[str, list]) -> None:
    """COPY a batch's rows into the load tables in one transaction; a row PostgreSQL refuses is found by
    splitting the batch, and loaded as a reject instead."""
    tables = load_tables(run_id, model)
    own, raws = load_table(run_id, model.collection), raw_table(run_id, model.collection)
    with connection.cursor() as cursor:
        copy_rows(cursor, raws, RAW_COLUMNS, zip((row[0] for row in rows), docs))
        _copy_split(cursor, own, tables[own], rows, docs, model)
        for name, values in children.items():
            table = load_table(run_id, name)
            copy_rows(cursor, table, tables[table], values)
    connection.commit()


def _copy_split(cursor, table: str, columns, rows: list, docs: Sequence[bytes], model) -> None:
    cursor.execute("SAVEPOINT load_batch")
    try:
        copy_rows(cursor, table, columns, rows)
    except (psycopg.DataError, psycopg.IntegrityError) as err:
        cursor.execute("ROLLBACK TO SAVEPOINT load_batch")
        if len(rows) == 1:
            message = str(err).strip().splitlines()[0]
            pos, digest, key = rows[0][:3]
            doc = RawBSONDocument(docs[0])
            refused = (pos, digest, key, "refused by PostgreSQL", f"refused by PostgreSQL: {message}",
                       document_json(doc), fingerprint.doc_id(doc)) + (None,) * (len(model.columns) - 1)
            copy_rows(cursor, table, columns, [refused])
            return
        half = len(rows) // 2
        _copy_split(cursor, table, columns, rows[:half], docs[:half], model)
        _copy_split(cursor, table, columns, rows[half:], docs[half:], model)
        return
    cursor.execute("RELEASE SAVEPOINT load_batch")


def _alive(pid: int) -> bool:
    """Whether the process ``pid`` still runs (a worker's parent is the fork server, not the coordinator).

    A killed coordinator stays a zombie until its parent reaps it, and a parent that first waits for the
    coordinator's stdout to close would never reap it while a worker holds that open: a zombie is dead.
    """
    if os.path.isdir("/proc/self"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                return stat.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
        except FileNotFoundError:
            return False
        except (OSError, IndexError):
            pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch(parent: int) -> None:
    """End this worker at once when the coordinator is gone (killed), whatever the worker is waiting for.

    A coordinator killed while it wrote a batch leaves half a message in the queue, on which a worker's
    read would wait for ever; and a worker left running keeps the coordinator's stdout and stderr open
    (inherited), so whoever waits for those to close (a shell, a test) would wait for ever too.
    """
    while _alive(parent):
        time.sleep(_POLL_S)
    os._exit(0)


class _JsonText(str):
    """JSON already written as text (the mapping's ``extra``)."""


class _JsonTextDumper(Dumper):
    """Binary COPY of JSON text into a ``jsonb`` column as it is (psycopg's own dumper would encode the
    string as a JSON string)."""

    format = Format.BINARY
    oid = psycopg.adapters.types["jsonb"].oid

    def dump(self, obj) -> bytes:
        return b"\x01" + obj.encode()  # jsonb's binary format: version 1, then the text


def connect(pg_url: str):
    """A load worker's PostgreSQL session (a worker process's, or a Dask worker's: ``task.load_batch``)."""
    connection = psycopg.connect(pg_url, application_name="gigsterpg load worker")
    connection.adapters.register_dumper(_JsonText, _JsonTextDumper)  # and so for the jsonb oid
    return connection


def load_batch(connection, model, run_id: int, base: int, payload: bytes) -> int:
    """Decode, hash, map and COPY one raw batch (its first document number ``base`` of the scan) into the
    run's load tables, committed in one transaction (the connection's, which the caller may have begun);
    the documents it held. What every load worker runs: a worker process (``work``) and a Dask task
    (``task.load_batch``)."""
    docs = split_batch(payload)
    rows, children = load_rows(model, base, docs)
    write_batch(connection, model, run_id, rows, docs, children)
    return len(docs)


def work(pg_url: str, tasks, results, parent: int) -> None:
    """A worker process: load the batches of ``tasks`` until ``None``; report each to ``results``."""
    connection = None
    threading.Thread(target=_watch, args=(parent,), name="gigsterpg-load-watch", daemon=True).start()
    try:
        connection = connect(pg_url)
        while True:
            try:
                task = tasks.get(timeout=_POLL_S)
            except queue.Empty:
                if not _alive(parent):  # the coordinator died: nobody will collect what we load
                    return
                continue
            if task is None:  # the end: what this worker cost, for the log and the benchmark
                usage = resource.getrusage(resource.RUSAGE_SELF)
                results.put((None, None, 0, ("stats", usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)))
                return
            model, run_id, base, payload = task  # the model itself: one a caller added to the registry too
            results.put((model.collection, base, load_batch(connection, model, run_id, base, payload), None))
    except BaseException as err:  # handed to the coordinator, which fails the run (or retries it: a lost
        with contextlib.suppress(Exception):  # connection is transient there too)
            results.put((None, None, 0, (is_transient(err), short_reason(err) or type(err).__name__)))
    finally:
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()


@contextlib.contextmanager
def _without_main():
    """Start workers without importing the caller's main module in them.

    ``spawn`` and ``forkserver`` import ``__main__`` again in each child (to find the target): a script that
    calls the sync without an ``if __name__ == "__main__":`` guard would run itself once more per worker.
    The workers need nothing of it (their target is this module's), so a bare module stands in while they
    start.
    """
    import sys
    import types
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class Workers:
    """N worker processes (``work``) with a bounded queue of raw batches; started at once, in the background."""

    def __init__(self, count: int, pg_url: str):
        # From a fork server where the system has one: it imports this module once (~0.8 s of CPU) and forks
        # each worker from a process without threads (a spawned worker imports it again: ~5 µs a document at
        # scale 1 for two; a fork of this process would inherit locks its other threads may hold).
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            context.set_forkserver_preload([__name__])
        self.count = count
        self.stats: List[tuple] = []
        self.tasks = context.Queue(maxsize=QUEUED_PER_WORKER * count)
        self.results = context.Queue()
        self.processes = [context.Process(target=work, args=(pg_url, self.tasks, self.results, os.getpid()),
                                          name=f"gigsterpg-load-{index}", daemon=True) for index in range(count)]
        with _without_main():
            for process in self.processes:
                process.start()

    def put(self, task) -> None:
        """Queue a task, waiting for room; raises if every worker has died."""
        while True:
            try:
                self.tasks.put(task, timeout=_POLL_S)
                return
            except queue.Full:
                self.check()

    def get(self, check=None):
        """The next report of a loaded batch: (collection, base, documents); raises a worker's error, or
        ``check()``'s while waiting."""
        while True:
            try:
                collection, base, documents, error = self.results.get(timeout=_POLL_S)
            except queue.Empty:
                self.check()
                if check is not None:
                    check()
                continue
            if error is not None:
                transient, reason = error
                raise (TransientError if transient else TerminalError)(
                    "a load worker failed", reason, "run the sync again (see the log)")
            return collection, base, documents

    def check(self) -> None:
        dead = [process for process in self.processes if process.exitcode not in (None, 0)]
        if dead:
            raise TerminalError("a load worker process died", f"exit code {dead[0].exitcode}",
                                "run the sync again")

    def close(self, timeout: float = 5.0) -> None:
        """Ask every worker to end, and end those that do not (only ours, by process); ``stats`` then holds
        (CPU seconds, peak RSS MB) of each worker that ended by itself."""
        for _ in self.processes:
            with contextlib.suppress(Exception):
                self.tasks.put(None, timeout=timeout)
        deadline = time.monotonic() + timeout
        while len(self.stats) < len(self.processes) and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty, OSError, EOFError):
                *_, error = self.results.get(timeout=_POLL_S)
                if isinstance(error, tuple) and error[0] == "stats":
                    self.stats.append(error[1:])
        for process in self.processes:
            process.join(timeout)
            if process.is_alive():
                process.terminate()
                process.join(timeout)
        for channel in (self.tasks, self.results):
            channel.cancel_join_thread()
            channel.close()


def libpq_url(engine) -> str:
    """The libpq URL of a SQLAlchemy engine (the workers connect with psycopg directly)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def read_batches(collection, batch_size: int, run_id: int, workers: Workers, stop) -> int:
    """Feed ``collection``'s raw batches, numbered in scan order, to ``workers``; the documents read."""
    model = registry.model(collection.name)
    base = 0
    cursor = collection.find_raw_batches({}, batch_size=batch_size)
    try:
        for payload in cursor:
            if stop.is_set():
                return base
            count = count_documents(payload)
            if not count:
                continue
            faults.point("fetched")
            workers.put((model, run_id, base, bytes(payload)))
            base += count
    finally:
        cursor.close()
    return base
