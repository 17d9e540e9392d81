"""The dashboard's Starlette app: one read-only page (GET only; nothing here writes) with the funnel
per bot and per campaign over time as server-rendered SVG charts (dash/charts.py), the queues and
the workers' heartbeats; HTTP basic auth (DASH_USER / DASH_PASSWORD). Its numbers are those of
`ops report` (reports/funnel.py), queue depths those of `ops queues`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
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
from catalog.snapshot import load_bots
from clicks import client_ip
from dash.charts import bars
from db.database import init_db
from reports import funnel as report

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
table { border-collapse: collapse; margin: .5rem 0 1.5rem; }
th, td { padding: .25rem .7rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
nav a { margin-right: .8rem; } nav a.on { font-weight: bold; }
section { margin-bottom: 2rem; } .muted { color: #777; }
"""


def refuse_reason(host: str, password: str | None) -> str | None:
    """Why the dashboard must not start: no password, on any address (a proxy in front of
    127.0.0.1 makes it as public as 0.0.0.0 would)."""
    if password is None:
        return f"DASH_PASSWORD is required (the dashboard shows every seller's revenue; DASH_HOST is {host})"
    return None


# Failed logins per client address, within FAIL_WINDOW_SECONDS of the first: answered a second later
# for each one past SLOW_AFTER, and from the REFUSE_AT-th on every request from the address is
# refused (429), the right password included (else refusing would not stop the guessing).
FAIL_WINDOW_SECONDS = 15 * 60
SLOW_AFTER = 3
REFUSE_AT = 6


class BasicAuth:
    """Every request but /health needs `Authorization: Basic` with DASH_USER / DASH_PASSWORD,
    compared as SHA-256 digests (equal lengths: the time taken says nothing about the secret's).
    Failed logins are counted per client address in Redis: slowed, then refused for a while."""

    def __init__(self, app: ASGIApp, user: str, password: str | None, failures: redis.Redis | None = None) -> None:
        self.app, self.user, self.password = app, user, password
        self.want = hashlib.sha256(f"{user}:{password}".encode()).digest() if password is not None else None
        self._failures = failures

    @property
    def failures(self) -> redis.Redis:
        if self._failures is None:
            self._failures = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=1)
        return self._failures

    def _allowed(self, scope: Scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, encoded = header.partition(b" ")
        if self.want is None or scheme.lower() != b"basic":
            return False
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(hashlib.sha256(given).digest(), self.want)

    def _address(self, scope: Scope) -> str:
        headers = dict(scope.get("headers") or [])
        forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1") or None
        peer = (scope.get("client") or ("", 0))[0] or None
        return client_ip(peer, forwarded) or "unknown"

    def _key(self, scope: Scope) -> str:
        return f"grimbots:dash:fail:{self._address(scope)}"

    def _locked(self, scope: Scope) -> bool:
        try:
            return int(self.failures.get(self._key(scope)) or 0) >= REFUSE_AT
        except redis.RedisError:
            return False  # the count is unknown: failures are still slowed (below)

    async def _fail(self, scope: Scope) -> None:
        """Count a failed login of the address, and answer it late when it has failed often."""
        try:
            pipe = self.failures.pipeline()
            pipe.set(self._key(scope), 0, nx=True, ex=FAIL_WINDOW_SECONDS)  # the window starts at the first
            pipe.incr(self._key(scope))
            count = int(pipe.execute()[1])
        except redis.RedisError:
            count = SLOW_AFTER + 1
        if count > SLOW_AFTER:
            await asyncio.sleep(float(min(count - SLOW_AFTER, REFUSE_AT)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        response: Response
        if self._locked(scope):
            response = PlainTextResponse("too many failed logins from this address: try again later", status_code=429,
                                         headers={"Retry-After": str(FAIL_WINDOW_SECONDS)})  # fmt: skip
        elif self._allowed(scope):
            await self.app(scope, receive, send)
            return
        else:
            if b"authorization" in dict(scope.get("headers") or []):
                await self._fail(scope)
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
             _money(r.refunded), "-" if r.conversion is None else f"{r.conversion:.1%}"] for r in rows]  # fmt: skip


FUNNEL = ["", "clicks", "starts", "charges", "paid", "revenue", "refunded", "conversion"]
TOP_CAMPAIGNS = 5  # campaigns charted over time (the table lists them all)


def _queues() -> tuple[list[list[Any]], list[list[Any]]]:
    from actors.broker import QUEUES
    from actors.metrics import processes
    from reports.queues import queue_stats

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
        over_time = report.over_time("utm_campaign", bot, days)
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
                         {"revenue": [float(r.revenue) for r in daily],
                          "refunded": [float(r.refunded) for r in daily]}, money=True)  # fmt: skip
    # The campaigns that matter most (paid, then clicks), each over the days of the window.
    top = sorted(campaigns, key=lambda r: (-r.paid, -(r.clicks or 0), r.key or ""))[:TOP_CAMPAIGNS]
    campaign_chart = "".join(
        bars(f"Campaign {r.key or '(none)'} per day — {bot or 'all bots'}", [d.key or "" for d in over_time[r.key]],
             {"clicks": [d.clicks or 0 for d in over_time[r.key]], "starts": [d.starts or 0 for d in over_time[r.key]],
              "charges": [d.charges for d in over_time[r.key]], "paid": [d.paid for d in over_time[r.key]]})
        for r in top if r.key in over_time)  # fmt: skip
    links = "".join(f'<a href="?{urlencode({"days": days, **({"bot": b} if b else {})})}" '
                    f'class="{"on" if b == bot else ""}">{escape(b or "all bots")}</a>'
                    for b in [None, *bots])  # fmt: skip
    bot_table = _table(["bot", *FUNNEL[1:]], _funnel_rows(per_bot), "funnel")
    campaign_table = _table(["campaign", *FUNNEL[1:]], _funnel_rows(campaigns), "campaigns")
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="60">
<title>GrimBots dashboard</title><style>{STYLE}</style></head>
<body><h1>GrimBots</h1>
<nav>{links}</nav><p class="muted">last {days} days ({escape(settings.REPORT_TIMEZONE)} days) ·
{time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())} UTC ·
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
