"""``export-orders``: a shop's orders (PostgreSQL) into MongoDB, one document each, kept in step.

Its detail stays in ``projection_runs`` and ``projection_hashes``; ``read`` is the orders read, each written,
unchanged or rejected (a report that does not sum so fails its check: ``assert_run_balances``).
"""
from gigsterpg.lib.mongo.orders import export_orders
from gigsterpg.pipelines.contract import INTEGER, PATH, Context, Param, Pipeline, Report

PARAMS = (
    Param("source_url", help="the shop's PostgreSQL URL, read-only (default: GIGSTERPG_ORDERS_SOURCE_PG)",
          flag="--pg", http=False),
    Param("mongo_url", help="the MongoDB URL, its path the database (default: DB_URL_MONGO)", flag="--mongo",
          http=False),
    Param("collection", help="the collection", default="orders"),
    Param("tax_rate", help="taxes = subtotal x rate, half-up to cents (default: GIGSTERPG_TAX_RATE, else 0.15)"),
    Param("time_zone", help="the zone of an order's calendar date (default: GIGSTERPG_TIME_ZONE, else UTC)"),
    Param("projection", PATH, "a shipped projection's name, or a .sql file of your own", default="orders",
          names=("orders",)),
    Param("batch_size", INTEGER, "orders per batch", default=2000, minimum=1),
)


def run(context: Context, params: dict):
    progress = context.progress
    return export_orders(context.settings, params["collection"], str(params["projection"]), params["batch_size"],
                         progress=progress.done_so_far if progress else None,
                         total=(lambda total: progress.start("orders", total)) if progress else None)


def report(native) -> Report:
    return Report(native.rows, {"written": native.written, "unchanged": native.unchanged,
                                "rejected": native.rejected},
                  {"target": native.target, "projection": native.projection, "tax_rate": native.tax_rate,
                   "time_zone": native.time_zone, "deleted": native.deleted, "reasons": dict(native.counts),
                   "seconds": round(native.seconds, 3)})


def text(native) -> str:
    from gigsterpg.pipelines.export_orders.cli import summary
    return summary(native)


PIPELINE = Pipeline("export-orders", "orders of a PostgreSQL shop into MongoDB, one document each, kept in step",
                    PARAMS, run, report, text,
                    settings={"source_url": "orders_source_pg", "mongo_url": "mongo_url", "tax_rate": "tax_rate",
                              "time_zone": "time_zone"})
