"""The WhatsApp channels (CONTRACT §12) through the same stages as Telegram: Evolution and the Cloud
API faked at the HTTP boundary (httpx.MockTransport), everything of ours real."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections import Counter
from decimal import Decimal
from typing import Any

import dramatiq
import httpx
import pytest
import redis

import settings
from actors import delivery, health, payments, pixel, pools, updates
from actors.broker import broker, counters, retry_when
from actors.channels import Channels
from actors.funnel import Recipient
from actors.outbox import Send, deliver
from actors.throttle import Throttle
from catalog.schema import BotConfig
from catalog.snapshot import load_bots
from db.database import utcnow
from db.models import Charge, Delivery, Followup, Lead, OutboundMessage, PixelEvent, ProcessedUpdate
from gateways.channel import ChannelGaveUp, Inbound, Person, Request, update_id_of
from gateways.evolution import EvolutionGateway, parse_event
from gateways.payments.base import ChargeStatus
from gateways.payments.sandbox import SandboxGateway
from gateways.telegram import TelegramGateway
from gateways.whatsapp import click_token
from gateways.whatsapp_cloud import OUTSIDE_WINDOW, CloudGateway, parse_webhook
from tests.conftest import DEMO_CONFIG, apply_config, route_update

NUMBER = 5511988887777
EVOLUTION_URL = "http://127.0.0.1:9"  # nothing listens there: a stray call fails at once, locally
GRAPH = "http://127.0.0.1:9/graph"


def whatsapp_config(**evolution: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(DEMO_CONFIG))
    demo = data["bots"][0]
    offers = [o for o in demo["offers"] if "delivery_chat_id" not in o]
    offers.append({"id": "pack", "label": "Pack de fotos exclusivo", "price": "9.90", "delivery_link": "https://x/p"})
    base = {"gateway": "main", "welcome": demo["welcome"], "offers": offers,
            "pixel_id": "1234", "pixel_access_token": "META-TOKEN"}  # fmt: skip
    data["bots"] += [
        {"id": "zap", "channel": "evolution", "number": "5511999990000", "webhook_secret": "wh-secret-1",
         "evolution_url": EVOLUTION_URL, "instance": "loja1", "apikey": "EVO-KEY", **base, **evolution},
        {"id": "cloud", "channel": "whatsapp_cloud", "number": "5511999990001", "phone_number_id": "1234",
         "waba_id": "5678", "access_token": "CLOUD-TOKEN", "app_secret": "app-secret", "verify_token": "verify-me",
         **base},
    ]  # fmt: skip
    return data


class FakeWhatsAppTransport:
    """Evolution and the Cloud API at the HTTP boundary: records each call, answers like them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.replies: list[httpx.Response | Exception] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.headers.get("content-type", "").startswith("multipart/"):
            body: dict[str, Any] = {"upload": hashlib.sha256(request.content).hexdigest()}
        else:
            body = json.loads(request.content) if request.content else {}
        self.calls.append((path, body, dict(request.headers)))
        if self.replies:
            reply = self.replies.pop(0)
            if isinstance(reply, Exception):
                raise reply
            return reply
        if path.endswith("/media"):
            return httpx.Response(200, json={"id": "media-1"})
        if path.startswith("/graph"):
            return httpx.Response(200, json={"messages": [{"id": f"wamid.{len(self.calls)}"}]})
        if "/connectionState/" in path:
            return httpx.Response(200, json={"instance": {"state": "open"}})
        return httpx.Response(201, json={"key": {"id": f"3EB0{len(self.calls)}", "fromMe": True}})

    def sends(self) -> list[tuple[str, dict[str, Any]]]:
        return [(p.rsplit("/", 2)[-2] if "/message/" in p else p.rsplit("/", 1)[-1], b) for p, b, _ in self.calls]


@pytest.fixture
def fake_wa() -> FakeWhatsAppTransport:
    return FakeWhatsAppTransport()


@pytest.fixture
def wa_channels(telegram: TelegramGateway, fake_wa: FakeWhatsAppTransport, redis_client: redis.Redis) -> Channels:
    client = httpx.Client(transport=httpx.MockTransport(fake_wa))
    return Channels(telegram, EvolutionGateway(client), CloudGateway(client, GRAPH, "v21.0"), cache=redis_client,
                    on_refused=health.refused)  # fmt: skip


@pytest.fixture
def bots() -> dict[str, BotConfig]:
    apply_config(whatsapp_config())
    return load_bots()


def message(text: str, message_id: str, *, number: int = NUMBER, ctwa: str | None = None) -> Inbound:
    return Inbound(update_id_of(message_id), "message", Person(number, "Ana"), number, text=text,
                   payload=click_token(text), ctwa_clid=ctwa)  # fmt: skip


def route(bot: BotConfig, event: Inbound, channels: Channels, throttle: Throttle) -> updates.Routed:
    """What the updates.route actor does with one event of a WhatsApp body."""
    routed = updates.route_event(bot, event, first_message_starts=True)
    updates.follow_up(bot, routed, channels, throttle)
    return routed


def queued(queue: str) -> list[dramatiq.Message[Any]]:
    return [dramatiq.Message.decode(raw) for raw in broker.client.hvals(f"dramatiq:{queue}.msgs")]


