"""load-csv and transform under crashes, faults and each other: a dataset is its old version or its new one, whole.

Each kill trial runs the CLI in a subprocess that SIGKILLs itself at a named point (``gigsterpg.faults``),
checks what the kill left (every dataset its old or its new version whole, as the point predicts, and no
working table), then runs the same command again and compares every dataset (its rows, its registry row,
its recorded bad lines) with an undisturbed run on the same files.
"""
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from fastapi.testclient import TestClient

from gigsterpg.api.app import create_app
from gigsterpg.config import Settings
from gigsterpg.examples import FOLDER
from gigsterpg.lib.datasets import tables
from gigsterpg.lib.datasets.load import load_csv
from gigsterpg.lib.datasets.transform import transform
from tests.figures import FIGURES
from tests.helpers import (API_AUTH, API_TOKEN, TEMPLATE, assert_one_line_failure, copy_database, drop_database,
                           kill_matrix, run_cli, wait_until, with_database)

V1 = {"a.csv": "id,name,score\n" + "".join(f"{i},name {i},{i * 1.5}\n" for i in range(40)),
      "b.csv": "code;day;flag\n" + "".join(f"{i:05};{i % 28 + 1}.02.2022;{'yes' if i % 2 else 'no'}\n"
                                           for i in range(30)) + "x;not a day;maybe\n"}
V2 = {"a.csv": "id,name,score\n" + "".join(f"{i},renamed {i},{i * 2.5}\n" for i in range(10, 70)) + "oops,z,1\n",
      "b.csv": "code;day;flag\n" + "".join(f"{i:05};{i % 28 + 1}.03.2022;{'no' if i % 2 else 'yes'}\n"
                                           for i in range(25)) + "y;31.02.2022;no\n1;2;3;4\n",
      "c.csv": "k,v\n" + "".join(f"{i},{i * i}\n" for i in range(15))}
DECLARED = ["--type", "id=integer"]  # so that a's 'oops' is a bad line, not a reason for text


def write_folder(folder, files: dict):
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def dataset_state(url: str) -> dict:
    """Per dataset: its registry row (no time), a digest of its rows in key order, its recorded bad lines."""
    found = {}
    with psycopg.connect(url) as connection:
        registry = connection.execute("SELECT name, schema_name, table_name, kind, key, columns::text, rows,"
                                      " bad_lines, source FROM datasets ORDER BY name").fetchall()
        for name, schema, table, kind, key, columns, count, bad, source in registry:
            table_rows = connection.execute(f'SELECT * FROM "{schema}"."{table}" ORDER BY "{key}"').fetchall()
            rejects = connection.execute("SELECT file, line, column_name, reason, text FROM csv_rejects"
                                         " WHERE dataset = %s ORDER BY line", (name,)).fetchall()
            assert len(table_rows) == count, f"{name}: the registry says {count} rows, the table has {len(table_rows)}"
            found[name] = {"registry": (kind, key, json.loads(columns), count, bad, source),
                           "rows": hashlib.sha256(repr(table_rows).encode()).hexdigest()[:16],
                           "rejects": hashlib.sha256(repr(rejects).encode()).hexdigest()[:16]}
        leftovers = connection.execute("SELECT relname FROM pg_class WHERE relname ~ %s",
                                       (tables.WORKING.pattern.replace("\\Z", "$"),)).fetchall()
        assert leftovers == [], f"working tables left behind: {leftovers}"
    return found


@pytest.fixture(scope="module")
def versions(pg_server_url, template_url, tmp_path_factory):
    """The two folders, and the datasets after v1 alone and after v1 then v2 (undisturbed)."""
    root = tmp_path_factory.mktemp("csv-versions")
    v1, v2 = write_folder(root / "v1", V1), write_folder(root / "v2", V2)
    name = copy_database(pg_server_url, TEMPLATE)
    url = with_database(pg_server_url, name)
    try:
        settings = Settings(pg_url=url)
        load_csv(settings, [v1], declared={"id": "integer"})
        after_v1 = dataset_state(url)
        load_csv(settings, [v2], declared={"id": "integer"})
        after_v2 = dataset_state(url)
    finally:
        drop_database(pg_server_url, name)
    assert after_v1["a"] != after_v2["a"] and after_v2["a"]["registry"][4] == 1
    return {"v1": v1, "v2": v2, "after_v1": after_v1, "after_v2": after_v2}


# (point, hit): files load in the order a, b, c; the n-th hit of a point is in the n-th file.
CSV_KILLS = kill_matrix([("csv-locked", 1), ("csv-swapped", 1), ("csv-registered", 1), ("csv-committed", 1),
                         ("csv-locked", 2), ("csv-swapped", 2), ("csv-registered", 2), ("csv-committed", 2),
                         ("csv-swapped", 3), ("csv-registered", 3), ("csv-committed", 3)])


