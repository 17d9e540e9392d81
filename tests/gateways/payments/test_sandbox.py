import json
from decimal import Decimal

import pytest

from actors.broker import redis_client
from db.database import utcnow
from gateways.payments import brcode
from gateways.payments.base import (
    BadNotification,
    ChargeRequest,
    ChargeState,
    ChargeStatus,
    PaymentGateway,
    PaymentPermanent,
)
from gateways.payments.sandbox import SandboxGateway, sign


def gateway() -> SandboxGateway:
    return SandboxGateway(webhook_secret="whsec-1", pix_key="pix@example.com", merchant_name="GRIMBOTS DEMO",
                          merchant_city="SAO PAULO", bank=redis_client())  # fmt: skip


def test_charge_is_a_valid_static_code_with_a_fresh_txid() -> None:
    request = ChargeRequest(Decimal("19.90"), "VIP", "lead:1:offer:2", "key-1", expires_in_seconds=1800)
    first, second = gateway().create_charge(request), gateway().create_charge(request)
    assert first.charge_id != second.charge_id and len(first.charge_id) == 25 and first.charge_id.isalnum()
    fields = brcode.parse(first.br_code)
    assert fields["54"] == "19.90" and brcode.parse_fields(fields["62"]) == {"05": first.charge_id}
    assert 1790 < (first.expires_at - utcnow()).total_seconds() <= 1800


def test_signed_notification_is_authenticated_and_parsed() -> None:
    sandbox: PaymentGateway = gateway()
    body = json.dumps({"event": "charge.paid", "charge_id": "A" * 25, "amount": "19.90"}).encode()
    headers = {"x-sandbox-signature": sign("whsec-1", body)}
    assert sandbox.authenticate(body, headers, {})
    note = sandbox.parse_notification(body, headers, {})
    assert (note.charge_id, note.status, note.amount) == ("A" * 25, ChargeStatus.PAID, Decimal("19.90"))


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Sandbox-Signature": "00" * 32}, {"X-Sandbox-Signature": sign("other-secret", b"{}")}],
)
def test_forged_or_missing_signature_is_refused(headers: dict[str, str]) -> None:
    assert not gateway().authenticate(b"{}", headers, {})


def test_tampered_body_is_refused() -> None:
    body = json.dumps({"event": "charge.paid", "charge_id": "A" * 25, "amount": "19.90"}).encode()
    signature = sign("whsec-1", body)
    assert not gateway().authenticate(body.replace(b"19.90", b"1.90"), {"X-Sandbox-Signature": signature}, {})


@pytest.mark.parametrize(
    "doc",
    [[1], {"event": "charge.nope", "charge_id": "A" * 25}, {"event": "charge.paid", "charge_id": "bad id"},
     {"event": "charge.paid", "charge_id": "A" * 25, "amount": "19,90"}],
)  # fmt: skip
def test_authenticated_but_malformed_notification_is_a_bad_notification(doc: object) -> None:
    with pytest.raises(BadNotification):
        gateway().parse_notification(json.dumps(doc).encode(), {}, {})


def test_bank_reports_pending_until_paid_then_the_amount_paid() -> None:
    sandbox = gateway()
    charge = sandbox.create_charge(ChargeRequest(Decimal("19.90"), "VIP", "r", "k", expires_in_seconds=60))
    assert sandbox.fetch_status(charge.charge_id) == ChargeState(ChargeStatus.PENDING, None)
    assert sandbox.pay(charge.charge_id) == Decimal("19.90")
    assert sandbox.fetch_status(charge.charge_id) == ChargeState(ChargeStatus.PAID, Decimal("19.90"))
    sandbox.pay(charge.charge_id, Decimal("5.00"))
    assert sandbox.fetch_status(charge.charge_id).amount == Decimal("5.00")


def test_bank_refuses_unknown_charges() -> None:
    with pytest.raises(PaymentPermanent):
        gateway().fetch_status("Z" * 25)
    with pytest.raises(PaymentPermanent):
        gateway().pay("Z" * 25)
