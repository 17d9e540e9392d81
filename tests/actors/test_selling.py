"""Selling more (CONTRACT §8): order bumps, upsells after a delivery, downsells that recover a lead
who did not buy or pay, and the durable schedule under the follow-ups."""

from __future__ import annotations

import copy
import datetime as dt
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

import catalog
from actors import delivery, followups, payments, updates
from actors.channels import Channels
from actors.funnel import Recipient, offer_choices
from actors.throttle import Throttle
from catalog.schema import BotConfig
from catalog.snapshot import load_bots
from db import sql
from db.database import db, transaction, utcnow
from db.models import BumpAnswer, Charge, Delivery, Followup, OutboundMessage
from gateways.channel import ChannelError
from gateways.payments.base import ChargeStatus
from gateways.payments.sandbox import SandboxGateway
from tests.conftest import DEMO_CONFIG, FakeTelegramTransport, apply_config, route_update, telegram_error

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo.toml"
USER = {"id": 777, "first_name": "Ana"}


def selling_config(**bot_extra: Any) -> dict[str, Any]:
    data = copy.deepcopy(DEMO_CONFIG)
    bot = data["bots"][0]
    bot["offers"][0]["bump"] = "pack"
    bot["offers"].append({"id": "pack", "label": "Pack extra", "price": "9.90", "hidden": True,
                          "delivery_text": "Seu pack:", "delivery_link": "https://t.me/+Pack"})  # fmt: skip
    bot["bumps"] = {"pack": {"text": "Leva o pack?", "accept": "Sim", "decline": "Não"}}
    bot["upsells"] = [{"after_offer": "anual", "delay": "0s", "text": "Leve o pack!", "offer": "pack"}]
    bot["downsells"] = [
        {"when": "not_bought", "delay": "1h", "text": "Volte!", "offer": "vip", "price": "15.00"},
        {"when": "unpaid", "delay": "10m", "text": "50% off", "offer": "vip", "discount_percent": 50},
    ]
    bot.update(bot_extra)
    return data


@pytest.fixture
def bot() -> BotConfig:
    apply_config(selling_config())
    return load_bots()["demo"]


def offer_id(bot: BotConfig, slug: str) -> int:
    return next(o.id for o in bot.offers if o.slug == slug)


def start(bot: BotConfig, update_id: int) -> Recipient:
    update = {"update_id": update_id, "message": {"message_id": 1, "date": 0, "text": "/start", "from": USER,
                                                  "chat": {"id": 777, "type": "private"}}}  # fmt: skip
    routed = route_update(bot, update)
    assert routed.lead is not None
    return routed.lead


def press(bot: BotConfig, update_id: int, data: str) -> updates.Routed:
    update = {"update_id": update_id, "callback_query": {"id": f"cb{update_id}", "from": USER, "data": data,
              "message": {"message_id": 1, "chat": {"id": 777, "type": "private"}}}}  # fmt: skip
    return route_update(bot, update)


# --- configuration -----------------------------------------------------------------------------


def test_the_catalog_resolves_bumps_upsells_and_downsells(bot: BotConfig) -> None:
    vip, anual, pack = offer_id(bot, "vip"), offer_id(bot, "anual"), offer_id(bot, "pack")
    assert bot.bump_for(bot.offer(vip)).id == pack and bot.offer(pack).hidden  # type: ignore[union-attr, arg-type]
    assert [o.slug for o in bot.buttons] == ["vip", "anual"]  # a hidden offer has no button
    assert [c.data for c in offer_choices(bot)] == [f"buy:{vip}", f"buy:{anual}"]
    assert bot.bumps["pack"].text == "Leva o pack?"
    [upsell] = bot.upsells
    assert (upsell.after_offer, upsell.offer, upsell.price, upsell.delay_seconds) == (
        "anual", "pack", Decimal("9.90"), 0)  # fmt: skip
    assert anual != pack
    assert [(d.when, d.price, d.delay_seconds) for d in bot.downsells] == [
        ("not_bought", Decimal("15.00"), 3600), ("unpaid", Decimal("9.95"), 600)]  # fmt: skip


