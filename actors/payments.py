"""The payments stage: a press on an offer's button becomes one PIX charge and a message with its
code; every way of learning about a payment (a notification, the check button, reconciliation)
goes through `settle`, whose conditional updates let exactly one worker move a charge to paid and
create its delivery, which the same worker then sends (actors/delivery.py).

    creating ──► pending ──► paid ──► refunded
        │           ├──────► expired ──► paid (the money came late: the buyer gets access)
        └► failed   └──────► failed | refunded"""

from __future__ import annotations

import datetime as dt
import logging
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from dramatiq.rate_limits import ConcurrentRateLimiter
from dramatiq.rate_limits.backends import RedisBackend
from peewee import IntegrityError

import settings
from actors import delivery, followups, pixel, runtime, subscriptions
from actors.broker import PAYMENTS, SETTLE, broker, counters, retry_when
from actors.channels import Channels
from actors.enqueue import unit_of_work
from actors.funnel import Recipient
from actors.outbox import OWED, Send, deliver, plan
from actors.throttle import Throttle
from catalog.schema import BotConfig, OfferConfig, brl
from db import sql
from db.database import transaction, utcnow
from db.models import BumpAnswer, Charge, Delivery, Followup, PaymentNotification
from gateways.channel import CODE_SLOT, Channel, Choice, Message
from gateways.payments import qr, registry
from gateways.payments.base import (
    ChargeRequest,
    ChargeStatus,
    PaymentError,
    PaymentGateway,
    PaymentPermanent,
    PaymentTransient,
)

log = logging.getLogger(__name__)
CHECKOUT_MAX_AGE_MS = 10 * 60 * 1000  # on a slow number: channels.patience

# A charge with less time left than this is not offered again: a new tap gets a new charge.
REUSE_MARGIN = dt.timedelta(minutes=2)
# Hand-written conditions for db.sql's cached statements (the money path's hot queries).
BY_ID = '"id" = {p}'
BY_ID_IN_STATUS = '"id" = {p} AND "status" = {p}'
BY_ID_IN_STATUSES = '"id" = {p} AND "status" IN ({p}, {p})'
SAME_TAP_SETTLED = '"lead_id" = {p} AND "offer_id" = {p} AND "created_by_update" = {p} AND "open_key" IS NULL'
# A charge left `creating` this long by a worker that is gone is taken over (same idempotency key).
CREATING_STALE = dt.timedelta(seconds=60)
# A second tap within this long of the code message does not send it again.
RESHOW_AFTER = dt.timedelta(seconds=60)
# Reconciliation keeps asking this long after a charge's expiry before calling it expired.
EXPIRY_GRACE = dt.timedelta(minutes=5)
# After expiry, a code still payable at its gateway is asked about at growing intervals for this long.
LATE_CHECK_FIRST = dt.timedelta(minutes=15)
LATE_CHECK_MAX = dt.timedelta(hours=6)
LATE_PAYMENT_WINDOW = dt.timedelta(days=7)
CHECKOUT_RETRIES = 2
BUMP_QUESTION_QUIET = 60  # seconds: a double tap does not ask the bump question twice


class Busy(Exception):
    """Another worker is creating this lead's charge for this offer right now."""


@contextmanager
def gateway_slot(gateway_id: str) -> Iterator[None]:
    """One of at most GATEWAY_CONCURRENCY calls in flight to a gateway, across every worker: a slow
    or hanging gateway holds that many threads, never all of them. When none is free, the message
    goes back to its queue for a moment (dramatiq.Retry) and the thread serves other sellers."""
    limiter = ConcurrentRateLimiter(_slots_backend(), f"gateway:{gateway_id}", limit=settings.GATEWAY_CONCURRENCY,
                                    ttl=int(settings.PAYMENT_TIMEOUT_SECONDS * 3000))  # fmt: skip
    with limiter.acquire(raise_on_failure=False) as acquired:
        if not acquired:
            counters.inc("grimbots_gateway_busy_total", {"gateway": gateway_id})
            raise dramatiq.Retry(f"gateway {gateway_id} at its concurrency limit", delay=random.randint(200, 800))
        yield


