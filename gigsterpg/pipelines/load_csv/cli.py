"""The command line of CSV sources and SQL transforms: ``load-csv`` and ``transform``.

``gigsterpg.cli`` adds these parsers and hands these commands here: it only parses
arguments and calls ``gigsterpg.lib.datasets.load.load_csv`` and ``gigsterpg.lib.datasets.transform.transform``.
"""
from gigsterpg import pipelines
from gigsterpg.config import Settings
from gigsterpg.lib.datasets.load import load_csv
from gigsterpg.lib.datasets.summary import format_load, format_transform
from gigsterpg.lib.datasets.transform import transform
from gigsterpg.pipelines.execute import note
from gigsterpg.pipelines.params import add_arguments

COMMANDS = ("load-csv", "transform")


def add_parsers(sub, common) -> None:
    """The ``load-csv`` and ``transform`` subcommands."""
    # Their arguments are the parameters gigsterpg/pipelines/load_csv/ and transform/ declare.
    load = sub.add_parser("load-csv", parents=[common],
                          help="CSV files (or folders of them) into dataset tables, one transaction per file")
    add_arguments(load, pipelines.get("load-csv"))
    sql = sub.add_parser("transform", parents=[common],
                         help="the SELECT of an SQL file becomes a dataset table, replaced atomically")
    add_arguments(sql, pipelines.get("transform"))


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
