"""``status`` in the terminal: the sections of the status page as aligned tables, or as JSON for scripts.

Both render the dict of ``gigsterpg.lib.status.collect``, the one the page renders too.
"""
import json
import uuid
from datetime import date, datetime
from typing import Iterable, List, Sequence

from gigsterpg.lib.pg.db.states import FAILED, INTERRUPTED, RUNNING, SUCCEEDED
from gigsterpg.lib.status import COUNTS, REJECTS_COUNTED

INTERRUPTED_STEP = "its process ended before it finished"
PROJECTED = ("read", "written", "unchanged", "deleted", "rejected")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], right: Iterable[int] = ()) -> List[str]:
    """Lines of a table whose columns are as wide as their widest cell; columns ``right`` aligned right."""
    cells = [[str(header) for header in headers]]
    cells += [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    right = set(right)
    return ["  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                      for i, cell in enumerate(row)).rstrip() for row in cells]


def when(moment) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment else "-"


def number(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def accounting(part: dict) -> str:
    if part["balanced"] is None:
        return "not checked" if part["seen"] is not None else "-"
    return "holds" if part["balanced"] else "DOES NOT HOLD"


def run_notes(run: dict) -> List[str]:
    """Where a run is or stopped, its retries and its error."""
    notes = []
    if run.get("stage") and run["status"] != SUCCEEDED:
        notes.append(("at " if run["status"] == RUNNING else "stopped at ") + run["stage"])
    if run.get("retries"):
        notes.append(f"{run['retries']} retr{'y' if run['retries'] == 1 else 'ies'}")
    if run.get("error"):
        notes.append(run["error"])
    return notes


def format_runs(runs: List[dict]) -> List[str]:
    if not runs:
        return ["No sync has run on this database yet."]
    rows, notes = [], []
    for run in runs:
        for index, part in enumerate(run["collections"]):
            head = ((run["id"], when(run["started_at"]), number(run["seconds"], 1), number(run["rate"]),
                     run["status"], run["mode"]) if index == 0 else ("",) * 6)
            rows.append((*head, part["name"], *(number(part[key]) for key in COUNTS), accounting(part)))
        if run_notes(run):
            notes.append(f"  run {run['id']}: {'; '.join(run_notes(run))}")
    lines = table(("run", "started (UTC)", "seconds", "docs/s", "state", "mode", "collection", *COUNTS,
                   "accounting"), rows, right=(0, 2, 3, 7, 8, 9, 10, 11, 12))
    return lines + notes


def format_follower(follower: dict) -> str:
    """``Follower main: running, 1200 events applied, last change 2026-... UTC, behind: 0 events, 0.0 s``."""
    moment = follower["last_event_at"]
    parts = ["running" if follower.get("running") else "not running",
             f"{follower['events_applied']} events applied",
             f"last change {moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "no change applied yet"]
    if follower.get("behind_unknown"):
        parts.append(f"behind: unknown ({follower['behind_unknown']})")
    else:
        parts.append(f"behind: {follower['behind_events']} events, {follower['behind_seconds']:.1f} s")
    if follower.get("last_error"):
        parts.append(f"last error {follower['last_error_at']:%Y-%m-%d %H:%M:%S}: {follower['last_error']}")
    return f"Follower {follower['name']}: " + ", ".join(parts)


def reject_count(count: int) -> str:
    """A reason's open rejects; past the counted bound, "more than" it."""
    return f"more than {REJECTS_COUNTED:,}" if count > REJECTS_COUNTED else f"{count:,}"


def progress(job: dict) -> str:
    if job["rows_total"] is None:
        return number(job["rows_done"])
    return f"{number(job['rows_done'])} of {number(job['rows_total'])}"


def format_jobs(jobs: List[dict]) -> List[str]:
    if not jobs:
        return ["No job has been started through the API."]
    return table(("job", "kind", "state", "created (UTC)", "progress", "what", "error"),
                 [(str(job["id"])[:8], job["kind"], job["state"], when(job["created_at"]), progress(job), job["what"],
                   "; ".join(job["errors"] + ([f"restarted as {str(job['restarted_as'])[:8]}"]
                                              if job["restarted_as"] else []))) for job in jobs], right=(4,))


def format_snapshots(grid: dict) -> List[str]:
    if not grid or not grid["days"]:
        return ["No daily snapshot has run."]
    steps = grid["steps"]
    rows = [(day["day"], *(cell_text(day["cells"].get(step)) for step in steps)) for day in grid["days"]]
    lines = table(("day", *steps), rows)
    for day in grid["days"]:
        for step in steps:
            cell = day["cells"].get(step)
            if cell and cell["state"] in (FAILED, INTERRUPTED):
                lines.append(f"  {day['day']} {step} {cell['state']}: {cell['error'] or INTERRUPTED_STEP}")
                if cell.get("command"):
                    lines.append(f"    to pick up from there: {cell['command']}")
    return lines


def cell_text(cell) -> str:
    if not cell:
        return "-"
    return cell["state"] + (f" {number(cell['rows'])}" if cell.get("rows") is not None else "")


def projection_notes(run: dict) -> List[str]:
    """A projection run's rejects by reason and its error."""
    notes = [f"{reason} {count:,}" for reason, count in sorted(run["reasons"].items(), key=lambda i: (-i[1], i[0]))]
    return notes + ([run["error"]] if run["error"] else [])


def format_projections(projections: List[dict]) -> List[str]:
    if not projections:
        return ["No projection has run (export-orders runs one)."]
    lines = table(("run", "started (UTC)", "seconds", "orders/s", "state", "projection", "into", "by", "read",
                   "written", "unchanged", "deleted", "rejected"),
                  [(run["id"], when(run["started_at"]), number(run["seconds"], 1), number(run["rate"]), run["state"],
                    run["projection"], run["collection"], run["origin"], *(number(run[key]) for key in PROJECTED))
                   for run in projections], right=(0, 2, 3, 8, 9, 10, 11, 12))
    return lines + [f"  run {run['id']}: {'; '.join(projection_notes(run))}" for run in projections
                    if projection_notes(run)]


def outcome_text(run: dict) -> str:
    """A run's outcomes as people read them: ``written 7, rejected 1`` (the zeros left out)."""
    return ", ".join(f"{key.replace('_', ' ')} {number(value)}" for key, value in (run["outcomes"] or {}).items()
                     if value)


def format_pipelines(sections: List[dict]) -> List[str]:
    """A section per pipeline of the registry: its newest runs from the one record (CLI and API)."""
    lines = []
    for section in sections:
        lines += ["", f"{section['name']} ({section['help']}):"]
        if not section["runs"]:
            lines.append(f"  no run yet ({section['command']} on the command line, or POST /runs)")
            continue
        lines += ["  " + line for line in table(
            ("run", "by", "state", "started (UTC)", "seconds", "read", "outcomes"),
            [(run["id"], run["source"], run["state"], when(run["started_at"]), number(run["seconds"], 1),
              number(run["read"]), outcome_text(run)) for run in section["runs"]], right=(0, 4, 5))]
        lines += [f"    run {run['id']}: {run['error']}" for run in section["runs"] if run["error"]]
    return lines


def format_status(status: dict) -> str:
    """Every section: the sync's runs, follow, open rejects, jobs, daily snapshots, projections, then each
    pipeline's runs (the one record)."""
    lines = ["Runs (newest first):"] + format_runs(status["runs"])
    lines += [""] + ([format_follower(follower) for follower in status["followers"]] or ["No follower has run."])
    lines += ["", "Open rejects:" if status["rejects"] else "Open rejects: none."]
    lines += table(("collection", "reason", "count"), [(c, r, reject_count(n)) for c, r, n in status["rejects"]],
                   right=(2,)) if status["rejects"] else []
    lines += ["", "Jobs (started through the API):"] + format_jobs(status["jobs"])
    if status.get("snapshots") is not None:
        lines += ["", "Daily snapshots:"] + format_snapshots(status["snapshots"])
    lines += ["", "Projections (export-orders, newest first):"] + format_projections(status.get("projections") or [])
    lines += ["", "Pipelines (newest runs first, from the command line and the API):"]
    lines += format_pipelines(status.get("pipelines") or [])
    return "\n".join(lines)


def status_json(status: dict) -> str:
    """The same sections for scripts; rejects as objects (``more``: there are more than ``count``), times in
    ISO 8601."""
    shown = {**status, "rejects": [{"collection": c, "reason": r, "count": min(n, REJECTS_COUNTED),
                                    "more": n > REJECTS_COUNTED} for c, r, n in status["rejects"]]}
    return json.dumps(shown, indent=2, default=_plain, ensure_ascii=False)


def _plain(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot show {type(value).__name__} as JSON")
