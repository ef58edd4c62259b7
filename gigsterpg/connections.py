"""Opening the two databases, and translating driver errors into gigsterpg's own.

The only place that knows how psycopg, SQLAlchemy and pymongo report a
refused login or an unreachable server.
"""
import contextlib
import logging
from urllib.parse import urlsplit

import psycopg
import pymongo
import sqlalchemy.exc
from alembic.util import CommandError
from pymongo import errors as mongo_errors

from gigsterpg.config import Settings, mask_url
from gigsterpg.exc import (AuthError, ConfigError, ConnectError, GigsterPgError, PrivilegeError, SourceError,
                           TerminalError, TransientError)
from gigsterpg.lib.pg.db import SqlAlchemy
from gigsterpg.text import shown

logger = logging.getLogger(__name__)

MONGO_TIMEOUT_MS = 5000
PG_CONNECT_TIMEOUT_S = 10


# MongoDB server codes that mean "try again": shutting down, stepped down, interrupted, network.
MONGO_TRANSIENT_CODES = frozenset({6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436})


def is_transient(err: BaseException) -> bool:
    """Whether a retry may cure ``err``: a lost connection or a server restarting, not bad data or settings."""
    if isinstance(err, TransientError):
        return True
    if isinstance(err, (psycopg.OperationalError, psycopg.InterfaceError)):
        # Lost connection, server shutting down or starting (57P01, 57P03), deadlock or serialization failure.
        # A refused login or a missing database is no such thing: pg_error is the one that tells them apart.
        return not isinstance(pg_error(err, ""), (AuthError, ConfigError))
    if isinstance(err, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
        return is_transient(err.orig) if err.orig is not None else True
    if isinstance(err, (mongo_errors.AutoReconnect, mongo_errors.CursorNotFound)):
        return True
    if isinstance(err, mongo_errors.OperationFailure):
        return err.code in MONGO_TRANSIENT_CODES
    return isinstance(err, mongo_errors.ConnectionFailure)


def short_reason(err: BaseException) -> str:
    """The first clause of a driver's message, password masked: what a person needs in one line.

    pymongo appends its timeouts and topology to the message, psycopg a hint on further lines.
    """
    text = str(err).strip()
    for tail in (", Timeout:", " (configured timeouts", ", full error:"):
        text = text.split(tail)[0]
    text = text.splitlines()[0] if text else ""
    return mask_url(text or type(err).__name__)


# SQLSTATEs of a refused login: invalid_authorization_specification, invalid_password.
LOGIN_REFUSED = ("28000", "28P01")


def pg_error(err: Exception, url: str, setting: str = "DB_URL_PSQL") -> GigsterPgError:
    """The gigsterpg error for a psycopg or SQLAlchemy error met while using ``url`` (given by ``setting``)."""
    orig = getattr(err, "orig", None) or err
    message = mask_url(str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__)
    where = mask_url(url)
    if isinstance(orig, psycopg.errors.InsufficientPrivilege):
        return PrivilegeError(f"the PostgreSQL role lacks a right on {where}", message,
                              "grant it CREATE and USAGE on the schema and ownership of gigsterpg's tables"
                              " (docs/configuration.md, 'Least privileges')")
    if isinstance(orig, psycopg.OperationalError):
        sqlstate = getattr(orig, "sqlstate", None)
        if sqlstate in LOGIN_REFUSED or any(text in message for text in ("authentication failed",
                                                                         "no password supplied")):
            return AuthError(f"PostgreSQL refused the login at {where}", message,
                             f"check the user and password in {setting}", url=where)
        if sqlstate == "3D000" or ("does not exist" in message and "database" in message):
            name = urlsplit(url).path.lstrip("/") if "://" in (url or "") else ""
            create = f"CREATE DATABASE \"{name}\" (or: createdb {name})" if name else "createdb"
            return ConfigError(f"PostgreSQL database missing at {where}", message,
                               f"create it with {create} or fix the database name in {setting}", value=where)
        return ConnectError(f"cannot connect to PostgreSQL at {where}", message,
                            f"check that the server runs and {setting} points at it", url=where)
    if isinstance(orig, psycopg.InterfaceError):
        return TransientError(f"lost the connection to PostgreSQL at {where}", message, "run the sync again")
    return GigsterPgError(f"PostgreSQL error at {where}", message, "see the log, or rerun with --debug")


@contextlib.contextmanager
def pg_errors(url: str, setting: str = "DB_URL_PSQL"):
    """Translate psycopg/SQLAlchemy errors raised inside the block; hints name ``setting``."""
    try:
        yield
    except (psycopg.Error, sqlalchemy.exc.DBAPIError, sqlalchemy.exc.OperationalError) as err:
        raise pg_error(err, url, setting) from err


def open_pg(settings: Settings) -> SqlAlchemy:
    """A SqlAlchemy handle on the configured database, its connection checked."""
    url = settings.require_pg()
    pg = SqlAlchemy(url, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "gigsterpg"})
    with pg_errors(url):
        with pg.engine.connect():
            pass
    return pg


