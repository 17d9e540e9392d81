"""The Dramatiq broker on Redis, its middleware, the queues, and the retry policy of every actor.

Importing this module sets the global broker; every actor module imports it first."""

from __future__ import annotations

from collections.abc import Callable

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

import settings
import telemetry
from actors.metrics import Heartbeat, SharedCounters, WorkerMetrics
from actors.middleware import Correlation, DbConnection
from db.database import init_db
from gateways.payments.base import PaymentPermanent
from gateways.telegram import TelegramPermanent

# Queues, one per pipeline stage; the Procfile groups them into worker process types.
UPDATES = "updates"  # Telegram updates in, routed
FUNNEL = "funnel"  # /start welcome and later funnel steps
PAYMENTS = "payments"  # charges, payment notifications, reconciliation, deliveries
PIXEL = "pixel"  # ad clicks and Meta Conversions API events
MAINTENANCE = "maintenance"  # clock-driven housekeeping
QUEUES = (UPDATES, FUNNEL, PAYMENTS, PIXEL, MAINTENANCE)


def retry_when(max_retries: int) -> Callable[[int, BaseException], bool]:
    """Rate-limit and flood waits (dramatiq.Retry with a delay) always come back; permanent
    errors never do; anything else is retried with backoff up to `max_retries` times."""

    def decide(retries: int, exc: BaseException) -> bool:
        if isinstance(exc, dramatiq.Retry):
            return True
        if isinstance(exc, (TelegramPermanent, PaymentPermanent)):
            return False
        return retries < max_retries

    return decide


def redis_client(url: str | None = None) -> redis.Redis:
    return redis.Redis.from_url(
        url or settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
    )


def make_broker(url: str | None = None) -> tuple[RedisBroker, SharedCounters]:
    client = redis_client(url)
    counters = SharedCounters(client)
    broker = RedisBroker(
        client=client,
        heartbeat_timeout=settings.WORKER_HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=settings.BROKER_MAINTENANCE_CHANCE,
        middleware=[
            AgeLimit(),
            TimeLimit(),
            ShutdownNotifications(),
            Callbacks(),
            Pipelines(),
            WorkerMetrics(counters),  # before Retries: its after-hook runs after Retries' verdict
            Retries(),
            CurrentMessage(),
            DbConnection(),
            Correlation(),
            Heartbeat(client),
        ],
    )
    for queue in QUEUES:
        broker.declare_queue(queue)
    return broker, counters


telemetry.init_sentry()  # first: Sentry's Dramatiq integration only reaches brokers built after it
broker, counters = make_broker()
dramatiq.set_broker(broker)
init_db()
