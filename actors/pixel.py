"""Ad-platform events, each sent once: Meta's Conversions API, TikTok's Events API and Utmify's
orders are three destinations (gateways/ads.py) of one pipeline.

Meta: PageView, ViewContent, InitiateCheckout, Purchase. TikTok: ViewContent, InitiateCheckout,
CompletePayment. Utmify: an order per charge, `waiting_payment` when its code is sent, then `paid`
or `refunded`, in that order (a state waits for the one before it), never for a charge older than
7 days. A destination's row carries its target (`pixel_id`: Meta's pixel, TikTok's pixel code, the
bot for Utmify); each (destination, target) is flushed on its own, so one that fails (backing off)
never delays another.

Events are rows first: `PageView` when a click is recorded, `ViewContent` in the transaction that
takes a /start in, `InitiateCheckout` in the one that makes a charge pending, `Purchase` in the one
that wins pending → paid. Each has a deterministic `event_id` under a unique index, so a repeated
update, notification or worker retry inserts nothing new. After the transaction commits, a flush of
the event's pixel is scheduled `META_LINGER_MS` later (one per pixel at a time: a Redis key taken
with NX), so a burst shares requests; the flush claims up to 1000 due events at a time, sends them
and records what Meta said:

    pending → sending → sent
                      → failed    4xx: Meta refused the batch (its message kept), never retried
                      → pending   5xx, 429, network: again later, with backoff
    pending → expired             older than Meta accepts (7 days): never sent

The clock's sweep catches what a crash left behind: events whose flush was never scheduled, and
claims of a worker that died mid-request (sent again; Meta deduplicates on event_name + event_id
within 48 h, so an at-most-twice send on a crash still counts once)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import dramatiq
from peewee import fn

import clicks
import settings
from actors import runtime
from actors.broker import PIXEL, counters, retry_when
from actors.enqueue import after_commit, unit_of_work
from catalog.schema import BotConfig, WhatsAppConfig
from db import hot
from db.database import is_sqlite, transaction, utcnow
from db.days import local_day
from db.models import Charge, Click, ClickDay, PixelEvent
from gateways import tiktok, utmify
from gateways.ads import Destination, DestinationPermanent, DestinationTransient
from gateways.meta import user_data

log = logging.getLogger(__name__)

FLUSH_KEY = "grimbots:pixel:flush:{pixel_id}"  # Meta's (as before other destinations); the others':
FLUSH_KEY_OF = "grimbots:pixel:flush:{destination}:{pixel_id}"
DESTINATIONS = ("meta", "tiktok", "utmify")
BY_TOKEN = '"token" = {p}'
# Meta refuses events older than 7 days; keep a margin so an event is never refused in flight.
MAX_AGE = dt.timedelta(days=7) - dt.timedelta(minutes=10)
STALE_CLAIM = dt.timedelta(minutes=5)  # well past the flush's time limit
MAX_BATCHES_PER_FLUSH = 20
BACKOFF_FIRST = dt.timedelta(seconds=5)
BACKOFF_MAX = dt.timedelta(minutes=15)


def targets(bot: BotConfig) -> dict[str, tuple[str, dict[str, str | None]]]:
    """The destinations a bot sends to: destination → (target, credentials)."""
    out: dict[str, tuple[str, dict[str, str | None]]] = {}
    if bot.pixel_id and bot.pixel_access_token:
        out["meta"] = (bot.pixel_id, {"access_token": bot.pixel_access_token,
                                      "test_event_code": bot.pixel_test_event_code or None})  # fmt: skip
    if bot.tiktok_pixel_code and bot.tiktok_access_token:
        out["tiktok"] = (bot.tiktok_pixel_code, {"access_token": bot.tiktok_access_token})
    if bot.utmify_token:
        out["utmify"] = (bot.id, {"token": bot.utmify_token})
    return out


def tracks(bot: BotConfig | None, destination: str = "meta") -> bool:
    return bot is not None and destination in targets(bot)


# --- events: built and recorded inside their cause's transaction -------------------------------


def from_ms(at_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Buyer:
    """What an event says about who did it: the chat user and their last ad click."""

    person_id: int | None = None
    fbc: str | None = None
    fbp: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    source_url: str | None = None
    ttclid: str | None = None
    ttp: str | None = None
    utm: dict[str, str] = field(default_factory=dict)
    name: str = ""
    ctwa_clid: str | None = None  # a Click-to-WhatsApp ad's click (CONTRACT §12)

    def __repr__(self) -> str:  # personal data: never in a log line
        return "Buyer(...)"

    @classmethod
    def of(cls, click: Click | None, person_id: int | None) -> Buyer:
        if click is None:
            return cls(person_id)
        return cls(person_id, click.fbc, click.fbp, click.ip, click.user_agent, click.source_url, click.ttclid,
                   click.ttp, dict(click.utm or {}))  # fmt: skip


def buyer_of(lead_id: int) -> Buyer:
    row = hot.lead_click(lead_id)
    if row is None:
        return Buyer()
    user_id, fbc, fbp, ip, user_agent, source_url, ttclid, ttp, utm, name, ctwa_clid = row
    utm = json.loads(utm) if isinstance(utm, str) else (utm or {})
    return Buyer(user_id, fbc, fbp, ip, user_agent, source_url, ttclid, ttp, dict(utm), name or "", ctwa_clid)


@dataclass(frozen=True)
class Tracking:
    """A bot that sends events, and the buyer they are about: read before a write transaction
    opens, so the transaction itself only inserts."""

    bot: BotConfig
    buyer: Buyer


def tracking(bot: BotConfig | None, lead_id: int) -> Tracking | None:
    """What an event of this bot's lead needs, when the bot sends events anywhere."""
    if bot is None or not targets(bot):
        return None
    return Tracking(bot, buyer_of(lead_id))