@lru_cache(maxsize=1)
def _slots_backend() -> RedisBackend:
    return RedisBackend(client=broker.client)


# --- buying ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Basket:
    """What a tap buys: the offer, an accepted order bump, or a follow-up's price."""

    offer: OfferConfig
    bump: OfferConfig | None = None
    followup_id: int | None = None  # the upsell or downsell whose button this was
    price: Decimal | None = None  # the follow-up's price (a downsell's discount)

    @property
    def amount(self) -> Decimal:
        base = self.price if self.price is not None else self.offer.price
        return base + (self.bump.price if self.bump is not None else Decimal("0"))

    def open_key(self, lead_id: int) -> str:
        # A follow-up's charge (another price) never stands in for the offer's own, nor the reverse.
        suffix = f":f{self.followup_id}" if self.followup_id else ""
        return f"{lead_id}:{self.offer.id}{suffix}"


def open_charge(bot: BotConfig, lead_id: int, offer: OfferConfig | Basket, update_id: int) -> tuple[Charge, bool]:
    """The charge this tap is about: the lead's open one for the offer while it is still worth
    paying, else a new one in `creating`. Returns (charge, whether this tap must create it at the
    gateway). Raises Busy while another tap's charge is being created."""
    basket = offer if isinstance(offer, Basket) else Basket(offer)
    offer = basket.offer
    open_key = basket.open_key(lead_id)
    now = utcnow()
    try:
        with transaction():
            # This very tap again (a redelivered update), after its charge was settled: that charge.
            done = sql.first(Charge, SAME_TAP_SETTLED, (lead_id, offer.id, update_id))
            if done is not None:
                return done, False
            existing = sql.first(Charge, '"open_key" = {p}', (open_key,))
            if existing is not None:
                if existing.status == "pending" and (existing.expires_at or now) > now + REUSE_MARGIN:
                    return existing, False
                if existing.status == "creating":
                    if existing.created_by_update == update_id or now - existing.updated_at > CREATING_STALE:
                        sql.update(Charge, {"updated_at": now}, BY_ID, (existing.id,))
                        return existing, True
                    raise Busy
                # Still payable, but too close to its end to offer again: a new charge takes the key.
                sql.update(Charge, {"open_key": None}, BY_ID, (existing.id,))
            values = dict(
                bot_id=bot.id, lead_id=lead_id, offer_id=offer.id, gateway_id=bot.gateway_id,
                gateway_kind=_gateway_kind(bot), idempotency_key=uuid.uuid4().hex, open_key=open_key,
                created_by_update=update_id, amount=basket.amount, status="creating", underpaid=False, checks=0,
                bump_offer_id=basket.bump.id if basket.bump else None, followup_id=basket.followup_id,
                created_at=now, updated_at=now,
            )  # fmt: skip
            return sql.loaded(Charge, {"id": sql.insert(Charge, values), **values}), True
    except IntegrityError:  # a concurrent tap inserted the open charge first (PostgreSQL)
        raise Busy from None


def _gateway_kind(bot: BotConfig) -> str:
    config = runtime.catalog().gateway(bot.gateway_id or "")
    return config.kind if config is not None else "unknown"


