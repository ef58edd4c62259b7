"""``dev start|stop``'s .env editing, without servers (tests/test_docs.py runs the servers themselves)."""
from gigsterpg import dev
from gigsterpg.config import load_settings


def test_start_sets_its_lines_and_keeps_every_other(tmp_path):
    path = tmp_path / ".env"
    path.write_text("# mine\nexport DB_URL_PSQL=postgresql://old/db\nMY_SETTING=kept\n\nOTHER='x=y'\n")
    values = dev.env_values(tmp_path / ".gigsterpg-dev", 5433, 27018, "tok")
    dev.write_env(path, values)
    text = path.read_text()
    assert text.startswith("# mine\nMY_SETTING=kept\n\nOTHER='x=y'\n") and "postgresql://old/db" not in text
    settings = load_settings(environ={}, dotenv_path=path)
    assert settings.pg_url == "postgresql://postgres@127.0.0.1:5433/gigster"
    assert settings.mongo_database == "data-practical" and settings.api_token == "tok"
    assert settings.orders_source_pg.endswith(":5433/shop") and settings.snapshot_source_pg.endswith(":5433/northwind")
    assert settings.snapshot_csv == str(tmp_path / ".gigsterpg-dev" / "order_details.csv")
    dev.write_env(path, values)  # twice: still one line each
    assert path.read_text() == text


def test_stop_removes_only_the_lines_start_wrote_as_it_wrote_them(tmp_path):
    path = tmp_path / ".env"
    values = dev.env_values(tmp_path, 5433, 27018, "tok")
    dev.write_env(path, values)
    path.write_text(path.read_text().replace("27018/data-practical", "27018/mine") + "MY_SETTING=kept\n")
    dev.remove_env(path, values)
    assert path.read_text() == "DB_URL_MONGO=mongodb://127.0.0.1:27018/mine?directConnection=true\nMY_SETTING=kept\n"
    dev.remove_env(tmp_path / "none.env", values)  # no .env: nothing to do
    assert not (tmp_path / "none.env").exists()


def test_status_of_a_folder_never_started(tmp_path):
    report = dev.status(tmp_path / ".gigsterpg-dev", tmp_path / ".env")
    assert [server.alive for server in report.servers] == [False, False]
    assert "not started (gigsterpg dev start starts it)" in dev.format_report(report, "status")
    assert dev.format_report(dev.stop(tmp_path / ".gigsterpg-dev", tmp_path / ".env"), "stop").startswith(
        "Nothing to stop")