def test_the_example_file_shows_all_of_it() -> None:
    known: set[str] = set()
    parsed = catalog.load(EXAMPLE, known)
    bot = parsed.bots[0]
    assert bot.bumps and bot.upsells and bot.downsells and any(o.hidden for o in bot.offers)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda b: b["offers"][0].update(bump="vip"), "bots[0].offers[0].bump"),
        (lambda b: b["offers"][0].update(bump="elsewhere"), "bots[0].offers[0].bump"),
        (lambda b: b["offers"][2].update(hidden="yes"), "bots[0].offers[2].hidden"),
        (lambda b: b["bumps"].update(nope={"text": "x"}), "bots[0].bumps.nope"),
        (lambda b: b["bumps"]["pack"].update(color="red"), "bots[0].bumps.pack.color"),
        (lambda b: b["upsells"][0].update(after_offer="nope"), "bots[0].upsells[0].after_offer"),
        (lambda b: b["upsells"][0].update(offer="nope"), "bots[0].upsells[0].offer"),
        (lambda b: b["upsells"][0].update(delay="10 minutes"), "bots[0].upsells[0].delay"),
        (lambda b: b["downsells"][0].update(when="later"), "bots[0].downsells[0].when"),
        (lambda b: b["downsells"][0].pop("delay"), "bots[0].downsells[0].delay"),
        (lambda b: b["downsells"][0].update(delay="400d"), "bots[0].downsells[0].delay"),
        (lambda b: b["downsells"][1].update(discount_percent=0), "bots[0].downsells[1].discount_percent"),
        (lambda b: b["downsells"][1].update(discount_percent=100), "bots[0].downsells[1].discount_percent"),
        (lambda b: b["downsells"][1].update(price="9.90"), "bots[0].downsells[1].discount_percent"),
        (lambda b: b["downsells"][0].update(price="0.00"), "bots[0].downsells[0].price"),
        (lambda b: b["downsells"][0].update(extra=1), "bots[0].downsells[0].extra"),
    ],
)
def test_every_new_key_is_validated_with_its_name_and_nothing_is_written(edit: Any, key: str) -> None:
    data = selling_config()
    edit(data["bots"][0])
    with pytest.raises(catalog.ConfigError) as exc:
        catalog.parse(data, set())
    assert exc.value.key == key


def test_a_bump_naming_another_bots_offer_is_refused() -> None:
    data = selling_config()
    other = copy.deepcopy(data["bots"][0])
    other.update(id="other", token="9:OTHER", username="other_bot", bumps={}, upsells=[], downsells=[])
    other["offers"] = [{"id": "solo", "label": "Solo", "price": "5.00", "delivery_link": "https://t.me/+S",
                        "bump": "pack"}]  # fmt: skip
    data["bots"].append(other)
    with pytest.raises(catalog.ConfigError) as exc:
        catalog.parse(data, set())
    assert exc.value.key == "bots[1].offers[0].bump"


@pytest.mark.parametrize(("price", "percent", "expected"), [("19.90", 50, "9.95"), ("0.01", 99, "0.01"),
                                                            ("10.05", 50, "5.03"), ("0.03", 50, "0.02")])  # fmt: skip
def test_discounts_round_half_up_to_cents_and_never_below_one_cent(price: str, percent: int, expected: str) -> None:
    assert catalog.discounted(Decimal(price), percent) == Decimal(expected)


# --- the order bump ---------------------------------------------------------------------------


