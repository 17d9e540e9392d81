"""Meta pixel events through the Conversions API, each sent once.

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
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import dramatiq

import clicks
import settings
from actors import runtime
from actors.broker import PIXEL, counters, retry_when
from actors.enqueue import after_commit, unit_of_work
from db import hot
from db.catalog import BotConfig
from db.database import is_sqlite, transaction, utcnow
from db.models import Charge, Click, PixelEvent
from gateways.meta import MAX_BATCH, MetaGateway, MetaPermanent, MetaTransient, user_data

log = logging.getLogger(__name__)

FLUSH_KEY = "grimbots:pixel:flush:{pixel_id}"
BY_TOKEN = '"token" = {p}'
# Meta refuses events older than 7 days; keep a margin so an event is never refused in flight.
MAX_AGE = dt.timedelta(days=7) - dt.timedelta(minutes=10)
STALE_CLAIM = dt.timedelta(minutes=5)  # well past the flush's time limit
MAX_BATCHES_PER_FLUSH = 20
BACKOFF_FIRST = dt.timedelta(seconds=5)
BACKOFF_MAX = dt.timedelta(minutes=15)


def tracks(bot: BotConfig | None) -> bool:
    return bot is not None and bool(bot.pixel_id) and bool(bot.pixel_access_token)


# --- events: built and recorded inside their cause's transaction -------------------------------


def from_ms(at_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Buyer:
    """What an event says about who did it: the Telegram user and their last ad click."""

    telegram_user_id: int | None = None
    fbc: str | None = None
    fbp: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    source_url: str | None = None

    def __repr__(self) -> str:  # personal data: never in a log line
        return "Buyer(...)"

    @classmethod
    def of(cls, click: Click | None, telegram_user_id: int | None) -> Buyer:
        if click is None:
            return cls(telegram_user_id)
        return cls(telegram_user_id, click.fbc, click.fbp, click.ip, click.user_agent, click.source_url)


def buyer_of(lead_id: int) -> Buyer:
    row = hot.lead_click(lead_id)
    return Buyer(*row) if row is not None else Buyer()


@dataclass(frozen=True)
class Tracking:
    """A bot that sends events, and the buyer they are about: read before a write transaction
    opens, so the transaction itself only inserts."""

    bot: BotConfig
    buyer: Buyer


def tracking(bot_id: str, lead_id: int) -> Tracking | None:
    bot = runtime.bot_config(bot_id)
    if bot is None or not tracks(bot):
        return None
    return Tracking(bot, buyer_of(lead_id))


def build_event(
    name: str,
    event_id: str,
    event_time: dt.datetime,
    buyer: Buyer,
    custom_data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One event as Meta takes it. With a click (a browser was there) it is a `website` event
    with the click's URL, IP and user agent, which Meta requires of website events; without one
    it happened in the chat."""
    user = user_data(
        telegram_user_id=buyer.telegram_user_id,
        fbc=buyer.fbc,
        fbp=buyer.fbp,
        ip=buyer.ip,
        user_agent=buyer.user_agent,
    )
    event: dict[str, Any] = {
        "event_name": name,
        "event_time": int(event_time.replace(tzinfo=dt.UTC).timestamp()),
        "event_id": event_id,
        "action_source": "website" if buyer.user_agent else "chat",
        "user_data": user,
    }
    if buyer.user_agent and buyer.source_url:
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
) -> None:
    """Insert the event (a repeat of its event_id inserts nothing) and schedule its pixel's flush
    for after the commit."""
    assert bot.pixel_id
    now = utcnow()
    hot.insert(PixelEvent, dict(
        event_id=event["event_id"], event_name=event["event_name"], bot_id=bot.id, pixel_id=bot.pixel_id,
        lead_id=lead_id, charge_id=charge_id, event_time=event_time, payload=event, state="pending",
        attempts=0, next_attempt_at=now, created_at=now,
    ), ignore_conflicts=True)  # fmt: skip
    pixel_id = bot.pixel_id
    after_commit(lambda: schedule(pixel_id))


