"""A deterministic source for the daily snapshots, shaped like the classic Northwind sample.

``generate_northwind(url, csv_path)`` (re)creates, in the database at ``url``:
categories (with binary pictures), customers keyed by text, customer
demographics and their link table, employees (with photos) and their
territories (a composite key), orders, products, suppliers, shippers,
regions, territories, and ``us_states`` (a table without a primary key).
The order details go to a CSV file (``order_id, product_id, unit_price,
quantity, discount``); a few of its lines name orders that do not exist, as
real exports do. The same seed and sizes give the same bytes.
"""
import csv
import dataclasses
import datetime
import random
from decimal import Decimal
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

import psycopg
from psycopg import sql

from gigsterpg.exc import ConfigError

SCHEMA = [
    ("categories", "category_id smallint PRIMARY KEY, category_name varchar(15) NOT NULL, description text,"
                   " picture bytea"),
    ("customer_demographics", "customer_type_id bpchar PRIMARY KEY, customer_desc text"),
    ("customers", "customer_id varchar(5) PRIMARY KEY, company_name varchar(40) NOT NULL, contact_name varchar(30),"
                  " contact_title varchar(30), address varchar(60), city varchar(15), region varchar(15),"
                  " postal_code varchar(10), country varchar(15), phone varchar(24), fax varchar(24)"),
    ("customer_customer_demo", "customer_id varchar(5) REFERENCES customers, customer_type_id bpchar"
                               " REFERENCES customer_demographics, PRIMARY KEY (customer_id, customer_type_id)"),
    ("employees", "employee_id smallint PRIMARY KEY, last_name varchar(20) NOT NULL, first_name varchar(10) NOT NULL,"
                  " title varchar(30), title_of_courtesy varchar(25), birth_date date, hire_date date,"
                  " address varchar(60), city varchar(15), region varchar(15), postal_code varchar(10),"
                  " country varchar(15), home_phone varchar(24), extension varchar(4), photo bytea, notes text,"
                  " reports_to smallint REFERENCES employees, photo_path varchar(255)"),
    ("suppliers", "supplier_id smallint PRIMARY KEY, company_name varchar(40) NOT NULL, contact_name varchar(30),"
                  " contact_title varchar(30), address varchar(60), city varchar(15), region varchar(15),"
                  " postal_code varchar(10), country varchar(15), phone varchar(24), fax varchar(24), homepage text"),
    ("products", "product_id smallint PRIMARY KEY, product_name varchar(40) NOT NULL,"
                 " supplier_id smallint REFERENCES suppliers, category_id smallint REFERENCES categories,"
                 " quantity_per_unit varchar(20), unit_price real, units_in_stock smallint, units_on_order smallint,"
                 " reorder_level smallint, discontinued integer NOT NULL"),
    ("region", "region_id smallint PRIMARY KEY, region_description bpchar NOT NULL"),
    ("shippers", "shipper_id smallint PRIMARY KEY, company_name varchar(40) NOT NULL, phone varchar(24)"),
    ("territories", "territory_id varchar(20) PRIMARY KEY, territory_description bpchar NOT NULL,"
                    " region_id smallint NOT NULL REFERENCES region"),
    ("employee_territories", "employee_id smallint REFERENCES employees, territory_id varchar(20)"
                             " REFERENCES territories, PRIMARY KEY (employee_id, territory_id)"),
    ("orders", "order_id integer PRIMARY KEY, customer_id varchar(5) REFERENCES customers,"
               " employee_id smallint REFERENCES employees, order_date date, required_date date, shipped_date date,"
               " ship_via smallint REFERENCES shippers, freight real, ship_name varchar(40), ship_address varchar(60),"
               " ship_city varchar(15), ship_region varchar(15), ship_postal_code varchar(10),"
               " ship_country varchar(15)"),
    ("us_states", "state_id smallint NOT NULL, state_name varchar(100), state_abbr varchar(2),"
                  " state_region varchar(50)"),
]
DETAIL_COLUMNS = ("order_id", "product_id", "unit_price", "quantity", "discount")
FIRST_ORDER = 10248
COUNTRIES = ["Germany", "Mexico", "UK", "Sweden", "France", "Spain", "Canada", "Argentina", "Switzerland", "Brazil",
             "Austria", "Italy", "Portugal", "USA", "Venezuela", "Ireland", "Belgium", "Norway", "Denmark", "Finland",
             "Poland"]
