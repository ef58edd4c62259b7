"""``sync``: MongoDB (users, gigs) into PostgreSQL, the Gigster brief's pipeline (``commands.sync``).

Its detail stays in ``sync_runs`` (per collection counts, rejects); the run record sums it up: ``read`` is
the documents seen, each inserted, updated, unchanged or rejected (deletes are rows gone, in ``details``).
"""
from gigsterpg import commands
from gigsterpg.lib.pg.db.states import AUTO, FULL, INCREMENTAL, SYNC_MODES
from gigsterpg.lib.pg.sync.engine.follow import FollowReport
from gigsterpg.lib.pg.sync.engine.runner import RetryPolicy
from gigsterpg.lib.pg.sync.registry import COLLECTIONS
from gigsterpg.pipelines.contract import CHOICE, FLAG, INTEGER, NUMBER, Context, Param, Pipeline, Report
from gigsterpg.pipelines.params import count, positive, seconds

# On the command line the mode is a flag of its own (--incremental, --reconcile), one of four that exclude
# each other with --rebuild and --follow (the group "scope").
MODES = ((f"--{INCREMENTAL}", INCREMENTAL, "read only documents updated since the last run (no deletes)"),
         ("--reconcile", FULL, "read everything and apply deletes (the default unless GIGSTERPG_INCREMENTAL is set)"))
PARAMS = (
    Param("collections", help=f"comma-separated subset of {','.join(COLLECTIONS)} (default: all)"),
    Param("limit", INTEGER, "read at most N documents per collection (no deletes then)", minimum=1, parse=positive),
    Param("batch_size", INTEGER, "documents per batch (default: 5000)", minimum=1, parse=positive),
    Param("full_compare", FLAG, "map and compare every document, not only the changed ones (repairs rows edited by"
          " hand)", default=False),
    Param("mode", CHOICE, f"{FULL} (read everything, apply deletes), {INCREMENTAL} (what changed), or {AUTO}",
          choices=SYNC_MODES, switches=MODES, group="scope"),
    Param("rebuild", FLAG, "empty the synced tables and load everything again (one transaction: a crash keeps"
          " the old data)", default=False, group="scope"),
    # A follower never ends, and a Dask cluster is the command line's: not over HTTP.
    Param("follow", FLAG, "catch up, then apply MongoDB's changes as they happen until stopped (Ctrl-C, SIGTERM)",
          default=False, http=False, group="scope"),
    Param("retries", INTEGER, "reconnect and go on this many times after a lost connection (default: %(default)s)",
          default=RetryPolicy.attempts, minimum=0, parse=count),
    Param("wait", NUMBER, "if another sync is running, wait for it (up to SECONDS, default 3600) instead of"
          " refusing", minimum=0, maximum=1e9, parse=seconds, const=3600.0, metavar="SECONDS"),
    Param("workers", INTEGER, "full sync: read and map the collections on a local Dask cluster of N worker"
          " processes (pip install 'gigsterpg[dask]')", minimum=1, http=False, parse=positive, metavar="N"),
    Param("scheduler", help="full sync on the Dask cluster at ADDRESS, e.g. tcp://host:8786, whose workers have"
          " gigsterpg installed and reach both databases (default: GIGSTERPG_DASK_SCHEDULER)", http=False,
          metavar="ADDRESS"),
    Param("load_workers", INTEGER, "a first sync (empty tables) or --rebuild: decode, map and COPY in N processes"
          " of this machine, each with its own PostgreSQL session (default: one per core; 0: in the sync's own"
          " process)", minimum=0, parse=count, metavar="N"),
)


def run(context: Context, params: dict):
    """The sync (not following, not distributed: those stay the command line's)."""
    return commands.sync(context.settings, commands.parse_collections(params["collections"]), params["limit"],
                         context.progress, full_compare=params["full_compare"],
                         retry=RetryPolicy(attempts=params["retries"]), wait_s=params["wait"],
                         mode=params["mode"] or AUTO, rebuild=params["rebuild"],
                         load_workers=params["load_workers"])


def check(settings, params: dict) -> None:
    commands.parse_collections(params["collections"])


def report(native) -> Report:
    if isinstance(native, FollowReport):
        return Report(native.events, {"applied": native.events},
                      {"batches": native.batches, "resyncs": native.resyncs, "retries": native.retries})
    outcomes = {"inserted": 0, "updated": 0, "unchanged": 0, "rejected": 0}
    deleted = 0
    for part in native.collections.values():
        counts = part.counts
        outcomes["inserted"] += counts.inserted
        outcomes["updated"] += counts.updated
        outcomes["unchanged"] += counts.unchanged
        outcomes["rejected"] += sum(counts.rejected.values())
        deleted += counts.deleted
    read = sum(part.counts.seen for part in native.collections.values())
    details = {"sync_run": native.run_id, "mode": native.mode, "deleted": deleted, "balanced": native.balanced,
               "collections": {name: part.as_dict() for name, part in native.collections.items()}}
    return Report(read, outcomes, details, ok=native.balanced,
                  error=None if native.balanced else (
                      f"sync run {native.run_id} does not balance, rows + open rejects differ from the documents"
                      " read, see the table above and the open rejects (status)"))


def text(native) -> str:
    from gigsterpg.report import format_run
    if isinstance(native, FollowReport):
        return f"Stopped following: {native.events} events applied in {native.batches} batches."
    return format_run(native)


PIPELINE = Pipeline("sync", "MongoDB users and gigs into PostgreSQL (migrate, then sync)", PARAMS, run, report, text,
                    settings={"batch_size": "batch_size"}, check=check)
