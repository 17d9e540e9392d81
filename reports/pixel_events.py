"""What `python -m ops pixel-events` and `ops status` show about the ad destinations' events (Meta's
Conversions API, TikTok's Events API, Utmify's orders).

Events are listed with which match keys they carry (fbc, fbp, ttclid, IP, user agent, external_id),
never the values: those are the buyers' personal data."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from peewee import fn

from db.database import utcnow
from db.models import PixelEvent

STATES = ("pending", "sending", "sent", "failed", "expired")
NAMES = ("PageView", "ViewContent", "InitiateCheckout", "Purchase", "CompletePayment", "waiting_payment", "paid",
         "refunded")  # fmt: skip
VALUED = ("Purchase", "CompletePayment", "paid")
MATCH_KEYS = {
    "fbc": "fbc",
    "fbp": "fbp",
    "client_ip_address": "ip",
    "client_user_agent": "ua",
    "external_id": "xid",
    "em": "em",
    "ph": "ph",
    "ttclid": "ttclid",
    "ttp": "ttp",
    "ip": "ip",
    "user_agent": "ua",
}


@dataclass(frozen=True)
class EventLine:
    id: int
    destination: str
    bot: str
    pixel: str
    event: str
    event_id: str
    state: str
    attempts: int
    value: float | None
    matched_by: list[str]  # which user_data keys the event carries
    event_time: str
    sent_at: str | None
    error: str | None


@dataclass(frozen=True)
class Totals:
    bot: str
    event: str
    counts: dict[str, int]  # state → events


def _filters(bot: str | None, state: str | None, event: str | None, since: dt.datetime | None,
             destination: str | None = None) -> Any:  # fmt: skip
    where = PixelEvent.id > 0
    if destination:
        where &= PixelEvent.destination == destination
    if bot:
        where &= PixelEvent.bot_id == bot
    if state:
        where &= PixelEvent.state == state
    if event:
        where &= PixelEvent.event_name == event
    if since:
        where &= PixelEvent.created_at >= since
    return where


def _value(payload: dict[str, Any]) -> float | None:
    """What a purchase-like event says was paid: Meta's custom_data, TikTok's properties, Utmify's total."""
    for holder in (payload.get("custom_data"), payload.get("properties")):
        if isinstance(holder, dict) and holder.get("value") is not None:
            return float(holder["value"])
    commission = payload.get("commission")
    if isinstance(commission, dict) and commission.get("totalPriceInCents") is not None:
        return int(commission["totalPriceInCents"]) / 100
    return None


def recent(bot: str | None = None, state: str | None = None, event: str | None = None,
           since: dt.datetime | None = None, limit: int = 50,
           destination: str | None = None) -> list[EventLine]:  # fmt: skip
    where = _filters(bot, state, event, since, destination)
    query = PixelEvent.select().where(where).order_by(PixelEvent.id.desc()).limit(limit)
    lines = []
    for e in query:
        payload = e.payload or {}
        user = payload.get("user_data") or payload.get("user") or {}
        value = _value(payload)
        lines.append(
            EventLine(
                id=e.id,
                destination=e.destination,
                bot=e.bot_id,
                pixel=e.pixel_id,
                event=e.event_name,
                event_id=e.event_id,
                state=e.state,
                attempts=e.attempts,
                value=value if e.event_name in VALUED else None,
                matched_by=[short for key, short in MATCH_KEYS.items() if user.get(key)],
                event_time=_time(e.event_time) or "",
                sent_at=_time(e.sent_at),
                error=e.error,
            )
        )
    return lines


def totals(bot: str | None = None, state: str | None = None, event: str | None = None,
           since: dt.datetime | None = None, destination: str | None = None) -> list[Totals]:  # fmt: skip
    query = (
        PixelEvent.select(PixelEvent.bot_id, PixelEvent.event_name, PixelEvent.state, fn.COUNT(PixelEvent.id))
        .where(_filters(bot, state, event, since, destination))
        .group_by(PixelEvent.bot_id, PixelEvent.event_name, PixelEvent.state)
        .tuples()
    )
    rows: list[tuple[str, str, str, int]] = list(query)  # type: ignore[arg-type]  # .tuples() yields tuples
    grouped: dict[tuple[str, str], dict[str, int]] = {}
    for bot_id, name, event_state, count in rows:
        grouped.setdefault((bot_id, name), {})[event_state] = int(count)
    order = {name: i for i, name in enumerate(NAMES)}
    keys = sorted(grouped, key=lambda k: (k[0], order.get(k[1], len(order)), k[1]))
    return [Totals(bot_id, name, grouped[(bot_id, name)]) for bot_id, name in keys]


def last_day() -> dict[str, int]:
    """For `ops status`: events of the last 24 h by state."""
    since = utcnow() - dt.timedelta(hours=24)
    query = (
        PixelEvent.select(PixelEvent.state, fn.COUNT(PixelEvent.id))
        .where(PixelEvent.created_at >= since)
        .group_by(PixelEvent.state)
        .tuples()
    )
    rows: list[tuple[str, int]] = list(query)  # type: ignore[arg-type]  # .tuples() yields tuples
    counts = {state: 0 for state in STATES}
    counts.update({state: int(n) for state, n in rows})
    return counts


def as_dicts(items: list[EventLine] | list[Totals]) -> list[dict[str, Any]]:
    return [asdict(item) for item in items]


def _time(value: dt.datetime | None) -> str | None:
    return value.replace(microsecond=0).isoformat(sep=" ") if value is not None else None
