"""The HTTP API (CONTRACT §14): `/api/v1/...`, JSON, `Authorization: Bearer <key>` (an account's key,
`ops accounts api-key`). No key or a revoked one → 401; another account's id → 404; more than
API_RATE_PER_MINUTE requests a minute for the account → 429 with Retry-After. Everything is read and
written through the account's `Scope`, and a bot is saved through the same validation and apply
(and audit) as a file."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from functools import wraps
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import catalog
import settings
from accounts import api_keys
from actors.health import unhealthy
from catalog import edit
from db.database import db
from panel.scope import NotFound, Scope
from panel.shared import PANEL
from reports import funnel as funnel_report

RATE = "grimbots:api-rate:{account}:{minute}"


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


Endpoint = Callable[[Request, Scope], Awaitable[Response]]


def authorized(handler: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """An API endpoint: reached with a live key within the account's rate (else 401/429), given the
    key's account's Scope; another account's id (NotFound) answers 404."""

    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        scope = _scope(request)
        if not isinstance(scope, Scope):
            return scope
        try:
            return await handler(request, scope)
        except NotFound:
            return error(404, "not found")

    return endpoint


def _scope(request: Request) -> Scope | Response:
    """The key's account, or the 401/429 to answer."""
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else ""
    db.connect(reuse_if_open=True)
    account = api_keys.account_of(key) if key else None
    if account is None:
        return error(401, "a valid API key is required (Authorization: Bearer <key>)")
    minute = int(time.time() // 60)
    rate_key = RATE.format(account=account.id, minute=minute)
    pipe = PANEL.redis.pipeline()
    pipe.incr(rate_key)
    pipe.expire(rate_key, 120)
    count = int(pipe.execute()[0])
    if count > settings.API_RATE_PER_MINUTE:
        retry = str(60 - int(time.time()) % 60)
        return JSONResponse({"error": f"over {settings.API_RATE_PER_MINUTE} requests a minute"}, status_code=429,
                            headers={"Retry-After": retry})  # fmt: skip
    return Scope(account)


@authorized
async def bots(request: Request, scope: Scope) -> Response:
    down = unhealthy(PANEL.redis)
    return JSONResponse([{"id": b.id, "channel": b.channel, **({"number": b.whatsapp.number} if b.whatsapp else
                                                              {"username": b.username}), "healthy": b.id not in down}
                         for b in scope.bots()])  # fmt: skip


@authorized
async def bot(request: Request, scope: Scope) -> Response:
    config = scope.bot(request.path_params["bot_id"])
    if request.method == "GET":
        return JSONResponse(edit.masked(edit.bot(scope.account, config.id)))
    try:
        body = await request.json()
    except ValueError:
        return error(400, "the body is not JSON")
    if not isinstance(body, dict):
        return error(422, "the body must be a bot's table", key="")
    stored = edit.bot(scope.account, config.id) or {}
    table = edit.unmasked(body, stored)
    table["id"] = config.id
    try:
        changes = edit.save(scope.account, f"{scope.account.slug} (api)", bots=[table])
    except catalog.ConfigError as exc:
        refused = edit.relative(exc, "bots[0]")
        return error(422, str(refused), key=refused.key)
    return JSONResponse({"changes": changes})


def _since(raw: str) -> dt.datetime:
    """An ISO date or date-time as naive UTC (as the database keeps times); raises ValueError."""
    value = dt.datetime.fromisoformat(raw)
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


@authorized
async def charges(request: Request, scope: Scope) -> Response:
    try:
        since = _since(raw) if (raw := request.query_params.get("since")) else None
    except ValueError:
        return error(422, "since: an ISO date or date-time such as 2026-12-01", key="since")
    rows = scope.charges(request.query_params.get("bot"), request.query_params.get("state"), limit=500,
                         since=since)  # fmt: skip
    return JSONResponse([{"id": c.id, "bot": c.bot, "offer": c.offer, "amount": f"{Decimal(c.amount):.2f}",
                          "state": c.status, "created_at": c.created_at, "paid_at": c.paid_at}
                         for c in rows])  # fmt: skip


@authorized
async def report(request: Request, scope: Scope) -> Response:
    by = request.query_params.get("by", "bot")
    if by not in funnel_report.GROUPS:
        return error(422, f"by: one of {', '.join(funnel_report.GROUPS)}", key="by")
    days = request.query_params.get("since_days", "30")
    if not days.isdigit() or not 1 <= int(days) <= 366:
        return error(422, "since_days: a whole number from 1 to 366", key="since_days")
    wanted = request.query_params.get("bot")
    bots = [scope.bot(wanted).id] if wanted else scope.bot_ids()
    return JSONResponse([row.as_dict(by) for row in funnel_report.report(by, since_days=int(days), bots=bots)])


async def openapi(request: Request) -> Response:
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    paths = {
        "/api/v1/bots": {"get": {"summary": "The account's bots: id, channel, username or number, healthy",
                                 "security": bearer}},
        "/api/v1/bots/{id}": {
            "get": {"summary": "A bot's configuration as the file's keys, secrets masked", "security": bearer},
            "put": {"summary": "Save a bot (the same shape; a masked value keeps the stored one); 422 names the key",
                    "security": bearer},
        },
        "/api/v1/charges": {"get": {"summary": "Charges: id, bot, offer, amount, state, created_at, paid_at",
                                    "parameters": [{"name": n, "in": "query"} for n in ("bot", "state", "since")],
                                    "security": bearer}},
        "/api/v1/report": {"get": {"summary": "The funnel, as ops report --json",
                                   "parameters": [{"name": n, "in": "query"} for n in ("by", "bot", "since_days")],
                                   "security": bearer}},
    }  # fmt: skip
    for path, methods in WRITES.items():
        for method, summary in methods.items():
            paths.setdefault(path, {})[method] = {"summary": summary, "security": bearer}
    schemes = {"bearer": {"type": "http", "scheme": "bearer"}}
    return JSONResponse({"openapi": "3.1.0", "info": {"title": "GrimBots", "version": "1"}, "paths": paths,
                         "components": {"securitySchemes": schemes}})  # fmt: skip


# The other operations (panel/api_shop.py), as the OpenAPI description lists them.
WRITES: dict[str, dict[str, str]] = {
    "/api/v1/bots": {"post": 'A new bot: {"token", "gateway"?, "copy_of"?} (Telegram: getMe, setWebhook) or '
                             '{"channel": "evolution"|"whatsapp_cloud", "id", its keys}; 201 {"id"}'},
    "/api/v1/gateways": {"get": "The account's gateways, credentials masked"},
    "/api/v1/gateways/{id}": {"get": "A gateway's keys, credentials masked",
                              "put": "Create or update a gateway (a masked value keeps the stored one); 422 names "
                                     "the key"},
    "/api/v1/gateways/{id}/test": {"post": 'Test the connection: {"ok", "said"}'},
    "/api/v1/pools": {"get": "The account's pools"},
    "/api/v1/pools/{id}": {"get": "A pool: id, bots with weights", "put": "Create or update a pool"},
    "/api/v1/broadcasts": {"get": "Broadcasts with their counts (?bot=)",
                           "post": 'A broadcast: {"bot", "segment", "text", "media_url"?, "offer"?, "at"?}; '
                                   '201 {"id"}'},
    "/api/v1/broadcasts/preview": {"get": 'How many leads a segment reaches now (?bot=&segment=): {"reach"}'},
    "/api/v1/broadcasts/{id}": {"get": "A broadcast's state and counts"},
    "/api/v1/broadcasts/{id}/stop": {"post": "Stop a broadcast"},
    "/api/v1/media": {"post": 'Upload an image or video (the raw body): 201 {"media_url": "media:..."}'},
    "/api/v1/charges/{id}/purchase": {"post": 'Send a paid sale\'s Purchase again (same event_id): {"queued"}'},
}  # fmt: skip

ROUTES = [
    Route("/api/v1/openapi.json", openapi),
    Route("/api/v1/bots", bots),
    Route("/api/v1/bots/{bot_id}", bot, methods=["GET", "PUT"]),
    Route("/api/v1/charges", charges),
    Route("/api/v1/report", report),
]
