"""Benchmark of CSV sources and the read API: ``python -m bench.datasets [--rows N]`` alone, or as part of
``python -m bench`` (``measure`` and ``render`` below).

- ``load-csv`` of one generated file (integer, text, numeric, month-first date, timestamp, boolean columns)
  against a plain ``COPY ... FROM STDIN (FORMAT csv)`` of the same file into a table of the right types, and
  against what a user of the briefs writes (pandas ``read_csv`` + ``to_sql``), in the same run; load-csv
  reads the file once (kinds inferred as the batches go in). load-csv and pandas each run in a process of their own
  (``python -m bench.datasets --child load-csv|pandas FILE PG_URL``), so that their peak RSS is their own.
- ``GET /read/{dataset}/first-chunk`` under a concurrent load: ``serve`` in its own process, CLIENTS threads
  with a keep-alive connection each on loopback, for a bounded number of requests; requests/s, p50 and p99.
"""
import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

from bench.rss import peak_rss_mb
from bench.servers import embedded
from gigsterpg.config import Settings
from gigsterpg.fixtures.embedded import free_port
from gigsterpg.lib.datasets.load import load_csv

ROWS = 3_000_000  # at scale 1
CLIENTS = 8
REQUESTS = 4000  # in all, over the clients
TOKEN = "bench-" + uuid.uuid4().hex
# Its part of python -m bench (bench/parts.py): the pipelines it measures, its name for --only.
PIPELINES, ONLY = ("load-csv",), "datasets"  # transform: none yet
COPY_TABLE = ("CREATE TABLE plain_copy (id bigint, name text, amount numeric, day date, at timestamp,"
              " flag boolean)")


def write_csv(path: Path, rows: int, seed: int = 7) -> int:
    """A CSV file of ``rows`` rows; its size in bytes."""
    rng = random.Random(seed)
    words = ["alpha", "bravo", "charlie", "delta", "echo, with a comma", "foxtrot", 'golf "quoted"']
    with open(path, "w", newline="") as handle:
        handle.write("id,name,amount,day,at,flag\n")
        lines = []
        for i in range(rows):
            name = f"{words[i % len(words)]} {i}"
            name = '"' + name.replace('"', '""') + '"' if ("," in name or '"' in name) else name
            lines.append(f"{i},{name},{rng.randint(0, 10 ** 6) / 100},{i % 12 + 1}/{i % 28 + 1}/2022,"
                         f"2022-{i % 12 + 1:02}-{i % 28 + 1:02} {i % 24:02}:{i % 60:02}:{i % 59:02},"
                         f"{'true' if i % 3 else 'false'}\n")
            if len(lines) == 10_000:
                handle.writelines(lines)
                lines.clear()
        handle.writelines(lines)
    return path.stat().st_size


def plain_copy(pg_url: str, path: Path) -> float:
    """Seconds for COPY FROM STDIN (FORMAT csv, HEADER) of the file into a table of the right types."""
    with psycopg.connect(pg_url) as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS plain_copy")
        cursor.execute(COPY_TABLE)
        started = time.perf_counter()
        with cursor.copy("COPY plain_copy FROM STDIN (FORMAT csv, HEADER true)") as copy, open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                copy.write(chunk)
        connection.commit()
        return time.perf_counter() - started


def child(what: str, path: str, pg_url: str) -> dict:
    """One load in this process: its seconds and peak RSS (``--child``)."""
    started = time.perf_counter()
    if what == "load-csv":
        report = load_csv(Settings(pg_url=pg_url), [path])
        assert report.bad_lines == 0, report.bad_lines
        rows = report.rows
    else:
        import pandas
        import sqlalchemy
        engine = sqlalchemy.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
        frame = pandas.read_csv(path)
        rows = frame.to_sql("pandas_rows", engine, if_exists="replace", index=False, chunksize=10_000)
        rows = len(frame)
        engine.dispose()
    return {"rows": rows, "seconds": time.perf_counter() - started, "maxrss_mb": peak_rss_mb()}


