"""Attribution with real processes: uvicorn edge, Dramatiq workers, the sandbox gateway, a fake
Telegram and a fake Meta Graph API on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from peewee import fn

from catalog.schema import BotConfig
from catalog.snapshot import load_bots
from db.models import PixelEvent
from gateways.payments import brcode
from gateways.payments.sandbox import sign
from ops.procs import Platform, free_port, wait_until
from tests.conftest import DEMO_CONFIG, apply_config, logs_on_failure
from tests.e2e.test_money_path import BUYER, Env, code_photos

PIXEL = "1234567890"
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"


class TrackedEnv(Env):
    def __init__(self, platform: Platform, telegram_port: int, edge_port: int, meta_port: int, bot: BotConfig) -> None:
        super().__init__(platform, telegram_port, edge_port, bot)
        self.meta = f"http://127.0.0.1:{meta_port}"

    def click(self, query: str) -> httpx.Response:
        headers = {"User-Agent": UA, "Cookie": "_fbp=fb.1.1700000000000.555", "X-Forwarded-For": "203.0.113.9"}
        return httpx.get(f"{self.edge}/r/demo?{query}", headers=headers, follow_redirects=False)

    def start_update(self, update_id: int, text: str) -> httpx.Response:
        user = {"id": BUYER, "is_bot": False, "first_name": "Buyer"}
        message = {"message_id": update_id, "date": int(time.time()), "text": text, "from": user,
                   "chat": {"id": BUYER, "type": "private"}}  # fmt: skip
        update = {"update_id": update_id, "message": message}
        return httpx.post(f"{self.edge}/webhook/telegram/demo", json=update, headers=SECRET)

    def press_update(self, update_id: int, data: str) -> httpx.Response:
        query = {"id": f"cb-{update_id}", "from": {"id": BUYER, "is_bot": False, "first_name": "Buyer"},
                 "message": {"message_id": 1, "chat": {"id": BUYER, "type": "private"}}, "data": data}  # fmt: skip
        update = {"update_id": update_id, "callback_query": query}
        return httpx.post(f"{self.edge}/webhook/telegram/demo", json=update, headers=SECRET)

    def code_paid(self) -> bytes:
        """The gateway's charge.paid notification for the code the buyer was sent (once it was)."""
        photo = wait_until(lambda: code_photos(self.calls("sendPhoto")), 30, "the code message")[0]
        code = re.search(r"<code>(.+?)</code>", photo["caption"])
        assert code is not None
        txid = brcode.parse_fields(brcode.parse(code.group(1))["62"])["05"]
        return json.dumps({"event": "charge.paid", "charge_id": txid, "amount": "19.90"}).encode()

    def meta_requests(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.meta}/_calls").json()  # type: ignore[no-any-return]


SECRET = {"X-Telegram-Bot-Api-Secret-Token": "tg-secret-1"}


@pytest.fixture
def env(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TrackedEnv]:
    data = json.loads(json.dumps(DEMO_CONFIG))
    data["bots"][0].update({"pixel_id": PIXEL, "pixel_access_token": "EAAB-e2e"})
    apply_config(data)
    bot = load_bots()["demo"]
    telegram_port, edge_port, meta_port = free_port(), free_port(), free_port()
    platform = Platform(
        tmp_path,
        TELEGRAM_API_BASE=f"http://127.0.0.1:{telegram_port}",
        META_GRAPH_BASE=f"http://127.0.0.1:{meta_port}",
        TRUSTED_PROXIES="127.0.0.1",  # the test client plays the load balancer in front of the edge
        CONFIG_POLL_SECONDS="0.5",
        META_LINGER_MS="300",
    )
    with logs_on_failure(platform, request):
        platform.fake_telegram(telegram_port)
        platform.fake_meta(meta_port)
        platform.edge(edge_port)
        platform.worker(queues=("updates", "funnel", "payments", "settle", "pixel"), threads=8)
        yield TrackedEnv(platform, telegram_port, edge_port, meta_port, bot)