# --- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"token": "123:ABC"}, "bots[1].token"),
        ({"apikey": None}, "bots[1].apikey"),
        ({"rate_per_minute": 0}, "bots[1].rate_per_minute"),
        ({"rate_per_minute": 6001}, "bots[1].rate_per_minute"),
        ({"number": "+55 11 9999"}, "bots[1].number"),
        ({"evolution_url": "evo.example.com"}, "bots[1].evolution_url"),
        ({"channel": "signal"}, "bots[1].channel"),
        ({"app_secret": "x"}, "bots[1].app_secret"),
    ],
)
def test_a_bad_whatsapp_key_is_named_and_nothing_is_applied(change: dict[str, Any], key: str) -> None:
    import catalog

    data = whatsapp_config()
    data["bots"] = data["bots"][:2]
    data["bots"][1].update(change)
    data["bots"][1] = {k: v for k, v in data["bots"][1].items() if v is not None}
    with pytest.raises(catalog.ConfigError) as exc:
        catalog.parse(data, set())
    assert exc.value.key == key


def test_a_whatsapp_bot_cannot_deliver_a_telegram_chat() -> None:
    import catalog

    data = whatsapp_config()
    data["bots"][1]["offers"].append({"id": "vip2", "label": "VIP", "price": "1.00", "delivery_chat_id": -1001})
    with pytest.raises(catalog.ConfigError) as exc:
        catalog.parse(data, set())
    assert exc.value.key == "bots[1].offers[2].delivery_chat_id"


def test_whatsapp_keys_are_stored_encrypted_and_loaded(bots: dict[str, BotConfig]) -> None:
    from db.database import db

    zap = bots["zap"]
    assert zap.channel == "evolution" and zap.whatsapp is not None and zap.whatsapp.rate_per_minute == 10
    assert bots["cloud"].whatsapp.rate_per_minute == 4800  # type: ignore[union-attr]
    raw = db.execute_sql("SELECT channel_settings FROM bot WHERE id = 'zap'").fetchone()[0]
    assert "EVO-KEY" not in raw and "EVO-KEY" not in repr(zap)


# --- Evolution: the funnel ---------------------------------------------------------------------------


def test_evolution_first_message_gets_the_welcome_once_with_a_numbered_list(
    bots: dict[str, BotConfig], wa_channels: Channels, throttle: Throttle, fake_wa: FakeWhatsAppTransport
) -> None:
    zap = bots["zap"]
    routed = route(zap, message("oi", "3EB0AAA"), wa_channels, throttle)
    assert routed.kind == "start"
    again = route(zap, message("oi", "3EB0AAA"), wa_channels, throttle)  # Evolution's retry: the same id
    assert again.repeated and again.kind == "start"
    [(method, body)] = fake_wa.sends()
    path, _, headers = fake_wa.calls[0]
    assert path == "/message/sendMedia/loja1" and headers["apikey"] == "EVO-KEY"
    assert method == "sendMedia" and body["number"] == str(NUMBER) and body["media"].endswith("welcome.jpg")
    assert "*1* — VIP mensal" in body["caption"] and "*2* — Pack de fotos exclusivo" in body["caption"]
    lead = Lead.get(Lead.chat_id == NUMBER)
    assert lead.menu == [f"buy:{o.id}" for o in zap.buttons]
    # a later message of the same number is no new start
    assert route(zap, message("olá?", "3EB0AAB"), wa_channels, throttle).kind == "message"


def test_evolution_number_answer_opens_the_charge_with_code_and_qr(
    bots: dict[str, BotConfig], wa_channels: Channels, throttle: Throttle, fake_wa: FakeWhatsAppTransport,
    sandbox: SandboxGateway,
) -> None:  # fmt: skip
    zap = bots["zap"]
    route(zap, message("oi", "M1"), wa_channels, throttle)
    routed = route(zap, message("2", "M2"), wa_channels, throttle)
    pack = next(o for o in zap.offers if o.slug == "pack")
    assert routed.kind == "callback" and routed.data == f"buy:{pack.id}"
    [checkout] = [m for m in queued("payments") if m.actor_name == "payments.checkout"]
    assert checkout.args[3] == pack.id
    lead = routed.lead
    assert lead is not None
    fake_wa.calls.clear()
    charge = payments.checkout(zap, lead, pack.id, routed.update_id, sandbox, wa_channels, throttle)
    assert charge is not None and charge.status == "pending"
    texts = fake_wa.sends()
    assert [m for m, _ in texts] == ["sendText", "sendText", "sendMedia"]
    intro, code, qr = (b for _, b in texts)
    assert "*1* — Já paguei" in intro["text"] and charge.br_code not in intro["text"]
    assert code["text"] == charge.br_code  # the whole body is the code: easy to copy
    assert (
        qr["mediatype"] == "image" and qr["mimetype"] == "image/png" and base64.b64decode(qr["media"])[:4] == b"\x89PNG"
    )
    assert Lead.get_by_id(lead.lead_id).menu == [f"chk:{charge.id}"]
    # paid → the delivery, as a text with the offer's link
    fake_wa.calls.clear()
    payments.settle(charge, ChargeStatus.PAID, Decimal("9.90"), source="notification")
    assert delivery.deliver_charge(charge.id, wa_channels, throttle) == "sent"
    [(method, body)] = fake_wa.sends()
    assert method == "sendText" and "https://x/p" in body["text"]
    assert delivery.deliver_charge(charge.id, wa_channels, throttle) == "sent" and len(fake_wa.calls) == 1