def build_event(
    name: str,
    event_id: str,
    event_time: dt.datetime,
    buyer: Buyer,
    custom_data: dict[str, Any] | None = None,
    whatsapp: WhatsAppConfig | None = None,
) -> dict[str, Any]:
    """One event as Meta takes it. A lead a Click-to-WhatsApp ad brought to a bot with a WhatsApp
    business account (`waba_id`) is a `business_messaging` event on `whatsapp` with its ctwa_clid
    (Conversions API for WhatsApp). Otherwise, with a click (a browser was there) it is a `website` event with the
    click's URL, IP and user agent, which Meta requires of website events; without one it happened
    in the chat. A WhatsApp buyer's number is sent hashed (`ph`)."""
    phone = str(buyer.person_id) if whatsapp is not None and buyer.person_id is not None else None
    user = user_data(
        person_id=buyer.person_id,
        fbc=buyer.fbc,
        fbp=buyer.fbp,
        ip=buyer.ip,
        user_agent=buyer.user_agent,
        phone=phone,
    )
    event: dict[str, Any] = {
        "event_name": name,
        "event_time": int(event_time.replace(tzinfo=dt.UTC).timestamp()),
        "event_id": event_id,
        "action_source": "website" if buyer.user_agent else "chat",
        "user_data": user,
    }
    if whatsapp is not None and buyer.ctwa_clid and whatsapp.waba_id:
        # Meta takes business_messaging events only with the WhatsApp business account (a Cloud bot's
        # waba_id); an Evolution number has none: its events go as chat events.
        event["action_source"] = "business_messaging"
        event["messaging_channel"] = "whatsapp"
        user["ctwa_clid"] = buyer.ctwa_clid
        user["whatsapp_business_account_id"] = whatsapp.waba_id
        for browser_only in ("client_ip_address", "client_user_agent"):
            user.pop(browser_only, None)
    elif buyer.user_agent and buyer.source_url:
        event["event_source_url"] = buyer.source_url
    if custom_data:
        event["custom_data"] = custom_data
    return event


