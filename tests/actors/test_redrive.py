"""The database, not Redis, says what a buyer is still owed: a /start whose welcome (or a button
press whose code) never recorded an outcome is re-driven by the clock, once per round, with
backoff, until its stage says done or its window passes."""

import datetime as dt
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Message

from actors import funnel, liveness, outbox, redrive
from actors.broker import broker
from actors.channels import Channels
from actors.outbox import STALE_CLAIM_SECONDS, Send, deliver
from actors.throttle import Throttle
from catalog.schema import BotConfig
from db.database import utcnow
from db.models import OutboundMessage, ProcessedUpdate
from gateways.channel import Request
from gateways.telegram import TelegramChannel
from tests.actors.test_updates import start_update
from tests.conftest import FakeTelegramTransport, route_update


def queued(queue: str) -> list[Message[Any]]:
    return [Message.decode(data) for data in broker.client.hvals(f"dramatiq:{queue}.msgs")]


def come_due(update_id: int, seconds_ago: float = 1) -> None:
    ProcessedUpdate.update(due_at=utcnow() - dt.timedelta(seconds=seconds_ago)).where(
        ProcessedUpdate.update_id == update_id
    ).execute()


def test_a_start_whose_follow_up_was_lost_is_redriven_until_welcomed(
    demo_bot: BotConfig, channels: Channels, throttle: Throttle, redis_client: redis.Redis,
    fake_telegram: FakeTelegramTransport,
) -> None:  # fmt: skip
    routed = route_update(demo_bot, start_update(500))  # recorded; its next stage then lost with Redis
    row = ProcessedUpdate.get(ProcessedUpdate.update_id == 500)
    assert (row.owed, row.lead_id, row.done_at) == ("welcome", routed.lead_id, None)
    assert row.due_at > utcnow()  # not before the grace

    redrive.redrive()
    assert queued("funnel") == []  # not due yet
    come_due(500)
    redrive.redrive()
    redrive.redrive()  # a second round right after: the first one's claim holds
    [message] = queued("funnel")
    assert message.actor_name == "funnel.welcome" and message.args == ("demo", routed.lead_id, 500)

    assert routed.lead is not None
    funnel.send_welcome(demo_bot, routed.lead, 500, channels, throttle)
    row = ProcessedUpdate.get(ProcessedUpdate.update_id == 500)
    assert row.done_at is not None and row.due_at is None and row.redrives == 1
    assert fake_telegram.methods() == ["sendPhoto"]


def test_a_welcomed_start_is_never_redriven(
    demo_bot: BotConfig, channels: Channels, throttle: Throttle, redis_client: redis.Redis
) -> None:
    routed = route_update(demo_bot, start_update(501))
    assert routed.lead is not None
    funnel.send_welcome(demo_bot, routed.lead, 501, channels, throttle)
    come_due(501, 3600)  # nothing to do even long after
    redrive.redrive()
    assert queued("funnel") == [] and ProcessedUpdate.get(ProcessedUpdate.update_id == 501).redrives == 0


def test_a_buy_press_owes_its_code_and_is_redriven_to_checkout(demo_bot: BotConfig) -> None:
    route_update(demo_bot, start_update(502))
    offer = demo_bot.offers[0]
    press = {
        "update_id": 503,
        "callback_query": {"id": "cb1", "from": {"id": 42, "first_name": "Bia"}, "data": f"buy:{offer.id}",
                           "message": {"message_id": 1, "chat": {"id": 42, "type": "private"}}},
    }  # fmt: skip
    routed = route_update(demo_bot, press)
    assert ProcessedUpdate.get(ProcessedUpdate.update_id == 503).owed == f"checkout:{offer.id}"
    come_due(503)
    redrive.redrive()
    [message] = [m for m in queued("payments") if m.actor_name == "payments.checkout"]
    assert message.args == ("demo", routed.lead_id, 42, offer.id, 503, 0)


def test_owed_work_is_abandoned_after_its_window_counted_and_logged(
    demo_bot: BotConfig, caplog: pytest.LogCaptureFixture
) -> None:
    route_update(demo_bot, start_update(504))
    ProcessedUpdate.update(received_at=utcnow() - dt.timedelta(hours=7)).execute()
    come_due(504)
    redrive.redrive()
    assert queued("funnel") == [] and ProcessedUpdate.get(ProcessedUpdate.update_id == 504).due_at is None
    assert "owed work abandoned" in caplog.text


