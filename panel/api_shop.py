"""The HTTP API's writes beyond a bot's table (issue: the seller panel): gateways, new bots, pools,
broadcasts, uploads and "send the Purchase again" — the same operations as the panel's forms,
through the same layer under them (catalog.edit, panel/shop.py's new bots, actors.broadcasts,
gateways.media), audited as the account's "(api)". JSON in and out; a refusal is 422 naming the
key; another account's id is 404."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors import broadcasts, pixel
from catalog import ConfigError, edit
from db import audit
from db.models import Charge
from gateways import media
from panel import shop
from panel.api import authorized, error
from panel.campaigns import OPTION_FIELDS, at_of
from panel.scope import NotFound, Scope
from panel.web import in_thread

Handler = Any


def _actor(scope: Scope) -> str:
    return f"{scope.account.slug} (api)"


async def _body(request: Request) -> dict[str, Any] | Response:
    try:
        body = await request.json()
    except ValueError:
        return error(400, "the body is not JSON")
    return body if isinstance(body, dict) else error(422, "the body must be a JSON object", key="")


def _save(scope: Scope, kind: str, table: dict[str, Any]) -> Response:
    try:
        changes = edit.save(scope.account, _actor(scope), **{kind: [table]})
    except ConfigError as exc:
        refused = edit.relative(exc, f"{kind}[0]")
        return error(422, str(refused), key=refused.key)
    return JSONResponse({"changes": changes})


@authorized
async def gateways(request: Request, scope: Scope) -> Response:
    return JSONResponse([edit.masked(g) for g in scope.gateways()])


@authorized
async def gateway(request: Request, scope: Scope) -> Response:
    """GET: the gateway's keys, credentials masked. PUT: create it (its id free on the platform)
    or update it; a masked value sent back keeps the stored one."""
    gateway_id = request.path_params["gateway_id"]
    stored = edit.gateway(scope.account, gateway_id)
    if request.method == "GET":
        if stored is None:
            raise NotFound(gateway_id)
        return JSONResponse(edit.masked(stored))
    if stored is None and scope.gateway_exists(gateway_id):
        raise NotFound(gateway_id)  # another account's
    body = await _body(request)
    if isinstance(body, Response):
        return body
    table = {**edit.unmasked(body, stored or {}), "id": gateway_id}
    return _save(scope, "gateways", table)


@authorized
async def test_gateway(request: Request, scope: Scope) -> Response:
    ok, said = await run_in_threadpool(shop.probe_gateway, scope.gateway(request.path_params["gateway_id"]))
    return JSONResponse({"ok": ok, "said": said})


@authorized
async def create_bot(request: Request, scope: Scope) -> Response:
    """{"token", "gateway"?, "copy_of"?} for Telegram (getMe, setWebhook); {"channel": "evolution" |
    "whatsapp_cloud", "id", the number's keys, "gateway"?} for WhatsApp. 201 with its id."""
    body = await _body(request)
    if isinstance(body, Response):
        return body
    given = {k: str(v) for k, v in body.items() if isinstance(v, (str, int))}
    channel = given.get("channel", "telegram")
    try:
        if channel == "telegram":
            bot_id, webhook = await in_thread(shop.add_telegram_bot, scope, _actor(scope),
                                                      given.get("token", ""), given.get("gateway", ""),
                                                      given.get("copy_of", ""))  # fmt: skip
        else:
            bot_id, webhook = await in_thread(shop.add_whatsapp_bot, scope, _actor(scope), channel, given,
                                                      given.get("gateway", ""))  # fmt: skip
    except shop.Refused as exc:
        return error(422, str(exc), key=exc.field.replace("-", "."))
    return JSONResponse({"id": bot_id, "webhook": webhook}, status_code=201)


@authorized
async def pools(request: Request, scope: Scope) -> Response:
    return JSONResponse(scope.pools())


@authorized
async def pool(request: Request, scope: Scope) -> Response:
    pool_id = request.path_params["pool_id"]
    stored = edit.pool(scope.account, pool_id)
    if request.method == "GET":
        if stored is None:
            raise NotFound(pool_id)
        return JSONResponse(stored)
    if stored is None and scope.pool_exists(pool_id):
        raise NotFound(pool_id)
    body = await _body(request)
    if isinstance(body, Response):
        return body
    for member in body.get("bots") or []:
        bot_id = member.get("bot") if isinstance(member, dict) else member
        if isinstance(bot_id, str):
            scope.bot(bot_id)  # the account's, or 404
    return _save(scope, "pools", {**body, "id": pool_id})


def _broadcast_doc(summary: broadcasts.Summary) -> dict[str, Any]:
    return summary.as_dict()


@authorized
async def broadcast_list(request: Request, scope: Scope) -> Response:
    wanted = request.query_params.get("bot")
    bot_ids = [scope.bot(wanted).id] if wanted else scope.bot_ids()
    return JSONResponse([_broadcast_doc(b) for bid in bot_ids for b in broadcasts.summaries(bot_id=bid)])


@authorized
async def broadcast_preview(request: Request, scope: Scope) -> Response:
    bot = scope.bot(request.query_params.get("bot", ""))
    segment = request.query_params.get("segment", "all")
    try:
        broadcasts.parse_segment(segment)
    except broadcasts.BroadcastError as exc:
        return error(422, str(exc).split(": ", 1)[-1], key="segment")
    return JSONResponse({"reach": broadcasts.preview(bot.id, segment)})


@authorized
async def create_broadcast(request: Request, scope: Scope) -> Response:
    """{"bot", "segment", "text", "media_url"?, "offer"?, "at"? (ISO-8601; without a zone, the
    sellers' REPORT_TIMEZONE)} → 201 {"id"}."""
    body = await _body(request)
    if isinstance(body, Response):
        return body
    bot = scope.bot(str(body.get("bot", "")))
    try:
        at = at_of(str(body.get("at") or ""))
        row = broadcasts.create(bot, str(body.get("segment", "all")), str(body.get("text", "")),
                                media_url=body.get("media_url") or None, offer=body.get("offer") or None,
                                at=at)  # fmt: skip
    except broadcasts.BroadcastError as exc:
        option, _, problem = str(exc).partition(": ")
        return error(422, problem, key=OPTION_FIELDS.get(option, option.lstrip("-")))
    except ValueError:
        return error(422, "an ISO-8601 date and time such as 2026-12-24T18:00", key="at")
    audit.record("broadcast created", account=scope.account, actor=_actor(scope), obj=f"broadcast {row.id}",
                 after={"bot": bot.id, "segment": row.segment, "starts_at": row.starts_at.isoformat()})  # fmt: skip
    return JSONResponse({"id": row.id}, status_code=201)


@authorized
async def broadcast(request: Request, scope: Scope) -> Response:
    row = scope.broadcast(request.path_params["broadcast_id"])
    return JSONResponse(_broadcast_doc(broadcasts.summaries(broadcast_id=row.id)[0]))


@authorized
async def stop_broadcast(request: Request, scope: Scope) -> Response:
    row = scope.broadcast(request.path_params["broadcast_id"])
    stopped = broadcasts.stop(row.id)
    if stopped:
        audit.record("broadcast stopped", account=scope.account, actor=_actor(scope), obj=f"broadcast {row.id}")
    return JSONResponse({"id": row.id, "stopped": stopped})


@authorized
async def upload(request: Request, scope: Scope) -> Response:
    """The raw body (an image or video) kept by the platform: {"media_url": "media:..."} to put
    where a media_url goes."""
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > media.LIMITS["mp4"]:
            break
    try:
        ref = await run_in_threadpool(media.store, data)
    except media.MediaError as exc:
        return error(422, str(exc), key="body")
    return JSONResponse({"media_url": ref}, status_code=201)


@authorized
async def send_purchase_again(request: Request, scope: Scope) -> Response:
    raw = request.path_params["charge_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(raw)
    scope.lead_of_charge(int(raw))
    charge = Charge.get_by_id(int(raw))
    queued = pixel.send_purchase_again(scope.bot(charge.bot_id), charge)
    audit.record("purchase sent again", account=scope.account, actor=_actor(scope), obj=f"charge {charge.id}",
                 after={"events": queued})  # fmt: skip
    return JSONResponse({"queued": queued})


ROUTES = [
    Route("/api/v1/gateways", gateways, methods=["GET"]),
    Route("/api/v1/gateways/{gateway_id}", gateway, methods=["GET", "PUT"]),
    Route("/api/v1/gateways/{gateway_id}/test", test_gateway, methods=["POST"]),
    Route("/api/v1/bots", create_bot, methods=["POST"]),
    Route("/api/v1/pools", pools, methods=["GET"]),
    Route("/api/v1/pools/{pool_id}", pool, methods=["GET", "PUT"]),
    Route("/api/v1/broadcasts", broadcast_list, methods=["GET"]),
    Route("/api/v1/broadcasts", create_broadcast, methods=["POST"]),
    Route("/api/v1/broadcasts/preview", broadcast_preview, methods=["GET"]),
    Route("/api/v1/broadcasts/{broadcast_id}", broadcast, methods=["GET"]),
    Route("/api/v1/broadcasts/{broadcast_id}/stop", stop_broadcast, methods=["POST"]),
    Route("/api/v1/media", upload, methods=["POST"]),
    Route("/api/v1/charges/{charge_id}/purchase", send_purchase_again, methods=["POST"]),
]
