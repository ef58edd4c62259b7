"""The CLI as a user runs it: the summary, the subcommands, and one readable line per error."""
import logging
import signal
from urllib.parse import urlsplit

import psycopg
import pytest

from gigsterpg import cli
from gigsterpg.connections import is_transient
from gigsterpg.fixtures.embedded import free_port
from gigsterpg.fixtures.generate import write_dataset
from tests.helpers import CLI_SECRET as SECRET, assert_one_line_failure, run_cli


def test_sync_prints_the_summary_and_the_accounting(tmp_path, pg_url, mongo_url, mongo_db):
    write_dataset(mongo_db, users=120, gigs=240, messy_rate=0.3, seed=1)
    env = {"DB_URL_PSQL": pg_url, "DB_URL_MONGO": mongo_url}
    first = run_cli("--batch-size", "40", "--log-level", "info", cwd=tmp_path, env_extra=env)
    assert first.returncode == 0, first.stderr
    assert "Sync run 1 (full) succeeded." in first.stdout
    assert first.stdout.count("holds") == 2 and "rejected this run:" in first.stdout
    assert "sync run 1 (full) started" in first.stderr, "--log-level info logs the run"

    second = run_cli("sync", "--no-progress", "--log-format", "json", cwd=tmp_path, env_extra=env)
    assert second.returncode == 0
    users_line = next(line for line in second.stdout.splitlines() if line.startswith("users"))
    seen, inserted, updated = (int(value) for value in users_line.split()[1:4])
    assert seen == 120 and inserted == updated == 0

    status = run_cli("status", cwd=tmp_path, env_extra=env)
    assert status.returncode == 0 and "succeeded" in status.stdout and "Open rejects:" in status.stdout


def test_settings_come_from_a_dotenv_file(tmp_path, pg_url, mongo_url, mongo_db):
    mongo_db.users.insert_many([{"_id": i, "name": f"u{i}"} for i in range(10)])
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done"})
    (tmp_path / ".env").write_text(f"DB_URL_PSQL={pg_url}\nDB_URL_MONGO={mongo_url}\n")
    result = run_cli("--collections", "users", "--limit", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines if line.startswith(("users", "gigs"))] == [["users", "5"]]
    assert "partial scan" in result.stdout


def test_unreachable_postgresql(tmp_path, mongo_url):
    result = run_cli("--pg-url", f"postgresql://gigster:{SECRET}@127.0.0.1:1/db", "--mongo-url", mongo_url,
                     cwd=tmp_path)
    assert_one_line_failure(result, "cannot connect to PostgreSQL at postgresql://gigster:***@127.0.0.1:1/db",
                            "check that the server runs")


def test_unreachable_mongodb(tmp_path, pg_url):
    result = run_cli("--pg-url", pg_url, "--mongo-url", f"mongodb://gigster:{SECRET}@127.0.0.1:1/db",
                     cwd=tmp_path)
    assert_one_line_failure(result, "cannot reach MongoDB at mongodb://gigster:***@127.0.0.1:1/db")


def test_bad_urls_and_missing_settings(tmp_path, pg_url):
    assert_one_line_failure(run_cli("--pg-url", f"mysql://u:{SECRET}@h/db", cwd=tmp_path),
                            "bad PostgreSQL URL", code=2)
    assert_one_line_failure(run_cli(cwd=tmp_path), "no PostgreSQL URL", "set DB_URL_PSQL", code=2)
    assert_one_line_failure(run_cli("--pg-url", pg_url, cwd=tmp_path), "no MongoDB URL", code=2)
    assert_one_line_failure(run_cli("--pg-url", pg_url, "--mongo-url", "mongodb://127.0.0.1:1", cwd=tmp_path),
                            "names no database", code=2)


def test_missing_database_and_collection(tmp_path, pg_url, mongo_url, mongo_db):
    parts = urlsplit(pg_url)
    missing = parts._replace(path="/no_such_database").geturl()
    assert_one_line_failure(run_cli("--pg-url", missing, "--mongo-url", mongo_url, cwd=tmp_path),
                            "PostgreSQL database missing", code=2)
    mongo_db.users.insert_one({"_id": 1, "name": "u"})
    assert_one_line_failure(run_cli("--pg-url", pg_url, "--mongo-url", mongo_url, cwd=tmp_path),
                            "collection 'gigs' not found", "check the database name")