def record(
    bot: BotConfig,
    event: dict[str, Any],
    event_time: dt.datetime,
    *,
    lead_id: int | None = None,
    charge_id: int | None = None,
    destination: str = "meta",
    event_id: str | None = None,
    event_name: str | None = None,
) -> None:
    """Insert the event for `destination` (a repeat of its event_id there inserts nothing) and
    schedule that target's flush for after the commit. Meta's events carry their id and name;
    other destinations' payloads are named by `event_id` and `event_name`."""
    target = targets(bot)[destination][0]
    now = utcnow()
    hot.insert(PixelEvent, dict(
        destination=destination, event_id=event_id or event["event_id"], event_name=event_name or event["event_name"],
        bot_id=bot.id, pixel_id=target, lead_id=lead_id, charge_id=charge_id, event_time=event_time, payload=event,
        state="pending", attempts=0, next_attempt_at=now, created_at=now,
    ), ignore_conflicts=True)  # fmt: skip
    after_commit(lambda: schedule(target, destination=destination))


def record_tiktok(bot: BotConfig, name: str, event_id: str, at: dt.datetime, buyer: Buyer, *,
                  properties: dict[str, Any] | None = None, lead_id: int | None = None,
                  charge_id: int | None = None) -> None:  # fmt: skip
    if not tracks(bot, "tiktok"):
        return
    event = tiktok.event(name, event_id, at, user_id=buyer.person_id, ttclid=buyer.ttclid, ttp=buyer.ttp,
                         ip=buyer.ip, user_agent=buyer.user_agent, page_url=buyer.source_url,
                         properties=properties)  # fmt: skip
    record(bot, event, at, lead_id=lead_id, charge_id=charge_id, destination="tiktok", event_id=event_id,
           event_name=name)  # fmt: skip


UTMIFY_MAX_AGE = dt.timedelta(days=7)


def record_order(track: Tracking, charge: Charge, status: str, now: dt.datetime, *, paid_at: dt.datetime | None = None,
                 refunded_at: dt.datetime | None = None) -> None:  # fmt: skip
    """One state of the charge's Utmify order (`waiting_payment`, `paid`, `refunded`), once each;
    none for a charge older than Utmify takes."""
    bot = track.bot
    if not tracks(bot, "utmify") or charge.created_at < now - UTMIFY_MAX_AGE:
        return
    offer = bot.offer(charge.offer_id)
    bump = bot.offer(charge.bump_offer_id) if charge.bump_offer_id else None
    main = charge.amount - (bump.price if bump is not None else Decimal(0))
    products = [(offer.slug if offer else str(charge.offer_id), offer.label if offer else "", main)]
    if bump is not None:
        products.append((bump.slug, bump.label, bump.price))
    order = utmify.order(order_id=str(charge.id), status=status, created_at=charge.created_at, approved_at=paid_at,
                         refunded_at=refunded_at, customer_name=track.buyer.name,
                         customer_id=f"{bot.id}-{charge.lead_id}", products=products, tracking=track.buyer.utm,
                         total=charge.amount)  # fmt: skip
    # event_time is the order's creation: Utmify's 7 days count from there
    record(bot, order, charge.created_at, lead_id=charge.lead_id, charge_id=charge.id, destination="utmify",
           event_id=f"order.{charge.id}.{status}", event_name=status)  # fmt: skip


def store_click(click: clicks.Click) -> tuple[Click, bool]:
    """The click's row (inserted once per token), and whether this call inserted it."""
    row = hot.first(Click, BY_TOKEN, (click.token,))
    if row is not None:
        return row, False
    inserted = hot.insert(Click, dict(
        token=click.token, bot_id=click.bot_id, fbclid=click.fbclid, fbc=click.fbc, fbp=click.fbp, utm=click.utm,
        ttclid=click.ttclid, ttp=click.ttp, ip=click.ip, user_agent=click.user_agent, source_url=click.source_url,
        pool_id=click.pool, clicked_at=from_ms(click.at_ms),
    ), ignore_conflicts=True)  # fmt: skip
    row = hot.first(Click, BY_TOKEN, (click.token,))  # ours, or a concurrent insert's
    assert row is not None
    if inserted is not None:  # counted once, with its row (the caller's transaction)
        count_click(row)
    return row, inserted is not None


