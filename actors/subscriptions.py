"""Subscriptions (CONTRACT §9): paid access to a chat until an end, reminded before it, removed at
it, renewed by paying again; join requests decided by who pays; a member who joins through a link
issued to another buyer removed and the link revoked.

- `extend` runs in the transaction that wins a subscription offer's charge → paid: one row per
  (lead, chat), end = max(now, current end) + duration, and its expiry and reminders as follow-up
  rows (kinds `expiry`, `reminder`) keyed by the end they were made for: after a renewal the old
  ones find another end at send time and are cancelled.
- Removal (ban, then unban only if banned: they may come back by paying) is owed: sent again when a
  crash leaves it unknown; the expired text and reminders are marketing.
- Telegram refusing (the bot is not an admin, the chat is gone, the user blocked the bot) is
  recorded on the subscription with Telegram's description, counted, and not retried."""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from typing import Any

import dramatiq

from actors import runtime
from actors.broker import FUNNEL, counters, retry_when
from actors.channels import Channels
from actors.funnel import mark_unreachable
from actors.outbox import MARKETING, OWED, Outcome, Send, deliver, plan
from actors.scheduled_rows import close, close_after
from actors.throttle import Throttle
from catalog.schema import BotConfig, OfferConfig, brl
from db import sql
from db.database import is_sqlite, transaction, utcnow
from db.models import Bot, Charge, Delivery, Followup, Lead, Offer, Subscription
from gateways.channel import Choice, JoinRequest, MemberJoined, Membership, Message, Request, membership

log = logging.getLogger(__name__)

# A join request from a payer whose payment is being settled waits for it this long at most
# (Telegram keeps a request answerable for 5 minutes).
JOIN_WAIT = dt.timedelta(minutes=5)
JOIN_RECHECK_MS = 10_000


def _epoch(moment: dt.datetime) -> int:
    return int(moment.replace(tzinfo=dt.UTC).timestamp())


def extend(bot: BotConfig, charge: Charge, offer: OfferConfig, now: dt.datetime) -> Subscription | None:
    """Start or extend the lead's subscription to the offer's chat; schedule its expiry and its
    reminders. Call inside the transaction that wins the charge → paid."""
    if offer.duration_seconds is None or offer.delivery_chat_id is None:
        return None
    duration = dt.timedelta(seconds=offer.duration_seconds)
    where = (Subscription.lead_id == charge.lead_id) & (Subscription.chat_id == offer.delivery_chat_id)
    query = Subscription.select().where(where)
    current = (query if is_sqlite() else query.for_update()).first()
    if current is None:
        sub = Subscription.create(bot_id=bot.id, lead_id=charge.lead_id, chat_id=offer.delivery_chat_id,
                                  offer_id=offer.id, started_at=now, ends_at=now + duration, state="active",
                                  renewals=0, last_charge_id=charge.id, created_at=now, updated_at=now)  # fmt: skip
        counters.inc("grimbots_subscriptions_total", {"outcome": "started"})
    else:
        ends = max(now, current.ends_at) + duration
        Subscription.update(ends_at=ends, state="active", renewals=Subscription.renewals + 1, offer_id=offer.id,
                            last_charge_id=charge.id, error=None, error_at=None,
                            updated_at=now).where(Subscription.id == current.id).execute()  # fmt: skip
        sub = Subscription.get_by_id(current.id)
        counters.inc("grimbots_subscriptions_total", {"outcome": "renewed"})
    schedule(bot, sub, offer, now)
    return sub


