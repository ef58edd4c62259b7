"""Inputs from outside that must be refused cleanly: forged cookies, NULs, names that are paths, edited manifests."""
import json

import pytest
from fastapi.testclient import TestClient

from gigsterpg.api.app import create_app
from gigsterpg.config import Settings
from gigsterpg.exc import SourceError
from gigsterpg.lib.files import partition
from gigsterpg.lib.files.extract import SourceTable
from gigsterpg.web.session import COOKIE, Signer

TOKEN = "hardening-token"


@pytest.mark.parametrize("schema, name, folder", [
    ("public", "orders", "orders"),
    ("sales", "Order Details", "sales.Order Details"),
    ("public", "..", "%2E%2E"),
    ("public", "x/y", "x%2Fy"),
    ("a", "b.c", "a.b%2Ec"),
    ("a.b", "c", "a%2Eb.c"),
])
def test_a_table_s_folder_stays_inside_postgres_and_is_its_own(schema, name, folder):
    assert SourceTable(schema, name, 0, (), ()).folder == folder


def test_a_manifest_naming_a_file_outside_its_folder_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"file": "data.bin", "rows": 1}))
    assert partition.read_manifest(tmp_path)["file"] == "data.bin"
    for name in ("../../etc/passwd", "/etc/passwd", "..", "", 7):
        (tmp_path / "manifest.json").write_text(json.dumps({"file": name}))
        with pytest.raises(SourceError, match="outside its folder"):
            partition.read_manifest(tmp_path)


def test_non_ascii_cookies_and_csrf_tokens_are_refused_not_errors():
    signer = Signer(TOKEN)
    assert signer.session_nonce("1.a.\u00e9") is None
    nonce = signer.session_nonce(signer.new_session())
    assert nonce is not None and not signer.csrf_ok(nonce, "\u00e9") and signer.csrf_ok(nonce, signer.csrf(nonce))


def test_the_page_answers_forged_cookies_and_nul_parameters_without_a_500(pg_url, mongo_url):
    settings = Settings(pg_url=pg_url, mongo_url=mongo_url, batch_size=50)
    with TestClient(create_app(settings, TOKEN, source_timeout_s=3)) as client:
        client.cookies.set(COOKIE, "1.a.b")
        assert client.get("/", follow_redirects=False).status_code == 303
        client.cookies.clear()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        answer = client.get("/page/rejects", params={"collection": "users", "reason": "x\x00y"}, headers=headers)
        assert answer.status_code == 400, answer.text
        ok = client.get("/page/rejects", params={"collection": "users", "reason": "x"}, headers=headers)
        assert ok.status_code == 200, ok.text
