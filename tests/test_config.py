"""Settings, URL handling and logging: pure, no server."""
import io
import json
import logging

import pytest

from gigsterpg import logs
from gigsterpg.config import Settings, load_settings, mask_url, mongo_database_name, sqlalchemy_pg_url
from gigsterpg.exc import ConfigError


def test_mask_url_hides_every_password():
    text = "pg postgresql://gigster:s3cret@db:5432/x and mongodb://u:p%40ss@m:27017/y?authSource=admin"
    masked = mask_url(text)
    assert "s3cret" not in masked and "p%40ss" not in masked
    assert "postgresql://gigster:***@db:5432/x" in masked and "mongodb://u:***@m:27017/y" in masked
    assert mask_url("postgresql://nopassword@db/x") == "postgresql://nopassword@db/x"


@pytest.mark.parametrize("url", ["postgres://u:p@h/db", "postgresql://u:p@h/db"])
def test_pg_urls_are_given_the_psycopg_driver(url):
    assert sqlalchemy_pg_url(url) == "postgresql+psycopg://u:p@h/db"


@pytest.mark.parametrize("url", ["mysql://u:secret@h/db", "h/db", ""])
def test_bad_pg_urls_are_refused_without_the_password(url):
    with pytest.raises(ConfigError) as info:
        sqlalchemy_pg_url(url)
    assert "secret" not in str(info.value) and "postgresql://" in str(info.value)


def test_mongo_database_comes_from_the_url_path():
    assert mongo_database_name("mongodb://mongo:27017/data-practical") == "data-practical"
    assert mongo_database_name("mongodb://u:p@a,b/db?replicaSet=rs") == "db"
    with pytest.raises(ConfigError, match="names no database"):
        mongo_database_name("mongodb://mongo:27017/")
    with pytest.raises(ConfigError, match="bad MongoDB URL"):
        mongo_database_name("http://mongo/db")


def test_flags_override_environment_which_overrides_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("DB_URL_PSQL=postgresql://from-dotenv/db\nDB_URL_MONGO=mongodb://dotenv/m\n"
                      "GIGSTERPG_BATCH_SIZE=7\n")
    settings = load_settings(environ={"DB_URL_MONGO": "mongodb://env/e"}, dotenv_path=dotenv)
    assert settings == Settings(pg_url="postgresql://from-dotenv/db", mongo_url="mongodb://env/e", batch_size=7)
    settings = load_settings({"pg_url": "postgresql://flag/f", "batch_size": None}, environ={}, dotenv_path=dotenv)
    assert settings.pg_url == "postgresql://flag/f" and settings.batch_size == 7
    assert settings.mongo_database == "m"


def test_missing_settings_say_what_to_set(tmp_path):
    settings = load_settings(environ={}, dotenv_path=tmp_path / "none")
    with pytest.raises(ConfigError, match="DB_URL_PSQL"):
        settings.require_pg()
    with pytest.raises(ConfigError, match="DB_URL_MONGO"):
        settings.require_mongo()
    assert Settings(mongo_url="mongodb://h/", mongo_db="explicit").mongo_database == "explicit"


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_bad_batch_size_is_refused(value, tmp_path):
    with pytest.raises(ConfigError, match="batch size"):
        load_settings({"batch_size": value}, environ={}, dotenv_path=tmp_path / "none")


def test_json_logs_mask_passwords():
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    logging.getLogger("gigsterpg.test").info("connecting to %s", "postgresql://u:hunter2@h/db")
    try:
        raise ValueError("mongodb://u:hunter2@h/db")
    except ValueError:
        logging.getLogger("gigsterpg.test").exception("failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == "connecting to postgresql://u:***@h/db" and lines[0]["level"] == "info"
    assert "hunter2" not in stream.getvalue() and "traceback" in lines[1]


def test_text_logs():
    stream = io.StringIO()
    logs.configure("warning", "text", stream)
    logging.getLogger("gigsterpg.test").info("hidden")
    logging.getLogger("gigsterpg.test").warning("shown")
    assert "hidden" not in stream.getvalue() and "WARNING gigsterpg.test: shown" in stream.getvalue()


def test_incremental_settings_come_from_the_environment(tmp_path):
    env = {"GIGSTERPG_INCREMENTAL": "yes", "GIGSTERPG_RECONCILE_EVERY": "24", "GIGSTERPG_INCREMENTAL_OVERLAP_S": "60"}
    settings = load_settings(environ=env, dotenv_path=tmp_path / "none")
    assert (settings.incremental, settings.reconcile_every, settings.overlap_s) == (True, 24, 60.0)
    defaults = load_settings(environ={}, dotenv_path=tmp_path / "none")
    assert (defaults.incremental, defaults.reconcile_every, defaults.overlap_s) == (False, 10, 300.0)


@pytest.mark.parametrize("name, value", [("GIGSTERPG_INCREMENTAL", "maybe"), ("GIGSTERPG_RECONCILE_EVERY", "-1"),
                                         ("GIGSTERPG_INCREMENTAL_OVERLAP_S", "soon")])
def test_bad_incremental_settings_are_refused(tmp_path, name, value):
    with pytest.raises(ConfigError, match=f"bad {name}"):
        load_settings(environ={name: value}, dotenv_path=tmp_path / "none")
