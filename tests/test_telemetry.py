"""Sentry events, as the SDK would send them, carry no token, secret header, body or personal data."""

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.transport import Transport
from starlette.testclient import TestClient

import telemetry
from catalog.schema import BotConfig
from edge.app import create_app
from edge.fast_paths import Edge

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"


class CapturingTransport(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Any] = []

    def capture_envelope(self, envelope: Any) -> None:
        self.envelopes.append(envelope)

    def text(self) -> str:
        return "\n".join(item.get_bytes().decode(errors="replace") for env in self.envelopes for item in env.items)


@pytest.fixture
def transport() -> Any:
    capturing = CapturingTransport()
    telemetry.init_sentry("https://public@sentry.example.com/1", transport=capturing)
    yield capturing
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # back to a disabled client


# Built at run time: Sentry sends the source lines around each frame, where a literal would be seen.
CPF = ".".join(["123", "456", "789-09"])
IP = ".".join(["203", "0", "113", "7"])
BUYER = {"first_name": " ".join(["Maria", "Buyer"]), "username": "_".join(["maria", "cpf"]), "id": 5511999999999 + 0}


def test_a_failing_actor_leaks_no_argument_to_logs_or_sentry(
    transport: CapturingTransport, caplog: pytest.LogCaptureFixture
) -> None:
    """A real actor on a real broker (built after Sentry, as in a worker process) fails with a
    buyer's name and CPF in its arguments: neither reaches a log record or a Sentry event."""
    import dramatiq

    from actors.broker import make_broker

    test_broker, _ = make_broker()
    assert any(type(m).__name__ == "SentryMiddleware" for m in test_broker.middleware)
    test_broker.declare_queue("telemetry-test")

    @dramatiq.actor(broker=test_broker, actor_name="test.fails", queue_name="telemetry-test", max_retries=0)
    def fails(update: dict[str, Any], ip: str) -> None:
        raise ValueError("the update could not be routed")

    message = fails.send({"update_id": 1, "message": {"text": f"meu CPF é {CPF}", "from": BUYER}}, IP)
    worker = dramatiq.Worker(test_broker, worker_threads=1, queues={"telemetry-test"})
    with caplog.at_level(logging.DEBUG):
        worker.start()
        try:
            test_broker.join("telemetry-test", timeout=10_000)
        finally:
            worker.stop()
    sentry_sdk.flush()
    text = transport.text()
    assert "ValueError" in text and "test.fails" in text  # the event is there...
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"test.fails#{message.message_id}" in logged  # ... and the log names the message
    for secret in (CPF, BUYER["first_name"], BUYER["username"], str(BUYER["id"]), IP):
        assert secret not in text, secret
        assert secret not in logged, secret
        for record in caplog.records:
            assert secret not in repr(record.args), secret


def test_worker_processes_build_their_broker_after_sentry(tmp_path: Path) -> None:
    """In a fresh process with SENTRY_DSN set, the broker that actors use has Sentry's middleware."""
    env = {**os.environ, "SENTRY_DSN": "https://public@127.0.0.1:9/1"}
    code = "from actors.broker import broker; print(sorted(type(m).__name__ for m in broker.middleware))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert "SentryMiddleware" in out.stdout


def test_edge_error_is_scrubbed(transport: CapturingTransport, demo_bot: BotConfig) -> None:
    app = create_app()
    assert isinstance(app, Edge)
    with TestClient(app, raise_server_exceptions=False) as client:
        edge = app.state.edge
        enqueuer, edge.enqueuer = edge.enqueuer, None  # fault injection: the webhook path fails inside
        try:
            response = client.post(
                "/webhook/telegram/demo?token=" + TOKEN,
                json={"update_id": 1, "message": {"text": "my cpf 123.456.789-00"}},
                headers={"X-Telegram-Bot-Api-Secret-Token": "tg-secret-1", "Authorization": f"Bearer {TOKEN}"},
            )
        finally:
            edge.enqueuer = enqueuer
    assert response.status_code == 500
    sentry_sdk.flush()
    text = transport.text()
    assert "AttributeError" in text
    for secret in (TOKEN, "tg-secret-1", "123.456.789-00", "Bearer"):
        assert secret not in text


def test_log_lines_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    formatter = telemetry._TextFormatter()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, f"calling /bot{TOKEN}/getMe", None, None)
    assert TOKEN not in formatter.format(record)


def test_meta_access_tokens_are_scrubbed() -> None:
    meta_token = "EAABsbCS1iHgBAKZCZAabcdefghijklmnop123"
    crumb = {"type": "http", "data": {"url": "https://graph.facebook.com/v21.0/1/events",
                                      "http.query": "access_token=opaque-secret-value&x=1"},
             "message": f"token {meta_token}"}  # fmt: skip
    scrubbed = telemetry.scrub_breadcrumb(crumb)
    assert "opaque-secret-value" not in str(scrubbed) and meta_token not in str(scrubbed)
    assert scrubbed["data"]["http.query"] == "access_token=[redacted]&x=1"
