"""The clock process: APScheduler enqueues periodic jobs; the workers do them.

Run one clock per deployment (several would enqueue each job several times; the jobs are
idempotent, so that wastes work but breaks nothing)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from apscheduler.schedulers.blocking import BlockingScheduler

import settings
import telemetry
from actors import broadcasts, followups, maintenance, payments, pixel, pools, redrive
from actors.broker import broker
from actors.metrics import HEARTBEAT_SECONDS, beat

log = logging.getLogger(__name__)


def build_scheduler() -> BlockingScheduler:
    scheduler = BlockingScheduler(timezone="UTC")
    every = settings.RECONCILE_INTERVAL_SECONDS
    jobs = (  # (id, what, seconds between runs, run at start)
        ("prune", maintenance.prune.send, 30 * 60, True),
        ("reconcile", payments.reconcile.send, every, False),
        ("pixel-sweep", pixel.sweep_actor.send, every, False),
        ("owed-redrive", redrive.redrive.send, max(5, settings.OWED_REDRIVE_SECONDS // 2), False),
        ("followups", followups.dispatch_actor.send, 2, False),  # due follow-ups out within 10 s
        ("broadcasts", broadcasts.dispatch_actor.send, 1, False),  # start due broadcasts, keep their lanes
        ("bot-health", pools.recheck_actor.send, pools.RECHECK_SECONDS, False),  # getMe for refused bots
        ("heartbeat", _beat, HEARTBEAT_SECONDS, False),
    )
    for job_id, job, seconds, at_start in jobs:
        start = {"next_run_time": datetime.now(UTC)} if at_start else {}
        scheduler.add_job(job, "interval", seconds=seconds, id=job_id, coalesce=True, max_instances=1, **start)
    return scheduler


def _beat() -> None:
    beat(broker.client, "clock", {})


def main() -> None:
    telemetry.setup_logging()
    scheduler = build_scheduler()
    log.info("clock started jobs=%s", ",".join(job.id for job in scheduler.get_jobs()))
    scheduler.start()


if __name__ == "__main__":
    main()
