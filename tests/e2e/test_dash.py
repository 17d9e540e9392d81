"""The dashboard (CONTRACT §13) as a browser sees it: Debian's chromium, headless, driven by
Selenium, against a real `python -m dash` process. The login is required, and the charts and
tables hold the numbers `ops report` gives."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

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


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])  # behind a proxy, 127.0.0.1 is public too
def test_it_refuses_to_start_without_a_password_on_any_address(host: str) -> None:
    env = {"DASH_HOST": host, "DASH_PORT": str(free_port()), "DASH_PASSWORD": ""}
    done = subprocess.run([sys.executable, "-m", "dash"], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode != 0 and "DASH_PASSWORD is required" in done.stderr


def test_failed_logins_are_slowed_then_refused_per_address(dash: str) -> None:
    with httpx.Client(timeout=30) as client:
        times = []
        for _ in range(5):
            started = time.monotonic()
            assert client.get(dash, auth=(USER, "guess")).status_code == 401
            times.append(time.monotonic() - started)
        assert max(times[:3]) < 0.9 and times[3] >= 0.9 and times[4] >= 1.9  # slowed from the fourth on
        assert client.get(dash, auth=("nobody", "guess")).status_code == 401  # the same answer whoever is tried
        refused = client.get(dash, auth=(USER, PASSWORD))  # refused now, the right password included
        assert refused.status_code == 429 and "retry-after" in refused.headers
        other = client.get(dash, auth=(USER, PASSWORD), headers={"X-Forwarded-For": "203.0.113.9"})
        assert other.status_code == 429  # X-Forwarded-For from a peer that is no trusted proxy is not believed


def test_each_campaign_is_charted_over_the_days_with_the_reports_numbers(dash: str) -> None:
    """CONTRACT §13: per campaign the funnel over time. The SVG bars carry series, day and value."""
    import re

    from reports import funnel as report

    page = httpx.get(dash, params={"bot": "demo", "days": "7"}, auth=(USER, PASSWORD)).text
    charts = dict(re.findall(r'data-chart="(Campaign [^"]+)"(.*?)</svg>', page, re.S))
    assert "Campaign bf per day — demo" in charts and "Campaign natal per day — demo" in charts
    bars = re.findall(
        r'data-series="(\w+)" data-label="([\d-]+)" data-value="([\d.]+)"', charts["Campaign bf per day — demo"]
    )
    drawn = {(series, day): float(value) for series, day, value in bars}
    expected = report.over_time("utm_campaign", "demo", 7)["bf"]
    assert len({day for _, day in drawn}) == 7
    for row in expected:
        assert drawn[("clicks", row.key)] == (row.clicks or 0) and drawn[("paid", row.key)] == row.paid
    assert "refunded" in page and "R$ 149,90" in page  # refunds apart, not in revenue
