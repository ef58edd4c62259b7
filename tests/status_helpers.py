"""What the status page's tests share: real runs to look at, and the page's tables read back as text."""
import datetime
import threading
from html.parser import HTMLParser
from typing import Dict, List, Optional

from gigsterpg import commands
from gigsterpg.exc import GigsterPgError
from gigsterpg.lib.files import snapshot
from gigsterpg.lib.pg.sync.engine.runner import RetryPolicy
from tests.helpers import API_AUTH, wait_until

USERS_OK = 6
BAD_EMAILS = 30  # more than a page (25) of one reason, so paging shows
GIGS_OK = 4


def user_documents() -> List[dict]:
    good = [{"_id": i, "name": f"user {i}", "email": f"user{i}@example.com"} for i in range(USERS_OK)]
    bad = [{"_id": 100 + i, "name": f"bad {i}", "email": f"not-an-email-{i}"} for i in range(BAD_EMAILS)]
    return good + bad


def gig_documents() -> List[dict]:
    good = [{"_id": i, "name": f"gig {i}", "state": "done", "poster": i % USERS_OK} for i in range(GIGS_OK)]
    return good + [{"_id": 99, "name": "odd gig", "state": "nope", "poster": 0}]


def failed_sync_job(client) -> dict:
    """A sync job through the API that fails: MongoDB has no users or gigs yet (a real, recorded failure)."""
    started = client.post("/syncs", headers=API_AUTH, json={})
    assert started.status_code == 200, started.text
    url = started.json()["status_url"]
    return wait_until(lambda: (lambda job: job if job["state"] not in ("queued", "running") else None)(
        client.get(url, headers=API_AUTH).json()), "the sync job to end")


def fill_and_sync(settings, mongo_db, runs: int = 2) -> list:
    """Documents with rejects (BAD_EMAILS invalid emails, one unknown gig state), synced ``runs`` times."""
    mongo_db.users.insert_many(user_documents())
    mongo_db.gigs.insert_many(gig_documents())
    return [commands.sync(settings, mode="full") for _ in range(runs)]


DAY = datetime.date(2026, 11, 28)
CSV_LINES = 3


def pipeline_day_with_a_failed_step(pg_url: str, folder) -> snapshot.Pipeline:
    """A real day of the daily snapshots: extract-csv succeeds, then load fails (refused: extract-postgres
    has not run), so the ledger holds a failed step with its error and the command that picks up."""
    csv = folder / "order_details.csv"
    csv.write_text("order_id,product_id,unit_price,quantity,discount\n"
                   + "".join(f"{10248 + i},{11 + i},14.00,{i + 1},0\n" for i in range(CSV_LINES)))
    pipeline = snapshot.Pipeline(pg_url, root=folder / "data", csv_path=csv)
    assert snapshot.extract_csv(pipeline, DAY).state == "succeeded"
    try:
        snapshot.load_day(pipeline, DAY)
    except GigsterPgError as err:
        assert "refused" in str(err), err
    else:
        raise AssertionError("load ran before extract-postgres")
    return pipeline


class Follower:
    """``commands.follow`` in a thread until ``stop``; its error, if any, raised by ``stop``."""

    def __init__(self, settings):
        self.stopping = threading.Event()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, args=(settings,), daemon=True)
        self.thread.start()

    def _run(self, settings) -> None:
        try:
            commands.follow(settings, stop=self.stopping, retry=RetryPolicy(attempts=3, first_delay=0.05))
        except BaseException as err:  # handed to the test by stop()
            self.error = err

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the follower did not stop"
        if self.error is not None:
            raise self.error


class Tables(HTMLParser):
    """Every ``<table id=...>`` of a page as rows of cell texts (whitespace collapsed)."""

    def __init__(self, html: str):
        super().__init__()
        self.tables: Dict[str, List[List[str]]] = {}
        self._table: Optional[str] = None
        self._row: Optional[List[str]] = None
        self._cell: Optional[List[str]] = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id"):
            self._table = attrs["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def table(html: str, name: str) -> List[List[str]]:
    found = Tables(html).tables
    assert name in found, f"no table {name!r} on the page (tables: {sorted(found)})"
    return found[name]
