"""The command line of the servers for trying things: ``dev start|status|stop`` (``gigsterpg.dev``).

``gigsterpg.cli`` adds this parser and hands the command here.
"""
import sys
from pathlib import Path

from gigsterpg import dev

COMMANDS = ("dev",)


def add_parsers(sub, local) -> None:
    """The ``dev`` subcommand (no URL flags: it makes the URLs)."""
    parser = sub.add_parser("dev", parents=[local],
                            help="start, show or stop PostgreSQL and MongoDB servers for trying things, their URLs"
                                 " in .env")
    parser.add_argument("action", choices=("start", "status", "stop"),
                        help="start (or reuse) the servers and write .env; status: what runs where; stop: stop"
                             " them and remove their lines from .env")
    parser.add_argument("--folder", type=Path, default=dev.FOLDER,
                        help="where the servers keep their data (default: %(default)s)")
    parser.add_argument("--env-file", type=Path, default=Path(".env"), help="the .env to write (default: %(default)s)")


def run(args) -> int:
    """``dev ACTION``: prints what runs where; ``status`` exits 3 when a server is not running."""
    if args.action == "start":
        report = dev.start(args.folder, args.env_file, say=lambda line: print(line, file=sys.stderr, flush=True))
    elif args.action == "stop":
        report = dev.stop(args.folder, args.env_file)
    else:
        report = dev.status(args.folder, args.env_file)
    print(dev.format_report(report, args.action))
    if args.action == "status" and not all(server.alive for server in report.servers):
        return 3
    return 0
