"""load-csv and transform against a real PostgreSQL: types, bad lines, replace and merge, the worked example."""
import csv
import datetime
from decimal import Decimal

import psycopg
import pytest

from gigsterpg import cli
from gigsterpg.config import Settings
from gigsterpg.examples import EARLIEST_TRADE_SQL, FOLDER, PEOPLE, TRADES
from gigsterpg.exc import ConfigError, SourceError
from gigsterpg.lib.datasets.load import load_csv
from gigsterpg.lib.datasets.transform import transform


def write(tmp_path, name: str, text: str, bom: bool = False):
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def rows(url: str, query: str, params=()):
    with psycopg.connect(url) as connection:
        return connection.execute(query, params).fetchall()


def column_types(url: str, schema: str, table: str) -> dict:
    return dict(rows(url, "SELECT column_name, data_type FROM information_schema.columns"
                          " WHERE table_schema = %s AND table_name = %s", (schema, table)))


@pytest.fixture
def conf(pg_url):
    return Settings(pg_url=pg_url)


def test_each_kind_and_date_form_lands_as_its_postgresql_type(tmp_path, conf, pg_url):
    path = write(tmp_path, "kinds.csv", "\n".join([
        "id;amount;paid;iso;us;dotted;at;note",
        "1;2.50;true;2022-09-26;9/26/2022;26.09.2022;2022-09-26 14:05:06;hello",
        "2;-3;no;2022-01-02;1/2/2022;02.01.2022;2022-01-02T00:00:00;\"semi;colon\"",
        "3;;;;;;;",
    ]) + "\n", bom=True)
    report = load_csv(conf, [path])
    load, = report.files
    assert (load.rows, load.bad_lines, load.dataset, load.table) == (3, 0, "kinds", "datasets.kinds")
    assert {c["name"]: c["kind"] for c in load.columns} == {
        "_row": "integer", "id": "integer", "amount": "numeric", "paid": "boolean", "iso": "date", "us": "date",
        "dotted": "date", "at": "timestamp", "note": "text"}
    assert column_types(pg_url, "datasets", "kinds") == {
        "_row": "bigint", "id": "bigint", "amount": "numeric", "paid": "boolean", "iso": "date", "us": "date",
        "dotted": "date", "at": "timestamp without time zone", "note": "text"}
    day = datetime.date(2022, 9, 26)
    assert rows(pg_url, "SELECT * FROM datasets.kinds ORDER BY _row") == [
        (1, Decimal("2.50"), True, day, day, day, datetime.datetime(2022, 9, 26, 14, 5, 6), "hello", 1),
        (2, Decimal("-3"), False, datetime.date(2022, 1, 2), datetime.date(2022, 1, 2), datetime.date(2022, 1, 2),
         datetime.datetime(2022, 1, 2), "semi;colon", 2),
        (3, None, None, None, None, None, None, None, 3)]
    assert rows(pg_url, "SELECT kind, key, rows, bad_lines FROM datasets WHERE name = 'kinds'") == [
        ("csv", "_row", 3, 0)]


def test_bad_lines_are_recorded_with_line_column_and_reason(tmp_path, conf, pg_url):
    path = write(tmp_path, "people.csv", "\n".join([
        "id,name,born",
        "1,Ada,1815-12-10",
        "2,Alan,1912-06-23,extra",          # line 3: too many fields
        "3,Grace",                          # line 4: too few
        "x,Edsger,1930-05-11",              # line 5: not an integer (declared)
        "5,\"Multi",                        # line 6: a quoted value over two lines, then a date that is none
        "line\",1900-02-30",
        "6,Barbara,1939-11-07",
        "7,\"Bro\"ken\",1900-01-01",        # a stray quote: read as Arrow reads it, kept
    ]) + "\n")
    load, = load_csv(conf, [path], declared={"id": "integer", "born": "date"}).files
    assert (load.rows, load.bad_lines) == (3, 4)
    assert rows(pg_url, "SELECT id, name FROM datasets.people ORDER BY _row") == [
        (1, "Ada"), (6, "Barbara"), (7, 'Broken"')]
    recorded = rows(pg_url, "SELECT line, column_name, reason, file FROM csv_rejects WHERE dataset = 'people'"
                            " ORDER BY line")
    assert [(line, column) for line, column, _, _ in recorded] == [(3, None), (4, None), (5, "id"), (6, "born")]
    assert "4 fields" in recorded[0][2] and "2 fields" in recorded[1][2] and "integer" in recorded[2][2]
    assert "'1900-02-30' is not a date" in recorded[3][2]
    assert {file for *_, file in recorded} == {str(path)}
    # A clean reload replaces the rejects with its own (none).
    write(tmp_path, "people.csv", "id,name,born\n7,Kathleen,1922-02-22\n")
    load_csv(conf, [path])
    assert rows(pg_url, "SELECT count(*) FROM csv_rejects WHERE dataset = 'people'") == [(0,)]
    assert rows(pg_url, "SELECT id, name FROM datasets.people") == [(7, "Kathleen")]


