"""TikTok's Events API and Utmify's orders beside Meta (CONTRACT §13): one event pipeline, each
destination its own batching, errors and order; one failing never delays another."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis
from click.testing import CliRunner

import catalog
import clicks
from actors import payments, pixel, updates
from actors.channels import Channels
from actors.funnel import Recipient
from actors.throttle import Throttle
from catalog.schema import BotConfig
from catalog.snapshot import load_bots
from db.database import utcnow
from db.models import Charge, PixelEvent
from gateways.ads import DestinationPermanent, DestinationTransient
from gateways.meta import MetaGateway
from gateways.payments.base import ChargeStatus
from gateways.payments.sandbox import SandboxGateway
from gateways.tiktok import TikTokGateway
from gateways.utmify import UtmifyGateway
from ops.cli import cli
from tests.actors.test_pixel import BUYER, PIXEL, UA, FakeGraph, pixel_config, start_update, vip
from tests.conftest import apply_config, route_update

TT_CODE = "CABC123TT"
TT_TOKEN = "tt-access-token"
UTMIFY_TOKEN = "utmify-token-1"


class Recorder:
    """An outside API at the HTTP boundary: records each request; replies from a queue, else OK."""

    def __init__(self, ok: Any) -> None:
        self.requests: list[dict[str, Any]] = []
        self.replies: list[httpx.Response] = []
        self.ok = ok

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append({"path": request.url.path, "headers": dict(request.headers),
                              "body": json.loads(request.content)})  # fmt: skip
        if self.replies:
            return self.replies.pop(0)
        return self.ok(request)


@pytest.fixture
def tiktok_api() -> Recorder:
    return Recorder(lambda r: httpx.Response(200, json={"code": 0, "message": "OK", "request_id": "rq1", "data": {}}))


@pytest.fixture
def utmify_api() -> Recorder:
    return Recorder(lambda r: httpx.Response(200, json={"OK": True}))


@pytest.fixture
def tt(tiktok_api: Recorder) -> TikTokGateway:
    return TikTokGateway(httpx.Client(transport=httpx.MockTransport(tiktok_api)), "https://tiktok.test")


@pytest.fixture
def ut(utmify_api: Recorder) -> UtmifyGateway:
    return UtmifyGateway(httpx.Client(transport=httpx.MockTransport(utmify_api)), "https://utmify.test")


@pytest.fixture
def meta() -> MetaGateway:
    return MetaGateway(httpx.Client(transport=httpx.MockTransport(FakeGraph())), "https://graph.test", "v21.0")


def all_config(**bot: Any) -> dict[str, Any]:
    data = pixel_config(tiktok_pixel_code=TT_CODE, tiktok_access_token=TT_TOKEN, utmify_token=UTMIFY_TOKEN, **bot)
    data["bots"][0]["offers"][0]["bump"] = "pack"
    data["bots"][0]["offers"].append({"id": "pack", "label": "Pack", "price": "9.90", "hidden": True,
                                      "delivery_link": "https://t.me/+P"})  # fmt: skip
    return data


@pytest.fixture
def bot() -> BotConfig:
    apply_config(all_config())
    return load_bots()["demo"]


def journey(bot: BotConfig, redis_client: redis.Redis, sandbox: SandboxGateway, channels: Channels,
            throttle: Throttle, *, bump: bool = True) -> tuple[clicks.Click, Charge]:  # fmt: skip
    query = "ttclid=E.C.P.tt-click_1&utm_source=tiktok&utm_campaign=natal&src=story&sck=v1"
    click = clicks.capture("demo", query, cookie_header="_ttp=2Qx_ttp-cookie", peer="203.0.113.9", user_agent=UA,
                           source_url=f"https://grim.test/r/demo?{query}")  # fmt: skip
    redis_client.set(clicks.key(click.token), click.to_json(), ex=clicks.TTL_SECONDS)
    pixel.record_click("demo", json.loads(click.to_json()))
    routed = route_update(bot, start_update(1, click.token), redis_client)
    assert routed.lead is not None
    lead = Recipient(routed.lead.lead_id, BUYER, True)
    updates.record_bump_answer(bot, lead.lead_id, vip(bot), bump)  # the bump question answered
    charge = payments.checkout(bot, lead, vip(bot), 2, sandbox, channels, throttle)
    assert charge is not None and charge.status == "pending"
    assert payments.settle(charge, ChargeStatus.PAID, charge.amount, source="notification").outcome == "paid"
    return click, charge


def test_one_journey_reaches_meta_tiktok_and_utmify_once_each(
    bot: BotConfig, redis_client: redis.Redis, sandbox: SandboxGateway, channels: Channels,
    throttle: Throttle, meta: MetaGateway, tt: TikTokGateway, ut: UtmifyGateway, tiktok_api: Recorder,
    utmify_api: Recorder,
) -> None:  # fmt: skip
    _, charge = journey(bot, redis_client, sandbox, channels, throttle)
    assert pixel.send_pending(PIXEL, meta) == {"sent": 4}
    assert pixel.send_pending(TT_CODE, tt) == {"sent": 3}
    assert pixel.send_pending("demo", ut) == {"sent": 2}
    for _ in range(2):  # nothing twice
        assert pixel.send_pending(TT_CODE, tt) == {} and pixel.send_pending("demo", ut) == {}
    [request] = tiktok_api.requests
    assert request["path"] == "/open_api/v1.3/event/track/" and request["headers"]["access-token"] == TT_TOKEN
    assert request["body"]["event_source"] == "web" and request["body"]["event_source_id"] == TT_CODE
    events = {e["event"]: e for e in request["body"]["data"]}
    assert sorted(events) == ["CompletePayment", "InitiateCheckout", "ViewContent"]
    for event in events.values():
        external_id = hashlib.sha256(str(BUYER).encode()).hexdigest()
        assert event["user"] == {"ttclid": "E.C.P.tt-click_1", "ttp": "2Qx_ttp-cookie", "ip": "203.0.113.9",
                                 "user_agent": UA, "external_id": external_id}  # fmt: skip
        assert event["page"]["url"].startswith("https://grim.test/r/demo?ttclid=")
    assert events["CompletePayment"]["event_id"] == f"pur.{charge.id}"
    assert events["CompletePayment"]["properties"]["value"] == 29.8
    assert events["CompletePayment"]["properties"]["currency"] == "BRL"
    waiting, paid = (r["body"] for r in utmify_api.requests)
    assert [r["path"] for r in utmify_api.requests] == ["/api-credentials/orders"] * 2
    assert utmify_api.requests[0]["headers"]["x-api-token"] == UTMIFY_TOKEN
    assert (waiting["status"], paid["status"]) == ("waiting_payment", "paid")
    assert waiting["orderId"] == paid["orderId"] == str(charge.id)
    assert waiting["createdAt"] == paid["createdAt"] == charge.created_at.strftime("%Y-%m-%d %H:%M:%S")
    assert waiting["approvedDate"] is None and paid["approvedDate"] is not None
    assert paid["paymentMethod"] == "pix" and paid["commission"]["totalPriceInCents"] == 2980
    assert [(p["id"], p["priceInCents"]) for p in paid["products"]] == [("vip", 1990), ("pack", 990)]
    assert paid["trackingParameters"] == {"src": "story", "sck": "v1", "utm_source": "tiktok", "utm_campaign": "natal",
                                          "utm_medium": None, "utm_content": None, "utm_term": None}  # fmt: skip
    assert paid["customer"]["name"] == "Bia" and paid["customer"]["email"].endswith(".invalid")
    # a refund: the order says so, once
    assert payments.settle(charge, ChargeStatus.REFUNDED, None, source="notification").outcome == "refunded"
    assert pixel.send_pending("demo", ut) == {"sent": 1} and pixel.send_pending("demo", ut) == {}
    refunded = utmify_api.requests[-1]["body"]
    assert refunded["status"] == "refunded" and refunded["refundedAt"] and refunded["createdAt"] == paid["createdAt"]
    shown = json.loads(CliRunner().invoke(cli, ["pixel-events", "--destination", "utmify", "--json"]).output)
    assert [(e["destination"], e["event"], e["state"], e["value"]) for e in shown["events"]] == [
        ("utmify", "refunded", "sent", None), ("utmify", "paid", "sent", 29.8),
        ("utmify", "waiting_payment", "sent", None)]  # fmt: skip
    tiktok = json.loads(CliRunner().invoke(cli, ["pixel-events", "--destination", "tiktok", "--json"]).output)
    assert {tuple(e["matched_by"]) for e in tiktok["events"]} == {("xid", "ttclid", "ttp", "ip", "ua")}


def test_an_order_state_waits_for_the_one_before_it(
    bot: BotConfig, redis_client: redis.Redis, sandbox: SandboxGateway, channels: Channels,
    throttle: Throttle, ut: UtmifyGateway, utmify_api: Recorder,
) -> None:  # fmt: skip
    utmify_api.replies.append(httpx.Response(503, json={"message": "down"}))
    journey(bot, redis_client, sandbox, channels, throttle, bump=False)
    assert pixel.send_pending("demo", ut) == {"retried": 1}  # waiting_payment failed: paid is not even taken
    assert [r["body"]["status"] for r in utmify_api.requests] == ["waiting_payment"]
    PixelEvent.update(next_attempt_at=utcnow()).execute()  # the backoff has passed
    assert pixel.send_pending("demo", ut) == {"sent": 2}
    assert [r["body"]["status"] for r in utmify_api.requests] == ["waiting_payment", "waiting_payment", "paid"]


def test_a_failing_destination_delays_no_other_and_loses_nothing(
    bot: BotConfig, redis_client: redis.Redis, sandbox: SandboxGateway, channels: Channels,
    throttle: Throttle, meta: MetaGateway, tt: TikTokGateway, tiktok_api: Recorder,
) -> None:  # fmt: skip
    tiktok_api.replies.extend([httpx.Response(500)] * 3)
    journey(bot, redis_client, sandbox, channels, throttle)
    assert pixel.send_pending(PIXEL, meta) == {"sent": 4}
    for _ in range(3):
        assert pixel.send_pending(TT_CODE, tt) == {"retried": 3}
        PixelEvent.update(next_attempt_at=utcnow()).where(PixelEvent.destination == "tiktok").execute()
    assert pixel.send_pending(TT_CODE, tt) == {"sent": 3}
    states = {(e.destination, e.state) for e in PixelEvent.select()}
    assert states == {("meta", "sent"), ("tiktok", "sent"), ("utmify", "pending")}


def test_refusals_are_kept_with_the_destinations_message(
    bot: BotConfig, redis_client: redis.Redis, sandbox: SandboxGateway, channels: Channels,
    throttle: Throttle, tt: TikTokGateway, tiktok_api: Recorder, ut: UtmifyGateway, utmify_api: Recorder,
) -> None:  # fmt: skip
    tiktok_api.replies.append(httpx.Response(200, json={"code": 40001, "message": "Invalid access token"}))
    utmify_api.replies.append(httpx.Response(400, json={"message": "orderId must be a string"}))
    journey(bot, redis_client, sandbox, channels, throttle, bump=False)
    assert pixel.send_pending(TT_CODE, tt) == {"failed": 3}
    assert pixel.send_pending("demo", ut) == {"failed": 1, "sent": 1}
    assert PixelEvent.get(PixelEvent.destination == "tiktok").error == "tiktok: code 40001: Invalid access token"
    assert PixelEvent.get((PixelEvent.destination == "utmify") & (PixelEvent.state == "failed")).error == (
        "utmify: HTTP 400: orderId must be a string"
    )


def test_no_order_for_a_charge_older_than_seven_days(
    bot: BotConfig, redis_client: redis.Redis, sandbox: SandboxGateway, channels: Channels, throttle: Throttle
) -> None:
    _, charge = journey(bot, redis_client, sandbox, channels, throttle, bump=False)
    Charge.update(created_at=utcnow() - dt.timedelta(days=8)).where(Charge.id == charge.id).execute()
    old = Charge.get_by_id(charge.id)
    payments.settle(old, ChargeStatus.REFUNDED, None, source="notification")
    assert not PixelEvent.select().where(PixelEvent.event_name == "refunded").exists()


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"tiktok_pixel_code": TT_CODE}, "bots[0].tiktok_access_token"),
        ({"tiktok_access_token": TT_TOKEN}, "bots[0].tiktok_pixel_code"),
        ({"tiktok_pixel_code": "bad code!", "tiktok_access_token": TT_TOKEN}, "bots[0].tiktok_pixel_code"),
        ({"utmify_token": 5}, "bots[0].utmify_token"),
    ],
)
def test_bad_destination_keys_are_named(extra: dict[str, Any], key: str) -> None:
    data = pixel_config(**extra)
    with pytest.raises(catalog.ConfigError) as exc:
        catalog.parse(data, set())
    assert exc.value.key == key


def test_the_adapters_map_errors() -> None:
    def gateway(response: httpx.Response) -> TikTokGateway:
        return TikTokGateway(httpx.Client(transport=httpx.MockTransport(lambda r: response)), "https://t.test")

    event = [{"event": "ViewContent"}]
    with pytest.raises(DestinationTransient):
        gateway(httpx.Response(200, json={"code": 40100, "message": "Too many requests"})).send("P", {}, event)
    with pytest.raises(DestinationTransient):
        gateway(httpx.Response(502)).send("P", {}, event)
    with pytest.raises(DestinationPermanent):
        gateway(httpx.Response(200, json={"code": 40002, "message": "bad"})).send("P", {}, event)
    utm = UtmifyGateway(httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(429))), "https://u.test")
    with pytest.raises(DestinationTransient):
        utm.send("demo", {"token": "x"}, [{"orderId": "1"}])
    assert Decimal("29.80") * 100 == 2980


def test_a_destination_down_gets_one_request_per_flush_not_one_per_event(
    bot: BotConfig, ut: UtmifyGateway, utmify_api: Recorder
) -> None:
    now = utcnow()
    for charge_id in (1, 2, 3):
        PixelEvent.create(destination="utmify", event_id=f"order.{charge_id}.waiting_payment", charge_id=charge_id,
                          event_name="waiting_payment", bot_id="demo", pixel_id="demo", event_time=now,
                          payload={"orderId": str(charge_id)}, next_attempt_at=now)  # fmt: skip
    utmify_api.replies.append(httpx.Response(503))
    assert pixel.send_pending("demo", ut) == {"retried": 3}
    assert len(utmify_api.requests) == 1  # the others wait out the same backoff
    PixelEvent.update(next_attempt_at=utcnow()).execute()
    assert pixel.send_pending("demo", ut) == {"sent": 3}
