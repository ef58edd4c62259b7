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

The coordinator holds at most three batches per worker (raw bytes: sent, or
waiting for the first worker with room), so memory is bounded whatever the
size of the collection. A worker process that dies
(killed, out of memory) is replaced, and the batches it held are loaded again
(``load_once``: once, whoever loads them; a batch that kills its worker every
time ends the run after ``TASK_RETRIES`` retries). A worker whose coordinator
dies (killed) notices within ``_POLL_S`` and ends; its load tables are dropped
by the next run.
"""
import collections
import contextlib
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import resource
import signal
import socket
import struct
import threading
import time
from typing import Deque, Dict, List, NamedTuple, Optional, Sequence, Tuple

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
# Batches sent to a worker at a time: the one it loads and the next (it never waits for the coordinator).
_SENT = 2
# A batch whose worker process dies is loaded again this many times at most (Dask's tasks: as many retries).
TASK_RETRIES = 3
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
    """The run's load tables and the ledger of its workers' attempts, in a new ``LOAD_SCHEMA`` (UNLOGGED: a
    crash empties them; the run that follows drops them)."""
    drop_load_tables(cursor)
    cursor.execute(f"CREATE SCHEMA {LOAD_SCHEMA}")
    create_attempts(cursor, load_attempts(run_id))
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
                children: Dict[str, list], base: int = 0) -> None:
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
    faults.batch_point("load-batch", base, len(rows))
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
    the documents it held. What every load worker runs (``load_once``)."""
    docs = split_batch(payload)
    rows, children = load_rows(model, base, docs)
    write_batch(connection, model, run_id, rows, docs, children, base)
    return len(docs)


def load_attempts(run_id: int) -> str:
    """The run's ledger of the local load workers' batch attempts (``load_once``)."""
    return load_table(run_id, "_attempts")


def create_attempts(cursor, table: str) -> None:
    """A ledger of attempts at batches or tasks: one row per attempt, ``documents`` set when it committed."""
    # ``task``: a batch's first document number (int8: a collection may hold more than 2^31), or a range's.
    cursor.execute(f"CREATE UNLOGGED TABLE {table} (id serial PRIMARY KEY, collection text NOT NULL,"
                   " task int8 NOT NULL, pid int4, host text, started_at timestamptz NOT NULL DEFAULT now(),"
                   " documents int8)")


def load_once(connection, attempts: str, model, run_id: int, base: int, payload: bytes) -> int:
    """``load_batch``, idempotent: loaded again (its worker died, or its answer was lost), a batch is in the
    load tables once; the documents it held. What a worker process (``work``) and a Dask task
    (``task.load_batch``) run; ``attempts`` is the ledger (``create_attempts``) of the run's attempts.

    The attempt is recorded first (committed: counted even if this process dies now); then ONE transaction,
    under a lock of this batch, checks that no earlier attempt committed it, marks it done and COPYs its
    rows. A worker that dies commits nothing; an attempt after one that committed loads nothing (and waits
    for one still loading it). On an error the caller rolls the connection back.
    """
    collection = model.collection
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {attempts} (collection, task, pid, host) VALUES (%s, %s, %s, %s)"
                       " RETURNING id", (collection, base, os.getpid(), socket.gethostname()))
        attempt = cursor.fetchone()[0]
    connection.commit()
    with connection.cursor() as cursor:
        # The two-int4 key of locks: two batches 2^31 documents apart share one (the later waits, no more).
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s), (%s::int8 %% 2147483648)::int4)",
                       (attempts + collection, base))
        cursor.execute(f"SELECT documents FROM {attempts} WHERE collection = %s AND task = %s"
                       " AND documents IS NOT NULL", (collection, base))
        done = cursor.fetchone()
        if done is not None:
            connection.commit()
            return done[0]
        cursor.execute(f"UPDATE {attempts} SET documents = %s WHERE id = %s", (count_documents(payload), attempt))
    return load_batch(connection, model, run_id, base, payload)  # commits


def work(pg_url: str, tasks, results, parent: int) -> None:
    """A worker process: load the batches ``tasks`` (its own pipe) brings until ``None``; say on ``results``
    (its own pipe, each message sent before the next step: none is lost if this process dies) which batch
    it loads, then what it loaded."""
    connection = None
    threading.Thread(target=_watch, args=(parent,), name="gigsterpg-load-watch", daemon=True).start()
    try:
        connection = connect(pg_url)
        while True:
            if not tasks.poll(_POLL_S):
                if not _alive(parent):  # the coordinator died: nobody will collect what we load
                    return
                continue
            try:
                task = tasks.recv()
                payload = tasks.recv_bytes() if task is not None else None
            except EOFError:  # the coordinator closed the pipe: it ends
                return
            if task is None:  # the end: what this worker cost, for the log and the benchmark
                usage = resource.getrusage(resource.RUSAGE_SELF)
                results.send(("stats", usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024))
                return
            seq, model, run_id, base = task  # the model itself: one a caller added to the registry too
            results.send(("loading", seq))
            results.send(("loaded", seq, load_once(connection, load_attempts(run_id), model, run_id, base, payload)))
    except BaseException as err:  # handed to the coordinator, which fails the run (or retries it: a lost
        with contextlib.suppress(Exception):  # connection is transient there too)
            results.send(("failed", is_transient(err), short_reason(err) or type(err).__name__))
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


