"""`python -m dash`: serve the dashboard on DASH_HOST:DASH_PORT (the Procfile's `dash`). Refuses
to start without DASH_PASSWORD, on any address."""

from __future__ import annotations

import sys

import uvicorn

import settings
import telemetry
from dash.app import refuse_reason


def main() -> None:
    telemetry.setup_logging()
    reason = refuse_reason(settings.DASH_HOST, settings.DASH_PASSWORD)
    if reason:
        sys.exit(f"dash: {reason}")
    # X-Forwarded-For is read by the app, believed only from TRUSTED_PROXIES (as the edge does).
    uvicorn.run("dash.app:app", host=settings.DASH_HOST, port=settings.DASH_PORT, log_level="warning",
                access_log=False, proxy_headers=False)  # fmt: skip


if __name__ == "__main__":
    main()
