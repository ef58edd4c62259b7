"""A deterministic shop in PostgreSQL (clients, products, orders, order_items) for ``export-orders``.

The same (size, seed) always gives the same rows. The awkward cases are
sprinkled in on purpose: orders without items, items of a missing product,
clients without or with an unreadable promotion day, weekday names in English
and Spanish in every spelling, ties for the most popular brand, one order of
1,000 items, subtotals whose tax (at the default 15 %) falls on a half cent,
NULL item prices, non-ASCII names, orders without a uid or without a client.
"""
import logging
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Dict, Iterator

import psycopg
from psycopg import sql

from gigsterpg.exc import ConfigError

logger = logging.getLogger(__name__)

TABLES = ("order_items", "orders", "products", "clients")
SCHEMA = """
CREATE TABLE clients (uid text PRIMARY KEY, name text, address text, latitude numeric(9, 6),
                      longitude numeric(9, 6), promotion_date text);
CREATE TABLE products (uid text PRIMARY KEY, name text, brand text, price numeric(10, 2));
CREATE TABLE orders (uid text UNIQUE, client_uid text, date_of_order timestamptz, status text);
CREATE TABLE order_items (uid text PRIMARY KEY, order_uid text, product_uid text, quantity integer,
                          price numeric(10, 2));
CREATE INDEX order_items_order_uid ON order_items (order_uid);
"""
WEEKDAYS = ("Monday", "MON", "mon", "Tuesday", "tue", "TUES", "Wednesday", "wed", "Thursday", "THU", "thurs",
            "Friday", "fri", "Saturday", "SAT", "Sunday", "sun", "Lunes", "lun", "LUNES", "Martes", "mar",
            "Miércoles", "miercoles", "MIÉRCOLES", "mié", "Jueves", "jue", "Viernes", "VIE", "Sábado", "sabado",
            "sáb", "Domingo", "DOM")
UNREADABLE = ("someday", "Funday", "2024-02-30", "every other tuesday", "31/12/2024", "??")
FIRST = ("José", "María", "Zoë", "François", "Łukasz", "Søren", "Ana", "Chloé", "Jürgen", "Ngozi", "Hiroshi",
         "Ñusta", "Olivia", "Ömer", "Siobhán", "Wei")
LAST = ("Núñez", "García", "Müller", "O'Brien", "Dvořák", "Søndergaard", "Smith", "Nakamura", "Ibáñez",
        "Kowalski", "Okafor", "Çelik", "Lefèvre", "Björk")
STREETS = ("Calle Mayor", "Avenida Reforma", "Rue de Rivoli", "Baker Street", "Hauptstraße", "Paseo de la Castellana")
BRANDS = ("Acme", "Nestlé", "Müller", "Ñandú", "Zeta", "Bimbo", "Lala", "Sabritas", "Colgate", "Dove", "Łowicz",
          "Kellogg's")
GOODS = ("yoghurt", "bread", "crisps", "toothpaste", "soap", "coffee", "café de olla", "jalapeños", "crème brûlée",
         "cereal", "milk", "tortillas")
STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")
START = datetime(2024, 1, 1, tzinfo=timezone.utc)
BIG_ORDER_ITEMS = 1000