def test_a_press_on_an_offer_with_a_bump_asks_first_then_one_charge_for_both(
    bot: BotConfig, sandbox: SandboxGateway, channels: Channels, fake_telegram: FakeTelegramTransport,
    throttle: Throttle,
) -> None:  # fmt: skip
    lead = start(bot, 1)
    vip, pack = offer_id(bot, "vip"), offer_id(bot, "pack")
    assert payments.checkout(bot, lead, vip, 2, sandbox, channels, throttle) is None  # no charge yet: the question
    [(method, params)] = fake_telegram.calls
    assert method == "sendMessage" and params["text"] == "Leva o pack?"
    yes, no = ({"text": "Sim", "callback_data": f"bmp:{vip}:y"}, {"text": "Não", "callback_data": f"bmp:{vip}:n"})
    assert params["reply_markup"]["inline_keyboard"] == [[yes], [no]]
    payments.checkout(bot, lead, vip, 3, sandbox, channels, throttle)  # a double tap: not asked twice
    assert len(fake_telegram.calls) == 1

    assert press(bot, 4, f"bmp:{vip}:y").kind == "callback"
    press(bot, 5, f"bmp:{vip}:n")  # a late press of the other button changes nothing
    assert [(a.accepted, a.bump_offer_id) for a in BumpAnswer.select()] == [(True, pack)]
    charge = payments.checkout(bot, lead, vip, 4, sandbox, channels, throttle)
    assert charge is not None and charge.amount == Decimal("29.80") and charge.bump_offer_id == pack
    again = payments.checkout(bot, lead, vip, 5, sandbox, channels, throttle)
    assert again is not None and again.id == charge.id and Charge.select().count() == 1

    fake_telegram.calls.clear()
    settled = payments.settle(charge, ChargeStatus.PAID, None, source="notification")
    assert settled.deliver
    assert delivery.deliver_charge(charge.id, channels, throttle) == "sent"
    assert delivery.deliver_charge(charge.id, channels, throttle) == "sent"  # again: nothing more
    texts = [p["text"] for m, p in fake_telegram.calls if m == "sendMessage"]
    assert texts == ["Pagamento confirmado! Seu acesso:\n\nhttps://t.me/+AbCdEf", "Seu pack:\n\nhttps://t.me/+Pack"]
    assert Delivery.get().state == "sent"


def test_a_bump_question_whose_send_is_retried_still_comes_and_then_the_code(
    bot: BotConfig, sandbox: SandboxGateway, channels: Channels, fake_telegram: FakeTelegramTransport,
    throttle: Throttle,
) -> None:  # fmt: skip
    lead = start(bot, 1)
    vip = offer_id(bot, "vip")
    fake_telegram.queue("sendMessage", telegram_error(502, "Bad Gateway"))
    with pytest.raises(ChannelError):  # the checkout's send failed: the actor retries it
        payments.checkout(bot, lead, vip, 2, sandbox, channels, throttle)
    payments.checkout(bot, lead, vip, 3, sandbox, channels, throttle)  # a double tap meanwhile: not asked
    assert payments.checkout(bot, lead, vip, 2, sandbox, channels, throttle) is None  # the retry asks
    asked = [p["text"] for m, p in fake_telegram.calls if m == "sendMessage"]
    assert asked == ["Leva o pack?", "Leva o pack?"]  # the failed request, then the question once
    payments.checkout(bot, lead, vip, 2, sandbox, channels, throttle)  # a redelivery: still once
    assert [p["text"] for m, p in fake_telegram.calls if m == "sendMessage"] == asked

    press(bot, 4, f"bmp:{vip}:n")
    charge = payments.checkout(bot, lead, vip, 4, sandbox, channels, throttle)
    assert charge is not None and charge.status == "pending" and charge.amount == Decimal("19.90")
    sent = [str(p.get("text") or p.get("caption")) for _, p in fake_telegram.calls]
    assert charge.br_code and any(charge.br_code in text for text in sent), sent