def test_a_load_replaces_the_table_whole_and_a_merge_upserts_by_key(tmp_path, conf, pg_url):
    first = write(tmp_path, "a.csv", "sku,qty\nA,1\nB,2\n")
    load_csv(conf, [first], table="stock", key="sku")
    write(tmp_path, "a.csv", "sku,qty\nC,3\n")
    load_csv(conf, [first], table="stock", key="sku")
    assert rows(pg_url, "SELECT sku, qty FROM datasets.stock") == [("C", 3)]
    changes = write(tmp_path, "b.csv", "sku,qty\nA,10\nC,30\nA,11\n")
    load, = load_csv(conf, [changes], table="stock", key="sku", merge=True).files
    assert (load.mode, load.rows, load.table_rows) == ("merge", 3, 2)
    assert rows(pg_url, "SELECT sku, qty FROM datasets.stock ORDER BY sku") == [("A", 11), ("C", 30)]
    with pytest.raises(ConfigError, match="keyed by 'sku'"):
        load_csv(conf, [changes], table="stock", key="qty", merge=True)
    with pytest.raises(SourceError, match="not a key"):
        load_csv(conf, [changes], table="stock", key="sku")  # A twice: no primary key
    assert rows(pg_url, "SELECT sku, qty FROM datasets.stock ORDER BY sku") == [("A", 11), ("C", 30)]


def test_tables_that_are_no_dataset_are_never_replaced(tmp_path, conf, pg_url):
    path = write(tmp_path, "users.csv", "a\n1\n")
    with pytest.raises(SourceError, match="is not a dataset"):
        load_csv(conf, [path], schema="public")
    assert rows(pg_url, "SELECT count(*) FROM public.users") == [(0,)]
    with pytest.raises(ConfigError, match="bad table name"):
        load_csv(conf, [path], table="bad-name")
    with pytest.raises(ConfigError, match="no CSV file"):
        load_csv(conf, [tmp_path / "empty-folder"] if (tmp_path / "empty-folder").mkdir() is None else [])


def expected_earliest_trades():
    """The worked example's answer, computed here from the CSV files with Python alone."""
    with open(PEOPLE, newline="") as handle:
        people = list(csv.DictReader(handle))
    with open(TRADES, newline="") as handle:
        trades = list(csv.DictReader(handle))
    answer = []
    for person in people:
        theirs = sorted((t for t in trades if t["person_id"] == person["person_id"]),
                        key=lambda t: (datetime.datetime.fromisoformat(t["traded_at"]), int(t["trade_id"])))
        month, day, year = map(int, person["joined"].split("/"))
        first = theirs[0] if theirs else None
        answer.append((
            int(person["person_id"]), person["name"], datetime.date(year, month, day),
            int(first["trade_id"]) if first else None, first["symbol"] if first else None,
            int(first["quantity"]) if first else None, Decimal(first["price"]) if first else None,
            datetime.datetime.fromisoformat(first["traded_at"]) if first else None, len(theirs),
            sum(int(t["quantity"]) * Decimal(t["price"]) for t in theirs) if theirs else None))
    return answer


def test_the_worked_example_gives_each_person_their_earliest_trade(conf, pg_url):
    report = load_csv(conf, [FOLDER])
    assert [load.dataset for load in report.files] == ["people", "trades"]
    made = transform(conf, EARLIEST_TRADE_SQL, "earliest_trade")
    expected = expected_earliest_trades()
    assert any(row[3] is None for row in expected)  # someone without trades, kept
    assert (made.rows, made.key) == (len(expected), "person_id")
    assert rows(pg_url, "SELECT * FROM datasets.earliest_trade ORDER BY person_id") == expected
    assert rows(pg_url, "SELECT kind, key, rows FROM datasets WHERE name = 'earliest_trade'") == [
        ("transform", "person_id", len(expected))]
    # Run again: replaced, not appended.
    transform(conf, EARLIEST_TRADE_SQL, "earliest_trade")
    assert rows(pg_url, "SELECT count(*) FROM datasets.earliest_trade") == [(len(expected),)]


