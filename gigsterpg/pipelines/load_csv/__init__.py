"""``load-csv``: CSV files (or folders of them) into dataset tables, one transaction per file.

Its detail stays in ``datasets`` and ``csv_rejects``; ``read`` is the data lines read, each written or
rejected (a bad line, set aside).
"""
import argparse

from gigsterpg.exc import ConfigError
from gigsterpg.lib.datasets import load
from gigsterpg.lib.datasets.load import load_csv
from gigsterpg.lib.files.csvsource import KINDS
from gigsterpg.pipelines.contract import FLAG, PATH, Context, Param, Pipeline, Report
from gigsterpg.text import shown


def declaration(text: str):
    """``COLUMN=KIND`` of ``--type``."""
    name, sep, kind = text.partition("=")
    if not sep or not name or kind not in KINDS:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not COLUMN=KIND with KIND one of {', '.join(KINDS)}")
    return name, kind


SCHEMA_HELP = "the schema (default: GIGSTERPG_DATASETS_SCHEMA, else datasets)"
PARAMS = (
    Param("paths", PATH, "CSV files, or folders whose *.csv files to load", required=True, positional=True,
          many=True, metavar="PATH"),
    Param("table", help="the table (one file only; default: the file's name without .csv)"),
    Param("schema", help=SCHEMA_HELP),
    Param("key", help="the column rows are keyed and paged by (default: _row, the lines' order)"),
    Param("merge", FLAG, "upsert the rows by --key instead of replacing the table", default=False),
    Param("type", help=f"declare a column's type instead of inferring it ({', '.join(KINDS)}); repeatable",
          many=True, dest="types", metavar="COLUMN=KIND", parse=declaration),
    Param("delimiter", help="the field delimiter (default: detected among , ; tab |)"),
    Param("quote", help='the quote character (default: ")'),
    Param("encoding", help="the file's encoding (default: UTF-8, with or without a BOM)"),
    Param("day_first", FLAG, "read 1/2/2022 as 1 February (default: month first)", default=False),
)


def declared(items) -> dict:
    """``--type`` values, parsed by the CLI ((column, kind)) or sent as text ("column=kind")."""
    found = {}
    for item in items or []:
        if not isinstance(item, (tuple, list)):
            try:
                item = declaration(item)
            except argparse.ArgumentTypeError as err:
                raise ConfigError("bad --type", str(err),
                                  "declare a column as COLUMN=KIND, e.g. price=numeric") from None
        found[item[0]] = item[1]
    return found


def _options(params: dict) -> tuple:
    return (params["paths"], params["table"], params["schema"], declared(params["type"]), params["key"],
            params["merge"], params["delimiter"], params["quote"], params["encoding"], params["day_first"])


def run(context: Context, params: dict):
    return load_csv(context.settings, *_options(params))


def check(settings, params: dict) -> None:
    load.check(settings, *_options(params))


def report(native) -> Report:
    return Report(native.rows + native.bad_lines, {"written": native.rows, "rejected": native.bad_lines},
                  {"files": [{"file": load.file, "table": load.table, "mode": load.mode, "rows": load.rows,
                              "bad_lines": load.bad_lines, "parser": load.parser} for load in native.files]})


def text(native) -> str:
    from gigsterpg.lib.datasets.summary import format_load
    return format_load(native)


PIPELINE = Pipeline("load-csv", "CSV files (or folders of them) into dataset tables, one transaction per file",
                    PARAMS, run, report, text, check=check)