def test_a_declined_bump_charges_the_offer_alone_and_is_not_asked_again(
    bot: BotConfig, sandbox: SandboxGateway, channels: Channels, fake_telegram: FakeTelegramTransport,
    throttle: Throttle,
) -> None:  # fmt: skip
    lead = start(bot, 1)
    vip = offer_id(bot, "vip")
    press(bot, 2, f"bmp:{vip}:n")
    charge = payments.checkout(bot, lead, vip, 2, sandbox, channels, throttle)
    assert charge is not None and charge.amount == Decimal("19.90") and charge.bump_offer_id is None
    assert not any(p.get("text") == "Leva o pack?" for _, p in fake_telegram.calls)


# --- follow-ups --------------------------------------------------------------------------------


def due_now() -> None:
    Followup.update(due_at=utcnow() - dt.timedelta(seconds=1)).where(Followup.state == "scheduled").execute()


def test_a_not_bought_downsell_is_scheduled_once_at_start_and_cancelled_by_a_press(
    bot: BotConfig, sandbox: SandboxGateway, channels: Channels, throttle: Throttle
) -> None:
    lead = start(bot, 1)
    start(bot, 2)  # a second /start schedules nothing more
    [row] = Followup.select()
    assert (row.kind, row.position, row.amount, row.state) == ("downsell", 0, Decimal("15.00"), "scheduled")
    assert 3590 <= (row.due_at - utcnow()).total_seconds() <= 3600
    press(bot, 3, f"bmp:{offer_id(bot, 'vip')}:n")
    payments.checkout(bot, lead, offer_id(bot, "vip"), 3, sandbox, channels, throttle)  # pressed: bought
    due_now()
    assert followups.dispatch() == 2  # the not_bought one, and the unpaid one the charge scheduled
    assert followups.send(row.id, channels, throttle) == "cancelled"
    assert Followup.get_by_id(row.id).error == "bought"


def test_each_downsell_stays_once_per_lead_after_its_row_is_pruned(
    bot: BotConfig, channels: Channels, throttle: Throttle
) -> None:
    from actors import maintenance

    lead = start(bot, 1)
    due_now()
    followups.dispatch()
    assert followups.send(Followup.get().id, channels, throttle) == "sent"
    Followup.update(created_at=utcnow() - dt.timedelta(days=91)).execute()
    assert maintenance.prune_followups(utcnow() - dt.timedelta(days=90)) == 1  # the row is gone
    assert followups.schedule_downsells(bot, lead.lead_id, "not_bought", utcnow()) == 0
    start(bot, 2)  # a /start months later
    assert Followup.select().count() == 0  # not scheduled again


def test_an_unpaid_downsell_goes_out_with_a_button_at_its_discount_and_opens_that_charge(
    bot: BotConfig, sandbox: SandboxGateway, channels: Channels, fake_telegram: FakeTelegramTransport,
    throttle: Throttle,
) -> None:  # fmt: skip
    lead = start(bot, 1)
    anual = offer_id(bot, "anual")
    first = payments.checkout(bot, lead, anual, 2, sandbox, channels, throttle)
    assert first is not None
    unpaid = Followup.get(Followup.position == 1)
    assert 590 <= (unpaid.due_at - utcnow()).total_seconds() <= 600
    Followup.update(due_at=utcnow() - dt.timedelta(seconds=1)).where(Followup.id == unpaid.id).execute()
    assert followups.dispatch() == 1 and followups.dispatch() == 0  # claimed once: a lease
    fake_telegram.calls.clear()
    assert followups.send(unpaid.id, channels, throttle) == "sent"
    assert followups.send(unpaid.id, channels, throttle) == "sent"  # a repeat sends nothing
    [(method, params)] = fake_telegram.calls
    assert method == "sendMessage"
    assert params["text"] == "50% off"
    assert params["reply_markup"]["inline_keyboard"][0][0] == {"text": "Quero — R$ 9,95",
                                                               "callback_data": f"fu:{unpaid.id}"}  # fmt: skip
    assert press(bot, 3, f"fu:{unpaid.id}").kind == "callback"
    charge = payments.checkout(bot, lead, 0, 3, sandbox, channels, throttle, followup_id=unpaid.id)
    assert charge is not None and charge.amount == Decimal("9.95") and charge.followup_id == unpaid.id
    assert charge.offer_id == offer_id(bot, "vip") and charge.id != first.id


