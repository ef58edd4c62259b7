"""``export-table``: every row of a PostgreSQL table into MongoDB documents, ``_id`` = the primary key.

``read`` is the rows read; each was written (inserted or changed) or unchanged (the server's upsert changed
nothing); the documents deleted because their row is gone are in ``details``.
"""
from gigsterpg import commands
from gigsterpg.lib.mongo.bulk import check_collection
from gigsterpg.lib.mongo.export import split_name
from gigsterpg.pipelines.contract import INTEGER, Context, Param, Pipeline, Report
from gigsterpg.pipelines.params import positive

PARAMS = (
    Param("pg_url", help="the PostgreSQL URL to read from (default: DB_URL_PSQL)", flag="--pg", http=False),
    Param("table", help="[schema.]name, exactly as in the catalog", required=True),
    Param("schema", help="the schema, when the table's name holds a dot"),
    Param("mongo_url", help="the MongoDB URL, its path the database (default: DB_URL_MONGO)", flag="--mongo",
          http=False),
    Param("collection", help="the collection (default: the table's name)"),
    Param("batch_size", INTEGER, "rows per batch (default: 2000)", default=2000, minimum=1, parse=positive),
)


def run(context: Context, params: dict):
    return commands.export_table(context.settings, params["table"], params["schema"], params["collection"],
                                 params["batch_size"])


def check(settings, params: dict) -> None:
    split_name(params["table"], params["schema"])
    if params["collection"] is not None:
        check_collection(params["collection"])


def report(native) -> Report:
    return Report(native.rows, {"written": native.written, "unchanged": native.rows - native.written},
                  {"table": native.table, "collection": native.collection, "deleted": native.deleted,
                   "seconds": round(native.seconds, 3)})


def text(native) -> str:
    return (f"Exported {native.table} into {native.collection}: {native.rows} rows read, {native.written} documents"
            f" written, {native.deleted} deleted (rows gone), {native.seconds:.1f} s ({native.rate:,.0f} rows/s).")


PIPELINE = Pipeline("export-table", "every row of a PostgreSQL table into MongoDB documents (_id = primary key)",
                    PARAMS, run, report, text, settings={"pg_url": "pg_url", "mongo_url": "mongo_url"},
                    check=check)
