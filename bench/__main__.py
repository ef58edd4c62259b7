"""The benchmark: ``python -m bench [--scale S] [--repeat N]`` (or ``make bench``).

Starts embedded servers (or uses ``DB_URL_PSQL`` / ``DB_URL_MONGO`` with
``--external``), generates the dataset (100k users + 200k gigs at scale 1,
deterministic), and prints one table: every measured rate as documents/s and
as the ratio its target uses, median and min over the repetitions. Each
measurement runs in a child process (``bench.child``), so that its time and
peak RSS are its own.
"""
import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pymongo
from bson import ObjectId
from psycopg import sql

from bench import parts
from bench.servers import embedded
from gigsterpg.fixtures.generate import write_dataset

USERS, GIGS = 100_000, 200_000
EXPORT_ROWS = 100_000
# Follow mode: inserts per second offered (None: as fast as the server takes them).
FOLLOW_RATES = (200, None)
TARGETS = {"first sync": 0.7, "unchanged re-sync": 0.9, "re-sync after changes": 0.8, "transform + load": 0.6,
           "transform + load (first load)": 0.35}


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


SERVER_PIDS = {}


def server_cpu() -> dict:
    """CPU seconds used so far by each embedded server (PostgreSQL: the postmaster and its backends)."""
    import psutil
    totals = {}
    for name, pid in SERVER_PIDS.items():
        try:
            root = psutil.Process(pid)
            totals[name] = sum(sum(p.cpu_times()[:4]) for p in [root] + root.children(recursive=True))
        except psutil.Error:
            totals[name] = 0.0
    return totals