def test_role_without_rights(tmp_path, empty_pg_url, mongo_url, pg_server_url):
    admin = psycopg.connect(pg_server_url, autocommit=True)
    with admin.cursor() as cursor:
        cursor.execute("DROP ROLE IF EXISTS gigster_weak")
        cursor.execute("CREATE ROLE gigster_weak LOGIN PASSWORD 'weak-pw'")
    try:
        parts = urlsplit(empty_pg_url)
        weak = parts._replace(netloc="gigster_weak:weak-pw@" + parts.netloc.rsplit("@", 1)[-1]).geturl()
        result = run_cli("--pg-url", weak, "--mongo-url", mongo_url, cwd=tmp_path)
        assert_one_line_failure(result, "the PostgreSQL role lacks a right", "permission denied")
    finally:
        with admin.cursor() as cursor:
            cursor.execute("DROP OWNED BY gigster_weak")
            cursor.execute("DROP ROLE gigster_weak")
        admin.close()


def test_wrong_password(tmp_path, pg_server_url, mongo_url, password_role):
    wrong = urlsplit(pg_server_url)._replace(netloc=f"{password_role[0]}:{SECRET}@").geturl()
    result = run_cli("--pg-url", wrong, "--mongo-url", mongo_url, cwd=tmp_path)
    assert_one_line_failure(result, "PostgreSQL refused the login at postgresql://gigster_pw:***@",
                            "check the user and password in --pg-url")


def _connect_error(url: str) -> psycopg.Error:
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as err:
        return err
    raise AssertionError(f"{url} let us in")


