"""What every request of the panel shares in one process: the Redis client (sessions, login limits,
the API's rate) and the configuration snapshot, reloaded only when its version moved."""

from __future__ import annotations

import httpx
import redis

import settings
from catalog.snapshot import Catalog
from gateways.payments import registry


class Panel:
    def __init__(self, client: redis.Redis | None = None) -> None:
        self._client = client
        self._payments: httpx.Client | None = None
        self.catalog = Catalog()

    @property
    def payments(self) -> httpx.Client:
        """The HTTP client of the gateways' "test connection" calls."""
        if self._payments is None:
            self._payments = registry.default_client(settings.PAYMENT_TIMEOUT_SECONDS)
        return self._payments

    @property
    def redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2)
        return self._client


PANEL = Panel()
