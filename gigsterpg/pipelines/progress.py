"""The one progress bar of the command line: every pipeline's, the sync's per collection, the Dask run's tasks.

``Bar`` is a sync-engine ``Progress`` (``start``/``advance``/``close``) that also takes a running total
(``done_so_far``, as ``export_orders`` reports it). ``bar(stream)`` is None when no bar should be drawn.
"""
from typing import Optional

from gigsterpg.lib.pg.sync.engine.runner import Progress


class Bar(Progress):
    """A tqdm bar per stage (a collection, the orders, the tasks): done of total, and the rate."""

    needs_total = True

    def __init__(self, stream, unit: str = " docs", width: int = 6):
        self.stream, self.unit, self.width = stream, unit, width
        self.bar = None
        self.done = 0

    def start(self, name: str, total: int) -> None:
        from tqdm import tqdm
        self.close()
        self.done = 0
        self.bar = tqdm(total=total, desc=f"{name:<{self.width}}", unit=self.unit, file=self.stream,
                        dynamic_ncols=True)

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