def store_click(click: clicks.Click) -> tuple[Click, bool]:
    """The click's row (inserted once per token), and whether this call inserted it."""
    row = hot.first(Click, BY_TOKEN, (click.token,))
    if row is not None:
        return row, False
    hot.insert(Click, dict(
        token=click.token, bot_id=click.bot_id, fbclid=click.fbclid, fbc=click.fbc, fbp=click.fbp, utm=click.utm,
        ip=click.ip, user_agent=click.user_agent, source_url=click.source_url, pool_id=click.pool,
        clicked_at=from_ms(click.at_ms),
    ), ignore_conflicts=True)  # fmt: skip
    row = hot.first(Click, BY_TOKEN, (click.token,))  # ours, or a concurrent insert's
    assert row is not None
    return row, True


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


def view_content(
    bot: BotConfig, lead_id: int, update_id: int, telegram_user_id: int, click: Click | None = None
) -> None:
    """A /start (with the click it came with, if any; else the lead's last one)."""
    if not tracks(bot):
        return
    buyer = Buyer.of(click, telegram_user_id) if click is not None else buyer_of(lead_id)
    now = utcnow()
    custom = {"content_name": bot.username, "content_type": "product"}
    event = build_event("ViewContent", f"vc.{bot.id}.{update_id}", now, buyer, custom)
    record(bot, event, now, lead_id=lead_id)


def _checkout_data(charge: Charge, bot: BotConfig) -> dict[str, Any]:
    offer = bot.offer(charge.offer_id)
    data: dict[str, Any] = {"currency": "BRL", "value": float(charge.amount), "content_type": "product"}
    if offer is not None:
        data["content_ids"] = [offer.slug]
        data["content_name"] = offer.label
    return data


def initiate_checkout(track: Tracking | None, charge: Charge, now: dt.datetime) -> None:
    """A charge became pending: the buyer has a code to pay."""
    if track is None:
        return
    custom = _checkout_data(charge, track.bot)
    event = build_event("InitiateCheckout", f"ic.{charge.id}", now, track.buyer, custom)
    record(track.bot, event, now, lead_id=charge.lead_id, charge_id=charge.id)


def purchase(track: Tracking | None, charge: Charge, amount: Any, now: dt.datetime) -> None:
    """The charge was paid (by the one winner of pending → paid): value is what was paid."""
    if track is None:
        return
    custom = {**_checkout_data(charge, track.bot), "value": float(amount)}
    event = build_event("Purchase", f"pur.{charge.id}", now, track.buyer, custom)
    record(track.bot, event, now, lead_id=charge.lead_id, charge_id=charge.id)


# --- sending ---------------------------------------------------------------------------------


def schedule(pixel_id: str, delay_ms: int | None = None) -> bool:
    """Make sure a flush of this pixel runs within `delay_ms` (META_LINGER_MS by default); False
    when one is already scheduled (it will take this pixel's new events too)."""
    delay = settings.META_LINGER_MS if delay_ms is None else delay_ms
    if not runtime.cache().set(FLUSH_KEY.format(pixel_id=pixel_id), 1, nx=True, px=delay + 60_000):
        return False
    flush.send_with_options(args=(pixel_id,), delay=delay or None)
    return True


def expire_old(now: dt.datetime, pixel_id: str | None = None) -> int:
    where = (PixelEvent.state == "pending") & (PixelEvent.event_time < now - MAX_AGE)
    if pixel_id is not None:
        where &= PixelEvent.pixel_id == pixel_id
    expired = PixelEvent.update(state="expired", error="older than Meta accepts (7 days)").where(where).execute()
    if expired:
        counters.inc("grimbots_pixel_events_total", {"outcome": "expired"}, expired)
        log.warning("pixel events expired unsent pixel=%s count=%d", pixel_id or "*", expired)
    return int(expired)


