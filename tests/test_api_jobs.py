"""The API's job bookkeeping keeps the newest GIGSTERPG_API_JOBS_KEEP ended jobs of each kind, and every active one."""
import dataclasses
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from gigsterpg.api import jobs as api_jobs
from gigsterpg.api.app import create_app
from gigsterpg.api.jobs import Jobs, lock_key
from gigsterpg.config import load_settings
from gigsterpg.exc import ConfigError
from gigsterpg.lib.pg.db import SqlAlchemy
from tests.helpers import API_AUTH, API_TOKEN, execute, wait_until, with_database

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def add_job(url: str, kind: str, state: str, minute: int, collection: str = "c") -> uuid.UUID:
    """A job row created ``minute`` minutes after T0 (each test gives distinct minutes)."""
    job_id = uuid.uuid4()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("INSERT INTO api_jobs (id, kind, state, params, created_at) VALUES (%s, %s, %s, %s, %s)",
                           (job_id, kind, state, Jsonb({"collection": collection}),
                            T0 + timedelta(minutes=minute)))
    return job_id


def job_ids(url: str, kind: str) -> set:
    with psycopg.connect(url) as connection:
        return {row[0] for row in connection.execute("SELECT id FROM api_jobs WHERE kind = %s", (kind,))}


@pytest.fixture
def pg(pg_url):
    handle = SqlAlchemy(pg_url)
    yield handle
    handle.dispose()


def test_prune_keeps_the_newest_ended_jobs_of_each_kind_and_every_active_one(pg_url, pg):
    ended = ["succeeded", "failed", "interrupted"] * 2
    exports = [add_job(pg_url, "export", state, minute) for minute, state in enumerate(ended)]
    # Active jobs older than every ended one: the retention must pass them by, not count them.
    active = {add_job(pg_url, "export", "queued", -20, collection="a"),
              add_job(pg_url, "export", "running", -10, collection="b")}
    syncs = {add_job(pg_url, "sync", "succeeded", 100 + minute) for minute in range(2)}

    assert Jobs(pg.engine, pg_url, keep=3).prune() == 3
    assert job_ids(pg_url, "export") == set(exports[3:]) | active  # minutes 3, 4, 5: the newest ended
    assert job_ids(pg_url, "sync") == syncs  # two, fewer than three
    assert Jobs(pg.engine, pg_url, keep=3).prune() == 0


def test_prune_deletes_a_backlog_in_bounded_batches(pg_url, pg, monkeypatch):
    monkeypatch.setattr(api_jobs, "PRUNE_BATCH", 4)
    exports = [add_job(pg_url, "export", "succeeded", minute) for minute in range(25)]
    jobs = Jobs(pg.engine, pg_url, keep=2)
    assert jobs.prune(batches=1) == 4  # one statement, one batch
    assert len(job_ids(pg_url, "export")) == 21
    assert jobs.prune() == 19  # until none is left beyond the newest two
    assert job_ids(pg_url, "export") == set(exports[-2:])


def test_a_job_that_ends_prunes_the_old_jobs_of_its_kind(pg_url, pg):
    old_syncs = [add_job(pg_url, "sync", "succeeded", minute) for minute in range(3)]
    old_exports = {add_job(pg_url, "export", "failed", minute) for minute in range(10, 13)}
    jobs = Jobs(pg.engine, pg_url, max_running=1, keep=2)
    job_id = jobs.start("sync", {"collections": []}, lambda job: {"done": True})
    wait_until(lambda: job_id not in jobs.live, "the job to end")  # it prunes before it leaves
    # The new job (created now, after every T0 minute) and the newest old one; the exports are another kind.
    assert job_ids(pg_url, "sync") == {job_id, old_syncs[-1]}
    assert job_ids(pg_url, "export") == old_exports