def create_at_gateway(charge: Charge, bot: BotConfig, offer: OfferConfig, gateway: PaymentGateway) -> Charge:
    """creating → pending with the gateway's code. PaymentError propagates; the row is unchanged."""
    request = ChargeRequest(
        amount=charge.amount,
        description=offer.label,
        reference=f"grimbots:{bot.id}:{charge.id}",
        idempotency_key=charge.idempotency_key,
        expires_in_seconds=bot.charge_minutes * 60,
    )
    with gateway_slot(charge.gateway_id):
        created = gateway.create_charge(request)
    now = utcnow()
    values = {"status": "pending", "external_id": created.charge_id, "br_code": created.br_code,
              "expires_at": created.expires_at, "updated_at": now,
              "next_check_at": now + dt.timedelta(seconds=settings.PAYMENT_FIRST_CHECK_SECONDS)}  # fmt: skip
    track = pixel.tracking(bot, charge.lead_id)
    with unit_of_work():
        won = sql.update(Charge, values, BY_ID_IN_STATUS, (charge.id, "creating"))
        if won:
            pixel.initiate_checkout(track, charge, now)
            followups.schedule_downsells(bot, charge.lead_id, "unpaid", now)  # once per lead: the first charge
    if not won:  # a worker that took over a stale creation got there first
        return sql.first(Charge, BY_ID, (charge.id,)) or charge
    counters.inc("grimbots_payments_charges_total", {"outcome": "created"})
    log.info("charge created bot=%s charge=%s gateway=%s", bot.id, charge.id, charge.gateway_id)
    for name, value in values.items():
        setattr(charge, name, value)
    return charge


def fail_creation(charge: Charge, error: str) -> None:
    Charge.update(status="failed", error=error[:500], open_key=None, updated_at=utcnow()).where(
        (Charge.id == charge.id) & (Charge.status == "creating")
    ).execute()
    counters.inc("grimbots_payments_charges_total", {"outcome": "failed"})
    log.warning("charge failed bot=%s charge=%s error=%s", charge.bot_id, charge.id, error)


def code_message(bot: BotConfig, charge: Charge, offer: OfferConfig) -> Message:
    """The PIX code: the seller's text with the code where `{code}` is, a "check payment" choice,
    a copy button where the channel has one, and the QR image when the bot sends it."""
    text = bot.text("pix", code=CODE_SLOT, amount=brl(charge.amount), offer=offer.label)
    image = ("pix.png", qr.png(charge.br_code or ""), "image/png") if bot.send_qr else None
    return Message(text, image=image, choices=(Choice(f"chk:{charge.id}", bot.text("check_button")),),
                   code=charge.br_code or "", copy_label=bot.text("copy_button"), link_preview=False)  # fmt: skip


def plan_code_message(bot: BotConfig, channel: Channel, charge: Charge, offer: OfferConfig, chat_id: int, key: str
                      ) -> list[Send]:  # fmt: skip
    return plan(channel, key, chat_id, code_message(bot, charge, offer), OWED)


def checkout(
    bot: BotConfig,
    lead: Recipient,
    offer_id: int,
    update_id: int,
    gateway: PaymentGateway | None,
    channels: Channels,
    throttle: Throttle,
    *,
    last_attempt: bool = True,
    followup_id: int = 0,
) -> Charge | None:
    """One tap on an offer's button, safe to repeat: the charge (created or reused) and its code
    message. A gateway that fails for good (or for the last time) → the charge is recorded failed
    and the buyer is told to try again. PaymentTransient propagates while attempts remain."""
    basket = choose(bot, lead, offer_id, followup_id, update_id, channels, throttle)
    if basket is None or gateway is None:
        return None
    offer = basket.offer
    charge, create = open_charge(bot, lead.lead_id, basket, update_id)
    if create:
        try:
            charge = create_at_gateway(charge, bot, offer, gateway)
        except PaymentError as exc:
            if isinstance(exc, PaymentTransient) and not last_attempt:
                raise
            fail_creation(charge, str(exc))
            _tell_failed(bot, lead, charge, channels, throttle)
            return charge
    elif charge.status != "pending":
        return charge  # a repeat of a tap whose charge is settled (paid, failed, expired): nothing to show
    elif charge.created_by_update != update_id:
        counters.inc("grimbots_payments_charges_total", {"outcome": "reused"})
        if charge.shown_at and utcnow() - charge.shown_at < RESHOW_AFTER:
            return charge  # a double tap: the code went out a moment ago
    channel = channels.of(bot)
    sends = plan_code_message(bot, channel, charge, offer, lead.chat_id, f"pix:{charge.id}:{update_id}")
    outcome = deliver(channel, throttle, lead.chat_id, sends)
    if outcome.sent:
        sql.update(Charge, {"shown_at": utcnow()}, BY_ID, (charge.id,))
    return charge


