"""The dashboard's Starlette app: one read-only page (GET only; nothing here writes) with the funnel
per bot and per campaign over time as server-rendered SVG charts (dash/charts.py), the queues and
the workers' heartbeats; HTTP basic auth (DASH_USER / DASH_PASSWORD). Its numbers are those of
`ops report` (ops/report.py), queue depths those of `ops queues`."""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from html import escape
from typing import Any
from urllib.parse import urlencode

import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

import settings
from dash.charts import bars
from db.catalog import load_bots
from db.database import init_db
from ops import report

LOCAL = ("127.0.0.1", "localhost", "::1")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
table { border-collapse: collapse; margin: .5rem 0 1.5rem; }
th, td { padding: .25rem .7rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
nav a { margin-right: .8rem; } nav a.on { font-weight: bold; }
section { margin-bottom: 2rem; } .muted { color: #777; }
"""


def refuse_reason(host: str, password: str | None) -> str | None:
    """Why the dashboard must not start: no password while reachable beyond this machine."""
    if password is None and host not in LOCAL:
        return f"DASH_PASSWORD is required when DASH_HOST ({host}) is not 127.0.0.1"
    return None


class BasicAuth:
    """Every request needs `Authorization: Basic` with DASH_USER / DASH_PASSWORD (compared in
    constant time) when a password is set; /health excepted."""

    def __init__(self, app: ASGIApp, user: str, password: str | None) -> None:
        self.app, self.user, self.password = app, user, password

    def _allowed(self, scope: Scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, encoded = header.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return False
        want = f"{self.user}:{self.password}".encode()
        return hmac.compare_digest(given, want)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.password is None or scope["path"] == "/health" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        challenge = {"WWW-Authenticate": 'Basic realm="GrimBots", charset="UTF-8"'}
        response = PlainTextResponse("login required", status_code=401, headers=challenge)
        await response(scope, receive, send)


def _table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _money(value: str) -> str:
    whole, cents = value.split(".")
    return f"R$ {int(whole):,}".replace(",", ".") + f",{cents}"


def _funnel_rows(rows: list[report.Row]) -> list[list[Any]]:
    return [[r.key if r.key is not None else "(none)", r.clicks, r.starts, r.charges, r.paid, _money(r.revenue),
             "-" if r.conversion is None else f"{r.conversion:.1%}"] for r in rows]  # fmt: skip


FUNNEL = ["", "clicks", "starts", "charges", "paid", "revenue", "conversion"]


def _queues() -> tuple[list[list[Any]], list[list[Any]]]:
    from actors.broker import QUEUES
    from actors.metrics import processes
    from ops.queues import queue_stats

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=1)
    try:
        stats = [queue_stats(client, q) for q in QUEUES]
        alive = processes(client)
    finally:
        client.close()
    queues = [[s.queue, s.ready, s.in_flight, s.delayed, s.dead, _age(s.oldest_ready_age_seconds)] for s in stats]
    workers = [[p["role"], f"{p['host']}:{p['pid']}", ", ".join(p.get("queues", [])) or "-", p.get("threads", "-"),
                f"{p['age_seconds']}s ago"] for p in alive]  # fmt: skip
    return queues, workers


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s"


QUEUE_HEADERS = ["queue", "ready", "in flight", "delayed", "dead", "oldest"]
WORKER_HEADERS = ["role", "process", "queues", "threads", "heartbeat"]


def page(request: Request) -> Response:
    bot = request.query_params.get("bot") or None
    try:
        days = min(max(int(request.query_params.get("days", "14")), 1), 365)
    except ValueError:
        days = 14
    with init_db().connection_context():
        bots = sorted(load_bots())
        if bot not in bots:
            bot = None
        per_bot = report.report("bot", None, days)
        daily = report.report("day", bot, days)
        campaigns = report.report("utm_campaign", bot, days)
    try:
        queues, workers = _queues()
        system = (f"<h2>Queues</h2>{_table(QUEUE_HEADERS, queues, 'queues')}"
                  f"<h2>Workers</h2>{_table(WORKER_HEADERS, workers, 'workers')}")  # fmt: skip
    except redis.RedisError as exc:
        system = f"<h2>Queues</h2><p>Redis is not answering ({escape(type(exc).__name__)}).</p>"
    labels = [r.key or "" for r in daily]
    funnel_chart = bars(f"Funnel per day — {bot or 'all bots'}", labels, {
        "clicks": [r.clicks or 0 for r in daily], "starts": [r.starts or 0 for r in daily],
        "charges": [r.charges for r in daily], "paid": [r.paid for r in daily]})  # fmt: skip
    revenue_chart = bars(f"Revenue per day — {bot or 'all bots'}", labels,
                         {"revenue": [float(r.revenue) for r in daily]}, money=True)  # fmt: skip
    names = [r.key or "(none)" for r in campaigns]
    campaign_chart = bars(f"Per campaign — {bot or 'all bots'}", names, {
        "clicks": [r.clicks or 0 for r in campaigns], "paid": [r.paid for r in campaigns]})  # fmt: skip
    links = "".join(f'<a href="?{urlencode({"days": days, **({"bot": b} if b else {})})}" '
                    f'class="{"on" if b == bot else ""}">{escape(b or "all bots")}</a>'
                    for b in [None, *bots])  # fmt: skip
    bot_table = _table(["bot", *FUNNEL[1:]], _funnel_rows(per_bot), "funnel")
    campaign_table = _table(["campaign", *FUNNEL[1:]], _funnel_rows(campaigns), "campaigns")
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="60">
<title>GrimBots dashboard</title><style>{STYLE}</style></head>
<body><h1>GrimBots</h1>
<nav>{links}</nav><p class="muted">last {days} days · {time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())} UTC ·
read-only</p>
<section id="bots"><h2>Per bot</h2>{bot_table}</section>
<section id="daily">{funnel_chart}{revenue_chart}</section>
<section id="campaigns">{campaign_chart}{campaign_table}</section>
<section id="system">{system}</section>
</body></html>"""
    return HTMLResponse(html)


def health(request: Request) -> Response:
    return PlainTextResponse("ok")


def create_app(user: str | None = None, password: str | None = None) -> ASGIApp:
    app = Starlette(routes=[Route("/", page, methods=["GET"]), Route("/health", health, methods=["GET"])])
    return BasicAuth(app, user or settings.DASH_USER, password if password is not None else settings.DASH_PASSWORD)


app = create_app()