def test_an_answer_that_picks_nothing_gets_a_hint_at_most_once_an_hour(
    bots: dict[str, BotConfig], wa_channels: Channels, throttle: Throttle, fake_wa: FakeWhatsAppTransport
) -> None:
    zap = bots["zap"]
    route(zap, message("oi", "H1"), wa_channels, throttle)
    fake_wa.calls.clear()
    route(zap, message("quanto custa?", "H2"), wa_channels, throttle)
    route(zap, message("quanto custa?", "H2"), wa_channels, throttle)  # a repeat: no second hint
    route(zap, message("9", "H3"), wa_channels, throttle)  # no such option: within the hour, no second hint
    assert [b["text"] for _, b in fake_wa.sends()] == [zap.text("choose_hint")]
    assert OutboundMessage.get(OutboundMessage.key.startswith(f"hint:zap:{update_id_of('H2')}")).state == "sent"


def test_a_returning_lead_whose_menu_is_gone_or_stale_gets_the_offers_again(
    bots: dict[str, BotConfig], wa_channels: Channels, throttle: Throttle, fake_wa: FakeWhatsAppTransport
) -> None:
    zap = bots["zap"]
    route(zap, message("oi", "R1"), wa_channels, throttle)  # the welcome: a menu
    Lead.update(menu_at=utcnow() - dt.timedelta(hours=25)).execute()  # a day and more later
    fake_wa.calls.clear()
    routed = route(zap, message("1", "R2"), wa_channels, throttle)  # "1" of a menu seen yesterday picks nothing
    assert routed.kind == "message" and routed.data is None and Charge.select().count() == 0
    [(_, welcome)] = fake_wa.sends()
    assert "*1* — " in welcome["caption"] and zap.text("choose_hint") not in welcome["caption"]
    route(zap, message("2", "R3"), wa_channels, throttle)  # the fresh menu answers now
    assert Charge.select().count() == 0 and ProcessedUpdate.get(
        ProcessedUpdate.update_id == update_id_of("R3")).owed.startswith("checkout:")  # fmt: skip
    Lead.update(menu=None, menu_at=None).execute()  # a lead with no menu at all
    fake_wa.calls.clear()
    route(zap, message("bom dia", "R4"), wa_channels, throttle)
    assert [b["caption"] for _, b in fake_wa.sends()] == [welcome["caption"]]


def test_a_message_carrying_a_click_token_starts_again_and_attaches_the_click(
    bots: dict[str, BotConfig], wa_channels: Channels, throttle: Throttle, redis_client: redis.Redis
) -> None:
    import clicks

    zap = bots["zap"]
    route(zap, message("oi", "T1"), wa_channels, throttle)
    click = clicks.capture("zap", "utm_source=fb&fbclid=ABC", cookie_header="", peer="203.0.113.9",
                           forwarded_for=None, user_agent="Mozilla/5.0", source_url="https://x/r/zap")  # fmt: skip
    redis_client.set(clicks.key(click.token), click.to_json())
    text = zap.text("whatsapp_start", token=click.token)
    routed = route(zap, message(text, "T2"), wa_channels, throttle)
    assert routed.kind == "start"
    lead = Lead.get(Lead.chat_id == NUMBER)
    assert lead.last_click_id is not None


# --- sending like the seed system wanted, done right ----------------------------------------------


def test_transient_failures_are_retried_at_1_2_and_4_minutes_then_dead_lettered(
    bots: dict[str, BotConfig], wa_channels: Channels, throttle: Throttle, fake_wa: FakeWhatsAppTransport
) -> None:
    channel = wa_channels.of(bots["zap"])
    send = Send(Request("owed:1", "sendText", {"number": str(NUMBER), "text": "acesso"}), if_unknown="resend")
    delays = []
    for _ in range(3):
        fake_wa.replies.append(httpx.Response(500, json={"response": {"message": ["Internal error"]}}))
        with pytest.raises(dramatiq.Retry) as retry:
            deliver(channel, throttle, NUMBER, [send])
        delays.append(retry.value.delay)
        assert OutboundMessage.get().state == "pending" and OutboundMessage.get().error == "Internal error"
    assert delays == [60_000, 120_000, 240_000]
    fake_wa.replies.append(httpx.Response(503, json={"response": {"message": ["down"]}}))
    with pytest.raises(ChannelGaveUp) as gave_up:
        deliver(channel, throttle, NUMBER, [send])
    assert not retry_when(8)(0, gave_up.value)  # the actor's message goes to the dead letter queue
    assert OutboundMessage.get().state == "pending"  # still owed: `ops retry-dead` sends it
    assert deliver(channel, throttle, NUMBER, [send]).sent == ["owed:1"]
    assert len(fake_wa.calls) == 5


def test_rate_per_minute_is_shared_and_waits_are_not_failures(
    wa_channels: Channels, throttle: Throttle, fake_wa: FakeWhatsAppTransport
) -> None:
    apply_config(whatsapp_config(rate_per_minute=2))
    channel = wa_channels.of(load_bots()["zap"])
    sends = [Send(Request(f"k{i}", "sendText", {"number": str(n), "text": "oi"})) for i, n in enumerate((1, 2, 3))]
    deliver(channel, throttle, 11, [sends[0]])
    deliver(channel, throttle, 12, [sends[1]])
    with pytest.raises(dramatiq.Retry) as wait:
        deliver(channel, throttle, 13, [sends[2]])
    assert 50_000 < (wait.value.delay or 0) <= 60_000  # the window is a minute
    row = OutboundMessage.get(OutboundMessage.key == "k2")
    assert row.state == "pending" and row.attempts == 0  # a wait gives its attempt back
    assert len(fake_wa.calls) == 2


