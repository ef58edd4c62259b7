"""The command line: ``python -m gigsterpg.cli [sync|demo|generate|status|export-table|serve] ...``.

Only parses arguments and calls the verbs of ``gigsterpg.commands``. Errors a
user can cause end as one line ``FAILED: what, why, what to do`` and a
non-zero exit; ``--debug`` shows the traceback instead.
"""
import argparse
import dataclasses
import datetime
import logging
import re
import secrets
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import List, Optional

from gigsterpg import commands, logs
from gigsterpg.cli import dev as cli_dev
from gigsterpg.config import load_settings, mask_url
from gigsterpg.exc import ConfigError, GigsterPgError
from gigsterpg.fixtures.demo import export_demo_shop, run_demo
from gigsterpg.lib import status as status_report
from gigsterpg.lib.pg.db.states import AUTO
from gigsterpg.lib.pg.sync.engine.runner import Progress, RetryPolicy
from gigsterpg import pipelines
from gigsterpg.pipelines import command_line as pipelines_cli
from gigsterpg.pipelines import params
from gigsterpg.pipelines.execute import note
from gigsterpg.pipelines.export_orders import cli as cli_orders
from gigsterpg.pipelines.load_csv import cli as cli_datasets
from gigsterpg.pipelines.snapshots import cli as cli_snapshots
from gigsterpg.pipelines.sync import distributed as cli_distributed
from gigsterpg.pipelines.progress import Bar
from gigsterpg.lib.pg.sync.registry import COLLECTIONS
from gigsterpg.report import format_run
from gigsterpg.status_text import format_status, status_json
from gigsterpg.text import number, plural

logger = logging.getLogger(__name__)

# The core's commands, then each pipeline's (its CLI module beside this one: COMMANDS, add_parsers, run).
COMMANDS = (("sync", "demo", "generate", "status", "export-table", "serve")
            + cli_orders.COMMANDS + cli_datasets.COMMANDS + cli_snapshots.COMMANDS + cli_dev.COMMANDS)


BarProgress = Bar  # the one progress bar (gigsterpg/pipelines/progress.py), under its older name


def commands_known() -> tuple:
    """Every command: the core's, each pipeline CLI module's, then the registry's others and ``runs``."""
    return COMMANDS + pipelines_cli.extra_commands(COMMANDS)


class FollowHeartbeat:
    """``sync --follow``'s signs of life on stderr: a line once caught up, then one a minute while it runs."""

    def __init__(self, stream, every_s: float = 60.0, clock=time.monotonic):
        self.stream, self.every_s, self.clock = stream, every_s, clock
        self.next_at: Optional[float] = None
        self.events_then = 0

    def __call__(self, report) -> None:
        now = self.clock()
        if self.next_at is not None and now < self.next_at:
            return
        last = ""
        if report.last_event_at is not None:
            ago = max(0.0, (datetime.datetime.now(datetime.timezone.utc) - report.last_event_at).total_seconds())
            last = f", the last written in MongoDB {report.last_event_at:%Y-%m-%d %H:%M:%S} UTC ({ago:,.0f} s ago)"
        applied = plural(report.events, "change applied", "changes applied")
        if self.next_at is None:
            line = (f"Caught up: following MongoDB's changes ({applied} so far); Ctrl-C or SIGTERM stops, the"
                    " position is saved.")
        else:
            line = (f"Following, caught up (lag under 1 s): {applied}, {number(report.events - self.events_then)} in"
                    f" the last {self.every_s:,.0f} s{last}.")
        print(line, file=self.stream, flush=True)
        self.next_at, self.events_then = now + self.every_s, report.events


class _Parser(argparse.ArgumentParser):
    """argparse that never echoes a value the user typed: it may be a password (a mistyped --pg-uri with a URL)."""

    def error(self, message: str):
        if message.startswith("unrecognized arguments:"):
            words = message.split(":", 1)[1].split()
            flags = [word.split("=", 1)[0] for word in words if word.startswith("-")]
            message = "unrecognized arguments: " + " ".join(flags or ["(a value)"]) + " (values are not shown)"
        message = re.sub(r"invalid choice: .*? \(choose", "invalid choice (choose", message)
        super().error(mask_url(message))