def revoke(bot: BotConfig | None, charge: Charge, now: dt.datetime) -> int:
    """A paid charge was refunded (or charged back): what it gave is taken back. Call inside the
    transaction that wins paid → refunded. A subscription it paid for ends now (its expiry and
    reminders find another end and are cancelled) and the member is removed as at the end; a
    one-use invite link it was delivered is revoked. The removal is a `revoke` follow-up row due
    now (owed: sent again when a crash leaves it unknown). Returns the rows scheduled."""
    offers = [bot.offer(charge.offer_id) if bot is not None else None]
    if charge.bump_offer_id is not None and bot is not None:
        offers.append(bot.offer(charge.bump_offer_id))
    base = {"bot_id": charge.bot_id, "lead_id": charge.lead_id, "offer_id": charge.offer_id, "amount": charge.amount,
            "charge_id": charge.id, "kind": "revoke", "state": "scheduled", "attempts": 0, "due_at": now,
            "created_at": now}  # fmt: skip
    Delivery.update(state="failed", error="refunded before delivery", updated_at=now).where(
        (Delivery.charge_id == charge.id) & (Delivery.state == "pending")
    ).execute()
    scheduled = 0
    for position, offer in enumerate(offers):
        if offer is None or offer.delivery_chat_id is None:
            continue
        sub = None
        if offer.duration_seconds:
            where = (Subscription.lead_id == charge.lead_id) & (Subscription.chat_id == offer.delivery_chat_id)
            sub = Subscription.get_or_none(where)
            if sub is not None:
                Subscription.update(state="refunded", ends_at=now, updated_at=now).where(
                    Subscription.id == sub.id
                ).execute()
                counters.inc("grimbots_subscriptions_total", {"outcome": "refunded"})
        values = {**base, "key": f"revoke:{charge.id}:{position}", "position": position,
                  "subscription_id": sub.id if sub is not None else None}  # fmt: skip
        if sql.insert(Followup, values, ignore_conflicts=True) is not None:
            scheduled += 1
    return scheduled


def take_back(row: Followup, channels: Channels, throttle: Throttle) -> str:
    """A refunded charge's access, taken back (a `revoke` row): the member of a subscription it paid
    for removed (unless a later payment made them a member again), and the invite link delivered
    for it revoked, so an unused one can no longer let anyone in."""
    bot = runtime.bot_config(row.bot_id)
    charge = Charge.get_or_none(Charge.id == row.charge_id)
    lead = Lead.get_or_none(Lead.id == row.lead_id)
    if bot is None or charge is None or lead is None:
        return close(row, "cancelled", "bot, charge or lead gone")
    offer_id = charge.offer_id if row.position == 0 else charge.bump_offer_id
    offer = bot.offer(offer_id) if offer_id is not None else None
    if offer is None or offer.delivery_chat_id is None:
        return close(row, "cancelled", "no longer configured")
    chat_id = offer.delivery_chat_id
    failed = None
    if row.subscription_id is not None:
        sub = Subscription.get_or_none(Subscription.id == row.subscription_id)
        if sub is not None and sub.state == "refunded":
            outcome = remove(bot, chat_id, lead.person_id, f"revoke:{row.id}", channels, throttle)
            failed = outcome.failed
            if failed is not None:
                record_error(sub, failed)
    issued = Delivery.get_or_none(Delivery.charge_id == charge.id)
    link = (issued.invite_link if row.position == 0 else issued.bump_invite_link) if issued is not None else None
    if link:
        revoked = revoke_link(bot, chat_id, link, f"revoke:{row.id}:link", channels, throttle)
        failed = failed or revoked.failed
    log.info("refunded access taken back bot=%s charge=%s", bot.id, charge.id)
    return close(row, "failed", failed[:500]) if failed is not None else close(row, "sent")


def schedule(bot: BotConfig, sub: Subscription, offer: OfferConfig, now: dt.datetime) -> None:
    end = _epoch(sub.ends_at)
    base = {"bot_id": bot.id, "lead_id": sub.lead_id, "offer_id": offer.id, "amount": offer.price,
            "subscription_id": sub.id, "state": "scheduled", "attempts": 0, "created_at": now}  # fmt: skip
    sql.insert(Followup, {**base, "key": f"expire:{sub.id}:{end}", "kind": "expiry", "position": 0,
                          "due_at": sub.ends_at}, ignore_conflicts=True)  # fmt: skip
    for i, seconds in enumerate(bot.remind_before):
        due = sub.ends_at - dt.timedelta(seconds=seconds)
        if due > now:
            sql.insert(Followup, {**base, "key": f"remind:{sub.id}:{end}:{i}", "kind": "reminder", "position": i,
                                  "due_at": due}, ignore_conflicts=True)  # fmt: skip


def _ended_otherwise(sub: Subscription | None) -> str:
    """Why a row made for an earlier end is cancelled: the subscription was refunded, or renewed."""
    return "refunded" if sub is not None and sub.state == "refunded" else "renewed"