def test_a_disconnected_number_pauses_its_sends_and_comes_back(
    bots: dict[str, BotConfig], wa_channels: Channels, throttle: Throttle, fake_wa: FakeWhatsAppTransport
) -> None:
    channel = wa_channels.of(bots["zap"])
    send = Send(Request("owed:d", "sendText", {"number": str(NUMBER), "text": "acesso"}), if_unknown="resend")
    closed = {"status": 500, "error": "Internal Server Error", "response": {"message": ["Error: Connection Closed"]}}
    fake_wa.replies.append(httpx.Response(500, json=closed))
    with pytest.raises(dramatiq.Retry) as paused:
        deliver(channel, throttle, NUMBER, [send])
    assert paused.value.delay == settings.BOT_RECHECK_SECONDS * 1000
    assert "zap" in health.unhealthy(broker.client) and OutboundMessage.get().attempts == 0
    with pytest.raises(dramatiq.Retry):  # paused: nothing reaches Evolution meanwhile
        deliver(channel, throttle, NUMBER, [send])
    assert len(fake_wa.calls) == 1
    fake_wa.replies.append(httpx.Response(200, json={"instance": {"state": "close"}}))
    assert pools.recheck(wa_channels) == {"healthy": 0, "unhealthy": 1}
    assert pools.recheck(wa_channels) == {"healthy": 1, "unhealthy": 0}  # connectionState: open
    assert deliver(channel, throttle, NUMBER, [send]).sent == ["owed:d"]


def test_evolution_connection_updates_mark_the_number(bots: dict[str, BotConfig], throttle: Throttle) -> None:
    [down] = parse_event({"event": "connection.update", "data": {"state": "close"}})
    pools.connection("zap", down.data or "")
    assert "zap" in health.unhealthy(broker.client)
    pools.connection("zap", "open")
    assert "zap" not in health.unhealthy(broker.client)
    assert throttle.try_acquire("zap", 1, rate=(10, 60_000)) == 0  # the pause went with it


def test_a_number_not_on_whatsapp_is_unreachable_and_never_in_an_error_text(
    bots: dict[str, BotConfig], wa_channels: Channels, throttle: Throttle, fake_wa: FakeWhatsAppTransport
) -> None:
    channel = wa_channels.of(bots["zap"])
    jid = f"{NUMBER}@s.whatsapp.net"
    fake_wa.replies.append(httpx.Response(400, json={"status": 400, "response": {"message": [
        {"exists": False, "jid": jid, "number": str(NUMBER)}]}}))  # fmt: skip
    outcome = deliver(channel, throttle, NUMBER, [Send(Request("m", "sendText", {"number": str(NUMBER), "text": "x"}))])
    assert outcome.blocked and str(NUMBER) not in (outcome.failed or "")
    assert str(NUMBER) not in (OutboundMessage.get().error or "")


# --- the Cloud API ------------------------------------------------------------------------------------


def test_cloud_offers_whose_titles_cut_to_the_same_are_refused_naming_both() -> None:
    import catalog

    data = whatsapp_config()
    cloud = next(b for b in data["bots"] if b["id"] == "cloud")
    cloud["offers"][0]["label"] = "Pack de fotos exclusivo – mensal"
    cloud["offers"][1]["label"] = "Pack de fotos exclusivo – anual"  # the same first 20 characters
    with pytest.raises(catalog.ConfigError) as exc:
        catalog.parse(data, set())
    assert exc.value.key == "bots[2].offers[1].label" and "'vip'" in str(exc.value) and "'pack'" in str(exc.value)
    cloud["offers"][1]["hidden"] = True  # not shown as a button: no collision
    catalog.parse(data, set())
    zap = next(b for b in data["bots"] if b["id"] == "zap")
    zap["offers"] = cloud["offers"]  # Evolution: a numbered list with the whole labels
    cloud["offers"][1]["hidden"] = False
    with pytest.raises(catalog.ConfigError) as again:
        catalog.parse(data, set())
    assert again.value.key == "bots[2].offers[1].label"  # still the Cloud bot's, not Evolution's


def test_an_evolution_click_to_whatsapp_lead_has_chat_events_meta_accepts(
    bots: dict[str, BotConfig], wa_channels: Channels, throttle: Throttle, fake_wa: FakeWhatsAppTransport
) -> None:
    """Meta refuses business_messaging events without the WhatsApp business account, which an
    Evolution number does not have: they go as chat events."""
    route(bots["zap"], message("oi", "CTWA-EVO", ctwa="CTWA-2"), wa_channels, throttle)
    [view] = [e for e in PixelEvent.select() if e.event_name == "ViewContent"]
    assert view.payload["action_source"] == "chat" and "messaging_channel" not in view.payload
    assert "ctwa_clid" not in view.payload["user_data"]


def cloud_message(bot: BotConfig, body: dict[str, Any]) -> Inbound:
    value = {"metadata": {"phone_number_id": "1234"}, "contacts": [{"wa_id": str(NUMBER), "profile": {"name": "Ana"}}],
             "messages": [{"from": str(NUMBER), "timestamp": "1", **body}]}  # fmt: skip
    entry = {"id": "5678", "changes": [{"field": "messages", "value": value}]}
    [event] = parse_webhook({"object": "whatsapp_business_account", "entry": [entry]}, "1234")
    return event


