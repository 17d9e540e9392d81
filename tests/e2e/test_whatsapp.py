"""A WhatsApp funnel with real processes (CONTRACT §12): uvicorn edge, Dramatiq workers, the sandbox
gateway and a fake WhatsApp (Evolution API and the Cloud API, ops/fakes/whatsapp.py) on 127.0.0.1,
which delivers the buyer's messages to the edge the way each provider does."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from catalog.schema import BotConfig
from catalog.snapshot import load_bots
from db.models import Charge, Delivery, Lead
from gateways.payments import brcode
from gateways.payments.sandbox import sign
from ops.procs import Platform, free_port, wait_until
from tests.actors.test_whatsapp import whatsapp_config
from tests.conftest import apply_config, logs_on_failure, once

BUYER = "5511977776666"


class Env:
    def __init__(self, platform: Platform, fake_port: int, edge_port: int) -> None:
        self.platform = platform
        self.fake = f"http://127.0.0.1:{fake_port}"
        self.edge = f"http://127.0.0.1:{edge_port}"
        self.bots: dict[str, BotConfig] = load_bots()

    def say(self, bot: str, text: str = "", *, number: str = BUYER, button: str | None = None,
            message_id: str | None = None) -> None:  # fmt: skip
        where = {"instance": "loja1"} if bot == "zap" else {"phone_number_id": "1234"}
        body = {**where, "from": number, "text": text, "button": button, "name": "Ana", "id": message_id}
        answer = httpx.post(f"{self.fake}/_say", json={k: v for k, v in body.items() if v is not None}).json()
        assert answer["status"] == 200, answer

    def sends(self, number: str = BUYER) -> list[dict[str, Any]]:
        calls = httpx.get(f"{self.fake}/_calls").json()
        return [c for c in calls if str(c["params"].get("number") or c["params"].get("to")) == number]

    def texts(self, number: str = BUYER) -> list[str]:
        out = []
        for c in self.sends(number):
            p = c["params"]
            out.append(p.get("text") if isinstance(p.get("text"), str) else
                       (p.get("text") or {}).get("body") or p.get("caption") or
                       ((p.get("interactive") or {}).get("body") or {}).get("text") or "")  # fmt: skip
        return out

    def pay(self, code: str) -> None:
        txid = brcode.parse_fields(brcode.parse(code)["62"])["05"]
        body = json.dumps({"event": "charge.paid", "charge_id": txid, "amount": "9.90"}).encode()
        headers = {"X-Sandbox-Signature": sign("whsec-1", body), "Content-Type": "application/json"}
        assert httpx.post(f"{self.edge}/webhook/payment/main", content=body, headers=headers).status_code == 200


def shop_config(fake: str, rate_per_minute: int) -> dict[str, Any]:
    data = whatsapp_config(evolution_url=fake, rate_per_minute=rate_per_minute)
    # A second number of the same Meta app, on a bot of its own: it gets the first number's changes.
    cloud = next(b for b in data["bots"] if b["id"] == "cloud")
    data["bots"].append({**cloud, "id": "cloud2", "number": "5511999990002", "phone_number_id": "4321"})
    return data


@pytest.fixture
def env(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Env]:
    fake_port, edge_port = free_port(), free_port()
    fake = f"http://127.0.0.1:{fake_port}"
    apply_config(shop_config(fake, 20))
    platform = Platform(
        tmp_path,
        META_GRAPH_BASE=fake,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{edge_port}",
        CONFIG_POLL_SECONDS="0.5",
        EVOLUTION_TYPING_MS="200",
        WORKER_HEARTBEAT_TIMEOUT_MS="3000",
        BROKER_MAINTENANCE_CHANCE="1000000",
    )
    with logs_on_failure(platform, request):
        platform.fake_whatsapp(fake_port)
        platform.edge(edge_port)
        # The Evolution webhook, set the way an operator does it; the Cloud one is configured at Meta.
        done = subprocess.run(
            [sys.executable, "-m", "ops", "set-webhooks"], env=platform.env, capture_output=True, text=True
        )  # fmt: skip (the Telegram bot of the config has no fake here: it fails)
        assert f"bot zap: webhook set to {platform.env['PUBLIC_BASE_URL']}/webhook/whatsapp/zap" in done.stdout
        cloud_hook = {
            "1234": {"url": f"http://127.0.0.1:{edge_port}/webhook/whatsapp/cloud", "app_secret": "app-secret"},
            "4321": {"url": f"http://127.0.0.1:{edge_port}/webhook/whatsapp/cloud2", "app_secret": "app-secret"},
        }
        httpx.post(f"{fake}/_config", json={"cloud_webhooks": cloud_hook, "apikeys": {"loja1": "EVO-KEY"},
                                            "tokens": {"1234": "CLOUD-TOKEN", "4321": "CLOUD-TOKEN"}})  # fmt: skip
        yield Env(platform, fake_port, edge_port)


@pytest.mark.parametrize("bot", ["zap", "cloud"])
def test_welcome_choice_code_payment_delivery_each_once(env: Env, bot: str) -> None:
    env.platform.worker(queues=("updates", "funnel", "payments", "settle"), threads=8)
    env.say(bot, "oi", message_id="FIRST-1")
    env.say(bot, "oi", message_id="FIRST-1")  # the provider's retry: the same message id
    parts = 1 if bot == "zap" else 2  # Evolution: the media with the numbered list as its caption
    wait_until(lambda: len(env.sends()) >= parts, 30, "the welcome")
    time.sleep(1.0)
    first = env.sends()
    assert len(first) == parts  # once
    pack = next(o for o in env.bots[bot].offers if o.slug == "pack")
    if bot == "zap":
        assert "*2* — Pack de fotos exclusivo" in first[0]["params"]["caption"]
        env.say(bot, "2")
    else:
        assert first[1]["params"]["interactive"]["type"] == "button"
        env.say(bot, "Pack", button=f"buy:{pack.id}")
    charge = wait_until(lambda: Charge.get_or_none(Charge.status == "pending"), 30, "the charge")
    wait_until(lambda: charge.br_code in env.texts(), 30, "the code message")
    wait_until(lambda: any(c["params"].get("mediatype") == "image" or c["params"].get("type") == "image"
                           for c in env.sends()[2:]), 30, "the QR image")  # fmt: skip
    assert charge.offer_id == pack.id
    env.pay(charge.br_code)
    wait_until(lambda: any("https://x/p" in t for t in env.texts()), 30, "the delivery")
    env.pay(charge.br_code)  # the notification again
    time.sleep(1.0)
    assert sum("https://x/p" in t for t in env.texts()) == 1
    assert Delivery.get(Delivery.charge_id == charge.id).state == "sent"


def test_a_cloud_change_for_another_number_of_the_app_is_answered_by_its_own_bot_only(env: Env) -> None:
    """Meta posts every number of an app to one callback: the other number's bot ignores it."""
    env.platform.worker(queues=("updates", "funnel"), threads=4)
    env.say("cloud", "oi", message_id="TO-1234")
    wait_until(lambda: len(env.sends()) >= 2, 30, "the welcome")
    time.sleep(1.5)
    senders = Counter(str(c.get("phone_number_id")) for c in env.sends())
    assert senders == {"1234": 2}, senders  # the welcome, from the number the buyer wrote to, once


