"""The status page in a real browser: Debian's headless Chromium driven by Selenium, against a real server.

The page loads (the login form), signs in through the form, shows the runs
and the chart, opens a reject reason, restarts a failed job; a screenshot of
each view (laptop and phone widths) is kept in build/screenshots/ (or
``$GIGSTERPG_SCREENSHOTS``). ``.ci/run`` and ``make test`` install
``chromium`` and ``chromium-driver`` where they are missing.
"""
import os
import shutil
import threading
from pathlib import Path

import httpx
import pytest

from gigsterpg.api.app import create_app
from gigsterpg.config import Settings
from gigsterpg.fixtures.embedded import free_port
from tests.helpers import API_TOKEN, wait_until
from tests.status_helpers import (BAD_EMAILS, DAY, USERS_OK, failed_sync_job, fill_and_sync,
                                  pipeline_day_with_a_failed_step, table)

CHROMIUM = os.environ.get("GIGSTERPG_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GIGSTERPG_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900")
LAPTOP, PHONE = (1280, 900), (390, 844)

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} or {CHROMEDRIVER} is missing: .ci/run installs chromium and chromium-driver")
    pytest.skip("no Chromium here: apt-get install chromium chromium-driver", allow_module_level=True)

from selenium import webdriver  # noqa: E402  (after the check: the message above beats an ImportError)
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


@pytest.fixture
def shots(project_root) -> Path:
    folder = Path(os.environ.get("GIGSTERPG_SCREENSHOTS") or project_root / "build" / "screenshots")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def server(pg_url, mongo_url):
    """The API (and page) on uvicorn in a thread of the test, on a free port; its base URL."""
    import uvicorn
    settings = Settings(pg_url=pg_url, mongo_url=mongo_url, batch_size=50)
    port = free_port()
    served = uvicorn.Server(uvicorn.Config(create_app(settings, API_TOKEN), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    wait_until(lambda: served.started, "uvicorn to start")
    yield f"http://127.0.0.1:{port}", settings
    served.should_exit = True
    thread.join(timeout=30)


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def snap(driver, folder: Path, name: str, size=LAPTOP) -> Path:
    """A screenshot of the whole page at the width of ``size``."""
    driver.set_window_size(*size)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size[0], max(size[1], min(height + 140, 6000)))
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    driver.set_window_size(*size)
    return path


def wait_for(driver, condition, what: str, timeout_s: float = 30):
    # The page replaces its sections as it refreshes itself: an element found a moment ago may be gone; look again.
    return WebDriverWait(driver, timeout_s, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)) \
        .until(condition, message=f"waited for {what}")


def test_the_page_in_chromium(server, browser, shots, mongo_db, tmp_path):
    base, settings = server
    with httpx.Client(base_url=base, timeout=30) as client:
        job = failed_sync_job(client)
    assert job["state"] == "failed", job
    reports = fill_and_sync(settings, mongo_db)
    pipeline_day_with_a_failed_step(settings.pg_url, tmp_path)

    browser.get(base + "/")
    wait_for(browser, expected_conditions.presence_of_element_located((By.ID, "token")), "the login form")
    assert browser.current_url == base + "/login" and "runs-table" not in browser.page_source
    snap(browser, shots, "01-login")
    snap(browser, shots, "01-login-phone", PHONE)

    browser.find_element(By.ID, "token").send_keys(API_TOKEN)
    browser.find_element(By.ID, "sign-in").click()
    wait_for(browser, expected_conditions.presence_of_element_located((By.ID, "runs-table")), "the status page")
    session = browser.get_cookie("gigsterpg_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie") == "", "a script cannot read the session"
    runs = table(browser.page_source, "runs-table")
    assert [row[0] for row in runs[1:] if row[0]] == [str(reports[1].run_id), str(reports[0].run_id)]
    chart = browser.find_element(By.CSS_SELECTOR, "svg.chart")
    assert chart.is_displayed() and chart.size["width"] > 300 and chart.size["height"] > 80
    assert len(chart.find_elements(By.CSS_SELECTOR, "rect.bar")) == 2
    failed = browser.find_element(By.CSS_SELECTOR, "#snapshots-grid td.cell.failed")
    assert failed.is_displayed() and failed.value_of_css_property("background-color") == "rgba(207, 34, 46, 1)"
    assert f"{DAY.isoformat()} load failed" in browser.find_element(By.CSS_SELECTOR, "p.failed-step").text
    snap(browser, shots, "02-status")
    snap(browser, shots, "02-status-phone", PHONE)
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1"), \
        "the page is no wider than a phone: wide tables scroll inside their section"

    browser.find_element(By.LINK_TEXT, "invalid email").click()
    wait_for(browser, expected_conditions.presence_of_element_located((By.ID, "documents-table")), "the documents")
    rows = browser.find_elements(By.CSS_SELECTOR, "#documents-table tbody tr")
    assert len(rows) == 25 and rows[0].find_element(By.TAG_NAME, "code").text == "100"
    rows[0].find_element(By.TAG_NAME, "summary").click()
    raw = rows[0].find_element(By.TAG_NAME, "pre")
    wait_for(browser, lambda _: raw.is_displayed(), "the raw document to open")
    assert '"email": "not-an-email-0"' in raw.text
    snap(browser, shots, "03-rejects")
    snap(browser, shots, "03-rejects-phone", PHONE)
    browser.find_element(By.ID, "next-page").click()
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#documents-table tbody tr")) == BAD_EMAILS - 25,
             "the second page")

    browser.get(base + "/#jobs")
    row = browser.find_element(By.ID, f"job-{job['id']}")
    assert "failed" in row.text
    row.find_element(By.CSS_SELECTOR, "form.restart button").click()
    notice = wait_for(browser, expected_conditions.presence_of_element_located((By.ID, "notice")), "the notice")
    assert notice.text.startswith("Restarted: the new job is ")
    new_id = notice.text.rsplit(" ", 1)[1].rstrip(".")

    def new_job_succeeded(driver):
        # The page refreshes itself while the job runs: no reload here.
        found = driver.find_elements(By.CSS_SELECTOR, f"#job-{new_id} .state")
        return found and found[0].text == "succeeded"
    wait_for(browser, new_job_succeeded, "the restarted job to show as succeeded", timeout_s=120)
    snap(browser, shots, "04-restarted")
    users = [row for row in table(browser.page_source, "runs-table")[1:] if row[6] == "users"]
    assert users[0][8] == "0" and users[0][10] == str(USERS_OK), "the restarted sync is the newest run"
    for name in ("01-login", "02-status", "02-status-phone", "03-rejects", "04-restarted"):
        assert (shots / f"{name}.png").stat().st_size > 5000, name