CITIES = ["Berlin", "México D.F.", "London", "Luleå", "Mannheim", "Strasbourg", "Madrid", "Marseille", "Tsawassen",
          "Buenos Aires", "Bern", "São Paulo", "Graz", "Torino", "Lisboa", "Köln", "Paris", "Reims", "Århus", "Oulu"]
WORDS = ["Alfreds", "Futterkiste", "Ana", "Trujillo", "Antonio", "Moreno", "Around", "the", "Horn", "Berglunds",
         "snabbköp", "Blauer", "See", "Delikatessen", "Blondel", "père", "et", "fils", "Bólido", "Comidas",
         "Bon", "app'", "Bottom-Dollar", "Markets", "Cactus", "Comidas", "Chop-suey", "Chinese", "Du", "monde",
         "entier", "Eastern", "Connection", "Ernst", "Handel", "Familia", "Arquibaldo", "Folies", "gourmandes"]
CATEGORIES = ["Beverages", "Condiments", "Confections", "Dairy Products", "Grains/Cereals", "Meat/Poultry",
              "Produce", "Seafood"]
STATES = [("Alabama", "AL", "south"), ("Alaska", "AK", "north"), ("Arizona", "AZ", "west"),
          ("Arkansas", "AR", "south"), ("California", "CA", "west"), ("Colorado", "CO", "west"),
          ("Connecticut", "CT", "east"), ("Delaware", "DE", "east"), ("District of Columbia", "DC", "east"),
          ("Florida", "FL", "south"), ("Georgia", "GA", "south"), ("Hawaii", "HI", "west"), ("Idaho", "ID", "midwest"),
          ("Illinois", "IL", "midwest"), ("Indiana", "IN", "midwest"), ("Iowa", "IO", "midwest"),
          ("Kansas", "KS", "midwest"), ("Kentucky", "KY", "south"), ("Louisiana", "LA", "south"),
          ("Maine", "ME", "north"), ("Maryland", "MD", "east"), ("Massachusetts", "MA", "north"),
          ("Michigan", "MI", "north"), ("Minnesota", "MN", "north"), ("Mississippi", "MS", "south"),
          ("Missouri", "MO", "south"), ("Montana", "MT", "west"), ("Nebraska", "NE", "midwest"),
          ("Nevada", "NV", "west"), ("New Hampshire", "NH", "east"), ("New Jersey", "NJ", "east"),
          ("New Mexico", "NM", "west"), ("New York", "NY", "east"), ("North Carolina", "NC", "east")]


@dataclasses.dataclass
class NorthwindReport:
    """What was generated: rows per table, and the details CSV."""

    tables: Dict[str, int]
    details: int
    orphan_details: int
    csv_path: str


