"""Kill points: where the reliability tests make a sync die, on purpose, with SIGKILL.

``GIGSTERPG_KILL_AT=<point>:<n>`` in the environment makes the process kill
itself the n-th time it passes ``<point>``; nothing else ever reads it. The
points mark the moments a crash is most likely to hurt: a batch fetched but
not written, merged but not committed, committed, rows deleted but not
committed. Without the variable a point costs one comparison.
"""
import os
import signal
import threading

ENV = "GIGSTERPG_KILL_AT"
POINTS = ("fetched", "merged", "committed", "deleting", "finished")


def _target():
    value = os.environ.get(ENV, "")
    name, _, count = value.partition(":")
    return (name, int(count or 1)) if name in POINTS else None


_TARGET = _target()
_hits = {}
_lock = threading.Lock()


def point(name: str) -> None:
    """Pass the kill point ``name`` (the process dies here if the environment asks for it)."""
    if _TARGET is None or _TARGET[0] != name:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] == _TARGET[1]:
            os.kill(os.getpid(), signal.SIGKILL)
