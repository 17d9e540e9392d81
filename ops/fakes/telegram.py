"""A fake Telegram Bot API server on 127.0.0.1, for end-to-end tests, benchmarks and local demos.

    python -m ops.fakes.telegram --port 8081     # then TELEGRAM_API_BASE=http://127.0.0.1:8081

It answers every method the platform calls the way Telegram does, records each call (with the
time it arrived), and can be told to answer slowly or with errors:
    GET  /_calls?since=N    the calls recorded from index N on
    GET  /_stats            how many calls so far, and how many are being held by the delay now
    POST /_config           {"delay": seconds, "errors": {"sendMessage": [429, 500]}}  (errors are used up in order)
                            "blocked_chats": [chat ids]  (every send to them: 403, the user blocked the bot)
                            "refused_tokens": [tokens]   (every call with them: 401, a revoked token)
    POST /_reset            forget calls and config"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ops.fakes import log_routes, serve


class FakeTelegram:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.delay = 0.0
        self.errors: dict[str, list[int]] = {}
        self.in_flight = 0
        self.blocked_chats: set[int] = set()
        self.refused_tokens: set[str] = set()
        self._ids = itertools.count(1)

    def result(self, method: str, params: dict[str, Any]) -> Any:
        message_id = next(self._ids)
        chat = {"id": params.get("chat_id"), "type": "private"}
        if method == "sendPhoto":
            return {
                "message_id": message_id,
                "chat": chat,
                "date": int(time.time()),
                "photo": [{"file_id": f"photo-small-{message_id}"}, {"file_id": f"photo-{message_id}"}],
            }
        if method == "sendVideo":
            return {
                "message_id": message_id,
                "chat": chat,
                "date": int(time.time()),
                "video": {"file_id": f"video-{message_id}"},
            }
        if method.startswith("send") or method == "copyMessage":
            return {"message_id": message_id, "chat": chat, "date": int(time.time()), "text": params.get("text")}
        if method == "createChatInviteLink":
            return {"invite_link": f"https://t.me/+fake{message_id}", "member_limit": params.get("member_limit")}
        if method == "getMe":
            return {"id": 1, "is_bot": True, "username": "fake_bot"}
        return True

    def error(self, method: str) -> JSONResponse | None:
        queued = self.errors.get(method)
        if not queued:
            return None
        code = queued.pop(0)
        descriptions = {
            400: "Bad Request: wrong file identifier/HTTP URL specified",
            403: "Forbidden: bot was blocked by the user",
            429: "Too Many Requests: retry after 1",
            500: "Internal Server Error",
        }
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": descriptions.get(code, "error")}
        if code == 429:
            body["parameters"] = {"retry_after": 1}
        return JSONResponse(body, status_code=code)


async def multipart_params(request: Request) -> dict[str, Any]:
    """A multipart call's fields as Telegram reads them (JSON-encoded values decoded); an uploaded
    file is recorded by name, size and SHA-256 so tests can compare it with what they expect."""
    params: dict[str, Any] = {}
    async with request.form() as form:
        for name, value in form.multi_items():
            if isinstance(value, str):
                try:
                    params[name] = json.loads(value) if value[:1] in "{[" else value
                except ValueError:
                    params[name] = value
            else:
                data = await value.read()
                params[name] = {"upload": value.filename, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return params


def _chat(params: dict[str, Any]) -> int | None:
    try:
        return int(params.get("chat_id"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def create_app(fake: FakeTelegram | None = None) -> Starlette:
    fake = fake or FakeTelegram()

    async def bot_method(request: Request) -> Response:
        token, method = request.path_params["token"], request.path_params["method"]
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            params = await multipart_params(request)
        else:
            raw = await request.body()
            params = json.loads(raw) if raw else dict(request.query_params)
        fake.calls.append({"token": token, "method": method, "params": params, "at": time.time()})
        if fake.delay:
            fake.in_flight += 1
            try:
                await asyncio.sleep(fake.delay)
            finally:
                fake.in_flight -= 1
        if token in fake.refused_tokens:
            return JSONResponse({"ok": False, "error_code": 401, "description": "Unauthorized"}, status_code=401)
        if method.startswith("send") and _chat(params) in fake.blocked_chats:
            body = {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}
            return JSONResponse(body, status_code=403)
        failure = fake.error(method)
        if failure is not None:
            return failure
        return JSONResponse({"ok": True, "result": fake.result(method, params)})

    async def stats(request: Request) -> Response:
        return JSONResponse({"calls": len(fake.calls), "in_flight": fake.in_flight})

    async def configure(request: Request) -> Response:
        body = await request.json()
        fake.delay = float(body.get("delay", fake.delay))
        if "errors" in body:
            fake.errors = {k: list(v) for k, v in body["errors"].items()}
        if "blocked_chats" in body:
            fake.blocked_chats = {int(c) for c in body["blocked_chats"]}
        if "refused_tokens" in body:
            fake.refused_tokens = set(body["refused_tokens"])
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/bot{token}/{method}", bot_method, methods=["POST", "GET"]),
            Route("/_stats", stats, methods=["GET"]),
            Route("/_config", configure, methods=["POST"]),
            *log_routes(fake),
        ]
    )


def main() -> None:
    serve(create_app, __doc__, default_port=8081)


if __name__ == "__main__":
    main()
