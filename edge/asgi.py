"""The ASGI application uvicorn serves: `uvicorn edge.asgi:app`."""

import telemetry
from edge.app import create_app

telemetry.setup_logging()
app = create_app()
