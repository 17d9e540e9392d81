"""Gateway to the Telegram Bot API: `{TELEGRAM_API_BASE}/bot{token}/{method}`, JSON in and out.

`TelegramChannel` is Telegram as a chat channel (gateways/channel.py): it renders messages into
Bot API calls and reads updates into the router's `Inbound` events.

Errors, translated at this boundary (the channel's errors under Telegram's names):

    TelegramError
    ├── TelegramTransient        retry with backoff: network errors, timeouts, 5xx
    │   ├── TelegramRetryAfter   429: wait `retry_after` seconds, then send again (not a failure)
    │   └── TelegramMaybeSent    the request left but no answer came: Telegram may have acted on it
    └── TelegramPermanent        never retried: 400 (description kept), 401, 404, ...
        └── TelegramBlocked      403: the user blocked the bot, or it was kicked from the chat

No message carries the token: it is part of the URL, so httpx's own errors are not re-raised
with their text."""

from __future__ import annotations

import hmac
import html as _html
import json
import re
from collections.abc import Callable
from typing import Any

import httpx

from gateways import media
from gateways.channel import (
    CODE_SLOT,
    ChannelBlocked,
    ChannelError,
    ChannelKind,
    ChannelMaybeSent,
    ChannelPermanent,
    ChannelRetryAfter,
    ChannelTransient,
    Inbound,
    JoinRequest,
    Malformed,
    MemberJoined,
    Message,
    Person,
    Request,
    keyed,
    sent_or_not,
    usable_event_id,
)
from gateways.http import pooled_client
from gateways.text import is_video, split_text, utf16_length

# Telegram's errors are the channel's (gateways/channel.py): the names stay for readers of this module.
TelegramError = ChannelError
TelegramTransient = ChannelTransient
TelegramRetryAfter = ChannelRetryAfter
TelegramMaybeSent = ChannelMaybeSent
TelegramPermanent = ChannelPermanent
TelegramBlocked = ChannelBlocked


def default_client(timeout: float = 10.0) -> httpx.Client:
    """One pooled client per process for the Bot API."""
    return pooled_client(timeout, max_connections=200)


# Statuses with which Telegram refuses a bot's token (revoked, or the bot deleted).
TOKEN_REFUSED = (401, 404)


