"""Reading ahead: the next batch is fetched from MongoDB while the current one is written to PostgreSQL.

One thread reads (it mostly waits on the MongoDB socket, which releases the
GIL), the caller writes (it mostly waits on PostgreSQL). A bounded queue keeps
at most ``depth`` batches in memory.
"""
import itertools
import queue
import threading
from typing import Callable, Iterable, Iterator

_DONE = object()
_POLL_S = 0.1


def batches(cursor, size: int) -> Iterator[list]:
    """The cursor's documents in lists of at most ``size``."""
    iterator = iter(cursor)
    while True:
        batch = list(itertools.islice(iterator, size))
        if not batch:
            return
        yield batch


def read_ahead(cursor: Iterable, size: int, prepare: Callable[[list], object], depth: int = 2) -> Iterator:
    """``prepare(batch)`` for each batch of ``cursor``, computed on a reader thread ahead of the caller.

    An error on the reader thread is raised in the caller; closing the
    generator (or an error in the caller) stops the reader.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for batch in batches(cursor, size):
                if not put(prepare(batch)):
                    return
            put(_DONE)
        except BaseException as err:  # handed to the caller, who raises it
            put(err)

    reader = threading.Thread(target=work, name="gigsterpg-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()
