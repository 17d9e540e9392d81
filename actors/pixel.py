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
import functools
import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import dramatiq
from peewee import fn

import clicks
import settings
from actors import runtime
from actors.broker import PIXEL, counters, retry_when
from actors.enqueue import after_commit, unit_of_work
from catalog.schema import BotConfig
from db import sql
from db.database import is_sqlite, transaction, utcnow
from db.days import local_day
from db.models import Charge, Click, ClickDay, PixelEvent
from gateways.ad_kinds import KINDS as AD_KINDS
from gateways.ads import AdEvent, Buyer, Destination, DestinationPermanent, DestinationTransient, Line, Order

log = logging.getLogger(__name__)

FLUSH_KEY = "grimbots:pixel:flush:{pixel_id}"  # Meta's (as before other destinations); the others':
FLUSH_KEY_OF = "grimbots:pixel:flush:{destination}:{pixel_id}"
BY_TOKEN = '"token" = {p}'
# Meta refuses events older than 7 days; keep a margin so an event is never refused in flight.
MAX_AGE = dt.timedelta(days=7) - dt.timedelta(minutes=10)
STALE_CLAIM = dt.timedelta(minutes=5)  # well past the flush's time limit
MAX_BATCHES_PER_FLUSH = 20
BACKOFF_FIRST = dt.timedelta(seconds=5)
BACKOFF_MAX = dt.timedelta(minutes=15)


def targets(bot: BotConfig) -> dict[str, tuple[str, dict[str, str | None]]]:
    """The destinations a bot sends to (those it has every required key of): destination →
    (target, credentials)."""
    out: dict[str, tuple[str, dict[str, str | None]]] = {}
    for name, kind in AD_KINDS.items():
        if all(getattr(bot, key) for key in kind.required):
            credentials = {credential: getattr(bot, key) or None for credential, key in kind.credentials.items()}
            out[name] = (str(getattr(bot, kind.target)), credentials)
    return out


# --- events: built and recorded inside their cause's transaction -------------------------------


def from_ms(at_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).replace(tzinfo=None)


def buyer_of_click(click: Click | None, person_id: int | None) -> Buyer:
    if click is None:
        return Buyer(person_id)
    return Buyer(person_id, click.fbc, click.fbp, click.ip, click.user_agent, click.source_url, click.ttclid,
                 click.ttp, dict(click.utm or {}))  # fmt: skip


def buyer_of(lead_id: int) -> Buyer:
    row = sql.lead_click(lead_id)
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


def record(bot: BotConfig, event: AdEvent, *, lead_id: int | None = None, charge_id: int | None = None) -> None:
    """The event for each destination of the bot that takes it (a repeat of its id there inserts
    nothing), each target's flush scheduled for after the commit."""
    now = utcnow()
    for destination, (target, _) in targets(bot).items():
        built = AD_KINDS[destination].build(event)
        if built is None:
            continue
        sql.insert(PixelEvent, dict(
            destination=destination, event_id=built.event_id, event_name=built.name, bot_id=bot.id, pixel_id=target,
            lead_id=lead_id, charge_id=charge_id, event_time=built.at, payload=built.doc, state="pending",
            attempts=0, next_attempt_at=now, created_at=now,
        ), ignore_conflicts=True)  # fmt: skip
        after_commit(functools.partial(schedule, target, destination=destination))


def on_channel(bot: BotConfig) -> dict[str, Any]:
    """What an event says of the bot's channel (a WhatsApp number's business account)."""
    wa = bot.whatsapp
    return {"whatsapp": wa is not None, "business_account": wa.waba_id if wa is not None else None}


def order_of(bot: BotConfig, charge: Charge, *, paid_at: dt.datetime | None = None,
             refunded_at: dt.datetime | None = None) -> Order:  # fmt: skip
    offer = bot.offer(charge.offer_id)
    bump = bot.offer(charge.bump_offer_id) if charge.bump_offer_id else None
    return Order(charge.id, charge.created_at, charge.amount, charge.offer_id,
                 Line(offer.slug, offer.label, offer.price) if offer is not None else None,
                 Line(bump.slug, bump.label, bump.price) if bump is not None else None,
                 f"{bot.id}-{charge.lead_id}", paid_at, refunded_at)  # fmt: skip


