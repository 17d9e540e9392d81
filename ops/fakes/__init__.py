"""Fakes of the outside services (Telegram Bot API, Meta Graph API) on 127.0.0.1, for end-to-end
tests, benchmarks and local demos."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from starlette.applications import Starlette


def serve(create_app: Callable[[], Starlette], doc: str | None, *, default_port: int) -> None:
    """Run a fake's app on 127.0.0.1 (`--host`, `--port`), quietly."""
    import uvicorn

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning", access_log=False)
