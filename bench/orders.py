"""Benchmark of export-orders: ``python -m bench.orders [--scale S] [--repeat N]`` alone, ``python -m bench
--only orders``, or as part of ``python -m bench`` (``measure`` and ``render`` below).

The generated shop at scale 1 holds 100,000 orders (about 5 items each). Measured, each in its own process:
- the first run (an empty collection, no hashes; gigsterpg's own database migrated beforehand) against a
  plain ``insert_many`` of the same prepared documents (read back from the collection before the clock
  starts) into an empty collection, in the same run;
- an unchanged re-run (must write 0 documents; how much faster than the first run);
- peak RSS of the first run at scale 1 and at ``RSS_SCALES`` times it (flat: memory does not grow).
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from bench.rss import peak_rss_mb
from bench.servers import embedded

ORDERS = 100_000  # at scale 1
RSS_SCALES = (1, 3)
TARGETS = {"first run": 0.7, "unchanged re-run": 3.0}
# Its part of python -m bench (bench/parts.py): the pipelines it measures, its name for --only.
PIPELINES, ONLY = ("export-orders",), "orders"


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _fresh(server_url: str, prefix: str, migrated: bool = False) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(server_url, name)
    if migrated:  # gigsterpg's own database is set up once in real life: not part of a run's time
        from gigsterpg.lib.pg.db import SqlAlchemy
        own = SqlAlchemy(url)
        own.migrate_head()
        own.dispose()
    return url


def child(op: str, source: str, own: str, mongo_url: str, collection: str) -> dict:
    """One operation in this process: its documents, seconds, what it wrote and its peak RSS."""
    import pymongo

    from gigsterpg.config import Settings
    from gigsterpg.lib.mongo.orders import export_orders
    if op == "export":
        settings = Settings(pg_url=own, mongo_url=mongo_url, orders_source_pg=source)
        started = time.perf_counter()
        report = export_orders(settings, collection)
        seconds = time.perf_counter() - started
        return {"docs": report.rows, "seconds": seconds, "written": report.written, "unchanged": report.unchanged,
                "maxrss_mb": peak_rss_mb()}
    # op == "insert_many": the documents export wrote, read back before the clock starts
    client = pymongo.MongoClient(mongo_url)
    database = client.get_default_database()
    documents = list(database[collection].find())
    plain = database[collection + "_plain"]
    plain.drop()
    started = time.perf_counter()
    for start in range(0, len(documents), 2000):
        plain.insert_many(documents[start:start + 2000], ordered=False)
    seconds = time.perf_counter() - started
    plain.drop()
    client.close()
    return {"docs": len(documents), "seconds": seconds, "maxrss_mb": peak_rss_mb()}


def _child(*args) -> dict:
    result = subprocess.run([sys.executable, "-m", "bench.orders", "child", *args], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0:
        raise SystemExit(f"FAILED: orders benchmark step {args[0]!r} failed, {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(results: dict, server_url: str, mongo_server: str, scale: float, repeat: int) -> None:
    """The measurements above into ``results["orders"]``."""
    from gigsterpg.fixtures.generate_shop import write_shop
    out = results.setdefault("orders", {"runs": {}, "rss": {}})

    def record(label, result):
        out["runs"].setdefault(label, []).append(result)
        print(f"orders, {label}: {result['docs'] / result['seconds']:,.0f} docs/s, {result['maxrss_mb']:.0f} MB",
              file=sys.stderr)

    mongo_url = _with_database(mongo_server, "bench_orders_" + uuid.uuid4().hex[:8])
    for factor in sorted({1, *RSS_SCALES}):
        orders = max(1000, int(ORDERS * scale * factor))
        source = _fresh(server_url, "bench_shop")
        started = time.perf_counter()
        write_shop(source, orders, seed=42)
        print(f"orders: generated a shop of {orders:,} orders in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
        for _ in range(repeat if factor == 1 else 1):
            collection = f"orders_{uuid.uuid4().hex[:8]}"
            own = _fresh(server_url, "bench_own", migrated=True)
            first = _child("export", source, own, mongo_url, collection)
            out["rss"].setdefault(f"{factor:g}", []).append(first["maxrss_mb"])
            if factor != 1:
                continue
            out["orders"] = first["docs"]
            record("first run", first)
            record("plain insert_many", _child("insert_many", source, own, mongo_url, collection))
            again = _child("export", source, own, mongo_url, collection)
            again["speedup"] = first["seconds"] / again["seconds"]
            record("unchanged re-run", again)
    import pymongo
    client = pymongo.MongoClient(mongo_url)
    client.drop_database(client.get_default_database().name)
    client.close()


def bench(results: dict, setup) -> None:
    """Its part of ``python -m bench`` (``setup``: ``bench.parts.Setup``)."""
    measure(results, setup.server_url, setup.mongo_server, setup.scale, setup.repeat)


def render(results: dict) -> list:
    """Lines for the benchmark's output (and BENCHMARKS.md)."""
    out = results.get("orders")
    if not out:
        return []
    runs = out["runs"]

    def rate(label):
        return statistics.median(r["docs"] / r["seconds"] for r in runs[label])

    first, plain = rate("first run"), rate("plain insert_many")
    speedup = statistics.median(r["speedup"] for r in runs["unchanged re-run"])
    rss = {scale: max(values) for scale, values in out["rss"].items()}
    verdict = {True: "met", False: "NOT met"}
    return [
        f"- export-orders of {out['orders']:,} orders: first run {first:,.0f} docs/s = {first / plain:.2f}x a plain"
        f" insert_many of the same documents ({plain:,.0f} docs/s; target {TARGETS['first run']}:"
        f" {verdict[first / plain >= TARGETS['first run']]})",
        f"- unchanged re-run: {rate('unchanged re-run'):,.0f} docs/s, {speedup:.1f}x faster than the first run"
        f" (target {TARGETS['unchanged re-run']:g}x: {verdict[speedup >= TARGETS['unchanged re-run']]}),"
        f" documents written {[r['written'] for r in runs['unchanged re-run']]} (target 0)",
        "- peak RSS of a first run: " + ", ".join(f"{rss[s]:.0f} MB at {s}x" for s in sorted(rss, key=float))
        + " (target flat, < 300 MB)"]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        print(json.dumps(child(*argv[1:])))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.orders", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help=f"1.0 = {ORDERS:,} orders")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    with embedded() as servers:
        results: dict = {}
        measure(results, servers.postgres.url("postgres"), servers.mongo.url(""), args.scale, args.repeat)
        print(f"export-orders benchmark: scale {args.scale:g}, {args.repeat} repetitions")
        print("\n".join(render(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
