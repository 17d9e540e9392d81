"""Delivery: what a paid charge bought, sent once. The row is created by the transition to paid
(actors/payments.py); this stage sends `delivery_text` with the offer's link, or with a one-use
invite link to `delivery_chat_id`, and is retried until Telegram accepts it. The send is keyed by
the charge and marked `if_unknown="resend"`: a buyer who paid must not be left without access."""

from __future__ import annotations

import datetime as dt
import logging
import time

import dramatiq

import settings
from actors import runtime
from actors.broker import SETTLE, counters, retry_when
from actors.funnel import mark_unreachable
from actors.outbox import NOT_NOW, Send, deliver, hand_off
from actors.throttle import Throttle
from db import hot
from db.database import utcnow
from db.models import Delivery, OutboundMessage
from gateways.telegram import TelegramGateway, TelegramPermanent, TelegramRetryAfter

log = logging.getLogger(__name__)

# A pending delivery untouched this long is restarted by reconciliation (its worker is gone).
STALLED = dt.timedelta(seconds=60)
# A paid delivery is retried this long (with the actor's backoff, restarted by reconcile), then failed.
GIVE_UP = dt.timedelta(days=3)


def send_key(charge_id: int) -> str:
    return f"delivery:{charge_id}"


def invite_link(telegram: TelegramGateway, token: str, chat_id: int, charge_id: int) -> str:
    """A link only one person can use, expiring after DELIVERY_INVITE_HOURS. Made at most once per
    delivery that records it; a second one (a worker died before recording) is harmless."""
    expire = int(time.time()) + settings.DELIVERY_INVITE_HOURS * 3600
    params = {"chat_id": chat_id, "name": f"charge {charge_id}"[:32], "member_limit": 1, "expire_date": expire}
    result = telegram.call(token, "createChatInviteLink", params)
    return str(result["invite_link"])


def _fail(charge_id: int, error: str) -> None:
    Delivery.update(state="failed", error=error[:500], updated_at=utcnow()).where(
        (Delivery.charge_id == charge_id) & (Delivery.state == "pending")
    ).execute()
    counters.inc("grimbots_deliveries_total", {"outcome": "failed"})
    log.warning("delivery failed charge=%s error=%s", charge_id, error)


def deliver_charge(charge_id: int, telegram: TelegramGateway, throttle: Throttle) -> str | None:
    """Send one paid charge's delivery; safe to call again. Returns the delivery's state after,
    None when there is none. Raises dramatiq.Retry / TelegramTransient to be retried."""
    job = hot.delivery_job(charge_id)
    if job is None or job.state != "pending":
        return job.state if job is not None else None
    bot = runtime.bot_config(job.bot_id)
    if bot is None:
        _fail(charge_id, "bot no longer configured")
        return "failed"
    hot.count_delivery_attempt(job.delivery_id, utcnow())
    link = job.delivery_link
    if job.delivery_chat_id is not None:
        link = job.invite_link
        if link is None:
            try:
                link = invite_link(telegram, bot.token, job.delivery_chat_id, charge_id)
            except TelegramRetryAfter as exc:
                raise dramatiq.Retry(
                    "createChatInviteLink: flood wait", delay=int(exc.retry_after * 1000) + 50
                ) from None
            except TelegramPermanent as exc:  # the bot is not an admin there, or the chat is gone
                _fail(charge_id, f"createChatInviteLink: {exc.description}")
                return "failed"
            Delivery.update(invite_link=link).where(
                (Delivery.id == job.delivery_id) & Delivery.invite_link.is_null()
            ).execute()
            link = Delivery.get_by_id(job.delivery_id).invite_link
    text = "\n\n".join(part for part in (job.delivery_text.strip(), link or "") if part)
    send = Send(send_key(charge_id), "sendMessage", {"chat_id": job.chat_id, "text": text}, if_unknown="resend")
    outcome = deliver(telegram, throttle, bot.token, bot.id, job.chat_id, [send])
    if outcome.failed is not None:
        if outcome.blocked:
            mark_unreachable(job.lead_id)
        _fail(charge_id, outcome.failed)
        return "failed"
    sent = hot.first(OutboundMessage, '"key" = {p}', (send.key,))
    if sent is None or sent.state != "sent":
        return "pending"  # another worker is sending it right now
    now = utcnow()
    done = hot.update(Delivery, {"state": "sent", "delivered_at": sent.finished_at or now, "updated_at": now},
                      '"id" = {p} AND "state" = {p}', (job.delivery_id, "pending"))  # fmt: skip
    if done:
        counters.inc("grimbots_deliveries_total", {"outcome": "sent"})
        log.info("delivered bot=%s charge=%s", bot.id, charge_id)
    return "sent"


def deliver_now_or_later(charge_id: int, telegram: TelegramGateway, throttle: Throttle) -> None:
    """Deliver right here (no queue hop between paid and delivered); what cannot finish now goes
    to the delivery actor, which retries it on its own schedule."""
    try:
        deliver_charge(charge_id, telegram, throttle)
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
    deliver_charge(charge_id, runtime.telegram(), runtime.throttle())