def test_a_lead_who_pays_before_a_downsell_is_due_never_gets_it(
    bot: BotConfig, sandbox: SandboxGateway, channels: Channels, fake_telegram: FakeTelegramTransport,
    throttle: Throttle,
) -> None:  # fmt: skip
    lead = start(bot, 1)
    charge = payments.checkout(bot, lead, offer_id(bot, "anual"), 2, sandbox, channels, throttle)
    assert charge is not None
    payments.settle(charge, ChargeStatus.PAID, None, source="notification")  # cancels in its transaction
    assert {f.state for f in Followup.select()} == {"cancelled"}
    due_now()
    assert followups.dispatch() == 0


def test_a_payment_racing_the_claim_still_wins_at_send_time(
    bot: BotConfig, sandbox: SandboxGateway, channels: Channels, fake_telegram: FakeTelegramTransport,
    throttle: Throttle,
) -> None:  # fmt: skip
    """The downsell is claimed by the clock, then the payment lands before its send runs: the send
    decides at send time and cancels it."""
    lead = start(bot, 1)
    charge = payments.checkout(bot, lead, offer_id(bot, "anual"), 2, sandbox, channels, throttle)
    assert charge is not None
    due_now()
    assert followups.dispatch() == 2  # both downsells claimed, their sends enqueued
    Charge.update(status="paid").where(Charge.id == charge.id).execute()  # paid, as if by a concurrent settle
    fake_telegram.calls.clear()
    for row in Followup.select():
        assert followups.send(row.id, channels, throttle) == "cancelled"
    assert fake_telegram.calls == []


def test_an_upsell_follows_the_delivery_of_its_offer_once_per_paid_charge(
    bot: BotConfig, sandbox: SandboxGateway, channels: Channels, fake_telegram: FakeTelegramTransport,
    throttle: Throttle,
) -> None:  # fmt: skip
    lead = start(bot, 1)
    charge = payments.checkout(bot, lead, offer_id(bot, "anual"), 2, sandbox, channels, throttle)
    assert charge is not None
    payments.settle(charge, ChargeStatus.PAID, None, source="notification")
    fake_telegram.queue("createChatInviteLink", httpx.Response(200, json={"ok": True, "result": {
        "invite_link": "https://t.me/+Invite"}}))  # fmt: skip
    assert delivery.deliver_charge(charge.id, channels, throttle) == "sent"
    assert delivery.deliver_charge(charge.id, channels, throttle) == "sent"
    [upsell] = Followup.select().where(Followup.kind == "upsell")
    assert (upsell.charge_id, upsell.offer_id, upsell.amount) == (charge.id, offer_id(bot, "pack"), Decimal("9.90"))
    assert followups.dispatch() == 1  # delay 0s: due at once
    assert followups.send(upsell.id, channels, throttle) == "sent"
    last = fake_telegram.calls[-1][1]
    assert last["text"] == "Leve o pack!" and last["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == (
        f"fu:{upsell.id}")  # fmt: skip


def test_a_follow_up_whose_send_a_crash_left_unknown_is_not_sent_again(
    bot: BotConfig, channels: Channels, fake_telegram: FakeTelegramTransport, throttle: Throttle
) -> None:
    start(bot, 1)
    row = Followup.get()
    OutboundMessage.create(key=f"followup:{row.id}", bot_id="demo", chat_id=777, method="sendMessage",
                           state="sending", attempts=1, claimed_at=utcnow() - dt.timedelta(hours=1))  # fmt: skip
    due_now()
    assert followups.send(row.id, channels, throttle) == "unknown"  # marketing: never twice
    assert fake_telegram.calls == [] and Followup.get_by_id(row.id).state == "unknown"


