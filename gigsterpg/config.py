"""Settings: read once by the CLI from the environment and ``.env``, then passed down."""
import dataclasses
import os
import warnings
from pathlib import Path
from typing import Mapping, Optional
from urllib.parse import urlsplit

from dotenv import dotenv_values

from gigsterpg.exc import ConfigError
# The one masker, in a module of its own that the error family imports too; its names stay importable from here.
from gigsterpg.masking import (MASK, mask_secrets, mask_secrets_in, mask_url, remember_secret,  # noqa: F401
                               remember_secrets)
from gigsterpg.text import shown

DEFAULT_BATCH_SIZE = 5000
DEFAULT_RECONCILE_EVERY = 10
DEFAULT_OVERLAP_S = 300.0
DEFAULT_API_MAX_JOBS = 4
DEFAULT_API_JOBS_KEEP = 1000
DEFAULT_DATASETS_SCHEMA = "datasets"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")

PG_SETTING = "DB_URL_PSQL (or --pg-url)"
MONGO_SETTING = "DB_URL_MONGO (or --mongo-url)"
_PG_EXAMPLE = "e.g. postgresql://user:password@host:5432/db"


def check_pg_conninfo(value: str, setting: str) -> str:
    """``value`` if libpq can read it (a URL or key=value pairs, ports from 1 to 65535), else a ConfigError
    naming ``setting`` (the flag or variable it came from) and the fix, the password masked."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict
    shown = repr(mask_secrets(value))
    try:
        params = conninfo_to_dict(value)
    except ProgrammingError as err:
        reason = (str(err).strip().splitlines() or ["unreadable"])[0]
        raise ConfigError(f"bad PostgreSQL connection string {shown} in {setting}", mask_secrets(reason),
                          f"fix {setting}: a URL, {_PG_EXAMPLE}, or key=value pairs, e.g. host=db port=5432"
                          " dbname=x user=u password=...", value=shown) from None
    for port in str(params.get("port") or "").split(","):
        if port.strip() and not (port.strip().isdigit() and 1 <= int(port) <= 65535):
            raise ConfigError(f"bad port in the PostgreSQL connection string {shown} in {setting}",
                              "a port is a number from 1 to 65535 (several hosts: host1:port1,host2:port2)",
                              f"fix the port in {setting}", value=shown)
    return value


def sqlalchemy_pg_url(url: str) -> str:
    """Turn a ``postgres://`` or ``postgresql://`` URL into one SQLAlchemy loads with psycopg (3)."""
    scheme, sep, rest = (url or "").partition("://")
    if not sep or scheme not in ("postgres", "postgresql", "postgresql+psycopg"):
        raise ConfigError(
            f"bad PostgreSQL URL {repr(mask_secrets(url))}",
            "it must start with postgres:// or postgresql://",
            f"set {PG_SETTING}, {_PG_EXAMPLE}",
            value=repr(mask_secrets(url)),
        )
    check_pg_conninfo(url.replace("postgresql+psycopg://", "postgresql://", 1), PG_SETTING)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    try:
        make_url("postgresql+psycopg://" + rest).port
    except (ValueError, ArgumentError):
        raise ConfigError(f"bad PostgreSQL URL {repr(mask_secrets(url))} in {PG_SETTING}",
                          "gigsterpg's own database takes one host:port in the URL",
                          f"fix {PG_SETTING}: {_PG_EXAMPLE} (several hosts: ?host=h1:5432&host=h2:5432)",
                          value=repr(mask_secrets(url))) from None
    return "postgresql+psycopg://" + rest


def check_mongo_url(url: str, setting: str = MONGO_SETTING) -> str:
    """``url`` if pymongo can read it (checked without a DNS look-up), else a ConfigError naming ``setting``."""
    from pymongo.errors import PyMongoError
    from pymongo.uri_parser import parse_uri
    shown = repr(mask_secrets(url))
    if not url or not url.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError(f"bad MongoDB URL {shown} in {setting}", "it must start with mongodb:// or mongodb+srv://",
                          f"fix {setting}, e.g. mongodb://mongo:27017/data-practical", value=shown)
    try:
        if url.startswith("mongodb://"):
            with warnings.catch_warnings():  # an unknown option: pymongo warns again when connecting
                warnings.simplefilter("ignore")
                parse_uri(url, warn=True)
        else:  # mongodb+srv:// (one host, no port) asks the DNS: pymongo's own check comes when connecting
            urlsplit(url).port
    except (PyMongoError, ValueError, OSError) as err:  # OSError: a TLS file named in the options
        reason = (str(err).strip().splitlines() or ["unreadable"])[0]
        raise ConfigError(f"bad MongoDB URL {shown} in {setting}", mask_secrets(reason),
                          f"fix {setting}, e.g. mongodb://user:password@mongo:27017/data-practical"
                          " (a password's special characters %-encoded)", value=shown) from None
    return url


