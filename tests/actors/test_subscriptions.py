"""Subscriptions (CONTRACT §9): paid access to a chat that expires, reminds, renews, and keeps
non-payers out."""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
from typing import Any

import httpx
import pytest
from dramatiq import Message

import catalog
from actors import delivery, followups, payments, subscriptions, updates
from actors.channels import Channels
from actors.funnel import Recipient
from actors.throttle import Throttle
from catalog.schema import BotConfig
from catalog.snapshot import load_bots
from db.database import utcnow
from db.models import Charge, Delivery, Followup, Lead, Subscription
from gateways import telegram
from gateways.channel import JoinRequest, MemberJoined, Person
from gateways.payments.base import ChargeStatus
from gateways.payments.sandbox import SandboxGateway
from tests.conftest import DEMO_CONFIG, FakeTelegramTransport, apply_config, route_update, telegram_error

CHAT = -100123
USER = Person(555, "Vip")


def vip_config(**offer: Any) -> dict[str, Any]:
    data = copy.deepcopy(DEMO_CONFIG)
    bot = data["bots"][0]
    bot["offers"][1].update(duration="30d", **offer)  # "anual": delivery_chat_id = -100123
    bot["subscriptions"] = {"remind_before": ["3d", "1d"], "reminder_text": "Vence em {days} dia(s).",
                            "expired_text": "Venceu. Renove!"}  # fmt: skip
    return data


@pytest.fixture
def bot() -> BotConfig:
    apply_config(vip_config())
    return load_bots()["demo"]


@pytest.fixture
def lead(bot: BotConfig) -> Recipient:
    return updates.upsert_lead(bot.id, USER, 555)


def anual(bot: BotConfig) -> int:
    return next(o.id for o in bot.offers if o.slug == "anual")


def invite(fake: FakeTelegramTransport, link: str = "https://t.me/+Inv") -> None:
    fake.queue("createChatInviteLink", httpx.Response(200, json={"ok": True, "result": {"invite_link": link}}))


def pay(bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels, throttle: Throttle,
        update_id: int, followup_id: int = 0) -> Charge:  # fmt: skip
    charge = payments.checkout(bot, lead, anual(bot), update_id, sandbox, channels, throttle, followup_id=followup_id)
    assert charge is not None
    assert payments.settle(charge, ChargeStatus.PAID, None, source="notification").deliver
    return charge


def test_configuration(bot: BotConfig) -> None:
    offer = bot.offer(anual(bot))
    assert offer is not None and offer.duration_seconds == 30 * 86400 and not offer.join_by_request
    assert bot.remind_before == (3 * 86400, 86400) and bot.text("expired_text") == "Venceu. Renove!"
    for edit, key in (
        (lambda b: b["offers"][0].update(duration="30d"), "bots[0].offers[0].duration"),  # no delivery_chat_id
        (lambda b: b["offers"][0].update(join_by_request=True), "bots[0].offers[0].join_by_request"),
        (lambda b: b["offers"][1].update(duration="30 days"), "bots[0].offers[1].duration"),
        (lambda b: b["offers"][1].update(join_by_request="yes"), "bots[0].offers[1].join_by_request"),
        (lambda b: b["subscriptions"].update(remind_before="3d"), "bots[0].subscriptions.remind_before"),
        (lambda b: b["subscriptions"].update(remind_before=["3x"]), "bots[0].subscriptions.remind_before[0]"),
        (lambda b: b["subscriptions"].update(color="red"), "bots[0].subscriptions.color"),
    ):
        data = vip_config()
        edit(data["bots"][0])
        with pytest.raises(catalog.ConfigError) as exc:
            catalog.parse(data, set())
        assert exc.value.key == key


