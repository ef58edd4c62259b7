"""Batch inference (csvsource.infer_columns on Arrow batches): the kind a column gets when the value that
decides it comes after many batches that all kept the column's kind, each case worked out by hand."""
import pytest

from gigsterpg.lib.files import csvsource
from gigsterpg.lib.files.csvsource import detect_dialect, infer_columns


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
    monkeypatch.setattr(csvsource, "BLOCK", 48)  # Arrow parses 48 bytes at a time: many batches from a short file


def infer(tmp_path, values, day_first=False, filler="x"):
    """The inferred column of ``values`` (one a line), beside a text column so the file has a header."""
    path = tmp_path / "one.csv"
    lines = ["value,other"] + [f"{value},{filler}" for value in values]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return infer_columns(path, detect_dialect(path, day_first=day_first))[0]


ints = [str(i) for i in range(-10, 10)]
us_days = [f"{i % 12 + 1}/{i % 28 + 1}/2022" for i in range(20)]
stamps = [f"2022-{i % 12 + 1:02}-{i % 28 + 1:02} {i % 24:02}:{i % 60:02}:{i % 60:02}" for i in range(20)]


@pytest.mark.parametrize("values, kind", [
    (ints, "integer"),
    (ints + ["9223372036854775807"], "integer"),  # 19 digits, the largest bigint
    (ints + ["9223372036854775808"], "numeric"),  # one more: numeric
    (ints + ["-9223372036854775809"], "numeric"),
    (ints + ["1.5"], "numeric"),
    (ints + ["1e5", "2"], "numeric"),
    (ints + ["abc"], "text"),
    (ints + ['"1\n2"'], "text"),  # a quoted value across two lines is no integer
    (["", ""] * 5 + ints, "integer"),  # batches of empty values first
    (["\u0661\u0662", "\u0663"] * 4, "text"),  # Arabic-Indic digits: PostgreSQL reads no such integer
    (ints + ["00123"], "text"),  # a zero-padded code
    (ints + ["0", "-0", "+0"], "integer"),
    (["0.5", "1.25"] * 3 + ["007.5"], "text"),
    (ints + ["1" * 5000], "numeric"),  # 5,000 digits: exact in PostgreSQL's numeric
    (ints + ["1" * 6001], "text"),
    (["1.5", "2"] * 3 + ["1e999999"], "text"),  # past numeric's range: kept as written
    (["1.5", "2"] * 3 + ["1e9999"], "numeric"),
    (["1.5", "2"] * 5 + [".5", "-3.25e-2"], "numeric"),
    (["1.5", "2"] * 5 + ["1.2.3"], "text"),
    (["true", "No", "Y", "f", "TRUE", "yes"] * 3, "boolean"),
    (["true", "No", "Y", "f"] * 3 + ["ye\u017f"], "text"),  # long s: lower() keeps it, so no "yes"
    (["true", "No"] * 5 + ["1"], "text"),
    (us_days, "date"),
    (us_days + ["2/30/2022"], "text"),  # the form of a date, but no day
    (us_days + ["13/1/2022"], "text"),  # month first: no month 13
    (us_days + ["2022-09-26", "26.09.2022"], "date"),
    (us_days + ["29.02.2023"], "text"),
    (us_days + ["2022-09-26 10:00:00"], "timestamp"),
    (stamps, "timestamp"),
    (stamps + ["2022-03-01"], "timestamp"),  # a date is midnight
    (stamps + ["2022-02-30 10:00:00"], "text"),
    (stamps + ["2022-02-03 24:00:00"], "text"),
    (stamps + ["0000-02-03 10:00:00"], "text"),  # no year 0
    (stamps + ["2022-03-01 10:00:00+02:00"], "text"),  # offsets on some values only
    (stamps + ["2022-03-01T10:00:00.123456", "9/26/2022 10:05"], "timestamp"),
    (["2022-03-01 10:00:00+02:00", "2022-03-02T10:00:00Z"] * 5, "timestamp"),
])
def test_the_deciding_value_after_many_batches(tmp_path, values, kind):
    assert infer(tmp_path, values).kind == kind


def test_day_first_reads_slashes_the_other_way_in_every_batch(tmp_path):
    days = [f"{i % 28 + 1}/{i % 12 + 1}/2022" for i in range(20)]  # 13/1/2022 is January 13
    assert infer(tmp_path, days, day_first=True).kind == "date"
    assert infer(tmp_path, days, day_first=False).kind == "text"


def test_offsets_everywhere_make_timestamptz(tmp_path):
    column = infer(tmp_path, ["2022-03-01 10:00:00+02:00", "2022-03-02T10:00:00Z", ""] * 5)
    assert (column.kind, column.timezone, column.pg_type) == ("timestamp", True, "timestamptz")
    column = infer(tmp_path, stamps)
    assert (column.kind, column.timezone, column.pg_type) == ("timestamp", False, "timestamp")