def test_cloud_welcome_has_reply_buttons_and_a_button_reply_buys(
    bots: dict[str, BotConfig], wa_channels: Channels, throttle: Throttle, fake_wa: FakeWhatsAppTransport
) -> None:
    cloud = bots["cloud"]
    first = cloud_message(cloud, {"id": "wamid.1", "type": "text", "text": {"body": "oi"},
                                  "referral": {"source_type": "ad", "ctwa_clid": "CTWA-1"}})  # fmt: skip
    assert route(cloud, first, wa_channels, throttle).kind == "start"
    media, buttons = (b for _, b in fake_wa.sends())
    assert fake_wa.calls[0][0] == "/graph/v21.0/1234/messages"
    assert fake_wa.calls[0][2]["authorization"] == "Bearer CLOUD-TOKEN"
    assert media["type"] == "image" and media["image"]["link"].endswith("welcome.jpg")
    interactive = buttons["interactive"]
    assert interactive["type"] == "button" and interactive["body"]["text"] == cloud.welcome_text
    titles = [b["reply"]["title"] for b in interactive["action"]["buttons"]]
    assert titles == [o.label[:20] for o in cloud.buttons] and all(len(t) <= 20 for t in titles)
    pack = next(o for o in cloud.offers if o.slug == "pack")
    reply = {"type": "button_reply", "button_reply": {"id": f"buy:{pack.id}", "title": "Pack"}}
    press = cloud_message(cloud, {"id": "wamid.2", "type": "interactive", "interactive": reply})
    routed = route(cloud, press, wa_channels, throttle)
    assert routed.kind == "callback" and routed.data == f"buy:{pack.id}"
    # ctwa_clid kept with the lead; its events go as business messaging on WhatsApp
    lead = Lead.get(Lead.chat_id == NUMBER)
    assert lead.ctwa_clid == "CTWA-1"
    [view] = [e for e in PixelEvent.select() if e.event_name == "ViewContent" and e.bot_id == "cloud"]
    assert view.payload["action_source"] == "business_messaging" and view.payload["messaging_channel"] == "whatsapp"
    user = view.payload["user_data"]
    assert user["ctwa_clid"] == "CTWA-1" and user["whatsapp_business_account_id"] == "5678"
    assert user["ph"] == [hashlib.sha256(str(NUMBER).encode()).hexdigest()]
    assert "meta" in pixel.targets(cloud)


def test_cloud_lists_more_than_three_choices_and_uploads_the_qr(
    wa_channels: Channels, throttle: Throttle, fake_wa: FakeWhatsAppTransport, sandbox: SandboxGateway
) -> None:
    data = whatsapp_config()
    data["bots"][2]["offers"] += [{"id": f"o{i}", "label": f"Oferta número {i} com nome longo", "price": "1.00",
                                   "delivery_link": "https://x"} for i in range(3)]  # fmt: skip
    apply_config(data)
    cloud = load_bots()["cloud"]
    route(cloud, cloud_message(cloud, {"id": "wamid.L", "type": "text", "text": {"body": "oi"}}), wa_channels, throttle)
    listed = fake_wa.sends()[-1][1]["interactive"]
    assert listed["type"] == "list" and len(listed["action"]["sections"][0]["rows"]) == 5
    assert all(len(r["title"]) <= 24 for r in listed["action"]["sections"][0]["rows"])
    lead = Recipient.of(Lead.get(Lead.chat_id == NUMBER))
    fake_wa.calls.clear()
    vip = cloud.buttons[0]
    charge = payments.checkout(cloud, lead, vip.id, 77, sandbox, wa_channels, throttle)
    assert charge is not None
    paths = [p for p, _, _ in fake_wa.calls]
    assert paths == ["/graph/v21.0/1234/messages", "/graph/v21.0/1234/messages", "/graph/v21.0/1234/media",
                     "/graph/v21.0/1234/messages"]  # fmt: skip
    intro, code, _, image = (b for _, b, _ in fake_wa.calls)
    assert intro["interactive"]["action"]["buttons"][0]["reply"]["id"] == f"chk:{charge.id}"
    assert code["text"]["body"] == charge.br_code and image["image"] == {"id": "media-1"}


def test_cloud_sends_nothing_outside_the_24_hour_window(
    bots: dict[str, BotConfig], wa_channels: Channels, throttle: Throttle, fake_wa: FakeWhatsAppTransport
) -> None:
    cloud = bots["cloud"]
    route(cloud, cloud_message(cloud, {"id": "wamid.W", "type": "text", "text": {"body": "oi"}}), wa_channels, throttle)
    fake_wa.calls.clear()
    Lead.update(last_seen_at=utcnow() - dt.timedelta(hours=25)).execute()
    channel = wa_channels.of(cloud)
    outcome = deliver(
        channel, throttle, NUMBER, [Send(Request("late", "messages", {"to": str(NUMBER), "type": "text"}))]
    )
    assert outcome.failed == OUTSIDE_WINDOW and fake_wa.calls == []
    assert OutboundMessage.get(OutboundMessage.key == "late").state == "failed"