def test_a_transform_that_fails_leaves_the_old_dataset(tmp_path, conf, pg_url):
    load_csv(conf, [FOLDER])
    transform(conf, EARLIEST_TRADE_SQL, "earliest_trade")
    before = rows(pg_url, "SELECT * FROM datasets.earliest_trade ORDER BY person_id")
    broken = write(tmp_path, "broken.sql", "SELECT person_id FROM no_such_table;")
    with pytest.raises(SourceError, match="no_such_table"):
        transform(conf, broken, "earliest_trade")
    twice = write(tmp_path, "twice.sql", "SELECT person_id, symbol FROM trades")
    with pytest.raises(SourceError, match="not a key"):
        transform(conf, twice, "earliest_trade")
    with pytest.raises(ConfigError, match="is empty"):
        transform(conf, write(tmp_path, "empty.sql", " ;\n"), "earliest_trade")
    assert rows(pg_url, "SELECT * FROM datasets.earliest_trade ORDER BY person_id") == before


def test_the_cli_loads_transforms_and_fails_in_one_line(tmp_path, pg_url, capsys):
    assert cli.main(["load-csv", str(FOLDER), "--pg-url", pg_url]) == 0
    out = capsys.readouterr().out
    assert "people.csv: 5 rows loaded into datasets.people" in out
    assert "joined date" in out and "price numeric" in out and "2 files: 12 rows, 0 bad lines." in out
    assert cli.main(["transform", str(EARLIEST_TRADE_SQL), "--into", "firsts", "--pg-url", pg_url]) == 0
    assert "Dataset 'firsts' (datasets.firsts) replaced: 5 rows keyed by person_id" in capsys.readouterr().out
    bad = write(tmp_path, "bad.csv", "num\n1\n2\nthree\n")
    assert cli.main(["load-csv", str(bad), "--type", "num=integer", "--key", "num", "--pg-url", pg_url]) == 0
    assert "bad line 4 column num: 'three' is not an integer" in capsys.readouterr().out
    assert cli.main(["load-csv", str(bad), "--table", "x-y", "--pg-url", pg_url]) == 2
    assert capsys.readouterr().err.startswith("FAILED: bad table name 'x-y'")
    with pytest.raises(SystemExit):
        cli.main(["load-csv", str(bad), "--type", "num=float"])
    assert "COLUMN=KIND" in capsys.readouterr().err


TRICKY = "\n".join([
    "id,note,amount,flag,at,zoned,day",
    '1,"a, quoted; field",1e3,y,2022-09-26T14:05:06.25,2022-09-26T14:05:06+02:00,9/26/2022',
    '2,"two\nlines ""and"" quotes",-.5,N,2022-01-02 03:04,2022-01-02 03:04:00Z,2022-01-02',
    '3,"",+7,true,,2022-01-02T03:04:05-05:30,',
    "4,,0,F,2022-12-31 23:59:59,2022-12-31T23:59:59+00:00,12/31/2022",
]) + "\n"


def test_quotes_newlines_offsets_and_exponents_of_a_clean_file(tmp_path, conf, pg_url):
    path = write(tmp_path, "tricky.csv", TRICKY, bom=True)
    load, = load_csv(conf, [path]).files
    assert load.parser == "arrow" and (load.rows, load.bad_lines) == (4, 0)
    loaded = rows(pg_url, "SELECT * FROM datasets.tricky ORDER BY _row")
    assert column_types(pg_url, "datasets", "tricky") == {
        "_row": "bigint", "id": "bigint", "note": "text", "amount": "numeric", "flag": "boolean",
        "at": "timestamp without time zone", "zoned": "timestamp with time zone", "day": "date"}
    assert loaded[1][1] == 'two\nlines "and" quotes' and loaded[2][1] is None  # "" is NULL
    assert loaded[0][2] == Decimal("1E+3") and loaded[1][2] == Decimal("-0.5") and loaded[2][2] == 7
    assert [row[3] for row in loaded] == [True, False, True, False]
    assert loaded[0][4] == datetime.datetime(2022, 9, 26, 14, 5, 6, 250000) and loaded[2][4] is None
    utc = datetime.timezone.utc
    assert loaded[2][5] == datetime.datetime(2022, 1, 2, 8, 34, 5, tzinfo=utc)
    assert loaded[1][5] == datetime.datetime(2022, 1, 2, 3, 4, tzinfo=utc)
    assert [row[6] for row in loaded] == [datetime.date(2022, 9, 26), datetime.date(2022, 1, 2), None,
                                          datetime.date(2022, 12, 31)]