class ShopGenerator:
    """Builds the rows; ``clients``, ``products``, then ``orders`` with their items."""

    def __init__(self, orders: int = 1000, seed: int = 42):
        if orders < 1:
            raise ConfigError("bad number of orders", "--orders must be 1 or more", "give a positive count",
                              value=orders)
        self.order_count, self.seed = orders, seed
        self.client_count = max(60, orders // 20)
        self.product_count = max(40, orders // 50)
        self.rng = random.Random(seed)
        self.prices: Dict[str, Decimal] = {}
        self.brands: Dict[str, str] = {}

    def clients(self) -> Iterator[tuple]:
        rng = self.rng
        for n in range(self.client_count):
            pick = rng.random()
            if n < len(WEEKDAYS):  # every spelling at least once
                promotion = WEEKDAYS[n]
            elif n < len(WEEKDAYS) + len(UNREADABLE):
                promotion = UNREADABLE[n - len(WEEKDAYS)]
            elif pick < 0.05:
                promotion = None
            elif pick < 0.07:
                promotion = ""
            elif pick < 0.12:
                promotion = rng.choice(UNREADABLE)
            elif pick < 0.20:
                promotion = (START + timedelta(days=rng.randrange(366))).date().isoformat()
            else:
                promotion = rng.choice(WEEKDAYS)
            yield (f"c{n:06d}", f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                   f"{rng.randrange(1, 999)} {rng.choice(STREETS)}",
                   Decimal(rng.randrange(-90_000_000, 90_000_000)) / 1_000_000,
                   Decimal(rng.randrange(-180_000_000, 180_000_000)) / 1_000_000, promotion)

    def products(self) -> Iterator[tuple]:
        rng = self.rng
        for n in range(self.product_count):
            uid = f"p{n:05d}"
            # One in ten costs x.10, x.30, ...: a single one at 15 % is taxed on a half cent (0.10 -> 0.015).
            cents = rng.randrange(10, 50_000) if n % 10 else rng.randrange(0, 500) * 100 + rng.choice((10, 30, 50))
            self.prices[uid] = Decimal(cents) / 100
            self.brands[uid] = BRANDS[n % len(BRANDS)]
            yield uid, f"{rng.choice(GOODS)} {n}", self.brands[uid], self.prices[uid]

    def orders(self) -> Iterator[tuple]:
        """(order row, its item rows) pairs."""
        rng = self.rng
        products = sorted(self.prices)
        item_no = 0
        for n in range(self.order_count):
            pick = rng.random()
            uid = None if pick < 0.002 else f"o{n:07d}"
            client = (None if pick < 0.004 else f"c-gone-{n}" if pick < 0.01
                      else f"c{rng.randrange(self.client_count):06d}")
            when = START + timedelta(seconds=rng.randrange(366 * 86400))
            order = (uid, client, when, rng.choice(STATUSES))
            kind = rng.random()
            if n == min(6, self.order_count - 1):
                count = BIG_ORDER_ITEMS
            elif kind < 0.02:
                count = 0
            else:
                count = rng.randrange(1, 10)
            items = []
            if 0.02 <= kind < 0.04 and count:  # a tie: two brands, the same quantity and the same revenue
                first, second = rng.sample(products, 2)
                while self.brands[first] == self.brands[second]:
                    second = rng.choice(products)
                quantity, price = rng.randrange(1, 5), self.prices[first]
                items = [(first, quantity, price), (second, quantity, price)]
            else:
                for _ in range(count):
                    product = rng.choice(products)
                    roll = rng.random()
                    if roll < 0.01:  # a product that is gone: the item keeps its own price (or none)
                        product = f"p-gone-{rng.randrange(100)}"
                        price = None if roll < 0.002 else Decimal(rng.randrange(10, 5000)) / 100
                    elif roll < 0.05:  # no price of its own: the product's
                        price = None
                    elif roll < 0.9:
                        price = self.prices[product]
                    else:  # a discount
                        price = (self.prices[product] * Decimal("0.9")).quantize(Decimal("0.01"))
                    items.append((product, rng.randrange(1, 6), price))
            rows = []
            for product, quantity, price in items:
                item_no += 1
                rows.append((f"i{item_no:08d}", uid, product, quantity, price))
            yield order, rows


def write_shop(url: str, orders: int = 1000, seed: int = 42, replace: bool = False) -> Dict[str, int]:
    """Create the four tables in the PostgreSQL database at ``url`` and fill them; the rows written per table.

    Refuses tables that already hold rows unless ``replace`` drops them first.
    """
    generator = ShopGenerator(orders, seed)
    written = dict.fromkeys(("clients", "products", "orders", "order_items"), 0)
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
            if cursor.fetchone()[0]:
                cursor.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table)))
                if cursor.fetchone()[0] and not replace:
                    raise ConfigError(f"table {table!r} already holds rows", "generate-shop writes a fresh shop",
                                      "pass --replace to drop the four tables first, or use an empty database")
        for table in TABLES:
            cursor.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(table)))
        cursor.execute(SCHEMA)
        written["clients"] = _copy(cursor, "clients", generator.clients())
        written["products"] = _copy(cursor, "products", generator.products())
        connection.commit()
        # One COPY at a time per connection: the items go through a second one, side by side.
        with psycopg.connect(url) as items_connection, items_connection.cursor() as items_cursor, \
                cursor.copy("COPY orders FROM STDIN") as orders_copy, \
                items_cursor.copy("COPY order_items FROM STDIN") as items_copy:
            for order, items in generator.orders():
                orders_copy.write_row(order)
                written["orders"] += 1
                for item in items:
                    items_copy.write_row(item)
                written["order_items"] += len(items)
        connection.commit()
        cursor.execute("ANALYZE")
    logger.info("shop written: %s", written)
    return written


def _copy(cursor, table: str, rows) -> int:
    count = 0
    with cursor.copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table))) as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count