class _Slot(NamedTuple):
    """One worker process, its pipes (its own: a process killed while it read or wrote one leaves it broken,
    and nothing another worker uses), and what the coordinator sends it (by a thread of its own: a batch
    waits there, not in ``put``, while the worker loads another)."""

    process: multiprocessing.Process
    outbox: "queue.Queue"
    results: "multiprocessing.connection.Connection"


_STOP = object()  # the end of a sender thread


def _send(outbox: "queue.Queue", tasks) -> None:
    """Send a worker what comes in ``outbox`` until ``_STOP`` (or the worker is gone: no one reads its pipe)."""
    try:
        while True:
            task = outbox.get()
            if task is _STOP:
                return
            if task is None:
                tasks.send(None)
                continue
            tasks.send(task[:-1])
            tasks.send_bytes(task[-1])  # the raw bytes as they are (pickled, they would be copied once more)
    except OSError:  # the worker died: what it held is sent to the one that replaces it
        pass
    finally:
        tasks.close()


class Workers:
    """N worker processes (``work``), each with pipes of its own; started at once, in the background.

    The coordinator keeps each batch until its worker reports it loaded: at most ``QUEUED_PER_WORKER`` + 1
    per worker (raw bytes), so memory is bounded whatever the size of the collection. A worker process that
    dies (killed, out of memory) is replaced by a new one, sent again what the dead one held (``load_once``:
    a batch the dead one committed loads nothing again and counts once); a batch that kills its worker
    ``TASK_RETRIES`` + 1 times ends the run.
    """

    def __init__(self, count: int, pg_url: str):
        # From a fork server where the system has one: it imports this module once (~0.8 s of CPU) and forks
        # each worker from a process without threads (a spawned worker imports it again: ~5 µs a document at
        # scale 1 for two; a fork of this process would inherit locks its other threads may hold).
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self.context = multiprocessing.get_context(method)
        if method == "forkserver":
            self.context.set_forkserver_preload([__name__])
        self.count, self.pg_url = count, pg_url
        self.stats: List[tuple] = []
        self.answers: "queue.Queue" = queue.Queue()  # (collection, base, documents) of each batch, once
        self.changed = threading.Condition()  # guards what follows; notified when a worker has room again
        # Per worker, by number: sent and not yet reported (at most ``_SENT``); then those waiting for a
        # worker, which the first to report one takes (a slow batch holds up no other).
        self.held: List[Dict[int, tuple]] = [{} for _ in range(count)]
        self.waiting: Deque[Tuple[int, tuple]] = collections.deque()
        self.loading: List[Optional[int]] = [None] * count  # the batch each worker said it loads
        self.deaths: Dict[int, int] = {}  # batch number -> worker processes that died loading it
        self.idle_deaths = 0
        self.failure: Optional[Exception] = None
        self.closing = self.stopped = False
        self.numbers = itertools.count()
        self.slots: List[_Slot] = []
        for slot in range(count):
            self.slots.append(self._start(slot))
        self.collector = threading.Thread(target=self._collect, name="gigsterpg-load-collect", daemon=True)
        self.collector.start()

    def _start(self, slot: int) -> _Slot:
        """A worker process for ``slot``, sent what the slot holds (the batches of the one it replaces)."""
        tasks, sender = self.context.Pipe(duplex=False)
        results, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(target=work, args=(self.pg_url, tasks, writer, os.getpid()),
                                       name=f"gigsterpg-load-{slot}", daemon=True)
        with _without_main():
            process.start()
        tasks.close()  # the worker's ends, now its own: a send to a dead one fails, a read from one ends
        writer.close()
        outbox: "queue.Queue" = queue.Queue()
        threading.Thread(target=_send, args=(outbox, sender), name=f"gigsterpg-load-send-{slot}", daemon=True).start()
        for number, task in self.held[slot].items():
            outbox.put((number,) + task)
        self.loading[slot] = None
        return _Slot(process, outbox, results)

    def put(self, task) -> None:
        """Hand a batch to the workers (the first with room takes it), waiting for room; raises once the load
        failed."""
        with self.changed:
            while True:
                self.check()
                if self.closing:
                    raise TerminalError("the load was stopped", "the run ended", "see the run's error")
                if len(self.waiting) + sum(map(len, self.held)) < (QUEUED_PER_WORKER + 1) * self.count:
                    break
                self.changed.wait(_POLL_S)
            self.waiting.append((next(self.numbers), task))
            for index in range(self.count):
                self._dispatch(index)

    def _dispatch(self, index: int) -> None:
        """Send the waiting batches to worker ``index`` while it holds fewer than ``_SENT`` (under ``changed``)."""
        while self.waiting and len(self.held[index]) < _SENT:
            number, task = self.waiting.popleft()
            self.held[index][number] = task
            self.slots[index].outbox.put((number,) + task)

    def get(self, check=None):
        """The next loaded batch: (collection, base, documents), each batch once; raises the load's failure,
        or ``check()``'s while waiting."""
        while True:
            self.check()
            try:
                return self.answers.get(timeout=_POLL_S)
            except queue.Empty:
                if check is not None:
                    check()

    def check(self) -> None:
        """Raise what failed the load: a worker's error, or a batch that kills its worker every time."""
        if self.failure is not None:
            raise self.failure

    def _collect(self) -> None:
        """Read the workers' reports; replace a worker process that died (on its own thread, till ``close``)."""
        try:
            self._collecting()
        except Exception as err:  # a replacement that cannot start (the fork server gone): the load fails
            with self.changed:
                self.failure = self.failure or TerminalError(
                    "the load workers stopped", short_reason(err) or type(err).__name__, "run the sync again")
                self.changed.notify_all()

    def _collecting(self) -> None:
        while not self.stopped:
            with self.changed:
                slots = list(self.slots)
            waiting = [slot.results for slot in slots if not slot.results.closed]
            waiting += [slot.process.sentinel for slot in slots if slot.process.exitcode is None]
            if waiting:
                multiprocessing.connection.wait(waiting, timeout=_POLL_S)
            else:  # every worker ended (the load failed, or it ends)
                time.sleep(_POLL_S)
            with self.changed:
                for index, slot in enumerate(slots):
                    self._receive(index, slot)
                    code = slot.process.exitcode
                    if code not in (None, 0) and not (self.closing or self.failure) and slot is self.slots[index]:
                        self._replace(index, code)

    def _receive(self, index: int, slot: _Slot) -> None:
        """Every whole message the worker sent (a worker killed mid-message leaves a part: dropped)."""
        try:
            while not slot.results.closed and slot.results.poll():
                kind, *values = slot.results.recv()
                if kind == "loading":
                    self.loading[index] = values[0]
                elif kind == "loaded":
                    number, documents = values
                    task = self.held[index].pop(number, None)
                    self.loading[index] = None
                    if task is not None:  # a batch is reported once: resent, it loaded nothing again
                        model, _, base, _ = task
                        self.answers.put((model.collection, base, documents))
                        self._dispatch(index)
                        self.changed.notify_all()
                elif kind == "failed":
                    transient, reason = values
                    self.failure = self.failure or (TransientError if transient else TerminalError)(
                        "a load worker failed", reason, "run the sync again (see the log)")
                elif kind == "stats":
                    self.stats.append(tuple(values))
        except (EOFError, OSError):
            slot.results.close()

    def _replace(self, index: int, code: int) -> None:
        """A new process for a worker that died, sent again the batches the dead one held (or the run's end)."""
        number, held = self.loading[index], self.held[index]
        reason = _exit_reason(code)
        if number is not None and number in held:
            self.deaths[number] = deaths = self.deaths.get(number, 0) + 1
            model, _, base, payload = held[number]
            if deaths > TASK_RETRIES:
                documents = count_documents(payload)
                self.failure = TerminalError(
                    f"the batch of {documents} {model.collection} documents from number {base + 1} of the scan"
                    f" killed its load worker process {deaths} times", reason,
                    f"find the document among db.{model.collection}.find().skip({base}).limit({documents}),"
                    " fix or remove it, then run the sync again")
                self.changed.notify_all()
                return
            what = f"while it loaded the batch of {model.collection} from document {base + 1} (attempt {deaths})"
        else:
            self.idle_deaths += 1
            if self.idle_deaths > TASK_RETRIES:
                self.failure = TerminalError(f"load worker processes died {self.idle_deaths} times before they"
                                             " loaded a batch", reason, "see the log, then run the sync again")
                self.changed.notify_all()
                return
            what = "between batches"
        logger.warning("a load worker process died %s: %s; another one loads again the %d batches it held",
                       what, reason, len(held))
        dead = self.slots[index]
        dead.outbox.put(_STOP)  # what is left in it is sent again
        with contextlib.suppress(Exception):
            dead.results.close()
        self.slots[index] = self._start(index)

    def close(self, timeout: float = 5.0) -> None:
        """Ask every worker to end, and end those that do not (only ours, by process); ``stats`` then holds
        (CPU seconds, peak RSS MB) of each worker that ended by itself."""
        with self.changed:
            self.closing = True
            self.changed.notify_all()
            live = [slot for slot in self.slots if slot.process.exitcode is None]
            for slot in self.slots:
                slot.outbox.put(None)
                slot.outbox.put(_STOP)
        deadline = time.monotonic() + timeout
        while len(self.stats) < len(live) and time.monotonic() < deadline and self.collector.is_alive():
            time.sleep(0.05)
        self.stopped = True
        self.collector.join(timeout)
        for slot in self.slots:
            slot.process.join(timeout)
            if slot.process.is_alive():
                slot.process.terminate()
                slot.process.join(timeout)
            with contextlib.suppress(Exception):
                slot.results.close()


def _exit_reason(code: int) -> str:
    """How a process ended, in words."""
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"killed by {name}" + (" (a kill, or the out-of-memory killer)" if -code == signal.SIGKILL else "")


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
