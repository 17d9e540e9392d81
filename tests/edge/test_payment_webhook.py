import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq import Message
from starlette.testclient import TestClient

from actors.broker import broker
from catalog.schema import BotConfig
from edge.app import create_app
from gateways.payments.sandbox import sign
from tests.conftest import DEMO_CONFIG, apply_config

URL = "/webhook/payment/main"
PAID = json.dumps({"event": "charge.paid", "charge_id": "A" * 25, "amount": "19.90"}).encode()


@pytest.fixture
def client(demo_bot: BotConfig) -> Iterator[TestClient]:
    with TestClient(create_app(poll_seconds=0.1)) as test_client:
        yield test_client


def queued() -> list[Message[Any]]:
    client = broker.client
    ids = client.lrange("dramatiq:settle", 0, -1)
    return [Message.decode(client.hget("dramatiq:settle.msgs", i)) for i in ids]  # type: ignore[arg-type]


def signed(body: bytes, secret: str = "whsec-1") -> dict[str, str]:
    return {"X-Sandbox-Signature": sign(secret, body), "Content-Type": "application/json"}


def test_signed_notification_is_enqueued_then_acked(client: TestClient) -> None:
    response = client.post(URL, content=PAID, headers=signed(PAID))
    assert response.status_code == 200
    [message] = queued()
    assert message.actor_name == "payments.notify"
    assert message.args == ("main", {"charge_id": "A" * 25, "status": "paid", "amount": "19.90"})


@pytest.mark.parametrize("headers", [{}, {"X-Sandbox-Signature": "0" * 64}, signed(PAID, "another-secret")])
def test_forged_or_missing_signature_is_401_leaving_one_log_line(
    client: TestClient, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert client.post(URL, content=PAID, headers=headers).status_code == 401
    assert queued() == []
    lines = [r.getMessage() for r in caplog.records if "payment notification refused" in r.getMessage()]
    assert lines == ["payment notification refused gateway=main reason=authentication"]
    assert "whsec-1" not in caplog.text and PAID.decode() not in caplog.text


def test_tampered_body_is_401(client: TestClient) -> None:
    assert client.post(URL, content=PAID.replace(b"19.90", b"0.01"), headers=signed(PAID)).status_code == 401


def test_unknown_gateway_is_404(client: TestClient) -> None:
    assert client.post("/webhook/payment/nope", content=PAID, headers=signed(PAID)).status_code == 404


@pytest.mark.parametrize("doc", [{"event": "charge.paid"}, {"event": "charge.stolen", "charge_id": "A" * 25}, [1], "x"])
def test_authenticated_but_malformed_is_400(client: TestClient, doc: object) -> None:
    body = json.dumps(doc).encode()
    assert client.post(URL, content=body, headers=signed(body)).status_code == 400
    assert queued() == []


def test_body_over_limit_is_413(client: TestClient) -> None:
    big = b"{" + b" " * 1_100_000 + b"}"
    assert client.post(URL, content=big, headers=signed(big)).status_code == 413


def test_other_methods_are_405(client: TestClient) -> None:
    assert client.get(URL).status_code == 405


def test_a_gateway_applied_later_is_served_without_a_restart(client: TestClient) -> None:
    config = json.loads(json.dumps(DEMO_CONFIG))
    config["gateways"].append({**config["gateways"][0], "id": "second", "webhook_secret": "whsec-2"})
    apply_config({"gateways": config["gateways"]})
    deadline = time.monotonic() + 5
    status = 404
    while status == 404 and time.monotonic() < deadline:
        status = client.post("/webhook/payment/second", content=PAID, headers=signed(PAID, "whsec-2")).status_code
        time.sleep(0.05)
    assert status == 200