@once  # the window is Redis's: database-independent
def test_rate_per_minute_holds_with_two_workers(env: Env) -> None:
    """20 a minute per number (the config): 30 first messages at once → 20 welcomes' parts go out
    now, the rest wait for the window, none twice."""
    env.platform.worker("worker-1", queues=("updates", "funnel"), threads=8)
    env.platform.worker("worker-2", queues=("updates", "funnel"), threads=8)
    numbers = [f"55119{n:08d}" for n in range(30)]
    for number in numbers:
        env.say("zap", "oi", number=number)
    started = time.time()
    wait_until(lambda: len(httpx.get(f"{env.fake}/_calls").json()) >= 20, 30, "the first minute's sends")
    time.sleep(3.0)
    calls = httpx.get(f"{env.fake}/_calls").json()
    within = [c for c in calls if c["at"] - calls[0]["at"] < 60]
    assert len(within) == 20 and time.time() - started < 55
    assert max(Counter(c["params"]["number"] for c in calls).values()) == 1  # a welcome is one message each


def test_a_worker_killed_mid_send_leaves_no_buyer_without_a_welcome(env: Env) -> None:
    httpx.post(f"{env.fake}/_config", json={"delay": 1.5})
    worker = env.platform.worker(queues=("updates", "funnel"), threads=8)
    numbers = [f"55118{n:08d}" for n in range(6)]
    for number in numbers:
        env.say("zap", "oi", number=number)
    wait_until(lambda: len(httpx.get(f"{env.fake}/_calls").json()) >= 3, 30, "sends in flight")
    worker.kill()
    httpx.post(f"{env.fake}/_config", json={"delay": 0})
    env.platform.worker("worker-2", queues=("updates", "funnel"), threads=8)
    wait_until(lambda: all(env.sends(n) for n in numbers), 60, "every buyer's welcome")
    per_number = Counter(str(c["params"]["number"]) for c in httpx.get(f"{env.fake}/_calls").json())
    assert set(per_number) == set(numbers)
    assert sum(per_number.values()) - len(numbers) <= 6  # resent only what was in flight at the kill


