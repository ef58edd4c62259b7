"""Step 1 of the daily snapshots: every table of a PostgreSQL database, and a CSV file, to date partitions.

A table becomes ``<root>/postgres/<table>/<day>/data.pgcopy``: PostgreSQL's
own binary COPY format, written by the server (``COPY (SELECT ...) TO STDOUT
(FORMAT BINARY)``) and streamed to disk, rows in primary-key order (whole-row
order for a table without one) so that the same data gives the same bytes.
All tables are read in one REPEATABLE READ transaction: one moment of the
source. The CSV file is copied byte for byte to ``<root>/csv/<day>/``, with
its columns inferred and its bad lines listed beside it.
"""
import contextlib
import dataclasses
import datetime
import fnmatch
import json
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, List, Optional, Sequence
from urllib.parse import quote

import psycopg
from psycopg import sql

from gigsterpg import __version__
from gigsterpg.config import mask_url
from gigsterpg.lib.files import csvsource, partition, pgcopy

DATA_FILE = "data.pgcopy"
FORMAT = "postgresql-copy-binary"
BAD_LINES_FILE = "bad_lines.jsonl"
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")
# Sessions of a step at most, by default: a few COPYs at once keep a server's disks and cores busy.
MAX_WORKERS = 4


@dataclasses.dataclass(frozen=True)
class SourceTable:
    """A table of the source: where it is, its columns (name, type as loaded, type in the source), its key."""

    schema: str
    name: str
    oid: int
    columns: tuple
    primary_key: tuple

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def folder(self) -> str:
        """Its folder under ``postgres/``: the name alone in ``public``, else ``schema.name``; made path-safe.

        Each part is quoted on its own, its dots too, so that no name becomes ``..`` (outside ``postgres/``)
        and ``a."b.c"`` and ``"a.b".c`` get folders of their own.
        """
        parts = (self.name,) if self.schema == "public" else (self.schema, self.name)
        return ".".join(quote(part, safe="-_ ").replace(".", "%2E") for part in parts)


@dataclasses.dataclass
class Extracted:
    """One partition written: what, where, how many rows and bytes, and their checksum."""

    table: str
    path: str
    rows: int
    bytes: int
    sha256: str
    bad_lines: int = 0


def matches(qualified: str, patterns: Optional[str]) -> bool:
    """Whether ``schema.table`` is picked by the comma-separated globs (all tables without any; ``!`` excludes)."""
    if not patterns:
        return True
    globs = [glob.strip() for glob in patterns.split(",") if glob.strip()]
    include = [glob for glob in globs if not glob.startswith("!")]
    exclude = [glob[1:] for glob in globs if glob.startswith("!")]
    picked = not include or any(fnmatch.fnmatchcase(qualified, glob) for glob in include)
    return picked and not any(fnmatch.fnmatchcase(qualified, glob) for glob in exclude)


def list_tables(cursor, patterns: Optional[str] = None) -> List[SourceTable]:
    """Every ordinary and partitioned table outside the system schemas (a partition's rows come with its parent)."""
    cursor.execute(
        "SELECT n.nspname, c.relname, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname <> ALL(%s)"
        " AND n.nspname NOT LIKE 'pg\\_%%' ORDER BY 1, 2", (list(SYSTEM_SCHEMAS),))
    tables = []
    for schema, name, oid in cursor.fetchall():
        if not matches(f"{schema}.{name}", patterns):
            continue
        cursor.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod),"
            " coalesce(e.typnamespace, t.typnamespace) = 'pg_catalog'::regnamespace"
            " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " LEFT JOIN pg_type e ON t.typcategory = 'A' AND e.oid = t.typelem"
            " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", (oid,))
        # A type of the source's own (enum, domain, composite) does not exist in the target: carried as its text.
        columns = tuple((column, kind if builtin else "text", kind) for column, kind, builtin in cursor.fetchall())
        cursor.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s AND i.indisprimary"
            " ORDER BY array_position(i.indkey::int2[], a.attnum)", (oid,))
        tables.append(SourceTable(schema, name, oid, columns, tuple(row[0] for row in cursor.fetchall())))
    return tables


