"""Alembic environment: migrations run against the URL the caller gives.

``alembic upgrade head`` from the project root reads DB_URL_PSQL;
``SqlAlchemy.migrate_head()`` passes its own connection instead.
"""
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine

from gigsterpg.config import sqlalchemy_pg_url
from gigsterpg.lib.pg.db import Base

config = context.config
target_metadata = Base.metadata

# Only the plain `alembic` command configures logging; the CLI has its own.
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("DB_URL_PSQL")
    if not url:
        raise SystemExit("FAILED: no PostgreSQL URL, DB_URL_PSQL is not set, set it and run alembic again")
    return sqlalchemy_pg_url(url)


def run_migrations_offline() -> None:
    """Emit the SQL of the migrations without a database (``alembic upgrade --sql``)."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations over the caller's connection, or a new one."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url())
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