def test_dotted_and_slashed_dates_quotes_in_fields_and_mixed_line_ends(tmp_path, conf, pg_url):
    # Dots are day first, slashes month first, in one column.
    dotted = write(tmp_path, "dotted.csv", "id,day\n1,01.02.2022\n2,1/2/2022\n")
    load, = load_csv(conf, [dotted]).files
    assert load.parser == "arrow"
    assert rows(pg_url, "SELECT day FROM datasets.dotted ORDER BY id") == [
        (datetime.date(2022, 2, 1),), (datetime.date(2022, 1, 2),)]
    # A quote inside an unquoted field is part of the value.
    quotes = write(tmp_path, "quotes.csv", 'id,note\n1,ab"c\n2,d"e\n3,x\n')
    load, = load_csv(conf, [quotes]).files
    assert (load.parser, load.rows) == ("arrow", 3)
    assert rows(pg_url, "SELECT note FROM datasets.quotes ORDER BY id") == [('ab"c',), ('d"e',), ("x",)]
    # Line ends that change on the way.
    mixed = write(tmp_path, "mixed.csv", "id,note\r\n1,a\r\n2,b\n3,c\n")
    load, = load_csv(conf, [mixed]).files
    assert (load.parser, load.rows) == ("arrow", 3)
    assert rows(pg_url, "SELECT note FROM datasets.mixed ORDER BY id") == [("a",), ("b",), ("c",)]


def test_a_database_never_migrated_is_migrated_first(empty_pg_url):
    conf = Settings(pg_url=empty_pg_url)
    load_csv(conf, [FOLDER])
    transform(conf, EARLIEST_TRADE_SQL, "earliest_trade")
    assert rows(empty_pg_url, "SELECT name FROM datasets ORDER BY name") == [
        ("earliest_trade",), ("people",), ("trades",)]


def test_refusals_of_arguments_name_what_to_do(tmp_path, conf):
    one, two = write(tmp_path, "one.csv", "a,b\n1,2\n"), write(tmp_path, "two.csv", "a,b\n3,4\n")
    with pytest.raises(ConfigError, match="--table names one table"):
        load_csv(conf, [one, two], table="both")
    with pytest.raises(ConfigError, match="a merge needs a key"):
        load_csv(conf, [one], merge=True)
    with pytest.raises(ConfigError, match="no key column 'c'"):
        load_csv(conf, [one], key="c")
    with pytest.raises(ConfigError, match="no key column 'c'"):
        transform(conf, write(tmp_path, "q.sql", "SELECT 1 AS a"), "q", key="c")
    with pytest.raises(ConfigError, match="cannot read the SQL file"):
        transform(conf, tmp_path / "missing.sql", "q")
    with pytest.raises(ConfigError, match=r"no file has the columns \['c'\]"):
        load_csv(conf, [one, two], declared={"a": "text", "c": "integer"})
    with pytest.raises(ConfigError, match="bad column declaration"):
        load_csv(conf, [one], declared={"c": "integer"})


def test_several_files_take_the_declarations_that_name_their_columns(tmp_path, conf, pg_url):
    one = write(tmp_path, "one.csv", "code,n\n007,1\n")
    two = write(tmp_path, "two.csv", "other,n\n5,2\n")
    load_csv(conf, [one, two], declared={"code": "text", "n": "numeric"})
    assert column_types(pg_url, "datasets", "one") == {"_row": "bigint", "code": "text", "n": "numeric"}
    assert column_types(pg_url, "datasets", "two") == {"_row": "bigint", "other": "bigint", "n": "numeric"}
    assert rows(pg_url, "SELECT code FROM datasets.one") == [("007",)]