def select_of(table: SourceTable) -> sql.Composable:
    """The SELECT a table is extracted with: its columns (own types as text), in a stable order."""
    alias = sql.Identifier("t")
    columns = sql.SQL(", ").join(
        sql.SQL("{}.{}").format(alias, sql.Identifier(name)) if kind == source_kind
        else sql.SQL("{}.{}::text AS {}").format(alias, sql.Identifier(name), sql.Identifier(name))
        for name, kind, source_kind in table.columns)
    if table.primary_key:
        order = sql.SQL(", ").join(sql.SQL("{}.{}").format(alias, sql.Identifier(name)) for name in table.primary_key)
    else:
        order = sql.SQL('{}::text COLLATE "C"').format(alias)
    return sql.SQL("SELECT {} FROM {} AS {} ORDER BY {}").format(
        columns, sql.Identifier(table.schema, table.name), alias, order)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def default_workers() -> int:
    """Sessions a step uses when none are asked for: one per core, at most ``MAX_WORKERS``."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def extract_postgres(source_url: str, root: Path, day: datetime.date, patterns: Optional[str] = None,
                     on_table: Callable[[str, str], None] = lambda table, path: None,
                     on_done: Callable[[Extracted], None] = lambda done: None,
                     workers: Optional[int] = None) -> List[Extracted]:
    """Every table of ``source_url`` into its partition for ``day``, from one snapshot of the source.

    ``on_table(table, path)`` is called as a table starts, ``on_done`` as its
    partition is in place (the ledger listens to both; one call at a time).
    With ``workers`` > 1 (default ``default_workers()``) the tables are written by that many sessions at once,
    each in the one snapshot of the source (``pg_export_snapshot``, as ``pg_dump -j`` does): the same files.
    """
    workers = default_workers() if workers is None else max(1, workers)
    with psycopg.connect(source_url) as connection, connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        version = connection.info.server_version
        tables = list_tables(cursor, patterns)
        if workers == 1 or len(tables) < 2:
            return [_extract_table(cursor, table, source_url, version, root, day, on_table, on_done)
                    for table in tables]
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
        called = threading.Lock()  # the callbacks (the ledger's one connection) one at a time

        def locked(callback):
            def call(*args):
                with called:
                    callback(*args)
            return call

        local = threading.local()
        sessions = []

        def one(table: SourceTable) -> Extracted:
            if getattr(local, "cursor", None) is None:  # this thread's session, in the snapshot of the source
                session = psycopg.connect(source_url)
                sessions.append(session)
                local.cursor = session.cursor()
                local.cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                local.cursor.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            return _extract_table(local.cursor, table, source_url, version, root, day, locked(on_table),
                                  locked(on_done))

        pool = ThreadPoolExecutor(min(workers, len(tables)), thread_name_prefix="gigsterpg-extract")
        try:
            futures = [pool.submit(one, table) for table in tables]
            return [future.result() for future in futures]  # the tables' order; the first error raised
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # after an error: no table begins, those begun end
            for session in sessions:
                with contextlib.suppress(Exception):
                    session.close()


def _extract_table(cursor, table: SourceTable, source_url: str, version: int, root: Path, day: datetime.date,
                   on_table, on_done) -> Extracted:
    """One table into its partition for ``day``, through ``cursor`` (in the snapshot of the source)."""
    final = partition.day_folder(root, "postgres", day, table.folder)
    on_table(table.qualified, str(final))
    started = _now()
    with partition.writing(final) as temp:
        with open(temp / DATA_FILE, "wb") as handle:
            count = pgcopy.copy_out(cursor, select_of(table), handle)
        rows = cursor.rowcount
        partition.write_manifest(temp, {
            "format": FORMAT, "file": DATA_FILE, "source": "postgres", "source_url": mask_url(source_url),
            "source_server_version": version, "schema": table.schema, "table": table.name,
            "day": day.isoformat(), "rows": rows, "bytes": count.bytes, "sha256": count.sha256,
            "columns": [{"name": name, "type": kind, "source_type": source_kind}
                        for name, kind, source_kind in table.columns],
            "primary_key": list(table.primary_key), "tool": "gigsterpg", "tool_version": __version__,
            "started_at": started, "finished_at": _now()})
    extracted = Extracted(table.qualified, str(final), rows, count.bytes, count.sha256)
    on_done(extracted)
    return extracted


def csv_table_name(path: Path) -> str:
    """The table a CSV file loads into: its file name without extension, lower case, other characters as _."""
    stem = "".join(char if char.isalnum() else "_" for char in Path(path).stem.lower()).strip("_")
    return (stem or "csv")[:63]


def extract_csv(csv_path: Path, root: Path, day: datetime.date,
                declared: Optional[dict] = None) -> Extracted:
    """The CSV file, byte for byte, into ``<root>/csv/<day>/``, with its dialect, columns and bad lines."""
    csv_path = Path(csv_path)
    started = _now()
    dialect = csvsource.detect_dialect(csv_path)
    final = partition.day_folder(root, "csv", day)
    name = csv_path.name if csv_path.suffix else csv_path.name + ".csv"
    with partition.writing(final) as temp:
        copied = temp / name
        with open(csv_path, "rb") as source, open(copied, "wb") as target:
            shutil.copyfileobj(source, target, pgcopy.CHUNK)
        counts: dict = {}
        columns = csvsource.infer_columns(copied, dialect, declared, counts=counts)
        rows, bad = counts["records"], 0
        with open(temp / BAD_LINES_FILE, "w", encoding="utf-8") as bad_lines:
            # Inferred kinds fit every value of a line of the right width: only misfit lines (and a last record
            # with a quote never closed) need a second pass.
            if counts["misfits"] or counts["unclosed"] or declared:
                def record(line: csvsource.BadLine) -> None:
                    nonlocal bad
                    bad += 1
                    bad_lines.write(json.dumps({**line.as_dict(), "file": name}, ensure_ascii=False) + "\n")

                rows = sum(batch.num_rows for batch in csvsource.read_batches(copied, dialect, columns, record))
        size, digest = copied.stat().st_size, pgcopy.sha256_file(copied)
        partition.write_manifest(temp, {
            "format": "csv", "file": name, "source": "csv", "source_path": str(csv_path.resolve()),
            "table": csv_table_name(csv_path), "day": day.isoformat(), "rows": rows, "bad_lines": bad,
            "bad_lines_file": BAD_LINES_FILE, "bytes": size, "sha256": digest,
            "dialect": dataclasses.asdict(dialect),
            "columns": [{"name": c.name, "kind": c.kind, "type": c.pg_type} for c in columns],
            "tool": "gigsterpg", "tool_version": __version__, "started_at": started, "finished_at": _now()})
    return Extracted(csv_table_name(csv_path), str(final), rows, size, digest, bad)


def columns_of(manifest: dict) -> Sequence[csvsource.Column]:
    """The CSV columns a csv partition's manifest records."""
    return [csvsource.Column(c["name"], c["kind"], c["type"] == "timestamptz") for c in manifest["columns"]]


def dialect_of(manifest: dict) -> csvsource.Dialect:
    """The dialect a csv partition's manifest records."""
    return csvsource.Dialect(**manifest["dialect"])
