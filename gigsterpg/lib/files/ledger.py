"""The snapshots' ledger in the target PostgreSQL: what ``load`` checks and ``status`` shows.

One row per (day, step, source, table) in ``snapshot_ledger``; the row with
table ``''`` is the step as a whole. A running step holds a session
advisory lock keyed by (step, day), so that two runs of the same step and day
cannot overlap, and so that ``snapshot_status`` can tell a step that is
running from one whose process died (its row says running, its lock is free).
"""
import dataclasses
import datetime
import os
import shlex
import socket
from typing import List, Optional
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from gigsterpg import __version__
from gigsterpg.config import mask_url
from gigsterpg.exc import ConfigError
from gigsterpg.lib.pg.db.snapshot import SNAPSHOT_STEPS
from gigsterpg.lib.pg.db.states import FAILED, INTERRUPTED, RUNNING, SUCCEEDED

_EPOCH = datetime.date(2000, 1, 1)
_LOCK_SPACE = 0x534E4150 - 2 ** 31  # 'SNAP', as a signed int4; + the step's index


def rerun_command(step: str, day: datetime.date, root: Optional[str] = None, **flags: Optional[str]) -> str:
    """The command that runs ``step`` for ``day`` again: the data folder named unless it is the default, then
    ``flags`` (``source_pg=URL`` is ``--source-pg URL``; None leaves one out), each value shell-quoted.

    A URL's password is left out (libpq reads it from PGPASSWORD or ~/.pgpass): a hint is shown and stored.
    """
    parts = ["python -m gigsterpg.cli pipeline", step, "--day", day.isoformat()]
    if root and str(root) != "data":
        parts += ["--root", shlex.quote(str(root))]
    for name, value in flags.items():
        if value is not None and str(value) != "":
            value = without_password(str(value)) if name.endswith("_pg") else str(value)
            parts += ["--" + name.replace("_", "-"), shlex.quote(value)]
    return " ".join(parts)