class _Data:
    """The rows of every table, drawn from one seeded generator in a fixed order."""

    def __init__(self, orders: int, seed: int):
        self.rng = random.Random(seed)
        self.orders_count = orders

    def words(self, count: int, limit: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(count))[:limit]

    def place(self) -> tuple:
        rng = self.rng
        return (f"{rng.randint(1, 999)} {self.words(2, 40)}", rng.choice(CITIES)[:15],
                rng.choice([None, "BC", "SP", "RJ", "WA", "OR"]), f"{rng.randint(1000, 99999)}",
                rng.choice(COUNTRIES), f"({rng.randint(1, 999)}) 555-{rng.randint(1000, 9999)}")

    def tables(self) -> Dict[str, List[tuple]]:
        rng, base = self.rng, datetime.date(1996, 7, 4)
        data: Dict[str, List[tuple]] = {}
        data["categories"] = [(i + 1, name, f"{self.words(4, 60)}; \"{name.lower()}\"", rng.randbytes(
            rng.randint(200, 4000))) for i, name in enumerate(CATEGORIES)]
        data["customer_demographics"] = [("A", "Large, international\nretailers"), ("B", "Small shops")]
        ids = set()
        while len(ids) < 91:
            ids.add("".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5)))
        customer_ids = sorted(ids)
        data["customers"] = [(cid, self.words(2, 40), self.words(2, 30), rng.choice(["Owner", "Sales Agent"]),
                              *self.place(), rng.choice([None, f"030-{rng.randint(1000000, 9999999)}"]))
                             for cid in customer_ids]
        data["customer_customer_demo"] = [(cid, rng.choice("AB")) for cid in customer_ids[::9]]
        data["employees"] = [(i, self.words(1, 20), self.words(1, 10), "Sales Representative", "Ms.",
                              base - datetime.timedelta(days=rng.randint(9000, 20000)),
                              base - datetime.timedelta(days=rng.randint(100, 1500)), *self.place()[:5],
                              self.place()[5], str(rng.randint(100, 9999)), rng.randbytes(rng.randint(500, 3000)),
                              self.words(12, 400), None if i == 2 else 2, f"http://accweb/emmployees/{i}.bmp")
                             for i in range(1, 10)]
        data["suppliers"] = [(i, self.words(2, 40), self.words(2, 30), "Sales Manager", *self.place(), None,
                              rng.choice([None, f"#{self.words(1, 20)}#http://www.example.com/{i}#"]))
                             for i in range(1, 30)]
        data["products"] = [(i, self.words(2, 40), rng.randint(1, 29), rng.randint(1, 8),
                             f"{rng.randint(1, 48)} boxes", float(round(rng.uniform(2.5, 263.5), 2)),
                             rng.randint(0, 125), rng.choice([0, 0, 10, 40]), rng.choice([0, 5, 10, 25]),
                             rng.choice([0, 0, 0, 1])) for i in range(1, 78)]
        data["region"] = [(1, "Eastern"), (2, "Western"), (3, "Northern"), (4, "Southern")]
        data["shippers"] = [(i, name, f"(503) 555-{rng.randint(1000, 9999)}") for i, name in
                            enumerate(["Speedy Express", "United Package", "Federal Shipping", "Alliance Shippers",
                                       "UPS", "DHL"], 1)]
        data["territories"] = [(f"{rng.randint(1, 9)}{i:04d}", self.words(1, 20), rng.randint(1, 4))
                               for i in range(53)]
        data["employee_territories"] = sorted({(rng.randint(1, 9), t[0]) for t in data["territories"]})
        data["orders"] = list(self.orders(customer_ids, base))
        data["us_states"] = [(i, name, abbr, region) for i, (name, abbr, region) in enumerate(STATES, 1)]
        return data

    def orders(self, customer_ids: Sequence[str], base: datetime.date) -> Iterable[tuple]:
        rng = self.rng
        for offset in range(self.orders_count):
            ordered = base + datetime.timedelta(days=offset * 670 // max(self.orders_count, 1))
            shipped = rng.choice([None, ordered + datetime.timedelta(days=rng.randint(1, 30))])
            yield (FIRST_ORDER + offset, rng.choice(customer_ids), rng.randint(1, 9), ordered,
                   ordered + datetime.timedelta(days=28), shipped, rng.randint(1, 3),
                   float(round(rng.uniform(0.02, 1007.64), 2)), self.words(2, 40), *self.place()[:5])

    def details(self, prices: Dict[int, float]) -> Iterable[Tuple]:
        """Detail lines: 1 to 4 products per order, then a few lines of orders that do not exist."""
        rng = self.rng
        for offset in range(self.orders_count):
            for product in sorted(rng.sample(range(1, 78), rng.randint(1, 4))):
                yield (FIRST_ORDER + offset, product, Decimal(str(prices[product])).quantize(Decimal("0.01")),
                       rng.randint(1, 120), rng.choice(["0", "0", "0", "0.05", "0.1", "0.15", "0.2", "0.25"]))
        for extra in range(max(1, self.orders_count // 200)):
            yield (FIRST_ORDER + self.orders_count + 1000 + extra, rng.randint(1, 77), Decimal("9.99"), 1, "0")


def generate_northwind(url: str, csv_path: Path, orders: int = 830, seed: int = 7) -> NorthwindReport:
    """(Re)create the Northwind-like tables in the database at ``url`` and write the order details to ``csv_path``."""
    if orders < 1:
        raise ConfigError(f"bad number of orders {orders}", "it must be 1 or more", "give --orders 1 or more")
    data = _Data(orders, seed)
    tables = data.tables()
    counts = {}
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        for name, _ in reversed(SCHEMA):
            cursor.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        for name, columns in SCHEMA:
            cursor.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(name), sql.SQL(columns)))
            with cursor.copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(name))) as copy:
                for row in tables[name]:
                    copy.write_row(row)
            counts[name] = len(tables[name])
    prices = {row[0]: row[5] for row in tables["products"]}
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    lines = orphans = 0
    with open(csv_path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(DETAIL_COLUMNS)
        for row in data.details(prices):
            writer.writerow(row)
            lines += 1
            orphans += row[0] >= FIRST_ORDER + orders
    return NorthwindReport(counts, lines, orphans, str(csv_path))
