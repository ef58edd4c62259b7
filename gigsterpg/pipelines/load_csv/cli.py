"""The command line of CSV sources and SQL transforms: ``load-csv`` and ``transform``.

``gigsterpg.cli`` adds these parsers and hands these commands here: it only parses
arguments and calls ``gigsterpg.lib.datasets.load.load_csv`` and ``gigsterpg.lib.datasets.transform.transform``.
"""
import argparse
from pathlib import Path

from gigsterpg.config import Settings
from gigsterpg.lib.datasets.load import load_csv
from gigsterpg.lib.datasets.summary import format_load, format_transform
from gigsterpg.lib.datasets.transform import transform
from gigsterpg.lib.files.csvsource import KINDS
from gigsterpg.pipelines.execute import note

COMMANDS = ("load-csv", "transform")
SCHEMA_HELP = "the schema (default: GIGSTERPG_DATASETS_SCHEMA, else datasets)"


def add_parsers(sub, common) -> None:
    """The ``load-csv`` and ``transform`` subcommands."""
    load = sub.add_parser("load-csv", parents=[common],
                          help="CSV files (or folders of them) into dataset tables, one transaction per file")
    load.add_argument("paths", nargs="+", metavar="PATH", help="CSV files, or folders whose *.csv files to load")
    load.add_argument("--table", help="the table (one file only; default: the file's name without .csv)")
    load.add_argument("--schema", help=SCHEMA_HELP)
    load.add_argument("--key", help="the column rows are keyed and paged by (default: _row, the lines' order)")
    load.add_argument("--merge", action="store_true", help="upsert the rows by --key instead of replacing the table")
    load.add_argument("--type", dest="types", action="append", type=declaration, default=[], metavar="COLUMN=KIND",
                      help=f"declare a column's type instead of inferring it ({', '.join(KINDS)}); repeatable")
    load.add_argument("--delimiter", help="the field delimiter (default: detected among , ; tab |)")
    load.add_argument("--quote", help='the quote character (default: ")')
    load.add_argument("--encoding", help="the file's encoding (default: UTF-8, with or without a BOM)")
    load.add_argument("--day-first", action="store_true", help="read 1/2/2022 as 1 February (default: month first)")

    sql = sub.add_parser("transform", parents=[common],
                         help="the SELECT of an SQL file becomes a dataset table, replaced atomically")
    sql.add_argument("sqlfile", type=Path, metavar="SQLFILE", help="a file holding one SELECT (joins, aggregation)")
    sql.add_argument("--into", required=True, help="the dataset (table) to make or replace")
    sql.add_argument("--schema", help=SCHEMA_HELP)
    sql.add_argument("--key", help="the column rows are keyed and paged by (default: the query's first)")


def declaration(text: str):
    """``COLUMN=KIND`` of ``--type``."""
    name, sep, kind = text.partition("=")
    if not sep or not name or kind not in KINDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not COLUMN=KIND with KIND one of {', '.join(KINDS)}")
    return name, kind


def interrupted(args) -> str:
    """The line a ``load-csv`` or ``transform`` stopped by Ctrl-C or SIGTERM ends with: what stays, what to run."""
    if args.command == "load-csv":
        return ("interrupted, the file in hand was rolled back (each file is one transaction: those before it are"
                " loaded), run the same load-csv command again to finish")
    return "interrupted, the dataset was left as it was, run the same transform command again"


def run(args, settings: Settings) -> int:
    """Run ``load-csv`` or ``transform``; prints the summary, returns the exit code."""
    if args.command == "load-csv":
        report = load_csv(settings, args.paths, args.table, args.schema, dict(args.types), args.key, args.merge,
                          args.delimiter, args.quote, args.encoding, args.day_first)
        note(report)
        print(format_load(report))
        return 0
    report = transform(settings, args.sqlfile, args.into, args.schema, args.key)
    note(report)
    print(format_transform(report))
    return 0
