"""The dashboard (CONTRACT §13) as a browser sees it: Debian's chromium, headless, driven by
Selenium, against a real `python -m dash` process. The login is required, and the charts and
tables hold the numbers `ops report` gives."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ops import report
from ops.procs import Platform, free_port, wait_until
from tests.conftest import logs_on_failure
from tests.ops.test_report import data  # noqa: F401 - the fixture: bots, leads, clicks, charges

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
USER, PASSWORD = "admin", "dash-secret-1"


@pytest.fixture
def dash(tmp_path: Path, request: pytest.FixtureRequest, data: None) -> Iterator[str]:  # noqa: F811
    port = free_port()
    platform = Platform(tmp_path, DASH_PORT=str(port), DASH_USER=USER, DASH_PASSWORD=PASSWORD)
    with logs_on_failure(platform, request):
        platform.spawn("dash", [sys.executable, "-m", "dash"])
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{base}/health").status_code == 200, 30, "the dashboard")
        yield base


def test_the_login_is_required_and_nothing_writes(dash: str) -> None:
    assert httpx.get(dash).status_code == 401
    assert httpx.get(dash).headers["www-authenticate"].startswith("Basic")
    assert httpx.get(dash, auth=(USER, "wrong")).status_code == 401
    assert httpx.get(dash, auth=(USER, PASSWORD)).status_code == 200
    assert httpx.post(dash, auth=(USER, PASSWORD)).status_code == 405  # read-only


def test_it_refuses_to_start_open_to_the_network_without_a_password() -> None:
    env = {"DASH_HOST": "0.0.0.0", "DASH_PASSWORD": ""}
    done = subprocess.run([sys.executable, "-m", "dash"], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode != 0 and "DASH_PASSWORD is required" in done.stderr


NO_BROWSER = "Debian's chromium and chromium-driver are not installed (ops/test installs them)"


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason=NO_BROWSER)
@pytest.mark.timeout(120)
def test_a_browser_sees_the_reports_numbers(dash: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER or ""))
    try:
        driver.get(dash)
        # No credentials: the browser is asked to log in (headless, it shows nothing), never the page.
        assert driver.title != "GrimBots dashboard" and driver.find_elements(By.CSS_SELECTOR, "svg.chart") == []
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
        driver.get(f"{dash}/?bot=demo")
        assert driver.title == "GrimBots dashboard"
        charts = driver.find_elements(By.CSS_SELECTOR, "svg.chart")
        assert len(charts) == 3 and all(c.size["width"] > 100 for c in charts)  # drawn, not just present
        drawn: dict[tuple[str, str, str], float] = {}
        for bar in driver.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar"):
            chart = bar.find_element(By.XPATH, "./ancestor::*[local-name()='svg']").get_attribute("data-chart") or ""
            key = (chart.split(" — ")[0], bar.get_attribute("data-label") or "", bar.get_attribute("data-series") or "")
            drawn[key] = float(bar.get_attribute("data-value") or "nan")
        for row in report.report("day", "demo", 14):
            day = row.key or ""
            assert drawn[("Funnel per day", day, "clicks")] == row.clicks
            assert drawn[("Funnel per day", day, "starts")] == row.starts
            assert drawn[("Funnel per day", day, "charges")] == row.charges
            assert drawn[("Funnel per day", day, "paid")] == row.paid
            assert drawn[("Revenue per day", day, "revenue")] == float(row.revenue)
        for row in report.report("utm_campaign", "demo", 14):
            assert drawn[("Per campaign", row.key or "(none)", "paid")] == row.paid
        funnel = driver.find_element(By.CSS_SELECTOR, "table.funnel").text
        for row in report.report("bot", None, 14):
            assert f"{row.key} {row.clicks} {row.starts} {row.charges} {row.paid}" in funnel
        assert "queue" in driver.find_element(By.CSS_SELECTOR, "table.queues").text
    finally:
        driver.quit()