def choose(bot: BotConfig, lead: Recipient, offer_id: int, followup_id: int, update_id: int,
           channels: Channels, throttle: Throttle) -> Basket | None:  # fmt: skip
    """What this tap buys, or None when there is nothing to charge yet: the follow-up's offer at
    its price; or the offer, with its order bump once the lead has answered the bump question
    (asked here, once, when they have not). A bot of a suspended account sells nothing: the tap is
    answered with its "unavailable" text."""
    if bot.suspended:
        channel = channels.of(bot)
        deliver(channel, throttle, lead.chat_id, plan(channel, f"unavailable:{bot.id}:{update_id}", lead.chat_id,
                                                      Message(bot.text("unavailable")), OWED))  # fmt: skip
        log.info("checkout refused: account suspended bot=%s", bot.id)
        return None
    if followup_id:
        row = Followup.get_or_none((Followup.id == followup_id) & (Followup.lead_id == lead.lead_id))
        offer = bot.offer(row.offer_id) if row is not None and row.bot_id == bot.id else None
        if row is None or offer is None:
            log.warning("checkout dropped: follow-up or its offer gone bot=%s followup=%s", bot.id, followup_id)
            return None
        return Basket(offer, followup_id=row.id, price=row.amount)
    offer = bot.offer(offer_id)
    if offer is None:
        log.warning("checkout dropped: offer gone bot=%s offer=%s", bot.id, offer_id)
        return None
    bump = bot.bump_for(offer)
    if bump is None:
        return Basket(offer)
    answer = BumpAnswer.get_or_none((BumpAnswer.lead_id == lead.lead_id) & (BumpAnswer.offer_id == offer.id))
    if answer is None:
        ask_bump(bot, lead, offer, bump, update_id, channels, throttle)
        return None
    return Basket(offer, bump if answer.accepted else None)


def ask_bump(bot: BotConfig, lead: Recipient, offer: OfferConfig, bump: OfferConfig, update_id: int,
             channels: Channels, throttle: Throttle) -> None:  # fmt: skip
    """The order bump's question with its two buttons (`bmp:{offer}:y` / `:n`). The quiet guard
    names the tap that asks: a double tap is not asked again, but the asking tap's own retry (its
    send raised) asks until the question is out — the outbox key makes that once."""
    guard = f"grimbots:bumpq:{lead.lead_id}:{offer.id}"
    cache = runtime.cache()
    if not cache.set(guard, update_id, nx=True, ex=BUMP_QUESTION_QUIET):
        asker = cache.get(guard)
        if asker is not None and int(asker) != update_id:
            return  # asked a moment ago by another tap (a double tap)
        cache.set(guard, update_id, ex=BUMP_QUESTION_QUIET)
    texts = bot.bumps.get(bump.slug)
    text = (texts.text if texts and texts.text else None) or bot.text("bump", offer=bump.label, amount=brl(bump.price))
    accept = (texts.accept if texts and texts.accept else None) or bot.text("bump_accept")
    decline = (texts.decline if texts and texts.decline else None) or bot.text("bump_decline")
    choices = (Choice(f"bmp:{offer.id}:y", accept), Choice(f"bmp:{offer.id}:n", decline))
    channel = channels.of(bot)
    deliver(channel, throttle, lead.chat_id,
            plan(channel, f"bump:{lead.lead_id}:{offer.id}:{update_id}", lead.chat_id, Message(text, choices=choices),
                 OWED))  # fmt: skip
    counters.inc("grimbots_bumps_total", {"outcome": "asked"})


