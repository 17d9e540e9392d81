import datetime as dt
import hashlib
import json
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis

import clicks
from actors import payments, pixel
from actors.broker import broker
from actors.channels import Channels
from actors.funnel import Recipient
from actors.throttle import Throttle
from catalog.schema import BotConfig
from catalog.snapshot import load_bots
from db.database import utcnow
from db.models import Charge, Click, Lead, PixelEvent
from gateways.meta import MetaGateway
from gateways.payments.base import ChargeStatus
from gateways.payments.sandbox import SandboxGateway
from tests.conftest import DEMO_CONFIG, apply_config, route_update

PIXEL = "1234567890"
TOKEN = "EAAB-pixel-token"
BUYER = 901
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)"


class FakeGraph:
    """Meta's Graph API at the HTTP boundary: records each request's events; replies on request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.replies: list[httpx.Response] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append({"path": request.url.path, "params": dict(request.url.params), **body})
        if self.replies:
            return self.replies.pop(0)
        return httpx.Response(200, json={"events_received": len(body["data"]), "fbtrace_id": "trace"})

    def events(self) -> list[dict[str, Any]]:
        return [event for request in self.requests for event in request["data"]]


def pixel_config(**bot: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(DEMO_CONFIG))
    data["bots"][0].update({"pixel_id": PIXEL, "pixel_access_token": TOKEN, **bot})
    return data


@pytest.fixture
def bot() -> BotConfig:
    apply_config(pixel_config())
    return load_bots()["demo"]


@pytest.fixture
def graph() -> FakeGraph:
    return FakeGraph()


@pytest.fixture
def meta(graph: FakeGraph) -> MetaGateway:
    return MetaGateway(httpx.Client(transport=httpx.MockTransport(graph)), "https://graph.test", "v21.0")


def click_now(redis_client: redis.Redis, query: str = "fbclid=IwAR-Click_1&utm_source=facebook&utm_campaign=bf",
              cookies: str = "_fbp=fb.1.1700000000000.987654321", ip: str = "203.0.113.9") -> clicks.Click:  # fmt: skip
    click = clicks.capture("demo", query, cookie_header=cookies, peer=ip, user_agent=UA,
                           source_url=f"https://grim.test/r/demo?{query}")  # fmt: skip
    redis_client.set(clicks.key(click.token), click.to_json(), ex=clicks.TTL_SECONDS)
    return click


def start_update(update_id: int, payload: str | None = None) -> dict[str, Any]:
    text = f"/start {payload}" if payload else "/start"
    user = {"id": BUYER, "first_name": "Bia"}
    return {"update_id": update_id, "message": {"message_id": update_id, "date": int(time.time()), "text": text,
                                                 "from": user, "chat": {"id": BUYER, "type": "private"}}}  # fmt: skip


def vip(bot: BotConfig) -> int:
    return next(o.id for o in bot.offers if o.slug == "vip")


def tracked_journey(
    bot: BotConfig, redis_client: redis.Redis, sandbox: SandboxGateway, channels: Channels, throttle: Throttle
) -> tuple[clicks.Click, Charge]:
    """click → /start token → tap → paid, each step as its worker runs it."""
    click = click_now(redis_client)
    pixel.record_click("demo", json.loads(click.to_json()))
    routed = route_update(bot, start_update(1, click.token), redis_client)
    assert routed.lead is not None
    charge = payments.checkout(bot, Recipient(routed.lead.lead_id, BUYER, True), vip(bot), 2, sandbox, channels,
                               throttle)  # fmt: skip
    assert charge is not None and charge.status == "pending"
    settled = payments.settle(charge, ChargeStatus.PAID, Decimal("19.90"), source="notification")
    assert settled.outcome == "paid"
    return click, charge


def test_a_tracked_journey_sends_each_event_once_with_the_clicks_data(
    bot: BotConfig, redis_client: redis.Redis, sandbox: SandboxGateway, channels: Channels,
    throttle: Throttle, meta: MetaGateway, graph: FakeGraph,
) -> None:  # fmt: skip
    click, charge = tracked_journey(bot, redis_client, sandbox, channels, throttle)
    assert pixel.send_pending(PIXEL, meta) == {"sent": 4}
    [request] = graph.requests  # one burst, one request
    assert request["path"] == f"/v21.0/{PIXEL}/events" and request["params"] == {"access_token": TOKEN}
    assert "test_event_code" not in request
    events = {e["event_name"]: e for e in request["data"]}
    assert sorted(events) == ["InitiateCheckout", "PageView", "Purchase", "ViewContent"]
    fbc = f"fb.1.{click.at_ms}.IwAR-Click_1"
    external_id = [hashlib.sha256(str(BUYER).encode()).hexdigest()]
    for name, event in events.items():
        user = event["user_data"]
        assert user["fbc"] == fbc and user["fbp"] == "fb.1.1700000000000.987654321"
        assert user["client_ip_address"] == "203.0.113.9" and user["client_user_agent"] == UA
        assert event["action_source"] == "website" and event["event_source_url"].startswith("https://grim.test/r/demo")
        assert user.get("external_id") == (None if name == "PageView" else external_id)
        assert abs(event["event_time"] - time.time()) < 60
    assert events["PageView"]["event_id"] == f"pv.{click.token}"
    assert events["ViewContent"]["event_id"] == "vc.demo.1"
    assert events["InitiateCheckout"]["event_id"] == f"ic.{charge.id}"
    assert events["InitiateCheckout"]["custom_data"]["value"] == 19.9
    purchase = events["Purchase"]
    assert purchase["event_id"] == f"pur.{charge.id}"
    assert purchase["custom_data"]["currency"] == "BRL" and purchase["custom_data"]["value"] == 19.9
    assert purchase["custom_data"]["content_ids"] == ["vip"]
    assert {e.state for e in PixelEvent.select()} == {"sent"}
    assert PixelEvent.get(PixelEvent.event_name == "Purchase").fbtrace_id == "trace"
    # the lead carries the click: first and last touch, UTMs, fbclid, fbc, fbp, IP, user agent
    lead = Lead.get(Lead.person_id == BUYER)
    row = Click.get(Click.token == click.token)
    assert lead.first_click_id == lead.last_click_id == row.id and row.lead_id == lead.id
    assert row.utm == {"utm_source": "facebook", "utm_campaign": "bf"} and row.fbclid == "IwAR-Click_1"
    assert (row.fbc, row.ip, row.user_agent) == (fbc, "203.0.113.9", UA)


def test_redelivered_clicks_updates_taps_and_notifications_send_nothing_twice(
    bot: BotConfig, redis_client: redis.Redis, sandbox: SandboxGateway, channels: Channels,
    throttle: Throttle, meta: MetaGateway, graph: FakeGraph,
) -> None:  # fmt: skip
    click, charge = tracked_journey(bot, redis_client, sandbox, channels, throttle)
    pixel.send_pending(PIXEL, meta)
    # every input again, as Telegram, the gateway and our own retries may repeat them
    pixel.record_click("demo", json.loads(click.to_json()))
    routed = route_update(bot, start_update(1, click.token), redis_client)
    assert routed.repeated and routed.lead is not None
    again = payments.checkout(bot, Recipient(routed.lead.lead_id, BUYER, True), vip(bot), 2, sandbox, channels,
                              throttle)  # fmt: skip
    assert again is not None and again.id == charge.id
    assert payments.settle(charge, ChargeStatus.PAID, Decimal("19.90"), source="notification").outcome == "repeated"
    assert payments.settle(charge, ChargeStatus.PAID, None, source="reconcile").outcome == "repeated"
    assert PixelEvent.select().count() == 4
    assert pixel.send_pending(PIXEL, meta) == {}
    assert len(graph.requests) == 1 and len(graph.events()) == 4


def test_a_new_start_with_a_new_click_moves_the_last_touch_only(
    bot: BotConfig, redis_client: redis.Redis, meta: MetaGateway, graph: FakeGraph
) -> None:
    first = click_now(redis_client, "utm_source=first")
    route_update(bot, start_update(1, first.token), redis_client)
    second = click_now(redis_client, "utm_source=second&fbclid=SECOND", ip="198.51.100.4")
    route_update(bot, start_update(2, second.token), redis_client)
    route_update(bot, start_update(3), redis_client)  # a plain /start later: still the last click
    lead = Lead.get(Lead.person_id == BUYER)
    assert Click.get_by_id(lead.first_click_id).utm == {"utm_source": "first"}
    assert Click.get_by_id(lead.last_click_id).utm == {"utm_source": "second"}
    pixel.send_pending(PIXEL, meta)
    views = {e["event_id"]: e for e in graph.events() if e["event_name"] == "ViewContent"}
    assert views["vc.demo.3"]["user_data"]["fbc"].endswith(".SECOND")
    assert views["vc.demo.3"]["user_data"]["client_ip_address"] == "198.51.100.4"


@pytest.mark.parametrize("payload", ["promo2024", "x" * 30, None, "other-bot"])
def test_an_unknown_expired_or_foreign_token_is_a_plain_start(
    bot: BotConfig, redis_client: redis.Redis, meta: MetaGateway, graph: FakeGraph, payload: str | None
) -> None:
    if payload == "other-bot":
        foreign = clicks.capture("another", "fbclid=X")
        redis_client.set(clicks.key(foreign.token), foreign.to_json())
        payload = foreign.token
    expired = clicks.Click("demo", clicks.new_token(time.time() - 8 * 86400), 0, fbclid="OLD")
    redis_client.set(clicks.key(expired.token), expired.to_json())
    route_update(bot, start_update(1, payload), redis_client)
    route_update(bot, start_update(2, expired.token), redis_client)
    lead = Lead.get(Lead.person_id == BUYER)
    assert lead.first_click_id is None and lead.last_click_id is None and Click.select().count() == 0
    pixel.send_pending(PIXEL, meta)
    [first, second] = graph.events()  # two ViewContents, of the chat, without click data
    assert first["action_source"] == second["action_source"] == "chat"
    assert set(first["user_data"]) == {"external_id"} and "event_source_url" not in first


def test_a_start_before_the_clicks_own_message_still_records_the_click_and_page_view_once(
    bot: BotConfig, redis_client: redis.Redis, meta: MetaGateway, graph: FakeGraph
) -> None:
    click = click_now(redis_client)
    route_update(bot, start_update(1, click.token), redis_client)  # the click's message is late
    pixel.record_click("demo", json.loads(click.to_json()))
    assert Click.select().count() == 1
    pixel.send_pending(PIXEL, meta)
    assert sorted(e["event_name"] for e in graph.events()) == ["PageView", "ViewContent"]


def test_bots_without_a_pixel_record_no_events(
    demo_bot: BotConfig, redis_client: redis.Redis, sandbox: SandboxGateway, channels: Channels,
    throttle: Throttle,
) -> None:  # fmt: skip
    tracked_journey(demo_bot, redis_client, sandbox, channels, throttle)
    assert PixelEvent.select().count() == 0
    assert Click.select().count() == 1  # the click is still the lead's attribution


def add_events(count: int, *, age: dt.timedelta = dt.timedelta(0), bot: str = "demo") -> None:
    now = utcnow()
    rows = [
        {"event_id": f"test.{i}", "event_name": "PageView", "bot_id": bot, "pixel_id": PIXEL,
         "event_time": now - age, "state": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now,
         "payload": {"event_name": "PageView", "event_id": f"test.{i}", "action_source": "chat",
                     "event_time": int(time.time() - age.total_seconds()), "user_data": {"external_id": [str(i)]}}}
        for i in range(count)
    ]  # fmt: skip
    for start in range(0, count, 500):
        PixelEvent.insert_many(rows[start : start + 500]).execute()


def test_2500_queued_events_go_out_as_3_requests(bot: BotConfig, meta: MetaGateway, graph: FakeGraph) -> None:
    add_events(2500)
    assert pixel.send_pending(PIXEL, meta) == {"sent": 2500}
    assert [len(r["data"]) for r in graph.requests] == [1000, 1000, 500]
    assert len({e["event_id"] for e in graph.events()}) == 2500
    assert PixelEvent.select().where(PixelEvent.state == "sent").count() == 2500


def test_a_400_marks_the_batch_failed_with_metas_message_and_never_retries(
    bot: BotConfig, meta: MetaGateway, graph: FakeGraph
) -> None:
    add_events(3)
    graph.replies.append(httpx.Response(400, json={"error": {"type": "OAuthException", "code": 190,
                                                             "message": "Invalid OAuth access token"}}))  # fmt: skip
    assert pixel.send_pending(PIXEL, meta) == {"failed": 3}  # the token: no smaller batch would pass
    events = list(PixelEvent.select())
    assert {e.state for e in events} == {"failed"}
    assert events[0].error == "meta: HTTP 400: OAuthException 190: Invalid OAuth access token"
    assert pixel.sweep(utcnow() + dt.timedelta(hours=1))["scheduled"] == 0
    assert pixel.send_pending(PIXEL, meta) == {} and len(graph.requests) == 1


def test_a_batch_refused_for_one_bad_event_is_split_so_the_bad_one_fails_alone(
    bot: BotConfig, graph: FakeGraph
) -> None:
    def refuse_the_bad_one(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        graph.requests.append(body)
        if any(e["event_id"] == "test.5" for e in body["data"]):
            return httpx.Response(400, json={"error": {"type": "OAuthException", "code": 100,
                                                       "message": "Invalid parameter"}})  # fmt: skip
        return httpx.Response(200, json={"events_received": len(body["data"]), "fbtrace_id": "t"})

    add_events(8)
    meta = MetaGateway(httpx.Client(transport=httpx.MockTransport(refuse_the_bad_one)), "https://graph.test", "v21.0")
    assert pixel.send_pending(PIXEL, meta) == {"sent": 7, "failed": 1}
    states = {e.event_id: e.state for e in PixelEvent.select()}
    assert states.pop("test.5") == "failed" and set(states.values()) == {"sent"}
    assert [len(r["data"]) for r in graph.requests] == [8, 4, 4, 2, 1, 1, 2]  # halves down to the bad one


def test_a_500_retries_with_backoff_until_meta_takes_the_events(
    bot: BotConfig, meta: MetaGateway, graph: FakeGraph, redis_client: redis.Redis
) -> None:
    add_events(3)
    graph.replies.append(httpx.Response(500, json={"error": {"message": "Service temporarily unavailable"}}))
    assert pixel.send_pending(PIXEL, meta) == {"retried": 3}
    events = list(PixelEvent.select())
    assert {e.state for e in events} == {"pending"} and {e.attempts for e in events} == {1}
    assert all(e.next_attempt_at > utcnow() for e in events)  # not before the backoff
    delayed = [json.loads(m) for m in redis_client.hvals("dramatiq:pixel.DQ.msgs")]
    assert [(m["actor_name"], m["args"]) for m in delayed] == [("pixel.flush", [PIXEL])]
    assert pixel.send_pending(PIXEL, meta) == {}  # too early
    PixelEvent.update(next_attempt_at=utcnow()).execute()
    assert pixel.send_pending(PIXEL, meta) == {"sent": 3}
    assert [len(r["data"]) for r in graph.requests] == [3, 3]
    assert {(e.state, e.attempts, e.error) for e in PixelEvent.select()} == {("sent", 2, None)}


def test_backoff_doubles_up_to_fifteen_minutes() -> None:
    assert [pixel.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert pixel.backoff(30) == dt.timedelta(minutes=15)


def test_events_older_than_meta_accepts_are_expired_never_sent(
    bot: BotConfig, meta: MetaGateway, graph: FakeGraph
) -> None:
    add_events(2, age=dt.timedelta(days=7, minutes=1))
    assert pixel.send_pending(PIXEL, meta) == {}  # never claimed
    assert pixel.sweep()["expired"] == 2  # and marked by the clock's sweep
    assert {e.state for e in PixelEvent.select()} == {"expired"} and graph.requests == []


def test_the_sweep_takes_back_dead_workers_claims_and_schedules_one_flush_per_pixel(
    bot: BotConfig, meta: MetaGateway, graph: FakeGraph, redis_client: redis.Redis
) -> None:
    add_events(2)
    claimed = pixel.claim(PIXEL, utcnow())  # by a worker that then died mid-request
    assert len(claimed) == 2 and pixel.send_pending(PIXEL, meta) == {}
    assert pixel.sweep() == {"reclaimed": 0, "expired": 0, "scheduled": 0}  # it may still be sending
    PixelEvent.update(claimed_at=utcnow() - dt.timedelta(minutes=10)).execute()
    assert pixel.sweep() == {"reclaimed": 2, "expired": 0, "scheduled": 1}
    assert pixel.sweep() == {"reclaimed": 0, "expired": 0, "scheduled": 0}  # its flush is already scheduled
    assert [json.loads(m)["args"] for m in redis_client.hvals("dramatiq:pixel.msgs")] == [[PIXEL]]
    assert pixel.send_pending(PIXEL, meta) == {"sent": 2}


def test_events_schedule_one_flush_per_pixel_after_their_commit(bot: BotConfig, redis_client: redis.Redis) -> None:
    route_update(bot, start_update(1), redis_client)
    route_update(bot, start_update(2), redis_client)
    delayed = [json.loads(m) for m in redis_client.hvals("dramatiq:pixel.DQ.msgs")]
    assert [(m["actor_name"], m["args"]) for m in delayed] == [("pixel.flush", [PIXEL])]
    assert delayed[0]["options"]["eta"] > time.time() * 1000  # lingers, so a burst shares a request


def test_test_event_code_and_credentials_come_from_the_bot(
    redis_client: redis.Redis, meta: MetaGateway, graph: FakeGraph
) -> None:
    apply_config(pixel_config(pixel_test_event_code="TEST123"))
    bot = load_bots()["demo"]
    route_update(bot, start_update(1), redis_client)
    pixel.send_pending(PIXEL, meta)
    assert graph.requests[0]["test_event_code"] == "TEST123"
    # a bot that stops using the pixel: its queued events fail with the reason, nothing is sent
    add_events(1)
    apply_config(json.loads(json.dumps(DEMO_CONFIG)))
    assert pixel.send_pending(PIXEL, meta) == {"failed": 1}
    assert PixelEvent.get(PixelEvent.event_id == "test.0").error == "the bot no longer sends to this pixel"


def test_one_flush_per_pixel_is_scheduled_at_a_time(bot: BotConfig) -> None:
    assert pixel.schedule(PIXEL, 0) and not pixel.schedule(PIXEL, 0)
    assert pixel.schedule("555", 0)  # another pixel has its own
    assert len(broker.client.lrange("dramatiq:pixel", 0, -1)) == 2