def count_click(row: Click) -> None:
    """One more click on its seller's day, bot, utm_source, utm_campaign and pool (click_day)."""
    utm = row.utm if isinstance(row.utm, dict) else {}
    values = {"bot_id": row.bot_id, "day": local_day(row.clicked_at), "pool_id": row.pool_id or "", "clicks": 1,
              **{name: str(utm.get(name) or "")[:191] for name in ("utm_source", "utm_campaign")}}  # fmt: skip
    ClickDay.insert(values).on_conflict(
        conflict_target=[ClickDay.bot_id, ClickDay.day, ClickDay.utm_source, ClickDay.utm_campaign, ClickDay.pool_id],
        update={ClickDay.clicks: ClickDay.clicks + 1}).execute()  # fmt: skip


def page_view(bot: BotConfig, row: Click) -> None:
    if tracks(bot):
        event = build_event("PageView", f"pv.{row.token}", row.clicked_at, Buyer.of(row, None))
        record(bot, event, row.clicked_at)


def attach_click(bot: BotConfig, lead_id: int, click: clicks.Click) -> Click:
    """The /start that came with a click: the click is the lead's last touch (and the first, if
    they had none). Its row and PageView are made here too when the click's own message has not
    been processed yet (or was lost): both are keyed, so whichever comes second adds nothing."""
    row, created = store_click(click)
    if row.lead_id is None:
        hot.update(Click, {"lead_id": lead_id, "attached_at": utcnow()}, '"id" = {p} AND "lead_id" IS NULL', (row.id,))
    hot.touch_lead_click(lead_id, row.id)
    if created:  # else the click's own message made its PageView
        page_view(bot, row)
    return row


def view_content(bot: BotConfig, lead_id: int, update_id: int, person_id: int, click: Click | None = None) -> None:
    """A /start (with the click it came with, if any; else the lead's last one)."""
    if not tracks(bot) and not tracks(bot, "tiktok"):
        return
    buyer = Buyer.of(click, person_id) if click is not None else buyer_of(lead_id)
    now = utcnow()
    event_id = f"vc.{bot.id}.{update_id}"
    if tracks(bot):
        custom = {"content_name": bot.username or bot.id, "content_type": "product"}
        record(bot, build_event("ViewContent", event_id, now, buyer, custom, bot.whatsapp), now, lead_id=lead_id)
    record_tiktok(bot, "ViewContent", event_id, now, buyer, properties={"content_type": "product"}, lead_id=lead_id)


def _checkout_data(charge: Charge, bot: BotConfig) -> dict[str, Any]:
    offer = bot.offer(charge.offer_id)
    data: dict[str, Any] = {"currency": "BRL", "value": float(charge.amount), "content_type": "product"}
    if offer is not None:
        data["content_ids"] = [offer.slug]
        data["content_name"] = offer.label
    return data


def _tiktok_properties(charge: Charge, bot: BotConfig, value: Any) -> dict[str, Any]:
    offer = bot.offer(charge.offer_id)
    properties: dict[str, Any] = {"currency": "BRL", "value": float(value), "content_type": "product"}
    if offer is not None:
        properties["contents"] = [{"content_id": offer.slug, "content_name": offer.label, "quantity": 1,
                                   "price": float(charge.amount)}]  # fmt: skip
    return properties


def initiate_checkout(track: Tracking | None, charge: Charge, now: dt.datetime) -> None:
    """A charge became pending: the buyer has a code to pay."""
    if track is None:
        return
    if tracks(track.bot):
        custom = _checkout_data(charge, track.bot)
        event = build_event("InitiateCheckout", f"ic.{charge.id}", now, track.buyer, custom, track.bot.whatsapp)
        record(track.bot, event, now, lead_id=charge.lead_id, charge_id=charge.id)
    record_tiktok(track.bot, "InitiateCheckout", f"ic.{charge.id}", now, track.buyer, lead_id=charge.lead_id,
                  charge_id=charge.id, properties=_tiktok_properties(charge, track.bot, charge.amount))  # fmt: skip
    record_order(track, charge, "waiting_payment", now)


