"""The shared CSV reader (lib.files.csvsource, on Arrow) and the COPY helpers (pgcopy), on real files and a real
server: what a file's values become is read back from PostgreSQL."""
import datetime
import io
from decimal import Decimal

import psycopg
import pytest

from gigsterpg.exc import ConfigError, SourceError
from gigsterpg.lib.files import csvsource, pgcopy
from gigsterpg.lib.files.csvsource import Column, Dialect, detect_dialect, infer_columns, read_batches


def read_rows(path, dialect, columns, url, bad=None):
    """The file's rows as PostgreSQL stores them (COPY of read_batches into a fresh table), in line order."""
    bad = [] if bad is None else bad
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS rows_read")
        pgcopy.create_table(cursor, "rows_read", pgcopy.pg_columns(columns) + [("_ord", "bigserial")])
        batches = read_batches(path, dialect, columns, bad.append)
        pgcopy.copy_batches(cursor, "rows_read", pgcopy.pg_columns(columns), batches)
        cursor.execute("SELECT * FROM rows_read ORDER BY _ord")
        return [row[:-1] for row in cursor.fetchall()]


def write(tmp_path, text: str, name="data.csv", encoding="utf-8", bom=False) -> str:
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding))
    return str(path)


def kinds(columns):
    return {column.name: column.kind for column in columns}


def test_each_kind_and_each_date_form_is_inferred(tmp_path, empty_pg_url):
    path = write(tmp_path, "\n".join([
        "id,price,flag,iso,us,dotted,stamp,zoned,note,empty,big",
        "1,2.50,true,2022-09-26,9/26/2022,26.09.2022,2022-09-26 14:05:06,2022-09-26T14:05:06Z,hello,,"
        "9223372036854775808",
        "-7,3,no,2022-01-02,1/2/2022,02.01.2022,2022-01-02T00:00:00.5,2022-01-02 00:00:00+02:00,x,,1",
    ]) + "\n")
    dialect = detect_dialect(path)
    columns = infer_columns(path, dialect)
    assert kinds(columns) == {"id": "integer", "price": "numeric", "flag": "boolean", "iso": "date", "us": "date",
                              "dotted": "date", "stamp": "timestamp", "zoned": "timestamp", "note": "text",
                              "empty": "text", "big": "numeric"}
    assert [column.pg_type for column in columns][6:8] == ["timestamp", "timestamptz"]
    rows = read_rows(path, dialect, columns, empty_pg_url)
    utc = datetime.timezone.utc
    assert rows[0] == (1, Decimal("2.50"), True, datetime.date(2022, 9, 26), datetime.date(2022, 9, 26),
                       datetime.date(2022, 9, 26), datetime.datetime(2022, 9, 26, 14, 5, 6),
                       datetime.datetime(2022, 9, 26, 14, 5, 6, tzinfo=utc), "hello", None,
                       Decimal("9223372036854775808"))
    assert rows[1][1:7] == (Decimal("3"), False, datetime.date(2022, 1, 2), datetime.date(2022, 1, 2),
                            datetime.date(2022, 1, 2), datetime.datetime(2022, 1, 2, 0, 0, 0, 500000))
    assert rows[1][7] == datetime.datetime(2022, 1, 1, 22, 0, tzinfo=utc)


def test_day_first_reads_slashes_the_other_way(tmp_path, empty_pg_url):
    path = write(tmp_path, "d\n1/2/2022\n13/2/2022\n")
    assert kinds(infer_columns(path, detect_dialect(path))) == {"d": "text"}  # 13 is no month
    dialect = detect_dialect(path, day_first=True)
    columns = infer_columns(path, dialect)
    assert kinds(columns) == {"d": "date"}
    assert read_rows(path, dialect, columns, empty_pg_url) == [(datetime.date(2022, 2, 1),),
                                                               (datetime.date(2022, 2, 13),)]


