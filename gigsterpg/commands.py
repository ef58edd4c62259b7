"""The library verbs behind the CLI (and, later, the HTTP API): sync, follow, export_table, generate.

``status`` is ``gigsterpg.lib.status.status`` (it reads the registry of pipelines, whose verbs are these).

Each takes a ``Settings`` and returns data; none prints or reads the
environment. Driver errors come out as ``GigsterPgError``.
"""
import contextlib
import logging
from typing import Callable, Dict, Iterable, Optional

from sqlalchemy import text

from gigsterpg.config import Settings
from gigsterpg.connections import migrate, mongo_errors_translated, open_mongo, open_pg, pg_errors, require_collections
from gigsterpg.exc import ConfigError
from gigsterpg.fixtures.generate import write_dataset
from gigsterpg.lib.mongo import export
from gigsterpg.lib.mongo.bulk import check_collection
from gigsterpg.lib.mongo.export import ExportReport
from gigsterpg.lib.pg.db import SqlAlchemy
from gigsterpg.lib.pg.db.states import AUTO, FULL, INCREMENTAL, SUCCEEDED
from gigsterpg.lib.pg.sync import registry
from gigsterpg.lib.pg.sync.registry import COLLECTIONS
from gigsterpg.lib.pg.sync.engine.follow import Follower, FollowReport
from gigsterpg.lib.pg.sync.engine.runner import Progress, RetryPolicy, RunReport, run_sync
from gigsterpg.text import cut, shown

logger = logging.getLogger(__name__)


def parse_collections(value: Optional[str]) -> tuple:
    """``"users,gigs"`` -> ("users", "gigs"), checked against the known collections."""
    if not value:
        return COLLECTIONS
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    unknown = [name for name in names if name not in COLLECTIONS]
    if unknown or not names:
        raise ConfigError(f"unknown collection {cut(', '.join(unknown)) if unknown else shown(value)}",
                          f"gigsterpg syncs {registry.names()}",
                          f"pass --collections {','.join(COLLECTIONS)} or a part of it", value=value)
    return names


def choose_mode(pg: SqlAlchemy, settings: Settings, mode: str) -> str:
    """``full`` or ``incremental`` for this run.

    ``auto``: incremental when the settings make it the default, a full run
    has succeeded, and fewer than ``reconcile_every`` incremental runs have
    succeeded since the last full one; full otherwise.
    """
    if mode != AUTO:
        return mode
    if not settings.incremental:
        return FULL
    with pg_errors(pg.url), pg.engine.connect() as connection:
        last_full = connection.execute(text(
            "SELECT max(id) FROM sync_runs WHERE mode = :full AND status = :succeeded"),
            {"full": FULL, "succeeded": SUCCEEDED}).scalar()
        if last_full is None:
            return FULL
        since = connection.execute(text(
            "SELECT count(*) FROM sync_runs WHERE mode = :incremental AND status = :succeeded AND id > :id"),
            {"id": last_full, "incremental": INCREMENTAL, "succeeded": SUCCEEDED}).scalar()
    if settings.reconcile_every and since + 1 >= settings.reconcile_every:
        logger.info("full run to reconcile: %d incremental runs since the last full one", since)
        return FULL
    return INCREMENTAL