def claim(pixel_id: str, now: dt.datetime, limit: int = MAX_BATCH) -> list[PixelEvent]:
    """Take up to `limit` due events of the pixel for this worker (pending → sending)."""
    with transaction():
        due = (
            PixelEvent.select(PixelEvent.id)
            .where(
                (PixelEvent.pixel_id == pixel_id)
                & (PixelEvent.state == "pending")
                & (PixelEvent.next_attempt_at <= now)
                & (PixelEvent.event_time >= now - MAX_AGE)  # older ones: expired by the sweep, never sent
            )
            .order_by(PixelEvent.id)
            .limit(limit)
        )
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


def send_claimed(events: list[PixelEvent], meta: MetaGateway, now: dt.datetime) -> dict[str, int]:
    """Send claimed events, one request per bot credentials (normally one per pixel); returns
    how many ended in each outcome."""
    outcomes: dict[str, int] = {}
    groups: dict[tuple[str, str | None], list[PixelEvent]] = {}
    for event in events:
        bot = runtime.bot_config(event.bot_id)
        if bot is None or bot.pixel_id != event.pixel_id or not bot.pixel_access_token:
            _finish([event], state="failed", error="the bot no longer sends to this pixel")
            outcomes["failed"] = outcomes.get("failed", 0) + 1
            continue
        groups.setdefault((bot.pixel_access_token, bot.pixel_test_event_code or None), []).append(event)
    for (token, test_code), group in groups.items():
        pixel_id = group[0].pixel_id
        try:
            sent = meta.send_events(pixel_id, token, [e.payload for e in group], test_code)
        except MetaPermanent as exc:
            _finish(group, state="failed", error=str(exc)[:1000])
            outcome = "failed"
            log.warning("pixel events refused pixel=%s count=%d error=%s", pixel_id, len(group), exc.summary)
        except MetaTransient as exc:
            delay = backoff(max(e.attempts for e in group))
            _finish(group, state="pending", error=str(exc)[:1000], next_attempt_at=now + delay)
            flush.send_with_options(args=(pixel_id,), delay=int(delay.total_seconds() * 1000))
            outcome = "retried"
            log.warning("pixel events to retry pixel=%s count=%d in=%ss error=%s", pixel_id, len(group),
                        int(delay.total_seconds()), exc.summary)  # fmt: skip
        else:
            _finish(group, state="sent", sent_at=utcnow(), error=None, fbtrace_id=(sent.fbtrace_id or "")[:64] or None)
            outcome = "sent"
            log.info("pixel events sent pixel=%s count=%d received=%d", pixel_id, len(group), sent.events_received)
        outcomes[outcome] = outcomes.get(outcome, 0) + len(group)
    for outcome, count in outcomes.items():
        counters.inc("grimbots_pixel_events_total", {"outcome": outcome}, count)
    return outcomes


def send_pending(pixel_id: str, meta: MetaGateway) -> dict[str, int]:
    """Send every due event of the pixel, 1000 per request; returns the outcomes' counts."""
    totals: dict[str, int] = {}
    for _ in range(MAX_BATCHES_PER_FLUSH):
        now = utcnow()
        events = claim(pixel_id, now)
        if not events:
            break
        for outcome, count in send_claimed(events, meta, now).items():
            totals[outcome] = totals.get(outcome, 0) + count
        if len(events) < MAX_BATCH:
            break
    else:  # a big backlog: the rest in a new message, not one endless one
        schedule(pixel_id, 0)
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
def flush(pixel_id: str) -> None:
    # First give the key back: events committed from now on schedule a new flush.
    runtime.cache().delete(FLUSH_KEY.format(pixel_id=pixel_id))
    send_pending(pixel_id, runtime.meta())


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
    pixels = [
        row.pixel_id
        for row in PixelEvent.select(PixelEvent.pixel_id)
        .where((PixelEvent.state == "pending") & (PixelEvent.next_attempt_at <= now))
        .distinct()
    ]
    scheduled = sum(schedule(pixel_id, 0) for pixel_id in pixels)
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