def _tell_failed(bot: BotConfig, lead: Recipient, charge: Charge, channels: Channels, throttle: Throttle) -> None:
    channel = channels.of(bot)
    sends = plan(channel, f"pix-failed:{charge.id}", lead.chat_id, Message(bot.text("charge_failed")), OWED)
    deliver(channel, throttle, lead.chat_id, sends)


def _retries() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0


@dramatiq.actor(
    actor_name="payments.checkout",
    queue_name=PAYMENTS,
    max_retries=8,
    min_backoff=1_000,
    max_backoff=10_000,
    retry_when=retry_when(8),  # Busy and gateway blips: a few quick tries, then the buyer is told
    time_limit=60_000,
    max_age=CHECKOUT_MAX_AGE_MS,  # a code minutes late is worse than "try again" (longer on a slow number)
)
def checkout_actor(
    bot_id: str, lead_id: int, chat_id: int, offer_id: int, update_id: int, followup_id: int = 0
) -> None:
    bot = runtime.bot_config(bot_id)
    if bot is None:
        sql.settle_owed(bot_id, update_id, utcnow())
        return
    gateway = runtime.payment_gateway(bot.gateway_id) if bot.gateway_id else None
    try:
        checkout(bot, Recipient(lead_id, chat_id, True), offer_id, update_id, gateway, runtime.channels(),
                 runtime.throttle(), last_attempt=_retries() >= CHECKOUT_RETRIES, followup_id=followup_id)  # fmt: skip
    except Busy:
        raise dramatiq.Retry("charge being created by another tap", delay=500) from None
    sql.settle_owed(bot_id, update_id, utcnow())  # the tap has its code (or its "try again")


# --- the one transition ----------------------------------------------------------------------


@dataclass(frozen=True)
class Settled:
    charge_id: int
    outcome: str  # paid | underpaid | expired | failed | refunded | repeated | ignored
    deliver: bool  # this call won pending → paid and must send the delivery


def settle(
    charge: Charge,
    status: ChargeStatus,
    amount: Decimal | None,
    *,
    source: str,
    notification: dict[str, Any] | None = None,
) -> Settled:
    """Apply what the gateway says. Conditional updates: of any number of concurrent callers, one
    wins each change; only the winner of → paid creates the delivery (same transaction)."""
    now = utcnow()
    bot = runtime.bot_config(charge.bot_id)  # once per settle: tracking, downsells, subscriptions
    tracked = status in (ChargeStatus.PAID, ChargeStatus.REFUNDED)
    track = pixel.tracking(bot, charge.lead_id) if tracked else None
    with unit_of_work():
        outcome = _transition(charge, status, amount, now, track, bot)
        if notification is not None:
            record_notification(outcome, charge.id, now, notification)
    counters.inc("grimbots_payments_settled_total", {"outcome": outcome, "source": source})
    if outcome in ("paid", "underpaid"):
        paid = amount if amount is not None else charge.amount
        counters.inc("grimbots_payments_paid_brl_total", {}, float(paid))
        log.info("charge paid bot=%s charge=%s source=%s outcome=%s", charge.bot_id, charge.id, source, outcome)
    elif outcome not in ("repeated", "ignored"):
        log.info("charge %s bot=%s charge=%s source=%s", outcome, charge.bot_id, charge.id, source)
    return Settled(charge.id, outcome, outcome == "paid")


