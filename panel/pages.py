"""The seller's read pages: the dashboard (the funnel per bot, per campaign and per day, as charts),
sales (filters, a CSV export, each sale's lead journey) and bots (health, tracked link with a UTM
builder, subscriptions, broadcasts). Everything is read through the account's `Scope`."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

import settings
from accounts import sessions
from actors import pixel
from actors.health import unhealthy
from db import audit
from db.models import Charge, Offer, PixelEvent
from gateways import media
from panel.charts import bars
from panel.scope import NotFound, Scope
from panel.shared import PANEL
from panel.web import STATES, address, render, seller_form, seller_page
from reports import funnel as funnel_report
from reports.journey import journey

PERIODS = (1, 7, 30, 90)
TOP_CAMPAIGNS = 5  # campaigns charted over time (the table lists them all)
UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")


def _days(request: Request, default: int = 30) -> int:
    raw = request.query_params.get("days", str(default))
    return min(max(int(raw), 1), 366) if raw.isdigit() else default


def _bot_param(request: Request, scope: Scope) -> str | None:
    """The `bot` asked for, when it is the account's (NotFound otherwise); None: every bot."""
    bot = request.query_params.get("bot") or None
    return scope.bot(bot).id if bot else None


def _every_day(rows: list[funnel_report.Row], days: int) -> list[funnel_report.Row]:
    """The per-day rows with the days without any movement in as zeros, oldest first."""
    first, _ = funnel_report.window(days)
    by_day = {r.key: r for r in rows}
    out = []
    for i in range(days):
        day = (first + dt.timedelta(days=i)).isoformat()
        out.append(by_day.get(day) or funnel_report.Row(day, 0, 0, 0, 0, "0.00", "0.00", None))
    return out


def _funnel_series(rows: list[funnel_report.Row]) -> dict[str, list[float]]:
    return {"cliques": [r.clicks or 0 for r in rows], "inícios": [r.starts or 0 for r in rows],
            "PIX gerados": [r.charges for r in rows], "pagos": [r.paid for r in rows]}  # fmt: skip


@seller_page
async def dashboard(request: Request, session: sessions.Session, scope: Scope) -> Response:
    days, bot = _days(request), _bot_param(request, scope)
    per_bot = scope.funnel(days)
    daily = _every_day(scope.funnel(days, "day", bot), days)
    campaigns = scope.funnel(days, "utm_campaign", bot)
    over_time = scope.over_time("utm_campaign", days, bot) if campaigns else {}
    whose = bot or "todos os bots"
    labels = [r.key or "" for r in daily]
    charts = [bars(f"Funil por dia — {whose}", labels, _funnel_series(daily)),
              bars(f"Faturamento por dia — {whose}", labels, {"faturamento": [float(r.revenue) for r in daily],
                                                              "reembolsos": [float(r.refunded) for r in daily]},
                   money=True)]  # fmt: skip
    top = sorted(campaigns, key=lambda r: (-r.paid, -(r.clicks or 0), r.key or ""))[:TOP_CAMPAIGNS]
    charts += [bars(f"Campanha {r.key or '(sem campanha)'} por dia — {whose}", [d.key or "" for d in over_time[r.key]],
                    _funnel_series(over_time[r.key])) for r in top if r.key in over_time]  # fmt: skip
    chosen = [r for r in per_bot if r.key == bot] if bot else per_bot
    totals = {name: sum(getattr(r, name) or 0 for r in chosen) for name in ("clicks", "starts", "charges", "paid")}
    revenue = sum((Decimal(r.revenue) for r in chosen), Decimal("0.00"))
    return render(request, "dashboard.html", session, account=scope.account, days=days, periods=PERIODS, bot=bot,
                  bots=scope.bot_ids(), rows=per_bot, campaigns=campaigns, totals=totals, revenue=revenue,
                  charts=[Markup(c) for c in charts])  # fmt: skip


def _since(days: int) -> dt.datetime:
    return funnel_report.window(days)[1]


def _sales_filters(request: Request, scope: Scope) -> dict[str, Any]:
    state = request.query_params.get("state", "")
    return {"bot": _bot_param(request, scope) or "", "state": state if state in STATES else "",
            "days": _days(request, 30)}  # fmt: skip


@seller_page
async def sales(request: Request, session: sessions.Session, scope: Scope) -> Response:
    chosen = _sales_filters(request, scope)
    charges = scope.charges(chosen["bot"], chosen["state"], limit=200, since=_since(chosen["days"]))
    return render(request, "sales.html", session, account=scope.account, charges=charges, bots=scope.bot_ids(),
                  periods=PERIODS, query=urlencode(chosen), labels=_labels(charges), **chosen)  # fmt: skip


def _labels(charges: list[Any]) -> dict[int, str]:
    """The offers' labels (what the seller named them) by id: sales read better than slugs."""
    ids = {c.offer_id for c in charges}
    return {o.id: o.label for o in Offer.select(Offer.id, Offer.label).where(Offer.id.in_(list(ids) or [0]))}


CSV_ROWS = 100_000