def _for_this_end(row: Followup, sub: Subscription) -> bool:
    """Whether the row was scheduled for the subscription's current end (not an earlier one)."""
    parts = row.key.split(":")
    return len(parts) >= 3 and parts[2] == str(_epoch(sub.ends_at))


def renew_choice(bot: BotConfig, row: Followup) -> tuple[Choice, ...]:
    return (Choice(f"fu:{row.id}", bot.text("renew_button", amount=brl(row.amount))[:64]),)


def record_error(sub: Subscription, error: str) -> None:
    Subscription.update(error=error[:500], error_at=utcnow(), updated_at=utcnow()).where(
        Subscription.id == sub.id
    ).execute()
    counters.inc("grimbots_subscription_errors_total", {"bot": sub.bot_id})
    log.warning("subscription error bot=%s subscription=%s error=%s", sub.bot_id, sub.id, error)


def send_due(row: Followup, channels: Channels, throttle: Throttle) -> str:
    """A reminder or an expiry, due now: sent, done, or cancelled (renewed, gone)."""
    sub = Subscription.get_or_none(Subscription.id == row.subscription_id)
    bot = runtime.bot_config(row.bot_id)
    lead = Lead.get_or_none(Lead.id == row.lead_id)
    if sub is None or bot is None or lead is None:
        return close(row, "cancelled", "bot, lead or subscription gone")
    if not _for_this_end(row, sub):
        return close(row, "cancelled", _ended_otherwise(sub))
    if row.kind == "reminder":
        if sub.state != "active" or not lead.reachable:
            return close(row, "cancelled", "not active" if sub.state != "active" else "lead unreachable")
        days = max(1, math.ceil((sub.ends_at - utcnow()).total_seconds() / 86400))
        channel = channels.of(bot)
        message = Message(bot.text("reminder_text", days=days), choices=renew_choice(bot, row))
        marketing = partial(throttle.acquire, bot.id, lead.chat_id, marketing=True, rate=channel.rate)  # buyers first
        outcome = deliver(channel, throttle, lead.chat_id,
                          plan(channel, f"followup:{row.id}", lead.chat_id, message, MARKETING), marketing)  # fmt: skip
        if outcome.blocked:
            mark_unreachable(lead.id)
        return close_after(row, outcome)
    return expire(row, sub, bot, lead, channels, throttle)


def remove(bot: BotConfig, chat_id: int, user_id: int, key: str, channels: Channels,
           throttle: Throttle) -> Outcome:  # fmt: skip
    """Take a user out of a chat in a way that lets them back in later (by paying). Owed: resent if
    a crash leaves it unknown; admin calls, not messages."""
    return _as_member(bot, channels, throttle, chat_id, lambda members: members.remove_member(key, chat_id, user_id))


def revoke_link(bot: BotConfig, chat_id: int, link: str, key: str, channels: Channels,
                throttle: Throttle) -> Outcome:  # fmt: skip
    """An invite link no one can use any more (owed, like a removal)."""
    return _as_member(bot, channels, throttle, chat_id, lambda members: [members.revoke_link(key, chat_id, link)])


def _as_member(bot: BotConfig, channels: Channels, throttle: Throttle, chat_id: int,
               requests: Callable[[Membership], list[Request]]) -> Outcome:  # fmt: skip
    """The requests the bot's channel makes for a member's side of a chat, sent (owed)."""
    channel = channels.of(bot)
    members = membership(channel)
    if members is None:  # config sells chats on Telegram only: a bot changed under its subscriptions
        return Outcome(failed=f"{channel.kind} has no chats to sell")
    return deliver(channel, throttle, chat_id, [Send(request, OWED) for request in requests(members)])


class _Refused(Exception):
    """The removal was refused for good: the expiry's transaction is rolled back (still active)."""


