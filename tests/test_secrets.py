"""No password of any connection string form in any output, record, page, log or answer (issue 21, items 1, 2).

First the masker alone, for every form libpq and pymongo accept (URLs of one host or several with secret
query options, libpq's key=value pairs quoted and escaped, each inside a longer message or a repr), by
example and by property; then real runs of ``export-orders`` and the other commands with such strings
against unreachable, refusing and real servers, everything they left behind searched for the password;
then the malformed URLs that must end in one line naming the setting.
"""
import json
import re
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings as hypothesis_settings, strategies as st
from psycopg.conninfo import conninfo_to_dict

from gigsterpg import config
from gigsterpg.api.app import create_app
from gigsterpg.config import Settings, mask_secrets, mask_secrets_in, remember_secrets
from tests.helpers import API_AUTH, API_TOKEN, assert_one_line_failure, run_cli, with_database

# Never given to load_settings in this process: the masker's rules must find it by its place alone.
RULES_SECRET = "Rules-0nly-pw"
SECRET = "Kn0wn-conninfo-pw"


def kv_quoted(password: str) -> str:
    """``password`` as a single-quoted libpq value (backslash before a quote or a backslash)."""
    return "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"


def kv_escaped(password: str) -> str:
    """``password`` as an unquoted libpq value: a backslash before every space, quote or backslash."""
    return "".join("\\" + char if char.isspace() or char in "\\'" else char for char in password)


@pytest.mark.parametrize("text, masked", [
    (f"host=db port=5432 user=u password={RULES_SECRET} dbname=x", "host=db port=5432 user=u password=*** dbname=x"),
    (f"host=db password='a b\\'c{RULES_SECRET}' dbname=x", "host=db password=*** dbname=x"),
    (f"host=db password = {RULES_SECRET} sslpassword='{RULES_SECRET}' dbname=x",
     "host=db password = *** sslpassword=*** dbname=x"),
    (f"host=db password={RULES_SECRET[:4]}\\ {RULES_SECRET[4:]} dbname=x", "host=db password=*** dbname=x"),
    (f"host=db password={RULES_SECRET[:4]} {RULES_SECRET[4:]}", "host=db password=***"),  # libpq refuses it
    (f"host=db password=***{RULES_SECRET} dbname=x", "host=db password=*** dbname=x"),  # not masked already
    (f"host=db password={RULES_SECRET}, x=1", "host=db password=*** x=1"),
    (f"postgresql://u:{RULES_SECRET}@h1:5432,h2:5433/db?sslmode=require",
     "postgresql://u:***@h1:5432,h2:5433/db?sslmode=require"),
    (f"postgres://u:{RULES_SECRET}@h/db", "postgres://u:***@h/db"),
    (f"postgresql:///db?host=/run/pg&password={RULES_SECRET}&sslpassword={RULES_SECRET}&application_name=a",
     "postgresql:///db?host=/run/pg&password=***&sslpassword=***&application_name=a"),
    (f"postgres://u:pa@s/s{RULES_SECRET}@h/db", "postgres://u:***@h/db"),  # raw @ and / (libpq and pymongo refuse)
    (f"mongodb://u:{RULES_SECRET}@[::1]:27017,h2/db?authSource=admin&authMechanismProperties=AWS_SESSION_TOKEN:"
     f"{RULES_SECRET}&tlsCertificateKeyFilePassword={RULES_SECRET}",
     "mongodb://u:***@[::1]:27017,h2/db?authSource=admin&authMechanismProperties=***"
     "&tlsCertificateKeyFilePassword=***"),
    (f"mongodb+srv://u:{RULES_SECRET}@cluster.example.com/db?retryWrites=true",
     "mongodb+srv://u:***@cluster.example.com/db?retryWrites=true"),
    (f"cannot connect to 'postgresql://u:{RULES_SECRET}@h/db', nor x=mongodb://a:{RULES_SECRET}@b",
     "cannot connect to 'postgresql://u:***@h/db', nor x=mongodb://a:***@b"),
    (f'missing "=" after "{RULES_SECRET}" in connection info string', 'missing "=" after "***" in connection info'
                                                                      ' string'),
    (f'invalid percent-encoded token: "{RULES_SECRET}%zz"', 'invalid percent-encoded token: "***"'),
    ('password authentication failed for user "u"', 'password authentication failed for user "u"'),
    ("postgresql://h:5432/db and tcp://127.0.0.1:8786", "postgresql://h:5432/db and tcp://127.0.0.1:8786"),
])
def test_every_form_is_masked(text, masked):
    assert mask_secrets(text) == masked
    assert RULES_SECRET not in mask_secrets(repr(text)) and RULES_SECRET[4:] not in mask_secrets(repr(text))


