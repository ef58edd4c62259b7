"""The PostgreSQL schema (mapped classes) and ``SqlAlchemy``, the handle on one database.

Imported as ``db`` in the rest of the code, as in the Gigster brief.
"""
import os
from pathlib import Path
from typing import Optional

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import scoped_session, sessionmaker

from gigsterpg.config import mask_url, sqlalchemy_pg_url
from gigsterpg.exc import ConfigError
from gigsterpg.lib.pg.db.base import Base
from gigsterpg.lib.pg.db.dataset import CsvReject, Dataset
from gigsterpg.lib.pg.db.gig import Gig
from gigsterpg.lib.pg.db.job import ApiJob
from gigsterpg.lib.pg.db.pipeline_run import PipelineRun
from gigsterpg.lib.pg.db.projection import ProjectionHash, ProjectionRun
from gigsterpg.lib.pg.db.skill import Skill
from gigsterpg.lib.pg.db.snapshot import SnapshotStep
from gigsterpg.lib.pg.db.sync_run import SyncFollower, SyncHash, SyncReject, SyncRun, SyncWatermark
from gigsterpg.lib.pg.db.user import User
from gigsterpg.lib.pg.db.user_skill import UserSkill

# The replicated tables, parents before children: the order of the sync.
ALL_TABLES = (Skill.__table__, User.__table__, UserSkill.__table__, Gig.__table__)
# gigsterpg's own bookkeeping, beside the data: every other mapped table (derived, so none is forgotten).
BOOKKEEPING_TABLES = tuple(table for table in Base.metadata.sorted_tables if table not in ALL_TABLES)

# The migrations ship inside the package, so that a plain (non-editable) install finds them.
MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"

__all__ = ["ALL_TABLES", "ApiJob", "BOOKKEEPING_TABLES", "Base", "Gig", "Skill", "SqlAlchemy", "SyncHash",
           "SnapshotStep",
           "SyncReject", "SyncFollower", "SyncRun", "SyncWatermark", "User", "UserSkill", "alembic_config",
           "ProjectionHash", "ProjectionRun", "Dataset", "CsvReject", "PipelineRun"]


def alembic_config(url: str) -> Config:
    """An Alembic Config for the project's migrations, pointed at ``url``."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise ConfigError("migrations not found", f"no env.py in {MIGRATIONS_DIR}",
                          "reinstall gigsterpg (pip install .), the package is incomplete")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # env.py takes the URL from here; '%' would be read as interpolation.
    config.set_main_option("sqlalchemy.url", sqlalchemy_pg_url(url).replace("%", "%%"))
    return config


class SqlAlchemy:
    """One PostgreSQL database: engine, scoped sessions and migrations.

    Args:
        url: a ``postgres://`` or ``postgresql://`` URL; defaults to the
            ``DB_URL_PSQL`` environment variable, read now, not at import.
    """

    Base = Base

    def __init__(self, url: Optional[str] = None, **engine_options):
        url = url or os.environ.get("DB_URL_PSQL")
        if not url:
            raise ConfigError("no PostgreSQL URL", "DB_URL_PSQL is not set",
                              "set DB_URL_PSQL or pass a URL")
        self.url = url
        self.engine: Engine = create_engine(sqlalchemy_pg_url(url), pool_pre_ping=True, **engine_options)
        self.session = scoped_session(sessionmaker(bind=self.engine))

    def __repr__(self) -> str:
        return f"SqlAlchemy({mask_url(self.url)!r})"

    def migrate_head(self) -> None:
        """Apply every migration not applied yet (``alembic upgrade head``)."""
        with self.engine.begin() as connection:
            # Services started together (the sync and the CSV ETL of docker compose) migrate one after the other.
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('gigsterpg migrations'))"))
            config = alembic_config(self.url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def migrate_base(self) -> None:
        """Undo every migration (``alembic downgrade base``): drops the schema."""
        with self.engine.begin() as connection:
            config = alembic_config(self.url)
            config.attributes["connection"] = connection
            command.downgrade(config, "base")

    @property
    def has_existing_tables(self) -> bool:
        """Whether every replicated table exists in the database."""
        names = set(inspect(self.engine).get_table_names())
        return all(table.name in names for table in ALL_TABLES)

    def dispose(self) -> None:
        """Close the sessions and every pooled connection."""
        self.session.remove()
        self.engine.dispose()
