"""Logging, configured once by the CLI: readable text on a terminal, or one JSON object a line."""
import json
import logging
import sys
from datetime import datetime, timezone
from typing import Callable

from gigsterpg.config import mask_url


class MaskingFilter(logging.Filter):
    """Masks the password of any connection string in a record (``mask_secrets``), whatever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_url(record.getMessage())
        record.args = ()
        return True


class MaskingFormatter(logging.Formatter):
    """Text lines, masked whole: the filter masks the message, this the traceback after it too."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_url(super().format(record))


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
    root, alembic = logging.getLogger(), logging.getLogger("alembic")
    before = (list(root.handlers), root.level, alembic.level)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(MaskingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # a driver's warning (an unknown URL option) goes through the masking handler
    # Alembic logs each migration at INFO; that is worth seeing only when asked for.
    alembic.setLevel(max(root.level, logging.WARNING))

    def restore() -> None:
        root.removeHandler(handler)
        handler.close()
        for old in before[0]:
            if old not in root.handlers:
                root.addHandler(old)
        root.setLevel(before[1])
        alembic.setLevel(before[2])
        logging.captureWarnings(False)
    return restore
