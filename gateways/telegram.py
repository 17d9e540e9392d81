"""Gateway to the Telegram Bot API: `{TELEGRAM_API_BASE}/bot{token}/{method}`, JSON in and out.

Errors, translated at this boundary:

    TelegramError
    ├── TelegramTransient        retry with backoff: network errors, timeouts, 5xx
    │   ├── TelegramRetryAfter   429: wait `retry_after` seconds, then send again (not a failure)
    │   └── TelegramMaybeSent    the request left but no answer came: Telegram may have acted on it
    └── TelegramPermanent        never retried: 400 (description kept), 401, 404, ...
        └── TelegramBlocked      403: the user blocked the bot, or it was kicked from the chat

No message carries the token: it is part of the URL, so httpx's own errors are not re-raised
with their text."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from gateways.http import pooled_client


class TelegramError(Exception):
    def __init__(self, method: str, description: str, *, status: int | None = None) -> None:
        super().__init__(f"{method}: {description}")
        self.method = method
        self.description = description
        self.status = status


class TelegramTransient(TelegramError):
    pass


class TelegramRetryAfter(TelegramTransient):
    def __init__(self, method: str, description: str, retry_after: float) -> None:
        super().__init__(method, description, status=429)
        self.retry_after = retry_after


class TelegramMaybeSent(TelegramTransient):
    pass


class TelegramPermanent(TelegramError):
    pass


class TelegramBlocked(TelegramPermanent):
    pass


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
        try:
            if files:
                form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
                response = self.client.post(url, data=form, files=files)
            else:
                response = self.client.post(url, json=params)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # The request never reached Telegram.
            raise TelegramTransient(method, f"connection failed ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TelegramMaybeSent(method, f"no answer ({type(exc).__name__})") from None
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
