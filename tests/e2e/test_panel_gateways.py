"""A gateway's "test connection" (issue: the seller panel) against a real `python -m panel` whose
Mercado Pago API is a small server on 127.0.0.1: accepted credentials say so, refused ones say
that, and nothing of them reaches the page."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from ops.procs import free_port
from tests.e2e.test_panel_browser import PASSWORD, run, running_panel
from tests.e2e.test_panel_mail import csrf

GOOD = "APP_USR-good-token-1234"


class _MercadoPago(BaseHTTPRequestHandler):
    """GET /v1/payments/{id}: 404 with the good token (no such payment), 401 otherwise."""

    def do_GET(self) -> None:
        good = self.headers.get("Authorization") == f"Bearer {GOOD}"
        body = json.dumps({"message": "not found" if good else "invalid access token"}).encode()
        self.send_response(404 if good else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def panel(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _MercadoPago)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with running_panel(tmp_path / "panel", request,
                           MERCADOPAGO_API_BASE=f"http://127.0.0.1:{server.server_address[1]}") as base:  # fmt: skip
            yield base
    finally:
        server.shutdown()
        server.server_close()


def test_test_connection_says_whether_the_gateway_took_the_credentials(panel: str) -> None:
    from accounts import passwords
    from db.models import Account

    run("accounts", "create", "loja", "--email", "ana@loja.com.br")
    Account.update(password_hash=passwords.hashed(PASSWORD)).where(Account.slug == "loja").execute()
    with httpx.Client(base_url=panel, timeout=30) as client:
        login = client.get("/login").text
        client.post("/login", data={"csrf": csrf(login), "email": "ana@loja.com.br", "password": PASSWORD, "next": "/"})
        form = client.get("/gateways/new", params={"kind": "mercadopago"}).text
        fields = {"csrf": csrf(form), "kind": "mercadopago", "id": "mp", "access_token": GOOD,
                  "webhook_secret": "mp-webhook-secret"}  # fmt: skip
        made = client.post("/gateways/new", data=fields)
        assert made.status_code == 303
        page = client.get("/gateways/mp").text
        tested = client.post("/gateways/mp/test", data={"csrf": csrf(page)}).text
        assert 'data-probe="ok"' in tested and GOOD not in tested
        client.post("/gateways/mp", data={"csrf": csrf(page), "access_token": "APP_USR-wrong-9999"})
        tested = client.post("/gateways/mp/test", data={"csrf": csrf(page)}).text
        assert 'data-probe="refused"' in tested and re.search(r"recusou as credenciais \(HTTP 401\)", tested)
        assert "wrong-9999" not in tested