def sync(settings: Settings, collections: Iterable[str] = COLLECTIONS, limit: Optional[int] = None,
         progress: Optional[Progress] = None, full_compare: bool = False, retry: RetryPolicy = RetryPolicy(),
         wait_s: Optional[float] = None, mode: str = AUTO, rebuild: bool = False,
         first_load: bool = True, load_workers: Optional[int] = None) -> RunReport:
    """Migrate, then sync ``collections`` from MongoDB into PostgreSQL.

    Args:
        mode: ``full`` (read everything, apply deletes), ``incremental`` (read what changed since
            the watermarks), or ``auto`` (see ``choose_mode``).
        full_compare: map and compare every document, not only those whose
            bytes changed since their row was stored (repairs rows edited by hand).
        retry: how often to reconnect and go on after a lost connection.
        wait_s: wait up to this long for a running sync to end instead of refusing.
        rebuild: empty the synced tables and load everything again, in one transaction (a full run).
        first_load: into empty tables, load as ``pg_restore`` does (keys after the data); False merges.
        load_workers: processes that map and COPY a first load (default: one per core; 0: this process).
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"bad limit {limit}", "it must be 1 or more", "give a positive --limit", value=limit)
    with _both(settings, collections) as (pg, database):
        return run_sync(pg.engine, database, tuple(collections), settings.batch_size, limit, progress,
                        skip_unchanged=not full_compare, retry=retry, wait_s=wait_s,
                        incremental=not rebuild and choose_mode(pg, settings, mode) == INCREMENTAL,
                        overlap_s=settings.overlap_s, first_load=first_load, rebuild=rebuild,
                        load_workers=load_workers)


def sync_distributed(settings: Settings, client, collections: Iterable[str] = COLLECTIONS,
                     progress: Optional[Progress] = None, full_compare: bool = False, wait_s: Optional[float] = None,
                     mode: str = AUTO, retry: RetryPolicy = RetryPolicy()) -> RunReport:
    """Migrate, then a full sync with the reading and mapping on the Dask cluster of ``client``.

    The same result as ``sync`` (``gigsterpg.lib.pg.sync.engine.distributed``). When ``mode`` resolves to
    an incremental run, that run is made as ``sync`` makes it: incremental runs stay single-writer.
    """
    from gigsterpg.lib.pg.sync.engine.distributed import run_distributed

    with _both(settings, collections) as (pg, database):
        if choose_mode(pg, settings, mode) == INCREMENTAL:
            logger.info("an incremental run: made in this process (only full runs are distributed)")
            return run_sync(pg.engine, database, tuple(collections), settings.batch_size, progress=progress,
                            skip_unchanged=not full_compare, retry=retry, wait_s=wait_s, incremental=True,
                            overlap_s=settings.overlap_s)
        return run_distributed(pg.engine, database, client, "postgresql://" + settings.pg_url.split("://", 1)[1],
                               settings.mongo_url, tuple(collections), settings.batch_size, progress,
                               skip_unchanged=not full_compare, wait_s=wait_s, retry=retry)


def first_load_ahead(settings: Settings, collections: Iterable[str] = COLLECTIONS) -> bool:
    """Migrate, then whether a full sync of ``collections`` would be a first load (all of them, empty tables)."""
    from gigsterpg.lib.pg.sync.engine import firstload

    with _both(settings, collections) as (pg, _):
        raw = pg.engine.raw_connection()
        try:
            with raw.driver_connection.cursor() as cursor:
                return firstload.applies(cursor, tuple(registry.ordered(collections)), False)
        finally:
            raw.close()


def follow(settings: Settings, stop=None, retry: RetryPolicy = RetryPolicy(), batch_size: int = 1000,
           max_wait_ms: int = 200, on_idle: Optional[Callable[[FollowReport], None]] = None) -> FollowReport:
    """Migrate, catch up if there is no saved position, then apply MongoDB's changes until stopped.

    The catch-up is a full sync if none has succeeded yet, else an incremental one; it waits for a
    sync that is running (the nightly one) to end. ``stop`` (a threading.Event) ends it between two
    batches; so do Ctrl-C and SIGTERM.
    """
    with _both(settings, COLLECTIONS) as (pg, database):
        def catch_up(full: bool) -> RunReport:
            with pg.engine.connect() as connection:
                full_done = connection.execute(text(
                    "SELECT EXISTS (SELECT 1 FROM sync_runs WHERE mode = :full AND status = :succeeded)"),
                    {"full": FULL, "succeeded": SUCCEEDED}).scalar()
            return run_sync(pg.engine, database, COLLECTIONS, settings.batch_size, retry=retry,
                            incremental=full_done and not full, overlap_s=settings.overlap_s, wait_s=float("inf"))

        return Follower(pg.engine, database, catch_up, batch_size, max_wait_ms, retry, stop, on_idle).run()


@contextlib.contextmanager
def _both(settings: Settings, collections: Iterable[str]):
    """(pg, MongoDB database), both checked, the schema migrated and ``collections`` present; driver
    errors inside come out as GigsterPgError."""
    pg = open_pg(settings)
    with contextlib.ExitStack() as stack:
        stack.callback(pg.dispose)
        client, database = open_mongo(settings)
        stack.callback(client.close)
        migrate(pg)
        require_collections(database, collections, settings.mongo_url)
        with pg_errors(pg.url), mongo_errors_translated(settings.mongo_url):
            yield pg, database


def export_table(settings: Settings, table: str, schema: Optional[str] = None, collection: Optional[str] = None,
                 batch_size: int = 2000) -> ExportReport:
    """Every row of a PostgreSQL table (``settings.pg_url``) into a MongoDB collection (default: the
    table's name) of ``settings.mongo_url``'s database, ``_id`` = the primary key."""
    export.split_name(table, schema)
    if collection is not None:
        check_collection(collection)
    url = settings.require_pg()
    client, database = open_mongo(settings)
    try:
        with pg_errors(url):
            connection = export.connect(url)
        with connection, pg_errors(url), mongo_errors_translated(settings.mongo_url):
            found = export.describe(connection, table, schema)
            return export.export(connection, database[collection or found.name], found, batch_size)
    finally:
        client.close()


def generate(settings: Settings, users: int, gigs: int, messy_rate: float = 0.05, seed: int = 42,
             replace: bool = False) -> Dict[str, int]:
    """Write a generated Gigster dataset into the configured MongoDB database."""
    client, database = open_mongo(settings)
    try:
        with mongo_errors_translated(settings.mongo_url):
            return write_dataset(database, users, gigs, messy_rate, seed, replace)
    finally:
        client.close()