def _transition(charge: Charge, status: ChargeStatus, amount: Decimal | None, now: dt.datetime,
                track: pixel.Tracking | None, bot: BotConfig | None) -> str:  # fmt: skip
    if status is ChargeStatus.PAID:
        paid = amount if amount is not None else charge.amount
        underpaid = paid < charge.amount
        values = {"status": "paid", "paid_at": now, "paid_amount": paid, "underpaid": underpaid, "open_key": None,
                  "next_check_at": None, "updated_at": now}  # fmt: skip
        if not sql.update(Charge, values, BY_ID_IN_STATUSES, (charge.id, "pending", "expired")):
            return "repeated"
        if underpaid:  # flagged, not delivered: the seller decides
            log.warning("charge underpaid charge=%s owed=%s paid=%s", charge.id, charge.amount, paid)
            return "underpaid"
        sql.insert(Delivery, {"charge_id": charge.id, "bot_id": charge.bot_id, "state": "pending", "attempts": 0,
                              "created_at": now, "updated_at": now}, ignore_conflicts=True)  # fmt: skip
        pixel.purchase(track, charge, paid, now)
        if bot is None or bot.downsells:  # a bot without downsells has none to cancel (one statement less)
            followups.cancel_downsells(charge.lead_id, "paid")
        offer = bot.offer(charge.offer_id) if bot is not None else None
        if bot is not None and offer is not None:
            subscriptions.extend(bot, charge, offer, now)  # a subscription offer: start or extend it
        return "paid"
    closed = {"open_key": None, "next_check_at": None, "updated_at": now}
    if status is ChargeStatus.EXPIRED and charge.gateway_kind in registry.LATE_PAYABLE:
        # Its code can still be paid at the gateway: keep asking (the buyer who pays late gets access).
        closed["next_check_at"] = now + late_check_delay(0)
    if status in (ChargeStatus.EXPIRED, ChargeStatus.FAILED):
        won = sql.update(Charge, {"status": status.value, **closed}, BY_ID_IN_STATUS, (charge.id, "pending"))
        return status.value if won else "repeated"
    if status is ChargeStatus.REFUNDED:
        was_paid = sql.update(Charge, {"status": "refunded", **closed}, BY_ID_IN_STATUS, (charge.id, "paid"))
        won = was_paid or sql.update(Charge, {"status": "refunded", **closed}, BY_ID_IN_STATUS, (charge.id, "pending"))
        if won:
            pixel.refund(track, charge, now)
        if was_paid:  # what it gave is taken back: a subscription ends, an unused invite link is revoked
            subscriptions.revoke(bot, charge, now)
        return "refunded" if won else "repeated"
    return "ignored"  # still pending: nothing to do


def record_notification(outcome: str, charge_id: int | None, now: dt.datetime, notification: dict[str, Any]) -> None:
    sql.insert(PaymentNotification, {"outcome": outcome, "charge_id": charge_id, "received_at": now, **notification})


def settle_and_deliver(
    charge: Charge,
    status: ChargeStatus,
    amount: Decimal | None,
    *,
    source: str,
    notification: dict[str, Any] | None = None,
) -> Settled:
    settled = settle(charge, status, amount, source=source, notification=notification)
    if settled.deliver:
        delivery.deliver_now_or_later(charge.id, runtime.channels(), runtime.throttle())
    return settled


# --- notifications ---------------------------------------------------------------------------


@dramatiq.actor(
    actor_name="payments.notify",
    queue_name=SETTLE,
    max_retries=20,
    min_backoff=1_000,
    max_backoff=300_000,
    retry_when=retry_when(20),
    time_limit=60_000,
)
def notify(gateway_id: str, notification: dict[str, Any]) -> None:
    """A notification the edge authenticated: {"charge_id", "status" (or null: ask the gateway), "amount"}."""
    external_id = str(notification["charge_id"])
    reported = notification.get("status")
    amount = Decimal(notification["amount"]) if notification.get("amount") is not None else None
    record = {"gateway_id": gateway_id, "external_id": external_id, "reported_status": reported, "amount": amount}
    charge = sql.first(Charge, '"gateway_id" = {p} AND "external_id" = {p}', (gateway_id, external_id))
    if charge is None:
        record_notification("unknown_charge", None, utcnow(), record)
        counters.inc("grimbots_payments_settled_total", {"outcome": "unknown_charge", "source": "notification"})
        log.warning("payment notification for an unknown charge gateway=%s", gateway_id)
        return
    status = ChargeStatus(reported) if reported else None
    if status is None:  # the gateway's notification is only a hint: ask it
        gateway = runtime.payment_gateway(gateway_id)
        if gateway is None:
            log.warning("payment notification dropped: gateway gone gateway=%s", gateway_id)
            return
        try:
            with gateway_slot(gateway_id):
                state = gateway.fetch_status(external_id)
        except PaymentPermanent as exc:
            record_notification("ignored", charge.id, utcnow(), record)
            log.warning("payment status refused gateway=%s charge=%s error=%s", gateway_id, charge.id, exc)
            return
        status, amount = state.status, state.amount
    settle_and_deliver(charge, status, amount, source="notification", notification=record)


