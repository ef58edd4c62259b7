"""Plain-text renderings of a run and of the status, as the CLI prints them."""
from typing import List, Optional

from gigsterpg.lib.pg.sync.engine.runner import RunReport

COLUMNS = ("seen", "inserted", "updated", "unchanged", "deleted", "rejected")


def format_run(report: RunReport) -> str:
    """The end-of-run summary: counts per collection, rejects by reason, the accounting."""
    lines = [f"Sync run {report.run_id} ({report.mode}) {report.status}."]
    header = f"{'collection':<12}" + "".join(f"{name:>11}" for name in COLUMNS) + "   rows + open rejects = documents"
    lines.append(header)
    for name, collection in report.collections.items():
        counts = collection.counts
        values = (counts.seen, counts.inserted, counts.updated, counts.unchanged, counts.deleted,
                  sum(counts.rejected.values()))
        if collection.balanced is None:
            accounting = ("not checked (incremental: reads only what changed)" if collection.scope == "incremental"
                          else "not checked (partial scan: --limit)")
        else:
            verdict = "holds" if collection.balanced else "DOES NOT HOLD"
            accounting = (f"{collection.rows} + {collection.open_rejects} "
                          f"{'=' if collection.balanced else '!='} {collection.documents}  {verdict}")
        lines.append(f"{name:<12}" + "".join(f"{value:>11}" for value in values) + "   " + accounting)
    for name, collection in report.collections.items():
        if collection.counts.rejected:
            reasons = ", ".join(f"{reason} {count}" for reason, count in collection.counts.rejected.most_common())
            lines.append(f"{name} rejected this run: {reasons}")
        extra = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in sorted(collection.counts.extra.items())
                          if value)
        if extra:
            lines.append(f"{name} also: {extra}")
    if not report.balanced:
        lines.append("Some documents are not accounted for: see `gigsterpg.cli status` and the log.")
    return "\n".join(lines)


def format_status(runs: List[dict], rejects: List[tuple], followers: Optional[List[dict]] = None) -> str:
    """The last runs, the followers of the change streams, and the open rejects by reason."""
    if not runs:
        return "No sync has run on this database yet."
    lines = ["Last runs:", f"{'run':>6}  {'started (UTC)':<19}  {'seconds':>8}  {'status':<11}  {'mode':<11}  "
             "collections"]
    for run in runs:
        seconds = f"{run['seconds']:.1f}" if run["seconds"] is not None else "-"
        notes = []
        if run.get("stage") and run["status"] != "succeeded":
            notes.append(("at " if run["status"] == "running" else "stopped at ") + run["stage"])
        if run.get("retries"):
            notes.append(f"{run['retries']} retr{'y' if run['retries'] == 1 else 'ies'}")
        if run["error"]:
            notes.append(run["error"])
        lines.append(f"{run['id']:>6}  {run['started_at']:%Y-%m-%d %H:%M:%S}  {seconds:>8}  {run['status']:<11}  "
                     f"{run.get('mode', 'full'):<11}  {run['collections']}"
                     + (f"  ({'; '.join(notes)})" if notes else ""))
    for follower in followers or []:
        lines.append(_format_follower(follower))
    lines.append("Open rejects:" if rejects else "Open rejects: none.")
    for collection, reason, count in rejects:
        lines.append(f"  {collection:<8} {reason:<32} {count:>8}")
    return "\n".join(lines)


def _format_follower(follower: dict) -> str:
    """``Follower main: 1200 events applied, last change 2026-... UTC, behind: 0 events, 0.0 s``."""
    when = follower["last_event_at"]
    parts = [f"{follower['events_applied']} events applied",
             f"last change {when:%Y-%m-%d %H:%M:%S} UTC" if when else "no change applied yet"]
    if follower.get("behind_unknown"):
        parts.append(f"behind: unknown ({follower['behind_unknown']})")
    else:
        parts.append(f"behind: {follower['behind_events']} events, {follower['behind_seconds']:.1f} s")
    if follower.get("last_error"):
        parts.append(f"last error {follower['last_error_at']:%Y-%m-%d %H:%M:%S}: {follower['last_error']}")
    return f"Follower {follower['name']}: " + ", ".join(parts)
