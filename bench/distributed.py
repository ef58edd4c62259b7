"""Benchmark of the distributed full sync: ``python -m bench.distributed [--scale S] [--repeat N]`` alone,
``python -m bench --only distributed``, or as part of ``python -m bench`` (``measure`` and ``render`` below).

In one run, on the same generated data (100k users + 200k gigs at scale 1), a first sync into a fresh migrated
database, each in its own process: the single-process sync, then ``--workers 1`` and ``--workers 2`` staging
ranges and merging them (``first_load=False``: the path of a re-sync; a first load on Dask is measured by
``python -m bench --workers``), on a local
cluster of that many worker processes, started before the clock: a cluster is there before a sync uses it).
Measured per run: wall seconds, the merge's seconds (the coordinator's replay of the scratch tables), and CPU
seconds of the coordinator process, of the worker processes, of PostgreSQL and of MongoDB. ``model`` turns the
per-document costs of the ``--workers 2`` run into the throughput of N workers on N machines (modelled, not
measured: this machine has two cores, shared with both servers).
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

from bench.servers import embedded

USERS, GIGS = 100_000, 200_000  # at scale 1
MODES = ("single", "workers 1", "workers 2")
# The model's servers: one PostgreSQL server and one replica set primary, this many cores each.
SERVER_CORES = 8
MODEL_WORKERS = (1, 2, 4, 8, 16, 32)
# Its part of python -m bench (bench/parts.py): the pipelines it measures, its name for --only.
PIPELINES, ONLY = ("sync",), "distributed"
ONLY_REPEATS = False  # --only distributed: one repetition (its --repeat default), whatever --repeat says


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _cpu(pids) -> float:
    """CPU seconds so far of the processes ``pids`` and their children (0 for one gone)."""
    import psutil
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            total += sum(sum(p.cpu_times()[:4]) for p in [root] + root.children(recursive=True))
        except psutil.Error:
            pass
    return total


def child(mode: str, pg_url: str, mongo_url: str, batch_size: str) -> dict:
    """One first sync in this process: documents, seconds, merge seconds, CPU of this process and its workers."""
    import os

    import psutil
    import pymongo

    from gigsterpg.lib.pg.db import SqlAlchemy
    from gigsterpg.lib.pg.sync.engine.distributed import open_cluster, run_distributed
    from gigsterpg.lib.pg.sync.engine.runner import run_sync
    pg = SqlAlchemy(pg_url)
    pg.migrate_head()  # set up once in real life: not part of a run's time
    client = pymongo.MongoClient(mongo_url)
    database = client.get_default_database()
    me = psutil.Process()
    if mode == "single":
        before = sum(me.cpu_times()[:2])
        started = time.perf_counter()
        report = run_sync(pg.engine, database, batch_size=int(batch_size))
        seconds = time.perf_counter() - started
        own, workers = sum(me.cpu_times()[:2]) - before, 0.0
    else:
        with open_cluster(int(mode.split()[1]), dashboard=None) as cluster:
            pids = [int(info["pid"]) for info in cluster.scheduler_info()["workers"].values()
                    if info.get("pid")] or [p.pid for p in me.children(recursive=True)]
            before, workers_before = sum(me.cpu_times()[:2]), _cpu(pids)
            started = time.perf_counter()
            # The ranges staged and merged (what the model below is of), not the first load that empty tables
            # get on Dask by default (measured by ``python -m bench --workers``).
            report = run_distributed(pg.engine, database, cluster, "postgresql://" + pg_url.split("://", 1)[1],
                                     mongo_url, batch_size=int(batch_size), first_load=False)
            seconds = time.perf_counter() - started
            own, workers = sum(me.cpu_times()[:2]) - before, _cpu(pids) - workers_before
    pg.dispose()
    client.close()
    assert report.balanced, "a benchmark run must account for every document"
    counts = {name: c.as_dict() for name, c in report.collections.items()}
    with open(f"/proc/{os.getpid()}/status") as status:
        rss = next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
    return {"docs": sum(c["seen"] for c in counts.values()), "seconds": seconds,
            "merge_s": sum(c["seconds"] for c in counts.values()) if mode != "single" else None,
            "own_cpu_s": own, "workers_cpu_s": workers, "maxrss_mb": rss, "counts": counts}


def _child(server_pids: dict, *args) -> dict:
    before = {name: _cpu([pid]) for name, pid in server_pids.items()}
    result = subprocess.run([sys.executable, "-m", "bench.distributed", "child", *args], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0:
        raise SystemExit(f"FAILED: distributed benchmark step {args[0]!r} failed, {result.stderr.strip()[-800:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured.update({f"{name}_cpu_s": _cpu([pid]) - before[name] for name, pid in server_pids.items()})
    return measured


def _fresh(server_url: str) -> str:
    name = f"bench_dist_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_database(server_url, name)


def _drop(url: str, server_url: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(urlsplit(url).path.lstrip("/"))))


def measure(results: dict, server_url: str, mongo_url: str, scale: float, repeat: int, server_pids: dict,
            batch_size: int = 5000, generate: bool = False) -> None:
    """The runs above into ``results["distributed"]``; ``mongo_url`` holds the dataset (``generate``: write it)."""
    if generate:
        import pymongo

        from gigsterpg.fixtures.generate import write_dataset
        client = pymongo.MongoClient(mongo_url)
        started = time.perf_counter()
        write_dataset(client.get_default_database(), int(USERS * scale), int(GIGS * scale), messy_rate=0.05,
                      seed=42, replace=True)
        client.close()
        print(f"distributed: generated the dataset in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    out = results.setdefault("distributed", {"runs": {}})
    for _ in range(repeat):
        for mode in MODES:  # interleaved: a drift of the machine's load hits every mode alike
            url = _fresh(server_url)
            try:
                result = _child(server_pids, mode, url, mongo_url, str(batch_size))
            finally:
                _drop(url, server_url)
            out["runs"].setdefault(mode, []).append(result)
            print(f"distributed, {mode}: {result['docs'] / result['seconds']:,.0f} docs/s,"
                  f" {result['maxrss_mb']:.0f} MB", file=sys.stderr)


def per_document(run: dict) -> dict:
    """A run's costs in microseconds per document."""
    docs = run["docs"]
    costs = {"coordinator": run["own_cpu_s"], "workers": run["workers_cpu_s"], "postgresql": run.get("pg_cpu_s"),
             "mongodb": run.get("mongo_cpu_s"), "wall": run["seconds"], "merge wall": run.get("merge_s"),
             # the part of the merge that has no rule across documents but the _id's text form (gigs)
             "gigs merge wall": run["counts"]["gigs"]["seconds"] if run.get("merge_s") is not None else None}
    return {name: None if value is None else 1e6 * value / docs for name, value in costs.items()}


