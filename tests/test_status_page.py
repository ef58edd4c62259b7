"""The status page (``/``) and ``status`` in the terminal, after real runs against the real servers.

A sync job through the API fails (no collections yet), two syncs leave
rejects, a follower applies a change; then each section of the page, the
reject documents, the restart of the failed job, the bearer and cookie
paths, and that no page shows a password or the token.
"""
import json
import re
import uuid
from urllib.parse import urlsplit

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict

from gigsterpg import cli
from gigsterpg.api.app import create_app
from gigsterpg.config import Settings
from gigsterpg.lib import status as status_report
from gigsterpg.web.chart import nice_ceiling, runs_chart, short
from gigsterpg.web.session import COOKIE, Signer
from tests.helpers import API_AUTH, API_TOKEN, execute, wait_until
from tests.status_helpers import (BAD_EMAILS, CSV_LINES, DAY, GIGS_OK, USERS_OK, Follower, Tables, failed_sync_job,
                                  fill_and_sync, pipeline_day_with_a_failed_step, table)

PASSWORD = "pg-secret-on-the-page"


@pytest.fixture
def secret_pg_url(pg_url):
    """The test database's URL with a password in it (the embedded server trusts local logins, so it
    is sent and ignored): no page may show it."""
    parts = urlsplit(pg_url)
    where = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or 'postgres'}:{PASSWORD}@{where}").geturl()


@pytest.fixture
def app_client(secret_pg_url, mongo_url):
    settings = Settings(pg_url=secret_pg_url, mongo_url=mongo_url, batch_size=50)
    with TestClient(create_app(settings, API_TOKEN, source_timeout_s=3)) as client:
        yield client


@pytest.fixture
def scenario(app_client, secret_pg_url, mongo_url, mongo_db):
    """A failed sync job, two syncs with rejects; the settings and the runs' reports."""
    settings = Settings(pg_url=secret_pg_url, mongo_url=mongo_url, batch_size=50)
    job = failed_sync_job(app_client)
    assert job["state"] == "failed", job
    reports = fill_and_sync(settings, mongo_db)
    return {"settings": settings, "job": job, "reports": reports}