def test_redrive_backs_off(demo_bot: BotConfig) -> None:
    route_update(demo_bot, start_update(505))
    gaps = []
    for _ in range(4):
        come_due(505)
        redrive.redrive()
        row = ProcessedUpdate.get(ProcessedUpdate.update_id == 505)
        gaps.append(round((row.due_at - utcnow()).total_seconds()))
    assert gaps == [30, 60, 120, 240]  # OWED_REDRIVE_SECONDS, doubling


def test_a_young_claim_comes_back_later_instead_of_being_skipped(
    channels: Channels, throttle: Throttle, fake_telegram: FakeTelegramTransport
) -> None:
    """A send a worker died on holds its row in `sending`: the redelivery must not skip it (it
    would stay `sending` for ever); it comes back when the claim is stale, and then resends."""
    send = Send(Request("welcome:x:1:text:0", "sendMessage", {"chat_id": 1, "text": "oi"}), if_unknown="resend")
    OutboundMessage.create(key=send.key, bot_id="b", chat_id=1, method="sendMessage", state="sending", attempts=1,
                           claimed_at=utcnow() - dt.timedelta(seconds=10))  # fmt: skip
    with pytest.raises(dramatiq.Retry) as retry:
        deliver(TelegramChannel(channels.telegram, "b", "1:T"), throttle, 1, [send])
    assert (STALE_CLAIM_SECONDS - 10) * 1000 <= (retry.value.delay or 0) <= (STALE_CLAIM_SECONDS - 8) * 1000
    OutboundMessage.update(claimed_at=utcnow() - dt.timedelta(seconds=STALE_CLAIM_SECONDS + 1)).execute()
    assert deliver(TelegramChannel(channels.telegram, "b", "1:T"), throttle, 1, [send]).sent == [send.key]
    assert OutboundMessage.get().state == "sent" and len(fake_telegram.calls) == 1


def test_two_takers_of_one_stale_claim_send_it_once(
    channels: Channels, throttle: Throttle, fake_telegram: FakeTelegramTransport
) -> None:
    """The redelivered update and the owed re-drive both find the same stale claim: one
    compare-and-set on the claim as they saw it lets exactly one of them send."""
    send = Send(Request("welcome:x:2:text:0", "sendMessage", {"chat_id": 1, "text": "oi"}), if_unknown="resend")
    OutboundMessage.create(key=send.key, bot_id="b", chat_id=1, method="sendMessage", state="sending", attempts=1,
                           claimed_at=utcnow() - dt.timedelta(seconds=STALE_CLAIM_SECONDS + 5),
                           claim="|dead-worker-token")  # fmt: skip
    first, second = outbox._existing(send.key), outbox._existing(send.key)  # both read it stale
    assert first is not None and second is not None
    assert [outbox._resolve_stale(first, send), outbox._resolve_stale(second, send)] == [True, False]
    row = OutboundMessage.get()
    assert row.attempts == 2 and row.claim != "|dead-worker-token"


def test_a_claim_whose_holder_died_is_taken_over_at_once_and_a_live_ones_waits(
    channels: Channels, throttle: Throttle, fake_telegram: FakeTelegramTransport, redis_client: redis.Redis
) -> None:
    channel = TelegramChannel(channels.telegram, "b", "1:T")
    live = Send(Request("welcome:x:3:text:0", "sendMessage", {"chat_id": 1, "text": "oi"}), if_unknown="resend")
    dead = Send(Request("welcome:x:4:text:0", "sendMessage", {"chat_id": 1, "text": "oi"}), if_unknown="resend")
    redis_client.set(f"{liveness.PREFIX}:host-a:41:beef", 1, ex=liveness.TTL_SECONDS)  # host A's worker beats
    for send, holder in ((live, "host-a:41:beef"), (dead, "host-b:42:dead")):  # host B's was SIGKILLed
        OutboundMessage.create(key=send.key, bot_id="b", chat_id=1, method="sendMessage", state="sending",
                               attempts=1, claimed_at=utcnow() - dt.timedelta(seconds=2),
                               claim=f"{holder}|t")  # fmt: skip
    with pytest.raises(dramatiq.Retry) as retry:
        deliver(channel, throttle, 1, [live])
    assert (retry.value.delay or 0) <= (outbox.HOLDER_RECHECK_SECONDS + 1) * 1000  # looked at again soon
    assert deliver(channel, throttle, 1, [dead]).sent == [dead.key]  # 2 s old, not 120: its holder is gone
    assert len(fake_telegram.calls) == 1