def test_evolution_bodies_skip_our_own_messages_groups_and_statuses() -> None:
    def upsert(key: dict[str, Any]) -> dict[str, Any]:
        return {"event": "messages.upsert", "data": {"key": key, "message": {"conversation": "oi"}}}

    assert parse_event(upsert({"remoteJid": f"{NUMBER}@s.whatsapp.net", "fromMe": True, "id": "A"})) == []
    assert parse_event(upsert({"remoteJid": "1203630@g.us", "fromMe": False, "id": "B"})) == []
    assert parse_event(upsert({"remoteJid": "status@broadcast", "fromMe": False, "id": "C"})) == []
    assert parse_event({"event": "messages.update", "data": {}}) == []
    assert parse_event(upsert({"remoteJid": "1987654321@lid", "fromMe": False, "id": "L"})) == []  # no number
    [linked] = parse_event(upsert({"remoteJid": "1987654321@lid", "remoteJidAlt": f"{NUMBER}@s.whatsapp.net",
                                   "fromMe": False, "id": "L2"}))  # fmt: skip
    assert linked.chat_id == NUMBER
    [event] = parse_event(upsert({"remoteJid": f"{NUMBER}@s.whatsapp.net", "fromMe": False, "id": "D"}))
    assert event.chat_id == NUMBER and event.text == "oi" and event.update_id == update_id_of("D")
    statuses = {"metadata": {"phone_number_id": "1234"}, "statuses": [{"id": "x"}]}
    assert parse_webhook({"entry": [{"changes": [{"field": "messages", "value": statuses}]}]}, "1234") == []


def test_broadcasts_and_downsells_reach_whatsapp_leads_through_the_channel(
    bots: dict[str, BotConfig], wa_channels: Channels, throttle: Throttle, fake_wa: FakeWhatsAppTransport
) -> None:
    from actors import broadcasts
    from actors.broadcasts import BroadcastError

    apply_config(whatsapp_config(rate_per_minute=600))  # marketing paced at 60 s / 480: the lane's sleeps are short
    zap = load_bots()["zap"]
    route(zap, message("oi", "B1"), wa_channels, throttle)
    route(zap, message("oi", "B2", number=NUMBER + 1), wa_channels, throttle)
    fake_wa.calls.clear()
    with pytest.raises(BroadcastError, match="--paid"):
        broadcasts.create(zap, "all", "Promo!", paid=True)
    row = broadcasts.create(zap, "all", "Promo de Natal!", offer="pack")
    broadcasts.dispatch()
    broker.client.set(broadcasts.lane_key(row.id, 0), "tok")
    assert broadcasts.run_lane(row.id, 0, "tok", wa_channels, throttle) == ("end", 0)
    sent = fake_wa.sends()
    assert sorted(b["number"] for _, b in sent) == [str(NUMBER), str(NUMBER + 1)]
    assert all(b["text"].startswith("Promo de Natal!") and "*1* — Pack de fotos exclusivo" in b["text"]
               for _, b in sent)  # fmt: skip
    [summary] = broadcasts.summaries(broadcast_id=row.id)
    assert summary.sent == 2
    # the broadcast's "1" buys its offer (the menu the lead saw last)
    pack = next(o for o in zap.offers if o.slug == "pack")
    assert route(zap, message("1", "B3"), wa_channels, throttle).data == f"buy:{pack.id}"


def test_on_a_10_a_minute_number_a_code_stays_owed_past_ten_minutes(
    bots: dict[str, BotConfig], demo_bot: BotConfig, wa_channels: Channels, throttle: Throttle
) -> None:
    """A code is worth 10 minutes on Telegram; on a number that sends 10 a minute a buyer may be
    behind a long line: the debt and its message live as long as 600 sends take there (an hour)."""
    from actors import redrive

    zap = bots["zap"]
    assert zap.whatsapp is not None and zap.whatsapp.rate_per_minute == 10
    route(zap, message("oi", "P1"), wa_channels, throttle)
    route(zap, message("2", "P2"), wa_channels, throttle)
    [checkout] = [m for m in queued("payments") if m.actor_name == "payments.checkout"]
    assert checkout.options["max_age"] == 3600 * 1000
    broker.client.delete("dramatiq:payments.msgs", "dramatiq:payments")  # lost with Redis
    tg = route_update(demo_bot, {"update_id": 77, "callback_query": {
        "id": "cb77", "from": {"id": 42, "first_name": "Bia"}, "data": f"buy:{demo_bot.offers[0].id}",
        "message": {"message_id": 1, "chat": {"id": 42, "type": "private"}}}})  # fmt: skip
    assert tg.kind == "callback"
    eleven_minutes_ago = utcnow() - dt.timedelta(minutes=11)
    ProcessedUpdate.update(received_at=eleven_minutes_ago, due_at=utcnow()).where(
        ProcessedUpdate.owed.startswith("checkout:")).execute()  # fmt: skip
    redrive.redrive()
    [again] = [m for m in queued("payments") if m.actor_name == "payments.checkout"]
    assert again.args[0] == "zap" and 48 * 60_000 < again.options["max_age"] <= 49 * 60_000  # the hour's rest
    assert ProcessedUpdate.get(ProcessedUpdate.update_id == 77).due_at is None  # Telegram's: abandoned