def signed_in(client) -> str:
    """Sign in through the form; returns the session cookie's value."""
    answer = client.post("/login", data={"token": API_TOKEN}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=43200" in cookie, cookie
    return answer.cookies[COOKIE]


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', html).group(1)


def test_without_auth_only_the_login_form(scenario, app_client):
    for path in ("/", "/page/rejects?collection=users&reason=invalid+email"):
        answer = app_client.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/login"
    form = app_client.get("/login")
    assert form.status_code == 200 and 'name="token"' in form.text
    for marker in ("runs-table", "invalid email", "not-an-email", str(scenario["reports"][0].run_id) + "</td>"):
        assert marker not in form.text
    wrong = app_client.get("/", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and 'name="token"' in wrong.text and "runs-table" not in wrong.text
    refused = app_client.post("/login", data={"token": "wrong"}, follow_redirects=False)
    assert refused.status_code == 401 and COOKIE not in refused.headers.get("set-cookie", "")
    restart = app_client.post(f"/page/jobs/sync/{scenario['job']['id']}/restart", data={"csrf": "x"})
    assert restart.status_code == 401 and "jobs-table" not in restart.text


def test_the_runs_section_shows_each_run_and_its_counts_and_a_chart(scenario, app_client):
    page = app_client.get("/", headers=API_AUTH)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    first, second = (report.run_id for report in scenario["reports"])
    rows = table(page.text, "runs-table")
    header = rows[0]
    assert header[:7] == ["run", "started (UTC)", "seconds", "docs/s", "state", "mode", "collection"]
    by_run = {}
    current = None
    for row in rows[1:]:
        if len(row) == len(header):
            current = row[0] or current
            by_run.setdefault(current, {})[row[6]] = dict(zip(header, row))
    assert list(by_run) == [str(second), str(first)], "newest first"
    users, gigs = by_run[str(first)]["users"], by_run[str(first)]["gigs"]
    assert users["state"] == "succeeded" and users["mode"] == "full"
    assert (users["seen"], users["inserted"], users["rejected"]) == (str(USERS_OK + BAD_EMAILS), str(USERS_OK),
                                                                     str(BAD_EMAILS))
    assert (gigs["seen"], gigs["inserted"], gigs["rejected"]) == (str(GIGS_OK + 1), str(GIGS_OK), "1")
    assert users["accounting"] == gigs["accounting"] == "holds"
    again = by_run[str(second)]["users"]
    assert (again["inserted"], again["unchanged"]) == ("0", str(USERS_OK)), again
    assert float(users["docs/s"].replace(",", "")) > 0 and float(users["seconds"]) >= 0
    chart = re.search(r'<svg class="chart".*?</svg>', page.text, re.S).group(0)
    assert chart.count("<rect") == 2 and chart.count("<circle") == 2
    assert f"run {first} (full, succeeded)" in chart


def test_the_rejects_section_opens_a_reason_and_pages_its_documents(scenario, app_client):
    page = app_client.get("/", headers=API_AUTH).text
    assert table(page, "rejects-table")[1:] == [["users", "invalid email", str(BAD_EMAILS)],
                                                ["gigs", "unknown state", "1"]]
    link = re.search(r'<a class="reason" href="([^"]+)">invalid email</a>', page).group(1).replace("&amp;", "&")
    first = app_client.get(link, headers=API_AUTH)
    assert first.status_code == 200
    rows = table(first.text, "documents-table")
    assert rows[0] == ["id", "field", "value", "first seen (UTC)", "run", "document"]
    expected_ids = sorted(str(100 + i) for i in range(BAD_EMAILS))  # ids are text: "100" < "101" < ...
    assert [row[0] for row in rows[1:]] == expected_ids[:25]
    one = rows[1]
    assert one[1] == "email" and one[2] == "'not-an-email-0'" and one[4] == str(scenario["reports"][0].run_id)
    assert '"email": "not-an-email-0"' in one[5] and "raw document" in one[5]
    following = re.search(r'id="next-page" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
    rest = table(app_client.get(following, headers=API_AUTH).text, "documents-table")
    assert [row[0] for row in rest[1:]] == expected_ids[25:]
    assert 'id="next-page"' not in app_client.get(following, headers=API_AUTH).text


def test_the_follow_section_shows_a_running_follower_and_its_position(scenario, app_client, mongo_db):
    page = app_client.get("/", headers=API_AUTH).text
    assert "No follower has run" in page
    follower = Follower(scenario["settings"])
    try:
        def applied():
            rows = Tables(app_client.get("/", headers=API_AUTH).text).tables.get("follow-table", [])
            return rows if len(rows) == 2 and rows[1][1] == "yes" else None
        wait_until(applied, "the follower to be shown running")
        mongo_db.users.update_one({"_id": 0}, {"$set": {"name": "renamed"}})
        rows = wait_until(lambda: (lambda r: r if r[1][2] == "1" else None)(
            table(app_client.get("/", headers=API_AUTH).text, "follow-table")), "the change to be applied")
        assert rows[0][:4] == ["follower", "running", "events applied", "last change (UTC)"]
        assert rows[1][0] == "main" and rows[1][1] == "yes" and rows[1][3] != "-"
        assert rows[1][5] == "0 events, 0.0 s"
        live = app_client.get("/", headers=API_AUTH).text
        assert 'data-active="1"' in live and "<script" in live, "a running follower keeps the page refreshing"
    finally:
        follower.stop()
    after = app_client.get("/", headers=API_AUTH).text
    assert table(after, "follow-table")[1][1] == "no" and 'data-active="0"' in after and "<script" not in after


def test_the_jobs_section_shows_the_failed_job_and_restarts_it_with_the_session(scenario, app_client, mongo_db):
    job = scenario["job"]
    page = app_client.get("/", headers=API_AUTH).text
    rows = table(page, "jobs-table")
    assert rows[1][:3] == [job["id"][:8], "sync", "failed"]
    assert "collection" in rows[1][6] and "users" in rows[1][6], rows[1]
    assert f'action="/page/jobs/sync/{job["id"]}/restart"' in page

    cookie = signed_in(app_client)
    with_cookie = app_client.get("/")
    assert with_cookie.status_code == 200 and "jobs-table" in with_cookie.text
    token = csrf_of(with_cookie.text)
    url = f"/page/jobs/sync/{job['id']}/restart"
    for forged in ({}, {"csrf": "0" * 64}):
        refused = app_client.post(url, data=forged, follow_redirects=False)
        assert refused.status_code == 403 and "The restart was refused" in refused.text
    other_site = app_client.post(url, data={"csrf": token}, headers={"Origin": "https://evil.example"},
                                 follow_redirects=False)
    assert other_site.status_code == 403
    assert app_client.get("/syncs", headers=API_AUTH).json()["items"][0]["id"] == job["id"], "nothing restarted"

    done = app_client.post(url, data={"csrf": token}, headers={"Origin": "http://testserver"},
                           follow_redirects=False)
    assert done.status_code == 303, done.text
    new_id = re.search(r"restarted=([0-9a-f-]{36})", done.headers["location"]).group(1)
    new_job = wait_until(lambda: (lambda j: j if j["state"] not in ("queued", "running") else None)(
        app_client.get(f"/syncs/{new_id}", headers=API_AUTH).json()), "the restarted job to end")
    assert new_job["state"] == "succeeded" and new_job["restart_of"] == job["id"], new_job
    shown = app_client.get(done.headers["location"]).text
    assert f"Restarted: the new job is {new_id}." in shown
    states = {row[0]: (row[2], row[7]) for row in table(shown, "jobs-table")[1:]}
    assert states == {new_id[:8]: ("succeeded", ""), job["id"][:8]: ("failed", f"restarted as {new_id[:8]}")}
    assert f'action="/page/jobs/sync/{job["id"]}/restart"' not in shown, "a restarted job is not offered again"
    assert cookie


def test_a_restart_refused_by_the_api_says_why(scenario, app_client, sync_lock):
    url = f"/page/jobs/sync/{scenario['job']['id']}/restart"
    refused = app_client.post(url, headers=API_AUTH, follow_redirects=False)  # a script: no CSRF token needed
    assert refused.status_code == 409 and "Not restarted: another sync holds the sync lock" in refused.text
    assert app_client.post(f"/page/jobs/nope/{uuid.uuid4()}/restart", headers=API_AUTH).status_code == 404


def test_a_failed_export_restarts_from_the_page_with_the_source_password(app_client, empty_pg_url, mongo_db):
    execute(empty_pg_url, "CREATE TABLE slow (id int PRIMARY KEY)",
            "INSERT INTO slow SELECT g FROM generate_series(1, 20000) g")
    parts = conninfo_to_dict(empty_pg_url)
    source = {"host": parts.get("host", "localhost"), "port": int(parts.get("port", 5432)),
              "user": parts.get("user", "postgres"), "password": "", "database": parts["dbname"], "table": "slow",
              "batch_size": 10}
    started = app_client.post("/exports", headers=API_AUTH, json=source)
    assert started.status_code == 200, started.text
    url = started.json()["status_url"]
    wait_until(lambda: app_client.get(url, headers=API_AUTH).json()["rows_done"] > 0, "the export's first rows")
    execute(empty_pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE application_name = 'gigsterpg-export'")
    job = wait_until(lambda: (lambda j: j if j["state"] not in ("queued", "running") else None)(
        app_client.get(url, headers=API_AUTH).json()), "the export to fail")
    assert job["state"] == "failed", job

    signed_in(app_client)
    page = app_client.get("/").text
    row = next(row for row in table(page, "jobs-table")[1:] if row[0] == job["id"][:8])
    assert row[1:3] == ["export", "failed"] and f"/{parts['dbname']} public.slow -> slow" in row[5]
    assert "failed during the export" in row[6]
    form = re.search(rf'action="/page/jobs/export/{job["id"]}/restart">(.*?)</form>', page, re.S).group(1)
    assert 'type="password" name="password"' in form
    done = app_client.post(f"/page/jobs/export/{job['id']}/restart", data={"csrf": csrf_of(page), "password": "x"},
                           follow_redirects=False)
    assert done.status_code == 303, done.text
    new_id = re.search(r"restarted=([0-9a-f-]{36})", done.headers["location"]).group(1)
    again = wait_until(lambda: (lambda j: j if j["state"] not in ("queued", "running") else None)(
        app_client.get(f"/exports/{new_id}", headers=API_AUTH).json()), "the restarted export to end")
    assert again["state"] == "succeeded" and again["restart_of"] == job["id"], again
    assert mongo_db.slow.count_documents({}) == 20000


def test_without_a_token_the_page_is_open_and_restart_still_wants_its_form(pg_url, mongo_url):
    with TestClient(create_app(Settings(pg_url=pg_url, mongo_url=mongo_url), None)) as client:
        page = client.get("/")
        assert page.status_code == 200 and "No sync has run" in page.text and "sign-out" not in page.text
        assert client.post("/login", data={}, follow_redirects=False).headers["location"] == "/"
        refused = client.post(f"/page/jobs/sync/{uuid.uuid4()}/restart", data={"csrf": "nope"})
        assert refused.status_code == 403
        token = client.app.state.page_signer.csrf("open")  # what a job's form would carry (a random key's)
        assert token != Signer(None).csrf("open")
        missing = client.post(f"/page/jobs/sync/{uuid.uuid4()}/restart", data={"csrf": token})
        assert missing.status_code == 404 and "Not restarted: no sync job" in missing.text


def test_the_cookie_is_signed_with_the_token_and_expires(scenario, app_client):
    cookie = signed_in(app_client)
    assert app_client.get("/", follow_redirects=False).status_code == 200
    signer = Signer(API_TOKEN)
    assert signer.session_nonce(cookie) is not None
    assert Signer("another-token").session_nonce(cookie) is None
    issued, nonce, signature = cookie.split(".")
    forged = f"{int(issued) + 1}.{nonce}.{signature}"
    old = signer.new_session(now=0)
    for value in (forged, old, "garbage", ""):
        app_client.cookies.clear()
        app_client.cookies.set(COOKIE, value)
        assert app_client.get("/", follow_redirects=False).status_code == 303, value
    app_client.cookies.clear()
    signed_in(app_client)
    page = app_client.get("/").text
    out = app_client.post("/logout", data={"csrf": csrf_of(page)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert app_client.get("/", follow_redirects=False).status_code == 303


def test_no_page_shows_a_password_or_the_token(scenario, app_client, pg_url):
    with psycopg.connect(pg_url) as connection:  # a run whose error quotes a URL with its password
        connection.execute("UPDATE sync_runs SET error = %s WHERE id = %s",
                           (f"lost postgresql://gigster:{PASSWORD}@db.example/gigster", scenario["reports"][0].run_id))
    cookie = signed_in(app_client)
    pages = [app_client.get(path) for path in ("/", "/login", "/page/rejects?collection=users&reason=invalid+email",
                                               "/page/rejects?collection=gigs&reason=unknown+state")]
    pages.append(app_client.post("/login", data={"token": API_TOKEN + "x"}))
    for answer in pages:
        assert PASSWORD not in answer.text and API_TOKEN not in answer.text, answer.url
    assert "postgresql://gigster:***@db.example/gigster" in pages[0].text
    assert API_TOKEN not in cookie


def test_the_cli_shows_the_same_sections_as_tables_and_json(scenario, app_client, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    settings = scenario["settings"]
    args = ["status", "--pg-url", settings.pg_url, "--mongo-url", settings.mongo_url]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    first, second = (report.run_id for report in scenario["reports"])
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("run"))
    assert header.split()[:4] == ["run", "started", "(UTC)", "seconds"]
    users_row = next(line for line in lines if line.lstrip().startswith(str(first) + " "))
    assert users_row.split()[7:14] == ["users", str(USERS_OK + BAD_EMAILS), str(USERS_OK), "0", "0", "0",
                                       str(BAD_EMAILS)]
    assert header.index("collection") == users_row.index("users"), "columns are aligned"
    assert "invalid email" in text and "Jobs (started through the API):" in text and "failed" in text
    assert PASSWORD not in text

    assert cli.main(args + ["--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [run["id"] for run in shown["runs"]] == [second, first]
    users = next(part for part in shown["runs"][1]["collections"] if part["name"] == "users")
    assert (users["seen"], users["inserted"], users["rejected"], users["balanced"]) == (
        USERS_OK + BAD_EMAILS, USERS_OK, BAD_EMAILS, True)
    assert {"collection": "users", "reason": "invalid email", "count": BAD_EMAILS, "more": False} in shown["rejects"]
    assert shown["jobs"][0]["id"] == scenario["job"]["id"] and shown["jobs"][0]["state"] == "failed"
    page = app_client.get("/", headers=API_AUTH).text
    assert [row[0] for row in table(page, "jobs-table")[1:]] == [job["id"][:8] for job in shown["jobs"]]


def test_the_snapshots_grid_shows_each_step_and_where_a_failed_day_picks_up(app_client, pg_url, tmp_path,
                                                                            capsys, monkeypatch):
    pipeline_day_with_a_failed_step(pg_url, tmp_path)
    page = app_client.get("/", headers=API_AUTH).text
    grid = table(page, "snapshots-grid")
    assert grid == [["day", "extract-postgres", "extract-csv", "load", "query"],
                    [DAY.isoformat(), "-", f"succeeded {CSV_LINES}", "failed", "-"]]
    assert re.search(r'<td class="cell failed"', page) and re.search(r'<td class="cell succeeded"', page)
    command = f"python -m gigsterpg.cli pipeline extract-postgres --day {DAY.isoformat()} --root {tmp_path / 'data'}"
    failure = re.search(r'<p class="error failed-step">(.*?)</p>', page, re.S).group(1)
    assert f"{DAY.isoformat()} load failed:" in failure and "extract-postgres for" in failure
    assert "has not succeeded" in failure
    assert f"<code>{command}</code>" in failure

    monkeypatch.chdir(tmp_path)
    assert cli.main(["status", "--pg-url", pg_url, "--mongo-url", app_client.app.state.settings.mongo_url]) == 0
    text = capsys.readouterr().out
    day_row = next(line for line in text.splitlines() if line.startswith(DAY.isoformat()))
    assert day_row.split() == [DAY.isoformat(), "-", "succeeded", str(CSV_LINES), "failed", "-"]
    assert f"to pick up from there: {command}" in text


def test_the_page_on_an_empty_database_says_what_has_not_run(app_client):
    page = app_client.get("/", headers=API_AUTH).text
    for words in ("No sync has run", "None: every document read is stored", "No follower has run",
                  "No job has been started", "No daily snapshot has run", "No projection has run"):
        assert words in page


def test_the_projections_section_shows_each_run_and_a_failures_error(app_client, secret_pg_url, mongo_url,
                                                                     empty_pg_url):
    from gigsterpg.exc import SourceError
    from gigsterpg.lib.mongo.orders import export_orders
    from tests.test_orders import SCHEMA, a_shop
    execute(empty_pg_url, *SCHEMA)
    a_shop(empty_pg_url)  # 4 orders, every one with a uid
    shop = Settings(pg_url=secret_pg_url, mongo_url=mongo_url, orders_source_pg=empty_pg_url)
    export_orders(shop)
    execute(empty_pg_url, "DROP TABLE clients")
    with pytest.raises(SourceError) as raised:
        export_orders(shop)
    page = app_client.get("/", headers=API_AUTH).text
    rows = table(page, "projections-table")
    assert rows[0][:5] == ["run", "started (UTC)", "seconds", "orders/s", "state"]
    failed, succeeded = rows[1:]
    assert failed[4:8] == ["failed", "orders", f"{urlsplit(mongo_url).path.strip('/')}.orders", "cli"]
    assert failed[8:13] == ["-"] * 5 and str(raised.value) in failed[13] and "clients" in failed[13]
    assert succeeded[4] == "succeeded" and succeeded[8:13] == ["4", "4", "0", "0", "0"]
    assert int(succeeded[0]) + 1 == int(failed[0])
    assert PASSWORD not in page and 'href="/#projections"' in page


def test_reject_counts_stop_at_their_bound(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO sync_rejects (collection, doc_id, reason, detail, document) SELECT 'users', g::text,"
            " CASE WHEN g <= 7 THEN 'few' ELSE 'many' END, 'x', '{}'::jsonb FROM generate_series(1, 20) g")
        connection.execute("INSERT INTO sync_rejects (collection, doc_id, reason, detail, document, resolved_at)"
                           " VALUES ('users', 'closed', 'few', 'x', '{}', now())")
        connection.execute("INSERT INTO sync_rejects (collection, doc_id, reason, detail, document)"
                           " VALUES ('gigs', '1', 'unknown state', 'x', '{}')")
    from sqlalchemy import create_engine
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            assert status_report.rejects(connection) == [("users", "many", 13), ("users", "few", 7),
                                                         ("gigs", "unknown state", 1)]
            assert status_report.rejects(connection, cap=10) == [("users", "many", 11), ("users", "few", 7),
                                                                 ("gigs", "unknown state", 1)]
            assert status_report.rejects(connection, limit=2) == [("users", "few", 7), ("gigs", "unknown state", 1)]
    finally:
        engine.dispose()
    from gigsterpg.status_text import reject_count
    assert reject_count(100000) == "100,000" and reject_count(100001) == "more than 100,000"


def test_a_job_of_a_server_that_died_is_shown_interrupted(pg_url):
    job_id = uuid.uuid4()
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute("INSERT INTO api_jobs (id, kind, state, params) VALUES (%s, 'sync', 'running', '{}')",
                           (job_id,))
        from sqlalchemy import create_engine
        engine = create_engine(Settings(pg_url=pg_url).pg_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as reading:
                assert status_report.jobs(reading)[0]["state"] == "interrupted"
                from gigsterpg.api.jobs import lock_key
                connection.execute("SELECT pg_advisory_lock(%s)", (lock_key(job_id),))
                assert status_report.jobs(reading)[0]["state"] == "running"
        finally:
            engine.dispose()


@pytest.mark.parametrize("value, top", [(0, 1.0), (0.3, 0.5), (1, 1), (7, 10), (12, 20), (240, 250), (4100, 5000)])
def test_a_chart_scale_ends_on_a_round_number(value, top):
    assert nice_ceiling(value) == top


@pytest.mark.parametrize("value, shown", [(0, "0"), (0.25, "0.25"), (2.5, "2.5"), (120, "120"), (1500, "1.5k"),
                                          (2000, "2k"), (25000, "25k")])
def test_chart_labels_are_short(value, shown):
    assert short(value) == shown


def test_the_chart_marks_failed_and_running_runs():
    runs = [{"id": 4, "mode": "follow", "status": "succeeded", "seconds": 7200.0, "rate": None},
            {"id": 3, "mode": "full", "status": "running", "seconds": None, "rate": None},
            {"id": 2, "mode": "full", "status": "failed", "seconds": 4.0, "rate": None},
            {"id": 1, "mode": "incremental", "status": "succeeded", "seconds": 2.0, "rate": 1500.0}]
    svg = runs_chart(runs)
    assert svg.count("<rect") == 3 and svg.count("<circle") == 1
    assert 'fill="#d62728"' in svg and "still running" in svg and "1,500 documents/s" in svg
    assert "run 4" not in svg and ">5 s<" in svg, "a follower's stretch is not a bar, nor the scale's top"
    assert runs_chart([]) == ""


def test_a_cookie_replayed_after_sign_out_is_refused_on_every_server(app_client, secret_pg_url, mongo_url):
    kept = signed_in(app_client)
    page = app_client.get("/", follow_redirects=False)
    assert page.status_code == 200
    other = signed_in(TestClient(app_client.app))  # a second session of the same server stays signed in
    assert app_client.post("/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False).status_code == 303
    settings = Settings(pg_url=secret_pg_url, mongo_url=mongo_url)
    # The same server, and another one (or this one restarted) sharing the database: both refuse the cookie.
    with TestClient(create_app(settings, API_TOKEN)) as second:
        for client in (app_client, second):
            client.cookies.clear()
            client.cookies.set(COOKIE, kept)
            assert client.get("/", follow_redirects=False).status_code == 303
            restart = client.post(f"/page/jobs/sync/{uuid.uuid4()}/restart", data={"csrf": csrf_of(page.text)},
                                  follow_redirects=False)
            assert restart.status_code == 401 and "Sign in to restart" in restart.text
            client.cookies.clear()
            client.cookies.set(COOKIE, other)
            assert client.get("/", follow_redirects=False).status_code == 200, "another session is not ended"
    with psycopg.connect(secret_pg_url) as connection:
        ids = [row[0] for row in connection.execute("SELECT id FROM page_sessions")]
    assert len(ids) == 1 and all(kept.split(".")[1] not in value for value in ids), "only a hash of the nonce"


def test_a_restart_from_an_origin_of_another_scheme_is_refused(app_client):
    signed_in(app_client)
    token = csrf_of(app_client.get("/").text)
    url = f"/page/jobs/sync/{uuid.uuid4()}/restart"
    for origin in ("https://testserver", "ftp://testserver", "http://testserver:8080", "http://[::1", "null"):
        refused = app_client.post(url, data={"csrf": token}, headers={"Origin": origin}, follow_redirects=False)
        assert refused.status_code == 403 and "The restart was refused" in refused.text, origin
    same = app_client.post(url, data={"csrf": token}, headers={"Origin": "http://testserver"}, follow_redirects=False)
    assert same.status_code == 404 and "Not restarted: no sync job" in same.text
