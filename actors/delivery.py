"""Delivery: what a paid charge bought, sent once. The row is created by the transition to paid
(actors/payments.py); this stage sends `delivery_text` with the offer's link, or with a one-use
invite link to `delivery_chat_id`, and is retried until Telegram accepts it. The send is keyed by
the charge and marked `if_unknown="resend"`: a buyer who paid must not be left without access."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import dramatiq

import settings
from actors import followups, runtime
from actors.broker import SETTLE, counters, retry_when
from actors.channels import Channels
from actors.funnel import mark_unreachable
from actors.outbox import NOT_NOW, OWED, Send, deliver, hand_off, plan
from actors.throttle import Throttle
from db import sql
from db.database import transaction, utcnow
from db.models import Charge, Delivery, Offer, OutboundMessage
from gateways.channel import Channel, ChannelPermanent, ChannelRetryAfter, Message, membership
from gateways.whatsapp_cloud import OUTSIDE_WINDOW

log = logging.getLogger(__name__)

# A pending delivery untouched this long is restarted by reconciliation (its worker is gone).
STALLED = dt.timedelta(seconds=60)
# A paid delivery is retried this long (with the actor's backoff, restarted by reconcile), then failed.
GIVE_UP = dt.timedelta(days=3)


def send_key(charge_id: int) -> str:
    return f"delivery:{charge_id}"


def invite_link(channel: Channel, chat_id: int, charge_id: int, by_request: bool = False) -> str:
    """A link only one person can use (or, `by_request`, one whose joins wait for our approval),
    expiring after DELIVERY_INVITE_HOURS. Made at most once per delivery that records it; a second
    one (a worker died before recording) is harmless."""
    members = membership(channel)
    if members is None:  # config refuses delivery_chat_id elsewhere: a bot changed under it
        raise ChannelPermanent("invite link", "chat invite links are Telegram's: deliver a link instead")
    expire = int(time.time()) + settings.DELIVERY_INVITE_HOURS * 3600
    request = members.invite_link(f"invite:{charge_id}", chat_id, name=f"charge {charge_id}", expire_date=expire,
                                  by_request=by_request)  # fmt: skip
    return members.link_of(channel.call(request, chat_id))


def _fail(charge_id: int, error: str) -> None:
    Delivery.update(state="failed", error=error[:500], updated_at=utcnow()).where(
        (Delivery.charge_id == charge_id) & (Delivery.state == "pending")
    ).execute()
    counters.inc("grimbots_deliveries_total", {"outcome": "failed"})
    log.warning("delivery failed charge=%s error=%s", charge_id, error)


def reopen_outside_window(bot_id: str, lead_id: int) -> list[int]:
    """A Cloud buyer whose delivery was refused outside the 24-hour window wrote again (the window is
    open now): those deliveries are pending again and sent. Returns their charges."""
    failed = (Delivery.select(Delivery.charge_id).join(Charge, on=(Charge.id == Delivery.charge_id))
              .where((Charge.lead_id == lead_id) & (Delivery.bot_id == bot_id) & (Delivery.state == "failed")
                     & (Delivery.error == OUTSIDE_WINDOW)))  # fmt: skip
    reopened = []
    for row in failed:
        with transaction():
            won = Delivery.update(state="pending", error=None, updated_at=utcnow()).where(
                (Delivery.charge_id == row.charge_id) & (Delivery.state == "failed")).execute()  # fmt: skip
            OutboundMessage.update(state="pending", error=None).where(
                ((OutboundMessage.key == send_key(row.charge_id))
                 | OutboundMessage.key.startswith(f"{send_key(row.charge_id)}:")) & (OutboundMessage.state == "failed")
                & (OutboundMessage.error == OUTSIDE_WINDOW)).execute()  # fmt: skip
        if won:
            deliver_actor.send(row.charge_id)
            reopened.append(row.charge_id)
            log.info("delivery reopened: the buyer wrote again bot=%s charge=%s", bot_id, row.charge_id)
    return reopened


@dataclass(frozen=True)
class Part:
    """One offer's share of a delivery: the offer itself, or an accepted order bump."""

    key: str
    text: str
    link: str | None
    chat_id: int | None  # delivery_chat_id: a one-use invite link is made for it
    link_column: str  # where the delivery row keeps that link
    invite: str | None
    by_request: bool = False


def _parts(charge_id: int, job: sql.DeliveryJob) -> list[Part]:
    parts = [Part(send_key(charge_id), job.delivery_text, job.delivery_link, job.delivery_chat_id, "invite_link",
                  job.invite_link, bool(job.join_by_request))]  # fmt: skip
    if job.bump_offer_id is not None:
        bump = Offer.get_or_none(Offer.id == job.bump_offer_id)
        if bump is not None:
            parts.append(Part(f"{send_key(charge_id)}:bump", bump.delivery_text, bump.delivery_link,
                              bump.delivery_chat_id, "bump_invite_link", job.bump_invite_link,
                              bump.join_by_request))  # fmt: skip
    return parts