def test_concurrent_dispatchers_claim_each_follow_up_once(bot: BotConfig) -> None:
    for i in range(40):
        Followup.create(key=f"t{i}", bot_id="demo", lead_id=1, kind="downsell", position=0, offer_id=1,
                        amount=Decimal("1.00"), due_at=utcnow() - dt.timedelta(seconds=1))  # fmt: skip
    claimed: list[int] = []

    def claim() -> None:
        db.connect(reuse_if_open=True)
        try:
            for _ in range(3):
                with transaction():
                    claimed.extend(sql.claim_due("followup", followups.DUE, utcnow(), followups.LEASE, limit=7))
        finally:
            db.close()

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == len(set(claimed)) == 40  # 4 × 3 × 7 = 84 tries for 40 rows: each taken once


def test_followups_payments_and_status_show_the_schedule_take_rate_and_conversions(
    bot: BotConfig, sandbox: SandboxGateway, channels: Channels, fake_telegram: FakeTelegramTransport,
    throttle: Throttle,
) -> None:  # fmt: skip
    import json

    from click.testing import CliRunner

    from ops.cli import cli

    lead = start(bot, 1)
    vip = offer_id(bot, "vip")
    press(bot, 2, f"bmp:{vip}:y")
    first = payments.checkout(bot, lead, vip, 2, sandbox, channels, throttle)
    assert first is not None
    unpaid = Followup.get(Followup.position == 1)
    Followup.update(due_at=utcnow()).where(Followup.id == unpaid.id).execute()
    assert followups.send(unpaid.id, channels, throttle) == "sent"
    charge = payments.checkout(bot, lead, 0, 3, sandbox, channels, throttle, followup_id=unpaid.id)
    assert charge is not None
    payments.settle(charge, ChargeStatus.PAID, None, source="notification")  # cancels the not_bought one

    out = CliRunner().invoke(cli, ["followups", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert {(f["kind"], f["position"], f["state"]) for f in doc["followups"]} == {("downsell", 0, "cancelled"),
                                                                                ("downsell", 1, "sent")}  # fmt: skip
    assert doc["followups"][0]["lead"] == 777
    assert doc["counts"] == {"demo": {"downsell": {"cancelled": 1, "sent": 1}}}
    text = CliRunner().invoke(cli, ["followups", "--state", "cancelled"]).output
    assert "cancelled: paid" in text and "R$ 15,00" in text
    selling = json.loads(CliRunner().invoke(cli, ["payments", "--json"]).output)["selling"]
    assert selling == [{"bot": "demo", "bumps_asked": 1, "bumps_accepted": 1, "bump_take_rate": 1.0,
                        "upsells_sent": 0, "upsells_paid": 0, "downsells_sent": 1, "downsells_paid": 1}]  # fmt: skip
    status = CliRunner().invoke(cli, ["status"]).output
    assert "bumps 1/1 taken" in status and "downsells 1/1 paid" in status


def test_the_dispatcher_feeds_a_backlog_only_as_fast_as_the_queue_drains(bot: BotConfig) -> None:
    from actors.broker import broker

    for i in range(30):
        Followup.create(key=f"b{i}", bot_id="demo", lead_id=1, kind="downsell", position=0, offer_id=1,
                        amount=Decimal("1.00"), due_at=utcnow() - dt.timedelta(seconds=1))  # fmt: skip
    broker.client.rpush("dramatiq:followups", *[f"queued-{i}" for i in range(followups.MAX_QUEUED - 10)])
    followups.dispatch_actor()
    assert Followup.select().where(Followup.attempts == 1).count() == 10  # only what the queue has room for
    assert broker.client.llen("dramatiq:followups") == followups.MAX_QUEUED
