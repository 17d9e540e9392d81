"""Broadcasts (CONTRACT §10): segments, the frozen recipient rows, lanes that send each lead once at
the bot's limit, 403 / 429 / stop, and the shared window where the funnel goes first."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from decimal import Decimal
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from actors import broadcasts, health
from actors.broadcasts import BroadcastError
from actors.channels import Channels
from actors.throttle import STOPPED, Throttle
from catalog.schema import BotConfig
from catalog.snapshot import load_bots
from db.database import utcnow
from db.models import Broadcast, BroadcastRecipient, Charge, Click, Lead, OutboundMessage, Subscription
from ops.cli import cli
from tests.conftest import FakeTelegramTransport, apply_config, telegram_error, two_bots


@pytest.fixture
def bot() -> BotConfig:
    apply_config(two_bots())
    return load_bots()["demo"]


@pytest.fixture
def fast(redis_client: redis.Redis) -> Throttle:
    """The real limiter, at a rate that keeps unit tests quick."""
    return Throttle(redis_client, bot_rate=1000, chat_burst=5)


def lead(bot_id: str, n: int, *, reachable: bool = True) -> Lead:
    return Lead.create(bot=bot_id, person_id=n, chat_id=n, first_name=f"L{n}", reachable=reachable)


def charge(lead_row: Lead, status: str, n: int) -> None:
    Charge.create(bot_id=lead_row.bot_id, lead_id=lead_row.id, offer_id=1, gateway_id="main", gateway_kind="sandbox",
                  idempotency_key=f"k{n}", amount=Decimal("19.90"), status=status)  # fmt: skip


def clicked(lead_row: Lead, n: int, **utm: str) -> None:
    Click.create(token=f"t{n}", bot_id=lead_row.bot_id, lead_id=lead_row.id, utm=utm, clicked_at=utcnow())


@pytest.fixture
def leads(bot: BotConfig) -> dict[str, Lead]:
    """One lead per segment, plus one that blocked the bot (in none of them)."""
    rows = {name: lead("demo", i + 1) for i, name in enumerate(["fresh", "unpaid", "paid", "expired", "bf"])}
    charge(rows["unpaid"], "expired", 1)
    charge(rows["paid"], "pending", 2)
    charge(rows["paid"], "paid", 3)
    now = utcnow()
    Subscription.create(bot_id="demo", lead_id=rows["expired"].id, chat_id=-100, offer_id=1, started_at=now,
                        ends_at=now, state="expired")  # fmt: skip
    clicked(rows["bf"], 1, utm_campaign="black-friday", utm_source="facebook")
    clicked(rows["fresh"], 2, utm_campaign="natal", utm_source="tiktok")
    rows["gone"] = lead("demo", 99, reachable=False)
    lead("other", 100)  # another bot's lead
    return rows


def ids(segment: str) -> set[int]:
    sql, params = broadcasts._segment_sql('SELECT l."id"', segment)
    from db.database import db

    return {row[0] for row in db.execute_sql(sql, ("demo", *params)).fetchall()}


def test_each_segment_holds_the_leads_it_names(leads: dict[str, Lead]) -> None:
    want = {
        "all": {"fresh", "unpaid", "paid", "expired", "bf"},
        "not_bought": {"fresh", "expired", "bf"},  # the expired subscriber's charge is not in this fixture
        "unpaid": {"unpaid"},
        "paid": {"paid"},
        "expired": {"expired"},
        "utm_campaign=black-friday": {"bf"},
        "utm_source=tiktok": {"fresh"},
        "utm_source=nowhere": set(),
    }
    for segment, names in want.items():
        assert ids(segment) == {leads[n].id for n in names}, segment
        assert broadcasts.preview("demo", segment) == len(names)


@pytest.mark.parametrize("segment", ["everyone", "utm_medium=x", "utm_campaign=", "paid=1", " all"])
def test_a_bad_segment_is_refused_by_name(segment: str) -> None:
    with pytest.raises(BroadcastError, match="--segment"):
        broadcasts.parse_segment(segment)


def test_the_segment_is_frozen_when_the_broadcast_starts(bot: BotConfig, leads: dict[str, Lead]) -> None:
    row = broadcasts.create(bot, "all", "Oi!")
    assert broadcasts.summaries(broadcast_id=row.id)[0].total == 5  # scheduled: what it would reach now
    assert broadcasts.start(row.id) == 5
    assert broadcasts.start(row.id) is None  # started once
    lead("demo", 50)  # came after the start: not in it
    [summary] = broadcasts.summaries(broadcast_id=row.id)
    assert (summary.state, summary.total, summary.pending) == ("running", 5, 5)


def run(row: Broadcast, channels: Channels, throttle: Throttle, lane: int = 0) -> tuple[str, int]:
    from actors.broker import broker

    token = f"tok{lane}"
    broker.client.set(broadcasts.lane_key(row.id, lane), token)
    return broadcasts.run_lane(row.id, lane, token, channels, throttle)


def sent_to(fake: FakeTelegramTransport) -> list[int]:
    return [p["chat_id"] for m, p in fake.calls if m.startswith("send")]


def test_a_lane_sends_each_lead_once_with_the_offer_button(
    bot: BotConfig, leads: dict[str, Lead], fake_telegram: FakeTelegramTransport, channels: Channels,
    fast: Throttle,
) -> None:  # fmt: skip
    row = broadcasts.create(bot, "all", "Promo de Natal!", offer="vip")
    broadcasts.dispatch()  # starts it (and queues its lanes: run inline here)
    assert run(row, channels, fast) == ("end", 0)
    assert sorted(sent_to(fake_telegram)) == sorted(
        leads[n].chat_id for n in ["fresh", "unpaid", "paid", "expired", "bf"]
    )
    method, params = fake_telegram.calls[0]
    vip = next(o for o in bot.offers if o.slug == "vip")
    assert method == "sendMessage" and params["text"] == "Promo de Natal!"
    assert params["reply_markup"] == {"inline_keyboard": [[{"text": f"{vip.label} — R$ 19,90",
                                                            "callback_data": f"buy:{vip.id}"}]]}  # fmt: skip
    assert "allow_paid_broadcast" not in params
    assert run(row, channels, fast) == ("end", 0) and len(sent_to(fake_telegram)) == 5  # nothing twice
    broadcasts.dispatch()
    [summary] = broadcasts.summaries(broadcast_id=row.id)
    assert (summary.state, summary.total, summary.sent, summary.pending) == ("done", 5, 5, 0)


def test_media_and_paid_broadcasts(bot: BotConfig, leads: dict[str, Lead], fake_telegram: FakeTelegramTransport,
                                   channels: Channels, fast: Throttle) -> None:  # fmt: skip
    row = broadcasts.create(bot, "paid", "Novidade", media_url="https://example.com/x.mp4", paid=True)
    broadcasts.start(row.id)
    run(row, channels, fast)
    [(method, params)] = fake_telegram.calls
    assert method == "sendVideo" and params["caption"] == "Novidade" and params["allow_paid_broadcast"] is True


def test_a_blocked_lead_is_counted_and_marked_unreachable(
    bot: BotConfig, leads: dict[str, Lead], fake_telegram: FakeTelegramTransport, channels: Channels,
    fast: Throttle,
) -> None:  # fmt: skip
    fake_telegram.queue("sendMessage", telegram_error(403, "Forbidden: bot was blocked by the user"),
                        telegram_error(400, "Bad Request: chat not found"))  # fmt: skip
    row = broadcasts.create(bot, "all", "Oi")
    broadcasts.start(row.id)
    run(row, channels, fast)
    [summary] = broadcasts.summaries(broadcast_id=row.id)
    assert (summary.sent, summary.blocked, summary.failed, summary.pending) == (3, 1, 1, 0)
    first = fake_telegram.calls[0][1]["chat_id"]
    assert not Lead.get(Lead.chat_id == first).reachable
    failed = BroadcastRecipient.get(BroadcastRecipient.state == "failed")
    assert failed.error == "Bad Request: chat not found"


def refused_once(bot: BotConfig, fake: FakeTelegramTransport) -> Broadcast:
    """A running broadcast whose first send Telegram answers 429 (retry after 1 s)."""
    fake.queue("sendMessage", telegram_error(429, "Too Many Requests: retry after 1", retry_after=1))
    row = broadcasts.create(bot, "all", "Oi")
    broadcasts.start(row.id)
    return row


def test_a_429_pauses_the_bot_and_loses_nothing(
    bot: BotConfig, leads: dict[str, Lead], fake_telegram: FakeTelegramTransport, channels: Channels,
    fast: Throttle,
) -> None:  # fmt: skip
    row = refused_once(bot, fake_telegram)
    outcome, delay = run(row, channels, fast)
    assert outcome == "again" and 900 <= delay <= 1100  # comes back after Telegram's retry_after
    assert fast.try_acquire("demo", 12345) > 0  # the whole bot waits, the funnel too
    assert BroadcastRecipient.select().where(BroadcastRecipient.state == "pending").count() == 5
    time.sleep(1.1)
    assert run(row, channels, fast) == ("end", 0)
    chats = sent_to(fake_telegram)
    assert len(chats) == 6 and len(set(chats)) == 5  # the refused one again, then the rest: each once


def test_stop_takes_effect_before_the_next_send_even_during_a_pause(
    bot: BotConfig, leads: dict[str, Lead], fake_telegram: FakeTelegramTransport, channels: Channels,
    fast: Throttle,
) -> None:  # fmt: skip
    row = refused_once(bot, fake_telegram)
    assert run(row, channels, fast)[0] == "again"
    assert broadcasts.stop(row.id) and not broadcasts.stop(row.id)
    time.sleep(1.1)
    assert run(row, channels, fast) == ("end", 0)
    assert len(sent_to(fake_telegram)) == 1  # only the refused first try
    [summary] = broadcasts.summaries(broadcast_id=row.id)
    assert (summary.state, summary.sent, summary.pending) == ("stopped", 0, 5)


def test_a_send_a_crash_left_unknown_is_not_made_again(
    bot: BotConfig, leads: dict[str, Lead], fake_telegram: FakeTelegramTransport, channels: Channels,
    fast: Throttle,
) -> None:  # fmt: skip
    row = broadcasts.create(bot, "all", "Oi")
    broadcasts.start(row.id)
    victim = leads["paid"]
    stale = utcnow() - dt.timedelta(minutes=10)  # a worker died with this request in flight
    OutboundMessage.create(key=f"broadcast:{row.id}:{victim.id}", bot_id="demo", chat_id=victim.chat_id,
                           method="sendMessage", state="sending", attempts=1, claimed_at=stale)  # fmt: skip
    run(row, channels, fast)
    assert victim.chat_id not in sent_to(fake_telegram) and len(sent_to(fake_telegram)) == 4
    assert BroadcastRecipient.get(BroadcastRecipient.lead_id == victim.id).state == "unknown"
    [summary] = broadcasts.summaries(broadcast_id=row.id)
    assert (summary.sent, summary.failed, summary.unknown, summary.pending) == (4, 1, 1, 0)


def test_lanes_side_by_side_send_each_lead_once(
    bot: BotConfig, fake_telegram: FakeTelegramTransport, channels: Channels, fast: Throttle
) -> None:
    for n in range(1, 121):
        lead("demo", n)
    row = broadcasts.create(bot, "all", "Oi")
    broadcasts.start(row.id)
    from db.database import db

    def lane(n: int) -> None:
        with db.connection_context():
            run(row, channels, fast, lane=n)

    threads = [threading.Thread(target=lane, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    chats = sent_to(fake_telegram)
    assert sorted(chats) == list(range(1, 121))


def test_a_bot_whose_token_is_refused_waits_instead_of_failing_everyone(
    bot: BotConfig, leads: dict[str, Lead], fake_telegram: FakeTelegramTransport, channels: Channels,
    fast: Throttle,
) -> None:  # fmt: skip
    from actors import pools
    from actors.broker import broker

    row = broadcasts.create(bot, "all", "Oi")
    broadcasts.start(row.id)
    health.mark_unhealthy(broker.client, "demo", 401, "Unauthorized")
    assert run(row, channels, fast) == ("again", pools.RECHECK_SECONDS * 1000)
    assert fake_telegram.calls == [] and broadcasts.summaries(broadcast_id=row.id)[0].pending == 5
    broker.client.hdel(health.UNHEALTHY, "demo")
    assert run(row, channels, fast) == ("end", 0) and len(sent_to(fake_telegram)) == 5


def test_a_lane_whose_place_was_taken_stops(bot: BotConfig, leads: dict[str, Lead], channels: Channels,
                                            fast: Throttle, fake_telegram: FakeTelegramTransport) -> None:  # fmt: skip
    from actors.broker import broker

    row = broadcasts.create(bot, "all", "Oi")
    broadcasts.start(row.id)
    broker.client.set(broadcasts.lane_key(row.id, 0), "newer")
    assert broadcasts.run_lane(row.id, 0, "older", channels, fast) == ("end", 0)
    assert fake_telegram.calls == []


def test_the_clock_gives_running_broadcasts_lanes_once(bot: BotConfig, leads: dict[str, Lead]) -> None:
    import settings
    from actors.broker import broker

    later = broadcasts.create(bot, "all", "Depois", at=utcnow() + dt.timedelta(hours=1))
    now = broadcasts.create(bot, "all", "Agora")
    assert broadcasts.dispatch() == {"started": 1, "lanes": settings.BROADCAST_LANES, "finished": 0}
    assert broadcasts.dispatch()["lanes"] == 0  # alive: not doubled
    assert broker.client.llen("dramatiq:broadcasts") == settings.BROADCAST_LANES
    assert Broadcast.get_by_id(later.id).state == "scheduled" and Broadcast.get_by_id(now.id).state == "running"
    for lane in range(settings.BROADCAST_LANES):  # lanes lost (Redis flushed, workers gone): replaced
        broker.client.delete(broadcasts.lane_key(now.id, lane))
    assert broadcasts.dispatch()["lanes"] == settings.BROADCAST_LANES


# --- the shared window -------------------------------------------------------------------------


def instant(throttle: Throttle, bot: str, chat: int, **kw: Any) -> int:
    """Take a slot for a send whose answer comes back at once."""
    ticket = throttle.ticket(bot, paid=kw.get("paid", False))
    wait = throttle.try_acquire(bot, chat, send_id=ticket.send_id, **kw)
    if wait == 0:
        throttle.done(ticket)
    return wait


def test_the_window_allows_the_rate_in_any_second_and_no_more(redis_client: redis.Redis) -> None:
    throttle = Throttle(redis_client, bot_rate=30, window_ms=1000, chat_burst=10_000)
    taken: list[float] = []
    ends = time.monotonic() + 2.2
    while time.monotonic() < ends:  # as fast as it lets us
        if instant(throttle, "b", len(taken)) == 0:
            taken.append(time.monotonic())
        else:
            time.sleep(0.002)
    assert max(sum(1 for t in taken if start <= t < start + 0.99) for start in taken) == 30
    assert len(taken) >= 60  # and it does let the rate through


def test_a_send_counts_from_its_answer_and_holds_its_slot_while_in_flight(redis_client: redis.Redis) -> None:
    throttle = Throttle(redis_client, bot_rate=2, window_ms=300, chat_burst=100)
    slow, quick = throttle.ticket("b"), throttle.ticket("b")
    assert throttle.try_acquire("b", 1, send_id=slow.send_id) == 0
    assert throttle.try_acquire("b", 2, send_id=quick.send_id) == 0
    throttle.done(quick)
    time.sleep(0.4)
    assert instant(throttle, "b", 3) == 0  # quick's window is over
    assert instant(throttle, "b", 4) > 0  # slow is still waiting for its answer: it holds its slot
    throttle.done(slow)
    assert instant(throttle, "b", 4) > 0  # ... and counts for a window from its answer
    time.sleep(0.32)
    assert instant(throttle, "b", 4) == 0


def test_marketing_stands_back_while_the_funnel_waits(redis_client: redis.Redis) -> None:
    throttle = Throttle(redis_client, bot_rate=3, window_ms=300, chat_burst=100)
    assert all(instant(throttle, "b", n, marketing=True) == 0 for n in range(3))  # a broadcast filled it
    funnel_wait = throttle.try_acquire("b", 10, waiter="welcome")  # a welcome waits: it enters the waiting set
    assert funnel_wait > 0
    time.sleep(funnel_wait / 1000 + 0.15)  # its thread wakes late (a busy machine)
    assert instant(throttle, "b", 11, marketing=True) > 0  # the freed slots are still not marketing's
    assert instant(throttle, "b", 10, waiter="welcome") == 0  # the welcome's, when it comes
    assert instant(throttle, "b", 11, marketing=True) == 0  # then marketing's again


def test_stop_and_paid_windows(redis_client: redis.Redis) -> None:
    throttle = Throttle(redis_client, bot_rate=1, window_ms=1000, paid_rate=50, chat_burst=100)
    assert instant(throttle, "b", 1) == 0 and instant(throttle, "b", 2, marketing=True) > 0
    assert all(instant(throttle, "b", n, marketing=True, paid=True) == 0 for n in range(3, 40))
    redis_client.set("stop-me", 1)
    assert throttle.try_acquire("b", 50, marketing=True, paid=True, stop_key="stop-me") == STOPPED


# --- the commands ------------------------------------------------------------------------------


def cli_run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_the_commands(bot: BotConfig, leads: dict[str, Lead]) -> None:
    assert cli_run("broadcast", "preview", "--bot", "demo", "--segment", "paid").output.strip() == "1"
    result = cli_run("broadcast", "create", "--bot", "demo", "--segment", "all", "--text", "Oi", "--offer", "vip",
                     "--at", "2099-01-01T12:00:00-03:00", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    bid = json.loads(result.output)["id"]
    assert Broadcast.get_by_id(bid).starts_at == dt.datetime(2099, 1, 1, 15, 0)  # UTC
    shown = json.loads(cli_run("broadcast", "show", str(bid), "--json").output)
    assert {k: shown[k] for k in ("id", "state", "total", "sent", "blocked", "failed", "pending")} == {
        "id": bid, "state": "scheduled", "total": 5, "sent": 0, "blocked": 0, "failed": 0, "pending": 5}  # fmt: skip
    status = json.loads(cli_run("status", "--json").output)
    assert [(b["id"], b["state"]) for b in status["broadcasts"]] == [(bid, "scheduled")]
    assert f"broadcast {bid} (demo, all): scheduled" in cli_run("status").output
    assert "stopped" in cli_run("broadcast", "stop", str(bid)).output
    listed = json.loads(cli_run("broadcast", "list", "--bot", "demo", "--json").output)
    assert [(b["id"], b["state"]) for b in listed] == [(bid, "stopped")]
    assert "scheduled" not in cli_run("broadcast", "list").output and "stopped" in cli_run("broadcast", "list").output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--bot", "nope", "--segment", "all", "--text", "x"], "--bot"),
        (["--bot", "demo", "--segment", "vips", "--text", "x"], "--segment"),
        (["--bot", "demo", "--segment", "all", "--text", "  "], "--text"),
        (["--bot", "demo", "--segment", "all", "--text", "x" * 4097], "--text"),
        (["--bot", "demo", "--segment", "all", "--text", "x", "--offer", "nope"], "--offer"),
        (["--bot", "demo", "--segment", "all", "--text", "x", "--at", "tomorrow"], "--at"),
        (["--bot", "demo", "--segment", "all", "--text", "x", "--media-url", "ftp://x"], "--media-url"),
    ],
)
def test_bad_options_are_named_and_nothing_is_created(bot: BotConfig, args: list[str], named: str) -> None:
    result = cli_run("broadcast", "create", *args)
    assert result.exit_code == 1 and named in result.output
    assert Broadcast.select().count() == 0
