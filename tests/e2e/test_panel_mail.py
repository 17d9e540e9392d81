"""Open sign-up (PANEL_SIGNUP=open) and the password reset by e-mail (SMTP_URL), against a real
`python -m panel` process and a fake SMTP server on 127.0.0.1 that keeps what it is given."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ops.fakes.smtp import FakeSmtp
from tests.e2e.test_panel_browser import running_panel

PASSWORD = "cavalo-correto-bateria-grampo"


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    with FakeSmtp(login=("grimbots", "smtp-pass")) as server:
        yield server


@pytest.fixture
def panel(tmp_path: Path, request: pytest.FixtureRequest, smtp: FakeSmtp) -> Iterator[str]:
    url = f"smtp://grimbots:smtp-pass@127.0.0.1:{smtp.port}"
    with running_panel(tmp_path / "panel", request, PANEL_SIGNUP="open", SMTP_URL=url,
                       SMTP_FROM="GrimBots <no-reply@grimbots.test>") as base:  # fmt: skip
        yield base


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


def sign_up(client: httpx.Client, email: str, slug: str) -> httpx.Response:
    form = client.get("/signup").text
    return client.post("/signup", data={"csrf": csrf(form), "email": email, "slug": slug, "password": PASSWORD,
                                        "confirm": PASSWORD})  # fmt: skip


def test_anyone_signs_up_when_sign_up_is_open(panel: str) -> None:
    with httpx.Client(base_url=panel, timeout=30) as client:
        assert "Criar uma conta" in client.get("/login").text
        done = sign_up(client, "Ana@Acme.com.br", "acme")
        assert done.status_code == 303 and done.headers["location"] == "/"
        assert "Seu funil" in client.get("/").text and "ana@acme.com.br" in client.get("/account").text
    with httpx.Client(base_url=panel, timeout=30) as other:
        taken = sign_up(other, "ana@acme.com.br", "acme2")
        assert taken.status_code == 422 and "Já existe uma conta com este e-mail" in taken.text
        assert sign_up(other, "bia@beta.com.br", "acme").status_code == 422  # the shop's name is taken
        common = "1qaz2wsx3edc"
        weak = other.post("/signup", data={"csrf": csrf(other.get("/signup").text), "email": "c@c.com.br",
                                           "slug": "c", "password": common, "confirm": common})  # fmt: skip
        assert weak.status_code == 422


def test_a_reset_link_is_mailed_used_once_and_says_nothing_of_unknown_emails(panel: str, smtp: FakeSmtp) -> None:
    with httpx.Client(base_url=panel, timeout=30) as client:
        sign_up(client, "ana@acme.com.br", "acme")
    with httpx.Client(base_url=panel, timeout=30) as client:
        assert 'href="/forgot"' in client.get("/login").text
        form = client.get("/forgot").text
        known = client.post("/forgot", data={"csrf": csrf(form), "email": "ana@acme.com.br"})
        unknown = client.post("/forgot", data={"csrf": csrf(form), "email": "ghost@nowhere.com.br"})
        assert known.status_code == unknown.status_code == 200
        assert known.text == unknown.text  # the same answer
        [(_, to, message)] = smtp.wait(1)
        assert to == ["ana@acme.com.br"] and message["From"] == "GrimBots <no-reply@grimbots.test>"
        link = re.search(r"http://127\.0\.0\.1:\d+(/reset/[\w-]+)", message.get_content())
        assert link is not None and "acme" in message.get_content()
        page = client.get(link.group(1)).text
        new = "uma-senha-nova-e-longa"
        done = client.post(link.group(1), data={"csrf": csrf(page), "password": new, "confirm": new})
        assert done.status_code == 303 and done.headers["location"] == "/login?reset=1"
        assert client.get(link.group(1)).status_code == 404  # used once
        login = client.get("/login").text
        assert client.post("/login", data={"csrf": csrf(login), "email": "ana@acme.com.br", "password": new,
                                           "next": "/"}).status_code == 303  # fmt: skip
    assert len(smtp.wait(2, timeout=1)) == 1  # nothing was mailed for the unknown address
