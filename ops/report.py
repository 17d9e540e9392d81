"""`python -m ops report` (CONTRACT §13): the funnel per row — clicks, starts (leads), charges,
paid, revenue and conversion (paid / clicks) — grouped by bot, day, utm_source, utm_campaign or
offer, over the last N days. Charges, paid and revenue are counted as `ops payments` counts them
(charges created in the window, not still being created; paid = paid or refunded; revenue = what
was paid), so the two reconcile. UTMs are those of each lead's last ad click."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from db.database import db, json_text, utcnow
from db.models import Offer

GROUPS = ("bot", "day", "utm_source", "utm_campaign", "offer")


@dataclass(frozen=True)
class Row:
    key: str | None
    clicks: int | None  # None: not countable per offer (a click is for a bot, not an offer)
    starts: int | None
    charges: int
    paid: int
    revenue: str  # BRL, e.g. "19.90"
    conversion: float | None  # paid / clicks

    def as_dict(self, by: str) -> dict[str, Any]:
        doc = asdict(self)
        doc[by] = doc.pop("key")
        return {by: doc[by], **{k: v for k, v in doc.items() if k != by}}


def _key(by: str, table: str, time_column: str) -> str:
    """The grouping expression over `table` (c charge, l lead, k click) for `by`."""
    if by == "bot":
        return f'{table}."bot_id"'
    if by == "day":
        return f'date({table}."{time_column}")'
    if by in ("utm_source", "utm_campaign"):
        return json_text('k."utm"', by)
    return 'c."offer_id"'


def _counts(sql: str, params: tuple[Any, ...]) -> dict[str | None, tuple[Any, ...]]:
    return {(str(row[0]) if row[0] is not None else None): tuple(row[1:]) for row in db.execute_sql(sql, params)}


def report(by: str = "bot", bot: str | None = None, since_days: int = 30, now: dt.datetime | None = None) -> list[Row]:
    if by not in GROUPS:
        raise ValueError(f"--by: one of {', '.join(GROUPS)}")
    since = (now or utcnow()) - dt.timedelta(days=since_days)
    p = db.param
    only = f' AND {{t}}."bot_id" = {p}' if bot else ""
    extra = (bot,) if bot else ()
    clicks: dict[str | None, tuple[Any, ...]] = {}
    starts: dict[str | None, tuple[Any, ...]] = {}
    if by != "offer":
        clicks = _counts(f'SELECT {_key(by, "k", "clicked_at")}, COUNT(*) FROM "click" k '
                         f'WHERE k."clicked_at" >= {p}{only.format(t="k")} GROUP BY 1', (since, *extra))  # fmt: skip
        starts = _counts(f'SELECT {_key(by, "l", "first_seen_at")}, COUNT(*) FROM "lead" l '
                         f'LEFT JOIN "click" k ON k."id" = l."last_click_id" '
                         f'WHERE l."first_seen_at" >= {p}{only.format(t="l")} GROUP BY 1', (since, *extra))  # fmt: skip
    charges = _counts(
        f"SELECT {_key(by, 'c', 'created_at')}, COUNT(*), "
        f"SUM(CASE WHEN c.\"status\" IN ('paid', 'refunded') THEN 1 ELSE 0 END), SUM(COALESCE(c.\"paid_amount\", 0)) "
        f'FROM "charge" c JOIN "lead" l ON l."id" = c."lead_id" LEFT JOIN "click" k ON k."id" = l."last_click_id" '
        f'WHERE c."created_at" >= {p} AND c."status" <> \'creating\'{only.format(t="c")} GROUP BY 1',
        (since, *extra),
    )
    names: dict[str | None, str | None] = {}
    if by == "offer":
        ids = [int(k) for k in charges if k is not None]
        names = {str(o.id): f"{o.bot_id}/{o.slug}" for o in Offer.select().where(Offer.id.in_(ids or [0]))}  # type: ignore[attr-defined]
    rows = []
    for key in sorted(set(clicks) | set(starts) | set(charges), key=lambda k: (k is None, k or "")):
        n_clicks = int(clicks.get(key, (0,))[0]) if by != "offer" else None
        n_starts = int(starts.get(key, (0,))[0]) if by != "offer" else None
        count, paid, revenue = charges.get(key, (0, 0, 0))
        money = Decimal(str(revenue or 0)).quantize(Decimal("0.01"))
        conversion = round(int(paid or 0) / n_clicks, 4) if n_clicks else None
        label = names.get(key, key) if by == "offer" else key
        rows.append(Row(label, n_clicks, n_starts, int(count or 0), int(paid or 0), str(money), conversion))
    return rows


def as_csv(rows: list[Row], by: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([by, "clicks", "starts", "charges", "paid", "revenue", "conversion"])
    for r in rows:
        writer.writerow([r.key or "", "" if r.clicks is None else r.clicks, "" if r.starts is None else r.starts,
                         r.charges, r.paid, r.revenue, "" if r.conversion is None else r.conversion])  # fmt: skip
    return out.getvalue()