def _link(part: Part, job: sql.DeliveryJob, channel: Channel, charge_id: int) -> str | None:
    """The part's link: its delivery_link, or the one-use invite link made (once) for its chat."""
    if part.chat_id is None:
        return part.link
    if part.invite is not None:
        return part.invite
    try:
        link = invite_link(channel, part.chat_id, charge_id, part.by_request)
    except ChannelRetryAfter as exc:
        raise dramatiq.Retry(f"{exc.method}: flood wait", delay=int(exc.retry_after * 1000) + 50) from None
    column = getattr(Delivery, part.link_column)
    Delivery.update({column: link}).where((Delivery.id == job.delivery_id) & column.is_null()).execute()
    return str(getattr(Delivery.get_by_id(job.delivery_id), part.link_column))


def deliver_charge(charge_id: int, channels: Channels, throttle: Throttle) -> str | None:
    """Send one paid charge's delivery (its offer's, and an accepted bump's: each exactly once);
    safe to call again. Returns the delivery's state after, None when there is none. Raises
    dramatiq.Retry / TelegramTransient to be retried."""
    job = sql.delivery_job(charge_id)
    if job is None or job.state != "pending":
        return job.state if job is not None else None
    bot = runtime.bot_config(job.bot_id)
    if bot is None:
        _fail(charge_id, "bot no longer configured")
        return "failed"
    sql.count_delivery_attempt(job.delivery_id, utcnow())
    channel = channels.of(bot)
    sends: list[Send] = []
    for part in _parts(charge_id, job):
        try:
            link = _link(part, job, channel, charge_id)
        except ChannelPermanent as exc:  # the bot is not an admin there, or the chat is gone
            _fail(charge_id, f"{exc.method}: {exc.description}")
            return "failed"
        text = "\n\n".join(piece for piece in (part.text.strip(), link or "") if piece)
        sends += plan(channel, part.key, job.chat_id, Message(text, access=True), OWED)
    outcome = deliver(channel, throttle, job.chat_id, sends)
    if outcome.failed is not None:
        if outcome.blocked:
            mark_unreachable(job.lead_id)
        _fail(charge_id, outcome.failed)
        return "failed"
    rows = [sql.first(OutboundMessage, '"key" = {p}', (send.key,)) for send in sends]
    if any(row is None or row.state != "sent" for row in rows):
        return "pending"  # another worker is sending it right now
    now = utcnow()
    finished = max((row.finished_at for row in rows if row is not None and row.finished_at), default=now)
    with transaction():
        done = sql.update(Delivery, {"state": "sent", "delivered_at": finished, "updated_at": now},
                          '"id" = {p} AND "state" = {p}', (job.delivery_id, "pending"))  # fmt: skip
        if done:  # its upsells, once: in the transaction that records the delivery
            offers = (job.offer_id, job.bump_offer_id) if job.bump_offer_id else (job.offer_id,)
            followups.schedule_upsells(bot, charge_id, job.lead_id, offers, now)
    if done:
        counters.inc("grimbots_deliveries_total", {"outcome": "sent"})
        log.info("delivered bot=%s charge=%s parts=%d", bot.id, charge_id, len(sends))
    return "sent"


def deliver_now_or_later(charge_id: int, channels: Channels, throttle: Throttle) -> None:
    """Deliver right here (no queue hop between paid and delivered); what cannot finish now goes
    to the delivery actor, which retries it on its own schedule."""
    try:
        deliver_charge(charge_id, channels, throttle)
    except NOT_NOW as exc:
        log.info("delivery handed to delivery.deliver charge=%s reason=%s", charge_id, type(exc).__name__)
        hand_off(deliver_actor, (charge_id,), exc)


def give_up_old() -> int:
    """Deliveries still pending GIVE_UP after the payment: failed, counted and logged (the seller
    sees them in `ops payments` and the alert), no longer retried."""
    now = utcnow()
    failed = (
        Delivery.update(state="failed", error=f"not delivered within {GIVE_UP.days} days", updated_at=now)
        .where((Delivery.state == "pending") & (Delivery.created_at < now - GIVE_UP))
        .execute()
    )
    if failed:
        counters.inc("grimbots_deliveries_total", {"outcome": "gave_up"}, failed)
        log.error("deliveries given up count=%d after_days=%d", failed, GIVE_UP.days)
    return int(failed)


def restart_stalled(limit: int = 500) -> int:
    """Pending deliveries nobody has touched for a while (their worker died, or the actor ran out
    of retries): enqueued again, until GIVE_UP after the payment."""
    cutoff = utcnow() - STALLED
    restarted = 0
    for row in (
        Delivery.select(Delivery.id, Delivery.charge_id, Delivery.updated_at)
        .where((Delivery.state == "pending") & (Delivery.updated_at < cutoff))
        .limit(limit)
    ):
        won = (
            Delivery.update(updated_at=utcnow())
            .where((Delivery.id == row.id) & (Delivery.updated_at == row.updated_at))
            .execute()
        )
        if won:
            deliver_actor.send(row.charge_id)
            restarted += 1
    return restarted


@dramatiq.actor(
    actor_name="delivery.deliver",
    queue_name=SETTLE,
    max_retries=30,
    min_backoff=1_000,
    max_backoff=600_000,
    retry_when=retry_when(30),
    time_limit=60_000,
    max_age=3 * 24 * 3600 * 1000,  # the buyer paid: retried (and restarted by reconcile) until GIVE_UP
)
def deliver_actor(charge_id: int) -> None:
    deliver_charge(charge_id, runtime.channels(), runtime.throttle())