# The argparse types of the commands that are no pipeline's (a pipeline's arguments come with its parameters).
_positive, _count, _rate, _port = params.positive, params.count, params.rate, params.port


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; ``sync`` is the command when none is named."""
    # Flags of every command; ``common`` adds the URLs of gigsterpg's databases (demo starts servers of its own).
    local = _Parser(add_help=False)
    local.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    local.add_argument("--log-format", default="text", choices=("text", "json"))
    local.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    local.add_argument("--debug", action="store_true", help="show the traceback of an error")
    common = _Parser(add_help=False, parents=[local])
    common.add_argument("--pg-url", help="PostgreSQL URL (default: DB_URL_PSQL)")
    common.add_argument("--mongo-url", help="MongoDB URL whose path names the database (default: DB_URL_MONGO)")

    parser = _Parser(
        prog="gigsterpg" if Path(sys.argv[0]).name == "gigsterpg" else "python -m gigsterpg.cli",
        description=f"Replicate the Gigster MongoDB ({', '.join(COLLECTIONS)}) into PostgreSQL."
                    " Without a command: sync.")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(commands_known()) + "}")

    # A pipeline's command takes the parameters its pipeline declares (gigsterpg/pipelines/<name>/).
    sync = sub.add_parser("sync", parents=[common], help="migrate, then sync MongoDB into PostgreSQL (default)")
    params.add_arguments(sync, pipelines.get("sync"))

    demo = sub.add_parser("demo", parents=[local], help="embedded servers + generated data + sync, in one go")
    demo.add_argument("--folder", type=Path, default=Path(".gigsterpg-demo"), help="where the servers keep data")
    demo.add_argument("--users", type=_positive, default=3000)
    demo.add_argument("--gigs", type=_positive, default=6000)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--serve", action="store_true",
                      help="after the sync, serve the HTTP API on the demo's data until Ctrl-C (a token is printed)")
    demo.add_argument("--port", type=_port, default=8000, help="the API's port with --serve (default: %(default)s)")
    demo.add_argument("--orders", type=_count, default=0,
                      help="also generate a shop of N orders in PostgreSQL and export it twice (export-orders)")

    generate = sub.add_parser("generate", parents=[common], help="write a generated dataset into MongoDB")
    generate.add_argument("--users", type=int, default=3000)
    generate.add_argument("--gigs", type=int, default=6000)
    generate.add_argument("--messy-rate", type=_rate, default=0.05, help="share of documents with a messy variant")
    generate.add_argument("--seed", type=int, default=42)
    generate.add_argument("--replace", action="store_true", help="drop users and gigs first")

    export = sub.add_parser("export-table", parents=[common],
                            help="every row of a PostgreSQL table into MongoDB documents (_id = primary key)")
    params.add_arguments(export, pipelines.get("export-table"))

    cli_orders.add_parsers(sub, common, _positive)
    cli_datasets.add_parsers(sub, common)

    cli_snapshots.add_parsers(sub, common)
    cli_dev.add_parsers(sub, local)

    serve = sub.add_parser("serve", parents=[common],
                           help="the HTTP API: exports and syncs as jobs, the replicated data, /health, /docs")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=_port, default=8000, help="port to listen on (default: %(default)s)")
    serve.add_argument("--no-auth", action="store_true",
                       help="run without a bearer token (anyone who reaches the port may start jobs)")

    status = sub.add_parser("status", parents=[common],
                            help="runs, open rejects, followers, API jobs, daily snapshots (as on the page at /)")
    status.add_argument("--runs", type=_positive, default=10)
    status.add_argument("--jobs", type=_positive, default=20, help="how many API jobs to show (default: 20)")
    status.add_argument("--format", dest="output", default="text", choices=("text", "json"),
                        help="aligned tables, or JSON for scripts")
    pipelines_cli.add_parsers(sub, common)  # the registry's: --format on each pipeline, its own parsers, runs
    return parser


def _progress(args) -> Optional[Progress]:
    if args.no_progress or not sys.stderr.isatty():
        return None
    return Bar(sys.stderr)


def _say(args):
    """What a long command is doing, a line at each stage, on a terminal only (like the progress bar)."""
    if args.no_progress or not sys.stderr.isatty():
        return lambda line: None
    return lambda line: print(line, file=sys.stderr, flush=True)


def run(args) -> int:
    """Run the parsed command, a pipeline's with its run record (``gigsterpg.pipelines``); the exit code."""
    if args.command == "runs":
        return pipelines_cli.history(args)
    pipeline = pipelines_cli.pipeline_of(args)
    if pipeline is None:
        return _run(args)
    own = pipeline.cli_command in COMMANDS
    return pipelines_cli.run(pipeline, args, (lambda: _run(args)) if own else None,
                             sys.stderr if _progress(args) else None)