def test_a_tracked_journey_reaches_meta_once_per_event_with_the_clicks_data(env: TrackedEnv) -> None:
    httpx.post(f"{env.meta}/_config", json={"errors": [500]})  # Meta's first answer is a 500: retried
    response = env.click("fbclid=IwAR-e2e_Click&utm_source=facebook&utm_campaign=bf")
    assert response.status_code == 302
    match = re.fullmatch(r"https://t\.me/demo_bot\?start=([A-Za-z0-9_-]{1,64})", response.headers["location"])
    assert match is not None
    token = match.group(1)

    for _ in range(2):  # Telegram repeats the /start update
        assert env.start_update(1, f"/start {token}").status_code == 200
    env.welcomed()  # the press is on the welcome's button
    offer = env.bot.offers[0]
    for _ in range(2):  # and the button press
        assert env.press_update(2, f"buy:{offer.id}").status_code == 200
    body = env.code_paid()
    for _ in range(3):  # the gateway repeats its notification
        assert env.notify(body, sign("whsec-1", body)).status_code == 200
    wait_until(env.deliveries, 30, "the delivery")

    def all_sent() -> bool:
        return PixelEvent.select().where(PixelEvent.state == "sent").count() == 4

    wait_until(all_sent, 40, "four events sent")
    time.sleep(1.5)  # anything still in flight has arrived by now
    requests = env.meta_requests()
    assert requests[0]["access_token"] == "EAAB-e2e" and requests[0]["pixel_id"] == PIXEL
    taken = [e for r in requests[1:] for e in r["body"]["data"]]  # the first request got the 500
    names = sorted(e["event_name"] for e in taken)
    assert names == ["InitiateCheckout", "PageView", "Purchase", "ViewContent"]  # each exactly once
    assert {e["event_id"] for e in requests[0]["body"]["data"]} <= {e["event_id"] for e in taken}  # retried
    by_name = {e["event_name"]: e for e in taken}
    click_ms = by_name["PageView"]["user_data"]["fbc"].split(".")[2]
    for name, event in by_name.items():
        user = event["user_data"]
        assert user["fbc"] == f"fb.1.{click_ms}.IwAR-e2e_Click" and user["fbp"] == "fb.1.1700000000000.555"
        assert user["client_ip_address"] == "203.0.113.9" and user["client_user_agent"] == UA
        if name != "PageView":
            assert user["external_id"] == [hashlib.sha256(str(BUYER).encode()).hexdigest()]
    purchase = by_name["Purchase"]["custom_data"]
    assert purchase["currency"] == "BRL" and purchase["value"] == 19.9
    assert abs(int(click_ms) / 1000 - time.time()) < 120


@pytest.mark.timeout(120)
def test_tiktok_and_utmify_beside_meta_and_a_failing_one_delays_no_other(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data = json.loads(json.dumps(DEMO_CONFIG))
    data["bots"][0].update({"pixel_id": PIXEL, "pixel_access_token": "EAAB-e2e", "tiktok_pixel_code": "TTCODE1",
                            "tiktok_access_token": "tt-token", "utmify_token": "ut-token"})  # fmt: skip
    apply_config(data)
    bot = load_bots()["demo"]
    telegram_port, edge_port, meta_port, ads_port = free_port(), free_port(), free_port(), free_port()
    ads = f"http://127.0.0.1:{ads_port}"
    platform = Platform(tmp_path, TELEGRAM_API_BASE=f"http://127.0.0.1:{telegram_port}",
                        META_GRAPH_BASE=f"http://127.0.0.1:{meta_port}", TIKTOK_API_BASE=ads, UTMIFY_API_BASE=ads,
                        TRUSTED_PROXIES="127.0.0.1", CONFIG_POLL_SECONDS="0.5", META_LINGER_MS="300")  # fmt: skip
    with logs_on_failure(platform, request):
        platform.fake_telegram(telegram_port)
        platform.fake_meta(meta_port)
        platform.fake_ads(ads_port)
        platform.edge(edge_port)
        platform.worker(queues=("updates", "funnel", "payments", "settle", "pixel"), threads=8)
        env = TrackedEnv(platform, telegram_port, edge_port, meta_port, bot)
        httpx.post(f"{ads}/_config", json={"fail_for": {"utmify": 4}})  # Utmify down for a while
        location = httpx.get(f"{env.edge}/r/demo?ttclid=TT-e2e&utm_source=tiktok&utm_campaign=natal",
                             headers={"User-Agent": UA, "Cookie": "_ttp=ttp-e2e"}).headers["location"]  # fmt: skip
        token = location.rsplit("=", 1)[1]
        assert env.start_update(1, f"/start {token}").status_code == 200
        env.welcomed()
        assert env.press_update(2, f"buy:{bot.offers[0].id}").status_code == 200
        body = env.code_paid()
        assert env.notify(body, sign("whsec-1", body)).status_code == 200

        def sent(destination: str) -> int:
            return PixelEvent.select().where((PixelEvent.destination == destination)
                                             & (PixelEvent.state == "sent")).count()  # fmt: skip

        wait_until(lambda: sent("meta") == 4 and sent("tiktok") == 3, 30, "Meta's four and TikTok's three")
        wait_until(lambda: sent("utmify") == 2, 60, "the order's two states, once Utmify is back")
        calls = httpx.get(f"{ads}/_calls").json()
        orders = [c for c in calls if c["api"] == "utmify"]
        # Meta and TikTok did not wait for Utmify: theirs were sent (as recorded, not as this test's
        # polling happened to notice) before Utmify took its order.
        others = PixelEvent.select(fn.MAX(PixelEvent.sent_at)).where(PixelEvent.destination.in_(["meta", "tiktok"]))
        others_done = others.scalar().replace(tzinfo=dt.UTC).timestamp()
        assert orders[-1]["at"] > others_done
        statuses = [c["body"]["status"] for c in orders]
        assert statuses[-2:] == ["waiting_payment", "paid"] and set(statuses[:-2]) <= {"waiting_payment"}
        assert orders[-1]["headers"]["x-api-token"] == "ut-token"
        assert orders[-1]["body"]["trackingParameters"]["utm_campaign"] == "natal"
        tiktok = [e for c in calls if c["api"] == "tiktok" for e in c["body"]["data"]]
        assert sorted(e["event"] for e in tiktok) == ["CompletePayment", "InitiateCheckout", "ViewContent"]
        assert {e["user"]["ttclid"] for e in tiktok} == {"TT-e2e"} and {e["user"]["ttp"] for e in tiktok} == {"ttp-e2e"}
