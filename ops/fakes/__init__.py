"""Fakes of the outside services (Telegram Bot API, Meta Graph API) on 127.0.0.1, for end-to-end
tests, benchmarks and local demos."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class Recording(Protocol):
    calls: list[dict[str, Any]]

    def reset(self) -> None: ...


def log_routes(fake: Recording) -> list[Route]:
    """What every fake offers its tests: `GET /_calls?since=N` (the calls recorded from index N on)
    and `POST /_reset` (forget calls and configuration)."""

    async def calls(request: Request) -> Response:
        since = int(request.query_params.get("since", "0"))
        return JSONResponse(fake.calls[since:])

    async def reset(request: Request) -> Response:
        fake.reset()
        return JSONResponse({"ok": True})

    return [Route("/_calls", calls, methods=["GET"]), Route("/_reset", reset, methods=["POST"])]


def serve(create_app: Callable[[], Starlette], doc: str | None, *, default_port: int) -> None:
    """Run a fake's app on 127.0.0.1 (`--host`, `--port`), quietly."""
    import uvicorn

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning", access_log=False)
