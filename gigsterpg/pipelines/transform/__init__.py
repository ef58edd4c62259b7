"""``transform``: the SELECT of an SQL file becomes a dataset table, replaced atomically.

Its detail stays in ``datasets``; ``read`` is the rows the query gave, each written.
"""
from pathlib import Path

from gigsterpg.lib.datasets import transform as transforms
from gigsterpg.lib.datasets.transform import transform

from gigsterpg.pipelines.contract import PATH, Context, Param, Pipeline, Report

PARAMS = (
    Param("sqlfile", PATH, "a file holding one SELECT (joins, aggregation)", required=True, positional=True,
          metavar="SQLFILE", parse=Path),
    Param("into", help="the dataset (table) to make or replace", required=True),
    Param("schema", help="the schema (default: GIGSTERPG_DATASETS_SCHEMA, else datasets)"),
    Param("key", help="the column rows are keyed and paged by (default: the query's first)"),
)


def run(context: Context, params: dict):
    return transform(context.settings, params["sqlfile"], params["into"], params["schema"], params["key"])


def check(settings, params: dict) -> None:
    transforms.check(settings, params["sqlfile"], params["into"], params["schema"], params["key"])


def report(native) -> Report:
    return Report(native.rows, {"written": native.rows},
                  {"table": native.table, "key": native.key, "seconds": round(native.seconds, 3)})


def text(native) -> str:
    from gigsterpg.lib.datasets.summary import format_transform
    return format_transform(native)


PIPELINE = Pipeline("transform", "the SELECT of an SQL file becomes a dataset table, replaced atomically",
                    PARAMS, run, report, text, check=check)
