"""The command line of the orders projection: ``export-orders`` and ``generate-shop``.

``gigsterpg.cli`` adds these parsers and hands these commands here: it only parses
arguments and calls ``gigsterpg.lib.mongo.orders.export_orders`` and ``gigsterpg.fixtures.generate_shop.write_shop``.
"""
from gigsterpg import pipelines
from gigsterpg.config import load_settings, mask_url
from gigsterpg.connections import pg_errors
from gigsterpg.fixtures.generate_shop import write_shop
from gigsterpg.lib.mongo.orders import export_orders
from gigsterpg.pipelines.execute import note
from gigsterpg.pipelines.export_orders import summary
from gigsterpg.pipelines.params import add_arguments
from gigsterpg.pipelines.progress import Bar

COMMANDS = ("export-orders", "generate-shop")


def add_parsers(sub, common, positive) -> None:
    """The ``export-orders`` and ``generate-shop`` subcommands; ``positive`` is the CLI's argparse type."""
    orders = sub.add_parser(
        "export-orders", parents=[common],
        help="orders of a PostgreSQL shop into MongoDB, one document each with items and totals, kept in step")
    add_arguments(orders, pipelines.get("export-orders"))  # the parameters gigsterpg/pipelines/export_orders/ declares

    shop = sub.add_parser("generate-shop", parents=[common],
                          help="write a deterministic shop (clients, products, orders, order_items) into PostgreSQL")
    shop.add_argument("--pg", dest="source_url", help="the PostgreSQL URL to write the shop into"
                                                      " (default: GIGSTERPG_ORDERS_SOURCE_PG)")
    shop.add_argument("--orders", type=positive, default=1000, help="how many orders (default: %(default)s)")
    shop.add_argument("--seed", type=int, default=42)
    shop.add_argument("--replace", action="store_true", help="drop the four tables first")


def run(args, progress_stream=None) -> int:
    """Run ``export-orders`` or ``generate-shop``; the exit code."""
    settings = load_settings({"pg_url": args.pg_url, "mongo_url": args.mongo_url,
                              "orders_source_pg": args.source_url, "tax_rate": getattr(args, "tax_rate", None),
                              "time_zone": getattr(args, "time_zone", None)})
    if args.command == "generate-shop":
        from gigsterpg.lib.mongo.orders import require_source
        url = require_source(settings, "generate-shop")
        with pg_errors(url, "GIGSTERPG_ORDERS_SOURCE_PG"):
            written = write_shop(url, args.orders, args.seed, args.replace)
        print(f"Generated a shop in {mask_url(url)}: " + ", ".join(f"{n:,} {t}" for t, n in written.items()) + ".")
        return 0
    bar = Bar(progress_stream, unit=" orders") if progress_stream is not None else None
    try:
        report = export_orders(settings, args.collection, args.projection, args.batch_size,
                               progress=bar.done_so_far if bar else None,
                               total=(lambda total: bar.start("orders", total)) if bar else None)
    finally:
        if bar:
            bar.close()
    note(report)
    print(summary(report))
    return 0
