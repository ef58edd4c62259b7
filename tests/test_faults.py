"""The kill-point variable (GIGSTERPG_KILL_AT): read when a point is passed, never at import; a malformed
value fails the run that uses it with one line, before the run does anything."""
import subprocess
import sys

import psycopg
import pytest

from gigsterpg import faults
from gigsterpg.exc import ConfigError
from gigsterpg.lib.pg.sync.engine.runner import run_sync
from tests.helpers import assert_one_line_failure, run_cli


@pytest.mark.parametrize("value, expected",
                         [("", None), ("merged", ("merged", 1)), ("committed:12", ("committed", 12))])
def test_a_well_formed_value_is_read_when_used(monkeypatch, value, expected):
    monkeypatch.setenv(faults.ENV, value)
    assert faults.target() == expected
    faults.check()
    faults.point("finished")  # not the target: passes


@pytest.mark.parametrize("value", ["merged:0", "merged:x", "merged:", "merged:-1", "nowhere:1", "MERGED:1", ":3"])
def test_a_malformed_value_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv(faults.ENV, value)
    with pytest.raises(ConfigError, match=f"bad {faults.ENV} {value!r}, it must be <point>:<n> with a point among"
                                          " fetched, merged, committed, deleting, finished") as refused:
        faults.check()
    assert refused.value.value == value
    with pytest.raises(ConfigError):
        faults.point("merged")


def test_a_malformed_value_does_not_break_an_import():
    result = subprocess.run([sys.executable, "-c", "import gigsterpg.lib.pg.sync.engine.bulk, gigsterpg.cli"],
                            env={"GIGSTERPG_KILL_AT": "merged:oops", "PATH": "/usr/bin:/bin"}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_malformed_value_fails_the_run_before_it_starts(monkeypatch, pg, pg_url, mongo_db):
    mongo_db.users.insert_one({"_id": 1, "name": "Ada"})
    monkeypatch.setenv(faults.ENV, "merged:two")
    with pytest.raises(ConfigError, match="bad GIGSTERPG_KILL_AT 'merged:two'"):
        run_sync(pg.engine, mongo_db)
    with psycopg.connect(pg_url) as connection:
        assert connection.execute("SELECT count(*) FROM sync_runs").fetchone() == (0,)


def test_the_cli_says_it_in_one_line(tmp_path, pg_url, mongo_url, mongo_db):
    mongo_db.users.insert_one({"_id": 1, "name": "Ada"})
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done"})
    env = {"DB_URL_PSQL": pg_url, "DB_URL_MONGO": mongo_url, faults.ENV: "commited:1"}
    result = run_cli("sync", "--no-progress", cwd=tmp_path, env_extra=env)
    assert_one_line_failure(result, "bad GIGSTERPG_KILL_AT 'commited:1'", "fix or unset GIGSTERPG_KILL_AT", code=2)
    with psycopg.connect(pg_url) as connection:
        assert connection.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_a_well_formed_value_kills_at_its_point(tmp_path, pg_url, mongo_url, mongo_db):
    """The second batch's merge dies uncommitted; the first batch stays."""
    mongo_db.users.insert_many([{"_id": i, "name": f"user {i}"} for i in range(10)])
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done"})
    # One user stored first: the run merges batch by batch (into empty tables it would be a first load, one
    # transaction that a kill rolls back whole: tests/test_firstload.py).
    env = {"DB_URL_PSQL": pg_url, "DB_URL_MONGO": mongo_url}
    assert run_cli("sync", "--no-progress", "--limit", "1", cwd=tmp_path, env_extra=env).returncode == 0
    env[faults.ENV] = "merged:2"
    result = run_cli("sync", "--no-progress", "--batch-size", "4", cwd=tmp_path, env_extra=env)
    assert result.returncode == -9, result.stderr
    with psycopg.connect(pg_url) as connection:
        assert connection.execute("SELECT count(*) FROM users").fetchone() == (4,)


def test_a_batch_point_names_a_document_and_kills_once_with_a_marker(monkeypatch, tmp_path):
    monkeypatch.setenv(faults.ENV, "load-batch:30")
    faults.batch_point("load-batch", 0, 29)  # documents 1 to 29: not this batch
    faults.batch_point("load-batch", 30, 7)  # 31 to 37
    faults.batch_point("fetched", 28, 7)  # another point
    marker = tmp_path / "killed"
    marker.touch()  # a process died there already
    monkeypatch.setenv(faults.ONCE, str(marker))
    faults.batch_point("load-batch", 28, 7)  # 29 to 35 holds the 30th: it would die, but once was enough
