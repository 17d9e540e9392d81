"""Every kind of refusal the catalog has, made in the browser, is shown beside the field it names,
in Portuguese (issue: the seller panel), and nothing of the refused save is written."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from catalog.snapshot import load_bots
from tests.panel.forms import form_fields
from tests.panel.test_panel import client, login, shops  # noqa: F401 - the fixture

EDIT, SELLING, TEXTS = "/bots/acme-bot/edit", "/bots/acme-bot/selling", "/bots/acme-bot/texts"
CASES = [
    (EDIT, {"welcome-text": "", "welcome-media_url": ""}, "welcome-text"),
    (EDIT, {"welcome-media_url": "ftp://x/y.jpg"}, "welcome-media_url"),
    (EDIT, {"offers-0-price": "abc"}, "offers-0-price"),
    (EDIT, {"offers-0-price": "0"}, "offers-0-price"),
    (EDIT, {"offers-0-delivery_link": "", "offers-0-delivery_chat_id": ""}, "offers-0-delivery_link"),
    (
        EDIT,
        {"offers-0-delivery_link": "https://t.me/+x", "offers-0-delivery_chat_id": "-100123"},
        "offers-0-delivery_chat_id",
    ),
    (EDIT, {"offers-0-delivery_link": "", "offers-0-delivery_chat_id": "grupo"}, "offers-0-delivery_chat_id"),
    (EDIT, {"offers-0-duration": "um mês"}, "offers-0-duration"),
    (EDIT, {"offers-0-delivery_chat_id": "", "offers-0-duration": "30d"}, "offers-0-duration"),
    (EDIT, {"offers-0-label": "x" * 129}, "offers-0-label"),
    (EDIT, {"offers-0-delivery_link": "t.me/sem-https"}, "offers-0-delivery_link"),
    (EDIT, {"checkout-expires_minutes": "2"}, "checkout-expires_minutes"),
    (EDIT, {"pixel_id": "123"}, "pixel_access_token"),
    (EDIT, {"tiktok_access_token": "tt-token"}, "tiktok_pixel_code"),
    (EDIT, {"gateway": ""}, "gateway"),
    (SELLING, {"bump-vip": "vip"}, "offers-0-bump"),
    (SELLING, {"downsells-0-discount_percent": "0", "downsells-0-price": ""}, "downsells-0-discount_percent"),
    (SELLING, {"downsells-0-discount_percent": "10"}, "downsells-0-discount_percent"),
    (SELLING, {"downsells-0-price": "dez"}, "downsells-0-price"),
    (SELLING, {"downsells-0-delay": "logo"}, "downsells-0-delay"),
    (SELLING, {"downsells-0-offer": ""}, "downsells-0-offer"),
    (SELLING, {"upsells-0-media_url": "x.jpg"}, "upsells-0-media_url"),
    (SELLING, {"subscriptions-remind_before": "ontem"}, "subscriptions-remind_before-0"),
    (SELLING, {"bumps-pack-accept": "x" * 65}, "bumps-pack-accept"),
    (TEXTS, {"texts-pix": "Pague aqui"}, "texts-pix"),
    (TEXTS, {"texts-payment_pending": "x" * 201}, "texts-payment_pending"),
]


@pytest.fixture
def acme(client: TestClient) -> Iterator[TestClient]:  # noqa: F811
    shops()
    assert login(client, "ana@acme.com.br") == 303
    yield client


@pytest.mark.parametrize(("page", "change", "field"), CASES, ids=[f"{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_a_refusal_is_shown_beside_its_field_in_portuguese(acme: TestClient, page: str, change: dict[str, str],
                                                         field: str) -> None:  # fmt: skip
    before = load_bots()["acme-bot"]
    form = form_fields(acme.get(page).text, page)
    form.update(change)
    refused = acme.post(page, data=form)
    assert refused.status_code == 422, refused.text[-2000:]
    shown = re.search(r'data-error-for="([^"]+)">([^<]*)<', refused.text)
    assert shown is not None and shown.group(1) == field, shown and shown.groups()
    words = shown.group(2)
    assert not re.search(r"\b(must|is required|needs|give)\b", words), words  # the seller's language
    assert load_bots()["acme-bot"] == before  # nothing written