def test_a_masked_message_stays_readable_when_masked_again():
    # An error is built from masked parts and masked again as a whole: what follows the password stays.
    once = mask_secrets(f"cannot connect at host=h password={RULES_SECRET}, failed to resolve host 'h'")
    assert once == "cannot connect at host=h password=*** failed to resolve host 'h'"
    built = f"bad string {mask_secrets(repr(f'host=h password={RULES_SECRET} x'))} in --pg, fix --pg"
    assert mask_secrets(built) == built == "bad string 'host=h password=***' in --pg, fix --pg"


def test_pairs_nested_without_end_are_masked_in_one_pass():
    # a=a=a=...: each value holds the next pair (a recursion per pair ran out of stack at a few thousand).
    assert mask_secrets("a=" * 50_000 + f"password={RULES_SECRET}").endswith("a=password=***")
    assert mask_secrets(f"x=y=postgresql://u:{RULES_SECRET}@h") == "x=y=postgresql://u:***@h"


def test_settings_show_no_connection_string_in_their_repr():
    settings = Settings(pg_url=f"postgresql://u:{RULES_SECRET}@h/db", mongo_url=f"mongodb://u:{RULES_SECRET}@h/db",
                        orders_source_pg=f"host=h password={RULES_SECRET}", api_token=RULES_SECRET,
                        snapshot_source_pg=f"postgresql://u:{RULES_SECRET}@h/db")
    assert RULES_SECRET not in repr(settings) and "batch_size=5000" in repr(settings)
    from gigsterpg.lib.pg.sync.engine.task import RangeTask  # Dask logs a failed task's arguments
    task = RangeTask(1, "users", None, settings.pg_url, settings.mongo_url, "db", 10)
    assert RULES_SECRET not in repr(task) and "users" in repr(task)


def test_records_and_answers_are_masked_through_and_through():
    record = {"host": f"postgresql://u:{RULES_SECRET}@h", "errors": [f"at host=h password={RULES_SECRET}"], "n": 3}
    assert RULES_SECRET not in json.dumps(mask_secrets_in(record))
    assert mask_secrets_in(record)["n"] == 3


def test_a_password_met_in_the_settings_is_hidden_in_any_form():
    # A driver may print a piece the rules cannot place: decoded, unescaped, in a message of its own.
    remember_secrets("host=db user=u password='odd pass\\'word' dbname=x", "postgresql://u:p%40ss-w0rd!@h/db",
                     "host=db user=postgres password=postgres",  # in its own string's other parts: not replaced
                     "postgresql://gigster:password@pg/db")  # a word (the compose file's): not replaced
    assert mask_secrets("the server said: odd pass'word is wrong") == "the server said: *** is wrong"
    assert mask_secrets("no route for p@ss-w0rd!") == "no route for ***"
    assert mask_secrets("connection to postgres failed") == "connection to postgres failed"
    assert mask_secrets("check the user and password") == "check the user and password"


PASSWORDS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                    max_size=24)
HOSTS = st.sampled_from(["h", "db.example.com:5432", "h1:5432,h2:5433", "[::1]:27017,h2"])


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=PASSWORDS, hosts=HOSTS, scheme=st.sampled_from(["postgresql", "postgres", "mongodb", "mongodb+srv"]),
       key=st.sampled_from(["password", "sslpassword", "tlsCertificateKeyFilePassword", "authMechanismProperties"]))
