"""Gateway to Evolution API v2 (WhatsApp through an unofficial client) and `EvolutionChannel`, one
Evolution instance (one WhatsApp number) as a chat channel (DOMAIN "Evolution API").

Outbound: `POST {evolution_url}/message/sendText/{instance}` and `/message/sendMedia/{instance}`,
header `apikey`. Choices are a numbered list (buttons are unreliable on unofficial clients): the buyer
answers `1`, `2`... A PIX code is a text whose whole body is the code, then the QR image.

Errors: connection refused / timeouts before the request left → ChannelTransient; no answer after it
left → ChannelMaybeSent; "Connection Closed" / "not connected" → ChannelDisconnected (the number's
sends wait for it); 401/403/404 (apikey or instance refused) → ChannelPermanent, reported to
`on_refused` (the bot's health); a number that is not on WhatsApp → ChannelBlocked. The apikey
and buyers' numbers never reach an error's text."""

from __future__ import annotations

import base64
import hmac
import logging
import mimetypes
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlparse

import httpx

from gateways import media
from gateways.channel import (
    ChannelBlocked,
    ChannelDisconnected,
    ChannelKind,
    ChannelPermanent,
    ChannelRetryAfter,
    ChannelTransient,
    Header,
    Inbound,
    Malformed,
    Message,
    Person,
    Request,
    keyed,
    sent_or_not,
    update_id_of,
)
from gateways.http import pooled_client
from gateways.text import is_video
from gateways.whatsapp import CAPTION_LIMIT, TEXT_LIMIT, click_token, number_of, numbered, pieces, plain_text, scrub

log = logging.getLogger(__name__)

DISCONNECTED = ("connection closed", "not connected", "connection lost", "disconnected")
REFUSED = (401, 403, 404)


def default_client(timeout: float = 15.0) -> httpx.Client:
    return pooled_client(timeout, max_connections=100)


def _description(response: httpx.Response) -> str:
    """Evolution's error message ({"response": {"message": [...]}}), scrubbed of numbers."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    inner = body.get("response") if isinstance(body, dict) else None
    message = inner.get("message") if isinstance(inner, dict) else None
    if isinstance(message, list):
        if any(isinstance(m, dict) and m.get("exists") is False for m in message):
            return "number is not on WhatsApp"
        message = "; ".join(str(m) for m in message if isinstance(m, str)) or None
    if not message and isinstance(body, dict):
        message = body.get("error") or body.get("message")
    return scrub(message or f"HTTP {response.status_code}")


class EvolutionGateway:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def request(self, base_url: str, method: str, path: str, apikey: str, body: dict[str, Any] | None = None) -> Any:
        """One call; returns Evolution's JSON answer or raises a ChannelError (`path` names it)."""
        label = path.split("/", 2)[1] if path.count("/") >= 2 else path
        url = f"{base_url.rstrip('/')}{path}"
        with sent_or_not(label):
            response = self.client.request(method, url, json=body, headers={"apikey": apikey})
        if response.status_code < 300:
            try:
                return response.json()
            except ValueError:
                return None
        description = _description(response)
        if any(marker in description.lower() for marker in DISCONNECTED):
            raise ChannelDisconnected(label, description, status=response.status_code)
        if response.status_code == 429:
            raise ChannelRetryAfter(label, description, float(response.headers.get("retry-after") or 60))
        if response.status_code >= 500:
            raise ChannelTransient(label, description, status=response.status_code)
        if description == "number is not on WhatsApp":
            raise ChannelBlocked(label, description, status=response.status_code)
        raise ChannelPermanent(label, description, status=response.status_code)

    def set_webhook(self, base_url: str, instance: str, apikey: str, url: str, secret: str) -> Any:
        body = {"webhook": {"enabled": True, "url": url, "headers": {"Authorization": f"Bearer {secret}"},
                            "byEvents": False, "base64": False,
                            "events": ["MESSAGES_UPSERT", "CONNECTION_UPDATE"]}}  # fmt: skip
        return self.request(base_url, "POST", f"/webhook/set/{quote(instance, safe='')}", apikey, body)

    def connection_state(self, base_url: str, instance: str, apikey: str) -> str | None:
        answer = self.request(base_url, "GET", f"/instance/connectionState/{quote(instance, safe='')}", apikey)
        inner = answer.get("instance") if isinstance(answer, dict) else None
        state = (inner or answer or {}).get("state") if isinstance(inner or answer, dict) else None
        return str(state) if state is not None else None


