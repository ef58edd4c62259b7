"""Kill points: where the reliability tests make a sync die, on purpose, with SIGKILL.

``GIGSTERPG_KILL_AT=<point>:<n>`` in the environment makes the process kill
itself the n-th time it passes ``<point>``; nothing else ever reads it. The
points mark the moments a crash is most likely to hurt: a batch fetched but
not written, merged but not committed, committed, rows deleted but not
committed.

A batch point (``batch_point``) names a document instead: ``load-batch:<n>``
kills every process that loads the batch holding the n-th document of a
collection's scan (a batch that kills its worker every time);
``GIGSTERPG_KILL_ONCE=<file>`` makes only the first of them die (it creates
the file; whoever finds it there lives on).

The variable is read when a point is passed (a few times per batch), never at
import; ``check`` reads it at the start of a run, so that a malformed value
fails that run with one line before it does any work.
"""
import os
import signal
import threading
from typing import Optional, Tuple

from gigsterpg.exc import ConfigError
from gigsterpg.text import shown

ENV = "GIGSTERPG_KILL_AT"
ONCE = "GIGSTERPG_KILL_ONCE"
POINTS = ("fetched", "merged", "committed", "deleting", "finished",
          # the daily snapshots (gigsterpg.lib.files): a partition's data written, its manifest written, the
          # partition renamed into place, a day's load written but not committed
          "snapshot-data", "snapshot-manifest", "snapshot-published", "snapshot-loaded",
          # a first load (sync/engine/firstload.py): every collection loaded, keys not yet put back; keys
          # back and hashes filled, not committed
          "first-load-loaded", "first-load-keyed",
          # export-table (gigsterpg.lib.mongo.export): a batch of documents written, a batch of deletes done
          "export-written", "export-deleting",
          # export-orders (gigsterpg.lib.mongo.orders): a batch's documents written but not their hashes, their
          # hashes committed, a batch of deletes done, the run's bookkeeping finished but its record not ended
          "orders-written", "orders-remembered", "orders-deleting", "orders-finished",
          # load-csv (gigsterpg.lib.datasets.load), per file: its dataset's lock taken; its new table swapped in
          # (not committed); its registry row and rejects written (not committed); its transaction committed
          "csv-locked", "csv-swapped", "csv-registered", "csv-committed",
          # transform: the query's rows in the temporary table; the new table swapped in; registered; committed
          "transform-queried", "transform-swapped", "transform-registered", "transform-committed",
          # a first load's batch in a load worker (sync/engine/parallel.py): its attempt recorded, its rows
          # COPied, not committed (a batch point: n is a document number, see above)
          "load-batch")

_hits = {}
_lock = threading.Lock()
_parsed = {"": None}  # value of the variable -> its target; parsed once per value


def target() -> Optional[Tuple[str, int]]:
    """The (point, n) the environment asks for now, or None.

    Raises:
        ConfigError: the variable is set but is not ``<point>`` or ``<point>:<n>`` with n >= 1.
    """
    value = os.environ.get(ENV, "")
    if value not in _parsed:
        name, sep, count = value.partition(":")
        if name not in POINTS or (sep and not (count.isdigit() and int(count) >= 1)):
            raise ConfigError(f"bad {ENV} {shown(value)}",
                              f"it must be <point>:<n> with a point among {', '.join(POINTS)} and n a whole number"
                              " from 1", f"fix or unset {ENV}", value=value)
        _parsed[value] = (name, int(count or 1))
    return _parsed[value]


def check() -> None:
    """Fail now (ConfigError) if the kill-point variable is malformed: called as a run starts."""
    target()


def point(name: str) -> None:
    """Pass the kill point ``name`` (the process dies here if the environment asks for it)."""
    wanted = target()
    if wanted is None or wanted[0] != name:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] == wanted[1]:
            os.kill(os.getpid(), signal.SIGKILL)


def batch_point(name: str, first: int, count: int) -> None:
    """Pass the batch point ``name`` with the batch of ``count`` documents from number ``first`` (0 for a
    collection's first document): the process dies here if the batch holds the document the environment
    names (only the first process to get here if ``GIGSTERPG_KILL_ONCE`` names a file)."""
    wanted = target()
    if wanted is None or wanted[0] != name or not first < wanted[1] <= first + count:
        return
    once = os.environ.get(ONCE)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)
