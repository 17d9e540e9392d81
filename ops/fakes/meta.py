"""A fake Meta Graph API (Conversions API only) on 127.0.0.1, for end-to-end tests, benchmarks
and local demos.

    python -m ops.fakes.meta --port 8082     # then META_GRAPH_BASE=http://127.0.0.1:8082

`POST /{version}/{pixel_id}/events?access_token=...` answers as Meta does (`events_received`,
`fbtrace_id`), refusing what Meta refuses outright (no events, more than 1000, an event older
than 7 days, a website event without a user agent) with Meta's 400 shape. It records every
request with the time it arrived, and can be told to fail:
    GET  /_calls?since=N    the requests recorded from index N on (pixel, token, body, at)
    POST /_config           {"errors": [500, 400]}  (used up in order, one per request)
    POST /_reset            forget requests and config"""

from __future__ import annotations

import itertools
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ops.fakes import log_routes, serve

MAX_AGE_SECONDS = 7 * 24 * 3600


class FakeMeta:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.errors: list[int] = []
        self._traces = itertools.count(1)


def meta_error(status: int, message: str, code: int = 100) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "fake"}}, status
    )


def invalid(body: Any) -> str | None:
    """What Meta would refuse the whole request for, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list) or not body["data"]:
        return "The parameter data is required"
    if len(body["data"]) > 1000:
        return "Batch size cannot exceed 1000 events"
    now = time.time()
    for event in body["data"]:
        if not isinstance(event, dict) or not event.get("event_name") or not isinstance(event.get("event_time"), int):
            return "Invalid parameter: event_name and event_time are required"
        if now - event["event_time"] > MAX_AGE_SECONDS:
            return "Invalid parameter: event_time is too far in the past"
        if event.get("action_source") == "website" and not (event.get("user_data") or {}).get("client_user_agent"):
            return "Invalid parameter: client_user_agent is required for website events"
    return None


def create_app(fake: FakeMeta | None = None) -> Starlette:
    fake = fake or FakeMeta()

    async def events(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        fake.calls.append(
            {
                "version": request.path_params["version"],
                "pixel_id": request.path_params["pixel_id"],
                "access_token": request.query_params.get("access_token"),
                "body": body,
                "at": time.time(),
            }
        )
        if fake.errors:
            status = fake.errors.pop(0)
            return meta_error(status, "An unexpected error has occurred. Please retry your request later.", 2)
        if not request.query_params.get("access_token"):
            return meta_error(400, "An access token is required to request this resource.", 104)
        problem = invalid(body)
        if problem:
            return meta_error(400, problem)
        return JSONResponse({"events_received": len(body["data"]), "messages": [],
                             "fbtrace_id": f"fake-trace-{next(fake._traces)}"})  # fmt: skip

    async def configure(request: Request) -> Response:
        body = await request.json()
        fake.errors = [int(code) for code in body.get("errors", [])]
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/{version}/{pixel_id}/events", events, methods=["POST"]),
            Route("/_config", configure, methods=["POST"]),
            *log_routes(fake),
        ]
    )


def main() -> None:
    serve(create_app, __doc__, default_port=8082)


if __name__ == "__main__":
    main()