def test_urls_are_masked_whatever_the_password(password, hosts, scheme, key):
    encoded = quote(password, safe="")
    assert mask_secrets(f"{scheme}://u:{encoded}@{hosts}/db?w=1") == f"{scheme}://u:***@{hosts}/db?w=1"
    assert mask_secrets(f"{scheme}://{hosts}/db?a=1&{key}={encoded}&b=2") == f"{scheme}://{hosts}/db?a=1&{key}=***&b=2"
    # Typed raw (no white space): whatever it holds, none of it shows.
    assume(not any(char.isspace() for char in password) and len(password) >= 3)
    raw = mask_secrets(f"failed: {scheme}://u:{password}@{hosts}/db")
    assert raw == f"failed: {scheme}://u:***@{hosts}/db"


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=PASSWORDS, key=st.sampled_from(["password", "sslpassword"]), quoted=st.booleans(),
       wrap=st.sampled_from(["{}", "connection failed for '{}': refused", "{!r}"]))
def test_key_value_strings_are_masked_whatever_the_password(password, key, quoted, wrap):
    value = kv_quoted(password) if quoted else kv_escaped(password)
    conninfo = f"host=db port=5432 user=u {key}={value} dbname=x"
    assert conninfo_to_dict(conninfo)[key] == password  # the string is one libpq reads as meant
    masked = mask_secrets(wrap.format(conninfo))
    if wrap == "{!r}":
        expected = f"host=db port=5432 user=u {key}=*** dbname=x"
        assume(len(password) >= 3 and password not in repr(expected) and repr(password)[1:-1] not in repr(expected))
        assert password not in masked and repr(password)[1:-1] not in masked
    else:
        # Exactly the value is hidden, or more of what follows it (a run of backslashes is taken as escaping
        # the next character, as a repr() writes them): nothing before it, nothing of it.
        head = wrap.format(conninfo)[:wrap.format(conninfo).index(f"{key}={value}")] + f"{key}=***"
        after = wrap.format(conninfo)[len(head) - 3 + len(value):]
        assert masked.startswith(head) and after.endswith(masked[len(head):]), (masked, after)
        if "\\" not in value:
            assert masked == wrap.format(f"host=db port=5432 user=u {key}=*** dbname=x")
    assert mask_secrets(masked) == masked


# Real runs: export-orders, generate-shop, status, the page, the API, with the source in every form.

def _socket_and_port(server_url: str):
    parts = urlsplit(server_url)
    query = dict(item.split("=", 1) for item in parts.query.split("&") if "=" in item)
    return query.get("host") or parts.hostname, parts.port or query.get("port") or 5432


@pytest.fixture
def sources(pg_server_url, password_role):
    """Source strings with SECRET in every form: unreachable, refused by a real server, malformed."""
    role = password_role[0]
    host, port = _socket_and_port(pg_server_url)
    return {
        "unreachable key=value": f"host=127.0.0.1 port=1 user=u password='{SECRET} x\\'y' dbname=shop"
                                 " connect_timeout=2",
        "refused key=value": f"host={host} port={port} user={role} password={SECRET} dbname=postgres",
        "refused sslpassword": f"host={host} port={port} user={role} password={SECRET}x sslpassword={SECRET}"
                               " dbname=postgres",
        "refused URL query": f"postgresql://{role}@/postgres?host={quote(host, safe='')}&port={port}"
                             f"&password={SECRET}",
        "malformed key=value": f"host={host} password={SECRET} dangling",
        "malformed URL": f"postgresql://{role}:{SECRET}@[::1/postgres",
    }


