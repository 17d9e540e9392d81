"""Gateway to the WhatsApp Cloud API (Meta's official one) and `CloudChannel`, one business number as
a chat channel (DOMAIN "WhatsApp Cloud API").

Outbound: `POST {META_GRAPH_BASE}/{version}/{phone_number_id}/messages`, `Authorization: Bearer`.
Choices are reply buttons (≤ 3; titles the label cut to 20 characters) or a list (4–10); more than
that, a numbered list. A PIX code is a text whose whole body is the code, then the QR image (uploaded
to `/{phone_number_id}/media` first). Free-form messages go only within 24 h of the buyer's last
message: outside it the send is refused here, before any request (ChannelPermanent, recorded).

Inbound: the `messages` webhook, signed `X-Hub-Signature-256: sha256=<HMAC-SHA256(raw body, app secret)>`
(checked at the edge), read into router events; of the statuses, only `failed` ones (an event of
kind `status`: the wamid, Meta's error code and title), the rest skipped."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from gateways import media
from gateways.channel import (
    ChannelBlocked,
    ChannelKind,
    ChannelPermanent,
    ChannelRetryAfter,
    ChannelTransient,
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

SESSION_WINDOW = dt.timedelta(hours=24)
MEDIA_IDS = "grimbots:wa:media_id:{bot_id}"  # a stored upload's Cloud media id, and when it was made
MEDIA_ID_DAYS = 25  # Meta keeps an uploaded media 30 days
BUTTON_TITLE = 20
ROW_TITLE = 24
MAX_BUTTONS = 3
MAX_ROWS = 10
BODY_LIMIT = 1024  # an interactive message's body
# Error codes (Graph API): refused for good / try later.
RATE_LIMITED = (4, 80007, 130429, 131048, 131056)
UNDELIVERABLE = (131026,)  # not on WhatsApp, or cannot receive this message
TOKEN_REFUSED = (190,)
OUTSIDE_WINDOW = "outside the 24-hour customer service window"


TEMPLATE_PARAMETER_LIMIT = 1024


def template_parameter(text: str) -> str:
    """A text as a template's body parameter: Meta refuses new lines, tabs and more than four spaces
    in a row there, so lines are joined with " · " and runs of spaces shortened."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return " · ".join(line for line in lines if line)[:TEMPLATE_PARAMETER_LIMIT]


def default_client(timeout: float = 15.0) -> httpx.Client:
    return pooled_client(timeout, max_connections=100)