def test_a_failure_to_prune_does_not_fail_the_ended_job(pg_url, caplog):
    caplog.set_level("WARNING", logger="gigsterpg.api.jobs")
    nowhere = SqlAlchemy(with_database(pg_url, "no_such_database_here"))
    # The job records itself through its own connection (the URL); the pruning goes through the engine.
    jobs = Jobs(nowhere.engine, pg_url, max_running=1, keep=1)
    job_id = jobs.start("sync", {"collections": []}, lambda job: {})
    wait_until(lambda: job_id not in jobs.live, "the job to end")
    nowhere.dispose()
    with psycopg.connect(pg_url) as connection:
        assert connection.execute("SELECT state FROM api_jobs WHERE id = %s", (job_id,)).fetchone() == ("succeeded",)
    assert any("could not delete old sync jobs" in record.getMessage() for record in caplog.records)


def test_the_api_keeps_the_configured_number_of_jobs(api_settings, empty_pg_url):
    old_syncs = [add_job(api_settings.pg_url, "sync", "succeeded", minute) for minute in range(4)]
    execute(empty_pg_url, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    source = psycopg.conninfo.conninfo_to_dict(empty_pg_url)
    body = {"host": source.get("host", "localhost"), "port": int(source.get("port", 5432)),
            "user": source.get("user", "postgres"), "password": source.get("password", ""),
            "database": source["dbname"], "table": "t"}
    settings = dataclasses.replace(api_settings, api_jobs_keep=2)
    with TestClient(create_app(settings, API_TOKEN, source_timeout_s=3)) as client:
        # The server pruned at start: the two newest of the old syncs are left.
        listed = client.get("/syncs", headers=API_AUTH).json()["items"]
        assert [job["id"] for job in listed] == [str(job_id) for job_id in old_syncs[:-3:-1]]
        started = []
        for _ in range(3):
            answer = client.post("/exports", headers=API_AUTH, json=body)
            assert answer.status_code == 200, answer.text
            started.append(answer.json())
            wait_until(lambda: client.get(started[-1]["status_url"], headers=API_AUTH).json()["state"]
                       not in ("queued", "running"), "the export to end")
        # A job prunes the old ones just after it is recorded as ended: wait for that too (a loaded machine).
        listed = wait_until(lambda: (lambda items: items if len(items) <= 2 else None)(
            client.get("/exports", headers=API_AUTH).json()["items"]), "the last export's prune")
        assert [job["id"] for job in listed] == [started[2]["id"], started[1]["id"]]
        assert client.get(started[0]["status_url"], headers=API_AUTH).status_code == 404


def test_the_setting_is_read_from_the_environment(tmp_path: Path):
    nowhere = tmp_path / "no.env"
    assert load_settings(environ={}, dotenv_path=nowhere).api_jobs_keep == 1000
    assert load_settings(environ={"GIGSTERPG_API_JOBS_KEEP": "7"}, dotenv_path=nowhere).api_jobs_keep == 7
    for bad in ("0", "-3", "many"):
        with pytest.raises(ConfigError, match="GIGSTERPG_API_JOBS_KEEP"):
            load_settings(environ={"GIGSTERPG_API_JOBS_KEEP": bad}, dotenv_path=nowhere)


def test_an_active_job_is_neither_restarted_nor_pruned(api_settings):
    job_id = add_job(api_settings.pg_url, "sync", "running", 0)
    older = [add_job(api_settings.pg_url, "sync", "failed", minute) for minute in (-2, -1)]
    with psycopg.connect(api_settings.pg_url, autocommit=True) as owner:
        owner.execute("SELECT pg_advisory_lock(%s)", (lock_key(job_id),))  # as its server would: it is alive
        with TestClient(create_app(dataclasses.replace(api_settings, api_jobs_keep=1), API_TOKEN)) as client:
            refused = client.post(f"/syncs/{job_id}/restart", headers=API_AUTH)
            assert refused.status_code == 409, refused.text
            assert refused.json()["error"] == "job_active"
            listed = client.get("/syncs", headers=API_AUTH).json()["items"]
            expected = [(str(job_id), "running"), (str(older[1]), "failed")]  # the newest ended one is kept
            assert [(job["id"], job["state"]) for job in listed] == expected