# --- the check button ------------------------------------------------------------------------


def check_button(
    bot: BotConfig, lead_id: int, charge_id: int, chat_id: int, callback_id: str, gateway: PaymentGateway | None,
    channels: Channels, throttle: Throttle,
) -> Settled | None:  # fmt: skip
    """The buyer says they paid: ask the gateway now, settle, and answer the button with where it stands."""
    charge = Charge.get_or_none((Charge.id == charge_id) & (Charge.bot_id == bot.id) & (Charge.lead_id == lead_id))
    settled = None
    # Expired too: a buyer who paid a code after our expiry (still payable at some gateways) and
    # whose notification was lost is told the truth and gets access, not "expired".
    if charge is not None and charge.status in ("pending", "expired") and gateway is not None:
        try:
            with gateway_slot(charge.gateway_id):
                state = gateway.fetch_status(charge.external_id or "")
        except PaymentError as exc:
            log.warning("check button: status unavailable charge=%s error=%s", charge.id, type(exc).__name__)
        else:
            settled = settle(charge, state.status, state.amount, source="check")
        charge = Charge.get_by_id(charge.id)
    text = None
    if charge is not None:
        names = {"paid": "payment_confirmed", "expired": "charge_expired", "failed": "charge_expired"}
        text = bot.text(names.get(charge.status, "payment_pending"))
    channel = channels.of(bot)
    answer = channel.answer(f"callback:{bot.id}:{callback_id}", chat_id, callback_id, text)
    deliver(channel, throttle, chat_id, [Send(r, OWED) for r in answer])
    if settled is not None and settled.deliver:
        delivery.deliver_now_or_later(settled.charge_id, channels, throttle)
    return settled


@dramatiq.actor(
    actor_name="payments.check",
    queue_name=SETTLE,
    max_retries=3,
    min_backoff=500,
    retry_when=retry_when(3),
    time_limit=60_000,
    max_age=5 * 60 * 1000,  # the button's answer is useless later; reconciliation covers the rest
)
def check(bot_id: str, lead_id: int, charge_id: int, chat_id: int, callback_id: str) -> None:
    bot = runtime.bot_config(bot_id)
    if bot is None:
        return
    gateway = runtime.payment_gateway(bot.gateway_id) if bot.gateway_id else None
    check_button(bot, lead_id, charge_id, chat_id, callback_id, gateway, runtime.channels(), runtime.throttle())


# --- reconciliation --------------------------------------------------------------------------


def next_check_delay(checks: int) -> dt.timedelta:
    seconds = settings.PAYMENT_FIRST_CHECK_SECONDS * 2 ** min(checks, 16)
    return dt.timedelta(seconds=min(seconds, settings.PAYMENT_CHECK_MAX_SECONDS))


def late_check_delay(checks: int) -> dt.timedelta:
    """After expiry, for gateways whose codes outlive it: 15 min doubling to 6 h."""
    return min(LATE_CHECK_FIRST * 2 ** min(checks, 10), LATE_CHECK_MAX)