def expire(row: Followup, sub: Subscription, bot: BotConfig, lead: Lead, channels: Channels,
           throttle: Throttle) -> str:  # fmt: skip
    """The end, re-checked under the subscription's row lock right before the removal: a renewal
    that committed since keeps the member in, and one paid while the removal is under way waits
    for it (extend takes the same lock), then lets them back in with its own delivery."""
    # SQLite (one machine, one writer at a time) re-checks without holding its database-wide lock
    # through a request.
    try:
        with nullcontext() if is_sqlite() else transaction():
            query = Subscription.select().where(Subscription.id == sub.id)
            current = (query if is_sqlite() else query.for_update()).first()
            if current is None or current.state != "active" or current.ends_at != sub.ends_at:
                return close(row, "cancelled", _ended_otherwise(current))
            key = f"expire:{sub.id}:{_epoch(sub.ends_at)}"
            outcome = remove(bot, sub.chat_id, lead.person_id, key, channels, throttle)
            if outcome.failed is not None:
                raise _Refused(outcome.failed)
            Subscription.update(state="expired", updated_at=utcnow()).where(Subscription.id == sub.id).execute()
    except _Refused as exc:
        record_error(sub, str(exc))
        return close(row, "failed", str(exc)[:500])
    counters.inc("grimbots_subscriptions_total", {"outcome": "expired"})
    log.info("subscription expired bot=%s subscription=%s", bot.id, sub.id)
    if lead.reachable:
        channel = channels.of(bot)
        message = Message(bot.text("expired_text"), choices=renew_choice(bot, row))
        told = deliver(channel, throttle, lead.chat_id,
                       plan(channel, f"followup:{row.id}", lead.chat_id, message, MARKETING))  # fmt: skip
        if told.blocked:
            mark_unreachable(lead.id)
    return close(row, "sent")


# --- join requests and shared links ------------------------------------------------------------


def sells(bot: BotConfig, chat_id: int) -> bool:
    """Whether the bot sells subscriptions to the chat: only then does it decide who joins."""
    return any(o.delivery_chat_id == chat_id and o.duration_seconds for o in bot.offers)


def _telegram_leads(user_id: int) -> Any:
    """The Telegram user as a lead of any Telegram bot of the platform."""
    return (
        Lead.select(Lead.id)
        .join(Bot, on=(Lead.bot == Bot.id))
        .where((Lead.person_id == user_id) & (Bot.channel == "telegram"))
    )


def member_anywhere(chat_id: int, user_id: int) -> bool:
    """The user has an active subscription to the chat, bought through any bot of the platform."""
    return (
        Subscription.select()
        .where(
            Subscription.lead_id.in_(_telegram_leads(user_id))
            & (Subscription.chat_id == chat_id)
            & (Subscription.state == "active")
            & (Subscription.ends_at > utcnow())
        )
        .exists()
    )


def settling_anywhere(chat_id: int, user_id: int) -> bool:
    """The user has a charge for a subscription to the chat (through any bot) still being paid."""
    offers = Offer.select(Offer.id).where((Offer.delivery_chat_id == chat_id) & Offer.duration_seconds.is_null(False))
    return (
        Charge.select()
        .where(
            Charge.lead_id.in_(_telegram_leads(user_id))
            & Charge.offer_id.in_(offers)
            & Charge.status.in_(["creating", "pending"])
        )
        .exists()
    )


JOIN_OWED = "join:"


def join_key(join: JoinRequest) -> str:
    """The request's own key: what its update row owes (a decision, re-driven by the clock:
    actors/redrive.py) and its answer's send, the same whichever bot of a pool answers it."""
    return f"{JOIN_OWED}{join.chat_id}:{join.user_id}:{join.date}"


def owed_join(owed: str) -> JoinRequest:
    chat_id, user_id, date = (int(part) for part in owed[len(JOIN_OWED) :].split(":"))
    return JoinRequest(chat_id, user_id, date)


def join_args(join: JoinRequest) -> dict[str, int]:
    """A request as `join_actor`'s argument."""
    return {"chat_id": join.chat_id, "user_id": join.user_id, "date": join.date}


def join_of(args: dict[str, Any]) -> JoinRequest:
    """`join_args`' form back; messages queued before it carry Telegram's own shape."""
    if "chat_id" in args:
        return JoinRequest(int(args["chat_id"]), int(args["user_id"]), int(args["date"]))
    return JoinRequest(int(args["chat"]["id"]), int(args["from"]["id"]), int(args.get("date") or 0))


