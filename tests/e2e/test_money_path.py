"""The money path with real processes: uvicorn edge, Dramatiq workers, the clock, the sandbox
gateway, and a fake Telegram Bot API server on 127.0.0.1."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from actors.broker import broker
from catalog.schema import BotConfig
from db.models import Charge, Delivery
from gateways.payments import brcode
from gateways.payments.sandbox import SandboxGateway, sign
from ops.procs import Platform, free_port, wait_until
from tests.conftest import logs_on_failure

SECRET = {"X-Telegram-Bot-Api-Secret-Token": "tg-secret-1"}
DELIVERY = "Pagamento confirmado! Seu acesso:\n\nhttps://t.me/+AbCdEf"
BUYER = 601


def code_photos(photos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The code messages among sent photos, told by their QR image (not by their place)."""
    return [p for p in photos if isinstance(p["photo"], dict) and p["photo"].get("upload") == "pix.png"]


class Env:
    def __init__(self, platform: Platform, telegram_port: int, edge_port: int, bot: BotConfig) -> None:
        self.platform = platform
        self.telegram = f"http://127.0.0.1:{telegram_port}"
        self.edge = f"http://127.0.0.1:{edge_port}"
        self.bot = bot
        self.next_update = iter(range(1, 10_000))

    def calls(self, method: str) -> list[dict[str, Any]]:
        calls = httpx.get(f"{self.telegram}/_calls").json()
        return [c["params"] for c in calls if c["method"] == method]

    def update(self, **fields: Any) -> httpx.Response:
        update = {"update_id": next(self.next_update), **fields}
        return httpx.post(f"{self.edge}/webhook/telegram/demo", json=update, headers=SECRET)

    def start(self) -> None:
        user = {"id": BUYER, "is_bot": False, "first_name": "Buyer"}
        message = {"message_id": 1, "date": int(time.time()), "text": "/start", "from": user,
                   "chat": {"id": BUYER, "type": "private"}}  # fmt: skip
        assert self.update(message=message).status_code == 200

    def press(self, data: str, callback_id: str) -> None:
        query = {"id": callback_id, "from": {"id": BUYER, "is_bot": False, "first_name": "Buyer"},
                 "message": {"message_id": 1, "chat": {"id": BUYER, "type": "private"}}, "data": data}  # fmt: skip
        assert self.update(callback_query=query).status_code == 200

    def welcomed(self) -> None:
        """Wait for the welcome: a buyer presses a button of it, never before it came."""
        wait_until(lambda: self.calls("sendPhoto") + self.calls("sendMessage"), 30, "the welcome")

    def buy(self) -> str:
        """/start, press the first offer, wait for the code message; returns the BR Code."""
        self.start()
        self.welcomed()
        offer = self.bot.offers[0]
        self.press(f"buy:{offer.id}", "cb-buy")
        photo = wait_until(lambda: code_photos(self.calls("sendPhoto")), 30, "the code message")[0]
        code = re.search(r"<code>(.+?)</code>", photo["caption"])
        assert code is not None
        return code.group(1)

    def notify(self, body: bytes, signature: str) -> httpx.Response:
        headers = {"X-Sandbox-Signature": signature, "Content-Type": "application/json"}
        return httpx.post(f"{self.edge}/webhook/payment/main", content=body, headers=headers)

    def answers(self, callback_id: str) -> list[dict[str, Any]]:
        return [a for a in self.calls("answerCallbackQuery") if a["callback_query_id"] == callback_id]

    def deliveries(self) -> list[dict[str, Any]]:
        return [p for p in self.calls("sendMessage") if p.get("text") == DELIVERY]


@pytest.fixture
def env(tmp_path: Path, demo_bot: BotConfig, request: pytest.FixtureRequest) -> Iterator[Env]:
    telegram_port, edge_port = free_port(), free_port()
    platform = Platform(
        tmp_path,
        TELEGRAM_API_BASE=f"http://127.0.0.1:{telegram_port}",
        CONFIG_POLL_SECONDS="0.5",
        RECONCILE_INTERVAL_SECONDS="1",
        PAYMENT_FIRST_CHECK_SECONDS="1",
    )
    with logs_on_failure(platform, request):
        platform.fake_telegram(telegram_port)
        platform.edge(edge_port)
        platform.worker(queues=("updates", "funnel", "payments", "settle"), threads=8)
        yield Env(platform, telegram_port, edge_port, demo_bot)


def test_start_buy_pay_deliver_once_however_often_the_notification_comes(env: Env) -> None:
    code = env.buy()
    fields = brcode.parse(code)  # raises unless the CRC-16 checks out
    assert fields["54"] == "19.90" and fields["58"] == "BR"
    txid = brcode.parse_fields(fields["62"])["05"]
    assert [a["callback_query_id"] for a in env.calls("answerCallbackQuery")] == ["cb-buy"]

    forged = json.dumps({"event": "charge.paid", "charge_id": txid, "amount": "19.90"}).encode()
    assert env.notify(forged, sign("not-the-secret", forged)).status_code == 401

    body = forged
    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(env.notify(body, sign("whsec-1", body)).status_code))
               for _ in range(5)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [200] * 5
    wait_until(env.deliveries, 30, "the delivery")
    time.sleep(1.0)  # the other four notifications are done by now: nothing more may arrive
    assert len(env.deliveries()) == 1
    charge = Charge.get(Charge.external_id == txid)
    assert charge.status == "paid" and Delivery.get(Delivery.charge_id == charge.id).state == "sent"


def test_a_forged_notification_delivers_nothing(env: Env) -> None:
    code = env.buy()
    txid = brcode.parse_fields(brcode.parse(code)["62"])["05"]
    body = json.dumps({"event": "charge.paid", "charge_id": txid, "amount": "19.90"}).encode()
    assert env.notify(body, "0" * 64).status_code == 401
    time.sleep(1.0)
    assert env.deliveries() == [] and Charge.get(Charge.external_id == txid).status == "pending"


def sandbox_bank() -> SandboxGateway:
    return SandboxGateway(webhook_secret="whsec-1", pix_key="k", merchant_name="n", merchant_city="c",
                          bank=broker.client)  # fmt: skip


def test_a_lost_notification_is_found_by_reconciliation(env: Env) -> None:
    env.platform.clock()
    code = env.buy()
    txid = brcode.parse_fields(brcode.parse(code)["62"])["05"]
    sandbox_bank().pay(txid)  # the buyer paid; the gateway's notification never arrives
    wait_until(env.deliveries, 30, "the delivery by reconciliation")
    assert Charge.get(Charge.external_id == txid).status == "paid"


def test_the_check_button_confirms_and_delivers(env: Env) -> None:
    code = env.buy()
    txid = brcode.parse_fields(brcode.parse(code)["62"])["05"]
    charge = Charge.get(Charge.external_id == txid)
    env.press(f"chk:{charge.id}", "cb-check-1")
    pending = wait_until(lambda: env.answers("cb-check-1"), 30, "the answer to the first check")
    assert pending[0]["text"] == env.bot.text("payment_pending") and env.deliveries() == []
    sandbox_bank().pay(txid)
    env.press(f"chk:{charge.id}", "cb-check-2")
    wait_until(env.deliveries, 30, "the delivery after the check")
    [confirmed] = env.answers("cb-check-2")
    assert confirmed["text"] == env.bot.text("payment_confirmed")
