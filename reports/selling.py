"""What `python -m ops followups`, `ops payments` and `ops status` show about selling more: the
follow-ups' schedule, bump take rate, and what upsells and downsells sold."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from peewee import fn

from db.database import utcnow
from db.models import BumpAnswer, Charge, Followup, Lead

STATES = ("scheduled", "sent", "cancelled", "failed", "unknown")


@dataclass(frozen=True)
class FollowupLine:
    id: int
    bot: str
    lead: int  # the buyer's Telegram user id
    kind: str
    position: int
    amount: str
    state: str
    due_at: str
    sent_at: str | None
    attempts: int
    error: str | None


@dataclass(frozen=True)
class SellingTotals:
    bot: str
    bumps_asked: int  # leads who answered an order bump question
    bumps_accepted: int
    bump_take_rate: float
    upsells_sent: int
    upsells_paid: int
    downsells_sent: int
    downsells_paid: int


def _filters(bot: str | None, state: str | None) -> Any:
    where = Followup.id > 0
    if bot:
        where &= Followup.bot_id == bot
    if state:
        where &= Followup.state == state
    return where


def recent(bot: str | None = None, state: str | None = None, limit: int = 50) -> list[FollowupLine]:
    query = (
        Followup.select(Followup, Lead.person_id)
        .join(Lead, on=(Lead.id == Followup.lead_id))
        .where(_filters(bot, state))
        .order_by(Followup.id.desc())
        .limit(limit)
        .objects()
    )
    return [
        FollowupLine(
            f.id,
            f.bot_id,
            f.person_id,  # type: ignore[attr-defined]  # from the joined lead
            f.kind,
            f.position,
            str(f.amount),
            f.state,
            _time(f.due_at) or "",
            _time(f.sent_at),
            f.attempts,
            f.error,
        )
        for f in query
    ]


def counts(bot: str | None = None) -> dict[str, dict[str, dict[str, int]]]:
    """{bot: {kind: {state: n}}}."""
    rows = (
        Followup.select(Followup.bot_id, Followup.kind, Followup.state, fn.COUNT(Followup.id))
        .where(_filters(bot, None))
        .group_by(Followup.bot_id, Followup.kind, Followup.state)
        .tuples()
    )
    result: dict[str, dict[str, dict[str, int]]] = {}
    rows_: list[tuple[str, str, str, int]] = list(rows)  # type: ignore[arg-type]  # .tuples() yields tuples
    for bot_id, kind, state, n in rows_:
        result.setdefault(bot_id, {}).setdefault(kind, {})[state] = int(n)
    return result


def totals(bot: str | None = None, since: dt.datetime | None = None) -> list[SellingTotals]:
    """Per bot: bump take rate (answers), follow-ups sent and the paid charges their buttons opened."""
    bots: dict[str, dict[str, int]] = {}
    answered = (
        BumpAnswer.select(Lead.bot, BumpAnswer.accepted, fn.COUNT(BumpAnswer.id))
        .join(Lead, on=(Lead.id == BumpAnswer.lead_id))
        .where((Lead.bot == bot) if bot else (BumpAnswer.id > 0))
        .where((BumpAnswer.answered_at >= since) if since else (BumpAnswer.id > 0))
        .group_by(Lead.bot, BumpAnswer.accepted)
        .tuples()
    )
    answer_rows: list[tuple[str, bool, int]] = list(answered)  # type: ignore[arg-type]
    for bot_id, accepted, n in answer_rows:
        row = bots.setdefault(bot_id, {})
        row["asked"] = row.get("asked", 0) + int(n)
        if accepted:
            row["accepted"] = int(n)
    sent = Followup.select(Followup.bot_id, Followup.kind, fn.COUNT(Followup.id)).where(
        _filters(bot, "sent") & ((Followup.sent_at >= since) if since else (Followup.id > 0))
    )
    sent_rows: list[tuple[str, str, int]] = list(sent.group_by(Followup.bot_id, Followup.kind).tuples())  # type: ignore[arg-type]
    for bot_id, kind, n in sent_rows:
        bots.setdefault(bot_id, {})[f"{kind}_sent"] = int(n)
    paid = (
        Charge.select(Charge.bot_id, Followup.kind, fn.COUNT(Charge.id))
        .join(Followup, on=(Followup.id == Charge.followup_id))
        .where(Charge.status.in_(["paid", "refunded"]) & ((Charge.bot_id == bot) if bot else (Charge.id > 0)))
        .where((Charge.created_at >= since) if since else (Charge.id > 0))
        .group_by(Charge.bot_id, Followup.kind)
        .tuples()
    )
    paid_rows: list[tuple[str, str, int]] = list(paid)  # type: ignore[arg-type]  # .tuples() yields tuples
    for bot_id, kind, n in paid_rows:
        bots.setdefault(bot_id, {})[f"{kind}_paid"] = int(n)
    result = []
    for bot_id in sorted(bots):
        row = bots[bot_id]
        asked, taken = row.get("asked", 0), row.get("accepted", 0)
        result.append(SellingTotals(bot_id, asked, taken, taken / asked if asked else 0.0,
                                    row.get("upsell_sent", 0), row.get("upsell_paid", 0),
                                    row.get("downsell_sent", 0), row.get("downsell_paid", 0)))  # fmt: skip
    return result


def as_dicts(items: list[FollowupLine] | list[SellingTotals]) -> list[dict[str, Any]]:
    return [asdict(item) for item in items]


def _time(value: dt.datetime | None) -> str | None:
    return value.replace(microsecond=0).isoformat(sep=" ") if value is not None else None


# --- subscriptions ---------------------------------------------------------------------------


def subscriptions(bot: str | None = None, state: str | None = None) -> Iterator[dict[str, Any]]:
    """One object per (lead, chat), as CONTRACT §9 shows them: the buyer's Telegram user id, the
    chat, the offer, the first start and the end in ISO-8601 UTC, the state (and the last error).
    Every row that matches, filtered by the database and read in pages (bounded memory, however
    many there are); none is dropped."""
    from db.models import Offer, Subscription

    now = utcnow()
    running = (Subscription.state == "active") & (Subscription.ends_at > now)
    query = (
        Subscription.select(Subscription, Lead.person_id, Offer.slug)
        .join(Lead, on=(Lead.id == Subscription.lead_id))
        .switch(Subscription)
        .join(Offer, on=(Offer.id == Subscription.offer_id))
        .order_by(Subscription.ends_at, Subscription.id)
    )
    if bot:
        query = query.where(Subscription.bot_id == bot)
    if state == "active":
        query = query.where(running)
    elif state == "expired":  # ended, or past its end and about to be removed
        query = query.where((Subscription.state == "expired") | ((Subscription.state == "active") & ~running))
    elif state == "refunded":
        query = query.where(Subscription.state == "refunded")
    after: tuple[dt.datetime, int] | None = None
    while True:  # pages of PAGE by (end, id): bounded memory on either database
        page = query
        if after is not None:
            end, last = after
            page = page.where((Subscription.ends_at > end) | ((Subscription.ends_at == end) & (Subscription.id > last)))
        rows = list(page.limit(PAGE).objects())
        yield from (_subscription_row(s, now) for s in rows)
        if len(rows) < PAGE:
            return
        after = (rows[-1].ends_at, rows[-1].id)


PAGE = 1000


def _subscription_row(s: Any, now: dt.datetime) -> dict[str, Any]:
    current = (
        "refunded" if s.state == "refunded" else "active" if s.state == "active" and s.ends_at > now else "expired"
    )
    user, slug = s.person_id, s.slug  # from the joined tables
    return {"bot": s.bot_id, "lead": user, "chat": s.chat_id, "offer": slug, "start": _iso(s.started_at),
            "end": _iso(s.ends_at), "state": current, "renewals": s.renewals, "error": s.error}  # fmt: skip


def subscription_totals(bot: str | None = None) -> list[dict[str, Any]]:
    """Per bot: active subscriptions, renewals and churn of the last 30 days, and monthly recurring
    revenue (each active subscription's price brought to 30 days)."""
    from db.models import Offer, Subscription

    now = utcnow()
    month_ago = now - dt.timedelta(days=30)
    result: dict[str, dict[str, Any]] = {}
    query = Subscription.select(Subscription, Offer.price, Offer.duration_seconds).join(
        Offer, on=(Offer.id == Subscription.offer_id)
    )
    if bot:
        query = query.where(Subscription.bot_id == bot)
    for s in query.objects():
        row = result.setdefault(s.bot_id, {"bot": s.bot_id, "active": 0, "renewals_30d": 0, "churned_30d": 0,
                                           "mrr": Decimal("0.00")})  # fmt: skip
        if s.state == "active" and s.ends_at > now:
            row["active"] += 1
            price, seconds = s.price, s.duration_seconds  # type: ignore[attr-defined]  # from the joined offer
            if seconds:
                row["mrr"] += (price * Decimal(30 * 86400) / Decimal(seconds)).quantize(Decimal("0.01"))
        elif month_ago <= s.ends_at <= now:
            row["churned_30d"] += 1
        if s.renewals and s.updated_at >= month_ago:
            row["renewals_30d"] += 1
    for row in result.values():
        base = row["active"] + row["churned_30d"]
        row["churn_30d"] = round(row["churned_30d"] / base, 4) if base else 0.0
        row["mrr"] = str(row["mrr"])
    return [result[k] for k in sorted(result)]


def _iso(value: dt.datetime) -> str:
    return value.replace(microsecond=0).isoformat() + "Z"
