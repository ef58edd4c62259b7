"""``export-orders``: a shop's orders (PostgreSQL) into MongoDB, one document each, kept in step.

Its detail stays in ``projection_runs`` and ``projection_hashes``; ``read`` is the orders read, each written,
unchanged or rejected (a report that does not sum so fails its check: ``assert_run_balances``).
"""
from gigsterpg.lib.mongo.bulk import check_collection
from gigsterpg.lib.mongo.orders import OrdersReport, export_orders
from gigsterpg.lib.mongo.projection import load_projection, tax_rate, time_zone
from gigsterpg.pipelines.contract import INTEGER, PATH, Context, Param, Pipeline, Report
from gigsterpg.pipelines.params import positive

PARAMS = (
    Param("source_url", help="the shop's PostgreSQL URL, read-only (default: GIGSTERPG_ORDERS_SOURCE_PG)",
          flag="--pg", http=False),
    Param("mongo_url", help="the MongoDB URL, its path the database (default: DB_URL_MONGO)", flag="--mongo",
          http=False),
    Param("collection", help="the collection (default: %(default)s)", default="orders"),
    Param("tax_rate", help="taxes = subtotal x rate, half-up to cents (default: GIGSTERPG_TAX_RATE, else 0.15)"),
    Param("time_zone", help="the zone of an order's calendar date, for the promotion day"
                            " (default: GIGSTERPG_TIME_ZONE, else UTC)"),
    Param("projection", PATH, "a shipped projection's name, or a .sql file of your own (default: %(default)s)",
          default="orders", names=("orders",)),
    Param("batch_size", INTEGER, "orders per batch (default: 2000)", default=2000, minimum=1, parse=positive),
    Param("workers", INTEGER, "batches written at once, each by its own thread and PostgreSQL session (default:"
                              " one per core, at most 4)", minimum=1, parse=positive, metavar="N"),
)


def run(context: Context, params: dict):
    progress = context.progress
    return export_orders(context.settings, params["collection"], str(params["projection"]), params["batch_size"],
                         progress=progress.done_so_far if progress else None,
                         total=(lambda total: progress.start("orders", total)) if progress else None,
                         writers=params["workers"])


def check(settings, params: dict) -> None:
    """The tax rate, the time zone (both settings the parameters may override), the projection, the collection."""
    tax_rate(settings.tax_rate)
    time_zone(settings.time_zone)
    load_projection(str(params["projection"]))
    check_collection(params["collection"])


def report(native) -> Report:
    return Report(native.rows, {"written": native.written, "unchanged": native.unchanged,
                                "rejected": native.rejected},
                  {"target": native.target, "projection": native.projection, "tax_rate": native.tax_rate,
                   "time_zone": native.time_zone, "deleted": native.deleted, "reasons": dict(native.counts),
                   "seconds": round(native.seconds, 3)})


def text(native) -> str:
    return summary(native)


def summary(report: OrdersReport) -> str:
    """The run's report as people read it: counts, then the reasons."""
    lines = [f"Orders into {report.target} (projection {report.projection}, tax rate {report.tax_rate}, dates in"
             f" {report.time_zone}): {report.rows:,} orders read, {report.written:,} documents written,"
             f" {report.unchanged:,} unchanged, {report.deleted:,} deleted (orders gone), {report.rejected:,}"
             f" rejected; {report.seconds:.1f} s ({report.rate:,.0f} orders/s)."]
    if report.counts:
        lines.append("  by reason: " + ", ".join(f"{reason} {count:,}" for reason, count in sorted(
            report.counts.items(), key=lambda item: (-item[1], item[0]))))
    return "\n".join(lines)


PIPELINE = Pipeline("export-orders", "orders of a PostgreSQL shop into MongoDB, one document each, kept in step",
                    PARAMS, run, report, text,
                    settings={"source_url": "orders_source_pg", "mongo_url": "mongo_url", "tax_rate": "tax_rate",
                              "time_zone": "time_zone"}, check=check)
