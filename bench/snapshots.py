"""Benchmark of the daily snapshots: ``python -m bench.snapshots [--scale S] [--repeat N]`` alone, or as part
of ``python -m bench`` (``measure`` and ``render`` below).

A Northwind-like source of ORDERS orders at scale 1 (and about 2.5 detail lines per order in the CSV).
- extract-postgres (every table to its partition: binary COPY to disk, sha256, manifest, rename) against a
  plain ``COPY (SELECT * FROM t) TO STDOUT`` of the same tables read and dropped, in the same run;
- load (both extracts of a day into the partitioned target, one transaction) against a plain ``COPY FROM``
  of the same rows (the same binary files into plain tables, the CSV file with FORMAT csv), in the same run;
- peak RSS of each step at the full size and at a tenth of it (flat: memory does not grow with the data).
Each measured operation runs in its own process, so that its time and peak RSS are its own.
"""
import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from bench.rss import peak_rss_mb
from bench.servers import embedded

ORDERS = 2_000_000  # at scale 1
SMALL = 0.1  # the second size, for the peak RSS
# Its part of python -m bench (bench/parts.py): the pipelines it measures, its name for --only.
PIPELINES, ONLY = ("snapshots",), "snapshots"


def _child(*args) -> dict:
    result = subprocess.run([sys.executable, "-m", "bench.snapshots", "child", *args], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0:
        raise SystemExit(f"FAILED: snapshot benchmark step {args[0]!r} failed, {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _pipeline(target: str, source: str, root: str, csv_path: str):
    from gigsterpg.lib.files.snapshot import Pipeline
    return Pipeline(target, Path(root), source, Path(csv_path))


def child(op: str, target: str, source: str, root: str, csv_path: str, day: str) -> dict:
    """One operation; its rows, seconds and peak RSS."""
    from gigsterpg.lib.files import snapshot
    when = datetime.date.fromisoformat(day)
    line = _pipeline(target, source, root, csv_path)
    started = time.perf_counter()
    if op == "extract":
        report = snapshot.extract_postgres(line, when, force=True)
        rows = report.rows
    elif op == "extract-csv":
        rows = snapshot.extract_csv(line, when, force=True).rows
    elif op == "load":
        rows = snapshot.load_day(line, when).rows
    elif op == "copy-to":
        rows = copy_to(source)
    else:
        rows = copy_from(target, Path(root), when)
    return {"rows": rows, "seconds": time.perf_counter() - started, "maxrss_mb": peak_rss_mb()}


def copy_to(source: str) -> int:
    """``COPY (SELECT * FROM t) TO STDOUT`` of every table of the source, read and dropped; the rows."""
    from gigsterpg.lib.files.extract import list_tables
    rows = 0
    with psycopg.connect(source) as connection, connection.cursor() as cursor:
        for table in list_tables(cursor):
            with cursor.copy(sql.SQL("COPY (SELECT * FROM {}) TO STDOUT").format(
                    sql.Identifier(table.schema, table.name))) as copy:
                for _ in copy:
                    pass
            rows += cursor.rowcount
    return rows


def copy_from(target: str, root: Path, day: datetime.date) -> int:
    """Plain ``COPY FROM`` of the day's rows into plain tables: the binary files as they are, the CSV as CSV."""
    from gigsterpg.lib.files import partition
    rows = 0
    with psycopg.connect(target) as connection, connection.cursor() as cursor:
        cursor.execute("DROP SCHEMA IF EXISTS bench_plain CASCADE; CREATE SCHEMA bench_plain")
        for folder in sorted((root / "postgres").glob(f"*/{day}")):
            manifest = partition.read_manifest(folder)
            columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c["name"]), sql.SQL(c["type"]))
                                         for c in manifest["columns"])
            name = sql.Identifier("bench_plain", manifest["table"])
            cursor.execute(sql.SQL("CREATE TABLE {} ({})").format(name, columns))
            with cursor.copy(sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(name)) as copy, \
                    open(folder / manifest["file"], "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    copy.write(chunk)
            rows += cursor.rowcount
        manifest = partition.read_manifest(root / "csv" / day.isoformat())
        columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c["name"]), sql.SQL(c["type"]))
                                     for c in manifest["columns"])
        cursor.execute(sql.SQL("CREATE TABLE bench_plain.csv_rows ({})").format(columns))
        with cursor.copy("COPY bench_plain.csv_rows FROM STDIN (FORMAT csv, HEADER true)") as copy, \
                open(root / "csv" / day.isoformat() / manifest["file"], "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                copy.write(chunk)
        rows += cursor.rowcount
        connection.commit()
    return rows


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _fresh(server_url: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_database(server_url, name)


def _size(server_url: str, folder: Path, orders: int, repeat: int) -> dict:
    """Extract and load at one size: the measured runs and their baselines."""
    from gigsterpg.lib.pg.db import SqlAlchemy
    from gigsterpg.fixtures.northwind import generate_northwind
    source, target = _fresh(server_url, "bench_nw_src"), _fresh(server_url, "bench_nw_tgt")
    handle = SqlAlchemy(target)
    handle.migrate_head()
    handle.dispose()
    csv_path = folder / f"order_details_{orders}.csv"
    started = time.perf_counter()
    report = generate_northwind(source, csv_path, orders=orders)
    print(f"snapshots: generated {orders:,} orders, {report.details:,} details in"
          f" {time.perf_counter() - started:.0f} s", file=sys.stderr)
    root = str(folder / f"data_{orders}")
    found = {"orders": orders, "details": report.details, "extract": [], "copy_to": [], "load": [], "copy_from": []}
    day = "2021-01-01"
    for _ in range(repeat):
        found["copy_to"].append(_child("copy-to", target, source, root, str(csv_path), day))
        found["extract"].append(_child("extract", target, source, root, str(csv_path), day))
    found["extract_csv"] = _child("extract-csv", target, source, root, str(csv_path), day)
    for _ in range(repeat):
        found["copy_from"].append(_child("copy-from", target, source, root, str(csv_path), day))
        found["load"].append(_child("load", target, source, root, str(csv_path), day))
    found["bytes"] = sum(path.stat().st_size for path in Path(root).rglob("data.pgcopy"))
    with psycopg.connect(server_url, autocommit=True) as admin:
        for url in (source, target):
            name = urlsplit(url).path.lstrip("/")
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    print(f"snapshots at {orders:,} orders: {json.dumps(found)}", file=sys.stderr)
    return found


def measure(results: dict, server_url: str, scale: float, repeat: int) -> None:
    """Both sizes into ``results["snapshots"]`` (``server_url``: a maintenance database of the server)."""
    orders = max(1000, int(ORDERS * scale))
    with tempfile.TemporaryDirectory(prefix="gigsterpg-bench-snapshots-") as folder:
        full = _size(server_url, Path(folder), orders, repeat)
        small = _size(server_url, Path(folder), max(1000, int(orders * SMALL)), 1)
    results["snapshots"] = {"full": full, "small": small}


def _rate(runs) -> float:
    return statistics.median(run["rows"] / run["seconds"] for run in runs)


def bench(results: dict, setup) -> None:
    """Its part of ``python -m bench`` (``setup``: ``bench.parts.Setup``)."""
    measure(results, setup.server_url, setup.scale, setup.repeat)


def render(results: dict) -> list:
    """The benchmark's lines about the daily snapshots (none when they were not measured)."""
    found = results.get("snapshots")
    if not found:
        return []
    full, small = found["full"], found["small"]
    extract, copy_to = _rate(full["extract"]), _rate(full["copy_to"])
    load, copy_from = _rate(full["load"]), _rate(full["copy_from"])
    rows = full["extract"][0]["rows"]

    def rss(kind):
        return (f"{max(r['maxrss_mb'] for r in full[kind]):.0f} MB at {full['orders']:,} orders,"
                f" {max(r['maxrss_mb'] for r in small[kind]):.0f} MB at {small['orders']:,}")

    return [
        f"- snapshots, extract-postgres of {rows:,} rows in 13 tables ({full['bytes'] / 1e6:,.0f} MB of binary COPY"
        f" files): {extract:,.0f} rows/s = {extract / copy_to:.2f}x a plain COPY (SELECT ...) TO STDOUT of the same"
        f" tables ({copy_to:,.0f} rows/s; target 0.5x {'met' if extract / copy_to >= 0.5 else 'NOT met'});"
        f" peak RSS {rss('extract')}",
        f"- snapshots, load of a day ({full['load'][0]['rows']:,} rows: the tables and {full['details']:,} CSV lines,"
        f" one transaction): {load:,.0f} rows/s = {load / copy_from:.2f}x a plain COPY FROM of the same rows"
        f" ({copy_from:,.0f} rows/s; target 0.5x {'met' if load / copy_from >= 0.5 else 'NOT met'});"
        f" peak RSS {rss('load')}",
        f"- snapshots, extract-csv of {full['details']:,} lines (copy, inference, bad-line pass):"
        f" {full['extract_csv']['rows'] / full['extract_csv']['seconds']:,.0f} lines/s;"
        f" peak RSS {full['extract_csv']['maxrss_mb']:.0f} MB"]


def formats(server_url: str, orders: int, folder: Path) -> list:
    """The file formats compared on the orders table: seconds out, bytes, seconds back in (docs: the snapshots page)."""
    from gigsterpg.fixtures.northwind import generate_northwind
    source = _fresh(server_url, "bench_fmt")
    generate_northwind(source, folder / "details.csv", orders=orders)
    lines = ["| format | out s | MB | in s | exact for every type of the list |", "| --- | ---: | ---: | ---: | --- |"]
    with psycopg.connect(source) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE back (LIKE orders)")
        for label, options in (("COPY binary", "(FORMAT BINARY)"), ("COPY text", ""), ("COPY csv", "(FORMAT csv)")):
            path = folder / "orders.out"
            started = time.perf_counter()
            with open(path, "wb") as handle, cursor.copy(
                    f"COPY (SELECT * FROM orders ORDER BY order_id) TO STDOUT {options}") as copy:
                for chunk in copy:
                    handle.write(chunk)
            out = time.perf_counter() - started
            cursor.execute("TRUNCATE back")
            started = time.perf_counter()
            with open(path, "rb") as handle, cursor.copy(f"COPY back FROM STDIN {options}") as copy:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    copy.write(chunk)
            back = time.perf_counter() - started
            exact = {"COPY binary": "yes, whatever the session settings",
                     "COPY text": "yes, given DateStyle, IntervalStyle, TimeZone, extra_float_digits",
                     "COPY csv": "as text (NULL: an unquoted empty field)"}[label]
            lines.append(f"| {label} | {out:.2f} | {path.stat().st_size / 1e6:.1f} | {back:.2f} | {exact} |")
        started = time.perf_counter()
        with connection.cursor(name="rows") as rows:
            rows.execute("SELECT * FROM orders ORDER BY order_id")
            while rows.fetchmany(10_000):
                pass
        fetched = time.perf_counter() - started
        lines.append(f"| rows as Python objects (what Parquet via pyarrow starts from, before any conversion) |"
                     f" {fetched:.2f} | | | no: see the docs |")
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(urlsplit(source).path[1:])))
    return lines


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        print(json.dumps(child(*argv[1:])))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.snapshots", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help=f"1.0 = {ORDERS:,} orders")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--formats", action="store_true", help="compare the file formats instead (docs)")
    args = parser.parse_args(argv)
    with embedded(mongo=False) as servers:
        if args.formats:
            rows = max(1000, int(ORDERS * args.scale))
            print("\n".join(formats(servers.postgres.url("postgres"), rows, servers.folder)))
            return 0
        results: dict = {}
        measure(results, servers.postgres.url("postgres"), args.scale, args.repeat)
        print("\n".join(render(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