class EvolutionChannel:
    kind = "evolution"
    retry_delays_ms: tuple[int, ...] = (60_000, 120_000, 240_000)
    first_message_starts = True
    service_window = False

    def __init__(self, gateway: EvolutionGateway, bot_id: str, base_url: str, instance: str, apikey: str, *,
                 rate: tuple[int, int] = (10, 60_000), typing_ms: int = 0,
                 on_refused: Callable[[str, int, str], None] | None = None) -> None:  # fmt: skip
        self.gateway, self.bot_id, self.base_url = gateway, bot_id, base_url
        self.instance, self.apikey, self.rate, self.typing_ms = instance, apikey, rate, typing_ms
        self.on_refused = on_refused
        self._path = quote(instance, safe="")

    def __repr__(self) -> str:  # never print the apikey
        return f"EvolutionChannel(bot_id={self.bot_id!r}, instance={self.instance!r})"

    def render(self, key: str, chat_id: int, message: Message) -> list[Request]:
        number = str(chat_id)
        text = numbered(plain_text(message), message)
        menu = tuple(c.data for c in message.choices) or None
        parts: list[tuple[str, dict[str, Any]]] = []
        body: dict[str, Any]
        if message.media_url:
            field = "video" if is_video(message.media_url) else "photo"
            captioned = bool(text) and len(text) <= CAPTION_LIMIT
            mimetype = mimetypes.guess_type(urlparse(message.media_url).path)[0]
            body = {"number": number, "mediatype": "video" if field == "video" else "image",
                    "mimetype": mimetype or ("video/mp4" if field == "video" else "image/jpeg"),
                    "media": message.media_url, **({"caption": text} if captioned else {})}  # fmt: skip
            parts.append(("media", {"method": "sendMedia", "params": body, "menu": menu if captioned else None}))
            if captioned:
                text = ""
        texts = pieces(text)
        for i, piece in enumerate(texts):
            body = {"number": number, "text": piece, "linkPreview": message.link_preview}
            if self.typing_ms:
                body["delay"] = self.typing_ms
            parts.append((f"text:{i}", {"method": "sendText", "params": body,
                                        "menu": menu if i == len(texts) - 1 else None}))  # fmt: skip
        if message.code:
            parts.append(("code", {"method": "sendText", "params": {"number": number, "text": message.code}}))
        if message.image is not None:
            name, data, mimetype = message.image
            body = {"number": number, "mediatype": "image", "mimetype": mimetype, "fileName": name,
                    "media": base64.b64encode(data).decode()}  # fmt: skip
            parts.append(("qr", {"method": "sendMedia", "params": body}))
        return [Request(k, **spec) for k, spec in keyed(key, parts)]

    def answer(self, key: str, chat_id: int, callback_id: str | None, text: str | None) -> list[Request]:
        if not text:
            return []
        return [Request(key, "sendText", {"number": str(chat_id), "text": text})]

    def call(self, request: Request, chat_id: int) -> Any:
        params = request.params
        if media.is_ref(params.get("media")):  # a stored upload goes inline, as base64
            try:
                name, data, mimetype = media.load(str(params["media"]))
            except media.MediaError as exc:
                raise ChannelPermanent(request.method, str(exc)) from None
            params = {**params, "media": base64.b64encode(data).decode(), "mimetype": mimetype, "fileName": name}
        try:
            return self.gateway.request(self.base_url, "POST", f"/message/{request.method}/{self._path}", self.apikey,
                                        params)  # fmt: skip
        except ChannelDisconnected as exc:  # unhealthy until a check (or Evolution's own update) finds it open
            if self.on_refused is not None:
                self.on_refused(self.bot_id, 0, f"disconnected: {exc.description}")
            raise
        except ChannelPermanent as exc:
            if exc.status in REFUSED and not isinstance(exc, ChannelBlocked) and self.on_refused is not None:
                self.on_refused(self.bot_id, exc.status or 0, exc.description)
            raise

    def message_id(self, result: Any) -> int | None:
        return None  # Evolution's ids are strings (key.id): kept as provider_id

    def provider_id(self, result: Any) -> str | None:
        key = result.get("key") if isinstance(result, dict) else None
        value = key.get("id") if isinstance(key, dict) else None
        return str(value)[:128] if value else None

    def probe(self) -> bool | None:
        try:
            state = self.gateway.connection_state(self.base_url, self.instance, self.apikey)
        except ChannelPermanent:
            return False
        except ChannelTransient:
            return None
        return state == "open"

    def set_webhook(self, url: str, secret: str) -> str:
        self.gateway.set_webhook(self.base_url, self.instance, self.apikey, url, secret)
        return f"webhook set to {url}"

    def inbound(self, body: dict[str, Any]) -> list[Inbound]:
        return parse_event(body)


