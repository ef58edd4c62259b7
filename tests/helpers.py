"""What several test modules share: the CLI in a subprocess, database copies, table digests, waiting.

Test modules import from here (and from ``tests.figures``), never from one another.
"""
import contextlib
import hashlib
import os
import subprocess
import sys
import time
import uuid
from typing import Callable, Mapping, Optional, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pymongo.errors
import pytest
from psycopg import sql
from sqlalchemy import text

from tests.figures import FIGURES

T = TypeVar("T")

TEMPLATE = "gigsterpg_test_template"  # the database migrated once per session (conftest.template_url)
CLI_SECRET = "topsecret-pw"  # a password the CLI tests put in URLs; no output may show it
API_TOKEN = "test-token-0123456789"
API_AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def kill_matrix(points: list) -> list:
    """A kill matrix as the suite runs it: of the hits tried at each (…, point), the first and the last.

    The kill trials of a point differ only in how far the run got; its first and last hit are the edges (nothing
    written yet, nearly all written). ``GIGSTERPG_SOAK`` set (``make reliability`` sets it) runs every hit listed.
    """
    if os.environ.get("GIGSTERPG_SOAK"):
        return list(points)
    hits: dict = {}
    for each in points:
        hits.setdefault(each[:-1], []).append(each[-1])
    return [each for each in points if each[-1] in (min(hits[each[:-1]]), max(hits[each[:-1]]))]


@contextlib.contextmanager
def mongo_fail_point(client):
    """``arm(mode, **data)`` sets MongoDB's failCommand failpoint for gigsterpg's connections; off on leaving.

    A server without test commands skips the test.
    """
    admin = client.admin

    def arm(mode, **data):
        try:
            admin.command({"configureFailPoint": "failCommand", "mode": mode,
                           "data": {"appName": "gigsterpg", **data}})
        except pymongo.errors.OperationFailure as err:
            pytest.skip(f"the MongoDB server has no test commands ({err})")
    try:
        yield arm
    finally:
        admin.command({"configureFailPoint": "failCommand", "mode": "off"})


def settled_status(url: str, day) -> dict:
    """{step: snapshot ledger row} of ``day`` once none reads running: a killed process's PostgreSQL session, and the
    step's lock with it, ends a moment after the process, and until then its step rightly still reads running."""
    from gigsterpg.lib.files.ledger import snapshot_status

    def read():
        rows = {row.step: row for row in snapshot_status(url) if row.day == day}
        return rows if all(row.state != "running" for row in rows.values()) else None
    return wait_until(read, f"no step of {day} to read running", timeout_s=30)