def purchase(track: Tracking | None, charge: Charge, amount: Any, now: dt.datetime) -> None:
    """The charge was paid (by the one winner of pending → paid): value is what was paid."""
    if track is None:
        return
    if tracks(track.bot):
        custom = {**_checkout_data(charge, track.bot), "value": float(amount)}
        event = build_event("Purchase", f"pur.{charge.id}", now, track.buyer, custom, track.bot.whatsapp)
        record(track.bot, event, now, lead_id=charge.lead_id, charge_id=charge.id)
    record_tiktok(track.bot, "CompletePayment", f"pur.{charge.id}", now, track.buyer, lead_id=charge.lead_id,
                  charge_id=charge.id, properties=_tiktok_properties(charge, track.bot, amount))  # fmt: skip
    record_order(track, charge, "paid", now, paid_at=now)


def refund(track: Tracking | None, charge: Charge, now: dt.datetime) -> None:
    """The charge was refunded (by the one winner of → refunded): its Utmify order says so."""
    if track is not None:
        record_order(track, charge, "refunded", now, paid_at=charge.paid_at, refunded_at=now)


# --- sending ---------------------------------------------------------------------------------


def _flush_key(pixel_id: str, destination: str) -> str:
    if destination == "meta":
        return FLUSH_KEY.format(pixel_id=pixel_id)
    return FLUSH_KEY_OF.format(destination=destination, pixel_id=pixel_id)


def _flush_args(pixel_id: str, destination: str) -> tuple[str, ...]:
    return (pixel_id,) if destination == "meta" else (pixel_id, destination)


def schedule(pixel_id: str, delay_ms: int | None = None, destination: str = "meta") -> bool:
    """Make sure a flush of this target runs within `delay_ms` (META_LINGER_MS by default); False
    when one is already scheduled (it will take this target's new events too)."""
    delay = settings.META_LINGER_MS if delay_ms is None else delay_ms
    if not runtime.cache().set(_flush_key(pixel_id, destination), 1, nx=True, px=delay + 60_000):
        return False
    flush.send_with_options(args=_flush_args(pixel_id, destination), delay=delay or None)
    return True


def expire_old(now: dt.datetime, pixel_id: str | None = None, destination: str | None = None) -> int:
    where = (PixelEvent.state == "pending") & (PixelEvent.event_time < now - MAX_AGE)
    if pixel_id is not None:
        where &= PixelEvent.pixel_id == pixel_id
    if destination is not None:
        where &= PixelEvent.destination == destination
    expired = (
        PixelEvent.update(state="expired", error="older than the destination accepts (7 days)").where(where).execute()
    )
    if expired:
        counters.inc("grimbots_pixel_events_total", {"outcome": "expired", "destination": destination or "*"}, expired)
        log.warning("pixel events expired unsent pixel=%s count=%d", pixel_id or "*", expired)
    return int(expired)


def claim(pixel_id: str, now: dt.datetime, limit: int = 1000, destination: str = "meta",
          ordered: bool = False) -> list[PixelEvent]:  # fmt: skip
    """Take up to `limit` due events of the target for this worker (pending → sending). `ordered`:
    an event waits while an earlier one about the same charge is still to be sent."""
    with transaction():
        due = (
            PixelEvent.select(PixelEvent.id)
            .where(
                (PixelEvent.destination == destination)
                & (PixelEvent.pixel_id == pixel_id)
                & (PixelEvent.state == "pending")
                & (PixelEvent.next_attempt_at <= now)
                & (PixelEvent.event_time >= now - MAX_AGE)  # older ones: expired by the sweep, never sent
            )
            .order_by(PixelEvent.id)
            .limit(limit)
        )
        if ordered:
            earlier = PixelEvent.alias()
            waiting = earlier.select(earlier.id).where(
                (earlier.destination == destination) & (earlier.charge_id == PixelEvent.charge_id)
                & (earlier.id < PixelEvent.id) & earlier.state.in_(["pending", "sending"]))  # fmt: skip
            due = due.where(~fn.EXISTS(waiting))
        if not is_sqlite():  # SQLite's write lock (BEGIN IMMEDIATE) already serialises claims
            due = due.for_update("FOR UPDATE SKIP LOCKED")  # type: ignore[arg-type]  # peewee takes the clause
        ids = [row.id for row in due]
        if not ids:
            return []
        PixelEvent.update(state="sending", claimed_at=now, attempts=PixelEvent.attempts + 1).where(
            PixelEvent.id.in_(ids)
        ).execute()
    return list(PixelEvent.select().where(PixelEvent.id.in_(ids)).order_by(PixelEvent.id))