def mongo_database_name(url: str) -> str:
    """The database named by the path of a MongoDB URI (``mongodb://h/db`` -> ``db``)."""
    check_mongo_url(url)
    name = urlsplit(url).path.lstrip("/")
    if not name:
        raise ConfigError(
            f"MongoDB URL {repr(mask_secrets(url))} names no database",
            "the database is the last path segment of the URL",
            "append it, e.g. mongodb://mongo:27017/data-practical",
            value=repr(mask_secrets(url)),
        )
    return name


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a command needs to know, resolved from flags, environment and ``.env``."""

    # Not in the repr (nor the other connection strings and the token below): a logged Settings shows no password.
    pg_url: Optional[str] = dataclasses.field(default=None, repr=False)
    mongo_url: Optional[str] = dataclasses.field(default=None, repr=False)
    mongo_db: Optional[str] = None
    batch_size: int = DEFAULT_BATCH_SIZE
    # Incremental runs: the default once a full run has succeeded (GIGSTERPG_INCREMENTAL); every
    # ``reconcile_every``-th run is a full one, which finds deletions and documents without a usable
    # ``updated`` (0: only on demand); the watermark is read ``overlap_s`` seconds early.
    incremental: bool = False
    reconcile_every: int = DEFAULT_RECONCILE_EVERY
    overlap_s: float = DEFAULT_OVERLAP_S
    # The HTTP API's bearer token (GIGSTERPG_API_TOKEN), how many of its jobs run at once, and how many ended
    # jobs of each kind api_jobs keeps (GIGSTERPG_API_JOBS_KEEP; older ones are deleted, active ones never).
    api_token: Optional[str] = dataclasses.field(default=None, repr=False)
    api_max_jobs: int = DEFAULT_API_MAX_JOBS
    # The daily snapshots (pipeline): the source database, the CSV file, the data folder, and glob patterns of
    # schema.table narrowing the tables extracted (GIGSTERPG_SNAPSHOT_SOURCE_PG, _CSV, _ROOT, _TABLES).
    snapshot_source_pg: Optional[str] = dataclasses.field(default=None, repr=False)
    snapshot_csv: Optional[str] = None
    snapshot_root: str = "data"
    snapshot_tables: Optional[str] = None
    # export-orders: the shop database it reads (GIGSTERPG_ORDERS_SOURCE_PG, flag --pg), the tax rate as a
    # decimal text (GIGSTERPG_TAX_RATE, default 0.15) and the zone of an order's calendar date (GIGSTERPG_TIME_ZONE).
    orders_source_pg: Optional[str] = dataclasses.field(default=None, repr=False)
    tax_rate: str = "0.15"
    time_zone: str = "UTC"
    # A full sync on this Dask cluster (GIGSTERPG_DASK_SCHEDULER, flag --scheduler), e.g. tcp://host:8786.
    dask_scheduler: Optional[str] = None
    api_jobs_keep: int = DEFAULT_API_JOBS_KEEP
    # CSV sources and SQL transforms: the schema their tables go to (GIGSTERPG_DATASETS_SCHEMA), the dataset
    # GET /read/first-chunk answers (GIGSTERPG_READ_DEFAULT), and whether /read answers without the token
    # (GIGSTERPG_READ_PUBLIC; the job routes always want it).
    datasets_schema: str = DEFAULT_DATASETS_SCHEMA
    read_default: Optional[str] = None
    read_public: bool = False
    # The folder whose files pipelines started over HTTP may read (GIGSTERPG_FILES_ROOT): load-csv's paths,
    # snapshots' CSV, transform's SQL; unset, the API reads no file.
    files_root: Optional[str] = None

    def require_pg(self) -> str:
        """The PostgreSQL URL, or a ConfigError saying how to give one."""
        if not self.pg_url:
            raise ConfigError("no PostgreSQL URL", "DB_URL_PSQL is not set",
                              "set DB_URL_PSQL (environment or .env) or pass --pg-url")
        sqlalchemy_pg_url(self.pg_url)
        return self.pg_url

    def require_mongo(self) -> str:
        """The MongoDB URL, or a ConfigError saying how to give one."""
        if not self.mongo_url:
            raise ConfigError("no MongoDB URL", "DB_URL_MONGO is not set",
                              "set DB_URL_MONGO (environment or .env) or pass --mongo-url")
        check_mongo_url(self.mongo_url)
        if not self.mongo_db:
            mongo_database_name(self.mongo_url)
        return self.mongo_url

    @property
    def mongo_database(self) -> str:
        """The MongoDB database: explicit setting first, else the URL's path."""
        return self.mongo_db or mongo_database_name(self.require_mongo())


