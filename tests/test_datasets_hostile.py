"""Hostile and careless inputs to load-csv, transform and the read API: each loads right or fails in one line.

The names a user chooses (tables, columns, the SQL of a transform, a read's cursor) never make gigsterpg
drop what it did not make, run what is not one query that reads, or answer other rows than the table's.
"""
import psycopg
import pytest

from gigsterpg import cli
from gigsterpg.config import Settings
from gigsterpg.exc import ConfigError, GigsterPgError, SourceError
from gigsterpg.lib.datasets import tables
from gigsterpg.lib.datasets.load import load_csv
from gigsterpg.lib.datasets.transform import transform
from tests.figures import FIGURES
from tests.helpers import execute


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def rows(url: str, query: str, params=()):
    with psycopg.connect(url) as connection:
        return connection.execute(query, params).fetchall()


def table_exists(url: str, name: str) -> bool:
    return rows(url, "SELECT to_regclass(%s) IS NOT NULL", (name,))[0][0]


@pytest.fixture
def conf(pg_url):
    return Settings(pg_url=pg_url)


def one_line(err: GigsterPgError, *fragments: str) -> None:
    """The error is one line holding ``fragments``."""
    text = str(err)
    assert "\n" not in text, text
    for fragment in fragments:
        assert fragment in text, text
    FIGURES["hostile inputs tried: datasets"] += 1


def cli_fails(capsys, *args, fragments=(), code=None) -> str:
    """The CLI in-process ends non-zero with exactly one ``FAILED:`` line on stderr holding ``fragments``."""
    exit_code = cli.main(list(args))
    captured = capsys.readouterr()
    assert exit_code != 0 and (code is None or exit_code == code), captured
    failures = [line for line in captured.err.splitlines() if line.startswith("FAILED: ")]
    assert len(failures) == 1 and "Traceback" not in captured.err, captured.err
    for fragment in fragments:
        assert fragment in failures[0], failures[0]
    FIGURES["hostile inputs tried: datasets"] += 1
    return failures[0]


# -- working tables: only what gigsterpg made is ever dropped ---------------------------------------------------

def test_a_dataset_named_like_an_old_working_table_survives_the_load_of_its_namesake(tmp_path, conf, pg_url):
    precious = write(tmp_path, "precious.csv", "a\n1\n2\n")
    load_csv(conf, [precious], table="foo__new")
    load_csv(conf, [write(tmp_path, "t.csv", "b\nx\n")], table="foo")
    assert rows(pg_url, "SELECT a FROM datasets.foo__new ORDER BY _row") == [(1,), (2,)]
    execute(pg_url, "CREATE TABLE public.report__new (v text)", "INSERT INTO public.report__new VALUES ('mine')")
    load_csv(conf, [write(tmp_path, "report.csv", "num\n1\n")], schema="public", table="report")
    assert rows(pg_url, "SELECT v FROM public.report__new") == [("mine",)]
    execute(pg_url, "CREATE TABLE datasets.earliest__new (v text)")
    transform(conf, write(tmp_path, "q.sql", "SELECT 1 AS id"), "earliest")
    assert table_exists(pg_url, "datasets.earliest__new")


def test_a_table_squatting_on_a_working_name_is_refused_not_dropped(tmp_path, conf, pg_url):
    work = tables.work_name("datasets", "squat")
    assert len(work) <= 63 and tables.WORKING.search(work)
    execute(pg_url, "CREATE SCHEMA IF NOT EXISTS datasets",
            f'CREATE TABLE datasets."{work}" (v text)', f"INSERT INTO datasets.\"{work}\" VALUES ('kept')")
    with pytest.raises(SourceError) as err:
        load_csv(conf, [write(tmp_path, "squat.csv", "a\n1\n")])
    one_line(err.value, work, "gigsterpg did not make")
    with pytest.raises(SourceError) as err:
        transform(conf, write(tmp_path, "q.sql", "SELECT 1 AS id"), "squat")
    one_line(err.value, work)
    assert rows(pg_url, f'SELECT v FROM datasets."{work}"') == [("kept",)]
    # A user's table cannot take a working name through gigsterpg either.
    with pytest.raises(ConfigError) as err:
        load_csv(conf, [write(tmp_path, "x.csv", "a\n1\n")], table=work)
    one_line(err.value, "working tables")
    with pytest.raises(ConfigError) as err:
        transform(conf, write(tmp_path, "q.sql", "SELECT 1 AS id"), work)
    one_line(err.value, "working tables")


@pytest.mark.parametrize("length", [57, 58, 60, 63])
def test_long_table_names_load_again_and_again(tmp_path, conf, pg_url, length):
    long, twin = "t" * (length - 1) + "a", "t" * (length - 1) + "b"  # the same but for the last character
    path = write(tmp_path, "long.csv", "id,v\n1,x\n2,y\n")
    for _ in range(2):
        for name in (long, twin):
            load_csv(conf, [path], table=name)
            load_csv(conf, [path], table=name, key="id")
            load_csv(conf, [path], table=name, key="id", merge=True)
    sql = write(tmp_path, "q.sql", "SELECT id, v FROM " + long)
    for _ in range(2):
        transform(conf, sql, twin[:-1] + "c")
    for name in (long, twin, twin[:-1] + "c"):
        assert rows(pg_url, f'SELECT id, v FROM datasets."{name}" ORDER BY id') == [(1, "x"), (2, "y")]
        keys = rows(pg_url, "SELECT conname FROM pg_constraint WHERE contype = 'p'"
                            " AND conrelid = format('datasets.%%I', %s::text)::regclass", (name,))
        assert len(keys) == 1 and len(keys[0][0]) <= 63
    FIGURES["hostile inputs tried: datasets"] += 1