def _finish(events: Iterable[PixelEvent], **values: Any) -> None:
    ids = [e.id for e in events]
    PixelEvent.update(**values).where(PixelEvent.id.in_(ids) & (PixelEvent.state == "sending")).execute()


def backoff(attempts: int) -> dt.timedelta:
    return min(BACKOFF_FIRST * 2 ** max(attempts - 1, 0), BACKOFF_MAX)


def _send_group(gateway: Destination, target: str, credentials: dict[str, str | None], group: list[PixelEvent],
                now: dt.datetime) -> Counter[str]:  # fmt: skip
    """One request for the group: its events end sent, failed, or pending again with backoff;
    returns how many ended each way. A batch refused for its content (one invalid event rejects
    them all) is split in halves and each sent again, so the bad event fails alone."""
    name = gateway.name
    try:
        sent = gateway.send(target, credentials, [e.payload for e in group])
    except DestinationPermanent as exc:
        if exc.content and len(group) > 1:
            log.info("pixel batch refused, split destination=%s target=%s count=%d", name, target, len(group))
            half = len(group) // 2
            return _send_group(gateway, target, credentials, group[:half], now) + _send_group(
                gateway, target, credentials, group[half:], now)  # fmt: skip
        _finish(group, state="failed", error=str(exc)[:1000])
        log.warning("pixel events refused destination=%s target=%s count=%d error=%s", name, target, len(group),
                    exc.summary)  # fmt: skip
        return Counter(failed=len(group))
    except DestinationTransient as exc:
        delay = backoff(max(e.attempts for e in group))
        _finish(group, state="pending", error=str(exc)[:1000], next_attempt_at=now + delay)
        flush.send_with_options(args=_flush_args(target, name), delay=int(delay.total_seconds() * 1000))
        log.warning("pixel events to retry destination=%s target=%s count=%d in=%ss error=%s", name, target,
                    len(group), int(delay.total_seconds()), exc.summary)  # fmt: skip
        return Counter(retried=len(group))
    _finish(group, state="sent", sent_at=utcnow(), error=None, fbtrace_id=(sent.trace_id or "")[:64] or None)
    log.info("pixel events sent destination=%s target=%s count=%d received=%d", name, target, len(group),
             sent.events_received)  # fmt: skip
    return Counter(sent=len(group))


def send_claimed(events: list[PixelEvent], gateway: Destination, now: dt.datetime) -> dict[str, int]:
    """Send claimed events of one destination, one request per target credentials (an ordered
    destination: one at a time, in order; after a transient failure the rest of the batch waits for
    the same backoff, without a request each); returns how many ended in each outcome."""
    outcomes: Counter[str] = Counter()
    groups: dict[tuple[str, tuple[tuple[str, str | None], ...]], list[PixelEvent]] = {}
    for event in events:
        bot = runtime.bot_config(event.bot_id)
        target = targets(bot).get(gateway.name) if bot is not None else None
        if target is None or target[0] != event.pixel_id:
            _finish([event], state="failed", error="the bot no longer sends to this pixel")
            outcomes["failed"] += 1
            continue
        groups.setdefault((target[0], tuple(sorted(target[1].items()))), []).append(event)
    for (target_id, creds), group in groups.items():
        credentials = dict(creds)
        if not gateway.ordered:
            outcomes += _send_group(gateway, target_id, credentials, group, now)
            continue
        down = False  # a transient failure: the rest waits for the same backoff (one flush, no more requests)
        for event in group:
            if down:
                _finish([event], state="pending", next_attempt_at=now + backoff(event.attempts))
                outcomes["retried"] += 1
            else:
                ended = _send_group(gateway, target_id, credentials, [event], now)
                down = bool(ended["retried"])
                outcomes += ended
    for outcome, count in outcomes.items():
        counters.inc("grimbots_pixel_events_total", {"outcome": outcome, "destination": gateway.name}, count)
    return dict(outcomes)


