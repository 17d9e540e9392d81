"""What `python -m ops payments` and `ops status` show about the money path, read from the database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from peewee import JOIN, Case, fn

from db.database import utcnow
from db.models import Charge, Delivery, Offer

STATUSES = ("creating", "pending", "paid", "expired", "refunded", "failed")


@dataclass(frozen=True)
class ChargeLine:
    id: int
    bot: str
    offer: str
    offer_id: int
    status: str
    amount: str
    paid_amount: str | None
    underpaid: bool
    delivery: str | None
    created_at: str
    paid_at: str | None
    error: str | None


@dataclass(frozen=True)
class BotTotals:
    bot: str
    charges: int
    paid: int
    revenue: str  # BRL received and kept, underpaid charges included
    conversion: float  # paid / charges
    refunded: str = "0.00"  # BRL received, then refunded


def _filters(bot: str | None, status: str | None, since: dt.datetime | None,
             bots: Collection[str] | None = None) -> Any:  # fmt: skip
    """`bots`: only these bots' charges (an account's: the panel's scope), whatever else is asked."""
    where = Charge.id > 0
    if bots is not None:
        where &= Charge.bot_id.in_(list(bots) or [""])
    if bot:
        where &= Charge.bot_id == bot
    if status:
        where &= Charge.status == status
    if since:
        where &= Charge.created_at >= since
    return where


def recent(bot: str | None = None, status: str | None = None, since: dt.datetime | None = None,
           limit: int = 50, bots: Collection[str] | None = None) -> list[ChargeLine]:  # fmt: skip
    query = (
        Charge.select(Charge, Offer.slug, Delivery.state)
        .join(Offer, JOIN.LEFT_OUTER, on=(Offer.id == Charge.offer_id))
        .switch(Charge)
        .join(Delivery, JOIN.LEFT_OUTER, on=(Delivery.charge_id == Charge.id))
        .where(_filters(bot, status, since, bots))
        .order_by(Charge.id.desc())
        .limit(limit)
        .objects()
    )
    return [
        ChargeLine(
            id=c.id,
            bot=c.bot_id,
            offer=getattr(c, "slug", None) or str(c.offer_id),  # from the joined tables
            offer_id=c.offer_id,
            status=c.status,
            amount=str(c.amount),
            paid_amount=str(c.paid_amount) if c.paid_amount is not None else None,
            underpaid=c.underpaid,
            delivery=getattr(c, "state", None),
            created_at=_time(c.created_at) or "",
            paid_at=_time(c.paid_at),
            error=c.error,
        )
        for c in query
    ]


def totals(bot: str | None = None, since: dt.datetime | None = None) -> list[BotTotals]:
    paid = fn.SUM(Charge.status.in_(["paid", "refunded"]).cast("integer"))

    def received(status: str) -> Any:
        return fn.SUM(Case(None, [(Charge.status == status, fn.COALESCE(Charge.paid_amount, 0))], 0))

    query = (
        Charge.select(
            Charge.bot_id,
            fn.COUNT(Charge.id).alias("charges"),
            paid.alias("paid"),
            received("paid").alias("revenue"),
            received("refunded").alias("refunded"),
        )
        .where(_filters(bot, None, since) & (Charge.status != "creating"))
        .group_by(Charge.bot_id)
        .order_by(Charge.bot_id)
        .dicts()
    )
    rows: list[dict[str, Any]] = list(query)  # type: ignore[arg-type]  # .dicts() yields dicts
    result = []
    for row in rows:
        charges, paid_count = int(row["charges"]), int(row["paid"] or 0)
        money, back = (Decimal(str(row[k] or 0)).quantize(Decimal("0.01")) for k in ("revenue", "refunded"))
        result.append(BotTotals(row["bot_id"], charges, paid_count, str(money), paid_count / charges if charges else 0,
                                str(back)))  # fmt: skip
    return result


def last_day() -> dict[str, Any]:
    """For `ops status`: charges, payments and revenue of the last 24 h, deliveries not yet sent."""
    since = utcnow() - dt.timedelta(hours=24)
    day = totals(since=since)
    waiting = Delivery.select().where(Delivery.state == "pending").count()
    failed = Delivery.select().where((Delivery.state == "failed") & (Delivery.updated_at >= since)).count()
    revenue = sum((Decimal(t.revenue) for t in day), Decimal("0.00"))
    return {
        "charges": sum(t.charges for t in day),
        "paid": sum(t.paid for t in day),
        "revenue": str(revenue),
        "deliveries_pending": waiting,
        "deliveries_failed": failed,
    }


def as_dicts(items: list[ChargeLine] | list[BotTotals]) -> list[dict[str, Any]]:
    return [asdict(item) for item in items]


def _time(value: dt.datetime | None) -> str | None:
    return value.replace(microsecond=0).isoformat(sep=" ") if value is not None else None
