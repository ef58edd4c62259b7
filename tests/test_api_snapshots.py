"""GET /snapshots: the daily snapshots' ledger over HTTP, as pipeline status reads it."""
import datetime

import psycopg
import pytest
from fastapi.testclient import TestClient

from gigsterpg.api.app import create_app
from gigsterpg.lib.files import snapshot
from tests.helpers import API_AUTH as AUTH, API_TOKEN as TOKEN


def test_the_steps_of_the_last_days_with_failures_and_commands(api_settings, empty_pg_url, tmp_path):
    source = empty_pg_url
    with psycopg.connect(source, autocommit=True) as connection:
        connection.execute("CREATE TABLE orders (order_id int PRIMARY KEY, customer text);"
                           " INSERT INTO orders VALUES (1, 'a'), (2, 'b')")
    csv_path = tmp_path / "details.csv"
    csv_path.write_text("order_id,product_id\n1,7\n3,8\n", encoding="utf-8")
    line = snapshot.Pipeline(api_settings.pg_url, tmp_path / "data", source, csv_path)
    assert snapshot.run_days(line, [datetime.date(2021, 1, 1)]).ok
    snapshot.extract_csv(line, datetime.date(2021, 1, 2))
    with TestClient(create_app(api_settings, TOKEN)) as client:
        assert client.get("/snapshots").status_code == 401
        answer = client.get("/snapshots", headers=AUTH)
        assert answer.status_code == 200
        rows = answer.json()
        assert [(r["day"], r["step"], r["state"], r["rows"]) for r in rows] == [
            ("2021-01-02", "extract-csv", "succeeded", 2),
            ("2021-01-01", "extract-postgres", "succeeded", 2), ("2021-01-01", "extract-csv", "succeeded", 2),
            ("2021-01-01", "load", "succeeded", 4), ("2021-01-01", "query", "succeeded", 1)]
        refused = client.get("/snapshots?days=0", headers=AUTH)
        assert refused.status_code == 400
        with pytest.raises(snapshot.StepRefused):
            snapshot.load_day(line, datetime.date(2021, 1, 2))
        failed = client.get("/snapshots?days=1", headers=AUTH).json()
        assert [(r["step"], r["state"]) for r in failed] == [("extract-csv", "succeeded"), ("load", "failed")]
        assert failed[1]["rerun"].startswith("python -m gigsterpg.cli pipeline extract-postgres --day 2021-01-02")