def test_paying_starts_a_subscription_with_its_expiry_and_reminders_and_renewing_extends_it(
    bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    pay(bot, lead, sandbox, channels, throttle, 1)
    sub = Subscription.get()
    first_end = sub.ends_at
    assert (sub.chat_id, sub.state, sub.renewals) == (CHAT, "active", 0)
    assert abs((first_end - utcnow()).total_seconds() - 30 * 86400) < 5
    assert sorted((f.kind, f.position) for f in Followup.select()) == [("expiry", 0), ("reminder", 0), ("reminder", 1)]

    pay(bot, lead, sandbox, channels, throttle, 2)  # a renewal before the end: from the current end
    sub = Subscription.get()
    assert sub.renewals == 1 and sub.started_at <= first_end and sub.ends_at == first_end + dt.timedelta(days=30)
    Followup.update(due_at=utcnow()).where(Followup.state == "scheduled").execute()
    old = Followup.select().where(Followup.key.startswith(f"expire:{sub.id}:")).order_by(Followup.id).first()
    assert followups.send(old.id, channels, throttle) == "cancelled" and Followup.get_by_id(old.id).error == "renewed"
    assert Subscription.get().state == "active"


def test_expiry_removes_the_member_tells_them_and_a_renewal_re_admits(
    bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    invite(fake_telegram)
    charge = pay(bot, lead, sandbox, channels, throttle, 1)
    assert delivery.deliver_charge(charge.id, channels, throttle) == "sent"
    Subscription.update(ends_at=utcnow() - dt.timedelta(seconds=1)).execute()
    sub = Subscription.get()
    end = int(sub.ends_at.replace(tzinfo=dt.UTC).timestamp())
    expiry = Followup.create(key=f"expire:{sub.id}:{end}", bot_id="demo", lead_id=lead.lead_id, kind="expiry",
                             position=0, offer_id=anual(bot), amount=charge.amount, subscription_id=sub.id,
                             due_at=utcnow())  # fmt: skip
    fake_telegram.calls.clear()
    assert followups.send(expiry.id, channels, throttle) == "sent"
    assert followups.send(expiry.id, channels, throttle) == "sent"  # again: nothing more
    assert [m for m, _ in fake_telegram.calls] == ["banChatMember", "unbanChatMember", "sendMessage"]
    ban, unban, told = (p for _, p in fake_telegram.calls)
    assert int(ban["chat_id"]) == CHAT and int(ban["user_id"]) == 555 and unban["only_if_banned"] is True
    assert told["text"] == "Venceu. Renove!"
    assert told["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == f"fu:{expiry.id}"
    assert Subscription.get().state == "expired"

    invite(fake_telegram, "https://t.me/+Again")  # the renew button: a new period from now, a new link
    renewal = pay(bot, lead, sandbox, channels, throttle, 3, followup_id=expiry.id)
    assert renewal.amount == charge.amount and delivery.deliver_charge(renewal.id, channels, throttle) == "sent"
    sub = Subscription.get()
    assert sub.state == "active" and abs((sub.ends_at - utcnow()).total_seconds() - 30 * 86400) < 5
    assert "https://t.me/+Again" in fake_telegram.calls[-1][1]["text"]


def test_an_expiry_raced_by_a_renewal_keeps_the_member_in(
    bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    charge = pay(bot, lead, sandbox, channels, throttle, 1)
    Subscription.update(ends_at=utcnow() - dt.timedelta(seconds=1)).execute()
    sub = Subscription.get()  # what the expiry loaded, before a renewal was paid
    end = int(sub.ends_at.replace(tzinfo=dt.UTC).timestamp())
    expiry = Followup.create(key=f"expire:{sub.id}:{end}", bot_id="demo", lead_id=lead.lead_id, kind="expiry",
                             position=0, offer_id=anual(bot), amount=charge.amount, subscription_id=sub.id,
                             due_at=utcnow())  # fmt: skip
    pay(bot, lead, sandbox, channels, throttle, 2)  # the renewal lands between the load and the removal
    fake_telegram.calls.clear()
    assert subscriptions.expire(expiry, sub, bot, Lead.get_by_id(lead.lead_id), channels, throttle) == "cancelled"
    assert "banChatMember" not in fake_telegram.methods() and Subscription.get().state == "active"


def test_a_refunded_subscription_ends_and_removes_the_member_once(
    bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    invite(fake_telegram, "https://t.me/+Vip")
    charge = pay(bot, lead, sandbox, channels, throttle, 1)
    assert delivery.deliver_charge(charge.id, channels, throttle) == "sent"
    fake_telegram.calls.clear()
    assert payments.settle(charge, ChargeStatus.REFUNDED, None, source="notification").outcome == "refunded"
    assert payments.settle(charge, ChargeStatus.REFUNDED, None, source="notification").outcome == "repeated"
    sub = Subscription.get()
    assert sub.state == "refunded" and sub.ends_at <= utcnow()
    assert followups.dispatch() >= 1  # the clock: the removal is due now, beside the old end's expiry
    revoke = Followup.get(Followup.kind == "revoke")
    assert followups.send(revoke.id, channels, throttle) == "sent"
    assert followups.send(revoke.id, channels, throttle) == "sent"  # again: nothing more
    assert [(m, p.get("user_id"), p.get("invite_link")) for m, p in fake_telegram.calls] == [
        ("banChatMember", 555, None), ("unbanChatMember", 555, None),
        ("revokeChatInviteLink", None, "https://t.me/+Vip")]  # fmt: skip
    expiry = Followup.get(Followup.kind == "expiry")
    Followup.update(due_at=utcnow()).where(Followup.state == "scheduled").execute()
    assert followups.send(expiry.id, channels, throttle) == "cancelled"  # no second removal, no "renew" text
    reminders = [followups.send(f.id, channels, throttle) for f in Followup.select().where(Followup.kind == "reminder")]
    assert set(reminders) == {"cancelled"} and len(fake_telegram.calls) == 3

    from click.testing import CliRunner

    from ops.cli import cli

    out = CliRunner().invoke(cli, ["subscriptions", "--state", "refunded", "--json"])
    assert out.exit_code == 0, out.output
    assert [row["state"] for row in json.loads(out.output)] == ["refunded"]


def test_a_refund_of_a_plain_chat_offer_revokes_its_invite_link_and_one_before_delivery_stops_it(
    lead: Recipient, sandbox: SandboxGateway, channels: Channels, fake_telegram: FakeTelegramTransport,
    throttle: Throttle,
) -> None:  # fmt: skip
    apply_config(DEMO_CONFIG)  # "anual": delivery_chat_id, no duration
    bot = load_bots()["demo"]
    invite(fake_telegram, "https://t.me/+Once")
    charge = pay(bot, lead, sandbox, channels, throttle, 1)
    assert delivery.deliver_charge(charge.id, channels, throttle) == "sent"
    payments.settle(charge, ChargeStatus.REFUNDED, None, source="notification")
    revoke = Followup.get(Followup.kind == "revoke")
    assert followups.send(revoke.id, channels, throttle) == "sent"
    assert fake_telegram.calls[-1] == ("revokeChatInviteLink", {"chat_id": CHAT, "invite_link": "https://t.me/+Once"})
    assert Subscription.select().count() == 0

    late = pay(bot, lead, sandbox, channels, throttle, 2)  # paid, refunded before its delivery went out
    payments.settle(late, ChargeStatus.REFUNDED, None, source="notification")
    assert delivery.deliver_charge(late.id, channels, throttle) == "failed"
    assert Delivery.get(Delivery.charge_id == late.id).error == "refunded before delivery"


def test_a_reminder_says_how_many_days_are_left(
    bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    pay(bot, lead, sandbox, channels, throttle, 1)
    reminder = Followup.get((Followup.kind == "reminder") & (Followup.position == 0))
    Followup.update(due_at=utcnow()).where(Followup.id == reminder.id).execute()  # as the clock brings it
    fake_telegram.calls.clear()
    assert followups.send(reminder.id, channels, throttle) == "sent"
    [(method, params)] = fake_telegram.calls
    assert method == "sendMessage" and params["text"] == "Vence em 30 dia(s)."  # sent early here: 30 days left


def test_a_reminder_the_buyer_blocked_marks_them_unreachable(
    bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    pay(bot, lead, sandbox, channels, throttle, 1)
    reminder = Followup.get((Followup.kind == "reminder") & (Followup.position == 0))
    Followup.update(due_at=utcnow()).where(Followup.id == reminder.id).execute()
    fake_telegram.queue("sendMessage", telegram_error(403, "Forbidden: bot was blocked by the user"))
    assert followups.send(reminder.id, channels, throttle) == "failed"
    assert not Lead.get_by_id(lead.lead_id).reachable  # no more marketing to them; a payment still delivers


def test_a_bot_that_is_not_an_admin_records_the_error_and_does_not_retry(
    bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    pay(bot, lead, sandbox, channels, throttle, 1)
    expiry = Followup.get(Followup.kind == "expiry")
    Followup.update(due_at=utcnow()).where(Followup.id == expiry.id).execute()
    fake_telegram.queue("banChatMember", telegram_error(400, "Bad Request: not enough rights to restrict/ban"))
    assert followups.send(expiry.id, channels, throttle) == "failed"
    sub = Subscription.get()
    assert sub.error == "Bad Request: not enough rights to restrict/ban" and sub.state == "active"
    assert followups.send(expiry.id, channels, throttle) == "failed"  # decided: not tried again
    assert [m for m, _ in fake_telegram.calls].count("banChatMember") == 1


def join_request(user: int = 555, date: float | None = None) -> dict[str, Any]:
    return {"chat": {"id": CHAT, "type": "channel"}, "from": {"id": user, "first_name": "X"}, "user_chat_id": user,
            "date": int(date if date is not None else time.time())}  # fmt: skip


def asked(request: dict[str, Any]) -> JoinRequest:
    """A Telegram chat_join_request as the router gets it."""
    member = telegram.parse_update({"update_id": 1, "chat_join_request": request}).member
    assert isinstance(member, JoinRequest)
    return member


def test_join_requests_approve_members_decline_strangers_and_wait_for_a_settling_payer(
    bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    assert subscriptions.decide_join(bot, asked(join_request(999)), 1, channels, throttle) == "decline"  # a stranger
    charge = payments.checkout(bot, lead, anual(bot), 2, sandbox, channels, throttle)
    assert charge is not None and charge.status == "pending"
    assert subscriptions.decide_join(bot, asked(join_request()), 3, channels, throttle) == "wait"  # paying right now
    old = join_request(date=time.time() - 300)
    assert subscriptions.decide_join(bot, asked(old), 4, channels, throttle) == "decline"  # Telegram stopped waiting
    payments.settle(charge, ChargeStatus.PAID, None, source="notification")
    assert subscriptions.decide_join(bot, asked(join_request()), 3, channels, throttle) == "approve"
    answers = [(m, int(p["user_id"])) for m, p in fake_telegram.calls if m.endswith("ChatJoinRequest")]
    assert answers == [("declineChatJoinRequest", 999), ("declineChatJoinRequest", 555),
                       ("approveChatJoinRequest", 555)]  # fmt: skip


def test_a_join_request_in_a_chat_the_bot_does_not_sell_is_left_to_the_chats_admins(
    bot: BotConfig, channels: Channels, fake_telegram: FakeTelegramTransport, throttle: Throttle
) -> None:
    elsewhere = {**join_request(999), "chat": {"id": -100777, "type": "supergroup"}}  # the bot is admin there too
    assert subscriptions.decide_join(bot, asked(elsewhere), 1, channels, throttle) == "ignored"
    assert fake_telegram.calls == []  # neither approved nor declined


def test_a_pool_answers_a_join_request_once_by_who_paid_through_any_of_its_bots(
    bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    data = vip_config()
    data["bots"].append({**copy.deepcopy(data["bots"][0]), "id": "other", "token": "123452:TEST",
                         "username": "other_bot", "webhook_secret": "tg-secret-2"})  # fmt: skip
    apply_config(data)
    bots = load_bots()
    pay(bots["demo"], lead, sandbox, channels, throttle, 1)  # bought through demo
    fake_telegram.calls.clear()
    request = asked(join_request())  # the same request reaches every bot admin of the chat, in any order
    assert subscriptions.decide_join(bots["other"], request, 70, channels, throttle) == "approve"
    assert subscriptions.decide_join(bots["demo"], request, 80, channels, throttle) == "approve"
    assert [m for m, _ in fake_telegram.calls] == ["approveChatJoinRequest"]  # answered once
    stranger = asked(join_request(999))
    assert subscriptions.decide_join(bots["demo"], stranger, 81, channels, throttle) == "decline"
    assert subscriptions.decide_join(bots["other"], stranger, 71, channels, throttle) == "decline"
    assert [m for m, _ in fake_telegram.calls].count("declineChatJoinRequest") == 1


def test_a_join_request_owes_a_decision_redriven_from_the_database_whatever_redis_lost(
    bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    from actors import redrive
    from actors.broker import broker
    from db.models import ProcessedUpdate

    charge = payments.checkout(bot, lead, anual(bot), 2, sandbox, channels, throttle)
    assert charge is not None
    routed = route_update(bot, {"update_id": 900, "chat_join_request": join_request()})
    updates.follow_up(bot, routed, channels, throttle)  # paying right now: the decision waits
    row = ProcessedUpdate.get(ProcessedUpdate.update_id == 900)
    assert row.owed is not None and row.owed.startswith("join:") and row.done_at is None
    broker.client.flushdb()  # the waiting message is lost with Redis
    payments.settle(charge, ChargeStatus.PAID, None, source="notification")
    ProcessedUpdate.update(due_at=utcnow() - dt.timedelta(seconds=1)).execute()
    redrive.redrive()
    [message] = [m for m in map(Message.decode, broker.client.hvals("dramatiq:funnel.msgs"))
                 if m.actor_name == "subscriptions.join"]  # fmt: skip
    bot_id, update_id, request = message.args
    assert (bot_id, update_id) == ("demo", 900)
    assert subscriptions.decide_join(bot, subscriptions.join_of(request), update_id, channels, throttle) == "approve"
    assert [m for m, _ in fake_telegram.calls if m.endswith("ChatJoinRequest")] == ["approveChatJoinRequest"]
    assert ProcessedUpdate.get(ProcessedUpdate.update_id == 900).done_at is not None


def test_a_join_by_request_offer_delivers_a_link_that_asks_to_join(
    lead: Recipient, sandbox: SandboxGateway, channels: Channels, fake_telegram: FakeTelegramTransport,
    throttle: Throttle,
) -> None:  # fmt: skip
    apply_config(vip_config(join_by_request=True))
    bot = load_bots()["demo"]
    invite(fake_telegram)
    charge = pay(bot, lead, sandbox, channels, throttle, 1)
    assert delivery.deliver_charge(charge.id, channels, throttle) == "sent"
    [link] = [p for m, p in fake_telegram.calls if m == "createChatInviteLink"]
    assert link["creates_join_request"] is True and "member_limit" not in link


def member_joined(user: int, link: str) -> MemberJoined:
    """A Telegram chat_member update (joined by `link`) as the router gets it."""
    change = {"chat": {"id": CHAT, "type": "channel"}, "from": {"id": user}, "date": 0,
              "old_chat_member": {"status": "left", "user": {"id": user}},
              "new_chat_member": {"status": "member", "user": {"id": user}},
              "invite_link": {"invite_link": link, "creator": {"id": 1}}}  # fmt: skip
    member = telegram.parse_update({"update_id": 1, "chat_member": change}).member
    assert isinstance(member, MemberJoined)
    return member


def test_a_member_who_joins_through_another_buyers_link_is_removed_and_the_link_revoked(
    bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    invite(fake_telegram, "https://t.me/+Mine")
    charge = pay(bot, lead, sandbox, channels, throttle, 1)
    delivery.deliver_charge(charge.id, channels, throttle)
    assert Delivery.get().invite_link == "https://t.me/+Mine"
    fake_telegram.calls.clear()
    assert not subscriptions.check_member(bot, member_joined(555, "https://t.me/+Mine"), 10, channels, throttle)
    assert fake_telegram.calls == []  # the buyer themself
    assert subscriptions.check_member(bot, member_joined(666, "https://t.me/+Mine"), 11, channels, throttle)
    assert [(m, p.get("user_id"), p.get("invite_link")) for m, p in fake_telegram.calls] == [
        ("banChatMember", 666, None), ("unbanChatMember", 666, None),
        ("revokeChatInviteLink", None, "https://t.me/+Mine")]  # fmt: skip
    assert Subscription.get().state == "active"  # the buyer who shared it keeps access


def test_ops_subscriptions_lists_every_row_filtered_by_the_database(bot: BotConfig) -> None:
    from click.testing import CliRunner

    from ops.cli import cli
    from reports import selling

    now = utcnow()
    leads = [Lead.create(bot="demo", person_id=10_000 + n, chat_id=10_000 + n) for n in range(2_105)]
    base = {"bot_id": "demo", "chat_id": CHAT, "offer_id": anual(bot), "started_at": now, "state": "active",
            "renewals": 0, "created_at": now, "updated_at": now}  # fmt: skip
    ends = [now + dt.timedelta(days=1 if n % 3 else -1) for n in range(len(leads))]
    Subscription.insert_many(
        [{**base, "lead_id": lead.id, "ends_at": end} for lead, end in zip(leads, ends, strict=True)]
    ).execute()
    expected_expired = sum(1 for n in range(2_105) if n % 3 == 0)
    assert len(list(selling.subscriptions(state="active"))) == 2_105 - expected_expired
    out = CliRunner().invoke(cli, ["subscriptions", "--state", "expired", "--json"])
    rows = json.loads(out.output)
    assert len(rows) == expected_expired and {r["state"] for r in rows} == {"expired"}
    assert len({r["lead"] for r in rows}) == expected_expired  # no row twice across pages


def test_ops_subscriptions_and_status_show_them(
    bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    from click.testing import CliRunner

    from ops.cli import cli

    pay(bot, lead, sandbox, channels, throttle, 1)
    out = CliRunner().invoke(cli, ["subscriptions", "--json"])
    assert out.exit_code == 0, out.output
    [row] = json.loads(out.output)
    assert (row["lead"], row["chat"], row["offer"], row["state"]) == (555, CHAT, "anual", "active")
    assert row["start"].endswith("Z") and dt.datetime.fromisoformat(row["end"].rstrip("Z")) > utcnow()
    assert json.loads(CliRunner().invoke(cli, ["subscriptions", "--state", "expired", "--json"]).output) == []
    status = json.loads(CliRunner().invoke(cli, ["status", "--json"]).output)["subscriptions"]
    assert status == [{"bot": "demo", "active": 1, "renewals_30d": 0, "churned_30d": 0, "churn_30d": 0.0,
                       "mrr": "149.90"}]  # fmt: skip
    assert "1 active" in CliRunner().invoke(cli, ["subscriptions"]).output