def test_kinds_widen_over_the_whole_file(tmp_path):
    lines = ["a,b,c,d"] + ["1,2022-01-01,1,true"] * 5000 + ["1.5,2022-01-01 10:00,x,1"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert kinds(infer_columns(path, detect_dialect(path))) == {"a": "numeric", "b": "timestamp", "c": "text",
                                                                "d": "text"}


def test_bom_semicolons_quotes_and_newlines(tmp_path, empty_pg_url):
    path = write(tmp_path, 'name;note;n\r\n"Café; ""quoted""";"two\nlines";1\r\nplain;;2\r\n', bom=True)
    dialect = detect_dialect(path)
    assert (dialect.encoding, dialect.delimiter) == ("utf-8-sig", ";")
    columns = infer_columns(path, dialect)
    assert [c.name for c in columns] == ["name", "note", "n"]
    assert read_rows(path, dialect, columns, empty_pg_url) == [('Café; "quoted"', "two\nlines", 1),
                                                               ("plain", None, 2)]


@pytest.mark.parametrize("delimiter", ["\t", "|", ","])
def test_other_delimiters(tmp_path, delimiter):
    path = write(tmp_path, delimiter.join(["a", "b", "c"]) + "\n" + delimiter.join(["1", "x,y" if delimiter != ","
                                                                                    else "xy", "3"]) + "\n")
    assert detect_dialect(path).delimiter == delimiter


def test_bad_lines_are_recorded_with_line_column_and_reason(tmp_path, empty_pg_url):
    path = write(tmp_path, "id,qty,day\n1,2,2022-01-01\n2,3\n3,4,2022-01-02,extra\n4,lots,2022-01-03\n"
                           '5,"multi\nline",2022-01-04\n6,7,2022-02-30\n\n7,8,2022-01-05\n8,9,2022-01-06\n')
    dialect = detect_dialect(path)
    columns = [Column("id", "integer"), Column("qty", "integer"), Column("day", "date")]
    assert infer_columns(path, dialect, declared={"id": "integer", "qty": "integer", "day": "date"}) == columns
    bad = []
    good = read_rows(path, dialect, columns, empty_pg_url, bad)
    assert [(b.line, b.column) for b in bad] == [(3, None), (4, None), (5, "qty"), (6, "qty"), (8, "day")]
    assert "2 fields, the header has 3" in bad[0].reason and "4 fields" in bad[1].reason
    assert "'lots' is not an integer" in bad[2].reason and bad[4].reason.startswith("'2022-02-30' is not a date")
    assert all(b.file == path for b in bad) and bad[2].text == "4,lots,2022-01-03"
    assert good == [(1, 2, datetime.date(2022, 1, 1)), (7, 8, datetime.date(2022, 1, 5)),
                    (8, 9, datetime.date(2022, 1, 6))]


def test_a_bad_line_in_a_file_of_one_line_records_has_its_own_number(tmp_path, empty_pg_url):
    path = write(tmp_path, "id,qty\n" + "".join(f"{i},{i if i != 5000 else 'x'}\n" for i in range(10000)) + "1\n")
    bad = []
    read_rows(path, detect_dialect(path), [Column("id", "integer"), Column("qty", "integer")], empty_pg_url, bad)
    assert [(b.line, b.column) for b in bad] == [(5002, "qty"), (10002, None)]


def test_a_quote_never_closed_is_a_bad_line_not_the_rest_of_the_file(tmp_path, empty_pg_url):
    path = write(tmp_path, 'a,b\n1,ok\n2,"open\n3,x\n4,y\n')
    dialect = detect_dialect(path)
    columns = [Column("a", "integer"), Column("b", "text")]
    bad = []
    assert read_rows(path, dialect, columns, empty_pg_url, bad) == [(1, "ok")]
    assert [(b.line, b.column) for b in bad] == [(3, None)] and "never closed" in bad[0].reason
    # a closed quoted value over two lines at the end of a file is no such thing
    path = write(tmp_path, 'a,b\n1,ok\n2,"two\nlines"\n')
    assert read_rows(path, dialect, columns, empty_pg_url, bad) == [(1, "ok"), (2, "two\nlines")]
    path = write(tmp_path, 'a,b,c\n1,ok,x\n2,"two\nlines",y\n')
    assert read_rows(path, dialect, [*columns, Column("c", "text")], empty_pg_url, bad)[-1] == (2, "two\nlines", "y")
    assert len(bad) == 1


def test_a_stray_quote_is_read_as_arrow_reads_it(tmp_path, empty_pg_url):
    path = write(tmp_path, 'a,b\n1,"x"y\n2,ok\n')
    dialect = detect_dialect(path)
    bad = []
    assert read_rows(path, dialect, [Column("a", "integer"), Column("b", "text")], empty_pg_url, bad) == [
        (1, "xy"), (2, "ok")]
    assert bad == []


def test_header_is_required_and_declarations_checked(tmp_path):
    with pytest.raises(SourceError, match="no header"):
        detect_dialect(write(tmp_path, "1,2022-01-01\n2,2022-01-02\n"))
    with pytest.raises(SourceError, match="duplicate"):
        detect_dialect(write(tmp_path, "a,a\n1,2\n"))
    with pytest.raises(SourceError, match="empty"):
        detect_dialect(write(tmp_path, "\n"))
    with pytest.raises(SourceError, match="cannot read"):
        detect_dialect(tmp_path / "missing.csv")
    with pytest.raises(SourceError, match="not utf-8"):
        detect_dialect(write(tmp_path, "a,b\n\xe9,1\n", encoding="latin-1"))
    path = write(tmp_path, "a,b\n1,2\n")
    with pytest.raises(ConfigError, match="unknown columns"):
        infer_columns(path, detect_dialect(path), declared={"c": "integer"})
    with pytest.raises(ConfigError, match="unknown kinds"):
        infer_columns(path, detect_dialect(path), declared={"a": "money"})
    with pytest.raises(SourceError, match="header of .* changed"):
        list(read_batches(path, Dialect(), [Column("x", "text")], print))


def test_copy_batches_loads_typed_rows_and_sets_bad_lines_aside(tmp_path, empty_pg_url):
    path = write(tmp_path, "id,price,day,at,ok,note\n1,9.99,9/26/2022,2022-09-26 10:00,yes,\"a,b\"\n"
                           "2,x,1/1/2022,2022-01-01 00:00,no,\n3,0.1,12/31/2021,2021-12-31 23:59:59,t,é\n")
    dialect = detect_dialect(path)
    columns = infer_columns(path, dialect, declared={"price": "numeric"})
    bad = []
    with psycopg.connect(empty_pg_url) as connection, connection.cursor() as cursor:
        pgcopy.create_table(cursor, "details", pgcopy.pg_columns(columns))
        count = pgcopy.copy_batches(cursor, "details", pgcopy.pg_columns(columns),
                                    read_batches(path, dialect, columns, bad.append))
        cursor.execute("SELECT id, price, day, at, ok, note FROM details ORDER BY id")
        stored = cursor.fetchall()
        cursor.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'details'::regclass"
                       " AND attnum > 0 ORDER BY attnum")
        types = [row[0] for row in cursor.fetchall()]
    assert count.rows == 2 and len(bad) == 1 and bad[0].line == 3 and bad[0].column == "price"
    assert types == ["bigint", "numeric", "date", "timestamp without time zone", "boolean", "text"]
    assert stored == [(1, Decimal("9.99"), datetime.date(2022, 9, 26), datetime.datetime(2022, 9, 26, 10), True, "a,b"),
                      (3, Decimal("0.1"), datetime.date(2021, 12, 31), datetime.datetime(2021, 12, 31, 23, 59, 59),
                       True, "é")]


