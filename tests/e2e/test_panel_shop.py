"""A seller sets up a shop in the browser and it sells (issue: the seller panel): Debian's chromium
through Selenium against a running platform (edge, workers, clock, the panel, the fake Telegram).
A new seller connects the sandbox gateway, creates a Telegram bot by its token (the platform calls
getMe and setWebhook), writes the welcome and an offer, saves; then a /start at the edge gets that
welcome within seconds, a press gets the PIX code, and the sandbox's paid notification gets the
delivery. Screenshots: `var/screenshots/panel-shop-*.png`."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateways.payments import brcode
from gateways.payments.sandbox import sign
from ops.procs import Platform, free_port, wait_until
from tests.conftest import logs_on_failure
from tests.e2e.test_panel_browser import CHROMIUM, DRIVER, PASSWORD, browser, fill, run, shot  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromedriver are not installed")
TOKEN = "123456789:AAHfakeTokenForThePanelJourney_0123456"
VIP_CHAT = -1001234567890


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG of one colour (what a seller's image editor would save), made by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PNG = png(320, 160, (41, 86, 214))  # the welcome's image, as a seller uploads it


class Running:
    def __init__(self, panel: str, edge: str, telegram: str, whatsapp: str) -> None:
        self.panel, self.edge, self.telegram, self.whatsapp = panel, edge, telegram, whatsapp

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [c["params"] for c in httpx.get(f"{self.telegram}/_calls").json() if c["method"] == method]


@pytest.fixture
def platform(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Running]:
    telegram, edge, panel, whatsapp = free_port(), free_port(), free_port(), free_port()
    base = Platform(tmp_path, TELEGRAM_API_BASE=f"http://127.0.0.1:{telegram}", CONFIG_POLL_SECONDS="0.5",
                    PUBLIC_BASE_URL=f"http://127.0.0.1:{edge}", PANEL_PORT=str(panel),
                    PANEL_BASE_URL=f"http://127.0.0.1:{panel}")  # fmt: skip
    with logs_on_failure(base, request):
        base.fake_telegram(telegram)
        base.fake_whatsapp(whatsapp)
        base.edge(edge)
        base.clock()
        base.worker("chat", queues=("updates", "funnel", "followups"), threads=4)
        base.worker("money", queues=("payments", "settle"), threads=4)
        base.panel(panel)
        yield Running(f"http://127.0.0.1:{panel}", f"http://127.0.0.1:{edge}", f"http://127.0.0.1:{telegram}",
                      f"http://127.0.0.1:{whatsapp}")  # fmt: skip


def test_a_new_seller_sets_up_a_bot_in_the_browser_and_it_sells(platform: Running, browser: Any,  # noqa: F811
                                                                tmp_path: Path) -> None:  # fmt: skip
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from accounts import passwords
    from db.models import Account

    run("accounts", "create", "loja", "--email", "ana@loja.com.br")
    Account.update(password_hash=passwords.hashed(PASSWORD)).where(Account.slug == "loja").execute()
    browser.get(f"{platform.panel}/login")
    fill(browser, email="ana@loja.com.br", password=PASSWORD)
    wait_until(lambda: "Seu funil" in browser.page_source, 30, "the dashboard")

    browser.get(f"{platform.panel}/gateways")
    Select(browser.find_element(By.ID, "kind")).select_by_value("sandbox")
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    fill(browser, id="pix-loja", pix_key="+5511987654321", merchant_name="Loja da Ana", merchant_city="Recife",
         webhook_secret="whsec-loja")  # fmt: skip
    wait_until(lambda: 'data-gateway="pix-loja"' in browser.page_source, 30, "the gateway listed")
    shot(browser, "shop-1-gateway")

    browser.get(f"{platform.panel}/bots/new")
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    Select(browser.find_element(By.ID, "gateway")).select_by_value("pix-loja")
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    wait_until(lambda: "Bot criado" in browser.page_source, 30, "the new bot's editor")
    [hook] = platform.calls("setWebhook")
    assert hook["url"] == f"{platform.edge}/webhook/telegram/fake" and "chat_join_request" in hook["allowed_updates"]
    secret = hook["secret_token"]

    welcome = browser.find_element(By.ID, "welcome-text")
    welcome.clear()
    welcome.send_keys("Oi! Aqui é a Loja da Ana. Escolha o seu acesso:")
    image = tmp_path / "capa.png"
    image.write_bytes(PNG)
    browser.find_element(By.ID, "welcome-media_file").send_keys(str(image))
    browser.find_element(By.ID, "offers-0-label").send_keys("VIP mensal")
    browser.find_element(By.ID, "offers-0-price").send_keys("19,90")
    browser.find_element(By.ID, "offers-0-delivery_chat_id").send_keys(str(VIP_CHAT))  # a 30-day subscription
    browser.find_element(By.ID, "offers-0-duration").send_keys("30d")
    shot(browser, "shop-2-editor")
    browser.find_element(By.CSS_SELECTOR, "form.card button.primary").click()
    wait_until(lambda: "Salvo" in browser.page_source, 30, "saved")
    # A second offer, hidden: sold only as the VIP's order bump.
    browser.find_element(By.ID, "offers-1-label").send_keys("Pack extra")
    browser.find_element(By.ID, "offers-1-price").send_keys("9,90")
    browser.find_element(By.ID, "offers-1-delivery_link").send_keys("https://t.me/+PackExtra")
    browser.find_element(By.NAME, "offers-1-hidden").click()
    browser.find_element(By.CSS_SELECTOR, "form.card button.primary").click()
    wait_until(lambda: "Salvo" in browser.page_source and "Pack extra" in browser.page_source, 30, "saved again")
    shot(browser, "shop-3-saved")
    browser.find_element(By.LINK_TEXT, "Vender mais").click()
    Select(browser.find_element(By.ID, "bump-vip-mensal")).select_by_value("pack-extra")
    Select(browser.find_element(By.ID, "downsells-0-when")).select_by_value("unpaid")
    Select(browser.find_element(By.ID, "downsells-0-offer")).select_by_value("vip-mensal")
    browser.find_element(By.ID, "downsells-0-delay").send_keys("1h")
    browser.find_element(By.ID, "downsells-0-discount_percent").send_keys("50")
    browser.find_element(By.ID, "downsells-0-text").send_keys("Volte! O VIP pela metade do preço.")
    browser.find_element(By.CSS_SELECTOR, "form.card button.primary").click()
    wait_until(lambda: "Salvo" in browser.page_source, 30, "the selling saved")
    shot(browser, "shop-3b-selling")

    buyer = 4242
    sender, chat = {"id": buyer, "first_name": "Bia"}, {"id": buyer, "type": "private"}
    saved_at = time.monotonic()
    update_id = iter(range(1, 1000))

    def post(**fields: Any) -> None:
        answer = httpx.post(f"{platform.edge}/webhook/telegram/fake", json={"update_id": next(update_id), **fields},
                            headers={"X-Telegram-Bot-Api-Secret-Token": secret})  # fmt: skip
        assert answer.status_code == 200

    def welcomed() -> list[dict[str, Any]]:
        post(message={"message_id": 1, "date": int(time.time()), "text": "/start", "from": sender, "chat": chat})
        return wait_until(lambda: [c for c in platform.calls("sendPhoto") if str(c.get("chat_id")) == str(buyer)], 2,
                          "a welcome")  # fmt: skip

    greeting = wait_until(lambda: _try(welcomed), 10, "the welcome served")[0]
    assert time.monotonic() - saved_at < 5 + 2  # served within seconds of the save (a /start a second)
    assert "Loja da Ana" in greeting["caption"]
    assert greeting["photo"]["sha256"] == hashlib.sha256(PNG).hexdigest()  # the uploaded image, by upload
    [button] = [b for row in greeting["reply_markup"]["inline_keyboard"] for b in row]  # the pack is hidden
    assert "VIP mensal" in button["text"]
    post(callback_query={"id": "cb1", "from": sender, "message": {"message_id": 1, "chat": chat},
                         "data": button["callback_data"]})  # fmt: skip
    question = wait_until(lambda: [c for c in platform.calls("sendMessage") if "Pack extra" in (c.get("text") or "")],
                          15, "the order bump's question")[0]  # fmt: skip
    accept = question["reply_markup"]["inline_keyboard"][0][0]
    post(callback_query={"id": "cb2", "from": sender, "message": {"message_id": 2, "chat": chat},
                         "data": accept["callback_data"]})  # fmt: skip
    photo = wait_until(lambda: [p for p in platform.calls("sendPhoto") if "<code>" in p.get("caption", "")], 15,
                       "the PIX code")[0]  # fmt: skip
    code = re.search(r"<code>(.+?)</code>", photo["caption"]).group(1)  # type: ignore[union-attr]
    fields = brcode.parse(code)
    assert fields["54"] == "29.80" and fields["59"] == "Loja da Ana"  # the VIP and its bump, in one code
    body = json.dumps({"event": "charge.paid", "charge_id": brcode.parse_fields(fields["62"])["05"],
                       "amount": "29.80"}).encode()  # fmt: skip
    paid = httpx.post(
        f"{platform.edge}/webhook/payment/pix-loja",
        content=body,
        headers={"X-Sandbox-Signature": sign("whsec-loja", body), "Content-Type": "application/json"},
    )
    assert paid.status_code == 200
    wait_until(lambda: any("PackExtra" in (c.get("text") or "") for c in platform.calls("sendMessage")), 15,
               "the bump's delivery")  # fmt: skip
    invite = wait_until(lambda: platform.calls("createChatInviteLink"), 15, "the VIP group's invite link")[0]
    assert int(invite["chat_id"]) == VIP_CHAT
    browser.get(f"{platform.panel}/bots/fake")
    assert 'data-figure="active">1<' in browser.page_source  # the 30-day subscription
    browser.get(f"{platform.panel}/sales")
    wait_until(lambda: "pago" in browser.page_source, 10, "the sale in Vendas")
    shot(browser, "shop-4-sale")

    # The bot banned? Duplicate it: a new token, the same funnel, its own webhook.
    browser.get(f"{platform.panel}/bots/fake/edit")
    browser.find_element(By.LINK_TEXT, "Duplicar o bot").click()
    browser.find_element(By.NAME, "token").send_keys(TOKEN.replace("123456789", "987654321"))
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    wait_until(lambda: "Bot criado" in browser.page_source, 15, "the duplicate's editor")
    copy = browser.current_url.split("/bots/")[1].split("/")[0]
    assert copy.startswith("fake-") and "Oi! Aqui é a Loja da Ana" in browser.page_source
    assert "Pack extra" in browser.page_source  # the same offers
    assert [h["url"] for h in platform.calls("setWebhook")][-1].endswith(f"/webhook/telegram/{copy}")
    shot(browser, "shop-5-duplicate")


def _try(check: Any) -> Any:
    try:
        return check()
    except AssertionError:  # not served yet (the edge does not know the bot) or no answer yet
        return None


def test_the_same_shop_is_set_up_through_the_http_api_and_it_sells(platform: Running) -> None:
    """The journey above without a browser: an account's API key, a gateway PUT, a bot POSTed by its
    token, its welcome and offer PUT; then it sells."""
    from accounts import passwords
    from db.models import Account

    run("accounts", "create", "loja", "--email", "ana@loja.com.br")
    Account.update(password_hash=passwords.hashed(PASSWORD)).where(Account.slug == "loja").execute()
    key = run("accounts", "api-key", "loja")
    with httpx.Client(
        base_url=f"{platform.panel}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as api:
        gateway = {"kind": "sandbox", "webhook_secret": "whsec-api", "pix_key": "+5511987654321",
                   "merchant_name": "Loja API", "merchant_city": "Recife"}  # fmt: skip
        assert api.put("/gateways/pix-api", json=gateway).status_code == 200
        made = api.post("/bots", json={"token": TOKEN, "gateway": "pix-api"})
        assert made.status_code == 201 and made.json() == {"id": "fake", "webhook": True}
        [hook] = platform.calls("setWebhook")
        table = api.get("/bots/fake").json()
        assert table["token"].startswith("…")  # credentials never come back
        table["welcome"] = {"text": "Loja API: escolha"}
        table["offers"] = [{"id": "vip", "label": "VIP", "price": "9.90", "delivery_link": "https://t.me/+ApiVip"}]
        assert api.put("/bots/fake", json=table).status_code == 200

        buyer, update_id = 5151, iter(range(1, 1000))
        sender, chat = {"id": buyer, "first_name": "Caio"}, {"id": buyer, "type": "private"}

        def post(**fields: Any) -> None:
            answer = httpx.post(f"{platform.edge}/webhook/telegram/fake", json={"update_id": next(update_id), **fields},
                                headers={"X-Telegram-Bot-Api-Secret-Token": hook["secret_token"]})  # fmt: skip
            assert answer.status_code == 200

        def welcomed() -> list[dict[str, Any]]:
            post(message={"message_id": 1, "date": int(time.time()), "text": "/start", "from": sender, "chat": chat})
            return wait_until(lambda: [c for c in platform.calls("sendMessage") if c.get("chat_id") == buyer], 2, "hi")

        greeting = wait_until(lambda: _try(welcomed), 10, "the welcome served")[0]
        [button] = [b for row in greeting["reply_markup"]["inline_keyboard"] for b in row]
        post(callback_query={"id": "cb", "from": sender, "message": {"message_id": 1, "chat": chat},
                             "data": button["callback_data"]})  # fmt: skip
        photo = wait_until(lambda: [p for p in platform.calls("sendPhoto") if "<code>" in p.get("caption", "")], 15,
                           "the PIX code")[0]  # fmt: skip
        fields = brcode.parse(re.search(r"<code>(.+?)</code>", photo["caption"]).group(1))  # type: ignore[union-attr]
        body = json.dumps({"event": "charge.paid", "charge_id": brcode.parse_fields(fields["62"])["05"],
                           "amount": fields["54"]}).encode()  # fmt: skip
        httpx.post(
            f"{platform.edge}/webhook/payment/pix-api",
            content=body,
            headers={"X-Sandbox-Signature": sign("whsec-api", body), "Content-Type": "application/json"},
        )
        wait_until(lambda: any("ApiVip" in (c.get("text") or "") for c in platform.calls("sendMessage")), 15,
                   "the delivery")  # fmt: skip
        [sale] = api.get("/charges").json()
        assert (sale["bot"], sale["amount"], sale["state"]) == ("fake", "9.90", "paid")


def test_an_evolution_number_added_in_the_browser_answers_its_first_message(platform: Running, browser: Any) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    from accounts import passwords
    from db.models import Account

    run("accounts", "create", "zapstore", "--email", "zap@loja.com.br")
    Account.update(password_hash=passwords.hashed(PASSWORD)).where(Account.slug == "zapstore").execute()
    browser.get(f"{platform.panel}/login")
    fill(browser, email="zap@loja.com.br", password=PASSWORD)
    wait_until(lambda: "Seu funil" in browser.page_source, 30, "the dashboard")
    browser.get(f"{platform.panel}/bots/new/whatsapp?channel=evolution")
    fill(browser, id="zap-loja", number="5511988887777", evolution_url=platform.whatsapp, instance="loja-zap",
         apikey="EVO-KEY-123")  # fmt: skip
    wait_until(lambda: "Bot criado" in browser.page_source, 30, "the new number's editor")
    shot(browser, "shop-6-whatsapp")
    welcome = browser.find_element(By.ID, "welcome-text")
    welcome.clear()
    welcome.send_keys("Olá! Loja no WhatsApp.")
    browser.find_element(By.CSS_SELECTOR, "form.card button.primary").click()
    wait_until(lambda: "Salvo" in browser.page_source, 30, "saved")

    def answered() -> list[dict[str, Any]]:
        said = httpx.post(f"{platform.whatsapp}/_say", json={"instance": "loja-zap", "from": "5511977776666",
                                                              "text": "oi", "name": "Bia"}).json()  # fmt: skip
        assert said["status"] == 200, said  # the webhook the platform set, with its bearer secret
        return wait_until(lambda: [c for c in httpx.get(f"{platform.whatsapp}/_calls").json()
                                   if "Loja no WhatsApp" in str(c["params"].get("text"))], 3, "the answer")  # fmt: skip

    sent = wait_until(lambda: _try(answered), 15, "the first message answered")
    assert sent[0]["params"]["number"] == "5511977776666"