def _in_child(what: str, path: Path, pg_url: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.datasets", "--child", what, str(path), pg_url],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"FAILED: benchmark step {what!r}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_load(pg_url: str, rows: int, repeat: int, folder: Path, pandas: bool = True) -> list:
    """load-csv and plain COPY of the same file, alternately, ``repeat`` times each; pandas once."""
    path = folder / "bench_rows.csv"
    size = write_csv(path, rows)
    runs = []
    for round_no in range(repeat):
        copy_s = plain_copy(pg_url, path)
        load = _in_child("load-csv", path, pg_url)
        assert load["rows"] == rows, load
        run = {"rows": rows, "bytes": size, "load_seconds": load["seconds"], "copy_seconds": copy_s,
               "load_maxrss_mb": load["maxrss_mb"]}
        if pandas and round_no == 0:
            by_pandas = _in_child("pandas", path, pg_url)
            run.update(pandas_seconds=by_pandas["seconds"], pandas_maxrss_mb=by_pandas["maxrss_mb"])
        runs.append(run)
        print(f"load-csv {rows:,} rows: {rows / load['seconds']:,.0f} rows/s (peak RSS {load['maxrss_mb']:,.0f} MB);"
              f" COPY FROM: {rows / copy_s:,.0f} rows/s"
              + (f"; pandas: {rows / run['pandas_seconds']:,.0f} rows/s (peak RSS {run['pandas_maxrss_mb']:,.0f}"
                 " MB)" if "pandas_seconds" in run else ""), file=sys.stderr)
    path.unlink()
    return runs


def measure_first_chunk(pg_url: str, mongo_url: str, requests: int = REQUESTS, clients: int = CLIENTS) -> dict:
    """``serve`` in a process of its own; ``clients`` threads send ``requests`` first-chunk requests in all."""
    port = free_port()
    env = {**os.environ, "DB_URL_PSQL": pg_url, "DB_URL_MONGO": mongo_url, "GIGSTERPG_API_TOKEN": TOKEN}
    server = subprocess.Popen([sys.executable, "-m", "gigsterpg.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    path = "/read/bench_rows/first-chunk"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                probe.request("GET", path, headers=headers)
                if probe.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("FAILED: benchmark step 'first-chunk': the API did not answer")
            time.sleep(0.2)
        latencies, failures = [], []
        per_client = requests // clients

        def client():
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for _ in range(per_client):
                started = time.perf_counter()
                connection.request("GET", path, headers=headers)
                answer = connection.getresponse()
                answer.read()
                if answer.status != 200:
                    failures.append(answer.status)
                latencies.append(time.perf_counter() - started)
            connection.close()

        threads = [threading.Thread(target=client) for _ in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=60)
    if failures:
        raise SystemExit(f"FAILED: benchmark step 'first-chunk': {len(failures)} answers were not 200")
    latencies.sort()
    result = {"requests": len(latencies), "clients": clients, "seconds": seconds,
              "per_s": len(latencies) / seconds, "p50_ms": 1000 * latencies[len(latencies) // 2],
              "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)]}
    print(f"first-chunk: {result}", file=sys.stderr)
    return result


def measure(results: dict, pg_url: str, mongo_url: str, scale: float, repeat: int, read_api: bool = True) -> None:
    """Both measurements into ``results["datasets"]`` (``pg_url``: a fresh database)."""
    from gigsterpg.lib.pg.db import SqlAlchemy
    handle = SqlAlchemy(pg_url)
    handle.migrate_head()
    handle.dispose()
    rows = max(1000, int(ROWS * scale))
    with tempfile.TemporaryDirectory(prefix="gigsterpg-bench-csv-") as folder:
        load = measure_load(pg_url, rows, repeat, Path(folder))
    chunk = None
    if read_api:
        chunk = measure_first_chunk(pg_url, mongo_url, requests=max(CLIENTS * 10, int(REQUESTS * min(scale, 1))))
    results["datasets"] = {"load": load, "first_chunk": chunk}


def bench(results: dict, setup) -> None:
    """Its part of ``python -m bench`` (``setup``: ``bench.parts.Setup``)."""
    measure(results, setup.fresh(), setup.mongo_url, setup.scale, setup.repeat)


def render(results: dict) -> list:
    """The benchmark's lines about CSV sources and the read API (none when they were not measured)."""
    found = results.get("datasets")
    if not found:
        return []
    load = found["load"]
    rows = load[0]["rows"]
    load_rate = statistics.median(r["rows"] / r["load_seconds"] for r in load)
    copy_rate = statistics.median(r["rows"] / r["copy_seconds"] for r in load)
    chunk = found["first_chunk"]
    pandas = [r for r in load if "pandas_seconds" in r]
    pandas_rate = rows / pandas[0]["pandas_seconds"] if pandas else 0.0
    rss = max(r["load_maxrss_mb"] for r in load)
    return [f"- load-csv of a {rows:,}-row CSV file ({load[0]['bytes'] / 1e6:,.0f} MB; types inferred, one"
            f" transaction): {load_rate:,.0f} rows/s = {load_rate / copy_rate:.2f}x a plain COPY FROM of the same"
            f" file ({copy_rate:,.0f} rows/s; target 0.7x {'met' if load_rate / copy_rate >= 0.7 else 'NOT met'})"
            + (f", {load_rate / pandas_rate:.1f}x pandas read_csv + to_sql ({pandas_rate:,.0f} rows/s, peak RSS"
               f" {pandas[0]['pandas_maxrss_mb']:,.0f} MB; target 5x)" if pandas else "")
            + f"; load-csv's peak RSS {rss:,.0f} MB"] + ([
                f"- GET /read/{{dataset}}/first-chunk (10 rows) with {chunk['clients']} concurrent keep-alive clients"
                f" on loopback, {chunk['requests']:,} requests: {chunk['per_s']:,.0f} requests/s, p50"
                f" {chunk['p50_ms']:.1f} ms, p99 {chunk['p99_ms']:.1f} ms"] if chunk else [])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.datasets", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help=f"1.0 = a CSV file of {ROWS:,} rows")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only-load", action="store_true", help="the CSV loads alone, not the read API")
    parser.add_argument("--child", nargs=3, metavar=("WHAT", "FILE", "PG_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    with embedded() as servers:
        results: dict = {}
        measure(results, servers.postgres.create_database("bench_datasets"), servers.mongo.url("bench"), args.scale,
                args.repeat, read_api=not args.only_load)
        print("\n".join(render(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