def test_copy_out_and_in_round_trip_a_binary_file(empty_pg_url):
    with psycopg.connect(empty_pg_url) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE s (a int, b text, c bytea);"
                       " INSERT INTO s VALUES (1, 'x', '\\x00ff'), (2, NULL, '')")
        cursor.execute("CREATE TABLE s2 (LIKE s)")
        buffer = io.BytesIO()
        out = pgcopy.copy_out(cursor, psycopg.sql.SQL("SELECT * FROM s ORDER BY a"), buffer)
        buffer.seek(0)
        back = pgcopy.copy_in(cursor, "s2", ["a", "b", "c"], buffer)
        cursor.execute("SELECT * FROM s2 ORDER BY a")
        assert cursor.fetchall() == [(1, "x", b"\x00\xff"), (2, None, b"")]
    assert out == back and out.bytes == len(buffer.getvalue())


def test_binary_copy_stores_what_postgresql_reads_from_the_text(tmp_path, empty_pg_url):
    """Each kind's binary encoding (pgbinary) against PostgreSQL's own reading of the same strings."""
    import random

    import pyarrow as pa

    from gigsterpg.lib.files import pgbinary
    rng = random.Random(21)
    numbers = ["0", "-0", "1", "-3", "2.50", "-3395.63", ".5", "-.5", "+7", "1.", "0.0001", "123456789012.3456",
               "9999999999999999", "-9999999999999999", "99999999999999999", "1e3", "-2.5E-7", "1" * 300,
               "0." + "0" * 40 + "1", "12345678901234567890.123456789", None]
    numbers += [f"{rng.choice('-+') if rng.random() < 0.3 else ''}{rng.randint(0, 10 ** rng.randint(0, 16))}"
                f"{'.' + str(rng.randint(0, 10 ** rng.randint(0, 8))) if rng.random() < 0.7 else ''}"
                for _ in range(500)]
    size = len(numbers)
    cycle = (lambda values: (values * (size // len(values) + 1))[:size])
    columns = [("n", "numeric"), ("i", "bigint"), ("b", "boolean"), ("d", "date"), ("t", "timestamp"),
               ("z", "timestamptz"), ("s", "text")]
    data = {
        "n": numbers,
        "i": cycle(["0", "-9223372036854775808", "9223372036854775807", "+42", "007", None]),
        "b": cycle(["t", "TRUE", "y", "Yes", "f", "no", "N", "false", None]),
        "d": cycle(["2022-09-26", "0001-01-01", "1999-12-31", "2000-01-01", "9999-12-31", None]),
        "t": cycle(["2022-09-26T14:05:06.25", "2022-09-26 14:05", "1999-12-31T23:59:59.999999", "2022-03-01",
                    None]),
        "z": cycle(["2022-09-26T14:05:06+02:00", "2022-01-02 03:04:00Z", "2022-01-02T03:04:05-05:30", None]),
        "s": cycle(["", "é", "line\nbreak", 'quo"te', "x" * 5000, None]),
    }
    batch = pa.RecordBatch.from_pydict({name: pa.array(values, pa.string()) for name, values in data.items()})
    with psycopg.connect(empty_pg_url) as connection, connection.cursor() as cursor:
        for table in ("by_binary", "by_text"):
            pgcopy.create_table(cursor, table, columns + [("_ord", "bigserial")])
        names = ", ".join(name for name, _ in columns)
        with cursor.copy(f"COPY by_binary ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(pgbinary.HEADER + pgbinary.encode(batch, [kind for _, kind in columns]) + pgbinary.TRAILER)
        with cursor.copy(f"COPY by_text ({names}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(csvsource.write_batch(batch))
        cursor.execute(f"SELECT {names}, n::text FROM by_binary ORDER BY _ord")
        by_binary = cursor.fetchall()
        cursor.execute(f"SELECT {names}, n::text FROM by_text ORDER BY _ord")
        by_text = cursor.fetchall()
    assert len(by_binary) == size and by_binary == by_text
    assert by_binary[1][7] == "-0" or by_binary[1][7] == "0"
    assert by_binary[4][7] == "2.50" and by_binary[5][7] == "-3395.63" and by_binary[17][7] == "1" * 300


def test_extract_csv_counts_a_last_quote_never_closed_as_a_bad_line_not_a_row(tmp_path):
    from gigsterpg.lib.files import extract
    path = write(tmp_path, 'a,b\n1,ok\n2,"open\n3,x\n4,y\n', name="open.csv")
    done = extract.extract_csv(path, tmp_path / "root", datetime.date(2026, 12, 5))
    assert (done.rows, done.bad_lines) == (1, 1)
    bad = (tmp_path / "root/csv/2026-12-05/bad_lines.jsonl").read_text().splitlines()
    assert len(bad) == 1 and '"line": 3' in bad[0] and "never closed" in bad[0]
    # a quoted value over two lines that is closed is one row, and the file needs no second pass
    path = write(tmp_path, 'a,b\n1,ok\n2,"two\nlines"\n', name="closed.csv")
    done = extract.extract_csv(path, tmp_path / "root2", datetime.date(2026, 12, 5))
    assert (done.rows, done.bad_lines) == (2, 0)


def test_a_batch_arrow_cannot_cast_goes_on_as_csv_numbered_and_retyped_like_the_rest(empty_pg_url, monkeypatch):
    import pyarrow as pa

    from gigsterpg.lib.files import pgbinary
    encode = pgbinary.encode

    def failing(batch, types, numbered_from=None):
        if batch.column(0)[0].as_py() == "3":
            raise ValueError("bigint: cannot cast")  # as a value Arrow's cast refuses would
        return encode(batch, types, numbered_from)

    monkeypatch.setattr(pgbinary, "encode", failing)
    batch = (lambda *values: pa.RecordBatch.from_pydict({"n": pa.array(list(values), pa.string())}))
    items = [batch("1", "2"), csvsource.Retype((Column("n", "numeric"),), ("n",)), batch("3", "4.5"),
             batch("6", None)]
    with psycopg.connect(empty_pg_url) as connection, connection.cursor() as cursor:
        pgcopy.create_table(cursor, "falls_back", [("n", "bigint"), ("_row", "bigint")])
        count = pgcopy.copy_batches(cursor, "falls_back", [("n", "bigint")], items, numbered="_row",
                                    retype=lambda change: cursor.execute("ALTER TABLE falls_back ALTER n TYPE numeric"))
        cursor.execute("SELECT _row, n::text FROM falls_back ORDER BY _row")
        assert cursor.fetchall() == [(1, "1"), (2, "2"), (3, "3"), (4, "4.5"), (5, "6"), (6, None)]
    assert count.rows == 6
