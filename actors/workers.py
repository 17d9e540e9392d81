"""What a worker process loads: `dramatiq actors.workers --queues ...` (see the Procfile)."""

import telemetry
from actors import broadcasts, broker, delivery, followups, funnel, maintenance, payments, pools, redrive, updates  # noqa: F401 - importing declares the actors

telemetry.setup_logging()  # Sentry is initialised by actors.broker, before the broker exists