def load_settings(overrides: Optional[Mapping[str, object]] = None,
                  environ: Optional[Mapping[str, str]] = None,
                  dotenv_path: Optional[Path] = None) -> Settings:
    """Build Settings: flags override the environment, which overrides ``.env``.

    Args:
        overrides: values from command-line flags; None means "not given".
        environ: the environment (default ``os.environ``).
        dotenv_path: the ``.env`` file (default ``./.env``, if it exists).
    """
    environ = os.environ if environ is None else environ
    dotenv_path = Path(".env") if dotenv_path is None else dotenv_path
    values = {k: v for k, v in dotenv_values(dotenv_path).items() if v is not None} if dotenv_path.is_file() else {}
    values.update({k: v for k, v in environ.items() if k.startswith(("DB_URL_", "GIGSTERPG_"))})
    settings = {
        "pg_url": values.get("DB_URL_PSQL") or None,
        "mongo_url": values.get("DB_URL_MONGO") or None,
        "mongo_db": values.get("GIGSTERPG_MONGO_DB") or None,
    }
    if values.get("GIGSTERPG_BATCH_SIZE"):
        settings["batch_size"] = _positive_int("GIGSTERPG_BATCH_SIZE", values["GIGSTERPG_BATCH_SIZE"])
    if "GIGSTERPG_INCREMENTAL" in values:
        settings["incremental"] = _flag("GIGSTERPG_INCREMENTAL", values["GIGSTERPG_INCREMENTAL"])
    if values.get("GIGSTERPG_RECONCILE_EVERY"):
        settings["reconcile_every"] = _number("GIGSTERPG_RECONCILE_EVERY", values["GIGSTERPG_RECONCILE_EVERY"], int)
    if values.get("GIGSTERPG_INCREMENTAL_OVERLAP_S"):
        settings["overlap_s"] = _number("GIGSTERPG_INCREMENTAL_OVERLAP_S", values["GIGSTERPG_INCREMENTAL_OVERLAP_S"],
                                        float)
    if values.get("GIGSTERPG_API_TOKEN"):
        settings["api_token"] = values["GIGSTERPG_API_TOKEN"]
    if values.get("GIGSTERPG_API_MAX_JOBS"):
        settings["api_max_jobs"] = _positive_int("GIGSTERPG_API_MAX_JOBS", values["GIGSTERPG_API_MAX_JOBS"])
    for key in ("source_pg", "csv", "root", "tables"):
        if values.get(f"GIGSTERPG_SNAPSHOT_{key.upper()}"):
            settings[f"snapshot_{key}"] = values[f"GIGSTERPG_SNAPSHOT_{key.upper()}"]
    for key in ("orders_source_pg", "tax_rate", "time_zone"):
        if values.get(f"GIGSTERPG_{key.upper()}"):
            settings[key] = values[f"GIGSTERPG_{key.upper()}"]
    if values.get("GIGSTERPG_API_JOBS_KEEP"):
        settings["api_jobs_keep"] = _positive_int("GIGSTERPG_API_JOBS_KEEP", values["GIGSTERPG_API_JOBS_KEEP"])
    if values.get("GIGSTERPG_DASK_SCHEDULER"):
        settings["dask_scheduler"] = values["GIGSTERPG_DASK_SCHEDULER"]
    if values.get("GIGSTERPG_DATASETS_SCHEMA"):
        settings["datasets_schema"] = values["GIGSTERPG_DATASETS_SCHEMA"]
    if values.get("GIGSTERPG_READ_DEFAULT"):
        settings["read_default"] = values["GIGSTERPG_READ_DEFAULT"]
    if values.get("GIGSTERPG_FILES_ROOT"):
        settings["files_root"] = values["GIGSTERPG_FILES_ROOT"]
    if "GIGSTERPG_READ_PUBLIC" in values:
        settings["read_public"] = _flag("GIGSTERPG_READ_PUBLIC", values["GIGSTERPG_READ_PUBLIC"])
    for key, value in (overrides or {}).items():
        if value is not None:
            settings[key] = value
    remember_secrets(*(settings.get(key) for key in ("pg_url", "mongo_url", "snapshot_source_pg", "orders_source_pg")))
    remember_secret(settings.get("api_token"))
    if "batch_size" in settings:
        settings["batch_size"] = _positive_int("batch size", settings["batch_size"])
    return Settings(**settings)


def _positive_int(name: str, value) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise ConfigError(f"bad {name} {shown(value)}", "it must be a whole number of 1 or more",
                          "give a positive number", value=value)
    return number


def _flag(name: str, value: str) -> bool:
    text = (value or "").strip().lower()
    if text not in _TRUE + _FALSE:
        raise ConfigError(f"bad {name} {shown(value)}", "it must be true or false", "set it to true or false",
                          value=value)
    return text in _TRUE


def _number(name: str, value, kind):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = -1
    if not 0 <= number < float("inf"):
        raise ConfigError(f"bad {name} {shown(value)}", "it must be a number of 0 or more",
                          "give a number of 0 or more",
                          value=value)
    return number