def store_click(click: clicks.Click) -> tuple[Click, bool]:
    """The click's row (inserted once per token), and whether this call inserted it."""
    row = sql.first(Click, BY_TOKEN, (click.token,))
    if row is not None:
        return row, False
    inserted = sql.insert(Click, dict(
        token=click.token, bot_id=click.bot_id, fbclid=click.fbclid, fbc=click.fbc, fbp=click.fbp, utm=click.utm,
        ttclid=click.ttclid, ttp=click.ttp, ip=click.ip, user_agent=click.user_agent, source_url=click.source_url,
        pool_id=click.pool, clicked_at=from_ms(click.at_ms),
    ), ignore_conflicts=True)  # fmt: skip
    row = sql.first(Click, BY_TOKEN, (click.token,))  # ours, or a concurrent insert's
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
    if targets(bot):
        record(bot, AdEvent("PageView", f"pv.{row.token}", row.clicked_at, buyer_of_click(row, None)))


def attach_click(bot: BotConfig, lead_id: int, click: clicks.Click) -> Click:
    """The /start that came with a click: the click is the lead's last touch (and the first, if
    they had none). Its row and PageView are made here too when the click's own message has not
    been processed yet (or was lost): both are keyed, so whichever comes second adds nothing."""
    row, created = store_click(click)
    if row.lead_id is None:
        sql.update(Click, {"lead_id": lead_id, "attached_at": utcnow()}, '"id" = {p} AND "lead_id" IS NULL', (row.id,))
    sql.touch_lead_click(lead_id, row.id)
    if created:  # else the click's own message made its PageView
        page_view(bot, row)
    return row


def view_content(bot: BotConfig, lead_id: int, update_id: int, person_id: int, click: Click | None = None) -> None:
    """A /start (with the click it came with, if any; else the lead's last one)."""
    if not targets(bot):
        return
    buyer = buyer_of_click(click, person_id) if click is not None else buyer_of(lead_id)
    event = AdEvent("ViewContent", f"vc.{bot.id}.{update_id}", utcnow(), buyer, content_name=bot.username or bot.id,
                    **on_channel(bot))  # fmt: skip
    record(bot, event, lead_id=lead_id)


def initiate_checkout(track: Tracking | None, charge: Charge, now: dt.datetime) -> None:
    """A charge became pending: the buyer has a code to pay."""
    if track is not None:
        event = AdEvent("InitiateCheckout", f"ic.{charge.id}", now, track.buyer, charge.amount,
                        order=order_of(track.bot, charge), **on_channel(track.bot))  # fmt: skip
        record(track.bot, event, lead_id=charge.lead_id, charge_id=charge.id)


def purchase(track: Tracking | None, charge: Charge, amount: Decimal, now: dt.datetime) -> None:
    """The charge was paid (by the one winner of pending → paid): value is what was paid."""
    if track is not None:
        event = AdEvent("Purchase", f"pur.{charge.id}", now, track.buyer, amount,
                        order=order_of(track.bot, charge, paid_at=now), **on_channel(track.bot))  # fmt: skip
        record(track.bot, event, lead_id=charge.lead_id, charge_id=charge.id)


def refund(track: Tracking | None, charge: Charge, now: dt.datetime) -> None:
    """The charge was refunded (by the one winner of → refunded)."""
    if track is not None:
        order = order_of(track.bot, charge, paid_at=charge.paid_at, refunded_at=now)
        event = AdEvent("Refund", f"ref.{charge.id}", now, track.buyer, charge.amount, order=order,
                        **on_channel(track.bot))  # fmt: skip
        record(track.bot, event, lead_id=charge.lead_id, charge_id=charge.id)


def send_purchase_again(bot: BotConfig, charge: Charge, now: dt.datetime | None = None) -> int:
    """A paid sale's Purchase, queued again for every destination the bot has now, under the same
    `event_id` (`pur.{charge}`: an ad platform that got it the first time drops the repeat). Events
    the bot did not have then are recorded with the sale's time; events older than a destination
    takes (7 days) are not. Each target's flush is scheduled after the commit. How many events are
    queued."""
    now = now or utcnow()
    if charge.status != "paid" or charge.paid_at is None or charge.paid_at < now - MAX_AGE:
        return 0
    with unit_of_work():
        purchase(tracking(bot, charge.lead_id), charge, charge.paid_amount or charge.amount, charge.paid_at)
        again = (PixelEvent.update(state="pending", attempts=0, error=None, next_attempt_at=now, claimed_at=None)
                 .where((PixelEvent.charge_id == charge.id) & (PixelEvent.event_name == "Purchase")
                        & (PixelEvent.state != "sending")).execute())  # fmt: skip
    return int(again)


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
