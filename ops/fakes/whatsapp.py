"""A fake WhatsApp on 127.0.0.1 — Evolution API v2 and the WhatsApp Cloud API in one server — for
end-to-end tests, benchmarks and trying a WhatsApp funnel offline.

    python -m ops.fakes.whatsapp --port 8083
    # Evolution bots: evolution_url = "http://127.0.0.1:8083"
    # Cloud bots: META_GRAPH_BASE=http://127.0.0.1:8083 (the fake Meta's place: run one or the other)

Evolution: POST /message/sendText/{instance}, /message/sendMedia/{instance}, /webhook/set/{instance}
(the webhook is remembered, with its headers), GET /instance/connectionState/{instance}; header
`apikey` checked against /_config "apikeys" when given. Cloud: POST /{version}/{phone_number_id}/messages
and /media, GET /{version}/{phone_number_id}; `Authorization: Bearer` checked against "tokens".

Each send is recorded with the time it arrived; a "delay" (Evolution's typing delay) is honoured.
    GET  /_calls?since=N   the calls recorded from index N on
    POST /_config          {"delay": s, "errors": {"sendText": [500, 400]}, "disconnected": ["loja1"],
                            "not_on_whatsapp": ["5511..."], "apikeys": {"loja1": "KEY"},
                            "tokens": {"1234": "TOKEN"}, "cloud_webhooks": {"1234": {"url", "app_secret"}},
                            "honour_delay": true}
    POST /_say             a buyer writes: {"instance": "loja1" | "phone_number_id": "1234", "from": "5511...",
                            "text": "oi", "button": "buy:1", "name": "Ana", "ctwa_clid": "...", "id": "..."}:
                            the fake posts it to the bot's webhook as Evolution or the Cloud API would
                            (Cloud: also to the other webhooks of numbers with the same app secret,
                            as one Meta app's single callback receives every number's changes)
    POST /_reset           forget calls and configuration (webhooks included)"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import uuid
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ops.fakes import log_routes, serve


class FakeWhatsApp:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.delay = 0.0
        self.honour_delay = True
        self.errors: dict[str, list[int]] = {}
        self.disconnected: set[str] = set()
        self.not_on_whatsapp: set[str] = set()
        self.apikeys: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.webhooks: dict[str, dict[str, Any]] = {}  # instance → {url, headers}
        self.cloud_webhooks: dict[str, dict[str, str]] = {}  # phone_number_id → {url, app_secret}
        self._ids = itertools.count(1)

    def error(self, method: str) -> int | None:
        queued = self.errors.get(method)
        return queued.pop(0) if queued else None


def _evolution_error(status: int, message: Any) -> JSONResponse:
    return JSONResponse({"status": status, "error": "Error", "response": {"message": message}}, status_code=status)


def _cloud_error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "OAuthException", "code": code}}, status_code=status)


def create_app(fake: FakeWhatsApp | None = None) -> Starlette:
    fake = fake or FakeWhatsApp()
    http = httpx.AsyncClient(timeout=10)

    async def three(request: Request) -> Response:
        """/{a}/{b}/{c}: Cloud's /{version}/{phone_number_id}/{messages|media}, else Evolution's."""
        first, second, third = (request.path_params[k] for k in ("a", "b", "c"))
        if first[:1] == "v" and first[1:2].isdigit():
            return await cloud(request, first, second, third)
        return await evolution(request, first, second, third)

    async def two(request: Request) -> Response:
        return await cloud(request, request.path_params["a"], request.path_params["b"], None)

    async def evolution(request: Request, kind: str, method: str, instance: str) -> Response:
        body = json.loads(await request.body() or b"{}") if request.method == "POST" else {}
        expected = fake.apikeys.get(instance)
        if expected is not None and request.headers.get("apikey") != expected:
            return _evolution_error(401, "Unauthorized")
        if kind == "webhook" and method == "set":
            fake.webhooks[instance] = body.get("webhook") or {}
            return JSONResponse({"webhook": {"instanceName": instance, **fake.webhooks[instance]}}, status_code=201)
        if kind == "instance" and method == "connectionState":
            state = "close" if instance in fake.disconnected else "open"
            return JSONResponse({"instance": {"instanceName": instance, "state": state}})
        if kind != "message" or method not in ("sendText", "sendMedia"):
            return _evolution_error(404, f"Cannot {request.method} {request.url.path}")
        media = body.pop("media", None)
        if isinstance(media, str) and not media.startswith("http"):
            body["media"] = {"sha256": hashlib.sha256(media.encode()).hexdigest(), "size": len(media)}
        elif media is not None:
            body["media"] = media
        call = {"kind": "evolution", "instance": instance, "method": method, "params": body, "at": time.time()}
        fake.calls.append(call)
        if fake.delay:
            await asyncio.sleep(fake.delay)
        if fake.honour_delay and isinstance(body.get("delay"), int) and body["delay"] > 0:
            await asyncio.sleep(min(body["delay"], 5000) / 1000)
        if instance in fake.disconnected:
            return _evolution_error(500, ["Error: Connection Closed"])
        status = fake.error(method)
        if status is not None:
            return _evolution_error(status, ["Internal error" if status >= 500 else "Bad Request"])
        if str(body.get("number")) in fake.not_on_whatsapp:
            return _evolution_error(400, [{"exists": False, "jid": f"{body.get('number')}@s.whatsapp.net"}])
        message_id = f"3EB0{next(fake._ids):012X}"
        key = {"remoteJid": f"{body.get('number')}@s.whatsapp.net", "fromMe": True, "id": message_id}
        return JSONResponse({"key": key, "status": "PENDING", "messageTimestamp": int(time.time())}, status_code=201)

    async def cloud(request: Request, version: str, number_id: str, edge: str | None) -> Response:
        expected = fake.tokens.get(number_id)
        if expected is not None and request.headers.get("authorization") != f"Bearer {expected}":
            return _cloud_error(401, 190, "Invalid OAuth access token")
        if request.method == "GET" and edge is None:
            return JSONResponse({"id": number_id, "display_phone_number": "+55 11 99999-9999"})
        if edge == "media":
            async with request.form() as form:
                upload = form.get("file")
                data = await upload.read() if upload is not None and not isinstance(upload, str) else b""
            media_id = f"media-{next(fake._ids)}"
            fake.calls.append({"kind": "cloud", "phone_number_id": number_id, "method": "media", "version": version,
                               "params": {"sha256": hashlib.sha256(data).hexdigest(), "id": media_id},
                               "at": time.time()})  # fmt: skip
            return JSONResponse({"id": media_id})
        body = json.loads(await request.body() or b"{}")
        fake.calls.append({"kind": "cloud", "phone_number_id": number_id, "method": "messages", "version": version,
                           "params": body, "at": time.time()})  # fmt: skip
        if fake.delay:
            await asyncio.sleep(fake.delay)
        status = fake.error("messages")
        if status == 429:
            return _cloud_error(429, 130429, "Rate limit hit")
        if status is not None:
            return _cloud_error(status, 131000 if status >= 500 else 100, "Something went wrong")
        if str(body.get("to")) in fake.not_on_whatsapp:
            return _cloud_error(400, 131026, "Message undeliverable")
        wamid = f"wamid.{uuid.uuid4().hex}"
        return JSONResponse({"messaging_product": "whatsapp", "contacts": [{"input": body.get("to"),
                             "wa_id": body.get("to")}], "messages": [{"id": wamid}]})  # fmt: skip

    async def configure(request: Request) -> Response:
        body = await request.json()
        fake.delay = float(body.get("delay", fake.delay))
        fake.honour_delay = bool(body.get("honour_delay", fake.honour_delay))
        if "errors" in body:
            fake.errors = {k: list(v) for k, v in body["errors"].items()}
        for name in ("disconnected", "not_on_whatsapp"):
            if name in body:
                setattr(fake, name, {str(v) for v in body[name]})
        for name in ("apikeys", "tokens", "cloud_webhooks"):
            if name in body:
                getattr(fake, name).update(body[name])
        return JSONResponse({"ok": True})

    async def say(request: Request) -> Response:
        """A buyer's message, delivered to the bot's webhook the way its provider would."""
        body = await request.json()
        number, message_id = str(body["from"]), str(body.get("id") or f"M{uuid.uuid4().hex[:20].upper()}")
        if "instance" in body:
            hook = fake.webhooks.get(str(body["instance"]))
            if not hook:
                return JSONResponse({"error": "no webhook set for this instance"}, status_code=409)
            message: dict[str, Any] = {"conversation": body.get("text", "")}
            if body.get("button"):
                message = {"buttonsResponseMessage": {"selectedButtonId": body["button"],
                                                      "selectedDisplayText": body.get("text", "")}}  # fmt: skip
            data: dict[str, Any] = {"key": {"remoteJid": f"{number}@s.whatsapp.net", "fromMe": False, "id": message_id},
                                    "pushName": body.get("name", ""), "message": message, "messageType": "conversation",
                                    "messageTimestamp": int(time.time())}  # fmt: skip
            if body.get("ctwa_clid"):
                data["contextInfo"] = {"externalAdReply": {"ctwaClid": body["ctwa_clid"], "sourceId": "ad-1"}}
            payload = {"event": "messages.upsert", "instance": body["instance"], "data": data,
                       "apikey": "EVOLUTION-APIKEY-NEVER-LOGGED"}  # fmt: skip
            raw = json.dumps(payload).encode()
            headers = {**(hook.get("headers") or {}), "content-type": "application/json"}
            response = await http.post(hook["url"], content=raw, headers=headers)
        else:
            number_id = str(body["phone_number_id"])
            hook = fake.cloud_webhooks.get(number_id)
            if not hook:
                return JSONResponse({"error": "no webhook configured for this number"}, status_code=409)
            msg: dict[str, Any] = {"from": number, "id": message_id, "timestamp": str(int(time.time())), "type": "text",
                                   "text": {"body": body.get("text", "")}}  # fmt: skip
            if body.get("button"):
                msg = {**msg, "type": "interactive", "interactive": {"type": "button_reply", "button_reply": {
                    "id": body["button"], "title": body.get("text", "")}}}  # fmt: skip
                msg.pop("text")
            if body.get("ctwa_clid"):
                msg["referral"] = {"source_type": "ad", "source_id": "ad-1", "ctwa_clid": body["ctwa_clid"]}
            contacts = [{"wa_id": number, "profile": {"name": body.get("name", "")}}]
            value = {"messaging_product": "whatsapp", "metadata": {"phone_number_id": number_id},
                     "contacts": contacts, "messages": [msg]}  # fmt: skip
            payload = {"object": "whatsapp_business_account",
                       "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]}  # fmt: skip
            raw = json.dumps(payload).encode()
            signature = hmac.new(hook["app_secret"].encode(), raw, hashlib.sha256).hexdigest()
            headers = {"x-hub-signature-256": f"sha256={signature}", "content-type": "application/json"}
            response = await http.post(hook["url"], content=raw, headers=headers)
            # One Meta app has one callback for all its numbers: the numbers of the same app (same
            # app secret) whose webhook is elsewhere get this number's changes too.
            for other, elsewhere in fake.cloud_webhooks.items():
                if (
                    other != number_id
                    and elsewhere["app_secret"] == hook["app_secret"]
                    and elsewhere["url"] != hook["url"]
                ):
                    await http.post(elsewhere["url"], content=raw, headers=headers)
        return JSONResponse({"id": message_id, "status": response.status_code})

    return Starlette(
        routes=[
            Route("/_config", configure, methods=["POST"]),
            Route("/_say", say, methods=["POST"]),
            *log_routes(fake),
            Route("/{a:str}/{b:str}/{c:str}", three, methods=["POST", "GET"]),
            Route("/{a:str}/{b:str}", two, methods=["GET"]),
        ]
    )


def main() -> None:
    serve(create_app, __doc__, default_port=8083)


if __name__ == "__main__":
    main()