def test_hostile_values_are_bad_lines_or_kept_never_an_unexpected_error(tmp_path, conf, pg_url):
    """Issue 21, items 6 and 9: a NUL byte, 1e999999, 5,000 digits, a zero-padded code."""
    huge = "9" * 5000
    path = write(tmp_path, "hostile.csv", "id,code,amount,far,note\n"
                 f"1,00123,{huge},1e999999,plain\n"
                 "2,00045,1.5,2,with a \x00 byte\n"
                 "3,7,-2,3,fine\n")
    load, = load_csv(conf, [path]).files
    assert (load.rows, load.bad_lines) == (2, 1)
    assert column_types(pg_url, "datasets", "hostile") == {
        "_row": "bigint", "id": "bigint", "code": "text", "amount": "numeric", "far": "text", "note": "text"}
    assert rows(pg_url, "SELECT code, amount::text, far FROM datasets.hostile ORDER BY _row") == [
        ("00123", huge, "1e999999"), ("7", "-2", "3")]
    assert rows(pg_url, "SELECT line, column_name, reason FROM csv_rejects WHERE dataset = 'hostile'") == [
        (3, "note", "'with a \\x00 byte' holds a NUL byte, which PostgreSQL's text cannot hold (text)")]
    # Declared, a value past numeric's range is a bad line too.
    load, = load_csv(conf, [path], declared={"far": "numeric", "note": "text"}).files
    assert (load.rows, load.bad_lines) == (1, 2)
    assert rows(pg_url, "SELECT line, column_name FROM csv_rejects WHERE dataset = 'hostile' ORDER BY line") == [
        (2, "far"), (3, "note")]
    # Declared integer, a zero-padded value is the number the user asked for.
    load_csv(conf, [path], declared={"code": "integer"})
    assert rows(pg_url, "SELECT code FROM datasets.hostile ORDER BY _row") == [(123,), (7,)]


def test_a_header_of_many_columns_is_checked_in_linear_time_against_postgresqls_limit(tmp_path, conf, capsys,
                                                                                      pg_url):
    """Issue 21, item 5: 40,000 names took 18 s, 1,000,000 never finished (quadratic duplicate check)."""
    import time
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"c{i}" for i in range(1_000_000)) + "\n" + ",".join("1" * 1_000_000) + "\n")
    started = time.perf_counter()
    assert cli.main(["load-csv", str(wide), "--pg-url", pg_url]) == 1
    assert time.perf_counter() - started < 30
    err = capsys.readouterr().err
    assert err.startswith(f"FAILED: the CSV file {wide} has 1,000,000 columns, a PostgreSQL table holds at most"
                          " 1,600 and gigsterpg adds one") and err.count("\n") == 1
    many = write(tmp_path, "many.csv", ",".join(f"c{i}" for i in range(1599)) + "\n" + ",".join(["x"] * 1599) + "\n")
    load, = load_csv(conf, [many]).files
    assert (load.rows, len(load.columns)) == (1, 1600)  # and _row
    write(tmp_path, "many.csv", ",".join(f"c{i}" for i in range(1599)) + "\n" + ",".join(["1"] * 1599) + "\n")
    with pytest.raises(SourceError, match="PostgreSQL refused a row .* row is too big"):
        load_csv(conf, [many])  # 1,599 bigints: 12.8 kB, past PostgreSQL's 8 kB page
    write(tmp_path, "many.csv", ",".join(f"c{i}" for i in range(1600)) + "\n" + ",".join(["1"] * 1600) + "\n")
    with pytest.raises(SourceError, match="has 1,600 columns"):
        load_csv(conf, [many])
    names = ["a" * 63 + "x", "a" * 63 + "y"]
    cut = write(tmp_path, "cut.csv", ",".join(names) + "\n1,2\n")
    with pytest.raises(ConfigError, match="same in their first 63 bytes"):
        load_csv(conf, [cut])
    with pytest.raises(ConfigError, match="one character"):
        load_csv(conf, [cut], delimiter="")


def test_timestamps_with_slashes_dots_and_one_digit_hours(tmp_path, conf, pg_url):
    path = write(tmp_path, "stamps.csv", "id,at\n1,9/26/2022 9:05\n2,26.09.2022 23:59:59.5\n3,2022-09-26\n")
    load_csv(conf, [path])
    assert rows(pg_url, "SELECT at FROM datasets.stamps ORDER BY id") == [
        (datetime.datetime(2022, 9, 26, 9, 5),), (datetime.datetime(2022, 9, 26, 23, 59, 59, 500000),),
        (datetime.datetime(2022, 9, 26),)]
    write(tmp_path, "stamps.csv", "id,at\n1,26/9/2022 9:05\n2,1/2/2022 00:00\n")
    load_csv(conf, [path], day_first=True)
    assert rows(pg_url, "SELECT at FROM datasets.stamps ORDER BY id") == [
        (datetime.datetime(2022, 9, 26, 9, 5),), (datetime.datetime(2022, 2, 1),)]