def test_only_what_a_retry_may_cure_is_retried(pg_server_url, pg_url, password_role):
    """The real server's answers: a refused login or a missing database fail at once, a lost or
    refused connection is retried (is_transient asks pg_error, the one classifier)."""
    role = password_role[0]
    assert not is_transient(_connect_error(urlsplit(pg_server_url)._replace(netloc=f"{role}:{SECRET}@").geturl()))
    assert not is_transient(_connect_error(urlsplit(pg_server_url)._replace(netloc=f"{role}@").geturl()))
    assert not is_transient(_connect_error(urlsplit(pg_server_url)._replace(path="/no_such_db").geturl()))
    assert is_transient(_connect_error(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"))
    with psycopg.connect(pg_url, autocommit=True) as victim, psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
        with pytest.raises(psycopg.OperationalError) as lost:
            victim.execute("SELECT 1")
    assert is_transient(lost.value)


def test_a_second_sync_refuses_in_one_line(tmp_path, pg_url, mongo_url, mongo_db, sync_lock):
    mongo_db.users.insert_one({"_id": 1, "name": "u"})
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done"})
    result = run_cli("--pg-url", pg_url, "--mongo-url", mongo_url, cwd=tmp_path)
    assert_one_line_failure(result, "another sync is running", "wait for it to finish")


def test_generate_and_status_in_process(capsys, tmp_path, monkeypatch, pg_url, mongo_url, mongo_db):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["status", "--pg-url", pg_url]) == 0
    assert "No sync has run" in capsys.readouterr().out

    args = ["generate", "--mongo-url", mongo_url, "--users", "30", "--gigs", "60", "--seed", "5"]
    assert cli.main(args) == 0
    assert "Generated 30 users and 60 gigs" in capsys.readouterr().out
    assert cli.main(args) == 2
    assert "is not empty" in capsys.readouterr().err and mongo_db.users.count_documents({}) == 30
    assert cli.main(args + ["--replace"]) == 0
    assert mongo_db.gigs.count_documents({}) == 60

    assert cli.main(["--pg-url", pg_url, "--mongo-url", mongo_url, "--no-progress"]) == 0
    assert "Sync run" in capsys.readouterr().out
    assert cli.main(["status", "--pg-url", pg_url, "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "succeeded" in out and "users" in out


def test_main_called_in_process_leaves_no_signal_handler_or_logging_behind(capsys, tmp_path, monkeypatch, pg_url):
    """main() installs a SIGTERM handler and its own root logging for the run, and puts back what was there."""
    monkeypatch.chdir(tmp_path)
    root, alembic = logging.getLogger(), logging.getLogger("alembic")
    ours = logging.NullHandler()

    def sigterm_of_the_host(signum, frame):  # what a program embedding the CLI had installed
        raise AssertionError("never called")

    previous = signal.signal(signal.SIGTERM, sigterm_of_the_host)
    root.addHandler(ours)
    try:
        before = (list(root.handlers), root.level, alembic.level)
        during = []

        def spy(args, outcome):
            during.append((signal.getsignal(signal.SIGTERM), list(root.handlers), root.level))
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        for outcome, code in ((0, 0), (KeyboardInterrupt(), 130), (RuntimeError("boom"), 1)):
            monkeypatch.setattr(cli, "run", lambda args: spy(args, outcome))
            assert cli.main(["status", "--log-level", "debug"]) == code
            handler, handlers, level = during[-1]
            assert handler is not sigterm_of_the_host and ours not in handlers and level == logging.DEBUG
            assert signal.getsignal(signal.SIGTERM) is sigterm_of_the_host, outcome
            assert (list(root.handlers), root.level, alembic.level) == before, outcome
        monkeypatch.undo()
        monkeypatch.chdir(tmp_path)
        assert cli.main(["status", "--pg-url", pg_url, "--log-level", "info", "--log-format", "json"]) == 0
        assert cli.main(["status", "--pg-url", "mysql://nowhere/db"]) == 2  # a refusal as well as a success
        assert signal.getsignal(signal.SIGTERM) is sigterm_of_the_host
        assert (list(root.handlers), root.level, alembic.level) == before
        assert "bad PostgreSQL URL" in capsys.readouterr().err
    finally:
        signal.signal(signal.SIGTERM, previous)
        root.removeHandler(ours)


def test_unexpected_errors_are_one_line_unless_debug(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def explode(args):
        raise RuntimeError(f"boom at postgresql://u:{SECRET}@h/db")

    monkeypatch.setattr(cli, "run", explode)
    assert cli.main(["status"]) == 1
    err = capsys.readouterr().err
    assert "FAILED: unexpected error RuntimeError: boom" in err and SECRET not in err and "Traceback" not in err
    assert cli.main(["status", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_bad_arguments_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--batch-size", "0"])
    assert info.value.code == 2 and "not a whole number of 1 or more" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["generate", "--messy-rate", "2"])
    assert "between 0 and 1" in capsys.readouterr().err


def test_demo_twice(tmp_path):
    folder = tmp_path / "demo"
    first = run_cli("demo", "--folder", str(folder), "--users", "150", "--gigs", "300", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("holds") == 2, first.stdout
    second = run_cli("demo", "--folder", str(folder), "--users", "150", "--gigs", "300", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    table = [line for line in second.stdout.splitlines()
             if line.startswith(("users ", "gigs ")) and line.split()[1].isdigit()]
    assert len(table) == 2, second.stdout
    for line in table:
        seen, inserted, updated, unchanged, deleted = (int(v) for v in line.split()[1:6])
        assert inserted == updated == deleted == 0 and unchanged > 0, line
    assert second.stderr == "", "a clean demo prints nothing on stderr"


@pytest.mark.parametrize("argv, shown", [
    (["--pg-uri", "postgresql://user:s3cr3t-pw@host/db"], "unrecognized arguments: --pg-uri (values are not shown)"),
    (["--pg-uri=postgresql://user:s3cr3t-pw@host/db"], "unrecognized arguments: --pg-uri (values are not shown)"),
    (["sync", "postgresql://user:s3cr3t-pw@host/db"], "unrecognized arguments: (a value) (values are not shown)"),
    (["status", "--log-level", "s3cr3t-pw"], "argument --log-level: invalid choice (choose from"),
    (["sync", "--batch-size", "s3cr3t-pw"], "argument --batch-size: the value is not a whole number"),
])
def test_a_mistyped_argument_never_echoes_its_value(capsys, argv, shown):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and shown in err and "s3cr3t-pw" not in err
