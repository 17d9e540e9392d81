"""Follow-ups: upsells after a delivery and downsells that recover a lead who did not buy or pay,
kept as durable schedules (`followup` rows) and sent by the clock when due.

- Scheduled in the transaction of their cause: a downsell `not_bought` with the lead's first
  /start, `unpaid` with its first charge; an upsell with the delivery of `after_offer`. Each under
  a unique key (`down:{lead}:{position}`, `up:{charge}:{position}`): at most once per lead (per
  paid charge for upsells), however often its cause repeats.
- Claimed by `followups.dispatch` (the clock, every 2 s) with `db.sql.claim_due`: one statement
  per bot with due rows, `FOR UPDATE SKIP LOCKED` on PostgreSQL; the claim is a 60 s lease on
  `due_at`, so a message Redis lost, or a worker that died, leaves the row due again: late rather
  than never. A WhatsApp number gets no more claims a round than it can send in two (`budget`: 1
  at 10 a minute), so its backlog waits in the database, not in Redis.
- A send that must wait (its number's window, a flood wait, a channel's retry schedule) puts its
  row back, due when the wait ends (`due_again`), instead of waiting as a delayed message: no row
  ever has two live messages, and the queue holds what can be sent now.
- Decided at send time (`send`): a downsell to a lead who has paid at this bot since (or, for
  `not_bought`, who pressed an offer) is cancelled, as is anything to a lead who blocked the bot.
  A payment also cancels the lead's scheduled downsells in its own transaction.
- Sent once through the outbox under `followup:{id}` with the marketing policy: a send whose fate a
  crash left unknown is not sent again (CONTRACT §5.5).

    scheduled ──► sent | cancelled | failed | unknown"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import math
from functools import partial

import dramatiq

import settings
from actors import runtime, subscriptions
from actors.broker import FOLLOWUPS, broker, counters, retry_when
from actors.channels import Channels, rate_of
from actors.funnel import mark_unreachable, marketing_sends
from actors.outbox import Send, deliver
from actors.scheduled_rows import close, close_after
from actors.throttle import Throttle
from catalog.schema import BotConfig, FollowupConfig, brl
from db import sql
from db.database import transaction, utcnow
from db.models import Charge, DownsellMark, Followup, Lead
from gateways.channel import Channel, ChannelGaveUp, ChannelTransient, Choice

log = logging.getLogger(__name__)

LEASE = dt.timedelta(seconds=60)
MAX_QUEUED = 2_000  # sends waiting in the queue at most (a worker drains hundreds a second)
DUE = "\"state\" = 'scheduled'"
ROUND = dt.timedelta(seconds=2)  # the clock's dispatch interval (ops/clock.py)
PER_BOT = 500  # claims per bot and round at most
# A transient failure retried by the actor's backoff keeps its lease this long past the backoff.
TRANSIENT_HOLD = dt.timedelta(seconds=60)


def _schedule(bot: BotConfig, lead_id: int, item: FollowupConfig, key: str, now: dt.datetime,
              charge_id: int | None = None) -> bool:  # fmt: skip
    offer = bot.offer_by_slug(item.offer)
    if offer is None:
        return False
    values = {"key": key, "bot_id": bot.id, "lead_id": lead_id, "kind": item.kind, "position": item.position,
              "offer_id": offer.id, "amount": item.price, "charge_id": charge_id,
              "due_at": now + dt.timedelta(seconds=item.delay_seconds), "state": "scheduled", "attempts": 0,
              "created_at": now}  # fmt: skip
    created = sql.insert(Followup, values, ignore_conflicts=True) is not None
    if created:
        counters.inc("grimbots_followups_total", {"kind": item.kind, "outcome": "scheduled"})
    return created


def schedule_downsells(bot: BotConfig, lead_id: int, when: str, now: dt.datetime) -> int:
    """The bot's downsells for `when` (not_bought: at a /start; unpaid: at a charge), each once per
    lead: a later /start or charge finds the row there and changes nothing."""
    scheduled = 0
    for item in bot.downsells:
        if item.when != when:
            continue
        # The permanent mark first: a lead whose row was pruned long ago is still not sent it again.
        mark = {"lead_id": lead_id, "position": item.position, "created_at": now}
        if sql.insert(DownsellMark, mark, ignore_conflicts=True) is None:
            continue
        scheduled += _schedule(bot, lead_id, item, f"down:{lead_id}:{item.position}", now)
    return scheduled


def schedule_upsells(bot: BotConfig, charge_id: int, lead_id: int, offer_ids: tuple[int, ...], now: dt.datetime) -> int:
    """After the delivery of a paid charge: its upsells, once per charge."""
    return sum(
        _schedule(bot, lead_id, item, f"up:{charge_id}:{item.position}", now, charge_id)
        for item in bot.upsells
        if (after := bot.offer_by_slug(item.after_offer)) is not None and after.id in offer_ids
    )


def cancel_downsells(lead_id: int, reason: str) -> int:
    """The lead paid: their scheduled downsells will never go out."""
    cancelled = int(
        Followup.update(state="cancelled", error=reason)
        .where((Followup.lead_id == lead_id) & (Followup.kind == "downsell") & (Followup.state == "scheduled"))
        .execute()
    )
    if cancelled:
        counters.inc("grimbots_followups_total", {"kind": "downsell", "outcome": "cancelled"}, cancelled)
    return cancelled


def _has_paid(lead_id: int) -> bool:
    return Charge.select().where((Charge.lead_id == lead_id) & Charge.status.in_(["paid", "refunded"])).exists()


def _has_charge(lead_id: int) -> bool:
    return Charge.select().where(Charge.lead_id == lead_id).exists()


def why_not(row: Followup, bot: BotConfig | None, lead: Lead | None) -> str | None:
    """Why a due follow-up must not go out now, or None when it must."""
    if bot is None or lead is None:
        return "bot or lead gone"
    if bot.suspended:
        return "account suspended"
    item = bot.followup(row.kind, row.position)
    offer = bot.offer_by_slug(item.offer) if item is not None else None
    if item is None or offer is None or offer.id != row.offer_id:
        return "no longer configured"
    if not lead.reachable:
        return "lead unreachable"
    if row.kind == "downsell":
        if _has_paid(lead.id):
            return "paid"
        if item.when == "not_bought" and _has_charge(lead.id):
            return "bought"
    return None


def plan(bot: BotConfig, channel: Channel, row: Followup, item: FollowupConfig, chat_id: int) -> list[Send]:
    """The follow-up's text (with its media when configured) and one choice that buys its offer at
    its price (`fu:{id}`: the row knows which offer and price)."""
    offer = bot.offer(row.offer_id)
    label = offer.label if offer is not None else ""
    button = bot.text("followup_button", amount=brl(row.amount), offer=label)
    return marketing_sends(channel, f"followup:{row.id}", chat_id, item.text, item.media_url,
                           (Choice(f"fu:{row.id}", button[:64]),))  # fmt: skip


def send(followup_id: int, channels: Channels, throttle: Throttle) -> str | None:
    """Send one due follow-up, or cancel it; safe to call again. Returns its state after."""
    row = Followup.get_or_none(Followup.id == followup_id)
    if row is None or row.state != "scheduled":
        return row.state if row is not None else None
    if row.due_at > utcnow() + LEASE:  # not due (a stray message): the clock brings it when it is
        return row.state
    if row.kind in ("reminder", "expiry"):  # a subscription's
        return subscriptions.send_due(row, channels, throttle)
    if row.kind == "revoke":  # a refunded charge's access
        return subscriptions.take_back(row, channels, throttle)
    bot = runtime.bot_config(row.bot_id)
    lead = Lead.get_or_none(Lead.id == row.lead_id)
    reason = why_not(row, bot, lead)
    if reason is not None:
        close(row, "cancelled", reason)
        log.info("followup cancelled bot=%s followup=%s kind=%s reason=%s", row.bot_id, row.id, row.kind, reason)
        return "cancelled"
    assert bot is not None and lead is not None
    item = bot.followup(row.kind, row.position)
    assert item is not None
    channel = channels.of(bot)
    # Buyers' go first; on a slow window a wait is never slept through: the row goes back instead.
    slot = partial(throttle.acquire, bot.id, lead.chat_id, marketing=True, rate=channel.rate,
                   sleep=not throttle.slow(channel.rate[1]))  # fmt: skip
    try:
        outcome = deliver(channel, throttle, lead.chat_id, plan(bot, channel, row, item, lead.chat_id), slot)
    except ChannelGaveUp as exc:  # marketing is not retried past its channel's schedule
        log.warning("followup failed bot=%s followup=%s error=%s", row.bot_id, row.id, exc.description)
        return close(row, "failed", exc.description[:500])
    if outcome.blocked:
        mark_unreachable(lead.id)
    state = close_after(row, outcome)
    log.info("followup %s bot=%s followup=%s kind=%s", state, row.bot_id, row.id, row.kind)
    return state


def due_again(followup_id: int, after: dt.timedelta) -> None:
    """A scheduled row's claim moved: due `after` from now. A send that must wait gives its lease up
    early (due when the wait ends: no message of it stays alive meanwhile); a transient failure the
    actor's own backoff retries holds it over the retries (the clock does not claim it again while
    its message is alive)."""
    due = utcnow() + after
    Followup.update(due_at=due).where((Followup.id == followup_id) & (Followup.state == "scheduled")).execute()


def send_or_put_back(followup_id: int, channels: Channels, throttle: Throttle) -> str | None:
    """`send`, with its waits kept in the database rather than in Redis."""
    try:
        return send(followup_id, channels, throttle)
    except dramatiq.Retry as exc:  # a rate wait, a flood wait, a channel's retry schedule, a young claim
        due_again(followup_id, dt.timedelta(milliseconds=max(exc.delay or 1000, 100)))
        return "scheduled"
    except ChannelTransient:
        due_again(followup_id, TRANSIENT_HOLD + LEASE)
        raise


@dramatiq.actor(
    actor_name="followups.send",
    queue_name=FOLLOWUPS,
    priority=100,  # marketing: behind any welcome or code in the same worker
    max_retries=5,
    min_backoff=2_000,
    max_backoff=60_000,
    retry_when=retry_when(5),
    time_limit=60_000,
    max_age=3600 * 1000,  # the row stays due: the clock sends it again when this message is gone
)
def send_actor(followup_id: int) -> None:
    send_or_put_back(followup_id, runtime.channels(), runtime.throttle())


def budget(bot: BotConfig | None) -> int:
    """Claims a bot gets per round: on a slow window (WhatsApp), what it sends in two rounds (a row
    the number cannot send yet waits in the database); else PER_BOT (Telegram's 30/s and its
    unthrottled bans take hundreds a round)."""
    if bot is None:
        return 1
    limit, window_ms = rate_of(bot)
    if window_ms <= settings.TELEGRAM_WINDOW_MS:
        return PER_BOT
    return max(1, min(PER_BOT, math.ceil(limit * 2 * ROUND.total_seconds() * 1000 / window_ms)))


def due_bots(now: dt.datetime) -> list[str]:
    rows = Followup.select(Followup.bot_id).where((Followup.state == "scheduled") & (Followup.due_at <= now))
    return [r.bot_id for r in rows.group_by(Followup.bot_id)]


def dispatch(limit: int = MAX_QUEUED) -> int:
    """Claim the due follow-ups (a lease), each bot at most its budget, and enqueue their sends."""
    now, claimed, per_bot = utcnow(), 0, []
    for bot_id in due_bots(now):
        if claimed >= limit:
            break
        take = min(budget(runtime.bot_config(bot_id)), limit - claimed)
        with transaction():
            ids = sql.claim_due("followup", DUE + ' AND "bot_id" = {p}', now, LEASE, limit=take, params=(bot_id,))
        per_bot.append(ids)
        claimed += len(ids)
    # Enqueued bot after bot in turn: the workers meet each bot's rate limit as rarely as they can.
    for round_ in itertools.zip_longest(*per_bot):
        for followup_id in round_:
            if followup_id is not None:
                send_actor.send(followup_id)
    return claimed


def room() -> int:
    """How many more sends may be queued (the queue and its delayed messages): a backlog of due
    follow-ups is fed to the workers as they drain it, so no claim's lease runs out while its send
    is still waiting in the queue."""
    queued = sum(int(broker.client.llen(f"{broker.namespace}:{name}")) for name in (FOLLOWUPS, f"{FOLLOWUPS}.DQ"))
    return max(0, MAX_QUEUED - queued)


@dramatiq.actor(actor_name="followups.dispatch", queue_name=FOLLOWUPS, max_retries=0, time_limit=60_000,
                max_age=10_000)  # fmt: skip
def dispatch_actor() -> None:
    if (free := room()) > 0:
        dispatch(free)