class TelegramGateway:
    def __init__(self, client: httpx.Client, base_url: str,
                 on_token_refused: Callable[[str, int, str], None] | None = None) -> None:  # fmt: skip
        """`on_token_refused(token, status, description)` is called when any call is answered
        401/404 (the bot's health for redirect pools), before the error is raised."""
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.on_token_refused = on_token_refused

    def call(
        self, token: str, method: str, params: dict[str, Any], files: dict[str, tuple[str, bytes, str]] | None = None
    ) -> Any:
        """POST one Bot API method; returns its `result` or raises a TelegramError. With `files`
        (field → (file name, bytes, content type)) the call is multipart: what a photo upload needs."""
        url = f"{self.base_url}/bot{token}/{method}"
        with sent_or_not(method):
            if files:
                form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
                response = self.client.post(url, data=form, files=files)
            else:
                response = self.client.post(url, json=params)
        try:
            return self._result(method, response)
        except TelegramPermanent as exc:
            if exc.status in TOKEN_REFUSED and self.on_token_refused is not None:
                self.on_token_refused(token, exc.status, exc.description)
            raise

    @staticmethod
    def _result(method: str, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            if response.status_code >= 500 or response.status_code == 429:
                raise TelegramTransient(method, f"HTTP {response.status_code}", status=response.status_code)
            raise TelegramPermanent(
                method, f"HTTP {response.status_code} without a JSON body", status=response.status_code
            )
        if body.get("ok") is True and response.status_code < 400:
            return body.get("result")
        code = int(body.get("error_code") or response.status_code)
        description = str(body.get("description") or f"HTTP {code}")[:500]
        if code == 429:
            parameters = body.get("parameters") or {}
            retry_after = parameters.get("retry_after") if isinstance(parameters, dict) else None
            try:
                seconds = float(retry_after) if retry_after is not None else 1.0
            except (TypeError, ValueError):
                seconds = 1.0
            raise TelegramRetryAfter(method, description, max(seconds, 0.0))
        if code >= 500:
            raise TelegramTransient(method, description, status=code)
        if code == 403:
            raise TelegramBlocked(method, description, status=code)
        raise TelegramPermanent(method, description, status=code)

    def set_webhook(self, token: str, url: str, secret_token: str, allowed_updates: list[str]) -> Any:
        return self.call(
            token,
            "setWebhook",
            {
                "url": url,
                "secret_token": secret_token,
                "allowed_updates": allowed_updates,
                "max_connections": 100,
            },
        )


# --- Telegram as a chat channel -------------------------------------------------------------------

CAPTION_LIMIT = 1024
TEXT_LIMIT = 4096  # a message's text, in UTF-16 code units
COPY_TEXT_LIMIT = 256  # Bot API 7.11 CopyTextButton
FILE_IDS = "grimbots:tg:file_id:{bot_id}"
INT64 = 2**63


def media_method(url: str) -> tuple[str, str]:
    """(Bot API method, its media parameter) for a media URL: .mp4 is a video, anything else a photo."""
    return ("sendVideo", "video") if is_video(url) else ("sendPhoto", "photo")


def file_id_of(result: Any) -> str | None:
    """The reusable file_id in a sendPhoto/sendVideo result (the largest photo size)."""
    if not isinstance(result, dict):
        return None
    if isinstance(result.get("video"), dict):
        return result["video"].get("file_id")  # type: ignore[no-any-return]
    photos = result.get("photo")
    if isinstance(photos, list) and photos and isinstance(photos[-1], dict):
        return photos[-1].get("file_id")  # type: ignore[no-any-return]
    return None


class TelegramChannel:
    """One Telegram bot as a chat channel: choices are inline buttons, a PIX code a tap-to-copy block
    (and a copy button), media reused by the file_id Telegram gave back."""

    kind = "telegram"
    retry_delays_ms: tuple[int, ...] = ()
    first_message_starts = False
    service_window = False

    def __init__(self, gateway: TelegramGateway, bot_id: str, token: str, *, rate: tuple[int, int] = (30, 1000),
                 cache: Any = None) -> None:  # fmt: skip
        self.gateway, self.bot_id, self.token, self.rate, self.cache = gateway, bot_id, token, rate, cache

    def __repr__(self) -> str:  # never print the token
        return f"TelegramChannel(bot_id={self.bot_id!r})"

    # --- Membership: its groups and channels (gateways.channel.Membership) ---

    def invite_link(self, key: str, chat_id: int, *, name: str, expire_date: int, by_request: bool) -> Request:
        params: dict[str, Any] = {"chat_id": chat_id, "name": name[:32], "expire_date": expire_date}
        if by_request:
            params["creates_join_request"] = True  # Telegram refuses member_limit with it
        else:
            params["member_limit"] = 1
        return Request(key, "createChatInviteLink", params, throttled=False)

    def link_of(self, result: Any) -> str:
        return str(result["invite_link"])

    def revoke_link(self, key: str, chat_id: int, link: str) -> Request:
        return Request(key, "revokeChatInviteLink", {"chat_id": chat_id, "invite_link": link}, throttled=False)

    def remove_member(self, key: str, chat_id: int, user_id: int) -> list[Request]:
        """Ban, then unban only if banned: out now, free to come back through a new link."""
        member = {"chat_id": chat_id, "user_id": user_id}
        return [Request(f"{key}:ban", "banChatMember", member, throttled=False),
                Request(f"{key}:unban", "unbanChatMember", {**member, "only_if_banned": True},
                        throttled=False)]  # fmt: skip

    def answer_join(self, key: str, chat_id: int, user_id: int, *, approve: bool) -> Request:
        method = "approveChatJoinRequest" if approve else "declineChatJoinRequest"
        return Request(key, method, {"chat_id": chat_id, "user_id": user_id}, throttled=False)

    def _keyboard(self, message: Message) -> dict[str, Any] | None:
        rows: list[list[dict[str, Any]]] = [[{"text": c.label, "callback_data": c.data}] for c in message.choices]
        if message.copy_label and message.code and len(message.code) <= COPY_TEXT_LIMIT:
            rows.append([{"text": message.copy_label, "copy_text": {"text": message.code}}])
        return {"inline_keyboard": rows} if rows else None

    def _media(self, message: Message) -> tuple[str, str, Any, dict[str, Any] | None, Callable[[Any], None] | None]:
        """(method, field, value, fallback value, on_result) of the message's media."""
        if message.image is not None:
            return "sendPhoto", "photo", None, None, None
        url = message.media_url or ""
        method, field = media_method(url)
        if not message.reuse_media or self.cache is None or media.is_ref(url):  # an upload: resolved by call
            return method, field, url, None, None
        key = FILE_IDS.format(bot_id=self.bot_id)
        raw = self.cache.hget(key, url)
        cached = raw.decode() if isinstance(raw, bytes) else raw

        def remember(result: Any) -> None:
            file_id = file_id_of(result)
            if file_id:
                self.cache.hset(key, url, file_id)

        return method, field, cached or url, ({field: url} if cached else None), remember

    def render(self, key: str, chat_id: int, message: Message) -> list[Request]:
        keyboard = self._keyboard(message)
        html = message.code is not None
        text = message.text.strip()
        if html:  # the seller's text, escaped, with the code in a tap-to-copy block
            escaped = _html.escape(text, quote=False)
            text = escaped.replace(CODE_SLOT, f"<code>{_html.escape(message.code or '', quote=False)}</code>")
        extra: dict[str, Any] = {"allow_paid_broadcast": True} if message.paid else {}
        if html:
            extra["parse_mode"] = "HTML"
        parts: list[tuple[str, dict[str, Any]]] = []
        if message.image is not None or message.media_url:
            method, field, value, fallback, remember = self._media(message)
            params: dict[str, Any] = {"chat_id": chat_id, **({} if value is None else {field: value})}
            captioned = bool(text) and utf16_length(text) <= CAPTION_LIMIT
            if captioned:
                params.update(caption=text, **extra)
            elif message.paid:
                params["allow_paid_broadcast"] = True
            if keyboard and (captioned or not text):
                params["reply_markup"] = keyboard
            spec = {"method": method, "params": params, "on_result": remember,
                    "files": {"photo": message.image} if message.image is not None else None,
                    "fallback": {**params, **fallback} if fallback else None}  # fmt: skip
            parts.append(("qr" if message.image is not None else "media", spec))
            if captioned or not text:
                text = ""
        pieces = [text] if html and text else split_text(text, TEXT_LIMIT)
        for i, piece in enumerate(pieces):
            params = {"chat_id": chat_id, "text": piece, **extra}
            if not message.link_preview:
                params["link_preview_options"] = {"is_disabled": True}
            if keyboard and i == len(pieces) - 1:
                params["reply_markup"] = keyboard
            parts.append((f"text:{i}", {"method": "sendMessage", "params": params}))
        return [Request(k, **spec) for k, spec in keyed(key, parts)]

    def answer(self, key: str, chat_id: int, callback_id: str | None, text: str | None) -> list[Request]:
        if callback_id is None:
            return []
        params: dict[str, Any] = {"callback_query_id": callback_id}
        if text:
            params["text"] = text
        return [Request(key, "answerCallbackQuery", params, throttled=False)]

    def call(self, request: Request, chat_id: int) -> Any:
        field = next((f for f in ("photo", "video") if media.is_ref(request.params.get(f))), None)
        if field is None:
            return self.gateway.call(self.token, request.method, request.params, request.files)
        return self._call_with_upload(request, field)

    def _call_with_upload(self, request: Request, field: str) -> Any:
        """A stored upload (media:...): by the file_id Telegram gave back for it, else uploaded (and
        its file_id kept). A file_id Telegram refuses is forgotten and the file uploaded again."""
        ref = str(request.params[field])
        key = FILE_IDS.format(bot_id=self.bot_id)
        raw = self.cache.hget(key, ref) if self.cache is not None else None
        cached = raw.decode() if isinstance(raw, bytes) else raw
        if cached:
            try:
                return self.gateway.call(self.token, request.method, {**request.params, field: cached})
            except TelegramPermanent:
                self.cache.hdel(key, ref)
        try:
            upload = media.load(ref)
        except media.MediaError as exc:
            raise TelegramPermanent(request.method, str(exc)) from None
        params = {k: v for k, v in request.params.items() if k != field}
        result = self.gateway.call(self.token, request.method, params, {field: upload})
        file_id = file_id_of(result)
        if file_id and self.cache is not None:
            self.cache.hset(key, ref, file_id)
        return result

    def message_id(self, result: Any) -> int | None:
        value = result.get("message_id") if isinstance(result, dict) else None
        return value if isinstance(value, int) else None

    def provider_id(self, result: Any) -> str | None:
        return None  # a sent message's fate is known from the answer

    def probe(self) -> bool | None:
        try:
            self.gateway.call(self.token, "getMe", {})
        except TelegramPermanent as exc:
            return False if exc.status in TOKEN_REFUSED else None
        except TelegramTransient:
            return None
        return True

    def inbound(self, update: dict[str, Any]) -> list[Inbound]:
        return [parse_update(update)]

    def set_webhook(self, url: str, secret: str) -> str:
        self.gateway.set_webhook(self.token, url, secret, ALLOWED_UPDATES)
        return f"webhook set to {url}"


# The updates a bot's webhook asks for: chat_member and chat_join_request are not sent unless asked.
ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member", "chat_member", "chat_join_request"]
SECRET_HEADER = b"x-telegram-bot-api-secret-token"


def secret_ok(expected: bytes, given: bytes | None) -> bool:
    """The `X-Telegram-Bot-Api-Secret-Token` of a webhook call against the bot's, in constant time."""
    return bool(expected) and given is not None and hmac.compare_digest(given, expected)


KIND = ChannelKind(
    "telegram",
    route="telegram",
    keys={"token": True, "username": True, "webhook_secret": True},
    rate_per_minute=None,
    text_limit=TEXT_LIMIT,
    authentic=lambda secrets, header, body: secret_ok(str(secrets.get("webhook_secret") or "").encode(),
                                                     header(SECRET_HEADER)),
    parse=lambda body, secrets: [parse_update(body)],
    unauthentic="bad or missing secret token",
)  # fmt: skip


# --- updates in ------------------------------------------------------------------------------------

START = re.compile(r"^/start(?:@\w+)?(?:\s+(?P<payload>\S+))?\s*$")
PAYLOAD = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def telegram_id(value: Any) -> int:
    """A Telegram user or chat id: an integer that fits the database's BIGINT."""
    if not isinstance(value, int) or isinstance(value, bool) or not -INT64 < value < INT64:
        raise Malformed("id is not a 64-bit integer")
    return value


def classify(update: dict[str, Any]) -> str:
    message = update.get("message")
    if isinstance(message, dict):
        if (message.get("chat") or {}).get("type") != "private" or not isinstance(message.get("from"), dict):
            return "other"
        text = message.get("text")
        if isinstance(text, str) and START.match(text.strip()):
            return "start"
        return "message"
    if isinstance(update.get("callback_query"), dict):
        return "callback"
    if isinstance(update.get("chat_join_request"), dict):
        return "join_request"
    if isinstance(update.get("chat_member"), dict):
        return "chat_member"
    member = update.get("my_chat_member")
    if isinstance(member, dict) and (member.get("chat") or {}).get("type") == "private":
        status = (member.get("new_chat_member") or {}).get("status")
        if status == "kicked":
            return "block"
        if status == "member":
            return "unblock"
    return "other"


def start_payload(text: str) -> str | None:
    match = START.match(text.strip())
    payload = match.group("payload") if match else None
    return payload if payload and PAYLOAD.match(payload) else None


def callback_chat(query: dict[str, Any]) -> int:
    message = query.get("message")
    chat = message.get("chat") if isinstance(message, dict) else None
    chat_id = chat.get("id") if isinstance(chat, dict) else None
    return telegram_id(chat_id or query["from"]["id"])


def _person(user: Any, kind: str) -> Person:
    if not isinstance(user, dict):
        raise Malformed(f"{kind} update without its sender")
    return Person(
        telegram_id(user.get("id")),
        str(user.get("first_name") or "")[:255],
        str(user["last_name"])[:255] if user.get("last_name") else None,
        str(user["username"])[:64] if user.get("username") else None,
        str(user["language_code"])[:16] if user.get("language_code") else None,
    )


def parse_update(update: dict[str, Any]) -> Inbound:
    """A Telegram update as the router's event; raises Malformed for one that can never be processed."""
    update_id = update.get("update_id")
    if not usable_event_id(update_id):
        raise Malformed("update_id is not a positive 64-bit integer")
    kind = classify(update)
    try:
        if kind in ("start", "message"):
            message = update["message"]
            text = message.get("text") if isinstance(message.get("text"), str) else None
            payload = start_payload(text or "") if kind == "start" else None
            return Inbound(update_id, kind, _person(message["from"], kind), telegram_id(message["chat"]["id"]),
                           text=text, payload=payload, raw=update)  # fmt: skip
        if kind == "callback":
            query = update["callback_query"]
            if not isinstance(query.get("id"), str):
                raise Malformed("callback_query without its id")
            data = query.get("data") if isinstance(query.get("data"), str) else None
            return Inbound(update_id, kind, _person(query["from"], kind), callback_chat(query), data=data,
                           callback_id=query["id"], raw=update)  # fmt: skip
        if kind in ("block", "unblock"):
            member = update["my_chat_member"]
            return Inbound(update_id, kind, _person(member["from"], kind), telegram_id(member["chat"]["id"]),
                           raw=update)  # fmt: skip
        if kind == "join_request":
            request = update["chat_join_request"]
            asked = JoinRequest(telegram_id(request["chat"]["id"]), telegram_id(request["from"]["id"]),
                                int(request.get("date") or 0))  # fmt: skip
            return Inbound(update_id, kind, member=asked, raw=update)
        if kind == "chat_member":
            change = update["chat_member"]
            new = change.get("new_chat_member") or {}
            link = (change.get("invite_link") or {}).get("invite_link")
            joined = MemberJoined(telegram_id(change["chat"]["id"]), int((new.get("user") or {}).get("id") or 0),
                                  str(new.get("status") or ""), link if isinstance(link, str) else None)  # fmt: skip
            return Inbound(update_id, kind, member=joined, raw=update)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Malformed(f"{kind} update without its sender or chat") from exc
    return Inbound(update_id, kind, raw=update)
