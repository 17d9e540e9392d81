"""The seller panel as a seller's browser sees it (CONTRACT §14): Debian's chromium, headless, driven
by Selenium, against a real `python -m panel` beside a running platform. An invited seller signs up,
sees an empty dashboard, a purchase driven through the fakes appears in Sales and on the dashboard
within seconds, and a second seller sees none of it. Each page is saved as a screenshot
(`var/screenshots/panel-*.png`) to be looked at as a seller would."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from catalog.snapshot import load_bots
from ops.cli import cli
from ops.procs import free_port, wait_until
from tests.actors.test_selling import selling_config
from tests.conftest import failed
from tests.e2e.test_selling import open_shop

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
PASSWORD = "cavalo-correto-bateria-grampo"

pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromedriver are not installed")


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output.strip()


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=pt-BR"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER or ""), options=options)
    driver.set_page_load_timeout(30)
    driver.implicitly_wait(10)  # after a click the next page may still be loading: its fields are waited for
    yield driver
    if failed(request):  # what the seller would have seen when the test gave up
        shot(driver, f"failed-{request.node.name}")
        try:
            print(f"--- browser at {driver.current_url} ---\n{driver.find_element('tag name', 'body').text[:3000]}")
        except Exception as exc:  # noqa: BLE001 - a dead browser says nothing more
            print(f"--- browser: {type(exc).__name__} ---")
    driver.quit()


def shot(driver: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"panel-{name}.png"))


def fill(driver: Any, **fields: str) -> None:
    from selenium.webdriver.common.by import By

    for name, value in fields.items():
        element = driver.find_element(By.NAME, name)
        element.clear()
        element.send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "button.primary").click()


@contextmanager
def running_panel(where: Path, request: pytest.FixtureRequest, **env: str) -> Iterator[str]:
    """A `python -m panel` process with these settings; its base URL."""
    from ops.procs import Platform
    from tests.conftest import logs_on_failure

    port = free_port()
    where.mkdir()
    platform = Platform(where, PANEL_PORT=str(port), PANEL_BASE_URL=f"http://127.0.0.1:{port}", **env)
    with logs_on_failure(platform, request):
        platform.panel(port)
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def panel(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    with running_panel(tmp_path / "panel", request) as base:
        yield base


def test_a_seller_signs_up_sees_their_sale_arrive_and_another_seller_sees_none_of_it(
    panel: str, browser: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from selenium.webdriver.common.by import By

    from accounts import passwords
    from db.models import Account, Charge

    run("accounts", "create", "outra", "--email", "bia@outra.com.br")  # a second seller
    Account.update(password_hash=passwords.hashed(PASSWORD)).where(Account.slug == "outra").execute()
    invite = run("accounts", "invite", "--email", "ana@acme.com.br").replace("http://127.0.0.1:8100", panel)
    browser.get(invite)
    shot(browser, "1-signup")
    assert "Criar sua conta" in browser.page_source and "ana@acme.com.br" in browser.page_source
    fill(browser, slug="acme", password=PASSWORD, confirm=PASSWORD)
    wait_until(lambda: "Seu funil" in browser.page_source, 10, "the dashboard after sign-up")
    assert "Você ainda não tem bots" in browser.page_source
    shot(browser, "2-empty-dashboard")
    data = selling_config()
    data["account"] = "acme"  # the operator configures acme's bot (next issue: acme does, in the panel)
    with open_shop(tmp_path, request, data) as shop:
        bot = load_bots()["demo"]
        buyer = 7001
        shop.start(buyer)
        wait_until(lambda: shop.texts(buyer), 20, "the welcome")
        anual = next(o.id for o in bot.offers if o.slug == "anual")
        shop.press(buyer, f"buy:{anual}")
        photo = wait_until(lambda: [p for p in shop.calls("sendPhoto", buyer) if "<code>" in p.get("caption", "")],
                           20, "the code")[0]  # fmt: skip
        shop.pay(photo["caption"])
        browser.get(f"{panel}/sales")

        def sale_shown() -> bool:
            browser.refresh()
            return "pago" in browser.find_element(By.TAG_NAME, "table").text

        wait_until(sale_shown, 5, "the sale in Sales")
        shot(browser, "3-sales")
        charge = Charge.get(Charge.status == "paid")
        amount = f"{charge.amount:.2f}".replace(".", ",")
        assert amount in browser.page_source
        browser.find_element(By.CSS_SELECTOR, f'tr[data-charge="{charge.id}"] a').click()
        wait_until(lambda: "Jornada do comprador" in browser.page_source, 10, "the sale's journey")
        steps = [e.get_attribute("data-step") for e in browser.find_elements(By.CSS_SELECTOR, "tr[data-step]")]
        assert steps[0] == "start" and "paid" in steps and "delivery" in steps, steps
        shot(browser, "3b-journey")
        browser.get(panel + "/")
        assert 'data-bot="demo"' in browser.page_source and amount in browser.page_source
        assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")  # the charts, drawn without script
        shot(browser, "4-dashboard")
        browser.get(panel + "/bots/demo?utm_source=facebook&utm_campaign=bf")
        link = browser.find_element(By.ID, "tracked-link").get_attribute("value")
        assert link.endswith("/r/demo?utm_source=facebook&utm_campaign=bf")
        shot(browser, "4b-bot")
    browser.find_element(By.CSS_SELECTOR, "header form button").click()  # Sair
    wait_until(lambda: "Entrar no GrimBots" in browser.page_source, 10, "the login page")
    fill(browser, email="bia@outra.com.br", password=PASSWORD)
    wait_until(lambda: "Seu funil" in browser.page_source, 10, "the second seller's dashboard")
    shot(browser, "5-other-seller")
    for path in ("/", "/sales", "/bots", "/account"):
        browser.get(panel + path)
        main = browser.find_element(By.TAG_NAME, "main").text
        assert "demo" not in main and amount not in main and "acme" not in main, path
    browser.get(f"{panel}/sales?bot=demo")
    assert "Não encontrado" in browser.page_source
    shot(browser, "6-not-yours")
