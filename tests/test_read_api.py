"""The read API (GET /read...) over datasets made by load-csv and transform, against the real servers."""
import csv
import dataclasses
import json
import threading
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from gigsterpg.api.app import create_app
from gigsterpg.examples import EARLIEST_TRADE_SQL, FOLDER, PEOPLE, TRADES
from gigsterpg.lib.datasets.load import load_csv
from gigsterpg.lib.datasets.transform import transform
from tests.helpers import API_AUTH, API_TOKEN


@pytest.fixture
def example(api_settings):
    load_csv(api_settings, [FOLDER])
    transform(api_settings, EARLIEST_TRADE_SQL, "earliest_trade")
    return dataclasses.replace(api_settings, read_default="earliest_trade")


@pytest.fixture
def client(example):
    with TestClient(create_app(example, API_TOKEN)) as test_client:
        test_client.headers.update(API_AUTH)
        yield test_client


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_first_chunk_is_typed_json_in_key_order(client):
    answer = client.get("/read/first-chunk")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    body = json.loads(answer.text, parse_float=Decimal)
    people = read_csv(PEOPLE)
    trades = read_csv(TRADES)
    assert [row["person_id"] for row in body] == sorted(int(p["person_id"]) for p in people)
    first = body[0]  # Ada: two trades, the earlier one is 102 (2022-12-01)
    month, day, year = people[0]["joined"].split("/")
    ada = sorted((t for t in trades if t["person_id"] == "1"), key=lambda t: t["traded_at"])[0]
    assert first == {"person_id": 1, "name": "Ada Lovelace", "joined": f"{year}-{int(month):02}-{int(day):02}",
                     "first_trade_id": int(ada["trade_id"]), "first_symbol": ada["symbol"],
                     "first_quantity": int(ada["quantity"]), "first_price": Decimal(ada["price"]),
                     "first_traded_at": ada["traded_at"].replace(" ", "T"),
                     "trades": sum(t["person_id"] == "1" for t in trades),
                     "total_value": sum(int(t["quantity"]) * Decimal(t["price"]) for t in trades
                                        if t["person_id"] == "1")}
    assert isinstance(first["person_id"], int) and isinstance(first["first_price"], Decimal)
    without = [row for row in body if row["trades"] == 0]
    assert without and all(row["first_trade_id"] is None and row["total_value"] is None for row in without)
    assert client.get("/read/earliest_trade/first-chunk?limit=2").json() == json.loads(answer.text)[:2]


def test_the_list_and_paging_to_the_end_equal_the_table(client, api_settings, tmp_path):
    path = tmp_path / "numbers.csv"
    path.write_text("n,label,day\n" + "".join(f"{i * 3},item {i},{i % 28 + 1}.02.2022\n" for i in range(250)))
    load_csv(api_settings, [path], key="n")
    listed = {item["name"]: item for item in client.get("/read").json()["items"]}
    assert set(listed) == {"people", "trades", "earliest_trade", "numbers"}
    assert (listed["numbers"]["key"], listed["numbers"]["rows"], listed["numbers"]["kind"]) == ("n", 250, "csv")
    assert [c["kind"] for c in listed["numbers"]["columns"]] == ["integer", "text", "date"]
    url, seen, pages = listed["numbers"]["url"] + "?limit=7", [], 0
    while url:
        page = client.get(url).json()
        assert page["dataset"] == "numbers" and len(page["items"]) <= 7
        seen.extend(page["items"])
        url, pages = page["next"], pages + 1
    assert pages == 36  # 35 full pages and one of 5
    assert seen == [{"n": i * 3, "label": f"item {i}", "day": f"2022-02-{i % 28 + 1:02}"} for i in range(250)]
    # A key that is text pages too (the _row key of a file loaded without one).
    trades = client.get("/read/trades?limit=4").json()
    assert trades["items"][0]["_row"] == 1 and "after=4" in trades["next"]
    assert client.get(trades["next"]).json()["items"][0]["_row"] == 5


def test_refusals_and_the_token(client, example):
    assert client.get("/read/nope/first-chunk").status_code == 404
    assert client.get("/read/nope").json()["error"] == "dataset_not_found"
    for bad in ("/read/first-chunk?limit=0", "/read/first-chunk?limit=1001", "/read/first-chunk?limit=x",
                "/read/earliest_trade?after=abc", "/read/earliest_trade?limt=3", "/read/first-chunk?limit=1&limit=2",
                "/read/earliest_trade?after=1%00"):
        answer = client.get(bad)
        assert answer.status_code == 400, (bad, answer.text)
        assert answer.json()["error"] == "bad_request"
    echoed = client.get("/read/earliest_trade?after=secret-cursor-42").text  # a value sent is never echoed back
    assert "secret-cursor-42" not in echoed and "bad after" in echoed, echoed
    assert client.get("/read/earliest_trade", headers={"Authorization": "Bearer wrong"}).status_code == 401
    client.headers.pop("Authorization")
    assert client.get("/read/first-chunk").status_code == 401
    with TestClient(create_app(dataclasses.replace(example, read_public=True, read_default=None), API_TOKEN)) as open_:
        assert open_.get("/read/earliest_trade/first-chunk?limit=1").status_code == 200
        assert open_.get("/read/first-chunk").json()["why"] == "GIGSTERPG_READ_DEFAULT is not set"
        assert open_.get("/users").status_code == 401  # the other routes still want the token
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/read", "/read/first-chunk", "/read/{dataset}/first-chunk", "/read/{dataset}"} <= set(paths)


def test_a_dataset_replaced_while_it_is_read_is_never_half(client, api_settings, tmp_path):
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    small.write_text("id,v\n" + "".join(f"{i},small\n" for i in range(300)))
    large.write_text("id,v\n" + "".join(f"{i},large\n" for i in range(700)))
    load_csv(api_settings, [small], table="flip", key="id")
    stop, loads, failures = threading.Event(), [], []

    def replace_again_and_again():
        try:
            while not stop.is_set():
                load_csv(api_settings, [large if len(loads) % 2 == 0 else small], table="flip", key="id")
                loads.append(1)
        except Exception as err:  # pragma: no cover - reported by the assertion below
            failures.append(err)

    writer = threading.Thread(target=replace_again_and_again)
    writer.start()
    answers = {"small": 0, "large": 0}
    try:
        while len(loads) < 20 and not failures:
            rows = client.get("/read/flip/first-chunk?limit=1000").json()
            kinds = {row["v"] for row in rows}
            assert len(kinds) == 1, f"a mixed answer: {kinds}"
            kind = kinds.pop()
            assert len(rows) == {"small": 300, "large": 700}[kind], f"{len(rows)} rows of {kind}: a half answer"
            assert [row["id"] for row in rows] == list(range(len(rows)))
            answers[kind] += 1
    finally:
        stop.set()
        writer.join()
    assert not failures
    assert answers["small"] and answers["large"], answers  # both versions were read while the loads went on
