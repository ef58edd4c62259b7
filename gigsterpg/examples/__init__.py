"""The worked example of ``load-csv`` and ``transform``: people and their trades, and the SQL that gives each
person with their earliest trade (people without trades kept). docker compose's ``etl`` service loads this
folder by default::

    python -m gigsterpg.cli load-csv gigsterpg/examples
    python -m gigsterpg.cli transform gigsterpg/examples/earliest_trade.sql --into earliest_trade
"""
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
PEOPLE, TRADES, EARLIEST_TRADE_SQL = FOLDER / "people.csv", FOLDER / "trades.csv", FOLDER / "earliest_trade.sql"
