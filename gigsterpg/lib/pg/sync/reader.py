"""Reading ahead: MongoDB, our own CPU work and PostgreSQL all busy at once.

Two threads feed the caller through bounded queues:

- the fetcher only pulls raw batches off the cursor, so the MongoDB server
  always has the next request in hand (it mostly waits on the socket, which
  releases the GIL);
- the preparer hashes (and, on a first sync, decodes and maps) each batch,
  while the caller waits on PostgreSQL for the previous one.

At most ``depth`` batches wait in each queue, so memory stays bounded.
"""
import itertools
import queue
import threading
from typing import Callable, Iterable, Iterator

from gigsterpg import faults

_DONE = object()
_POLL_S = 0.1


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
    """Applies ``work`` to each item of ``source`` and hands the results on, in order."""

    def __init__(self, name: str, source: Iterable, work: Callable, depth: int, stop: threading.Event):
        super().__init__(name=name, daemon=True)
        self.source, self.work, self.stop = source, work, stop
        self.out: queue.Queue = queue.Queue(maxsize=depth)

    def put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

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
            item = stage.out.get(timeout=_POLL_S)
        except queue.Empty:
            if stop.is_set():
                return
            continue
        if item is _DONE:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


class ReadAhead:
    """``prepare(batch)`` for each batch of ``cursor``, fetched and prepared ahead of the caller.

    The threads run from ``start()`` (iterating starts them too), so a
    collection can be read while the one before it is still being written.
    Iterate to get the prepared batches; an error on either thread is raised
    there. ``close()`` (or leaving a ``with`` block) stops both threads.
    """

    def __init__(self, cursor: Iterable, size: int, prepare: Callable[[list], object], depth: int = 2,
                 fetch_depth: int = 8):
        self._stop = threading.Event()
        self._fetcher = _Stage("gigsterpg-fetch", batches(cursor, size), lambda batch: batch, fetch_depth,
                               self._stop)
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