def send_pending(pixel_id: str, gateway: Destination) -> dict[str, int]:
    """Send every due event of the target, `max_batch` per request; returns the outcomes' counts."""
    totals: dict[str, int] = {}
    limit = max(gateway.max_batch, 1) if not gateway.ordered else 100
    for _ in range(MAX_BATCHES_PER_FLUSH):
        now = utcnow()
        events = claim(pixel_id, now, limit, gateway.name, gateway.ordered)
        if not events:
            break
        for outcome, count in send_claimed(events, gateway, now).items():
            totals[outcome] = totals.get(outcome, 0) + count
        if len(events) < limit and not gateway.ordered:  # ordered: what was sent may have let the next state go
            break
    else:  # a big backlog: the rest in a new message, not one endless one
        schedule(pixel_id, 0, gateway.name)
    return totals


@dramatiq.actor(
    actor_name="pixel.flush",
    queue_name=PIXEL,
    max_retries=10,
    min_backoff=5_000,
    max_backoff=300_000,
    retry_when=retry_when(10),
    time_limit=120_000,
)
def flush(pixel_id: str, destination: str = "meta") -> None:
    # First give the key back: events committed from now on schedule a new flush.
    runtime.cache().delete(_flush_key(pixel_id, destination))
    send_pending(pixel_id, runtime.destination(destination))


@dramatiq.actor(
    actor_name="pixel.click",
    queue_name=PIXEL,
    max_retries=20,
    min_backoff=1_000,
    max_backoff=300_000,
    retry_when=retry_when(20),
    time_limit=30_000,
)
def record_click(bot_id: str, doc: dict[str, Any]) -> None:
    """A click the edge took (GET /r/{bot_id}): its row, and its PageView when the bot has a pixel."""
    bot = runtime.bot_config(bot_id)
    if bot is None:
        log.warning("click dropped: unknown bot bot=%s", bot_id)
        return
    click = clicks.Click.from_doc(doc)
    with unit_of_work():
        row, _ = store_click(click)
        page_view(bot, row)


def sweep(now: dt.datetime | None = None) -> dict[str, int]:
    """What a crash left: claims of dead workers back to pending, events too old expired, and a
    flush for every pixel with due events (a no-op where one is already scheduled)."""
    now = now or utcnow()
    reclaimed = (
        PixelEvent.update(state="pending", next_attempt_at=now)
        .where((PixelEvent.state == "sending") & (PixelEvent.claimed_at < now - STALE_CLAIM))
        .execute()
    )
    if reclaimed:
        log.warning("pixel claims of dead workers taken back count=%d", reclaimed)
    expired = expire_old(now)
    due = (PixelEvent.select(PixelEvent.destination, PixelEvent.pixel_id)
           .where((PixelEvent.state == "pending") & (PixelEvent.next_attempt_at <= now)).distinct())  # fmt: skip
    scheduled = sum(schedule(row.pixel_id, 0, row.destination) for row in due)
    return {"reclaimed": int(reclaimed), "expired": expired, "scheduled": scheduled}


@dramatiq.actor(
    actor_name="pixel.sweep",
    queue_name=PIXEL,
    max_retries=0,
    time_limit=60_000,
    max_age=5 * 60 * 1000,  # the next run will do it
)
def sweep_actor() -> None:
    sweep()