def signature_ok(app_secret: bytes, body: bytes, header: bytes | None) -> bool:
    """`X-Hub-Signature-256: sha256=<hex>` over the raw body, compared in constant time."""
    if not header or not header.startswith(b"sha256="):
        return False
    expected = hmac.new(app_secret, body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(header[7:].lower(), expected)


class CloudGateway:
    def __init__(self, client: httpx.Client, base_url: str, version: str) -> None:
        self.client, self.base_url, self.version = client, base_url.rstrip("/"), version

    def request(self, method: str, path: str, token: str, *, json: Any = None, data: Any = None,
                files: Any = None) -> Any:  # fmt: skip
        label = path.rsplit("/", 1)[-1]
        url = f"{self.base_url}/{self.version}/{path}"
        headers = {"Authorization": f"Bearer {token}"}
        with sent_or_not(label):
            response = self.client.request(method, url, json=json, data=data, files=files, headers=headers)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code < 300:
            return body
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        code = error.get("code") if isinstance(error.get("code"), int) else None
        description = scrub(f"({code}) {error.get('message')}" if code else f"HTTP {response.status_code}")
        if code in RATE_LIMITED or response.status_code == 429:
            raise ChannelRetryAfter(label, description, 60.0 if code != 131056 else 5.0)
        if response.status_code >= 500 or code in (1, 2, 131000):
            raise ChannelTransient(label, description, status=response.status_code)
        if code in UNDELIVERABLE:
            raise ChannelBlocked(label, description, status=response.status_code)
        status = 401 if code in TOKEN_REFUSED else response.status_code
        raise ChannelPermanent(label, description, status=status)


class CloudChannel:
    kind = "whatsapp_cloud"
    retry_delays_ms: tuple[int, ...] = (60_000, 120_000, 240_000)
    first_message_starts = True
    service_window = True

    def __init__(self, gateway: CloudGateway, bot_id: str, phone_number_id: str, access_token: str, *,
                 rate: tuple[int, int] = (80 * 60, 60_000), menu_button: str = "Opções",
                 last_message_at: Callable[[int], dt.datetime | None] | None = None,
                 now: Callable[[], dt.datetime] | None = None,
                 on_refused: Callable[[str, int, str], None] | None = None,
                 access_template: tuple[str, str] | None = None, cache: Any = None) -> None:  # fmt: skip
        """`access_template`: (name, language) of the seller's approved template that carries a
        delivery as its one body parameter, for buyers outside the 24-hour window."""
        self.gateway, self.bot_id, self.phone_number_id = gateway, bot_id, phone_number_id
        self.access_template = access_template
        self.access_token, self.rate, self.menu_button = access_token, rate, menu_button
        self.last_message_at, self.on_refused = last_message_at, on_refused
        self.now = now or (lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None))
        self.cache = cache  # Redis: the media ids of stored uploads

    def __repr__(self) -> str:  # never print the access token
        return f"CloudChannel(bot_id={self.bot_id!r})"

    def _interactive(self, to: str, text: str, message: Message) -> dict[str, Any]:
        body = {"text": text or "…"}
        if len(message.choices) <= MAX_BUTTONS:
            buttons = [{"type": "reply", "reply": {"id": c.data, "title": c.label[:BUTTON_TITLE]}}
                       for c in message.choices]  # fmt: skip
            interactive = {"type": "button", "body": body, "action": {"buttons": buttons}}
        else:
            rows = [{"id": c.data, "title": c.label[:ROW_TITLE], **({"description": c.label[:72]}
                     if len(c.label) > ROW_TITLE else {})} for c in message.choices]  # fmt: skip
            action = {"button": self.menu_button[:BUTTON_TITLE], "sections": [{"rows": rows}]}
            interactive = {"type": "list", "body": body, "action": action}
        return {"messaging_product": "whatsapp", "to": to, "type": "interactive", "interactive": interactive}

    def render(self, key: str, chat_id: int, message: Message) -> list[Request]:
        to = str(chat_id)
        choices = message.choices
        interactive = 0 < len(choices) <= MAX_ROWS
        text = plain_text(message) if interactive else numbered(plain_text(message), message)
        menu = tuple(c.data for c in choices) or None
        parts: list[tuple[str, dict[str, Any]]] = []
        if message.media_url:
            field = "video" if is_video(message.media_url) else "image"
            media: dict[str, Any] = {"link": message.media_url}
            captioned = bool(text) and len(text) <= CAPTION_LIMIT and not interactive
            if captioned:
                media["caption"] = text
                text = ""
            body = {"messaging_product": "whatsapp", "to": to, "type": field, field: media}
            parts.append(("media", {"method": "messages", "params": body, "menu": menu if captioned else None}))
        texts = pieces(text) if text else []
        if interactive and (not texts or len(texts[-1]) > BODY_LIMIT):
            texts.append("")  # the choices go in a message of their own
        for i, piece in enumerate(texts):
            last = i == len(texts) - 1
            if last and interactive:
                body = self._interactive(to, piece, message)
            else:
                body = {"messaging_product": "whatsapp", "to": to, "type": "text",
                        "text": {"body": piece, "preview_url": message.link_preview}}  # fmt: skip
            spec: dict[str, Any] = {"method": "messages", "params": body, "menu": menu if last else None}
            if message.access and piece:
                spec["template_text"] = template_parameter(piece)
            parts.append((f"text:{i}", spec))
        if message.code:
            body = {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": message.code}}
            parts.append(("code", {"method": "messages", "params": body}))
        if message.image is not None:
            body = {"messaging_product": "whatsapp", "to": to, "type": "image", "image": {}}
            parts.append(("qr", {"method": "messages", "params": body, "files": {"file": message.image}}))
        return [Request(k, **spec) for k, spec in keyed(key, parts)]

    def _template(self, to: str, text: str) -> dict[str, Any]:
        """The delivery as the seller's approved access template (outside the 24-hour window)."""
        assert self.access_template is not None
        name, language = self.access_template
        parameters = [{"type": "text", "text": text}]
        return {"messaging_product": "whatsapp", "to": to, "type": "template",
                "template": {"name": name, "language": {"code": language},
                             "components": [{"type": "body", "parameters": parameters}]}}  # fmt: skip

    def answer(self, key: str, chat_id: int, callback_id: str | None, text: str | None) -> list[Request]:
        if not text:
            return []
        body = {"messaging_product": "whatsapp", "to": str(chat_id), "type": "text", "text": {"body": text}}
        return [Request(key, "messages", body)]

    def _window_open(self, chat_id: int) -> bool:
        last = self.last_message_at(chat_id) if self.last_message_at is not None else None
        return last is not None and self.now() - last < SESSION_WINDOW

    def call(self, request: Request, chat_id: int) -> Any:
        params = request.params
        if request.free_form and not self._window_open(chat_id):
            if request.template_text is None or self.access_template is None:
                raise ChannelPermanent(request.method, OUTSIDE_WINDOW)
            params = self._template(str(chat_id), request.template_text)
        try:
            if request.files:
                params = {**params, "image": {"id": self._upload(request.files["file"])}}
            field = str(params.get("type") or "")
            stored = params.get(field) if field in ("image", "video") else None
            if isinstance(stored, dict) and media.is_ref(stored.get("link")):
                params = {**params, field: self._stored_media(str(stored["link"]), stored)}
            return self.gateway.request("POST", f"{self.phone_number_id}/messages", self.access_token, json=params)
        except ChannelPermanent as exc:
            if exc.status == 401 and self.on_refused is not None:
                self.on_refused(self.bot_id, 401, exc.description)
            raise

    def _upload(self, file: tuple[str, bytes, str]) -> str:
        name, data, mimetype = file
        uploaded = self.gateway.request("POST", f"{self.phone_number_id}/media", self.access_token,
                                        data={"messaging_product": "whatsapp", "type": mimetype},
                                        files={"file": (name, data, mimetype)})  # fmt: skip
        media_id = uploaded.get("id") if isinstance(uploaded, dict) else None
        if not isinstance(media_id, str):
            raise ChannelTransient("media", "upload answered without an id")
        return media_id

    def _stored_media(self, ref: str, given: dict[str, Any]) -> dict[str, Any]:
        """A stored upload as the Cloud API's media object: its media id (uploaded once per number;
        Meta keeps an id 30 days, so one older than MEDIA_ID_DAYS is uploaded again)."""
        key = MEDIA_IDS.format(bot_id=self.bot_id)
        raw = self.cache.hget(key, ref) if self.cache is not None else None
        media_id, _, at = (raw.decode() if isinstance(raw, bytes) else raw or "").partition("|")
        if not media_id or not at.isdigit() or time.time() - int(at) > MEDIA_ID_DAYS * 86400:
            try:
                media_id = self._upload(media.load(ref))
            except media.MediaError as exc:
                raise ChannelPermanent("media", str(exc)) from None
            if self.cache is not None:
                self.cache.hset(key, ref, f"{media_id}|{int(time.time())}")
        return {**{k: v for k, v in given.items() if k != "link"}, "id": media_id}

    def message_id(self, result: Any) -> int | None:
        return None  # wamid strings: kept as provider_id

    def provider_id(self, result: Any) -> str | None:
        messages = result.get("messages") if isinstance(result, dict) else None
        first = messages[0] if isinstance(messages, list) and messages else None
        value = first.get("id") if isinstance(first, dict) else None
        return str(value)[:128] if value else None

    def probe(self) -> bool | None:
        try:
            self.gateway.request("GET", self.phone_number_id, self.access_token)
        except ChannelPermanent:
            return False
        except ChannelTransient:
            return None
        return True

    def inbound(self, body: dict[str, Any]) -> list[Inbound]:
        return parse_webhook(body, self.phone_number_id)

    def set_webhook(self, url: str, secret: str) -> str:
        return (f"WhatsApp Cloud: subscribe {url} (verify token from the config) to the messages field "
                "in Meta's app dashboard")  # fmt: skip


def _message_event(message: dict[str, Any], names: dict[str, str]) -> Inbound | None:
    number = number_of(message.get("from"))
    message_id = message.get("id")
    if number is None:
        return None
    if not isinstance(message_id, str) or not 0 < len(message_id) <= 256:
        raise Malformed("message id missing or too long")
    text: str | None = None
    picked: str | None = None
    kind = message.get("type")
    if kind == "text" and isinstance(message.get("text"), dict):
        text = message["text"].get("body") if isinstance(message["text"].get("body"), str) else None
    elif kind == "interactive" and isinstance(message.get("interactive"), dict):
        reply = message["interactive"].get("button_reply") or message["interactive"].get("list_reply")
        if isinstance(reply, dict) and isinstance(reply.get("id"), str):
            picked, text = reply["id"], reply.get("title") if isinstance(reply.get("title"), str) else None
    elif kind == "button" and isinstance(message.get("button"), dict):  # a template's quick reply
        payload = message["button"].get("payload")
        picked = payload if isinstance(payload, str) else None
    referral = message.get("referral")
    clid = referral.get("ctwa_clid") if isinstance(referral, dict) else None
    person = Person(number, names.get(str(message.get("from")), "")[:255])
    return Inbound(update_id_of(message_id), "callback" if picked else "message", person, number, text=text,
                   payload=click_token(text), data=picked,
                   ctwa_clid=clid if isinstance(clid, str) and 0 < len(clid) <= 512 else None)  # fmt: skip


def parse_webhook(body: dict[str, Any], phone_number_id: str) -> list[Inbound]:
    """The `messages` webhook's messages to this number as router events, and its `failed` statuses
    (other statuses and other fields skipped). Meta posts every number of an app to one callback: a
    change for another number (`metadata.phone_number_id`) is not this bot's, and is skipped."""
    events: list[Inbound] = []
    entries = body.get("entry")
    for entry in entries if isinstance(entries, list) else []:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        for change in changes if isinstance(changes, list) else []:
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict) or change.get("field") != "messages":
                continue
            metadata = value.get("metadata")
            number_id = str(metadata.get("phone_number_id")) if isinstance(metadata, dict) else None
            if number_id != phone_number_id:
                log.info("whatsapp change for another number ignored phone_number_id=%s", (number_id or "")[:32])
                continue
            names = {}
            for contact in value.get("contacts") or []:
                if isinstance(contact, dict) and isinstance(contact.get("profile"), dict):
                    names[str(contact.get("wa_id"))] = str(contact["profile"].get("name") or "")
            for message in value.get("messages") or []:
                if not isinstance(message, dict):
                    raise Malformed("message is not an object")
                event = _message_event(message, names)
                if event is not None:
                    events.append(event)
            events += [failed for status in value.get("statuses") or [] if (failed := _failed(status)) is not None]
    return events