def _run(args) -> int:
    """The command's own code (a pipeline's hands its report to the record with ``note``)."""
    if args.command == "demo":
        shop = []  # the orders demo's summaries, printed after the sync's

        def serve_demo(settings, report) -> None:
            print(format_run(report), *shop, sep="\n", flush=True)
            token = secrets.token_urlsafe(16)
            print(f"\nThe API on the demo's data: http://127.0.0.1:{args.port}/docs (Ctrl-C stops it and the servers)"
                  f"\n  curl -s -H 'Authorization: Bearer {token}' 'http://127.0.0.1:{args.port}/users?limit=3'"
                  f"\nThe status page: http://127.0.0.1:{args.port}/ (sign in with the token above)",
                  flush=True)
            _serve(dataclasses.replace(settings, api_token=token), "127.0.0.1", args.port, args.log_level)

        def then(settings, report) -> None:
            if args.orders:
                _say(args)(f"Generating a shop of {args.orders:,} orders in PostgreSQL and exporting it into MongoDB"
                           " twice...")
                shop.append(export_demo_shop(settings, args.orders, args.seed))
            if args.serve:
                serve_demo(settings, report)

        report = run_demo(args.folder, args.users, args.gigs, args.seed, progress=_progress(args), then=then,
                          say=_say(args))
        if not args.serve:
            print(format_run(report), *shop, sep="\n")
            print("\nNext: gigsterpg dev start runs the same servers in the background with their URLs in .env, so"
                  " that each pipeline's commands (docs/pipelines/) run as written.")
        return 0 if report.balanced else 1
    if args.command in cli_dev.COMMANDS:
        return cli_dev.run(args)
    if args.command in cli_orders.COMMANDS:
        return cli_orders.run(args, sys.stderr if _progress(args) else None)
    settings = load_settings({"pg_url": args.pg_url, "mongo_url": args.mongo_url,
                              "batch_size": getattr(args, "batch_size", None)})
    if args.command == "generate":
        written = commands.generate(settings, args.users, args.gigs, args.messy_rate, args.seed, args.replace)
        print(f"Generated {plural(written['users'], 'user')} and {plural(written['gigs'], 'gig')} in"
              f" {settings.mongo_database!r}.")
        return 0
    if args.command == "export-table":
        done = commands.export_table(settings, args.table, args.schema, args.collection, args.batch_size)
        note(done)
        print(f"Exported {done.table} into {settings.mongo_database}.{done.collection}: {done.rows} rows read,"
              f" {done.written} documents written, {done.deleted} deleted (rows gone), {done.seconds:.1f} s"
              f" ({done.rate:,.0f} rows/s).")
        return 0
    if args.command == "serve":
        return serve(settings, args)
    if args.command in cli_snapshots.COMMANDS:
        return cli_snapshots.run(args, settings)
    if args.command in cli_datasets.COMMANDS:
        return cli_datasets.run(args, settings)
    if args.command == "status":
        result = status_report.status(settings, args.runs, args.jobs)
        print(status_json(result) if args.output == "json" else format_status(result))
        return 0
    if cli_distributed.wanted(args, settings) and not args.rebuild:  # a rebuild is one transaction, here
        return cli_distributed.run(args, settings, _progress(args))
    if args.follow:
        followed = commands.follow(settings, retry=RetryPolicy(attempts=args.retries),
                                   on_idle=FollowHeartbeat(sys.stderr))
        note(followed)
        batches = plural(followed.batches, "batch", "batches")
        print(f"Stopped following: {plural(followed.events, 'event')} applied in {batches}"
              f" ({plural(followed.resyncs, 'full re-sync')}, {plural(followed.retries, 'reconnection')});"
              " the position is saved.")
        return 0
    report = commands.sync(settings, commands.parse_collections(args.collections), args.limit, _progress(args),
                           full_compare=args.full_compare, retry=RetryPolicy(attempts=args.retries),
                           wait_s=args.wait, mode=args.mode or AUTO, rebuild=args.rebuild,
                           load_workers=args.load_workers)
    note(report)
    print(format_run(report))
    return 0 if report.balanced else 1


