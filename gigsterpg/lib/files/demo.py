"""The daily snapshots' demo: an embedded PostgreSQL, a Northwind-like source, two days run, status shown."""
import dataclasses
import datetime
from pathlib import Path
from typing import List

from gigsterpg.embedded import EmbeddedPostgres
from gigsterpg.lib.files import snapshot
from gigsterpg.lib.files.ledger import StatusRow, snapshot_status
from gigsterpg.lib.files.result import result_files
from gigsterpg.lib.pg.db import SqlAlchemy
from gigsterpg.northwind import generate_northwind

DEMO_DAYS = (datetime.date(2021, 1, 1), datetime.date(2021, 1, 2))


@dataclasses.dataclass
class DemoReport:
    """What the demo ran, the status after it, and the first lines of the last day's result."""

    run: snapshot.DaysReport
    status: List[StatusRow]
    result_path: str
    result_head: List[str]


def demo(folder: Path, days=DEMO_DAYS, orders: int = 830) -> DemoReport:
    """Start an embedded server in ``folder``, generate the source, run the pipeline for ``days``; servers stopped."""
    folder = Path(folder)
    server = EmbeddedPostgres(folder / "postgres")
    try:
        source, target = server.create_database("northwind"), server.create_database("gigsterpg")
        handle = SqlAlchemy(target)
        try:
            handle.migrate_head()
        finally:
            handle.dispose()
        csv_path = folder / "source" / "order_details.csv"
        generate_northwind(source, csv_path, orders=orders)
        pipeline = snapshot.Pipeline(target, folder / "data", source, csv_path)
        run = snapshot.run_days(pipeline, list(days))
        status = snapshot_status(target, days=len(days))
    finally:
        server.stop()
    csv_result = result_files(folder / "data" / "results" / days[-1].isoformat())[0]
    head = csv_result.read_text(encoding="utf-8").splitlines()[:6] if csv_result.is_file() else []
    return DemoReport(run, status, str(csv_result), head)
