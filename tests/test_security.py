"""No password in any output, log line, run record or exception text.

A role with a known password runs real syncs (one that succeeds, ones that
fail in several ways) with every log switched on; then everything they left
behind is searched for the password.
"""
import os
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from gigsterpg import commands
from gigsterpg.config import Settings
from gigsterpg.exc import GigsterPgError
from tests.helpers import run_cli

PASSWORD = "Kn0wn-S3cret-pw"
ROLE = "gigster_secret"


@pytest.fixture
def secret_url(pg_server_url, template_url):
    """A database owned by a role that logs in with PASSWORD (scram) over the Unix socket."""
    if os.environ.get("TEST_DB_URL_PSQL"):
        pytest.skip("rewrites pg_hba.conf of the embedded server")
    admin = psycopg.connect(pg_server_url, autocommit=True)
    hba = Path(admin.execute("SHOW hba_file").fetchone()[0])
    original = hba.read_text()
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS secret_db WITH (FORCE)"))
    admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(ROLE), sql.Literal(PASSWORD)))
    admin.execute(sql.SQL("CREATE DATABASE secret_db OWNER {}").format(sql.Identifier(ROLE)))
    hba.write_text(f"local all {ROLE} scram-sha-256\n" + original)
    admin.execute("SELECT pg_reload_conf()")
    try:
        yield urlsplit(pg_server_url)._replace(netloc=f"{ROLE}:{PASSWORD}@", path="/secret_db").geturl()
    finally:
        hba.write_text(original)
        admin.execute("SELECT pg_reload_conf()")
        admin.execute("DROP DATABASE IF EXISTS secret_db WITH (FORCE)")
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))
        admin.close()


def test_no_password_anywhere_after_runs_that_succeed_and_fail(secret_url, mongo_url, mongo_db, tmp_path):
    mongo_db.users.insert_many([{"_id": 1, "name": "u", "email": "bad"}, {"_id": 2, "name": "v"}])
    mongo_db.gigs.insert_one({"_id": 1, "name": "g", "state": "done", "poster": 2})
    mongo_with_password = mongo_url.replace("mongodb://", f"mongodb://someone:{PASSWORD}@")
    unreachable_mongo = f"mongodb://someone:{PASSWORD}@127.0.0.1:1/db?serverSelectionTimeoutMS=300"
    wrong_pg = secret_url.replace(PASSWORD, PASSWORD + "-wrong")
    outputs = []
    for args in (
        ["sync", "--pg-url", secret_url, "--mongo-url", mongo_url, "--log-level", "debug"],
        ["sync", "--pg-url", secret_url, "--mongo-url", mongo_url, "--log-level", "debug", "--log-format", "json"],
        ["sync", "--pg-url", secret_url, "--mongo-url", unreachable_mongo, "--log-level", "debug"],
        ["sync", "--pg-url", secret_url, "--mongo-url", mongo_with_password, "--log-level", "debug"],
        ["sync", "--pg-url", wrong_pg, "--mongo-url", mongo_url, "--log-level", "debug", "--debug"],
        ["status", "--pg-url", secret_url, "--log-level", "debug"],
    ):
        result = run_cli(*args, cwd=tmp_path)
        outputs.append(result.stdout + result.stderr)
    assert "Sync run 1 (full) succeeded" in outputs[0] and "FAILED: cannot reach MongoDB" in outputs[2]
    assert "FAILED: PostgreSQL refused the login" in outputs[4]

    errors = []
    for settings in (Settings(pg_url=secret_url, mongo_url=unreachable_mongo),
                     Settings(pg_url=wrong_pg, mongo_url=mongo_url)):
        with pytest.raises(GigsterPgError) as info:
            commands.sync(settings)
        errors.append(f"{info.value} {info.value!r} {info.value.__cause__}")

    with psycopg.connect(secret_url) as connection:
        records = [str(row) for table in ("sync_runs", "sync_rejects") for row in connection.execute(
            sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))]
    assert len(records) >= 3  # runs and the rejected e-mail: there is something to search
    for text in outputs + errors + records:
        assert PASSWORD not in text
        assert secret_url not in text and unreachable_mongo not in text
    assert any("***" in text for text in outputs)  # the URLs are shown, masked


def test_a_wrong_mongodb_password_fails_in_one_line_without_showing_it(pg_url, tmp_path):
    if os.environ.get("TEST_DB_URL_MONGO"):
        pytest.skip("starts a server of its own with --auth")
    import pymongo
    from gigsterpg.fixtures.embedded import EmbeddedMongo
    folder = tmp_path / "mongo-auth"
    server = EmbeddedMongo(folder)  # users are provisioned without auth, then the server restarts with it
    client = pymongo.MongoClient(server.url("admin"))
    client.admin.command("createUser", "reader", pwd=PASSWORD, roles=[{"role": "read", "db": "shop"}])
    client.close()
    server.stop()
    server = EmbeddedMongo(folder, port=server.port, extra_args=("--auth",))
    try:
        base = server.url("shop").replace("mongodb://", "mongodb://reader:{}@") + "&authSource=admin"
        wrong = run_cli("sync", "--pg-url", pg_url, "--mongo-url", base.format(PASSWORD + "x"), "--log-level",
                        "debug", cwd=tmp_path)
        assert wrong.returncode == 1
        failed = [line for line in wrong.stderr.splitlines() if line.startswith("FAILED: ")]
        assert len(failed) == 1 and "Traceback" not in wrong.stderr
        assert failed[0].startswith("FAILED: MongoDB refused the login at mongodb://reader:***@")
        assert failed[0].endswith(", authentication failed, check the user, password and authSource in --mongo-url")
        right = run_cli("sync", "--pg-url", pg_url, "--mongo-url", base.format(PASSWORD), cwd=tmp_path)
        assert "collection 'users' not found" in right.stderr  # logged in: the empty database is what is wrong
        for text in (wrong.stdout, wrong.stderr, right.stdout, right.stderr):
            assert PASSWORD not in text
    finally:
        server.stop()
