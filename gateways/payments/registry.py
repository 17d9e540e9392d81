"""The registry: a gateway kind (as configured) → its adapter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import httpx
import redis

from gateways.http import pooled_client
from gateways.payments.base import PaymentGateway
from gateways.payments.mercadopago import MercadoPagoGateway
from gateways.payments.pushinpay import PushinPayGateway
from gateways.payments.sandbox import SandboxGateway
from gateways.payments.woovi import WooviGateway


class Factory(Protocol):
    def __call__(
        self,
        *,
        gateway_id: str,
        webhook_secret: str,
        options: Mapping[str, str],
        client: httpx.Client,
        bank: redis.Redis,
    ) -> PaymentGateway: ...


ADAPTERS = (SandboxGateway, MercadoPagoGateway, PushinPayGateway, WooviGateway)

KINDS: dict[str, Factory] = {cls.kind: cls.from_config for cls in ADAPTERS}


# Each kind's own configuration keys (True = required): the configuration's schema takes them from here.
OPTIONS: dict[str, dict[str, bool]] = {cls.kind: cls.options for cls in ADAPTERS}

# Kinds whose codes can be paid after our expiry: reconciliation keeps asking about them.
LATE_PAYABLE = frozenset(cls.kind for cls in ADAPTERS if cls.late_payable)


def build(
    kind: str,
    *,
    gateway_id: str,
    webhook_secret: str,
    options: Mapping[str, str],
    client: httpx.Client,
    bank: redis.Redis,
) -> PaymentGateway:
    try:
        factory = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown gateway kind {kind!r}") from None
    return factory(gateway_id=gateway_id, webhook_secret=webhook_secret, options=options, client=client, bank=bank)


def default_client(timeout: float = 10.0) -> httpx.Client:
    """One pooled client per process for every payment gateway."""
    return pooled_client(timeout, max_connections=100)