def due_charges(limit: int = 500) -> list[int]:
    """Charges that have gone quiet, each claimed for one check (a conditional bump of
    next_check_at: overlapping clock runs cannot both take it): pending ones, and expired ones
    whose code can still be paid at the gateway, for LATE_PAYMENT_WINDOW after expiry."""
    now = utcnow()
    claimed = []
    rows = (
        Charge.select(Charge.id, Charge.checks, Charge.next_check_at, Charge.status, Charge.expires_at)
        .where(Charge.status.in_(["pending", "expired"]) & (Charge.next_check_at <= now))
        .order_by(Charge.next_check_at)
        .limit(limit)
    )
    for row in rows:
        if row.status == "pending":
            following: dt.datetime | None = now + next_check_delay(row.checks + 1)
        elif row.expires_at is not None and now - row.expires_at > LATE_PAYMENT_WINDOW:
            following = None  # the last look: nobody pays a week-old code
        else:
            following = now + late_check_delay(row.checks + 1)
        won = (
            Charge.update(checks=Charge.checks + 1, next_check_at=following)
            .where((Charge.id == row.id) & (Charge.next_check_at == row.next_check_at) & (Charge.status == row.status))
            .execute()
        )
        if won:
            claimed.append(row.id)
    return claimed


def abandon_stale_creations() -> int:
    """Charges a dead worker left `creating` for long: failed, so the lead can buy again."""
    cutoff = utcnow() - dt.timedelta(minutes=10)
    return (
        Charge.update(status="failed", error="creation interrupted", open_key=None, updated_at=utcnow())
        .where((Charge.status == "creating") & (Charge.updated_at < cutoff))
        .execute()
    )


def recheck_charge(charge: Charge, gateway: PaymentGateway) -> Settled | None:
    """Ask the gateway about one pending charge (past its expiry and a grace: call it expired), or
    about an expired one whose code can still be paid there (paid: delivered; dead there too: no
    more asking)."""
    try:
        with gateway_slot(charge.gateway_id):
            state = gateway.fetch_status(charge.external_id or "")
    except PaymentPermanent as exc:
        log.warning("reconcile: status refused charge=%s error=%s", charge.id, exc)
        state = None
    if charge.status == "expired":
        if state is not None and state.status is ChargeStatus.PAID:
            return settle_and_deliver(charge, state.status, state.amount, source="reconcile")
        if state is None or state.status is not ChargeStatus.PENDING:
            sql.update(Charge, {"next_check_at": None}, BY_ID_IN_STATUS, (charge.id, "expired"))
        return None
    if state is not None and state.status is not ChargeStatus.PENDING:
        return settle_and_deliver(charge, state.status, state.amount, source="reconcile")
    if charge.expires_at is not None and utcnow() > charge.expires_at + EXPIRY_GRACE:
        return settle(charge, ChargeStatus.EXPIRED, None, source="expiry")
    return None


@dramatiq.actor(
    actor_name="payments.recheck",
    queue_name=SETTLE,
    max_retries=3,
    min_backoff=5_000,
    retry_when=retry_when(3),  # the next reconciliation round asks again anyway
    time_limit=60_000,
    max_age=15 * 60 * 1000,
)
def recheck(charge_id: int) -> None:
    charge = Charge.get_or_none(Charge.id == charge_id)
    if charge is None or charge.status not in ("pending", "expired"):
        return
    gateway = runtime.payment_gateway(charge.gateway_id)
    if gateway is None:
        log.warning("reconcile: gateway gone charge=%s gateway=%s", charge.id, charge.gateway_id)
        return
    recheck_charge(charge, gateway)


@dramatiq.actor(actor_name="payments.reconcile", queue_name=SETTLE, max_retries=0, time_limit=120_000,
                max_age=60_000)  # fmt: skip
def reconcile() -> None:
    """From the clock: ask about quiet pending charges, give up on interrupted creations, and
    restart deliveries that stalled (a worker died between paid and sent)."""
    for charge_id in due_charges():
        recheck.send(charge_id)
    abandoned = abandon_stale_creations()
    delivery.give_up_old()
    restarted = delivery.restart_stalled()
    if abandoned or restarted:
        log.info("reconcile abandoned_creations=%d restarted_deliveries=%d", abandoned, restarted)