def serve(settings, args) -> int:
    """Open the databases (a bad setting fails here, in one line), then serve until stopped."""
    if not settings.api_token and not args.no_auth and settings.read_public:
        # Public reading (GIGSTERPG_READ_PUBLIC) without a token: the job routes want one nobody has.
        logger.warning("no GIGSTERPG_API_TOKEN: only /health and the public /read routes answer, the job routes"
                       " are closed (set GIGSTERPG_API_TOKEN to open them)")
        settings = dataclasses.replace(settings, api_token=secrets.token_urlsafe(32))
    if not settings.api_token and not args.no_auth:
        raise ConfigError("no API token", "GIGSTERPG_API_TOKEN is not set",
                          "set it (e.g. to the output of: python -c 'import secrets; print(secrets.token_urlsafe())')"
                          " or pass --no-auth to run without one")
    if args.no_auth:
        logger.warning("serving without a bearer token: anyone who reaches %s:%d may start jobs", args.host, args.port)
        settings = dataclasses.replace(settings, api_token=None)
    _serve(settings, args.host, args.port, args.log_level)
    return 0


def _serve(settings, host: str, port: int, log_level: str) -> None:
    """The API over ``settings`` (its token: ``settings.api_token``) on uvicorn, until SIGTERM or Ctrl-C."""
    import uvicorn

    from gigsterpg.api.app import create_app

    app = create_app(settings, settings.api_token, max_jobs=settings.api_max_jobs)
    print(f"Serving the gigsterpg API on http://{host}:{port} (documentation at /docs, the status page at /);"
          " Ctrl-C stops.",
          file=sys.stderr, flush=True)
    # log_config=None: uvicorn's records (the access log's request lines too) go through the root handler, which masks.
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=True, log_config=None)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: parse, configure logging, run, turn errors into one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in commands_known() and argv[0] not in ("-h", "--help")):
        argv.insert(0, "sync")
    parser = build_parser()
    args = parser.parse_args(argv)
    args.flags_passed = _flags_passed(parser, args.command, argv)
    restore_logging = logs.configure(args.log_level, args.log_format)
    # A service manager's SIGTERM ends the run like Ctrl-C: batch in hand rolled back, run recorded as interrupted.
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args)
    except GigsterPgError as err:
        return _fail(args, str(err), 2 if isinstance(err, ConfigError) else 1)
    except KeyboardInterrupt:
        if args.command in cli_datasets.COMMANDS:
            return _fail(args, cli_datasets.interrupted(args), 130)
        return _fail(args, "interrupted, the batch in hand was rolled back, run the sync again to finish", 130)
    except Exception as err:  # an error we did not foresee: still one line, unless --debug
        return _fail(args, f"unexpected error {type(err).__name__}: {err}, rerun with --debug and report it", 1)
    finally:  # called in-process (tests, an embedding program): leave no handler or logging of ours behind
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous_sigterm is None else previous_sigterm)
        restore_logging()


# The setting behind each flag's value (its argparse dest): a hint names the flag when the user passed it.
SETTING_OF = {"pg_url": "DB_URL_PSQL", "mongo_url": "DB_URL_MONGO", "source_url": "GIGSTERPG_ORDERS_SOURCE_PG",
              "source_pg": "GIGSTERPG_SNAPSHOT_SOURCE_PG", "csv": "GIGSTERPG_SNAPSHOT_CSV",
              "scheduler": "GIGSTERPG_DASK_SCHEDULER"}


def _flags_passed(parser: argparse.ArgumentParser, command: str, argv: List[str]) -> dict:
    """{setting: the flag the user typed for it} for this command's URL flags (``--pg`` means a different
    database to export-table, export-orders and generate-northwind)."""
    sub = next((action.choices[command] for action in parser._actions  # the subparsers action
                if isinstance(action, argparse._SubParsersAction) and command in action.choices), None)
    passed = {}
    for word in argv:
        flag = word.split("=", 1)[0]
        action = sub._option_string_actions.get(flag) if sub is not None and flag.startswith("--") else None
        if action is not None and action.dest in SETTING_OF:
            passed[SETTING_OF[action.dest]] = flag
    return passed


def _name_flags(message: str, passed: dict) -> str:
    """``... DB_URL_PSQL points at it`` -> ``... --pg points at it`` when the URL came from ``--pg``."""
    for setting, flag in passed.items():
        if flag not in message:
            message = re.sub(rf"(?<![\w(]){setting}\b", flag, message)
    return message


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _fail(args, message: str, code: int) -> int:
    if args.debug:  # the traceback quotes the drivers' messages: masked like everything else
        print(mask_url(traceback.format_exc()), end="", file=sys.stderr)
    print(f"FAILED: {mask_url(_name_flags(message, getattr(args, 'flags_passed', {})))}", file=sys.stderr)
    return code
