"""The embedded servers a benchmark runs on: started in a folder of their own, stopped and removed after."""
import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, NamedTuple, Optional


class Servers(NamedTuple):
    folder: Path  # also a scratch folder for the benchmark's files
    postgres: object  # gigsterpg.fixtures.embedded.EmbeddedPostgres
    mongo: Optional[object]  # EmbeddedMongo, or None when not asked for

    @property
    def pids(self) -> dict:
        """The servers' process ids, for measuring their CPU."""
        pids = {"pg": self.postgres.server.get_pid()}
        if self.mongo is not None:
            pids["mongo"] = self.mongo.process.pid
        return pids


@contextlib.contextmanager
def embedded(mongo: bool = True) -> Iterator[Servers]:
    """An embedded PostgreSQL (and MongoDB) for one benchmark; their data (gigabytes at scale 1) is removed after."""
    from gigsterpg.fixtures.embedded import EmbeddedMongo, EmbeddedPostgres

    folder = Path(tempfile.mkdtemp(prefix="gigsterpg-bench-"))
    started = []
    try:
        postgres = EmbeddedPostgres(folder / "postgres")
        started.append(postgres)
        mongo_server = EmbeddedMongo(folder / "mongo") if mongo else None
        if mongo_server is not None:
            started.append(mongo_server)
        yield Servers(folder, postgres, mongo_server)
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
