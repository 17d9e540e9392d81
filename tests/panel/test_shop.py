"""The shop edited in the browser (issue: the seller panel): gateways with write-only credentials,
the bot editor (welcome, offers, checkout, tracking) saving through the catalog's validation and
apply, each refusal shown beside the field it names, in Portuguese, and nothing of it written."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from starlette.testclient import TestClient

from catalog.snapshot import load_bots, load_gateways
from db.models import AuditEntry, Offer
from tests.panel.forms import form_fields
from tests.panel.test_panel import client, csrf, login, shops  # noqa: F401 - the fixture


@pytest.fixture
def acme(client: TestClient) -> Iterator[TestClient]:  # noqa: F811
    shops()  # acme and beta, each a gateway, a bot and a paid sale
    assert login(client, "ana@acme.com.br") == 303
    yield client


def test_a_gateway_is_connected_with_a_made_secret_and_its_credentials_never_come_back(acme: TestClient) -> None:
    form = acme.get("/gateways/new", params={"kind": "sandbox"}).text
    assert 'name="pix_key"' in form and 'name="merchant_city"' in form
    too_long = acme.post("/gateways/new", data={"csrf": csrf(form), "kind": "sandbox", "id": "pix-acme",
                                                "pix_key": "+5511987654321", "merchant_name": "A" * 30,
                                                "merchant_city": "Sao Paulo"})  # fmt: skip
    assert too_long.status_code == 422 and 'data-error-for="merchant_name"' in too_long.text
    assert "pix-acme" not in load_gateways()
    done = acme.post("/gateways/new", data={"csrf": csrf(form), "kind": "sandbox", "id": "pix-acme",
                                            "pix_key": "+5511987654321", "merchant_name": "Acme",
                                            "merchant_city": "Sao Paulo"}, follow_redirects=False)  # fmt: skip
    assert done.status_code == 303
    made = load_gateways()["pix-acme"]
    assert len(made.webhook_secret) >= 24 and made.settings["pix_key"] == "+5511987654321"
    page = acme.get("/gateways/pix-acme").text
    assert "987654321" not in page and made.webhook_secret not in page and "…" in page  # write-only
    kept = acme.post("/gateways/pix-acme", data={"csrf": csrf(page), "pix_key": "", "webhook_secret": "",
                                                 "merchant_name": "Acme Ltda", "merchant_city": "Recife"})  # fmt: skip
    assert kept.status_code == 200 and "Salvo" in kept.text
    again = load_gateways()["pix-acme"]
    assert again.settings["pix_key"] == "+5511987654321" and again.webhook_secret == made.webhook_secret
    assert again.settings["merchant_city"] == "Recife"
    theirs = {"csrf": csrf(form), "kind": "sandbox", "id": "beta-main", "pix_key": "x@y.com", "merchant_name": "A",
              "merchant_city": "B"}  # fmt: skip
    taken = acme.post("/gateways/new", data=theirs)
    assert taken.status_code == 422 and 'data-error-for="id"' in taken.text
    assert acme.get("/gateways/beta-main").status_code == 404
    entry = AuditEntry.get(AuditEntry.object == "gateway pix-acme")
    assert "987654321" not in str(entry.after)  # masked in the log


def editor_form(page: str) -> dict[str, str]:
    return form_fields(page, "/bots/acme-bot/edit")


def test_the_bot_editor_saves_the_welcome_and_offers_and_shows_refusals_beside_their_fields(acme: TestClient) -> None:
    page = acme.get("/bots/acme-bot/edit").text
    form = editor_form(page)
    assert form["offers-0-id"] == "vip" and form["gateway"] == "acme-main"
    new = next(k.split("-")[1] for k, v in form.items() if k.endswith("-id") and k.startswith("offers-") and not v)
    form.update({"welcome-text": "Bem-vindo à Acme!", f"offers-{new}-label": "Combo Ouro",
                 f"offers-{new}-price": "1.234,50", f"offers-{new}-delivery_link": "https://acme.example/ouro",
                 f"offers-{new}-position": "0"})  # fmt: skip
    saved = acme.post("/bots/acme-bot/edit", data=form, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    bot = load_bots()["acme-bot"]
    assert bot.welcome_text == "Bem-vindo à Acme!"
    assert bot.offers[0].slug == "combo-ouro" and bot.offers[0].price == Decimal("1234.50")
    page = acme.get("/bots/acme-bot/edit").text
    assert "Salvo" in acme.get("/bots/acme-bot/edit?saved=1").text
    form = editor_form(page)
    form["offers-0-price"] = "dezenove"
    refused = acme.post("/bots/acme-bot/edit", data=form)
    assert refused.status_code == 422 and 'data-error-for="offers-0-price"' in refused.text
    assert "Escreva o preço como 19,90." in refused.text
    form["offers-0-price"] = "19,90"
    form["offers-0-delivery_link"] = ""
    refused = acme.post("/bots/acme-bot/edit", data=form)
    assert 'data-error-for="offers-0-delivery_link"' in refused.text and "Diga o que a oferta entrega" in refused.text
    form.update({"offers-0-delivery_link": "https://acme.example/ouro", "welcome-text": "", "welcome-media_url": ""})
    assert 'data-error-for="welcome-text"' in acme.post("/bots/acme-bot/edit", data=form).text
    assert load_bots()["acme-bot"].welcome_text == "Bem-vindo à Acme!"  # nothing of the refused saves written
    form = editor_form(acme.get("/bots/acme-bot/edit").text)
    form["offers-0-remove"] = "1"
    assert acme.post("/bots/acme-bot/edit", data=form, follow_redirects=False).status_code == 303
    assert "combo-ouro" not in [o.slug for o in load_bots()["acme-bot"].offers]
    assert Offer.get(Offer.slug == "combo-ouro").active is False  # deactivated, never deleted


def test_tracking_credentials_are_write_only(acme: TestClient) -> None:
    form = editor_form(acme.get("/bots/acme-bot/edit").text)
    form.update({"pixel_id": "123456", "pixel_access_token": "EAAB-secret-token-9876"})
    assert acme.post("/bots/acme-bot/edit", data=form, follow_redirects=False).status_code == 303
    page = acme.get("/bots/acme-bot/edit").text
    assert "EAAB-secret-token-9876" not in page and "…9876" in page
    form = editor_form(page)
    form["pixel_access_token"] = ""  # empty keeps it
    acme.post("/bots/acme-bot/edit", data=form)
    assert load_bots()["acme-bot"].pixel_access_token == "EAAB-secret-token-9876"
    assert acme.get("/bots/beta-bot/edit").status_code == 404
    assert acme.post("/bots/beta-bot/edit", data={"csrf": form["csrf"]}).status_code == 404


def test_bumps_upsells_downsells_and_reminders_are_set_in_the_browser(acme: TestClient) -> None:
    page = acme.get("/bots/acme-bot/selling").text
    form = form_fields(page, "/bots/acme-bot/selling")
    assert form["bump-vip"] == "pack"  # as the file set it
    form.update({"bump-anual": "pack", "bumps-pack-text": "Leva o Pack também?", "downsells-2-when": "unpaid",
                 "downsells-2-delay": "30m", "downsells-2-offer": "anual", "downsells-2-price": "99,90",
                 "downsells-2-text": "Anual por R$ 99,90", "subscriptions-remind_before": "3d, 1d"})  # fmt: skip
    form.update({"upsells-0-remove": "1"})
    saved = acme.post("/bots/acme-bot/selling", data=form, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    bot = load_bots()["acme-bot"]
    assert {o.slug: o.bump for o in bot.offers}["anual"] == "pack" and bot.bumps["pack"].text == "Leva o Pack também?"
    assert bot.upsells == () and len(bot.downsells) == 3 and bot.downsells[2].price == Decimal("99.90")
    assert bot.remind_before == (3 * 86400, 86400)
    form = form_fields(acme.get("/bots/acme-bot/selling").text, "/bots/acme-bot/selling")
    form.update({"downsells-0-discount_percent": "150", "downsells-0-price": ""})
    refused = acme.post("/bots/acme-bot/selling", data=form)
    assert refused.status_code == 422 and 'data-error-for="downsells-0-discount_percent"' in refused.text
    form.update({"downsells-0-discount_percent": "50", "subscriptions-remind_before": "amanhã"})
    refused = acme.post("/bots/acme-bot/selling", data=form)
    assert 'data-error-for="subscriptions-remind_before-0"' in refused.text


def test_the_bots_texts_fall_back_to_the_defaults(acme: TestClient) -> None:
    page = acme.get("/bots/acme-bot/texts").text
    form = form_fields(page, "/bots/acme-bot/texts")
    form.update({"texts-payment_confirmed": "Oba! Pagamento confirmado.", "texts-pix": "Pague: sem código"})
    refused = acme.post("/bots/acme-bot/texts", data=form)
    assert refused.status_code == 422 and 'data-error-for="texts-pix"' in refused.text
    form["texts-pix"] = ""
    assert acme.post("/bots/acme-bot/texts", data=form, follow_redirects=False).status_code == 303
    bot = load_bots()["acme-bot"]
    assert bot.text("payment_confirmed") == "Oba! Pagamento confirmado." and "{code}" in bot.text("pix")


def test_a_cloud_api_number_is_added_and_its_page_says_what_to_paste_at_meta(acme: TestClient) -> None:
    page = acme.get("/bots/new/whatsapp", params={"channel": "whatsapp_cloud"}).text
    form = form_fields(page, "/bots/new/whatsapp")
    form.update({"id": "zap-acme", "number": "5511999990000", "phone_number_id": "1234567890",
                 "waba_id": "987654321", "access_token": "EAAG-cloud-token-1111", "app_secret": "app-secret-2222",
                 "gateway": "acme-main"})  # fmt: skip
    bad = acme.post("/bots/new/whatsapp", data={**form, "number": "+55 11 9999"})
    assert bad.status_code == 422 and 'data-error-for="number"' in bad.text
    done = acme.post("/bots/new/whatsapp", data=form, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].startswith("/bots/zap-acme/edit")
    bot = load_bots()["zap-acme"]
    assert bot.channel == "whatsapp_cloud" and bot.whatsapp is not None and len(bot.whatsapp.verify_token or "") >= 24
    editor = acme.get("/bots/zap-acme/edit").text
    assert "/webhook/whatsapp/zap-acme" in editor and bot.whatsapp.verify_token in editor
    assert "EAAG-cloud-token-1111" not in editor and "app-secret-2222" not in editor
    taken = acme.post("/bots/new/whatsapp", data=form)
    assert taken.status_code == 422 and 'data-error-for="id"' in taken.text


def test_the_sandbox_connection_test_says_it_is_ready(acme: TestClient) -> None:
    page = acme.get("/gateways/acme-main").text
    tested = acme.post("/gateways/acme-main/test", data={"csrf": csrf(page)})
    assert tested.status_code == 200 and 'data-probe="ok"' in tested.text and "Sandbox pronto" in tested.text


def test_the_purchase_is_sent_again_under_the_same_event_id(acme: TestClient) -> None:
    from db.models import Charge, PixelEvent

    form = editor_form(acme.get("/bots/acme-bot/edit").text)
    form.update({"pixel_id": "555000", "pixel_access_token": "EAAB-pixel-token"})
    assert acme.post("/bots/acme-bot/edit", data=form, follow_redirects=False).status_code == 303
    sale = Charge.get(Charge.bot_id == "acme-bot")
    page = acme.get(f"/sales/{sale.id}").text
    assert "Nenhum evento de compra" in page  # the bot had no pixel when it sold
    sent = acme.post(f"/sales/{sale.id}/purchase", data={"csrf": csrf(page)})
    assert 'data-resent="1"' in sent.text and 'data-event="meta"' in sent.text
    [event] = PixelEvent.select().where(PixelEvent.charge_id == sale.id)
    assert event.event_id == f"pur.{sale.id}" and event.event_name == "Purchase" and event.state == "pending"
    PixelEvent.update(state="failed", attempts=5, error="rejected").execute()
    acme.post(f"/sales/{sale.id}/purchase", data={"csrf": csrf(page)})
    [again] = PixelEvent.select().where(PixelEvent.charge_id == sale.id)
    assert (again.id, again.event_id, again.state, again.attempts) == (event.id, event.event_id, "pending", 0)
    assert AuditEntry.select().where(AuditEntry.action == "purchase sent again").count() == 2


def test_a_funnel_is_exported_and_imported_into_another_bot(acme: TestClient) -> None:
    import tomllib

    exported = acme.get("/bots/acme-bot/funnel.toml")
    assert "attachment" in exported.headers["content-disposition"]
    funnel = tomllib.loads(exported.text)
    assert {"welcome", "offers"} <= set(funnel) and "token" not in exported.text and "400:ACME" not in exported.text
    funnel["welcome"]["text"] = "Funil importado!"
    import tomli_w

    page = acme.get("/bots/acme-bot/edit").text
    bad = acme.post("/bots/acme-bot/funnel", data={"csrf": csrf(page)},
                    files={"file": ("f.toml", b'token = "x"\n', "application/toml")})  # fmt: skip
    assert bad.status_code == 422 and "chaves que um funil não tem: token" in bad.text
    broken = dict(funnel, offers=[dict(funnel["offers"][0], price="grátis")])
    refused = acme.post("/bots/acme-bot/funnel", data={"csrf": csrf(page)},
                        files={"file": ("f.toml", tomli_w.dumps(broken).encode(), "application/toml")})  # fmt: skip
    assert refused.status_code == 422 and "offers[0].price: Escreva o preço" in refused.text
    done = acme.post("/bots/acme-bot/funnel", data={"csrf": csrf(page)},
                     files={"file": ("f.toml", tomli_w.dumps(funnel).encode(), "application/toml")},
                     follow_redirects=False)  # fmt: skip
    assert done.status_code == 303 and load_bots()["acme-bot"].welcome_text == "Funil importado!"
    assert load_bots()["acme-bot"].token == "400:ACME"  # the credentials stay


def test_the_welcome_image_is_uploaded_checked_and_kept_by_its_hash(acme: TestClient) -> None:
    from gateways import media

    png = b"\x89PNG\r\n\x1a\n" + b"\x07" * 300
    form = editor_form(acme.get("/bots/acme-bot/edit").text)
    form["welcome-media_url"] = ""
    bad = acme.post(
        "/bots/acme-bot/edit", data=form, files={"welcome-media_file": ("foto.gif", b"GIF89a....", "image/gif")}
    )
    assert bad.status_code == 422 and 'data-error-for="welcome-media_url"' in bad.text and "JPEG ou PNG" in bad.text
    done = acme.post("/bots/acme-bot/edit", data=form, files={"welcome-media_file": ("foto.png", png, "image/png")},
                     follow_redirects=False)  # fmt: skip
    assert done.status_code == 303
    ref = load_bots()["acme-bot"].welcome_media_url or ""
    assert media.is_ref(ref) and media.load(ref)[1] == png
    kept = editor_form(acme.get("/bots/acme-bot/edit").text)
    assert kept["welcome-media_url"] == ref  # saving again without a new file keeps it
    acme.post("/bots/acme-bot/edit", data=kept)
    assert load_bots()["acme-bot"].welcome_media_url == ref


def test_the_seller_sees_their_uploaded_image_and_can_take_it_off(acme: TestClient) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x09" * 300
    form = editor_form(acme.get("/bots/acme-bot/edit").text)
    acme.post("/bots/acme-bot/edit", data=form, files={"welcome-media_file": ("capa.png", png, "image/png")})
    ref = load_bots()["acme-bot"].welcome_media_url or ""
    page = acme.get("/bots/acme-bot/edit").text
    assert f'src="/media/{ref[6:]}"' in page
    shown = acme.get(f"/media/{ref[6:]}")
    assert shown.status_code == 200 and shown.content == png and shown.headers["content-type"] == "image/png"
    form = editor_form(page)
    form.update({"welcome-media_remove": "1", "welcome-text": "Só texto agora"})
    acme.post("/bots/acme-bot/edit", data=form)
    assert load_bots()["acme-bot"].welcome_media_url is None
    assert acme.get(f"/media/{ref[6:]}").status_code == 404  # no bot of the account uses it any more


def test_a_form_larger_than_any_upload_is_refused_before_it_is_read(acme: TestClient) -> None:
    page = acme.get("/bots/acme-bot/edit").text
    big = acme.post("/bots/acme-bot/edit", data={"csrf": csrf(page)},
                    files={"welcome-media_file": ("v.mp4", b"\x00" * (21 * 1024 * 1024), "video/mp4")})  # fmt: skip
    assert big.status_code == 413 and "grande demais" in big.text


def test_a_whatsapp_numbers_keys_and_pace_are_changed_with_secrets_kept(acme: TestClient) -> None:
    form = form_fields(acme.get("/bots/new/whatsapp", params={"channel": "whatsapp_cloud"}).text, "/bots/new/whatsapp")
    form.update({"id": "zap-acme", "number": "5511999990000", "phone_number_id": "1234567890", "waba_id": "987654321",
                 "access_token": "EAAG-cloud-token-1111", "app_secret": "app-secret-2222"})  # fmt: skip
    assert acme.post("/bots/new/whatsapp", data=form, follow_redirects=False).status_code == 303
    page = acme.get("/bots/zap-acme/channel").text
    assert "EAAG-cloud-token-1111" not in page and "…1111" in page
    change = form_fields(page, "/bots/zap-acme/channel")
    change.update({"rate_per_minute": "40", "number": "5511999991111"})
    assert acme.post("/bots/zap-acme/channel", data=change, follow_redirects=False).status_code == 303
    bot = load_bots()["zap-acme"]
    assert bot.whatsapp is not None and bot.whatsapp.number == "5511999991111" and bot.whatsapp.rate_per_minute == 40
    assert bot.whatsapp.access_token == "EAAG-cloud-token-1111"  # a blank credential keeps the stored one
    refused = acme.post("/bots/zap-acme/channel", data={**change, "rate_per_minute": "9000"})
    assert refused.status_code == 422 and 'data-error-for="rate_per_minute"' in refused.text
    telegram = form_fields(acme.get("/bots/acme-bot/channel").text, "/bots/acme-bot/channel")
    bad = acme.post("/bots/acme-bot/channel", data={**telegram, "token": "nope"})
    assert bad.status_code == 422 and 'data-error-for="token"' in bad.text
    assert load_bots()["acme-bot"].token == "400:ACME"
