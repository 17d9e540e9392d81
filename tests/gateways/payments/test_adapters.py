"""Mercado Pago, PushinPay and Woovi against httpx.MockTransport, with their documented payload shapes."""

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateways.payments import mercadopago, pushinpay, woovi
from gateways.payments.base import (
    BadNotification,
    ChargeRequest,
    ChargeState,
    ChargeStatus,
    PaymentPermanent,
    PaymentTransient,
)

REQUEST = ChargeRequest(Decimal("19.90"), "VIP mensal", "grimbots:demo:7", "idem-key-7", expires_in_seconds=1800)
BR_CODE = "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-4266554400005204000053039865405" + "19.905802BR"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    def __init__(self, *replies: httpx.Response) -> None:
        self.requests: list[httpx.Request] = []
        self.replies = list(replies)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.replies.pop(0)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


# --- Mercado Pago -----------------------------------------------------------------------------


def mp(recorder: Recorder) -> mercadopago.MercadoPagoGateway:
    return mercadopago.MercadoPagoGateway(access_token="APP_USR-token", webhook_secret="mp-secret",
                                          client=recorder.client(), base_url="https://mp.test",
                                          notification_url="https://edge.test/webhook/payment/mp")  # fmt: skip


def test_mercadopago_create_sends_idempotency_key_and_reads_the_code() -> None:
    data = {"qr_code": BR_CODE, "qr_code_base64": "iVBOR"}
    answer = {"id": 123456789, "status": "pending", "point_of_interaction": {"transaction_data": data}}
    recorder = Recorder(httpx.Response(201, json=answer))
    created = mp(recorder).create_charge(REQUEST)
    assert created.charge_id == "123456789" and created.br_code == BR_CODE
    [request] = recorder.requests
    assert request.method == "POST" and request.url == "https://mp.test/v1/payments"
    assert request.headers["authorization"] == "Bearer APP_USR-token"
    assert request.headers["x-idempotency-key"] == "idem-key-7"
    body = json.loads(request.content)
    assert body["transaction_amount"] == 19.9 and body["payment_method_id"] == "pix"
    assert body["notification_url"] == "https://edge.test/webhook/payment/mp"
    assert body["external_reference"] == "grimbots:demo:7" and body["payer"]["email"]


@pytest.mark.parametrize(
    ("status", "ours"),
    [("pending", "pending"), ("in_process", "pending"), ("authorized", "pending"), ("in_mediation", "pending"),
     ("approved", "paid"), ("rejected", "failed"), ("cancelled", "expired"), ("refunded", "refunded"),
     ("charged_back", "refunded")],
)  # fmt: skip
def test_mercadopago_status_mapping(status: str, ours: str) -> None:
    doc = {"id": 1, "status": status, "transaction_amount": 19.9, "transaction_details": {"total_paid_amount": 19.9}}
    recorder = Recorder(httpx.Response(200, json=doc))
    paid = Decimal("19.90") if ours == "paid" else None
    assert mp(recorder).fetch_status("1") == ChargeState(ChargeStatus(ours), paid)
    assert recorder.requests[0].url == "https://mp.test/v1/payments/1"


def test_mercadopago_reports_what_the_payer_paid_not_what_was_asked() -> None:
    doc = {"id": 1, "status": "approved", "transaction_amount": 19.9, "transaction_details": {"total_paid_amount": 9.9}}
    assert mp(Recorder(httpx.Response(200, json=doc))).fetch_status("1") == ChargeState(ChargeStatus.PAID,
                                                                                          Decimal("9.90"))  # fmt: skip


def mp_signature(data_id: str, request_id: str, ts: str, secret: str = "mp-secret") -> str:
    signed = f"id:{data_id.lower()};request-id:{request_id};ts:{ts};"
    return f"ts={ts},v1={hmac.new(secret.encode(), signed.encode(), hashlib.sha256).hexdigest()}"