def wait_until(check: Callable[[], T], what: str, timeout_s: float = 60.0, every_s: float = 0.05) -> T:
    """``check()``'s first true answer; fails naming ``what`` was awaited once ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout_s:g} s for {what}; last answer: {answer!r}")
        time.sleep(every_s)


@contextlib.contextmanager
def run_held(url: str, reached: Callable[[dict], bool], what: str, timeout_s: float = 120.0):
    """Hold the running sync still from the first moment its committed progress satisfies ``reached``.

    Holds the run's ``sync_runs`` row (FOR UPDATE), which every batch of the sync updates in its own
    transaction and which ending the run updates too: until the block is left, the sync waits at its
    next batch and cannot finish. Between looks the row is let go and taken again at once, so the sync
    moves one batch at a time and cannot run past ``reached`` unseen, however fast or slow the machine.
    Yields the progress (``{"users": n, ...}``) and the run's id.
    """
    deadline = time.monotonic() + timeout_s
    watcher = psycopg.connect(url)
    try:
        while True:
            row = watcher.execute("SELECT progress, id FROM sync_runs WHERE status = 'running'"
                                  " ORDER BY id DESC LIMIT 1 FOR UPDATE").fetchone()
            if row and reached(row[0] or {}):
                break
            watcher.rollback()  # the next batch may commit
            if time.monotonic() >= deadline:
                raise AssertionError(f"waited {timeout_s:g} s for {what}; the run's progress: {row}")
            if row is None:
                time.sleep(0.01)  # no run yet
        yield row
    finally:
        watcher.close()  # lets the row go (a rollback), also when the server was stopped meanwhile


def with_database(url: str, database: str) -> str:
    """``url`` with its path (the database name) replaced."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def copy_database(server_url: str, template: str) -> str:
    """The name of a new database made from ``template``."""
    name = "r_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    return name


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def execute(url: str, *statements: str) -> None:
    """Run ``statements`` on the database at ``url``, each in its own transaction."""
    with psycopg.connect(url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def rows(pg, query: str, **params):
    """Every row ``query`` answers through a SqlAlchemy handle."""
    with pg.engine.connect() as connection:
        return connection.execute(text(query), params).all()


# What a table holds, independent of surrogate keys and sequence values (a rolled-back batch burns ids).
STATE_QUERIES = {
    "users": "SELECT _id, created, updated, name, email, extra::text FROM users ORDER BY _id",
    "skills": "SELECT name FROM skills ORDER BY name",
    "user_skills": "SELECT u._id, k.name FROM user_skills us JOIN users u ON u.id = us.user_id"
                   " JOIN skills k ON k.id = us.skill_id ORDER BY 1, 2",
    "gigs": "SELECT g._id, g.created, g.updated, g.name, g.description, g.state, g.poster_ref, g.budget,"
            " g.extra::text, p._id FROM gigs g LEFT JOIN users p ON p.id = g.poster_id ORDER BY g._id",
    "open rejects": "SELECT collection, doc_id, reason, detail FROM sync_rejects WHERE resolved_at IS NULL"
                    " ORDER BY 1, 2",
    "hashes": "SELECT collection, _id, hash FROM sync_hashes ORDER BY 1, 2",
}


def state(url: str) -> dict:
    """A row count and a digest per table."""
    with psycopg.connect(url) as connection:
        result = {}
        for name, query in STATE_QUERIES.items():
            digest = hashlib.sha256()
            found = connection.execute(query).fetchall()
            for row in found:
                digest.update(repr(row).encode())
            result[name] = (len(found), digest.hexdigest()[:16])
        return result


def documents_lost(mongo_db, url: str) -> list:
    """The ids (as text) of documents in MongoDB that are neither a row nor an open reject."""
    from gigsterpg.lib.pg.sync.document import describe_id
    lost = []
    with psycopg.connect(url) as connection:
        for collection in ("users", "gigs"):
            held = {row[0] for row in connection.execute(f"SELECT _id FROM {collection}")}
            held |= {row[0].split(" (duplicate ")[0] for row in connection.execute(
                "SELECT doc_id FROM sync_rejects WHERE collection = %s AND resolved_at IS NULL", (collection,))}
            lost += [f"{collection}/{describe_id(doc['_id'])}" for doc in mongo_db[collection].find({}, {"_id": 1})
                     if describe_id(doc["_id"]) not in held]
    return lost


def assert_nothing_lost(mongo_db, url: str) -> None:
    """Every document of MongoDB is a row or an open reject; counted in the figures only once that holds."""
    lost = documents_lost(mongo_db, url)
    assert lost == [], f"{len(lost)} documents are neither a row nor an open reject: {lost[:20]}"
    FIGURES["documents checked"] += sum(mongo_db[c].count_documents({}) for c in ("users", "gigs"))
    FIGURES["documents lost"] += len(lost)


def run_cli(*args, cwd, env_extra: Optional[dict] = None, timeout: float = 300):
    """``python -m gigsterpg.cli ARGS`` in a clean environment (no DB_URL_* inherited, no .env)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_URL_", "GIGSTERPG_"))}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "gigsterpg.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_line_failure(result, *fragments, code: int = 1) -> None:
    """The CLI ended with ``code`` and exactly one ``FAILED:`` line holding ``fragments``, no traceback."""
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    failures = [line for line in result.stderr.splitlines() if line.startswith("FAILED: ")]
    assert len(failures) == 1, result.stderr
    for fragment in fragments:
        assert fragment in failures[0], failures[0]
    assert CLI_SECRET not in result.stdout + result.stderr


def assert_report_balances(report, outcomes: Optional[Mapping[str, int]] = None) -> None:
    """Every item read is in exactly one outcome: ``read`` equals the sum of the outcome counts, none negative.

    ``report``: an object with ``read`` and ``outcomes`` (a mapping of outcome -> count), a mapping with those
    two keys (a run record's counts), or the read count itself with ``outcomes`` given.
    """
    if outcomes is None:
        if isinstance(report, Mapping):
            read, outcomes = report["read"], report["outcomes"]
        else:
            read, outcomes = report.read, report.outcomes
    else:
        read = report
    assert outcomes, "no outcome counted"
    assert all(isinstance(count, int) and count >= 0 for count in outcomes.values()), outcomes
    assert read == sum(outcomes.values()), f"read {read:,} but the outcomes add up to {sum(outcomes.values()):,}:" \
        f" {dict(outcomes)}"


def assert_run_balances(record: dict) -> None:
    """A pipeline run's record (``pipeline_runs``, as ``runs --format json`` and ``GET /runs/{id}`` show it):
    ended well, and what it read equals the sum of what became of it (``outcomes``)."""
    assert record["state"] == "succeeded", record
    assert record["read"] is not None and record["outcomes"], record
    assert all(isinstance(count, int) and count >= 0 for count in record["outcomes"].values()), record
    assert_report_balances(record)


@contextlib.contextmanager
def served(env_extra: dict, cwd, port: Optional[int] = None):
    """A real ``serve`` process (token API_TOKEN) on 127.0.0.1 with ``env_extra`` added to a clean environment;
    yields (process, base URL) once /health answers; killed on leaving if it still runs."""
    import httpx
    from gigsterpg.fixtures.embedded import free_port
    port = port or free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_URL_", "GIGSTERPG_"))}
    env.update({"GIGSTERPG_API_TOKEN": API_TOKEN, **env_extra})
    process = subprocess.Popen([sys.executable, "-m", "gigsterpg.cli", "serve", "--host", "127.0.0.1", "--port",
                                str(port)], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"

    def healthy():
        try:
            return httpx.get(f"{base}/health", timeout=5).status_code == 200
        except httpx.TransportError:
            assert process.poll() is None, process.stdout.read()
            return False
    try:
        wait_until(healthy, "the server to answer /health", every_s=0.1)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
        if not process.stdout.closed:  # the test may have read it
            process.communicate(timeout=30)