def _failed(status: Any) -> Inbound | None:
    """A `failed` status of a message we sent: kind `status`, `data` its wamid, `raw` Meta's first
    error's code and title (None for the other statuses: sent, delivered, read)."""
    if not isinstance(status, dict) or status.get("status") != "failed" or not status.get("id"):
        return None
    wamid = str(status["id"])[:128]
    errors = status.get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    code = first.get("code")
    title = str(first.get("title") or first.get("message") or "failed")[:200]
    return Inbound(update_id_of(f"failed:{wamid}"), "status", data=wamid,
                   raw={"code": code if isinstance(code, int) else None, "title": title})  # fmt: skip


KIND = ChannelKind(
    "whatsapp_cloud",
    route="whatsapp",
    keys={"phone_number_id": True, "waba_id": True, "access_token": True, "app_secret": True, "verify_token": True,
          "access_template": False, "access_template_language": False},
    rate_per_minute=4800,  # Meta's default throughput, ~80 messages a second
    text_limit=TEXT_LIMIT,
    authentic=lambda secrets, header, body: signature_ok(str(secrets.get("app_secret") or "").encode(), body,
                                                         header(b"x-hub-signature-256")),
    parse=lambda body, secrets: parse_webhook(body, str(secrets.get("phone_number_id") or "")),
)  # fmt: skip