def test_a_downsell_backlog_on_a_10_a_minute_number_waits_in_the_database_not_in_redis(
    wa_channels: Channels, throttle: Throttle, fake_wa: FakeWhatsAppTransport
) -> None:
    """A backlog of downsells due at once on one 10/min number (40 here; ops/bench followups: 5,000):
    each round claims what the number can send in two rounds (one); a send that must wait puts its
    row back (due when the slot frees) instead of waiting as a delayed message, so no row has two
    live messages and the queue stays small."""
    from actors import followups

    downsell = {"when": "not_bought", "delay": "1h", "text": "Volte! 50% off.", "offer": "pack", "discount_percent": 50}
    apply_config(whatsapp_config(downsells=[downsell]))
    zap = load_bots()["zap"]
    pack = next(o for o in zap.offers if o.slug == "pack")
    now = utcnow()
    leads = [Lead.create(bot="zap", person_id=NUMBER + n, chat_id=NUMBER + n, first_name="L") for n in range(40)]
    rows = [{"key": f"down:{lead.id}:0", "bot_id": "zap", "lead_id": lead.id, "kind": "downsell", "position": 0,
             "offer_id": pack.id, "amount": Decimal("4.95"), "due_at": now, "state": "scheduled", "attempts": 0,
             "created_at": now} for lead in leads]  # fmt: skip
    Followup.insert_many(rows).execute()
    assert followups.budget(zap) == 1
    for _ in range(3):  # three rounds of the clock
        followups.dispatch()
        for message in queued("followups"):
            followups.send_or_put_back(message.args[0], wa_channels, throttle)
        broker.client.delete("dramatiq:followups", "dramatiq:followups.msgs")  # the worker took them
        assert broker.client.llen("dramatiq:followups.DQ") == 0  # nothing waits in Redis
    assert len(fake_wa.sends()) == 1  # marketing's pace: one every 7.5 s at 10 a minute
    states = Counter(f.state for f in Followup.select())
    assert states == {"sent": 1, "scheduled": 39}
    waiting = Followup.select().where((Followup.state == "scheduled") & (Followup.due_at > utcnow()))
    assert 1 <= waiting.count() <= 2  # the ones that found the pace went back, due when it frees
    assert all(f.due_at <= utcnow() + dt.timedelta(seconds=8) for f in waiting)