@once  # the window is Redis's: database-independent
@pytest.mark.timeout(150)
def test_at_10_a_minute_a_broadcast_under_way_leaves_buyers_room(env: Env) -> None:
    """CONTRACT §12 at the default rate: with a broadcast under way, a new buyer's welcome within
    10 s and the code's messages within 20 s of the choice; the broadcast paced, never in a burst."""
    from actors import broadcasts

    apply_config(shop_config(env.fake, 10))
    leads = [5511955500000 + n for n in range(40)]
    Lead.insert_many([{"bot": "zap", "person_id": n, "chat_id": n, "first_name": "L"} for n in leads]).execute()
    env.platform.worker(queues=("updates", "funnel", "payments", "broadcasts"), threads=8)
    broadcasts.create(load_bots()["zap"], "all", "Promo relâmpago")
    broadcasts.dispatch()  # the clock's job: the broadcast's lanes

    def promos() -> list[dict[str, Any]]:
        return [c for c in httpx.get(f"{env.fake}/_calls").json() if c["params"].get("text") == "Promo relâmpago"]

    wait_until(lambda: len(promos()) >= 3, 40, "the broadcast under way")
    said = time.time()
    env.say("zap", "oi", message_id="RUSH-1")
    welcome = wait_until(env.sends, 20, "the welcome")[0]
    assert welcome["at"] - said < 10
    assert len([c for c in promos() if said < c["at"] < welcome["at"]]) <= 1
    chose = time.time()
    env.say("zap", "2", message_id="RUSH-2")
    charge = wait_until(lambda: Charge.get_or_none(Charge.status == "pending"), 20, "the charge")
    wait_until(lambda: charge.br_code in env.texts(), 25, "the code message")
    code_sends = env.sends()[1:]
    assert code_sends and all(c["at"] - chose < 20 for c in code_sends), [c["at"] - chose for c in code_sends]
    times = [c["at"] for c in promos()]
    assert min(b - a for a, b in itertools.pairwise(times)) > 6.5  # one every 7.5 s
    every = [c["at"] for c in httpx.get(f"{env.fake}/_calls").json()]
    assert max(sum(1 for t in every if start <= t < start + 60) for start in every) <= 10
