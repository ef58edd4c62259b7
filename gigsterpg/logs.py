"""Logging, configured once by the CLI: readable text on a terminal, or one JSON object a line."""
import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import Callable

from gigsterpg.config import mask_url

# Libraries that log their own INFO lines (Dask: 33 of them for one `sync --workers 2`, Alembic one per
# migration): only their warnings show, unless --log-level debug asks for everything.
QUIET = ("distributed", "dask", "bokeh", "tornado", "asyncio", "urllib3", "alembic")
# Dask sets the level of its loggers when it is imported (and in each worker process): its setting, read from
# the environment, says the same there.
DASK_LEVEL = "DASK_LOGGING__DISTRIBUTED"


class MaskingFilter(logging.Filter):
    """Masks the password of any URL in a record, whatever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_url(record.getMessage())
        record.args = ()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["traceback"] = mask_url(self.formatException(record.exc_info))
        return json.dumps(entry)


def configure(level: str = "warning", fmt: str = "text", stream=None) -> Callable[[], None]:
    """Send every log record to ``stream`` (stderr), at ``level``, as text or JSON.

    Returns a function that puts back the root logger's handlers and the levels this changed, so that a
    caller in a longer-lived process (a test calling the CLI's ``main``) leaves logging as it found it.
    """
    root, quiet = logging.getLogger(), [logging.getLogger(name) for name in QUIET]
    before = (list(root.handlers), root.level, [logger.level for logger in quiet], os.environ.get(DASK_LEVEL))
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(MaskingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Alembic logs each migration at INFO, Dask its cluster's life: worth seeing only when asked for.
    theirs = root.level if root.level <= logging.DEBUG else max(root.level, logging.WARNING)
    for logger in quiet:
        logger.setLevel(theirs)
    if before[3] is None:  # a level the user set for Dask stays theirs
        os.environ[DASK_LEVEL] = logging.getLevelName(theirs).lower()

    def restore() -> None:
        root.removeHandler(handler)
        handler.close()
        for old in before[0]:
            if old not in root.handlers:
                root.addHandler(old)
        root.setLevel(before[1])
        for logger, level in zip(quiet, before[2]):
            logger.setLevel(level)
        if before[3] is None:
            os.environ.pop(DASK_LEVEL, None)
        else:
            os.environ[DASK_LEVEL] = before[3]
    return restore