@pytest.mark.parametrize("point, hit", CSV_KILLS, ids=[f"{p}-{n}" for p, n in CSV_KILLS])
def test_a_load_killed_at_any_point_leaves_whole_datasets_and_the_rerun_finishes_it(versions, pg_url, tmp_path,
                                                                                    point, hit):
    load_csv(Settings(pg_url=pg_url), [versions["v1"]], declared={"id": "integer"})
    env = {"DB_URL_PSQL": pg_url}
    killed = run_cli("load-csv", str(versions["v2"]), *DECLARED, cwd=tmp_path,
                     env_extra={**env, "GIGSTERPG_KILL_AT": f"{point}:{hit}"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = hit if point == "csv-committed" else hit - 1  # files whose transaction committed before the kill
    expected = {}
    for number, name in enumerate(("a", "b", "c"), start=1):
        source = versions["after_v2"] if number <= done else versions["after_v1"]
        if name in source:
            expected[name] = source[name]
    assert dataset_state(pg_url) == expected
    again = run_cli("load-csv", str(versions["v2"]), *DECLARED, cwd=tmp_path, env_extra=env)
    assert again.returncode == 0, again.stderr
    assert dataset_state(pg_url) == versions["after_v2"]
    FIGURES["kill points tried"] += 1
    FIGURES["kill points tried: load-csv"] += 1


def test_a_merge_killed_before_its_commit_leaves_the_table_as_it_was(versions, pg_url, tmp_path):
    settings = Settings(pg_url=pg_url)
    load_csv(settings, [versions["v1"] / "a.csv"], declared={"id": "integer"}, key="id")
    before = dataset_state(pg_url)
    env = {"DB_URL_PSQL": pg_url}
    args = ("load-csv", str(versions["v2"] / "a.csv"), "--key", "id", "--merge")
    for point in ("csv-swapped", "csv-registered"):
        killed = run_cli(*args, cwd=tmp_path, env_extra={**env, "GIGSTERPG_KILL_AT": f"{point}:1"})
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert dataset_state(pg_url) == before
        FIGURES["kill points tried"] += 1
        FIGURES["kill points tried: load-csv"] += 1
    assert run_cli(*args, cwd=tmp_path, env_extra=env).returncode == 0
    merged = dataset_state(pg_url)
    with psycopg.connect(pg_url) as connection:  # 0-9 from v1, 10-69 from v2
        assert connection.execute("SELECT count(*), min(id), max(id) FROM datasets.a").fetchone() == (70, 0, 69)
        assert connection.execute("SELECT name FROM datasets.a WHERE id IN (9, 10) ORDER BY id").fetchall() == [
            ("name 9",), ("renamed 10",)]
    assert merged["a"]["registry"][3] == 70


TRANSFORM_V1 = "SELECT person_id, name FROM people"
TRANSFORM_V2 = ("SELECT p.person_id, p.name, count(t.trade_id) AS trades FROM people p"
                " LEFT JOIN trades t USING (person_id) GROUP BY p.person_id, p.name")


@pytest.fixture(scope="module")
def transforms(pg_server_url, template_url, tmp_path_factory):
    root = tmp_path_factory.mktemp("transforms")
    (root / "v1.sql").write_text(TRANSFORM_V1)
    (root / "v2.sql").write_text(TRANSFORM_V2)
    name = copy_database(pg_server_url, TEMPLATE)
    url = with_database(pg_server_url, name)
    try:
        settings = Settings(pg_url=url)
        load_csv(settings, [FOLDER])
        transform(settings, root / "v1.sql", "summary")
        after_v1 = dataset_state(url)
        transform(settings, root / "v2.sql", "summary")
        after_v2 = dataset_state(url)
    finally:
        drop_database(pg_server_url, name)
    assert after_v1["summary"] != after_v2["summary"]
    return {"root": root, "after_v1": after_v1, "after_v2": after_v2}


TRANSFORM_KILLS = ["transform-queried", "transform-swapped", "transform-registered", "transform-committed"]


@pytest.mark.parametrize("point", TRANSFORM_KILLS)
def test_a_transform_killed_at_any_point_leaves_the_old_or_the_new_dataset(transforms, pg_url, tmp_path, point):
    settings = Settings(pg_url=pg_url)
    load_csv(settings, [FOLDER])
    transform(settings, transforms["root"] / "v1.sql", "summary")
    env = {"DB_URL_PSQL": pg_url}
    args = ("transform", str(transforms["root"] / "v2.sql"), "--into", "summary")
    killed = run_cli(*args, cwd=tmp_path, env_extra={**env, "GIGSTERPG_KILL_AT": f"{point}:1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = transforms["after_v2"] if point == "transform-committed" else transforms["after_v1"]
    assert dataset_state(pg_url) == left
    again = run_cli(*args, cwd=tmp_path, env_extra=env)
    assert again.returncode == 0, again.stderr
    assert dataset_state(pg_url) == transforms["after_v2"]
    FIGURES["kill points tried"] += 1
    FIGURES["kill points tried: transform"] += 1


# -- faults: the PostgreSQL connection killed mid-COPY, mid-query -----------------------------------------------

def _terminate(url: str, query_like: str) -> int:
    """pg_terminate_backend of the datasets' backend running a query like ``query_like``, once it runs."""
    def running():
        return rows_of(url, "SELECT pid FROM pg_stat_activity WHERE application_name = 'gigsterpg-datasets'"
                            " AND state = 'active' AND query ILIKE %s", (query_like,))
    pid = wait_until(running, f"a query like {query_like}", timeout_s=120, every_s=0.005)[0][0]
    assert rows_of(url, "SELECT pg_terminate_backend(%s)", (pid,)) == [(True,)]
    return pid


def rows_of(url: str, query: str, params=()):
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(query, params).fetchall()


def _cli(*args, url: str, cwd):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_URL_", "GIGSTERPG_"))}
    env["DB_URL_PSQL"] = url
    return subprocess.Popen([sys.executable, "-m", "gigsterpg.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("fast", [True, False], ids=["copy-by-postgresql", "copy-by-python"])
def test_a_connection_killed_mid_copy_fails_in_one_line_and_leaves_the_old_dataset(pg_url, tmp_path, fast):
    settings = Settings(pg_url=pg_url)
    big = tmp_path / "big.csv"
    # Text ids keep it clean for PostgreSQL's own COPY; a dotted date sends every line through Python.
    day = "2022-01-02" if fast else "02.01.2022"
    with open(big, "w") as handle:
        handle.write("id,label,day\n")
        for i in range(400_000):
            handle.write(f"{i},label {i},{day}\n")
    (tmp_path / "small").mkdir()
    small = tmp_path / "small" / "big.csv"
    small.write_text("id,label,day\n1,one,2022-01-01\n")
    load_csv(settings, [small])
    before = dataset_state(pg_url)
    process = _cli("load-csv", str(big), url=pg_url, cwd=tmp_path)
    try:
        _terminate(pg_url, "COPY%")
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, err
    failures = [line for line in err.splitlines() if line.startswith("FAILED: ")]
    assert len(failures) == 1 and "Traceback" not in err, err
    assert "lost the connection to PostgreSQL" in failures[0] and "run the same command again" in failures[0]
    assert dataset_state(pg_url) == before
    load, = load_csv(settings, [big]).files  # the rerun
    assert load.rows == 400_000 and load.parser == "arrow"
    assert dataset_state(pg_url)["big"]["registry"][3] == 400_000
    FIGURES["faults injected"] += 1
    FIGURES["faults injected: load-csv"] += 1


def test_a_connection_killed_mid_query_fails_a_transform_in_one_line(pg_url, tmp_path):
    settings = Settings(pg_url=pg_url)
    load_csv(settings, [FOLDER])
    (tmp_path / "v1.sql").write_text(TRANSFORM_V1)
    transform(settings, tmp_path / "v1.sql", "summary")
    before = dataset_state(pg_url)
    slow = tmp_path / "slow.sql"
    slow.write_text("SELECT person_id, name FROM people, pg_sleep(30)")
    process = _cli("transform", str(slow), "--into", "summary", url=pg_url, cwd=tmp_path)
    try:
        _terminate(pg_url, "%pg_sleep(30)%")
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, err
    failures = [line for line in err.splitlines() if line.startswith("FAILED: ")]
    assert len(failures) == 1 and "Traceback" not in err, err
    assert "lost the connection to PostgreSQL" in failures[0] and "run the same command again" in failures[0]
    assert dataset_state(pg_url) == before
    FIGURES["faults injected"] += 1
    FIGURES["faults injected: transform"] += 1


# -- concurrency ---------------------------------------------------------------------------------------------------

def test_two_loads_of_one_dataset_at_once_leave_one_of_them_whole(versions, pg_url, tmp_path):
    settings = Settings(pg_url=pg_url)
    holder = psycopg.connect(pg_url)
    holder.execute("SELECT pg_advisory_xact_lock(hashtext('gigsterpg dataset a'))")  # both wait, then go in turn
    failures = []

    def load(folder):
        try:
            load_csv(settings, [folder / "a.csv"], declared={"id": "integer"})
        except Exception as err:  # pragma: no cover - reported below
            failures.append(err)

    loaders = [threading.Thread(target=load, args=(versions[v],)) for v in ("v1", "v2")]
    try:
        for loader in loaders:
            loader.start()
        wait_until(lambda: rows_of(pg_url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                           " AND application_name = 'gigsterpg-datasets'")[0][0] == 2,
                   "both loads to wait for the dataset's lock")
    finally:
        holder.close()
        for loader in loaders:
            loader.join(timeout=120)
    assert not failures, failures
    state = dataset_state(pg_url)["a"]
    assert state in (versions["after_v1"]["a"], versions["after_v2"]["a"])
    FIGURES["concurrent runs checked: datasets"] += 1


def test_two_transforms_into_one_dataset_at_once_leave_one_of_them_whole(transforms, pg_url, tmp_path):
    settings = Settings(pg_url=pg_url)
    load_csv(settings, [FOLDER])
    failures, threads = [], []
    for version in ("v1", "v2") * 3:
        def run(version=version):
            try:
                transform(settings, transforms["root"] / f"{version}.sql", "summary")
            except Exception as err:  # pragma: no cover - reported below
                failures.append(err)
        threads.append(threading.Thread(target=run))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    assert dataset_state(pg_url)["summary"] in (transforms["after_v1"]["summary"], transforms["after_v2"]["summary"])
    FIGURES["concurrent runs checked: datasets"] += 1


def test_a_transform_beside_readers_never_gives_them_half_a_dataset(api_settings, tmp_path):
    load_csv(api_settings, [FOLDER])
    few, all_ = tmp_path / "few.sql", tmp_path / "all.sql"
    few.write_text("SELECT person_id, name FROM people WHERE person_id <= 3")
    all_.write_text(TRANSFORM_V2)
    transform(api_settings, few, "summary")
    stop, done, failures = threading.Event(), [], []

    def replace_again_and_again():
        try:
            while not stop.is_set():
                transform(api_settings, all_ if len(done) % 2 == 0 else few, "summary")
                done.append(1)
        except Exception as err:  # pragma: no cover - reported below
            failures.append(err)

    writer = threading.Thread(target=replace_again_and_again)
    seen = {2: 0, 3: 0}
    with TestClient(create_app(api_settings, API_TOKEN)) as client:
        client.headers.update(API_AUTH)
        writer.start()
        try:
            while len(done) < 16 and not failures:
                answer = client.get("/read/summary/first-chunk?limit=1000")
                assert answer.status_code == 200, answer.text
                shapes = {len(row) for row in answer.json()}
                assert len(shapes) == 1, f"rows of both versions in one answer: {shapes}"
                shape = shapes.pop()
                assert len(answer.json()) == {2: 3, 3: 5}[shape], f"a half answer: {answer.text}"
                seen[shape] += 1
        finally:
            stop.set()
            writer.join()
    assert not failures, failures
    assert seen[2] and seen[3], seen  # both versions were read while the transforms went on
    FIGURES["concurrent runs checked: datasets"] += 1


def test_loads_killed_at_random_moments_converge(versions, pg_server_url, template_url, tmp_path):
    """SIGKILL at a random moment of a whole CLI load of four files (start-up, inference, COPY, swap, commit).

    A moment past the end of the run is drawn again, earlier, on a fresh database; each trial ends with
    exactly one kill that landed, every dataset then its old or its new version whole, and a rerun that
    equals the undisturbed run.
    """
    folder = tmp_path / "v2-big"
    shutil.copytree(versions["v2"], folder)
    with open(folder / "d.csv", "w") as handle:  # dotted dates: read by Python, about a second
        handle.write("id,day,note\n" + "".join(f"{i},{i % 28 + 1:02}.01.2022,n{i}\n" for i in range(60_000)))
    rng = random.Random(5)
    expected = None
    for trial in range(-1, 4):
        for attempt in range(8):
            name, process = copy_database(pg_server_url, TEMPLATE), None
            url = with_database(pg_server_url, name)
            try:
                load_csv(Settings(pg_url=url), [versions["v1"]], declared={"id": "integer"})
                before = dataset_state(url)
                began = time.monotonic()
                process = _cli("load-csv", str(folder), *DECLARED, url=url, cwd=tmp_path)
                if trial == -1:  # the undisturbed run: what every rerun must equal, and how long a run takes
                    assert process.wait(timeout=300) == 0, process.stderr.read()
                    span, expected = time.monotonic() - began, dataset_state(url)
                    break
                time.sleep(rng.uniform(0.0, span) / 2 ** attempt)
                process.kill()
                if process.wait(timeout=60) == -signal.SIGKILL:
                    break
                assert process.returncode == 0, process.stderr.read()
            finally:
                if process is not None:
                    process.kill()  # a no-op once it ended
                    process.communicate()
                if process is None or trial == -1 or process.returncode != -signal.SIGKILL:
                    drop_database(pg_server_url, name)
        else:
            raise AssertionError(f"trial {trial}: 8 moments in a row came after the load had ended")
        if trial == -1:
            continue
        try:
            left = dataset_state(url)
            for dataset in ("a", "b", "c", "d"):
                assert left.get(dataset) in (before.get(dataset), expected[dataset]), dataset
            again = run_cli("load-csv", str(folder), *DECLARED, cwd=tmp_path, env_extra={"DB_URL_PSQL": url})
            assert again.returncode == 0, again.stderr
            assert dataset_state(url) == expected
        finally:
            drop_database(pg_server_url, name)
        FIGURES["kill points tried"] += 1
        FIGURES["kill points tried: random moments of a load-csv"] += 1


def test_a_malformed_kill_point_fails_before_any_work(versions, pg_url, tmp_path):
    sql_file = str(FOLDER / "earliest_trade.sql")
    for command in (("load-csv", str(versions["v2"])), ("transform", sql_file, "--into", "x")):
        env = {"DB_URL_PSQL": pg_url, "GIGSTERPG_KILL_AT": "csv-locked:0"}
        result = run_cli(*command, cwd=tmp_path, env_extra=env)
        assert_one_line_failure(result, "bad GIGSTERPG_KILL_AT", code=2)
    assert rows_of(pg_url, "SELECT count(*) FROM datasets") == [(0,)]
    FIGURES["hostile inputs tried: datasets"] += 2


def test_postgresql_crashing_mid_load_loses_nothing_committed(versions, tmp_path):
    """The postmaster killed (SIGQUIT, as an immediate stop) while a load COPYs its fourth file: one line; after
    crash recovery the three files committed before are there, the fourth not at all, no working table is left,
    and the rerun finishes the load."""
    if os.environ.get("TEST_DB_URL_PSQL"):
        pytest.skip("crashes a server of its own (embedded)")
    import psutil

    from gigsterpg.fixtures.embedded import EmbeddedPostgres
    folder = tmp_path / "v2-big"
    shutil.copytree(versions["v2"], folder)
    with open(folder / "d.csv", "w") as handle:
        handle.write("id,day,note\n" + "".join(f"{i},{i % 28 + 1:02}.01.2022,n{i}\n" for i in range(300_000)))
    server = EmbeddedPostgres(tmp_path / "pg")
    try:
        url = server.create_database("crash")
        load_csv(Settings(pg_url=url), [versions["v1"]], declared={"id": "integer"})
        process = _cli("load-csv", str(folder), *DECLARED, url=url, cwd=tmp_path)
        try:
            wait_until(lambda: rows_of(url, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                                            " AND query ILIKE 'COPY%%' AND strpos(query, %s) > 0",
                                            (tables.work_name("datasets", "d"),))[0][0],
                       "the COPY of d.csv", timeout_s=120, every_s=0.01)
            pid = server.server.get_pid()
            os.kill(pid, signal.SIGQUIT)
            _, err = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 1, err
        failures = [line for line in err.splitlines() if line.startswith("FAILED: ")]
        assert len(failures) == 1 and "Traceback" not in err, err
        wait_until(lambda: not psutil.pid_exists(pid), "the crashed postmaster to exit", every_s=0.1)
        server.stop()  # forgets the crashed server
        server = EmbeddedPostgres(tmp_path / "pg")  # starts with crash recovery
        url = server.url("crash")
        reference = server.create_database("reference")
        load_csv(Settings(pg_url=reference), [versions["v1"]], declared={"id": "integer"})
        load_csv(Settings(pg_url=reference), [folder], declared={"id": "integer"})
        expected = dataset_state(reference)
        after = dataset_state(url)  # a, b, c committed before d began; d not at all
        assert after == {name: expected[name] for name in ("a", "b", "c")}
        again = run_cli("load-csv", str(folder), *DECLARED, cwd=tmp_path, env_extra={"DB_URL_PSQL": url})
        assert again.returncode == 0, again.stderr
        assert dataset_state(url) == expected
    finally:
        server.stop()
    FIGURES["faults injected"] += 1
    FIGURES["faults injected: load-csv"] += 1