def model(costs: dict, workers=MODEL_WORKERS, cores: int = SERVER_CORES, split_gigs: bool = False) -> list:
    """(N, docs/s, what limits it) for N workers on N machines, from per-document costs (µs).

    Reading, hashing and mapping (the workers' CPU) divide by N; the merge (its wall time per document: the
    coordinator and PostgreSQL in turn) does not. The servers cap it: MongoDB at ``cores`` / its CPU per
    document, PostgreSQL likewise (the scratch COPYs run in parallel, the merge is one session).
    ``split_gigs``: what is not built, gigs merged in N sessions (one partition of the _id's text each).
    """
    rows = []
    for n in workers:
        merge = costs["merge wall"] - (costs["gigs merge wall"] * (1 - 1 / n) if split_gigs else 0)
        spread = 1e6 / (costs["workers"] / n + merge)
        # (a cost too small to read, at a tiny scale, caps nothing)
        caps = {name: 1e6 * cores / costs[key] if costs[key] else float("inf")
                for name, key in (("MongoDB CPU", "mongodb"), ("PostgreSQL CPU", "postgresql"))}
        limit, cap = min(caps.items(), key=lambda item: item[1])
        if spread <= cap:
            limit = "the merge" if merge > costs["workers"] / n else "the workers"
        rows.append((n, min(spread, cap), limit))
    return rows


def bench(results: dict, setup) -> None:
    """Its part of ``python -m bench`` (``setup``: ``bench.parts.Setup``): one repetition, the dataset's."""
    measure(results, setup.server_url, setup.mongo_url, setup.scale, 1, setup.server_pids, setup.batch_size)


def render(results: dict) -> list:
    """Lines for the benchmark's output (and BENCHMARKS.md)."""
    out = results.get("distributed")
    if not out:
        return []
    runs = out["runs"]

    def rate(mode):
        return statistics.median(r["docs"] / r["seconds"] for r in runs[mode])

    single = rate("single")
    docs = runs["single"][0]["docs"]
    lines = [f"- distributed full sync, first sync of {docs:,} documents, in one run: single process"
             f" {single:,.0f} docs/s; " + "; ".join(
                 f"--{mode} {rate(mode):,.0f} docs/s ({rate(mode) / single:.2f}x)" for mode in MODES[1:])]
    for mode in MODES:
        costs = {name: statistics.median(per_document(r)[name] for r in runs[mode])
                 if runs[mode][0].get("merge_s") is not None or name != "merge wall" else None
                 for name in per_document(runs[mode][0])}
        lines.append(f"  - {mode}: µs per document: " + ", ".join(
            f"{name} {value:.0f}" for name, value in costs.items() if value is not None)
            + f"; peak RSS {max(r['maxrss_mb'] for r in runs[mode]):.0f} MB")
    costs = {name: statistics.median(per_document(r)[name] for r in runs["workers 2"])
             for name in per_document(runs["workers 2"][0])}
    # The embedded MongoDB applies a range's index bounds by filtering a scan of the whole collection; mongod
    # reads each range through the index, each document once, as a plain scan does: the single run's cost.
    costs["mongodb"] = statistics.median(per_document(r)["mongodb"] for r in runs["single"])
    if costs["postgresql"] is None or costs["mongodb"] is None:  # external servers: their CPU is not read
        return lines
    lines.append(f"  - modelled (from the --workers 2 costs; servers of {SERVER_CORES} cores): " + ", ".join(
        f"{n} workers {rate_:,.0f} docs/s ({limit})" for n, rate_, limit in model(costs)))
    lines.append("  - modelled, not built (gigs merged in N sessions): " + ", ".join(
        f"{n} workers {rate_:,.0f} docs/s ({limit})" for n, rate_, limit in model(costs, split_gigs=True)))
    return lines


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        print(json.dumps(child(*argv[1:])))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.distributed", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 100k users + 200k gigs")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    with embedded() as servers:
        results: dict = {}
        measure(results, servers.postgres.url("postgres"), servers.mongo.url("bench_dist"), args.scale, args.repeat,
                servers.pids, generate=True)
        print(f"distributed sync benchmark: scale {args.scale:g}, {args.repeat} repetitions")
        print("\n".join(render(results)))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