def failed_status(wamid: str, code: int, title: str) -> dict[str, Any]:
    value = {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "1234"},
             "statuses": [{"id": wamid, "status": "failed", "recipient_id": str(NUMBER),
                           "errors": [{"code": code, "title": title}]}]}  # fmt: skip
    return {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": value}]}]}


def test_a_cloud_failed_status_resends_an_owed_welcome_records_a_lost_delivery_and_corrects_a_broadcast(
    bots: dict[str, BotConfig],
    wa_channels: Channels,
    throttle: Throttle,
    fake_wa: FakeWhatsAppTransport,
    sandbox: SandboxGateway,
) -> None:
    """Meta takes a message (200, a wamid) and later posts a `failed` status for it: the outbox row
    turns failed with the code and title; a welcome is sent again when the error may pass; a
    delivery that will not pass is recorded failed; a broadcast does not count it sent."""
    from actors import broadcasts, redrive

    cloud = bots["cloud"]
    first = cloud_message(cloud, {"id": "wamid.in1", "type": "text", "text": {"body": "oi"}})
    route(cloud, first, wa_channels, throttle)
    welcome = OutboundMessage.select().where(OutboundMessage.key.startswith("welcome:cloud:")).order_by(
        OutboundMessage.id.desc()).first()  # fmt: skip
    assert welcome.state == "sent" and welcome.provider_id.startswith("wamid.")
    [parsed] = parse_webhook(failed_status(welcome.provider_id, 131000, "Something went wrong"), "1234")
    assert parsed.kind == "status" and parsed.data == welcome.provider_id
    sends_before = len(fake_wa.sends())
    updates.route("cloud", failed_status(welcome.provider_id, 131000, "Something went wrong"))
    updates.route("cloud", failed_status(welcome.provider_id, 131000, "Something went wrong"))  # Meta repeats it
    row = OutboundMessage.get_by_id(welcome.id)
    assert row.state == "pending" and row.error == "whatsapp 131000: Something went wrong"
    [debt] = redrive.due(dt.timedelta(seconds=30))  # the clock re-drives the welcome
    assert debt.update_id == first.update_id
    from actors import funnel

    lead = Lead.get(Lead.bot == "cloud")
    funnel.send_welcome(cloud, Recipient.of(lead), first.update_id, wa_channels, throttle)
    assert len(fake_wa.sends()) == sends_before + 1 and OutboundMessage.get_by_id(welcome.id).state == "sent"

    # a paid delivery Meta will not deliver (131026): recorded on the delivery, not retried
    pack = next(o for o in cloud.offers if o.slug == "pack")
    reply = {"type": "button_reply", "button_reply": {"id": f"buy:{pack.id}", "title": "Pack"}}
    routed = route(cloud, cloud_message(cloud, {"id": "wamid.in2", "type": "interactive", "interactive": reply}),
                   wa_channels, throttle)  # fmt: skip
    assert routed.lead is not None
    charge = payments.checkout(cloud, routed.lead, pack.id, routed.update_id, sandbox, wa_channels, throttle)
    assert charge is not None
    payments.settle(charge, ChargeStatus.PAID, Decimal("9.90"), source="notification")
    assert delivery.deliver_charge(charge.id, wa_channels, throttle) == "sent"
    sent = OutboundMessage.get(OutboundMessage.key == f"delivery:{charge.id}")
    updates.route("cloud", failed_status(sent.provider_id, 131026, "Message undeliverable"))
    lost = Delivery.get(Delivery.charge_id == charge.id)
    assert lost.state == "failed" and lost.error == "whatsapp 131026: Message undeliverable"
    assert OutboundMessage.get_by_id(sent.id).state == "failed"
    from click.testing import CliRunner

    from ops.cli import cli

    shown = CliRunner().invoke(cli, ["status"]).output
    assert "cloud: 1 delivery (OWED, not delivered): whatsapp 131026: Message undeliverable" in shown

    # a broadcast's send Meta failed is not counted sent
    row = broadcasts.create(cloud, "all", "Promo!")
    broadcasts.dispatch()
    broker.client.set(broadcasts.lane_key(row.id, 0), "tok")
    broadcasts.run_lane(row.id, 0, "tok", wa_channels, throttle)
    promo = OutboundMessage.get(OutboundMessage.key == f"broadcast:{row.id}:{lead.id}")
    updates.route("cloud", failed_status(promo.provider_id, 131049, "This message was not delivered"))
    [summary] = broadcasts.summaries(broadcast_id=row.id)
    assert summary.sent == 0 and summary.failed == 1


def test_a_cloud_buyer_paying_after_the_24_hours_gets_the_access_template_or_the_seller_is_told(
    wa_channels: Channels, throttle: Throttle, fake_wa: FakeWhatsAppTransport, sandbox: SandboxGateway
) -> None:
    """A delivery outside the 24-hour window goes as the bot's approved `access_template` with the
    delivery as its one parameter; without one it is recorded failed, counted for the alert and
    listed by `ops status` (the seller can act: add a template, or ask the buyer to write)."""
    from click.testing import CliRunner

    from actors.metrics import read
    from ops.cli import cli

    def paid_late(message_id: str) -> int:
        cloud = load_bots()["cloud"]
        pack = next(o for o in cloud.offers if o.slug == "pack")
        route(cloud, cloud_message(cloud, {"id": f"{message_id}-oi", "type": "text", "text": {"body": "oi"}}),
              wa_channels, throttle)  # fmt: skip
        reply = {"type": "button_reply", "button_reply": {"id": f"buy:{pack.id}", "title": "Pack"}}
        routed = route(cloud, cloud_message(cloud, {"id": message_id, "type": "interactive", "interactive": reply}),
                       wa_channels, throttle)  # fmt: skip
        assert routed.lead is not None
        charge = payments.checkout(cloud, routed.lead, pack.id, routed.update_id, sandbox, wa_channels, throttle)
        assert charge is not None
        Lead.update(last_seen_at=utcnow() - dt.timedelta(hours=30)).execute()  # paid a day and more later
        payments.settle(charge, ChargeStatus.PAID, Decimal("9.90"), source="notification")
        fake_wa.calls.clear()
        return charge.id

    data = whatsapp_config()
    apply_config(data)
    first = paid_late("wamid.late1")
    assert delivery.deliver_charge(first, wa_channels, throttle) == "failed" and fake_wa.calls == []
    assert Delivery.get(Delivery.charge_id == first).error == OUTSIDE_WINDOW
    counters.flush()
    counted = {labels["code"]: v for name, labels, v in read(broker.client) if name == "grimbots_whatsapp_failed_total"}
    assert counted.get("outside_window") == 1
    assert "cloud: 1 delivery (OWED, not delivered): " + OUTSIDE_WINDOW in CliRunner().invoke(cli, ["status"]).output
    # the buyer writes again: the window is open, the delivery goes
    value = {"metadata": {"phone_number_id": "1234"}, "contacts": [{"wa_id": str(NUMBER), "profile": {"name": "Ana"}}],
             "messages": [{"from": str(NUMBER), "timestamp": "1", "id": "wamid.back", "type": "text",
                           "text": {"body": "cadê meu acesso?"}}]}  # fmt: skip
    updates.route("cloud", {"entry": [{"changes": [{"field": "messages", "value": value}]}]})
    [again] = [m for m in queued("settle") if m.actor_name == "delivery.deliver"]
    assert again.args == (first,)
    fake_wa.calls.clear()
    assert delivery.deliver_charge(first, wa_channels, throttle) == "sent"
    assert any("https://x/p" in str(b) for _, b in fake_wa.sends())
    fake_wa.calls.clear()

    cloud = next(b for b in data["bots"] if b["id"] == "cloud")
    cloud.update(access_template="acesso_liberado", access_template_language="pt_BR")
    apply_config(data)
    second = paid_late("wamid.late2")
    assert delivery.deliver_charge(second, wa_channels, throttle) == "sent"
    [(_, body)] = fake_wa.sends()
    template = body["template"]
    assert body["type"] == "template" and template["name"] == "acesso_liberado"
    assert template["language"] == {"code": "pt_BR"}
    [parameter] = template["components"][0]["parameters"]
    assert "https://x/p" in parameter["text"] and "\n" not in parameter["text"]


def test_an_access_template_is_checked_at_apply() -> None:
    from catalog import ConfigError, parse

    data = whatsapp_config()
    cloud = next(b for b in data["bots"] if b["id"] == "cloud")
    cloud["access_template"] = "Acesso Liberado"
    with pytest.raises(ConfigError, match=r"bots\[\d\]\.access_template"):
        parse(data, {"main"})
    cloud.pop("access_template")
    cloud["access_template_language"] = "pt_BR"
    with pytest.raises(ConfigError, match="needs access_template"):
        parse(data, {"main"})
    zap = next(b for b in data["bots"] if b["id"] == "zap")
    zap["access_template"] = "acesso"
    cloud.pop("access_template_language")
    with pytest.raises(ConfigError, match="is for channel = 'whatsapp_cloud'"):
        parse(data, {"main"})