def test_export_orders_never_shows_the_sources_password(sources, pg_url, mongo_url, tmp_path):
    outputs = []
    for name, source in sources.items():
        flag = run_cli("export-orders", "--pg", source, "--pg-url", pg_url, "--mongo-url", mongo_url,
                       "--log-level", "debug", cwd=tmp_path)
        setting = run_cli("export-orders", "--pg-url", pg_url, "--mongo-url", mongo_url, "--log-format",
                          "json", "--log-level", "debug", cwd=tmp_path,
                          env_extra={"GIGSTERPG_ORDERS_SOURCE_PG": source})
        shop = run_cli("generate-shop", "--pg", source, "--orders", "5", "--debug", cwd=tmp_path)
        for result in (flag, setting, shop):
            assert result.returncode != 0, (name, result.stdout, result.stderr)
            assert [line for line in result.stderr.splitlines() if line.startswith("FAILED: ")], result.stderr
            outputs.append(result.stdout + result.stderr)
        expected = "bad PostgreSQL connection string" if name.startswith("malformed") else "PostgreSQL"
        assert expected in flag.stderr and "--pg (GIGSTERPG_ORDERS_SOURCE_PG)" in flag.stderr, flag.stderr
    with psycopg.connect(pg_url) as connection:
        records = [json.dumps(row, default=str) for row in connection.execute(
            "SELECT * FROM projection_runs").fetchall()]
    assert len(records) >= 4  # the runs that reached the source are recorded: there is something to search
    status = run_cli("status", "--pg-url", pg_url, cwd=tmp_path)
    status_json = run_cli("status", "--pg-url", pg_url, "--format", "json", cwd=tmp_path)
    assert "password=***" in status.stdout + status_json.stdout
    with TestClient(create_app(Settings(pg_url=pg_url, mongo_url=mongo_url), API_TOKEN)) as client:
        page = client.get("/", headers=API_AUTH).text
    assert "projection" in page.lower()
    texts = outputs + records + [status.stdout + status.stderr, status_json.stdout + status_json.stderr, page]
    for text in texts:
        assert SECRET not in text and "x\\'y" not in text and quote(SECRET) not in text


def test_a_conninfo_given_as_gigsterpgs_own_url_is_refused_masked(tmp_path):
    for command in (["status"], ["sync"], ["serve", "--no-auth"]):
        result = run_cli(*command, "--pg-url", f"host=db user=u password={SECRET} dbname=x", "--mongo-url",
                         "mongodb://127.0.0.1:1/db", cwd=tmp_path)
        assert_one_line_failure(result, "bad PostgreSQL URL 'host=db user=u password=***", "DB_URL_PSQL", code=2)
        assert SECRET not in result.stdout + result.stderr


def test_an_api_jobs_record_and_answers_hold_no_password(pg_url, mongo_url):
    # A URL typed where a host goes: the host field takes it (printable ASCII), no record or answer shows it.
    with TestClient(create_app(Settings(pg_url=pg_url, mongo_url=mongo_url), API_TOKEN,
                               source_timeout_s=2)) as client:
        answer = client.post("/exports", headers=API_AUTH, json={
            "host": f"postgresql://u:{SECRET}@127.0.0.1:1/db", "user": "u", "database": "db", "table": "t",
            "password": SECRET})
        texts = [answer.text, client.get("/exports", headers=API_AUTH).text, client.get("/", headers=API_AUTH).text]
    with psycopg.connect(pg_url) as connection:
        texts += [json.dumps(row, default=str) for row in connection.execute("SELECT * FROM api_jobs").fetchall()]
    assert answer.status_code in (202, 400, 404, 502, 503), answer.text
    for text in texts:
        assert SECRET not in text


# Item 2: a malformed URL is one line naming the setting and the fix; no traceback, no password.

