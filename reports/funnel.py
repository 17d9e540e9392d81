"""`python -m ops report` (CONTRACT §13): the funnel per row — clicks, starts (leads), charges,
paid, revenue, refunded and conversion (paid / clicks) — grouped by bot, day, utm_source,
utm_campaign or offer, over the seller's last N days (REPORT_TIMEZONE: today and the N − 1 before).

- Clicks come from the per-day counts kept as clicks arrive (`click_day`), so a year of them is
  right though unattached click rows are pruned after 8 days.
- Charges are counted as `ops payments` counts them (created in the window, not still being
  created); paid = paid or refunded (each was paid); revenue = what was paid and kept; refunded =
  what was paid and given back (revenue + refunded = everything paid).
- UTMs are those of each lead's last ad click; days are the seller's."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from db.database import db, json_text, utcnow
from db.days import day_start, local_day, sql_local_date
from db.models import Offer

GROUPS = ("bot", "day", "utm_source", "utm_campaign", "offer")
CENTS = Decimal("0.01")


@dataclass(frozen=True)
class Row:
    key: str | None
    clicks: int | None  # None: not countable per offer (a click is for a bot, not an offer)
    starts: int | None
    charges: int
    paid: int
    revenue: str  # BRL, e.g. "19.90": paid and not refunded
    refunded: str  # BRL: paid, then refunded
    conversion: float | None  # paid / clicks

    def as_dict(self, by: str) -> dict[str, Any]:
        doc = asdict(self)
        doc[by] = doc.pop("key")
        return {by: doc[by], **{k: v for k, v in doc.items() if k != by}}


def _key(by: str, table: str, time_column: str) -> str:
    """The grouping expression over `table` (c charge, l lead, k click, d click_day) for `by`."""
    if table == "d":
        return {"bot": 'd."bot_id"', "day": 'd."day"'}.get(by, f"NULLIF(d.\"{by}\", '')")
    if by == "bot":
        return f'{table}."bot_id"'
    if by == "day":
        return sql_local_date(f'{table}."{time_column}"')
    if by in ("utm_source", "utm_campaign"):
        return json_text('k."utm"', by)
    return 'c."offer_id"'


def _label(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def _counts(sql: str, params: tuple[Any, ...], keys: int = 1) -> dict[tuple[str | None, ...], tuple[Any, ...]]:
    """Rows of `sql` by their first `keys` columns (as text), summed where two keys meet."""
    out: dict[tuple[str | None, ...], tuple[Any, ...]] = {}
    for row in db.execute_sql(sql, params):
        key = tuple(_label(v) for v in row[:keys])
        values = tuple(row[keys:])
        old = out.get(key)
        out[key] = values if old is None else tuple((a or 0) + (b or 0) for a, b in zip(old, values, strict=True))
    return out


def window(since_days: int, now: dt.datetime | None = None) -> tuple[dt.date, dt.datetime]:
    """The seller's first day of the last `since_days` (today included) and when it began (UTC)."""
    first = local_day(now or utcnow()) - dt.timedelta(days=since_days - 1)
    return first, day_start(first)