def child(op: str, pg_url: str, mongo_url: str, batch_size: int) -> dict:
    """Run one operation in a fresh interpreter; its JSON result, with the servers' CPU seconds."""
    before = server_cpu()
    result = subprocess.run([sys.executable, "-m", "bench.child", op, pg_url, mongo_url, str(batch_size)],
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0:
        raise SystemExit(f"FAILED: benchmark step {op!r} failed, {result.stderr.strip().splitlines()[-1:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    after = server_cpu()
    measured.update({f"{name}_cpu_s": after[name] - before[name] for name in after})
    return measured


class Databases:
    """Fresh PostgreSQL databases on one server, dropped at the end."""

    def __init__(self, server_url: str):
        self.server_url = server_url
        self.names = []

    def fresh(self) -> str:
        name = "bench_" + uuid.uuid4().hex[:12]
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.names.append(name)
        return with_database(self.server_url, name)

    def drop_all(self) -> None:
        for name in self.names:
            self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def _admin(self, statement) -> None:
        connection = psycopg.connect(self.server_url, autocommit=True)
        with connection.cursor() as cursor:
            cursor.execute(statement)
        connection.close()


def mongo_id(text: str):
    """The MongoDB _id whose text form is ``text`` (generated data: ObjectId, int or string)."""
    if len(text) == 24:
        try:
            return ObjectId(text)
        except Exception:
            pass
    return int(text) if text.isdigit() else text


def apply_changes(database, pg_url: str, round_no: int) -> dict:
    """Update 1%, insert 1% and delete 0.5% of each collection's stored documents; the expected counts."""
    expected = {}
    connection = psycopg.connect(pg_url)
    for name, field in (("users", "name"), ("gigs", "description")):
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("SELECT _id FROM {} ORDER BY md5(_id || %s)").format(sql.Identifier(name)),
                           (str(round_no),))
            stored = [row[0] for row in cursor.fetchall()]
        total = database[name].estimated_document_count()
        n_update, n_insert, n_delete = total // 100, total // 100, total // 200
        updates, deletes = stored[:n_update], stored[n_update:n_update + n_delete]
        for text in updates:
            database[name].update_one({"_id": mongo_id(text)}, {"$set": {field: f"changed in round {round_no}"}})
        database[name].delete_many({"_id": {"$in": [mongo_id(text) for text in deletes]}})
        fresh = [{"_id": ObjectId(), "name": f"new {round_no}.{i}", "state": "unstarted"} for i in range(n_insert)]
        if name == "users":
            fresh = [{"_id": doc["_id"], "name": doc["name"], "skills": ["Python", "Brand New Skill"]}
                     for doc in fresh]
        database[name].insert_many(fresh)
        expected[name] = {"updated": len(updates), "inserted": n_insert, "deleted": len(deletes)}
    connection.close()
    return expected


def summarize(values):
    return statistics.median(values), min(values)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 100k users + 200k gigs")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each measurement")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--rss-scale", type=float, default=0, help="also measure the first sync's RSS at this scale")
    parser.add_argument("--external", action="store_true", help="use DB_URL_PSQL / DB_URL_MONGO, not embedded servers")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--follow-seconds", type=float, default=10, help="length of each follow-mode load")
    covered = "; ".join(f"{part.ONLY}: {', '.join(part.PIPELINES)}" for part in parts.PARTS)
    parser.add_argument("--only", choices=[part.ONLY for part in parts.PARTS],
                        help=f"run only this part ({covered})")
    parser.add_argument("--workers", type=_counts, metavar="N,N,...",
                        help="only the scaling curve: a first sync with each of these numbers of load worker"
                             " processes (0: in the coordinator), then on a local Dask cluster of as many"
                             " workers, interleaved with read-only runs")
    args = parser.parse_args(argv)
    if args.only:
        part = parts.only(args.only)
        repeat = ["--repeat", str(args.repeat)] if getattr(part, "ONLY_REPEATS", True) else []
        return part.main(["--scale", str(args.scale)] + repeat)

    with contextlib.ExitStack() as stack:
        if args.external:
            pg_server, mongo_server = os.environ["DB_URL_PSQL"], os.environ["DB_URL_MONGO"]
        else:
            servers = stack.enter_context(embedded())
            SERVER_PIDS.update(servers.pids)
            pg_server, mongo_server = servers.postgres.url("postgres"), servers.mongo.url("")
        databases = Databases(pg_server)
        try:
            if args.workers is not None:
                results = run_workers(args, databases, mongo_server)
                print(render_workers(results, args))
                return 0
            results = run(args, databases, mongo_server)
        finally:
            databases.drop_all()
    print(render(results, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def _counts(text: str) -> list:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of whole numbers like 1,2,4") from None
    if any(count < 0 for count in counts):
        raise argparse.ArgumentTypeError("a number of workers is 0 or more")
    return counts


def run_workers(args, databases: Databases, mongo_server: str) -> dict:
    """The scaling curve: read-only and a first sync per number of load workers, interleaved, ``repeat`` rounds."""
    mongo_url = with_database(mongo_server, "bench_" + uuid.uuid4().hex[:8])
    client = pymongo.MongoClient(mongo_url)
    database = client.get_default_database()
    users, gigs = int(USERS * args.scale), int(GIGS * args.scale)
    write_dataset(database, users, gigs, messy_rate=0.05, seed=42, replace=True)
    results = {"docs": users + gigs, "runs": {}}
    for _ in range(args.repeat):
        for label, op, url in [("read-only", "read", databases.server_url)] + [
                (f"first sync, {count} workers", f"sync_w{count}", None) for count in args.workers] + [
                (f"first sync, Dask {count} workers", f"dask_w{count}", None) for count in args.workers if count]:
            result = child(op, url or databases.fresh(), mongo_url, args.batch_size)
            results["runs"].setdefault(label, []).append(result)
            print(f"{label}: {result['docs'] / result['seconds']:,.0f} docs/s, {result['maxrss_mb']:.0f} MB",
                  file=sys.stderr)
            if url is None:
                databases.drop_all()
                databases.names.clear()
    client.drop_database(database.name)
    return results


def render_workers(results: dict, args) -> str:
    """The scaling curve as a table: rates, ratios to read-only, RSS, CPU per document by process."""
    runs, docs = results["runs"], results["docs"]
    read = statistics.median(docs / r["seconds"] for r in runs["read-only"])
    single = None
    lines = [f"scale {args.scale:g} ({docs:,} documents), batch {args.batch_size}, {args.repeat} rounds;"
             f" read-only median {read:,.0f} docs/s",
             "| run | docs/s median (all) | x read | x 0 workers | peak RSS MB: coordinator / largest worker |"
             " CPU µs/doc: coordinator / workers / MongoDB / PostgreSQL |",
             "| --- | ---: | ---: | ---: | --- | --- |"]
    for label, measured in runs.items():
        rates = [docs / r["seconds"] for r in measured]
        rate = statistics.median(rates)
        if label == "first sync, 0 workers":
            single = rate

        def per_doc(key):
            return f"{statistics.median(r.get(key, 0) for r in measured) / docs * 1e6:.0f}"
        lines.append(f"| {label} | {rate:,.0f} ({', '.join(f'{x:,.0f}' for x in rates)}) | {rate / read:.2f} |"
                     f" {'' if single is None or label == 'read-only' else f'{rate / single:.2f}'} |"
                     f" {max(r['maxrss_mb'] for r in measured):.0f} /"
                     f" {max(r.get('workers_maxrss_mb', 0) for r in measured):.0f} |"
                     f" {per_doc('cpu_s')} / {per_doc('workers_cpu_s')} / {per_doc('mongo_cpu_s')} /"
                     f" {per_doc('pg_cpu_s')} |")
    return "\n".join(lines)


def run(args, databases: Databases, mongo_server: str) -> dict:
    mongo_url = with_database(mongo_server, "bench_" + uuid.uuid4().hex[:8])
    client = pymongo.MongoClient(mongo_url)
    database = client.get_default_database()
    users, gigs = int(USERS * args.scale), int(GIGS * args.scale)
    started = time.perf_counter()
    write_dataset(database, users, gigs, messy_rate=0.05, seed=42, replace=True)
    print(f"generated {users} users + {gigs} gigs in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    batch = args.batch_size
    results = {"docs": users + gigs, "runs": {}}

    def record(label, result):
        results["runs"].setdefault(label, []).append(result)
        print(f"{label}: {result['docs'] / result['seconds']:,.0f} docs/s, {result['maxrss_mb']:.0f} MB",
              file=sys.stderr)

    for _ in range(args.repeat):
        record("read-only", child("read", databases.server_url, mongo_url, batch))
    for _ in range(args.repeat):
        record("first sync", child("sync", databases.fresh(), mongo_url, batch))  # the first load (issue 16)
    pg_url = databases.names and with_database(databases.server_url, databases.names[-1])
    for _ in range(args.repeat):
        record("first sync by the merge path", child("sync_merge", databases.fresh(), mongo_url, batch))
    for _ in range(args.repeat):
        result = child("sync", pg_url, mongo_url, batch)
        result["rewritten"] = sum(c["inserted"] + c["updated"] + c["deleted"] for c in result["counts"].values())
        record("unchanged re-sync", result)
    for round_no in range(args.repeat):
        expected = apply_changes(database, pg_url, round_no)
        result = child("sync", pg_url, mongo_url, batch)
        result["expected"] = expected
        result["exact"] = all(result["counts"][name][key] == value for name, touched in expected.items()
                              for key, value in touched.items())
        record("re-sync after changes", result)
        record("read-only (after changes)", child("read", databases.server_url, mongo_url, batch))
    measure_incremental(results, database, pg_url, mongo_url, batch, args.repeat, args.scale)
    for rate in FOLLOW_RATES:
        measure_follow(results, database, pg_url, mongo_url, rate, args.follow_seconds)
    for _ in range(args.repeat):
        record("transform + load", child("transform_load", databases.fresh(), mongo_url, batch))
        record("transform + load (first load)", child("transform_first_load", databases.fresh(), mongo_url, batch))
        record("COPY of the same rows", child("copy", pg_url, mongo_url, batch))
    record("ORM merge() per document", child("orm", databases.fresh(), mongo_url, batch))
    export_rows = max(1000, int(EXPORT_ROWS * args.scale))  # the row count travels in batch_size's place
    results["export"] = [child("export", databases.fresh(), mongo_url, export_rows) for _ in range(args.repeat)]
    setup = parts.Setup(databases.server_url, mongo_server, mongo_url, args.scale, args.repeat, batch, SERVER_PIDS,
                        databases.fresh)
    for part in parts.in_order():  # every other pipeline of the registry, by the part of bench/ that measures it
        part.bench(results, setup)
    if args.rss_scale:
        big_url = with_database(mongo_server, "bench_big_" + uuid.uuid4().hex[:8])
        big = pymongo.MongoClient(big_url)
        write_dataset(big.get_default_database(), int(USERS * args.rss_scale), int(GIGS * args.rss_scale),
                      messy_rate=0.05, seed=43, replace=True)
        big_pg = databases.fresh()
        record(f"first sync at scale {args.rss_scale:g}", child("sync", big_pg, big_url, batch))
        measure_incremental(results, big.get_default_database(), big_pg, big_url, batch, args.repeat, args.rss_scale)
        big.drop_database(big.get_default_database().name)
    client.drop_database(database.name)
    return results


def measure_incremental(results, database, pg_url, mongo_url, batch, repeat, scale) -> None:
    """Incremental runs on unchanged data, with an index on ``updated``: seconds and documents read,
    which must not grow with the size of the collections. The caller's syncs that wrote set the watermarks."""
    for name in ("users", "gigs"):
        database[name].create_index("updated")
    runs = [child("incremental", pg_url, mongo_url, batch) for _ in range(repeat)]
    results.setdefault("incremental", {})[f"{scale:g}"] = runs
    print(f"incremental at scale {scale:g}: {[round(r['seconds'], 2) for r in runs]} s", file=sys.stderr)


def measure_follow(results, database, pg_url, mongo_url, rate: float, seconds: float) -> None:
    """``sync --follow`` in its own process under a steady load of inserts: changes applied per second,
    and the delay from each insert in MongoDB to its row being visible in PostgreSQL."""
    env = {**os.environ, "DB_URL_PSQL": pg_url, "DB_URL_MONGO": mongo_url}
    follower = subprocess.Popen([sys.executable, "-m", "gigsterpg.cli", "sync", "--follow"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with psycopg.connect(pg_url, autocommit=True) as pg:
            deadline = time.monotonic() + 600
            while pg.execute("SELECT count(*) FROM sync_runs WHERE mode = 'follow' AND status = 'running'"
                             ).fetchone()[0] == 0:
                if time.monotonic() > deadline or follower.poll() is not None:
                    raise SystemExit("FAILED: benchmark step 'follow' did not start following")
                time.sleep(0.1)
            written, visible, failed = [], [], []
            prefix = f"follow{rate or 'max'}-"

            def write():  # `rate` inserts per second (None: as fast as the server takes them) for `seconds`
                try:
                    start = time.perf_counter()
                    seq = 0
                    while time.perf_counter() < start + seconds:
                        wait = start + seq / rate - time.perf_counter() if rate else 0
                        if wait > 0:
                            time.sleep(wait)
                        database.gigs.insert_one({"_id": f"{prefix}{seq}", "name": "follow", "state": "unstarted"})
                        written.append(time.perf_counter())
                        seq += 1
                except BaseException as err:  # reported below
                    failed.append(err)

            writer = threading.Thread(target=write)
            writer.start()
            seen = 0
            deadline = time.monotonic() + seconds + 60
            while (writer.is_alive() or seen < len(written)) and time.monotonic() < deadline and not failed:
                now = pg.execute("SELECT count(*) FROM gigs WHERE _id LIKE %s", (prefix + "%",)).fetchone()[0]
                visible.extend([time.perf_counter()] * (now - seen))  # applied in order: a prefix is visible
                seen = now
                time.sleep(0.005)
            writer.join()
            if failed:
                raise SystemExit(f"FAILED: benchmark step 'follow' could not write: {failed[0]}")
    finally:
        follower.send_signal(signal.SIGTERM)
        follower.wait(timeout=60)
    delays = sorted(v - w for w, v in zip(written, visible))
    span = visible[-1] - written[0] if visible else float("nan")
    results.setdefault("follow", []).append({
        "offered_per_s": rate, "seconds": seconds, "changes": len(visible), "applied_per_s": len(visible) / span,
        "written_per_s": len(written) / (written[-1] - written[0]) if len(written) > 1 else None,
        "p50_ms": 1000 * delays[len(delays) // 2] if delays else None,
        "p99_ms": 1000 * delays[int(len(delays) * 0.99)] if delays else None})
    print(f"follow at {rate or 'max'}/s: {results['follow'][-1]}", file=sys.stderr)


def render(results: dict, args) -> str:
    runs = results["runs"]

    def rates(label):
        return [r["docs"] / r["seconds"] for r in runs[label]]

    read_median = statistics.median(rates("read-only") + rates("read-only (after changes)"))
    copy_median = statistics.median(rates("COPY of the same rows"))
    lines = [f"gigsterpg benchmark: {results['docs']:,} documents (scale {args.scale:g}), batch {args.batch_size},"
             f" {args.repeat} repetitions, {os.cpu_count()} cores",
             "",
             "| measurement | docs/s median | docs/s min | ratio (median) | target | peak RSS MB"
             " | CPU µs/doc: gigsterpg / MongoDB / PostgreSQL |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for label in runs:
        if not runs[label][0]["docs"]:
            continue
        median, low = summarize(rates(label))
        by_copy = label.startswith("transform + load")
        base = copy_median if by_copy else read_median
        ratio = f"{median / base:.2f} x {'COPY' if by_copy else 'read'}"
        target = TARGETS.get(label)
        verdict = "" if target is None else f"{target} {'met' if median / base >= target else 'NOT met'}"
        rss = max(r["maxrss_mb"] for r in runs[label])
        cpu = " / ".join(f"{statistics.median(r.get(key, 0) / r['docs'] * 1e6 for r in runs[label]):.0f}"
                         for key in ("cpu_s", "mongo_cpu_s", "pg_cpu_s"))
        lines.append(f"| {label} | {median:,.0f} | {low:,.0f} | {ratio} | {verdict} | {rss:.0f} | {cpu} |")
    unchanged = runs["unchanged re-sync"]
    changed = runs["re-sync after changes"]
    lines += ["",
              f"- unchanged re-sync rows rewritten: {[r['rewritten'] for r in unchanged]} (target 0)",
              f"- re-sync after changes touched exactly the changed rows: {[r['exact'] for r in changed]}"]
    if results.get("export"):
        runs_ = results["export"]
        rate = statistics.median(r["docs"] / r["seconds"] for r in runs_)
        copy_rate = statistics.median(r["docs"] / r["copy_seconds"] for r in runs_)
        insert_rate = statistics.median(r["docs"] / r["insert_seconds"] for r in runs_)
        lines.append(f"- export-table of a {runs_[0]['docs']:,}-row table: {rate:,.0f} rows/s = {rate / copy_rate:.3f}x"
                     f" COPY ... TO of the same table ({copy_rate:,.0f} rows/s) and {rate / insert_rate:.2f}x a plain"
                     f" insert_many of the same documents ({insert_rate:,.0f} docs/s); peak RSS"
                     f" {max(r['maxrss_mb'] for r in runs_):.0f} MB (the plain insert holds every document)")
        api_rate = statistics.median(r["docs"] / r["api_seconds"] for r in runs_)
        lines.append(f"- the same export through the HTTP API (POST /exports to the job's success, polled every"
                     f" {1000 * runs_[0]['api_poll_s']:g} ms): {api_rate:,.0f} rows/s = {api_rate / rate:.2f}x the"
                     " library call")
    for run in results.get("follow", []):
        load = f"{run['offered_per_s']:g} inserts/s" if run["offered_per_s"] else "inserts as fast as MongoDB takes"
        lines.append(f"- follow under a steady load of {load} for {run['seconds']:g} s (written: "
                     f"{run['written_per_s']:,.0f}/s): {run['applied_per_s']:,.0f} changes applied/s, delay from"
                     f" MongoDB write to PostgreSQL row p50 {run['p50_ms']:.0f} ms, p99 {run['p99_ms']:.0f} ms"
                     f" ({run['changes']} changes)")
    for scale, incremental in results.get("incremental", {}).items():
        seconds = statistics.median(r["seconds"] for r in incremental)
        read = [r["docs"] for r in incremental]
        documents = int(results["docs"] * float(scale) / args.scale)
        lines.append(f"- incremental run on unchanged data at scale {scale} ({documents:,} documents): median"
                     f" {seconds:.2f} s, documents read {read}")
    for part in parts.in_order():
        lines += part.render(results)
    lines += [f"- {name}: not measured (no part of bench/ declares it, see bench/parts.py)"
              for name in parts.unmeasured()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