def without_password(url: str) -> str:
    """A PostgreSQL connection string (URL or key=value) without its password; masked if it cannot be parsed."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return mask_url(url)
    if "://" in url:
        parts = urlsplit(url)
        userinfo, at, host = parts.netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}@{host}" if at else host
        query = "&".join(item for item in parts.query.split("&") if not item.startswith("password="))
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    if "password" not in params:
        return url
    params.pop("password")
    return make_conninfo(**params)


def lock_keys(day: datetime.date, step: str):
    """The two int4 keys of the advisory lock of (step, day)."""
    return _LOCK_SPACE + SNAPSHOT_STEPS.index(step), (day - _EPOCH).days


class Ledger:
    """Reads and writes ``snapshot_ledger`` over one autocommit psycopg connection of its own."""

    def __init__(self, url: str, rerun: Optional[str] = None):
        self.connection = psycopg.connect(url, autocommit=True)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.rerun = rerun  # the command that runs this step again: stored as it starts, shown if it dies

    def close(self) -> None:
        self.connection.close()

    def lock(self, day: datetime.date, step: str) -> bool:
        """Take the (step, day) lock for the life of this connection; False if another process has it."""
        return self.connection.execute("SELECT pg_try_advisory_lock(%s, %s)", lock_keys(day, step)).fetchone()[0]

    def start(self, day, step: str, source: str, table: str = "", path: Optional[str] = None, cursor=None) -> None:
        """Mark (day, step, source, table) running, clearing what an earlier run left in the row; the step's own
        row keeps the command that runs it again (what ``status`` shows if the process dies)."""
        (cursor or self.connection).execute(
            "INSERT INTO snapshot_ledger (day, step, source, table_name, state, path, owner, tool_version, started_at,"
            " rerun) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now(), %s)"
            " ON CONFLICT (day, step, source, table_name) DO UPDATE SET state = EXCLUDED.state, rows = NULL,"
            " bytes = NULL, checksum = NULL, bad_lines = NULL, error = NULL, rerun = EXCLUDED.rerun,"
            " path = EXCLUDED.path, owner = EXCLUDED.owner, tool_version = EXCLUDED.tool_version, started_at = now(),"
            " finished_at = NULL",
            (day, step, source, table, RUNNING, path, self.owner, __version__, None if table else self.rerun))

    def succeed(self, day, step: str, source: str, table: str = "", rows: Optional[int] = None,
                size: Optional[int] = None, checksum: Optional[str] = None, bad_lines: Optional[int] = None,
                path: Optional[str] = None, cursor=None) -> None:
        """Mark the row succeeded with its counts (``cursor``: inside the caller's transaction)."""
        (cursor or self.connection).execute(
            "INSERT INTO snapshot_ledger (day, step, source, table_name, state, rows, bytes, checksum, bad_lines,"
            " path, owner, tool_version, started_at, finished_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), clock_timestamp())"
            " ON CONFLICT (day, step, source, table_name) DO UPDATE SET state = EXCLUDED.state, rows = EXCLUDED.rows,"
            " bytes = EXCLUDED.bytes, checksum = EXCLUDED.checksum, bad_lines = EXCLUDED.bad_lines,"
            " path = coalesce(EXCLUDED.path, snapshot_ledger.path), error = NULL, rerun = NULL,"
            " finished_at = clock_timestamp()",
            (day, step, source, table, SUCCEEDED, rows, size, checksum, bad_lines, path, self.owner, __version__))

    def fail(self, day, step: str, source: str, error: str, rerun: str, table: str = "") -> None:
        """Mark the row failed, with the one-line error and the command that picks up from there."""
        self.connection.execute(
            "INSERT INTO snapshot_ledger (day, step, source, table_name, state, error, rerun, owner, tool_version,"
            " started_at, finished_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now(), now())"
            " ON CONFLICT (day, step, source, table_name) DO UPDATE SET state = EXCLUDED.state, error = EXCLUDED.error,"
            " rerun = EXCLUDED.rerun, finished_at = now()",
            (day, step, source, table, FAILED, error, rerun, self.owner, __version__))

    def rows(self, day, step: str, tables: bool = False) -> List[dict]:
        """The ledger rows of (day, step): the step's own row, or with ``tables`` its per-table rows."""
        with self.connection.cursor(row_factory=dict_row) as cursor:
            cursor.execute("SELECT * FROM snapshot_ledger WHERE day = %s AND step = %s AND "
                           + ("table_name <> ''" if tables else "table_name = ''") + " ORDER BY source, table_name",
                           (day, step))
            return cursor.fetchall()

    def state(self, day, step: str) -> Optional[str]:
        """The state of the step as a whole for ``day``: None if it never ran; ``interrupted`` for one recorded
        running whose process died (its lock is free)."""
        found = self.rows(day, step)
        if not found:
            return None
        if found[0]["state"] == RUNNING and lock_free(self.connection, day, step):
            return INTERRUPTED
        return found[0]["state"]

    def forget(self, day, step: str, source: str, table: str, cursor=None) -> None:
        """Remove one per-table row (a table the source no longer has)."""
        (cursor or self.connection).execute(
            "DELETE FROM snapshot_ledger WHERE day = %s AND step = %s AND source = %s AND table_name = %s",
            (day, step, source, table))


@dataclasses.dataclass(frozen=True)
class StatusRow:
    """One (day, step) of the ledger as ``status`` shows it; ``state`` may be ``interrupted``."""

    day: datetime.date
    step: str
    state: str
    rows: Optional[int]
    bad_lines: Optional[int]
    tables: int
    started_at: Optional[datetime.datetime]
    finished_at: Optional[datetime.datetime]
    error: Optional[str]
    rerun: Optional[str]
    path: Optional[str]


def lock_free(connection, day: datetime.date, step: str) -> bool:
    """Whether no process holds the (step, day) lock (on an autocommit connection that does not hold it)."""
    keys = lock_keys(day, step)
    if connection.execute("SELECT pg_try_advisory_lock(%s, %s)", keys).fetchone()[0]:
        connection.execute("SELECT pg_advisory_unlock(%s, %s)", keys)
        return True
    return False


def snapshot_status(url_or_engine, days: Optional[int] = 14) -> List[StatusRow]:
    """The steps of the last ``days`` days in the ledger (all days with None), newest day first; never prints.

    A step recorded as running whose (step, day) lock is free is reported as
    ``interrupted``: its process died (killed, machine restarted).

    Raises:
        ConfigError: ``days`` is below 1.
    """
    if days is not None and (not isinstance(days, int) or days < 1):
        raise ConfigError(f"bad number of days {days!r}", "status shows the last N days, N a whole number from 1",
                          "e.g. --days 14")
    url = _url(url_or_engine)
    with psycopg.connect(url, autocommit=True) as connection, connection.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            "WITH recent AS (SELECT DISTINCT day FROM snapshot_ledger ORDER BY day DESC LIMIT %s)"
            " SELECT s.*, (SELECT count(*) FROM snapshot_ledger t WHERE t.day = s.day AND t.step = s.step"
            "   AND t.table_name <> '') AS tables"
            " FROM snapshot_ledger s JOIN recent USING (day) WHERE s.table_name = ''"
            " ORDER BY s.day DESC, array_position(%s::text[], s.step)", (days, list(SNAPSHOT_STEPS)))
        found = cursor.fetchall()
        result = []
        for row in found:
            state = row["state"]
            if state == RUNNING and lock_free(connection, row["day"], row["step"]):
                state = INTERRUPTED
            rerun = (row["rerun"] or rerun_command(row["step"], row["day"])) if state in (FAILED, INTERRUPTED) \
                else None
            result.append(StatusRow(row["day"], row["step"], state, row["rows"], row["bad_lines"], row["tables"],
                                    row["started_at"], row["finished_at"], row["error"], rerun, row["path"]))
    return result


def libpq_url(url: str) -> str:
    """A URL psycopg connects with: SQLAlchemy's ``postgresql+psycopg://`` spelling taken back."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _url(url_or_engine) -> str:
    """A libpq URL from a URL or a SQLAlchemy engine (its password included, never printed)."""
    if isinstance(url_or_engine, str):
        return libpq_url(url_or_engine)
    return url_or_engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