def migrate(pg: SqlAlchemy) -> None:
    """Bring the schema to the newest migration."""
    try:
        with pg_errors(pg.url):
            pg.migrate_head()
    except CommandError as err:
        raise TerminalError("cannot migrate the PostgreSQL schema", str(err),
                            "the database may have been migrated by a newer gigsterpg; upgrade this one") from err


def mongo_error(err: Exception, url: str) -> GigsterPgError:
    """The gigsterpg error for a pymongo error met while using ``url``."""
    where = mask_url(url)
    message = short_reason(err)
    if isinstance(err, mongo_errors.OperationFailure) and err.code in (18, 13):
        return AuthError(f"MongoDB refused the login at {where}", message,
                         "check the user, password and authSource in DB_URL_MONGO", url=where)
    if isinstance(err, (mongo_errors.ConfigurationError, mongo_errors.InvalidURI)):
        return ConfigError(f"bad MongoDB URL {where}", message, "fix DB_URL_MONGO", value=where)
    if isinstance(err, (mongo_errors.ServerSelectionTimeoutError, mongo_errors.ConnectionFailure)):
        return ConnectError(f"cannot reach MongoDB at {where}", message,
                            "check that the server runs and DB_URL_MONGO points at it", url=where)
    return GigsterPgError(f"MongoDB error at {where}", message, "see the log, or rerun with --debug")


@contextlib.contextmanager
def mongo_errors_translated(url: str):
    """Translate pymongo errors raised inside the block."""
    try:
        yield
    except mongo_errors.PyMongoError as err:
        raise mongo_error(err, url) from err


def open_mongo(settings: Settings):
    """(client, database) for the configured MongoDB, the server checked with a ping."""
    url = settings.require_mongo()
    name = settings.mongo_database
    with mongo_errors_translated(url):
        try:
            client = pymongo.MongoClient(url, serverSelectionTimeoutMS=MONGO_TIMEOUT_MS, appname="gigsterpg",
                                         tz_aware=True)
        except (ValueError, OSError) as err:  # pymongo's word on a URL check_mongo_url let through, a TLS file
            raise ConfigError(f"bad MongoDB URL {shown(url)}", short_reason(err), "fix DB_URL_MONGO (or"
                              " --mongo-url)", value=mask_url(url)) from None
        try:
            client.admin.command("ping")
        except BaseException:
            client.close()
            raise
    return client, client[name]


def require_collections(database, names, url: str) -> None:
    """Refuse to sync from a collection that does not exist (a wrong database name would delete everything)."""
    with mongo_errors_translated(url):
        present = set(database.list_collection_names())
    for name in names:
        if name not in present:
            raise SourceError(f"collection {name!r} not found in MongoDB database {database.name!r}",
                              "a sync from it would delete every row it replicated",
                              "check the database name at the end of DB_URL_MONGO", collection=name)
