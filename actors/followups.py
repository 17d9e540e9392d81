"""Follow-ups: upsells after a delivery and downsells that recover a lead who did not buy or pay,
kept as durable schedules (`followup` rows) and sent by the clock when due.

- Scheduled in the transaction of their cause: a downsell `not_bought` with the lead's first
  /start, `unpaid` with its first charge; an upsell with the delivery of `after_offer`. Each under
  a unique key (`down:{lead}:{position}`, `up:{charge}:{position}`): at most once per lead (per
  paid charge for upsells), however often its cause repeats.
- Claimed by `followups.dispatch` (the clock, every 2 s) with `db.hot.claim_due`: one statement,
  `FOR UPDATE SKIP LOCKED` on PostgreSQL; the claim is a 60 s lease on `due_at`, so a message Redis
  lost, or a worker that died, leaves the row due again: late rather than never.
- Decided at send time (`send`): a downsell to a lead who has paid at this bot since (or, for
  `not_bought`, who pressed an offer) is cancelled, as is anything to a lead who blocked the bot.
  A payment also cancels the lead's scheduled downsells in its own transaction.
- Sent once through the outbox under `followup:{id}` with the marketing policy: a send whose fate a
  crash left unknown is not sent again (CONTRACT §5.5).

    scheduled ──► sent | cancelled | failed | unknown"""

from __future__ import annotations

import datetime as dt
import logging
from functools import partial

import dramatiq

from actors import runtime, subscriptions
from actors.broker import FOLLOWUPS, broker, counters, retry_when
from actors.channels import Channels
from actors.funnel import mark_unreachable, marketing_sends
from actors.outbox import Send, deliver
from actors.schedule import close, close_after
from actors.throttle import Throttle
from db import hot
from db.catalog import BotConfig, FollowupConfig, brl
from db.database import transaction, utcnow
from db.models import Charge, DownsellMark, Followup, Lead
from gateways.channel import Channel, ChannelGaveUp, Choice

log = logging.getLogger(__name__)

LEASE = dt.timedelta(seconds=60)
MAX_QUEUED = 2_000  # sends waiting in the queue at most (a worker drains hundreds a second)
DUE = "\"state\" = 'scheduled'"


def _schedule(bot: BotConfig, lead_id: int, item: FollowupConfig, key: str, now: dt.datetime,
              charge_id: int | None = None) -> bool:  # fmt: skip
    values = {"key": key, "bot_id": bot.id, "lead_id": lead_id, "kind": item.kind, "position": item.position,
              "offer_id": item.offer_id, "amount": item.price, "charge_id": charge_id,
              "due_at": now + dt.timedelta(seconds=item.delay_seconds), "state": "scheduled", "attempts": 0,
              "created_at": now}  # fmt: skip
    created = hot.insert(Followup, values, ignore_conflicts=True) is not None
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
        if hot.insert(DownsellMark, mark, ignore_conflicts=True) is None:
            continue
        scheduled += _schedule(bot, lead_id, item, f"down:{lead_id}:{item.position}", now)
    return scheduled


def schedule_upsells(bot: BotConfig, charge_id: int, lead_id: int, offer_ids: tuple[int, ...], now: dt.datetime) -> int:
    """After the delivery of a paid charge: its upsells, once per charge."""
    return sum(
        _schedule(bot, lead_id, item, f"up:{charge_id}:{item.position}", now, charge_id)
        for item in bot.upsells
        if item.after_offer_id in offer_ids
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
    item = bot.followup(row.kind, row.position)
    if item is None or item.offer_id != row.offer_id or bot.offer(row.offer_id) is None:
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
    slot = partial(throttle.acquire, bot.id, lead.chat_id, marketing=True, rate=channel.rate)  # buyers' go first
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
    send(followup_id, runtime.channels(), runtime.throttle())


def dispatch(limit: int = 500) -> int:
    """Claim the due follow-ups (a lease) and enqueue their sends."""
    with transaction():
        ids = hot.claim_due("followup", DUE, utcnow(), LEASE, limit=limit)
    for followup_id in ids:
        send_actor.send(followup_id)
    return len(ids)


def room() -> int:
    """How many more sends may be queued: a backlog of due follow-ups is fed to the workers as they
    drain it, so no claim's lease runs out while its send is still waiting in the queue."""
    return max(0, MAX_QUEUED - int(broker.client.llen(f"{broker.namespace}:{FOLLOWUPS}")))


@dramatiq.actor(actor_name="followups.dispatch", queue_name=FOLLOWUPS, max_retries=0, time_limit=60_000,
                max_age=10_000)  # fmt: skip
def dispatch_actor() -> None:
    while (free := room()) > 0 and dispatch(min(free, 500)) == min(free, 500):
        pass  # a backlog: keep claiming while there is more and room for it