def _grouped(groups: list[str], bot: str | None, since_days: int, now: dt.datetime | None,
             bots: Sequence[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """The funnel's counts keyed by one value per group in `groups` (each of GROUPS), of `bot`
    alone or of the bots in `bots` (an account's) when given."""
    first_day, since = window(since_days, now)
    p, n = db.param, len(groups)
    chosen = [bot] if bot else list(bots) if bots is not None else []
    only = f' AND {{t}}."bot_id" IN ({", ".join([p] * len(chosen))})' if chosen else ""
    if bots is not None and not chosen:
        only = " AND 1 = 0"  # an account with no bots has no funnel
    extra = tuple(chosen)

    def keys(table: str, column: str) -> str:
        return ", ".join(_key(g, table, column) for g in groups)

    by_n = ", ".join(str(i + 1) for i in range(n))
    clicks: dict[tuple[str | None, ...], tuple[Any, ...]] = {}
    starts: dict[tuple[str | None, ...], tuple[Any, ...]] = {}
    if "offer" not in groups:
        clicks = _counts(f'SELECT {keys("d", "day")}, SUM(d."clicks") FROM "click_day" d '
                         f'WHERE d."day" >= {p}{only.format(t="d")} GROUP BY {by_n}',
                         (first_day, *extra), n)  # fmt: skip
        starts = _counts(f'SELECT {keys("l", "first_seen_at")}, COUNT(*) FROM "lead" l '
                         f'LEFT JOIN "click" k ON k."id" = l."last_click_id" '
                         f'WHERE l."first_seen_at" >= {p}{only.format(t="l")} GROUP BY {by_n}',
                         (since, *extra), n)  # fmt: skip
    charges = _counts(
        f"SELECT {keys('c', 'created_at')}, COUNT(*), "
        f"SUM(CASE WHEN c.\"status\" IN ('paid', 'refunded') THEN 1 ELSE 0 END), "
        f'SUM(CASE WHEN c."status" = \'paid\' THEN COALESCE(c."paid_amount", 0) ELSE 0 END), '
        f'SUM(CASE WHEN c."status" = \'refunded\' THEN COALESCE(c."paid_amount", 0) ELSE 0 END) '
        f'FROM "charge" c JOIN "lead" l ON l."id" = c."lead_id" LEFT JOIN "click" k ON k."id" = l."last_click_id" '
        f'WHERE c."created_at" >= {p} AND c."status" <> \'creating\'{only.format(t="c")} GROUP BY {by_n}',
        (since, *extra),
        n,
    )
    return {"clicks": clicks, "starts": starts, "charges": charges}


def _row(label: str | None, key: tuple[str | None, ...], counts: dict[str, Any], per_offer: bool) -> Row:
    n_clicks = int(counts["clicks"].get(key, (0,))[0] or 0) if not per_offer else None
    n_starts = int(counts["starts"].get(key, (0,))[0] or 0) if not per_offer else None
    count, paid, revenue, refunded = counts["charges"].get(key, (0, 0, 0, 0))
    conversion = round(int(paid or 0) / n_clicks, 4) if n_clicks else None
    money = [str(Decimal(str(v or 0)).quantize(CENTS)) for v in (revenue, refunded)]
    return Row(label, n_clicks, n_starts, int(count or 0), int(paid or 0), money[0], money[1], conversion)


def _all_keys(counts: dict[str, Any]) -> list[tuple[str | None, ...]]:
    found = set(counts["clicks"]) | set(counts["starts"]) | set(counts["charges"])
    return sorted(found, key=lambda k: tuple((v is None, v or "") for v in k))


def report(by: str = "bot", bot: str | None = None, since_days: int = 30, now: dt.datetime | None = None,
           bots: Sequence[str] | None = None) -> list[Row]:  # fmt: skip
    """The funnel grouped `by`, of one bot, of the bots in `bots` (an account's), or of every bot."""
    if by not in GROUPS:
        raise ValueError(f"--by: one of {', '.join(GROUPS)}")
    counts = _grouped([by], bot, since_days, now, bots)
    names: dict[str | None, str | None] = {}
    if by == "offer":
        ids = [int(k[0]) for k in counts["charges"] if k[0] is not None]
        names = {str(o.id): f"{o.bot_id}/{o.slug}" for o in Offer.select().where(Offer.id.in_(ids or [0]))}  # type: ignore[attr-defined]
    return [_row(names.get(key[0], key[0]) if by == "offer" else key[0], key, counts, by == "offer")
            for key in _all_keys(counts)]  # fmt: skip


def over_time(by: str, bot: str | None = None, since_days: int = 30, now: dt.datetime | None = None,
              bots: Sequence[str] | None = None) -> dict[str | None, list[Row]]:  # fmt: skip
    """Per value of `by` (utm_campaign, say), its funnel on each of the seller's days of the window
    (every day present, zeros included), oldest first."""
    if by not in GROUPS or by in ("day", "offer"):
        raise ValueError(f"by: one of bot, utm_source, utm_campaign, not {by!r}")
    counts = _grouped([by, "day"], bot, since_days, now, bots)
    first_day, _ = window(since_days, now)
    days = [(first_day + dt.timedelta(days=i)).isoformat() for i in range(since_days)]
    values = sorted({k[0] for k in _all_keys(counts)}, key=lambda v: (v is None, v or ""))
    return {value: [_row(day, (value, day), counts, False) for day in days] for value in values}


def as_csv(rows: list[Row], by: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([by, "clicks", "starts", "charges", "paid", "revenue", "refunded", "conversion"])
    for r in rows:
        counted = ["" if v is None else v for v in (r.clicks, r.starts)]
        writer.writerow([r.key or "", *counted, r.charges, r.paid, r.revenue, r.refunded,
                         "" if r.conversion is None else r.conversion])  # fmt: skip
    return out.getvalue()