@pytest.mark.parametrize("flag, url, setting", [
    ("--pg-url", f"postgresql://u:{SECRET}@host:58569:99/db", "DB_URL_PSQL"),
    ("--pg-url", f"postgresql://u:{SECRET}@[::1/db", "DB_URL_PSQL"),
    ("--pg-url", f"postgresql://u:{SECRET}@host:99999/db", "DB_URL_PSQL"),
    ("--pg-url", f"postgresql://u:{SECRET}@h1:5432,h2:5433/db", "DB_URL_PSQL"),
    ("--pg-url", f"postgresql://u:{SECRET}@host:0/db", "DB_URL_PSQL"),
    ("--mongo-url", f"mongodb://u:{SECRET}@[::1", "DB_URL_MONGO"),
    ("--mongo-url", f"mongodb://u:{SECRET}@host:58569:99/db", "DB_URL_MONGO"),
    ("--mongo-url", f"mongodb://u:{SECRET}@host:99999/db", "DB_URL_MONGO"),
    ("--mongo-url", f"mongodb+srv://u:{SECRET}@[::1/db", "DB_URL_MONGO"),
    ("--mongo-url", f"mongodb://u:{SECRET}@h@x/db", "DB_URL_MONGO"),
    ("--mongo-url", f"mongodb://u:{SECRET}@127.0.0.1:1/db?tls=true&tlsCAFile=/nonexistent/ca.pem", "DB_URL_MONGO"),
])
def test_a_malformed_url_is_one_line_naming_the_setting(flag, url, setting, pg_url, mongo_url, tmp_path):
    urls = {"--pg-url": pg_url, "--mongo-url": mongo_url, flag: url}
    result = run_cli("sync", *[part for pair in urls.items() for part in pair], "--log-level", "debug", cwd=tmp_path)
    assert_one_line_failure(result, setting, "fix", code=2)
    failed = next(line for line in result.stderr.splitlines() if line.startswith("FAILED: "))
    assert "unexpected error" not in failed and "report it" not in failed
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize("source", [
    f"postgresql://u:{SECRET}@host:58569:99/db", f"postgresql://u:{SECRET}@[::1/db", f"host=h port=99999"
    f" password={SECRET}", f"host=h password={SECRET} dangling", f"host=h password='{SECRET}"])
def test_a_malformed_source_is_one_line_naming_its_flag(source, pg_url, mongo_url, tmp_path):
    result = run_cli("export-orders", "--pg", source, "--pg-url", pg_url, "--mongo-url", mongo_url,
                     cwd=tmp_path)
    assert_one_line_failure(result, "--pg (GIGSTERPG_ORDERS_SOURCE_PG)", "fix", code=2)
    assert SECRET not in result.stdout + result.stderr
    assert re.search(r"bad (port in the )?PostgreSQL connection string", result.stderr)


def test_the_settings_check_keeps_good_urls(pg_url):
    for url in ("mongodb://u:p@h1:1,h2:2/db?replicaSet=rs", "mongodb+srv://u:p@cluster.example.com/db",
                "mongodb://[::1]:27017/db"):
        assert config.check_mongo_url(url) == url
    for url in ("host=h port=5432,5433 dbname=x", "postgresql://u:p@h1:1,h2:2/db", with_database(pg_url, "x")):
        assert config.check_pg_conninfo(url, "--pg") == url


def test_the_daily_pipeline_never_shows_the_sources_password(sources, pg_url, tmp_path):
    (tmp_path / "orders.csv").write_text("order_id,product_id\n1,2\n")
    outputs = []
    for name in ("refused key=value", "refused URL query", "malformed key=value"):
        run = run_cli("pipeline", "run", "--day", "2021-01-01", "--source-pg", sources[name], "--csv",
                      str(tmp_path / "orders.csv"), "--root", str(tmp_path / "data"), "--pg-url", pg_url,
                      "--log-level", "debug", "--debug", cwd=tmp_path)
        assert run.returncode != 0 and "FAILED: " in run.stdout + run.stderr, run.stdout + run.stderr
        outputs.append(run.stdout + run.stderr)
    status = run_cli("pipeline", "status", "--pg-url", pg_url, cwd=tmp_path)
    with psycopg.connect(pg_url) as connection:
        records = [json.dumps(row, default=str) for row in connection.execute("SELECT * FROM snapshot_ledger")]
    assert records and "extract-postgres" in status.stdout, status.stdout + status.stderr
    for text in outputs + records + [status.stdout + status.stderr]:
        assert SECRET not in text
    manifests = list((tmp_path / "data").rglob("*.json")) if (tmp_path / "data").exists() else []
    for manifest in manifests:
        assert SECRET not in manifest.read_text()