def test_dates_are_checked_for_existence_in_every_batch(tmp_path):
    days = [f"2022-{m:02}-{d:02}" for m in range(1, 13) for d in (1, 15, 28)]
    assert infer(tmp_path, days).kind == "date"
    assert infer(tmp_path, days + ["2022-04-31"]).kind == "text"
    assert infer(tmp_path, stamps + ["2022-04-31 10:00:00"]).kind == "text"


def test_misfit_lines_are_counted_across_batches(tmp_path):
    path = tmp_path / "misfits.csv"
    path.write_text("a,b\n1,2\n3\n\n4,5,6\n7,8\n9,\"broken\"x\n10,11\n12,13\n14,15\n", encoding="utf-8")
    counts: dict = {}
    columns = infer_columns(path, detect_dialect(path), counts=counts)
    # records of width 2: 1,2 / 7,8 / 9,"broken"x (Arrow reads brokenx) / 10,11 / 12,13 / 14,15;
    # misfits: "3", "4,5,6"
    assert counts == {"records": 6, "misfits": 2, "unclosed": 0}
    assert [column.kind for column in columns] == ["integer", "text"]


def test_a_header_only_file_has_text_columns(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("a,b\n", encoding="utf-8")
    counts: dict = {}
    assert [c.kind for c in infer_columns(path, detect_dialect(path), counts=counts)] == ["text", "text"]
    assert counts == {"records": 0, "misfits": 0, "unclosed": 0}


def test_small_batches_infer_what_one_batch_infers(tmp_path, monkeypatch):
    """Random columns from a pool of near misses: many small Arrow batches, then the file as one batch."""
    import random
    pool = ["1", "-22", "+3", "007", "9223372036854775807", "9223372036854775808", "1.5", ".5", "1e3", "1e", "",
            "true", "T", "no", "N", "yes", "2022-09-26", "9/26/2022", "26/9/2022", "26.09.2022", "2/29/2024",
            "2/29/2023", "2022-09-26 10:00:00", "2022-09-26T23:59:59.5", "2022-09-26 24:00", "9/26/2022 10:05",
            "2022-09-26 10:00:00+02:00", "2022-09-26T10:00Z", "x"]
    rng = random.Random(15)
    path = tmp_path / "mixed.csv"
    for round_ in range(40):
        # each column draws from a few values of the pool, mostly of one kind
        picks = [rng.sample(pool, rng.randint(1, 3)) for _ in range(4)]
        lines = ["a,b,c,d"] + [",".join(rng.choice(p) for p in picks) for _ in range(rng.randint(1, 30))]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        for day_first in (False, True):
            dialect = detect_dialect(path, day_first=day_first)
            with_batches = infer_columns(path, dialect)
            with monkeypatch.context() as patch:
                patch.setattr(csvsource, "BLOCK", 1 << 20)
                alone = infer_columns(path, dialect)
            assert with_batches == alone, (round_, lines)


def test_a_file_that_stops_being_utf8_after_the_sample_fails_inference(tmp_path):
    path = tmp_path / "late.csv"
    path.write_bytes(b"a,b\n" + b"1,2\n" * 20000 + b"3,\xe9\n")  # 80 KB: past the 64 KiB sample
    dialect = detect_dialect(path)
    with pytest.raises(csvsource.SourceError, match="is not utf-8 after line"):
        infer_columns(path, dialect)


def test_a_record_longer_than_a_block_restarts_the_pass_and_loses_or_repeats_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(csvsource, "BLOCK", 64)
    path = tmp_path / "long.csv"
    lines = ["a,b", "1,x", "2", "3,y", "4,y,z"] + [f"{i},{'w' * 300 if i == 9 else 'v'}" for i in range(5, 12)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    counts: dict = {}
    dialect = detect_dialect(path)
    columns = infer_columns(path, dialect, counts=counts)
    assert counts == {"records": 9, "misfits": 2, "unclosed": 0}
    bad = []
    rows = csvsource.records(csvsource.read_batches(path, dialect, columns, bad.append))
    assert [row[0] for row in rows] == ["1", "3"] + [str(i) for i in range(5, 12)]
    assert [(b.line, b.column) for b in bad] == [(3, None), (5, None)]


def test_the_checks_without_regular_expressions_say_only_what_the_expressions_say():
    """The shortcuts on every batch (``_plain_*``, ``_booleans``, ``_has_nul``) never call a value fit that the
    regular expressions refuse; each value alone, then all together."""
    import pyarrow as pa

    integers = ["0", "7", "-3", "+5", "00", "007", "0x1", "1 ", " 1", "1.0", "\u0661", "123456789012345678",
                "1234567890123456789", "9223372036854775808", "١٢", "1e3", "٣"]
    numerics = integers + ["0.5", ".5", "5.", ".", "0.", "00.5", "01", "1.2.3", "1..2", "-0.5", "1e5", "0.05",
                           "1" * 6000, "1" * 6001, "1" * 5999 + ".", "١.٢", "1,5"]
    stamps = ["2022-09-26 14:05:06", "2022-09-26T14:05:06", "2022-02-29 00:00:00", "2024-02-29 00:00:00",
              "1900-02-29 00:00:00", "2000-02-29 00:00:00", "0000-01-01 00:00:00", "0001-01-01 00:00:00",
              "2022-13-01 00:00:00", "2022-00-10 00:00:00", "2022-04-31 00:00:00", "2022-04-30 24:00:00",
              "2022-04-30 23:60:00", "2022-04-30 23:59:60", "2022-04-30 23:59:59", "2022-04-30x23:59:59",
              "2022/04/30 23:59:59", "2022-04-30 23:59+02", "2022-4-30 23:59:599", "2022-04-30 23:5:59 ",
              "9999-12-31 23:59:59", "2022-09-26 14:05", "2022-09-26T14:05:06Z", "２022-09-26 14:05:06"]
    booleans = ["true", "TRUE", "True", "tRuE", "t", "T", "yes", "Y", "no", "N", "f", "false", "ſ", "truе", "tru",
                "1", "0", "on", "off", " t", "yes "]
    texts = ["plain", "", "with\x00nul", "é"]
    for values, plain, regex in (
            (integers, csvsource._plain_integers, lambda v: csvsource._integers(v)[1]),
            (numerics, csvsource._plain_numerics, lambda v: csvsource._numerics(v)[1]),
            (stamps, csvsource._plain_stamps, lambda v: csvsource._stamps(v, False)[1])):
        for value in values:
            array = pa.array([value], pa.string())
            if plain(array):
                assert csvsource._all(regex(array)), value
        fits = [value for value in values if csvsource._all(regex(pa.array([value], pa.string())))]
        assert plain(pa.array(values, pa.string())) is False
        assert any(plain(pa.array([value], pa.string())) for value in fits)
    assert [value for value in stamps if csvsource._plain_stamps(pa.array([value]))] == [
        "2022-09-26 14:05:06", "2022-09-26T14:05:06", "2024-02-29 00:00:00", "2000-02-29 00:00:00",
        "0001-01-01 00:00:00", "2022-04-30 23:59:59", "9999-12-31 23:59:59"]
    assert csvsource._plain_integers(pa.array(["0", "12", "123456789012345678"]))
    assert csvsource._plain_numerics(pa.array(["0.5", ".5", "5.", "0", "12.75", "0.05"]))
    by_regex = csvsource._match(pa.array(booleans), csvsource._BOOLEAN).to_pylist()
    assert csvsource._booleans(pa.array(booleans))[1].to_pylist() == by_regex
    array = pa.array(texts + [None])
    assert csvsource._texts(array)[1].to_pylist() == [True, True, False, True, None]  # NULL: convert's to judge
    assert csvsource._texts(array.slice(3))[1].to_pylist() == [True, True]
    assert csvsource._texts(pa.array(["a", "b"]).slice(1))[1].to_pylist() == [True]


@pytest.mark.parametrize("day_first", [False, True])
def test_the_one_read_converts_each_batch_as_the_two_reads_do(tmp_path, day_first):
    """``stream`` reuses the check's work (dates made ISO once, plain stamps as they are): its rows are those of
    ``infer_columns`` + ``read_batches``, batch after batch, NULLs and a timestamp column that widens included."""
    import pyarrow as pa

    from gigsterpg.lib.files import pgbinary
    lines = ["day,at,mixed,other"]
    for i in range(300):
        month, day = i % 12 + 1, i % 28 + 1
        day = (f"{day}/{month}/2022" if day_first else f"{month}/{day}/2022") if i % 7 else ""
        at = f"2022-{i % 12 + 1:02}-{i % 28 + 1:02}{'T' if i % 2 else ' '}{i % 24:02}:{i % 60:02}:{i % 59:02}"
        mixed = at if i < 200 else f"2022-03-{i % 28 + 1:02}"  # a date among stamps: midnight, a batch not plain
        lines.append(f"{day},{at if i % 5 else ''},{mixed},x{i}")
    path = tmp_path / "dates.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dialect = detect_dialect(path, day_first=day_first)
    streamed = [item for item in csvsource.stream(path, dialect, None, lambda bad: pytest.fail(str(bad)))
                if isinstance(item, pa.RecordBatch)]
    columns = infer_columns(path, dialect)
    assert [column.kind for column in columns] == ["date", "timestamp", "timestamp", "text"]
    read = list(csvsource.read_batches(path, dialect, columns, lambda bad: pytest.fail(str(bad))))
    assert len(streamed) > 10
    types = [column.pg_type for column in columns]
    # the same values for PostgreSQL (a date among stamps may be spelt with its midnight by one and not the other)
    assert b"".join(pgbinary.encode(batch, types) for batch in streamed if batch.num_rows) == \
        b"".join(pgbinary.encode(batch, types) for batch in read if batch.num_rows)
    assert csvsource.records(iter(streamed))[12][0] == csvsource.records(iter(read))[12][0] == "2022-01-13"
