"""Selling more with real processes (edge, workers, clock, the sandbox, a fake Telegram): a bump
accepted then paid → both deliveries and the upsell; a downsell reaching an unpaid lead, on time,
and never one who paid; a worker SIGKILLed while sending a follow-up → it arrives exactly once."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from catalog.schema import BotConfig
from catalog.snapshot import load_bots
from db.models import Followup
from gateways.payments import brcode
from gateways.payments.sandbox import sign
from ops.procs import Platform, free_port, wait_until
from tests.actors.test_selling import selling_config
from tests.conftest import apply_config, logs_on_failure

SECRET = {"X-Telegram-Bot-Api-Secret-Token": "tg-secret-1"}


class Shop:
    def __init__(self, platform: Platform, telegram: str, edge: str, bot: BotConfig) -> None:
        self.platform, self.telegram, self.edge, self.bot = platform, telegram, edge, bot
        self.next_update = iter(range(1, 100_000))

    def calls(self, method: str, chat: int) -> list[dict[str, Any]]:
        calls = httpx.get(f"{self.telegram}/_calls").json()
        return [c["params"] for c in calls if c["method"] == method and int(c["params"].get("chat_id", 0)) == chat]

    def post(self, **fields: Any) -> None:
        update = {"update_id": next(self.next_update), **fields}
        assert httpx.post(f"{self.edge}/webhook/telegram/demo", json=update, headers=SECRET).status_code == 200

    def start(self, user: int) -> None:
        sender, chat = {"id": user, "first_name": "B"}, {"id": user, "type": "private"}
        self.post(message={"message_id": 1, "date": int(time.time()), "text": "/start", "from": sender, "chat": chat})

    def press(self, user: int, data: str) -> None:
        self.post(callback_query={"id": f"cb{time.monotonic_ns()}", "from": {"id": user, "first_name": "B"},
                                  "message": {"message_id": 1, "chat": {"id": user, "type": "private"}},
                                  "data": data})  # fmt: skip

    def pay(self, caption: str) -> None:
        code = re.search(r"<code>(.+?)</code>", caption)
        assert code is not None
        fields = brcode.parse(code.group(1))
        txid = brcode.parse_fields(fields["62"])["05"]
        body = json.dumps({"event": "charge.paid", "charge_id": txid, "amount": fields["54"]}).encode()
        headers = {"X-Sandbox-Signature": sign("whsec-1", body), "Content-Type": "application/json"}
        assert httpx.post(f"{self.edge}/webhook/payment/main", content=body, headers=headers).status_code == 200

    def texts(self, chat: int) -> list[str]:
        return [p.get("text") or p.get("caption") or "" for p in self.calls("sendMessage", chat)
                + self.calls("sendPhoto", chat)]  # fmt: skip


@contextmanager
def open_shop(tmp_path: Path, request: pytest.FixtureRequest, data: dict[str, Any]) -> Iterator[Shop]:
    """The configuration applied, and the platform running: edge, clock, chat and money workers
    (a killed worker's messages come back in 3 s; a dead worker's claim is decided after 3 s)."""
    apply_config(data)
    telegram_port, edge_port = free_port(), free_port()
    platform = Platform(tmp_path, TELEGRAM_API_BASE=f"http://127.0.0.1:{telegram_port}", CONFIG_POLL_SECONDS="0.5",
                        OUTBOX_STALE_CLAIM_SECONDS="3", WORKER_HEARTBEAT_TIMEOUT_MS="3000",
                        BROKER_MAINTENANCE_CHANCE="1000000")  # fmt: skip
    with logs_on_failure(platform, request):
        platform.fake_telegram(telegram_port)
        platform.edge(edge_port)
        platform.clock()
        platform.worker("chat", queues=("updates", "funnel", "followups"), threads=4)
        platform.worker("money", queues=("payments", "settle"), threads=4)
        yield Shop(platform, f"http://127.0.0.1:{telegram_port}", f"http://127.0.0.1:{edge_port}",
                   load_bots()["demo"])  # fmt: skip


@pytest.fixture
def shop(tmp_path: Path, demo_bot: BotConfig, request: pytest.FixtureRequest) -> Iterator[Shop]:
    """Downsells due soon: `not_bought` 2 s after the /start, `unpaid` 1 s after the code; a
    test that needs a buyer to pay before they are due asks for longer ones (`downsell_delays`)."""
    not_bought, unpaid = getattr(request, "param", ("2s", "1s"))
    data = selling_config()
    bot = data["bots"][0]
    bot["downsells"][0]["delay"] = not_bought
    bot["downsells"][1]["delay"] = unpaid
    bot["upsells"][0]["after_offer"] = "vip"
    bot["offers"][1]["delivery_link"] = "https://t.me/+Anual"  # no invite link in the fake
    del bot["offers"][1]["delivery_chat_id"]
    with open_shop(tmp_path, request, data) as running:
        yield running


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shop", [("8s", "6s")], indirect=True)  # the buyer pays ~3 s after /start (6 s on a loaded CI)
def test_bump_upsell_and_downsells_end_to_end(shop: Shop) -> None:
    vip = next(o.id for o in shop.bot.offers if o.slug == "vip")
    buyer, browser = 9001, 9002
    shop.start(buyer)
    shop.start(browser)
    wait_until(lambda: shop.texts(buyer), 20, "the welcome")  # its button is what the buyer presses
    shop.press(buyer, f"buy:{vip}")
    wait_until(lambda: "Leva o pack?" in shop.texts(buyer), 20, "the bump question")
    shop.press(buyer, f"bmp:{vip}:y")
    photo = wait_until(lambda: [p for p in shop.calls("sendPhoto", buyer) if "<code>" in p.get("caption", "")],
                       20, "the code")[0]  # fmt: skip
    assert "29,80" in photo["caption"]  # the offer and its bump, one code
    shop.pay(photo["caption"])
    wait_until(lambda: "Seu pack:\n\nhttps://t.me/+Pack" in shop.texts(buyer), 20, "the bump's delivery")
    wait_until(lambda: "Leve o pack!" in shop.texts(buyer), 20, "the upsell")  # after vip's delivery
    # The browser never pressed anything: their not_bought downsell comes 8 s after /start.
    wait_until(lambda: "Volte!" in shop.texts(browser), 30, "the downsell")
    time.sleep(3)  # the buyer's downsells were due by now: cancelled (paid), never sent
    texts = shop.texts(buyer)
    assert "Volte!" not in texts and "50% off" not in texts
    assert texts.count("Pagamento confirmado! Seu acesso:\n\nhttps://t.me/+AbCdEf") == 1
    assert texts.count("Seu pack:\n\nhttps://t.me/+Pack") == 1 and texts.count("Leve o pack!") == 1
    assert shop.texts(browser).count("Volte!") == 1
    states = {(f.kind, f.state) for f in Followup.select()}
    assert ("downsell", "cancelled") in states and ("upsell", "sent") in states


@pytest.mark.timeout(120)
def test_a_worker_killed_while_sending_a_follow_up_sends_it_exactly_once(shop: Shop) -> None:
    shop.start(9100)
    wait_until(lambda: shop.texts(9100), 20, "the welcome")
    httpx.post(f"{shop.telegram}/_config", json={"delay": 3.0})  # from now on every send hangs 3 s at "Telegram"
    wait_until(lambda: "Volte!" in shop.texts(9100), 20, "the downsell in flight")
    chat = next(p for p in shop.platform.processes if p.name == "chat")
    chat.kill()  # mid-send: the request reached Telegram, its answer will never be read
    httpx.post(f"{shop.telegram}/_config", json={"delay": 0})
    shop.platform.worker("chat-2", queues=("updates", "funnel", "followups"), threads=4)
    wait_until(lambda: Followup.get(Followup.position == 0).state != "scheduled", 60, "the follow-up decided")
    time.sleep(3)
    assert shop.texts(9100).count("Volte!") == 1  # marketing: decided "unknown", never sent twice
    assert Followup.get(Followup.position == 0).state == "unknown"