def decide_join(bot: BotConfig, join: JoinRequest, update_id: int, channels: Channels,
                throttle: Throttle) -> str:  # fmt: skip
    """approve | decline | wait | ignored. Only for a chat this bot sells subscriptions to (anywhere
    else the bot may be an admin for other reasons: the request is left to the chat's own admins).
    Decided by (chat, Telegram user) across every bot of the platform, so every bot of a pool that
    receives the same request reaches the same answer, and one call answers it: approve a user with
    an active subscription to the chat, wait (up to JOIN_WAIT) for one whose payment is being
    settled, decline everyone else. A decision settles the update's debt (it is owed: re-driven
    by the clock whatever Redis lost, for JOIN_WAIT)."""
    if not sells(bot, join.chat_id):
        sql.settle_owed(bot.id, update_id, utcnow())
        counters.inc("grimbots_join_requests_total", {"decision": "ignored"})
        log.info("join request left to the chat's admins bot=%s chat=%s", bot.id, join.chat_id)
        return "ignored"
    if member_anywhere(join.chat_id, join.user_id):
        decision = "approve"
    elif settling_anywhere(join.chat_id, join.user_id) and _epoch(utcnow()) - join.date < (
        JOIN_WAIT.total_seconds() - 15
    ):
        return "wait"
    else:
        decision = "decline"
    # Keyed by the request, not the update: the bots of a pool each get it; one answers it.
    outcome = _as_member(bot, channels, throttle, join.chat_id, lambda members: [
        members.answer_join(join_key(join), join.chat_id, join.user_id, approve=decision == "approve")])  # fmt: skip
    sql.settle_owed(bot.id, update_id, utcnow())
    counters.inc("grimbots_join_requests_total", {"decision": decision})
    if outcome.failed is not None:
        sub = (
            Subscription.select()
            .where(Subscription.lead_id.in_(_telegram_leads(join.user_id)) & (Subscription.chat_id == join.chat_id))
            .first()
        )
        if sub is not None:
            record_error(sub, f"{decision} of the join request: {outcome.failed}")
    log.info("join request %sd bot=%s chat=%s", decision, bot.id, join.chat_id)
    return decision


def check_member(bot: BotConfig, member: MemberJoined, update_id: int, channels: Channels,
                 throttle: Throttle) -> bool:  # fmt: skip
    """A member who joined through a link issued to another buyer: removed, and the link revoked
    (the buyer it was issued to keeps their access). Returns True when it removed someone."""
    link, joiner, chat_id = member.invite_link, member.user_id, member.chat_id
    if member.status != "member" or link is None:
        return False
    same_link = (Delivery.invite_link == link) | (Delivery.bump_invite_link == link)
    issued = Delivery.get_or_none((Delivery.bot_id == bot.id) & same_link)
    if issued is None:
        return False
    charge = Charge.get_or_none(Charge.id == issued.charge_id)
    owner = Lead.get_or_none(Lead.id == charge.lead_id) if charge is not None else None
    if owner is None or owner.person_id == joiner:
        return False
    outcome = remove(bot, chat_id, joiner, f"share:{bot.id}:{update_id}", channels, throttle)
    revoke_link(bot, chat_id, link, f"share:{bot.id}:{update_id}:revoke", channels, throttle)
    counters.inc("grimbots_shared_links_total", {"outcome": "removed" if outcome.failed is None else "failed"})
    log.warning("shared link caught bot=%s chat=%s charge=%s", bot.id, chat_id, issued.charge_id)
    return True


@dramatiq.actor(
    actor_name="subscriptions.join",
    queue_name=FUNNEL,
    max_retries=40,
    min_backoff=JOIN_RECHECK_MS,
    retry_when=retry_when(40),
    time_limit=60_000,
    max_age=int(JOIN_WAIT.total_seconds() * 1000),  # Telegram stops taking an answer after 5 minutes
)
def join_actor(bot_id: str, update_id: int, request: dict[str, Any]) -> None:
    """A join request whose requester's payment was being settled (`join_args`): asked again until it is."""
    bot = runtime.bot_config(bot_id)
    if bot is None:
        return
    if decide_join(bot, join_of(request), update_id, runtime.channels(), runtime.throttle()) == "wait":
        raise dramatiq.Retry("payment being settled", delay=JOIN_RECHECK_MS)