def test_one_read_widens_a_column_in_place_when_a_later_batch_needs_it(tmp_path, conf, pg_url, monkeypatch, caplog):
    from gigsterpg.lib.files import csvsource
    monkeypatch.setattr(csvsource, "BLOCK", 64)  # a few records a batch: the first batches decide the table's types
    lines = ["n,d,e,t"] + [f"{i},2022-01-{i % 28 + 1:02},,x{i}" for i in range(40)]
    lines += ["1.25,2022-03-04 05:06:07,7,y", "41,2022-01-05,,z"]
    path = write(tmp_path, "widen.csv", "\n".join(lines) + "\n")
    caplog.set_level("INFO", "gigsterpg.lib.datasets.load")
    load, = load_csv(conf, [path]).files
    assert (load.rows, load.bad_lines) == (42, 0)
    assert "read again" not in caplog.text  # every change was made in place (ALTER ... TYPE), in one read
    assert column_types(pg_url, "datasets", "widen") == {
        "_row": "bigint", "n": "numeric", "d": "timestamp without time zone", "e": "bigint", "t": "text"}
    dialect = csvsource.detect_dialect(path)
    assert {c["name"]: c["kind"] for c in load.columns if c["name"] != "_row"} == \
        {c.name: c.kind for c in csvsource.infer_columns(path, dialect)}  # what the whole file says, as before
    got = rows(pg_url, "SELECT n, d, e, t FROM datasets.widen ORDER BY _row")
    assert got[0] == (Decimal(0), datetime.datetime(2022, 1, 1), None, "x0")
    assert got[40:] == [(Decimal("1.25"), datetime.datetime(2022, 3, 4, 5, 6, 7), 7, "y"),
                        (Decimal(41), datetime.datetime(2022, 1, 5), None, "z")]
    assert [r[0] for r in rows(pg_url, "SELECT _row FROM datasets.widen ORDER BY _row")] == list(range(1, 43))


def test_a_kind_widening_into_text_after_rows_were_written_keeps_every_value_as_written(
        tmp_path, conf, pg_url, monkeypatch, caplog):
    from gigsterpg.lib.files import csvsource
    monkeypatch.setattr(csvsource, "BLOCK", 64)
    lines = ["c,u,b", "+5,9/26/2022,yes", "1,2,3,4"] + [f"{i},1/{i % 28 + 1}/2022,no" for i in range(40)]
    lines += ["N/A,soon,maybe"]
    path = write(tmp_path, "later.csv", "\n".join(lines) + "\n")
    caplog.set_level("INFO", "gigsterpg.lib.datasets.load")
    load, = load_csv(conf, [path]).files
    assert "read again" in caplog.text
    assert (load.rows, load.bad_lines) == (42, 1)
    assert column_types(pg_url, "datasets", "later") == {"_row": "bigint", "c": "text", "u": "text", "b": "text"}
    got = rows(pg_url, "SELECT c, u, b FROM datasets.later ORDER BY _row")
    assert got[0] == ("+5", "9/26/2022", "yes") and got[-1] == ("N/A", "soon", "maybe") and len(got) == 42
    # the bad line is recorded once, not once per read
    assert rows(pg_url, "SELECT line, column_name FROM csv_rejects WHERE dataset = 'later'") == [(3, None)]


def test_a_header_alone_and_misfits_after_the_last_good_batch(tmp_path, conf, pg_url, monkeypatch):
    from gigsterpg.lib.files import csvsource
    load, = load_csv(conf, [write(tmp_path, "bare.csv", "a,b\n")]).files
    assert (load.rows, load.bad_lines) == (0, 0)
    assert column_types(pg_url, "datasets", "bare") == {"_row": "bigint", "a": "text", "b": "text"}
    monkeypatch.setattr(csvsource, "BLOCK", 64)
    lines = ["a,b"] + [f"{i},{i}" for i in range(30)] + ["x,y,z"] * 12
    load, = load_csv(conf, [write(tmp_path, "tail.csv", "\n".join(lines) + "\n")]).files
    assert (load.rows, load.bad_lines) == (30, 12)
    assert [r[0] for r in rows(pg_url, "SELECT line FROM csv_rejects WHERE dataset = 'tail' ORDER BY line")] == \
        list(range(32, 44))
    assert rows(pg_url, "SELECT max(_row), sum(b) FROM datasets.tail") == [(30, sum(range(30)))]
