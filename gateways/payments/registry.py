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


KINDS: dict[str, Factory] = {
    SandboxGateway.kind: SandboxGateway.from_config,
    MercadoPagoGateway.kind: MercadoPagoGateway.from_config,
    PushinPayGateway.kind: PushinPayGateway.from_config,
    WooviGateway.kind: WooviGateway.from_config,
}


# Kinds whose codes can be paid after our expiry: reconciliation keeps asking about them.
LATE_PAYABLE = frozenset(
    cls.kind for cls in (SandboxGateway, MercadoPagoGateway, PushinPayGateway, WooviGateway) if cls.late_payable
)


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
