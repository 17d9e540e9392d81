"""python -m panel: the seller panel on PANEL_HOST:PANEL_PORT."""

import uvicorn

import settings
import telemetry
from panel.app import make_app

if __name__ == "__main__":
    telemetry.init_sentry()
    uvicorn.run(make_app(), host=settings.PANEL_HOST, port=settings.PANEL_PORT, log_level="warning",
                proxy_headers=False)  # fmt: skip