@seller_page
async def sales_csv(request: Request, session: sessions.Session, scope: Scope) -> Response:
    chosen = _sales_filters(request, scope)
    charges = scope.charges(chosen["bot"], chosen["state"], limit=CSV_ROWS, since=_since(chosen["days"]))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "bot", "offer", "offer_label", "amount", "paid_amount", "state", "delivery", "created_at",
                     "paid_at"])  # fmt: skip
    labels = _labels(charges)
    for c in charges:
        paid = f"{Decimal(c.paid_amount):.2f}" if c.paid_amount is not None else ""
        label = labels.get(c.offer_id, "")
        label = f"'{label}" if label[:1] in ("=", "+", "-", "@") else label  # a spreadsheet's formula, not ours
        writer.writerow([c.id, c.bot, c.offer, label, f"{Decimal(c.amount):.2f}", paid, c.status, c.delivery or "",
                         c.created_at, c.paid_at or ""])  # fmt: skip
    name = f"vendas-{scope.account.slug}-{dt.date.today().isoformat()}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


def _charge_id(request: Request) -> int:
    raw = request.path_params["charge_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(raw)
    return int(raw)


@seller_page
async def sale(request: Request, session: sessions.Session, scope: Scope) -> Response:
    charge_id = _charge_id(request)
    lead = scope.lead_of_charge(charge_id)
    charge = Charge.get_by_id(charge_id)
    mine = (PixelEvent.charge_id == charge_id) & (PixelEvent.event_name == "Purchase")
    events = list(PixelEvent.select().where(mine).order_by(PixelEvent.destination))
    resent = request.query_params.get("resent")
    return render(request, "sale.html", session, account=scope.account, charge_id=charge_id, lead=lead,
                  charge=charge, steps=journey(lead), events=events,
                  resent=int(resent) if resent and resent.isdigit() else None)  # fmt: skip


@seller_form
async def send_purchase_again(request: Request, session: sessions.Session, scope: Scope,
                              form: dict[str, str]) -> Response:  # fmt: skip
    """ "Send the Purchase again" for a sale an ad platform did not get: the same event_id, so a
    platform that did get it drops the repeat."""
    charge_id = _charge_id(request)
    scope.lead_of_charge(charge_id)  # the account's, or 404
    charge = Charge.get_by_id(charge_id)
    queued = pixel.send_purchase_again(scope.bot(charge.bot_id), charge)
    audit.record("purchase sent again", account=scope.account, actor=scope.account.slug, obj=f"charge {charge_id}",
                 after={"events": queued}, session=session.tag, address=address(request))  # fmt: skip
    return RedirectResponse(f"/sales/{charge_id}?resent={queued}", status_code=303)


# Why a channel refused a bot (actors/health.py keeps the provider's status), as the seller reads it.
REFUSALS = {
    401: "o token do bot foi recusado: ele foi trocado no BotFather, ou o bot foi apagado",
    403: "o canal bloqueou o bot",
    404: "o bot ou o número não existe mais no canal",
    0: "o WhatsApp deste número está desconectado: leia o QR code de novo na Evolution API",
}


@seller_page
async def stored_media(request: Request, session: sessions.Session, scope: Scope) -> Response:
    """An upload the account's bots use, for the seller's own pages (the welcome's preview)."""
    ref = f"media:{request.path_params['name']}"
    if not media.is_ref(ref) or not scope.uses_media(ref):
        raise NotFound(ref)
    try:
        _, data, mimetype = media.load(ref)
    except media.MediaError:
        raise NotFound(ref) from None
    return Response(data, media_type=mimetype, headers={"Cache-Control": "private, max-age=86400"})


def _health(bot_id: str, down: dict[str, dict[str, Any]]) -> dict[str, Any]:
    sick = down.get(bot_id)
    if sick is None:
        return {"ok": True, "why": "respondendo normalmente"}
    status = sick.get("status")
    why = REFUSALS.get(status, "o canal recusou as últimas mensagens") if isinstance(status, int) else REFUSALS[403]
    said = str(sick.get("description") or "")[:120]
    return {"ok": False, "why": f"{why} ({said})" if said else why}


@seller_page
async def bots(request: Request, session: sessions.Session, scope: Scope) -> Response:
    down = unhealthy(PANEL.redis)
    today = {r.key: r for r in scope.funnel(1)}
    rows = [{"bot": b, "health": _health(b.id, down), "today": today.get(b.id), "link": _tracked_link(b.id)}
            for b in scope.bots()]  # fmt: skip
    return render(request, "bots.html", session, account=scope.account, rows=rows)


def _tracked_link(bot_id: str, utm: dict[str, str] | None = None) -> str:
    query = urlencode({k: v for k, v in (utm or {}).items() if v})
    return f"{settings.PUBLIC_BASE_URL}/r/{bot_id}" + (f"?{query}" if query else "")


@seller_page
async def bot(request: Request, session: sessions.Session, scope: Scope) -> Response:
    config = scope.bot(request.path_params["bot_id"])
    utm = {k: request.query_params.get(k, "").strip()[:100] for k in UTM_KEYS}
    return render(request, "bot.html", session, account=scope.account, bot=config,
                  health=_health(config.id, unhealthy(PANEL.redis)), today=next(iter(scope.funnel(1, bot=config.id)),
                                                                                  None),
                  link=_tracked_link(config.id, utm), utm=utm, subscriptions=scope.subscriptions(config.id),
                  broadcasts=scope.broadcasts(config.id))  # fmt: skip