def test_mercadopago_notification_signature_and_parse() -> None:
    gateway = mp(Recorder())
    body = json.dumps({"id": 1, "type": "payment", "action": "payment.updated", "data": {"id": "ABC123"}}).encode()
    query = {"data.id": "ABC123", "type": "payment"}
    headers = {"x-signature": mp_signature("ABC123", "req-1", "1700000000"), "x-request-id": "req-1"}
    assert gateway.authenticate(body, headers, query)
    assert gateway.parse_notification(body, headers, query) == mercadopago.Notification("ABC123", None, None)
    assert not gateway.authenticate(body, {**headers, "x-request-id": "req-2"}, query)
    assert not gateway.authenticate(body, headers, {"data.id": "OTHER"})
    assert not gateway.authenticate(body, {"x-signature": mp_signature("ABC123", "req-1", "1", "wrong")}, query)
    assert not gateway.authenticate(body, {}, query)
    with pytest.raises(BadNotification):  # the body names another payment than the signed query
        gateway.parse_notification(body.replace(b"ABC123", b"ZZZ999"), headers, query)
    merchant_order = json.dumps({"type": "merchant_order", "data": {"id": "9"}}).encode()
    assert gateway.parse_notification(merchant_order, headers, {"data.id": "9"}) is None


@pytest.mark.parametrize(
    ("reply", "error"),
    [(httpx.Response(401, json={"message": "invalid token"}), PaymentPermanent),
     (httpx.Response(400, json={"message": "Invalid transaction_amount"}), PaymentPermanent),
     (httpx.Response(500), PaymentTransient), (httpx.Response(429), PaymentTransient)],
)  # fmt: skip
def test_mercadopago_errors_are_translated(reply: httpx.Response, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        mp(Recorder(reply)).create_charge(REQUEST)
    assert "APP_USR-token" not in str(caught.value)


def test_a_timeout_is_transient() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    gateway = mp(Recorder())
    gateway.client = httpx.Client(transport=httpx.MockTransport(timeout))
    with pytest.raises(PaymentTransient):
        gateway.create_charge(REQUEST)


# --- PushinPay --------------------------------------------------------------------------------


def pp(recorder: Recorder) -> pushinpay.PushinPayGateway:
    return pushinpay.PushinPayGateway(api_token="pp-token", webhook_secret="pp-hook", client=recorder.client(),
                                      base_url="https://pp.test",
                                      notification_url="https://edge.test/webhook/payment/pp")  # fmt: skip


def test_pushinpay_create_in_cents_with_the_webhook_url() -> None:
    answer = {"id": "9C3A1B2D-0000-4000-8000-000000000001", "qr_code": BR_CODE, "status": "created", "value": 1990}
    recorder = Recorder(httpx.Response(200, json=answer))
    created = pp(recorder).create_charge(REQUEST)
    assert created.charge_id == "9c3a1b2d-0000-4000-8000-000000000001" and created.br_code == BR_CODE
    [request] = recorder.requests
    assert request.url == "https://pp.test/api/pix/cashIn" and request.headers["authorization"] == "Bearer pp-token"
    assert json.loads(request.content) == {"value": 1990, "webhook_url": "https://edge.test/webhook/payment/pp"}


def test_pushinpay_refuses_amounts_below_its_minimum() -> None:
    small = ChargeRequest(Decimal("0.49"), "x", "r", "k", expires_in_seconds=60)
    with pytest.raises(PaymentPermanent):
        pp(Recorder()).create_charge(small)


@pytest.mark.parametrize(
    ("status", "ours"),
    [("created", "pending"), ("paid", "paid"), ("canceled", "expired"), ("expired", "expired")],
)
def test_pushinpay_status_mapping(status: str, ours: str) -> None:
    recorder = Recorder(httpx.Response(200, json={"id": "abc", "status": status, "value": 1990}))
    paid = Decimal("19.90") if ours == "paid" else None
    assert pp(recorder).fetch_status("abc") == ChargeState(ChargeStatus(ours), paid)
    assert recorder.requests[0].url == "https://pp.test/api/transactions/abc"


@pytest.mark.parametrize("form", [False, True])
def test_pushinpay_notification_token_and_both_body_forms(form: bool) -> None:
    gateway = pp(Recorder())
    fields = {"id": "ABC-1", "value": "1990", "status": "paid", "end_to_end_id": "E1", "payer_name": "Fulano"}
    if form:
        body, kind = "&".join(f"{k}={v}" for k, v in fields.items()).encode(), "application/x-www-form-urlencoded"
    else:
        body, kind = json.dumps({**fields, "value": 1990}).encode(), "application/json"
    headers = {"x-pushinpay-token": "pp-hook", "content-type": kind}
    assert gateway.authenticate(body, headers, {})
    assert not gateway.authenticate(body, {"x-pushinpay-token": "guess"}, {})
    assert not gateway.authenticate(body, {}, {})
    # the status in an unsigned body is never trusted: None = fetch it
    assert gateway.parse_notification(body, headers, {}) == pushinpay.Notification("abc-1", None, Decimal("19.90"))


# --- Woovi ------------------------------------------------------------------------------------

PRIVATE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = (
    PRIVATE_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def woovi_sign(body: bytes) -> str:
    return base64.b64encode(PRIVATE_KEY.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


def wv(recorder: Recorder) -> woovi.WooviGateway:
    return woovi.WooviGateway(app_id="woovi-app-id", client=recorder.client(), base_url="https://wv.test",
                              public_key=PUBLIC_PEM)  # fmt: skip


def test_woovi_create_is_keyed_by_our_correlation_id() -> None:
    charge = {"status": "ACTIVE", "brCode": BR_CODE, "correlationID": "idem-key-7", "value": 1990,
              "expiresDate": "2026-11-22T06:30:00.000Z", "transactionID": "t1"}  # fmt: skip
    recorder = Recorder(httpx.Response(200, json={"charge": charge}))
    created = wv(recorder).create_charge(REQUEST)
    assert created.charge_id == "idem-key-7" and created.br_code == BR_CODE
    assert created.expires_at.isoformat() == "2026-11-22T06:30:00"
    [request] = recorder.requests
    assert request.headers["authorization"] == "woovi-app-id" and request.url.path == "/api/v1/charge"
    assert json.loads(request.content) == {"correlationID": "idem-key-7", "value": 1990, "comment": "VIP mensal",
                                           "expiresIn": 1800}  # fmt: skip


@pytest.mark.parametrize(("status", "ours"), [("ACTIVE", "pending"), ("COMPLETED", "paid"), ("EXPIRED", "expired")])
def test_woovi_status_mapping(status: str, ours: str) -> None:
    recorder = Recorder(httpx.Response(200, json={"charge": {"status": status, "value": 1990}}))
    state = wv(recorder).fetch_status("idem-key-7")
    assert state.status == ChargeStatus(ours) and recorder.requests[0].url.path == "/api/v1/charge/idem-key-7"


def woovi_event(event: str, **charge: Any) -> bytes:
    return json.dumps({"event": event, "charge": {"correlationID": "idem-key-7", "value": 1990, **charge}}).encode()


@pytest.mark.parametrize(
    ("event", "status"),
    [("OPENPIX:CHARGE_COMPLETED", "paid"), ("OPENPIX:TRANSACTION_RECEIVED", "paid"),
     ("OPENPIX:CHARGE_EXPIRED", "expired")],
)  # fmt: skip
def test_woovi_signed_events(event: str, status: str) -> None:
    gateway = wv(Recorder())
    body = woovi_event(event)
    headers = {"x-webhook-signature": woovi_sign(body)}
    assert gateway.authenticate(body, headers, {})
    note = gateway.parse_notification(body, headers, {})
    # One key signs every Woovi customer's webhooks: the status is always fetched with our app_id.
    assert note is not None and note.charge_id == "idem-key-7" and note.status is None and note.amount is None


def test_woovi_refuses_forged_and_tampered_signatures() -> None:
    gateway = wv(Recorder())
    body = woovi_event("OPENPIX:CHARGE_COMPLETED")
    assert not gateway.authenticate(body.replace(b"1990", b"1"), {"x-webhook-signature": woovi_sign(body)}, {})
    assert not gateway.authenticate(body, {"x-webhook-signature": "bm90IGEgc2lnbmF0dXJl"}, {})
    assert not gateway.authenticate(body, {"x-webhook-signature": "%%%"}, {})
    assert not gateway.authenticate(body, {}, {})
    # Woovi's own published key is the default, and it is not ours
    default = woovi.WooviGateway(app_id="a", client=httpx.Client(), base_url="https://wv.test")
    assert not default.authenticate(body, {"x-webhook-signature": woovi_sign(body)}, {})


def test_woovi_ignores_events_about_other_things() -> None:
    body = json.dumps({"event": "teste_webhook"}).encode()
    assert wv(Recorder()).parse_notification(body, {}, {}) is None
