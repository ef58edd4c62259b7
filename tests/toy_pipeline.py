"""A toy seventh pipeline for the tests: a JSON-lines file into a PostgreSQL table (one JSONB column).

Everything a pipeline is, in one module: parameters, verb, report. The test registers it with one line.
"""
import dataclasses
import json

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from gigsterpg.pipelines.contract import PATH, Context, Param, Pipeline, Report


@dataclasses.dataclass
class JsonLinesReport:
    lines: int = 0
    written: int = 0
    rejected: int = 0


def run(context: Context, params: dict) -> JsonLinesReport:
    report = JsonLinesReport()
    url = context.settings.require_pg()
    with psycopg.connect(url) as connection, open(params["path"], encoding="utf-8") as lines:
        table = sql.Identifier(params["table"])
        connection.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (line bigint, doc jsonb)").format(table))
        for number, line in enumerate(lines, 1):
            report.lines += 1
            try:
                document = json.loads(line)
            except ValueError:
                report.rejected += 1
                continue
            connection.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(table), (number, Jsonb(document)))
            report.written += 1
    return report


PIPELINE = Pipeline(
    "jsonl-load", "a JSON-lines file into a PostgreSQL table, one JSONB row per line",
    (Param("path", PATH, "the JSON-lines file", required=True, positional=True),
     Param("table", help="the table", required=True)),
    run,
    lambda native: Report(native.lines, {"written": native.written, "rejected": native.rejected}),
    lambda native: f"{native.lines} lines read, {native.written} rows written, {native.rejected} rejected.")
