"""The one progress bar of the command line: every pipeline's, the sync's per collection, the Dask run's tasks.

``Bar`` is a sync-engine ``Progress`` (``start``/``advance``/``close``) that also takes a running total
(``done_so_far``, as ``export_orders`` reports it). ``bar(stream)`` is None when no bar should be drawn.
"""
from typing import Dict, Optional

from gigsterpg.lib.pg.sync.engine.runner import Progress


# tqdm's own, but the rate always as "0.40 tasks/s" (tqdm turns a rate below one into "2.50s/ tasks").
_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"


class Bar(Progress):
    """A tqdm bar per stage (a collection, the orders, the tasks): done of total, and the rate.

    ``units``: the unit of the stages that count something else than ``unit`` (a Dask run's "tasks" stage
    counts tasks, its first load's collections documents).
    """

    needs_total = True

    def __init__(self, stream, unit: str = " docs", width: int = 6, units: Optional[Dict[str, str]] = None):
        self.stream, self.unit, self.width, self.units = stream, unit, width, units or {}
        self.bar = None
        self.done = 0

    def start(self, name: str, total: int) -> None:
        from tqdm import tqdm
        self.close()
        self.done = 0
        self.bar = tqdm(total=total, desc=f"{name:<{self.width}}", unit=self.units.get(name, self.unit),
                        file=self.stream, dynamic_ncols=True, bar_format=_FORMAT if total else None)

    def advance(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)
        self.done += count

    def done_so_far(self, done: int) -> None:
        """``done`` in all so far (a running total, not an increment)."""
        self.advance(done - self.done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def bar(stream, wanted: bool = True, unit: str = " docs") -> Optional[Bar]:
    """A bar on ``stream`` when ``wanted`` and the stream is a terminal; None otherwise."""
    if not wanted or stream is None or not stream.isatty():
        return None
    return Bar(stream, unit)
