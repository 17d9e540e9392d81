"""POST/GET /webhook/whatsapp/{bot_id} (CONTRACT §12): each sender authenticated its own way, bad
bodies refused with a 4xx, nothing a buyer said dropped at the edge, the rest enqueued without
Evolution's apikey; /r of a WhatsApp bot → wa.me with the click token in the prefilled text."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from starlette.testclient import TestClient

from edge.app import create_app
from ops.procs import free_port
from tests.actors.test_whatsapp import NUMBER, whatsapp_config
from tests.conftest import apply_config, once
from tests.edge.test_webhook import queued_updates

EVOLUTION = "/webhook/whatsapp/zap"
CLOUD = "/webhook/whatsapp/cloud"
BEARER = {"Authorization": "Bearer wh-secret-1"}


# The edge's own checks and parsing: database-independent, run once (on PostgreSQL).
pytestmark = once


@pytest.fixture
def client() -> Iterator[TestClient]:
    apply_config(whatsapp_config())
    with TestClient(create_app(poll_seconds=0.1, metrics_port=free_port())) as test_client:
        yield test_client


def upsert(message_id: str = "3EB0C0FFEE", *, from_me: bool = False, jid: str = f"{NUMBER}@s.whatsapp.net",
           text: str = "oi") -> dict[str, Any]:  # fmt: skip
    return {"event": "messages.upsert", "instance": "loja1", "apikey": "EVO-KEY-IN-THE-BODY",
            "server_url": "https://evo.example.com",
            "data": {"key": {"remoteJid": jid, "fromMe": from_me, "id": message_id}, "pushName": "Ana",
                     "message": {"conversation": text}, "messageType": "conversation"}}  # fmt: skip


def signed(body: bytes, secret: str = "app-secret") -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}


def cloud_body(*, statuses_only: bool = False, phone_number_id: str = "1234", status: str = "delivered") -> bytes:
    value: dict[str, Any] = {"messaging_product": "whatsapp", "metadata": {"phone_number_id": phone_number_id}}
    if statuses_only:
        value["statuses"] = [{"id": "wamid.X", "status": status, "recipient_id": str(NUMBER),
                              "errors": [{"code": 131026, "title": "Message undeliverable"}]}]  # fmt: skip
    else:
        value["contacts"] = [{"wa_id": str(NUMBER), "profile": {"name": "Ana"}}]
        value["messages"] = [{"from": str(NUMBER), "id": "wamid.1", "timestamp": "1", "type": "text",
                              "text": {"body": "oi"}}]  # fmt: skip
    doc = {"object": "whatsapp_business_account", "entry": [{"id": "5678", "changes": [{"field": "messages",
                                                                                        "value": value}]}]}  # fmt: skip
    return json.dumps(doc).encode()


def test_evolution_message_is_enqueued_without_the_apikey(client: TestClient) -> None:
    assert client.post(EVOLUTION, json=upsert(), headers=BEARER).status_code == 200
    [message] = queued_updates()
    assert message.actor_name == "updates.route" and message.args[0] == "zap"
    assert "EVO-KEY-IN-THE-BODY" not in json.dumps(message.args) and "server_url" not in message.args[1]
    assert message.args[1]["data"]["key"]["id"] == "3EB0C0FFEE"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "wh-secret-1"},
                                     {"Authorization": "Bearer wh-secret-1x"}])  # fmt: skip
def test_a_forged_bearer_is_401_and_nothing_enqueued(client: TestClient, headers: dict[str, str]) -> None:
    assert client.post(EVOLUTION, json=upsert(), headers=headers).status_code == 401
    assert queued_updates() == []


@pytest.mark.parametrize("body", [upsert(from_me=True), upsert(jid="120363@g.us"), upsert(jid="status@broadcast"),
                                  {"event": "messages.update", "data": {"status": "READ"}},
                                  {"event": "presence.update", "data": {}}])  # fmt: skip
def test_our_own_messages_groups_and_other_events_are_dropped_cheaply(client: TestClient, body: Any) -> None:
    assert client.post(EVOLUTION, json=body, headers=BEARER).status_code == 200
    assert queued_updates() == []


@pytest.mark.parametrize(("body", "status"), [(b"not json", 400), (b"[1, 2]", 400),
                                              (json.dumps({"event": "messages.upsert", "data": {}}).encode(), 400),
                                              (json.dumps(upsert(message_id="x" * 300)).encode(), 400)])  # fmt: skip
def test_bad_evolution_bodies_are_4xx_and_nothing_enqueued(client: TestClient, body: bytes, status: int) -> None:
    assert client.post(EVOLUTION, content=body, headers=BEARER).status_code == status
    assert queued_updates() == []


def test_cloud_signature_is_checked_on_the_raw_body(client: TestClient) -> None:
    body = cloud_body()
    assert client.post(CLOUD, content=body, headers=signed(body, "wrong-secret")).status_code == 401
    assert client.post(CLOUD, content=body + b" ", headers=signed(body)).status_code == 401
    assert client.post(CLOUD, content=body, headers={"Content-Type": "application/json"}).status_code == 401
    assert queued_updates() == []
    assert client.post(CLOUD, content=body, headers=signed(body)).status_code == 200
    [message] = queued_updates()
    assert message.args[0] == "cloud" and message.args[1]["entry"][0]["changes"][0]["value"]["messages"]


def test_cloud_statuses_are_acked_and_dropped_but_a_failed_one_is_enqueued(client: TestClient) -> None:
    body = cloud_body(statuses_only=True)
    assert client.post(CLOUD, content=body, headers=signed(body)).status_code == 200
    assert queued_updates() == []
    failed = cloud_body(statuses_only=True, status="failed")  # Meta could not deliver a message it took
    assert client.post(CLOUD, content=failed, headers=signed(failed)).status_code == 200
    [message] = queued_updates()
    assert message.args[1]["entry"][0]["changes"][0]["value"]["statuses"][0]["id"] == "wamid.X"


def test_a_cloud_change_for_another_number_of_the_app_is_acked_and_ignored(client: TestClient) -> None:
    body = cloud_body(phone_number_id="9999")  # the same app (same secret), another number
    assert client.post(CLOUD, content=body, headers=signed(body)).status_code == 200
    assert queued_updates() == []


def test_cloud_verification_handshake(client: TestClient) -> None:
    ok = client.get(CLOUD, params={"hub.mode": "subscribe", "hub.verify_token": "verify-me", "hub.challenge": "42x"})
    assert ok.status_code == 200 and ok.text == "42x"
    bad = client.get(CLOUD, params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "42x"})
    assert bad.status_code == 403 and "42x" not in bad.text
    assert client.get(EVOLUTION, params={"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"}
                      ).status_code == 403  # fmt: skip
    assert client.get("/webhook/whatsapp/nobody", params={"hub.challenge": "1"}).status_code == 404


def test_whatsapp_and_telegram_routes_do_not_cross(client: TestClient) -> None:
    assert client.post("/webhook/whatsapp/demo", json=upsert(), headers=BEARER).status_code == 404
    headers = {"X-Telegram-Bot-Api-Secret-Token": ""}
    assert client.post("/webhook/telegram/zap", json={"update_id": 1}, headers=headers).status_code == 404
    assert queued_updates() == []


def test_a_click_on_a_whatsapp_bot_goes_to_wa_me_with_the_token(client: TestClient) -> None:
    import clicks

    response = client.get("/r/zap?utm_source=fb&fbclid=ABC", headers={"User-Agent": "Mozilla/5.0"},
                          follow_redirects=False)  # fmt: skip
    assert response.status_code == 302
    target = urlparse(response.headers["location"])
    assert (target.scheme, target.netloc, target.path) == ("https", "wa.me", "/5511999990000")
    [text] = parse_qs(target.query)["text"]
    token = text.rsplit(" ", 1)[-1]
    assert text == f"Olá! Quero saber mais. Código: {token}" and clicks.verify_token(token)