def _text_of(message: Any) -> tuple[str | None, str | None]:
    """(text, picked choice's data) of an Evolution message object."""
    if not isinstance(message, dict):
        return None, None
    if isinstance(message.get("conversation"), str):
        return message["conversation"], None
    for kind, field in (("extendedTextMessage", "text"), ("imageMessage", "caption"), ("videoMessage", "caption")):
        inner = message.get(kind)
        if isinstance(inner, dict) and isinstance(inner.get(field), str):
            return inner[field], None
    buttons = message.get("buttonsResponseMessage")
    if isinstance(buttons, dict) and isinstance(buttons.get("selectedButtonId"), str):
        return buttons.get("selectedDisplayText"), buttons["selectedButtonId"]
    listed = message.get("listResponseMessage")
    reply = listed.get("singleSelectReply") if isinstance(listed, dict) else None
    if isinstance(reply, dict) and isinstance(reply.get("selectedRowId"), str):
        return listed.get("title"), reply["selectedRowId"]  # type: ignore[union-attr]
    return None, None


def _ctwa(data: dict[str, Any]) -> str | None:
    """A Click-to-WhatsApp ad's click id, wherever this Evolution version put the ad's context."""
    message: dict[str, Any] = data["message"] if isinstance(data.get("message"), dict) else {}
    contexts = [data.get("contextInfo")]
    for inner in message.values():
        if isinstance(inner, dict):
            contexts.append(inner.get("contextInfo"))
    for context in contexts:
        ad = context.get("externalAdReply") if isinstance(context, dict) else None
        clid = ad.get("ctwaClid") if isinstance(ad, dict) else None
        if isinstance(clid, str) and 0 < len(clid) <= 512:
            return clid
    return None


def parse_event(body: dict[str, Any]) -> list[Inbound]:
    """Evolution's webhook body as router events: each message a buyer sent (ours, groups and
    anything else are skipped); a connection update as kind `connection` (data: its state)."""
    event = str(body.get("event") or "").lower().replace("_", ".")
    data = body.get("data")
    if event == "connection.update":
        state = data.get("state") if isinstance(data, dict) else None
        return [Inbound(0, "connection", data=str(state))] if isinstance(state, str) else []
    if event != "messages.upsert":
        return []
    events = []
    for item in data if isinstance(data, list) else [data]:
        if not isinstance(item, dict) or not isinstance(item.get("key"), dict):
            raise Malformed("message without its key")
        key = item["key"]
        if key.get("fromMe") is True:
            continue
        jid = key.get("remoteJid")
        if isinstance(jid, str) and jid.endswith("@lid"):  # a linked id, not a number: its number is beside it
            jid = key.get("remoteJidAlt") or key.get("senderPn") or jid
        number = number_of(jid)
        message_id = key.get("id")
        if number is None:
            continue  # a group, a broadcast list, a status (or a linked id without its number)
        if not isinstance(message_id, str) or not 0 < len(message_id) <= 256:
            raise Malformed("message id missing or too long")
        text, data_picked = _text_of(item.get("message"))
        name = item.get("pushName")
        person = Person(number, str(name)[:255] if isinstance(name, str) else "")
        kind = "callback" if data_picked else "message"
        events.append(Inbound(update_id_of(message_id), kind, person, number, text=text,
                              payload=click_token(text), data=data_picked, ctwa_clid=_ctwa(item)))  # fmt: skip
    return events


def _bearer_ok(secrets: Mapping[str, Any], header: Header, body: bytes) -> bool:
    """`Authorization: Bearer <the bot's webhook_secret>`, which `set_webhook` gave Evolution."""
    expected = str(secrets.get("webhook_secret") or "").encode()
    return bool(expected) and hmac.compare_digest(header(b"authorization") or b"", b"Bearer " + expected)


KIND = ChannelKind(
    "evolution",
    route="whatsapp",
    keys={"webhook_secret": True, "evolution_url": True, "instance": True, "apikey": True},
    rate_per_minute=10,  # the seed system's figure for an unofficial number
    text_limit=TEXT_LIMIT,
    authentic=_bearer_ok,
    parse=lambda body, secrets: parse_event(body),
    forward=("event", "instance", "data"),  # not its apikey, nor the server's URL
    unauthentic="bad or missing bearer secret",
)
