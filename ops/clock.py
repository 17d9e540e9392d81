"""The clock process: APScheduler enqueues periodic jobs; the workers do them.

Run one clock per deployment (several would enqueue each job several times; the jobs are
idempotent, so that wastes work but breaks nothing)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from apscheduler.schedulers.blocking import BlockingScheduler

import settings
import telemetry
from actors import maintenance, payments, pixel
from actors.broker import broker
from actors.metrics import HEARTBEAT_SECONDS, beat

log = logging.getLogger(__name__)


def build_scheduler() -> BlockingScheduler:
    scheduler = BlockingScheduler(timezone="UTC")
    scheduler.add_job(
        maintenance.prune.send,
        "interval",
        minutes=30,
        id="prune",
        coalesce=True,
        max_instances=1,
        next_run_time=datetime.now(UTC),
    )
    scheduler.add_job(
        payments.reconcile.send,
        "interval",
        seconds=settings.RECONCILE_INTERVAL_SECONDS,
        id="reconcile",
        coalesce=True,
        max_instances=1,
    )
    scheduler.add_job(
        pixel.sweep_actor.send,
        "interval",
        seconds=settings.RECONCILE_INTERVAL_SECONDS,
        id="pixel-sweep",
        coalesce=True,
        max_instances=1,
    )
    scheduler.add_job(_beat, "interval", seconds=HEARTBEAT_SECONDS, id="heartbeat", coalesce=True, max_instances=1)
    return scheduler


def _beat() -> None:
    beat(broker.client, "clock", {})


def main() -> None:
    telemetry.setup_logging()
    telemetry.init_sentry()
    scheduler = build_scheduler()
    log.info("clock started jobs=%s", ",".join(job.id for job in scheduler.get_jobs()))
    scheduler.start()


if __name__ == "__main__":
    main()
