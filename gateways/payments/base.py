"""What every PIX gateway adapter offers, behind one Protocol: create a charge, authenticate and
parse a notification. Statuses are mapped onto ours.

Errors, translated at each adapter's boundary:

    PaymentError
    ├── PaymentTransient      retry with backoff: timeouts, network errors, 5xx, 429
    └── PaymentPermanent      record it and show it to the seller: bad credentials, rejected amount
        └── BadNotification   authenticated but not understood: answered 400, nothing changes"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar, Protocol


class ChargeStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    EXPIRED = "expired"
    REFUNDED = "refunded"
    FAILED = "failed"


class PaymentError(Exception):
    pass


class PaymentTransient(PaymentError):
    pass


class PaymentPermanent(PaymentError):
    pass


class BadNotification(PaymentPermanent):
    pass


@dataclass(frozen=True)
class ChargeRequest:
    amount: Decimal  # BRL
    description: str
    reference: str  # ours: lead and offer, echoed by gateways that keep one
    idempotency_key: str  # the same key on a retry can never charge twice
    expires_in_seconds: int


@dataclass(frozen=True)
class CreatedCharge:
    charge_id: str
    br_code: str
    expires_at: dt.datetime  # naive UTC


@dataclass(frozen=True)
class Notification:
    charge_id: str
    status: ChargeStatus | None  # None: the gateway's status must be fetched before acting
    amount: Decimal | None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name."""
    lowered = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lowered), None)


class PaymentGateway(Protocol):
    kind: ClassVar[str]

    def create_charge(self, request: ChargeRequest) -> CreatedCharge: ...

    def authenticate(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> bool: ...

    def parse_notification(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> Notification: ...
