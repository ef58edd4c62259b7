"""The sync on a Dask cluster: ``--workers N`` (a local one) and ``--scheduler ADDRESS`` (an existing one).

The flags are the sync's parameters (``gigsterpg/pipelines/sync/``); this module runs what they ask.

Only a full sync is distributed; ``--follow`` and ``--incremental`` stay
single-writer (``gigsterpg.lib.pg.sync.engine.distributed`` says why), so
asking for both is refused in one line. ``GIGSTERPG_DASK_SCHEDULER`` sends every
full sync to that cluster; a follower or an incremental run ignores it.
"""
import logging
import sys

from gigsterpg import commands
from gigsterpg.exc import ConfigError
from gigsterpg.lib.pg.db.states import AUTO, FULL, INCREMENTAL
from gigsterpg.lib.pg.sync.engine.runner import RetryPolicy
from gigsterpg.pipelines.execute import note
from gigsterpg.pipelines.progress import Bar
from gigsterpg.report import format_run


def wanted(args, settings) -> bool:
    """Whether this sync goes to a Dask cluster: a flag asks for it, or the setting does for a full sync."""
    if getattr(args, "workers", None) or getattr(args, "scheduler", None):
        return True
    return bool(settings.dask_scheduler) and not args.follow and args.mode != INCREMENTAL


def run(args, settings, progress) -> int:
    """The distributed sync, its report printed; the exit code."""
    flag = "--workers" if args.workers else "--scheduler"
    for given, name, why in ((args.follow, "--follow", "a follower applies one ordered change stream"),
                             (args.mode == INCREMENTAL, "--incremental",
                              "an incremental run applies the changes since the watermark in their order"),
                             (args.limit, "--limit", "a distributed run reads every range to its end")):
        if given:
            raise ConfigError(f"{flag} cannot be combined with {name}", f"{why}, in one process",
                              f"drop {flag} (or {name})")
    if progress is not None:
        progress = Bar(progress.stream, units={"tasks": " tasks"})  # a first load's bar counts documents
    scheduler = None if args.workers else (args.scheduler or settings.dask_scheduler)
    dask_logs = logging.getLogger("distributed")
    level = dask_logs.level
    if args.log_level not in ("debug", "info"):  # Dask's own INFO lines (workers starting, keys) are not ours
        dask_logs.setLevel(logging.WARNING)
    try:
        return _run(args, settings, progress, scheduler)
    finally:
        dask_logs.setLevel(level)


def _run(args, settings, progress, scheduler) -> int:
    """Open the cluster, print its dashboard, sync, print the report.

    ``--workers N`` into empty tables (a first load) needs no cluster: the load workers of this machine
    (``parallel``: forked processes, no scheduler between them and the coordinator) run the same batches
    for less CPU a document than a local Dask cluster (BENCHMARKS.md, "The first load on Dask").
    """
    from gigsterpg.lib.pg.sync.engine.distributed import open_cluster

    collections = commands.parse_collections(args.collections)
    if args.workers and not scheduler and (args.mode or AUTO) != INCREMENTAL \
            and commands.first_load_ahead(settings, collections):
        report = commands.sync(settings, collections, progress=progress and Bar(progress.stream),  # documents
                               full_compare=args.full_compare,
                               retry=RetryPolicy(attempts=args.retries), wait_s=args.wait, mode=FULL,
                               load_workers=args.workers)
        note(report)
        print(format_run(report))
        print(f"Load workers: {args.workers} processes of this machine (a first load: no Dask cluster needed)")
        return 0 if report.balanced else 1
    with open_cluster(args.workers, scheduler) as client:
        link = dashboard_link(client)
        if link:
            print(f"Dask dashboard: {link}", file=sys.stderr, flush=True)
        report = commands.sync_distributed(settings, client, commands.parse_collections(args.collections), progress,
                                           full_compare=args.full_compare, wait_s=args.wait, mode=args.mode or AUTO,
                                           retry=RetryPolicy(attempts=args.retries))
    note(report)
    print(format_run(report))
    tasks = getattr(report, "tasks", None)
    if tasks is not None:
        print(f"Dask: {tasks.workers} workers, {tasks.tasks} tasks ({tasks.ran} ran, {tasks.retried} retried,"
              f" {tasks.failed} failed)")
        if tasks.contested:  # a re-sync: its merge split by range
            print(f"Dask merge: {tasks.merges} tasks in parallel sessions ({tasks.merge_retried} retried),"
                  f" {sum(tasks.contested.values())} contested documents replayed in scan order by the coordinator")
    return 0 if report.balanced else 1


def dashboard_link(client):
    """The cluster's dashboard address, or None when it serves none (bokeh missing, or switched off)."""
    try:
        services = client.scheduler_info().get("services", {})
    except Exception:  # pragma: no cover - a scheduler that stops answering fails the run right after
        return None
    return client.dashboard_link if "dashboard" in services else None
