"""What a collection's scan reads and reports, shared by the runner (``runner.py``) and the first load
(``firstload.py``): the raw codec, a collection's report, the server's clock a watermark is set from."""
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from gigsterpg.lib.pg.db.states import FULL
from gigsterpg.lib.pg.sync.engine.bulk import CollectionCounts

# Documents arrive undecoded: most of an unchanged collection is never decoded at all.
RAW = CodecOptions(document_class=RawBSONDocument)


@dataclass
class CollectionReport:
    """The outcome of one collection in one run.

    ``documents`` is the number of documents the scan read: after a complete
    scan, every one of them must be a row or an open reject.
    """

    name: str
    counts: CollectionCounts
    complete: bool
    # "full" (every document read), or "incremental" (only those updated since the watermark).
    scope: str = FULL
    rows: int = 0
    open_rejects: int = 0
    documents: int = 0
    seconds: float = 0.0

    @property
    def balanced(self) -> Optional[bool]:
        """Whether rows + open rejects = documents; None when the scan was partial."""
        return (self.rows + self.open_rejects == self.documents) if self.complete else None

    def as_dict(self) -> dict:
        return {**self.counts.as_dict(), "scope": self.scope, "complete": self.complete, "rows": self.rows,
                "open_rejects": self.open_rejects, "documents": self.documents, "balanced": self.balanced,
                "seconds": round(self.seconds, 3)}


def server_time(mongo_db) -> datetime:
    """The MongoDB server's clock (``hello``'s localTime), as an aware UTC datetime.

    The watermark a scan sets: documents written after it began carry a later
    ``updated`` (application clocks differ: the overlap absorbs that), so the
    next incremental run reads them. An O(1) look-up, unlike the newest
    ``updated`` in the collection, and a document dated in the future cannot
    hold the watermark there.
    """
    value = mongo_db.client.admin.command("hello").get("localTime")
    if not isinstance(value, datetime):  # pragma: no cover - every server answers with it
        return datetime.now(timezone.utc)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
