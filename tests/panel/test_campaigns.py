"""Pools and broadcasts run from the browser (issue: the seller panel): a pool saved through the
catalog (refusals beside their field) with its link and its bots' health; a broadcast counted before
it is sent, created now or at a time, stopped; every change audited."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from actors.health import UNHEALTHY, mark_unhealthy
from catalog.snapshot import load_pools
from db.database import utcnow
from db.models import AuditEntry, Broadcast
from panel.shared import PANEL
from tests.panel.forms import form_fields
from tests.panel.test_panel import client, csrf, login, shops  # noqa: F401 - the fixture


@pytest.fixture
def acme(client: TestClient) -> Iterator[TestClient]:  # noqa: F811
    shops()
    assert login(client, "ana@acme.com.br") == 303
    yield client


def test_a_pool_is_made_with_weights_and_shows_its_link_and_health(acme: TestClient) -> None:
    form = form_fields(acme.get("/pools/new").text, "/pools/new")
    form.update({"id": "black-friday", "bots-0-bot": "acme-bot", "bots-0-weight": "5000"})
    refused = acme.post("/pools/new", data=form)
    assert refused.status_code == 422 and 'data-error-for="bots-0-weight"' in refused.text
    assert "black-friday" not in load_pools()
    form["bots-0-weight"] = "3"
    assert acme.post("/pools/new", data=form, follow_redirects=False).status_code == 303
    assert load_pools()["black-friday"].members == (("acme-bot", 3),)
    mark_unhealthy(PANEL.redis, "acme-bot", 401, "Unauthorized")
    try:
        page = acme.get("/pools").text
        assert "/p/black-friday" in page and 'data-health="down"' in page
    finally:
        PANEL.redis.hdel(UNHEALTHY, "acme-bot")
    assert acme.post("/pools/new", data=form).status_code == 422  # the name is taken
    assert AuditEntry.select().where(AuditEntry.object == "pool black-friday").exists()


def test_a_broadcast_is_counted_sent_later_and_stopped(acme: TestClient) -> None:
    page = acme.get("/broadcasts").text
    form = form_fields(page, "/broadcasts")
    form.update({"segment": "all", "action": "preview"})
    counted = acme.post("/broadcasts", data=form)
    assert 'data-reach="1"' in counted.text  # acme's one lead
    form.update({"action": "send", "text": ""})
    refused = acme.post("/broadcasts", data=form)
    assert (
        refused.status_code == 422 and 'data-error-for="text"' in refused.text and "Escreva a mensagem" in refused.text
    )
    later = (utcnow() + dt.timedelta(days=1)).replace(tzinfo=dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=-3)))
    form.update({"text": "Volta! 20% off hoje.", "offer": "vip", "at": later.strftime("%Y-%m-%dT%H:%M")})
    made = acme.post("/broadcasts", data=form, follow_redirects=False)
    assert made.status_code == 303
    row = Broadcast.get(Broadcast.bot_id == "acme-bot")
    assert row.state == "scheduled" and abs((row.starts_at - (utcnow() + dt.timedelta(days=1))).total_seconds()) < 120
    page = acme.get("/broadcasts").text
    assert f'data-broadcast="{row.id}"' in page
    acme.post(f"/broadcasts/{row.id}/stop", data={"csrf": csrf(page)})
    assert Broadcast.get_by_id(row.id).state == "stopped"
    actions = {e.action for e in AuditEntry.select()}
    assert {"broadcast created", "broadcast stopped"} <= actions


def test_a_broadcast_and_a_downsell_carry_an_uploaded_image(acme: TestClient) -> None:
    from catalog.snapshot import load_bots
    from gateways import media

    jpeg = b"\xff\xd8\xff\xe0" + b"\x05" * 500
    form = form_fields(acme.get("/broadcasts").text, "/broadcasts")
    form.update({"segment": "all", "text": "Com foto", "action": "send"})
    made = acme.post("/broadcasts", data=form, files={"media_file": ("f.jpg", jpeg, "image/jpeg")},
                     follow_redirects=False)  # fmt: skip
    assert made.status_code == 303
    row = Broadcast.get(Broadcast.text == "Com foto")
    assert media.is_ref(row.media_url) and media.load(row.media_url)[1] == jpeg
    refused = acme.post("/broadcasts", data=form, files={"media_file": ("f.txt", b"hello", "text/plain")})
    assert refused.status_code == 422 and 'data-error-for="media_url"' in refused.text
    page = form_fields(acme.get("/bots/acme-bot/selling").text, "/bots/acme-bot/selling")
    upload = {"downsells-0-media_file": ("d.jpg", jpeg, "image/jpeg")}
    saved = acme.post("/bots/acme-bot/selling", data=page, files=upload, follow_redirects=False)
    assert saved.status_code == 303
    assert load_bots()["acme-bot"].downsells[0].media_url == row.media_url  # the same bytes: the same file
