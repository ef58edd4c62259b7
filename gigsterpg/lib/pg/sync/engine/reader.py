"""Reading ahead: MongoDB, our own CPU work and PostgreSQL all busy at once.

Two threads feed the caller through bounded queues:

- the fetcher only pulls raw batches off the cursor, so the MongoDB server
  always has the next request in hand (it mostly waits on the socket, which
  releases the GIL);
- the preparer hashes (and, on a first sync, decodes and maps) each batch,
  while the caller waits on PostgreSQL for the previous one.

At most ``depth`` batches wait in each queue (and at most ``fetch_bytes`` of raw ones), so memory
stays bounded.
"""
import collections
import itertools
import queue
import threading
from typing import Callable, Iterable, Iterator, Optional

from gigsterpg import faults

_DONE = object()
_POLL_S = 0.1
# Raw batches read ahead: up to 8 (the next collection's query then opens early enough to hide how
# long the server takes to its first batch), and at most this many bytes of them (large documents).
FETCH_BYTES = 64 * 2 ** 20


def batches(cursor, size: int) -> Iterator[list]:
    """The cursor's documents in lists of at most ``size``."""
    iterator = iter(cursor)
    while True:
        batch = list(itertools.islice(iterator, size))
        if not batch:
            return
        faults.point("fetched")
        yield batch


class _Stage(threading.Thread):
    """Applies ``work`` to each item of ``source`` and hands the results on, in order.

    At most ``depth`` results wait; with ``weigh``, also at most ``budget`` of their weight
    (bytes), except that one result always may wait, whatever it weighs.
    """

    def __init__(self, name: str, source: Iterable, work: Callable, depth: int, stop: threading.Event,
                 weigh: Optional[Callable[[object], int]] = None, budget: int = 0):
        super().__init__(name=name, daemon=True)
        self.source, self.work, self.stop = source, work, stop
        self.out: queue.Queue = queue.Queue(maxsize=depth)
        self.weigh, self.budget = weigh, budget
        self._room = threading.Condition()
        self._weights: collections.deque = collections.deque()  # of the results waiting, in order

    def put(self, item) -> bool:
        weight = self.weigh(item) if self.weigh is not None and isinstance(item, list) else 0
        with self._room:
            while self._weights and sum(self._weights) + weight > self.budget:
                if self.stop.is_set():
                    return False
                self._room.wait(_POLL_S)
            self._weights.append(weight)
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout: float):
        """The next result (queue.Empty after ``timeout``); its weight leaves the budget."""
        item = self.out.get(timeout=timeout)
        with self._room:
            self._weights.popleft()
            self._room.notify()
        return item

    def run(self) -> None:
        try:
            for item in self.source:
                if not self.put(self.work(item)):
                    return
            self.put(_DONE)
        except BaseException as err:  # handed on, and raised by the caller
            self.put(err)


def _drain(stage: _Stage, stop: threading.Event) -> Iterator:
    """The results of ``stage``; its error is raised here."""
    while True:
        try:
            item = stage.get(timeout=_POLL_S)
        except queue.Empty:
            if stop.is_set():
                return
            continue
        if item is _DONE:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def raw_size(batch: list) -> int:
    """Bytes of a batch of raw documents (decoded ones, as in tests, count as nothing)."""
    return sum(len(getattr(doc, "raw", b"")) for doc in batch)


class ReadAhead:
    """``prepare(batch)`` for each batch of ``cursor``, fetched and prepared ahead of the caller.

    The threads run from ``start()`` (iterating starts them too), so a
    collection can be read while the one before it is still being written.
    Iterate to get the prepared batches; an error on either thread is raised
    there. ``close()`` (or leaving a ``with`` block) stops both threads.
    """

    def __init__(self, cursor: Iterable, size: int, prepare: Callable[[list], object], depth: int = 2,
                 fetch_depth: int = 8, fetch_bytes: int = FETCH_BYTES):
        self._stop = threading.Event()
        self._fetcher = _Stage("gigsterpg-fetch", batches(cursor, size), lambda batch: batch, fetch_depth,
                               self._stop, weigh=raw_size, budget=fetch_bytes)
        self._preparer = _Stage("gigsterpg-prepare", _drain(self._fetcher, self._stop), prepare, depth, self._stop)

    def start(self) -> None:
        """Start reading (again: a no-op)."""
        if self._fetcher.ident is None:
            self._fetcher.start()
            self._preparer.start()

    @property
    def fetched(self) -> bool:
        """Whether the cursor has been read to its end (what is left is in the queues)."""
        return self._fetcher.ident is not None and not self._fetcher.is_alive()

    def __iter__(self) -> Iterator:
        self.start()
        return _drain(self._preparer, self._stop)

    def close(self) -> None:
        self._stop.set()
        for stage in (self._preparer, self._fetcher):
            if stage.ident is not None:
                stage.join()

    def __enter__(self) -> "ReadAhead":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
