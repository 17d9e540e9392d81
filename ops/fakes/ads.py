"""A fake of TikTok's Events API and Utmify's orders API on 127.0.0.1 (one server, their own paths),
for end-to-end tests and local demos:

    python -m ops.fakes.ads --port 8083   # then TIKTOK_API_BASE=UTMIFY_API_BASE=http://127.0.0.1:8083

    POST /open_api/v1.3/event/track/   TikTok: {"code": 0, "message": "OK"} (40001 without Access-Token)
    POST /api-credentials/orders       Utmify: 200 {"OK": true} (401 without x-api-token)
    GET  /_calls?since=N               the calls recorded: {"api", "headers", "body", "at"}
    POST /_config                      {"fail_for": {"utmify": seconds}}: answer 500 that long from now
    POST /_reset                       forget calls and config"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ops.fakes import log_routes, serve


class FakeAds:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.failing_until: dict[str, float] = {}

    async def record(self, api: str, request: Request) -> Response | None:
        body = json.loads(await request.body() or b"{}")
        headers = {k: v for k, v in request.headers.items() if k in ("access-token", "x-api-token")}
        self.calls.append({"api": api, "headers": headers, "body": body, "at": time.time()})
        if time.time() < self.failing_until.get(api, 0):
            return JSONResponse({"message": "Internal Server Error"}, status_code=500)
        return None


def create_app(fake: FakeAds | None = None) -> Starlette:
    fake = fake or FakeAds()

    async def tiktok(request: Request) -> Response:
        failure = await fake.record("tiktok", request)
        if failure is not None:
            return failure
        if not request.headers.get("access-token"):
            return JSONResponse({"code": 40001, "message": "Access token is missing"})
        return JSONResponse({"code": 0, "message": "OK", "request_id": f"req-{len(fake.calls)}", "data": {}})

    async def utmify(request: Request) -> Response:
        failure = await fake.record("utmify", request)
        if failure is not None:
            return failure
        if not request.headers.get("x-api-token"):
            return JSONResponse({"message": "API_CREDENTIAL_NOT_FOUND"}, status_code=401)
        return JSONResponse({"OK": True})

    async def configure(request: Request) -> Response:
        body = await request.json()
        for api, seconds in (body.get("fail_for") or {}).items():
            fake.failing_until[api] = time.time() + float(seconds)
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/open_api/v1.3/event/track/", tiktok, methods=["POST"]),
            Route("/api-credentials/orders", utmify, methods=["POST"]),
            Route("/_config", configure, methods=["POST"]),
            *log_routes(fake),
        ]
    )


def main() -> None:
    serve(create_app, __doc__, default_port=8083)


if __name__ == "__main__":
    main()
