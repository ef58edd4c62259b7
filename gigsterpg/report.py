"""The plain-text summary of a run, as the CLI prints it (``status``: ``gigsterpg.status_text``)."""
from gigsterpg.lib.pg.sync.engine.runner import RunReport
from gigsterpg.text import number

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
            accounting = (f"{number(collection.rows)} + {number(collection.open_rejects)} "
                          f"{'=' if collection.balanced else '!='} {number(collection.documents)}  {verdict}")
        lines.append(f"{name:<12}" + "".join(f"{number(value):>11}" for value in values) + "   " + accounting)
    for name, collection in report.collections.items():
        if collection.counts.rejected:
            reasons = ", ".join(f"{reason} {number(count)}"
                                for reason, count in collection.counts.rejected.most_common())
            lines.append(f"{name} rejected this run: {reasons}")
        extra = ", ".join(f"{key.replace('_', ' ')} {number(value)}"
                          for key, value in sorted(collection.counts.extra.items()) if value)
        if extra:
            lines.append(f"{name} also: {extra}")
    if not report.balanced:
        lines.append("Some documents are not accounted for: see `gigsterpg.cli status` and the log.")
    return "\n".join(lines)
