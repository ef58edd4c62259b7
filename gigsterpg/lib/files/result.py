"""The final query of the daily snapshots: the orders with their details, written as CSV and JSON.

One row per detail line of the CSV whose order exists in the day's ``orders``,
the detail's columns first and the order's beside them (an order column
whose name the details also have is prefixed ``order_``). Written to
``<root>/results/<day>/`` as a partition (whole or absent), streamed from a
server-side cursor.
"""
import csv
import datetime
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import List, Sequence, Tuple

from psycopg import sql

from gigsterpg import __version__
from gigsterpg.lib.files import partition, pgcopy
from gigsterpg.lib.files.load import DAY_COLUMN

RESULT_NAME = "orders_with_details"
JOIN_KEY = "order_id"


def _columns(cursor, schema: str, table: str) -> List[str]:
    cursor.execute("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0"
                   " AND NOT attisdropped ORDER BY attnum", (sql.Identifier(schema, table).as_string(cursor),))
    return [row[0] for row in cursor.fetchall() if row[0] != DAY_COLUMN]


def orders_query(cursor, orders: Tuple[str, str], details: Tuple[str, str], day: datetime.date):
    """The SELECT of the day's details joined with their orders, and its column names."""
    detail_columns = _columns(cursor, *details)
    order_columns = [name for name in _columns(cursor, *orders) if name != JOIN_KEY]
    d, o = sql.Identifier("d"), sql.Identifier("o")
    names = list(detail_columns)
    select = [sql.SQL("{}.{}").format(d, sql.Identifier(name)) for name in detail_columns]
    for name in order_columns:
        shown = f"order_{name}" if name in detail_columns else name
        names.append(shown)
        select.append(sql.SQL("{}.{} AS {}").format(o, sql.Identifier(name), sql.Identifier(shown)))
    query = sql.SQL("SELECT {} FROM {} AS d JOIN {} AS o ON o.{key} = d.{key} AND o.{day} = {value}"
                    " WHERE d.{day} = {value} ORDER BY {order}").format(
        sql.SQL(", ").join(select), sql.Identifier(*details), sql.Identifier(*orders),
        key=sql.Identifier(JOIN_KEY), day=sql.Identifier(DAY_COLUMN), value=sql.Literal(day),
        order=sql.SQL(", ").join(sql.Literal(index) for index in range(1, len(names) + 1)))
    return query, names


def _text(value) -> str:
    """A value as the CSV shows it: empty for NULL, ISO dates, true/false, \\x-hex bytes."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, memoryview)):
        return "\\x" + bytes(value).hex()
    return str(value)


def _json(value) -> str:
    """A value as JSON: numbers as numbers (exact decimals), dates ISO, bytes \\x-hex."""
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else json.dumps(str(value))
    if isinstance(value, (datetime.date, datetime.time, uuid.UUID, bytes, memoryview)):
        return json.dumps(_text(value))
    return json.dumps(value, ensure_ascii=False)


def write_result(connection, root: Path, day: datetime.date, orders: Tuple[str, str],
                 details: Tuple[str, str]) -> Tuple[int, Path]:
    """Run the query for ``day`` and write its rows to ``<root>/results/<day>/`` (CSV and JSON); rows and folder."""
    final = partition.day_folder(root, "results", day)
    with connection.cursor() as cursor:
        query, names = orders_query(cursor, orders, details, day)
    rows = 0
    with partition.writing(final) as temp:
        csv_path, json_path = temp / f"{RESULT_NAME}.csv", temp / f"{RESULT_NAME}.json"
        keys = [json.dumps(name) for name in names]
        with connection.cursor(name="snapshot_result") as cursor, \
                open(csv_path, "w", encoding="utf-8", newline="") as csv_file, \
                open(json_path, "w", encoding="utf-8") as json_file:
            writer = csv.writer(csv_file, lineterminator="\n")
            writer.writerow(names)
            json_file.write("[")
            cursor.execute(query)
            while True:
                batch = cursor.fetchmany(5000)
                if not batch:
                    break
                for row in batch:
                    writer.writerow([_text(value) for value in row])
                    json_file.write(("\n" if rows == 0 else ",\n") + "{" + ", ".join(
                        f"{key}: {_json(value)}" for key, value in zip(keys, row)) + "}")
                    rows += 1
            json_file.write("\n]\n" if rows else "]\n")
        partition.write_manifest(temp, {
            "query": RESULT_NAME, "day": day.isoformat(), "rows": rows, "columns": names,
            "orders": ".".join(orders), "details": ".".join(details),
            "files": {path.name: pgcopy.sha256_file(path) for path in (csv_path, json_path)},
            "tool": "gigsterpg", "tool_version": __version__})
    return rows, final


def result_files(folder: Path) -> Sequence[Path]:
    """The CSV and JSON files of a result folder."""
    return [Path(folder) / f"{RESULT_NAME}.csv", Path(folder) / f"{RESULT_NAME}.json"]
