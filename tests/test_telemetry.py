"""Sentry events, as the SDK would send them, carry no token, secret header, body or personal data."""

import logging
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.transport import Transport
from starlette.testclient import TestClient

import telemetry
from db.catalog import BotConfig
from edge.app import create_app
from edge.fast import Edge

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


def test_actor_error_is_scrubbed(transport: CapturingTransport) -> None:
    try:
        url = f"https://api.telegram.org/bot{TOKEN}/sendMessage"
        # Built at run time: Sentry sends source lines around each frame, and the secret must not
        # be caught there by accident; what is checked is that frame variables are never sent.
        secret_token = "-".join(["tg", "secret", "1"])  # noqa: F841
        raise RuntimeError(f"request to {url} failed for chat 5511999999999")
    except RuntimeError:
        sentry_sdk.capture_exception()
    sentry_sdk.flush()
    text = transport.text()
    assert "RuntimeError" in text
    assert TOKEN not in text and "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0" not in text
    assert "tg-secret-1" not in text


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
