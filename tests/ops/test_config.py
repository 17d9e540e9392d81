from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

import catalog
from db.database import db
from db.models import Bot, ConfigState, Gateway, Offer
from ops.cli import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo.toml"


def run_apply(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["apply", str(path)])
    return result.exit_code, result.output


def test_apply_example_then_again_changes_nothing() -> None:
    code, out = run_apply(EXAMPLE)
    assert code == 0, out
    assert "created gateway main" in out and "created bot demo" in out and "created offer demo/vip" in out
    version = ConfigState.get_by_id(1).version
    code, out = run_apply(EXAMPLE)
    assert code == 0
    assert out.strip() == "nothing changed"
    assert ConfigState.get_by_id(1).version == version
    bot = Bot.get_by_id("demo")
    assert bot.token == "123456:TEST" and bot.gateway_id == "main"
    assert [o.price for o in Offer.select().order_by(Offer.position)] == [Decimal("19.90"), Decimal("149.90"),
                                                                          Decimal("9.90")]  # fmt: skip


def test_credentials_are_encrypted_at_rest() -> None:
    run_apply(EXAMPLE)
    raw = db.execute_sql("SELECT token, webhook_secret FROM bot").fetchone()
    assert "123456:TEST" not in raw[0] and "tg-secret-1" not in raw[1]
    raw = db.execute_sql("SELECT settings, webhook_secret FROM gateway").fetchone()
    assert "pix@example.com" not in raw[0] and "whsec-1" not in raw[1]


def test_changed_value_is_updated_and_removed_offer_deactivated(tmp_config: Callable[[str], Path]) -> None:
    run_apply(EXAMPLE)
    text = EXAMPLE.read_text().replace('price = "19.90"', 'price = "24.90"')
    text = text[: text.index('[[bots.offers]]\nid = "vip-anual"')]
    code, out = run_apply(tmp_config(text))
    assert code == 0, out
    assert "updated offer demo/vip" in out and "deactivated offer demo/vip-anual" in out
    assert Offer.get(Offer.slug == "vip").price == Decimal("24.90")
    assert not Offer.get(Offer.slug == "vip-anual").active


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda t: t.replace('username = "demo_bot"', 'username = "demo_bot"\ncolour = "red"'), "bots[0].colour"),
        (lambda t: t.replace('price = "19.90"', 'price = "19,90"'), "bots[0].offers[0].price"),
        (lambda t: t.replace('price = "19.90"', "price = 19.9"), "bots[0].offers[0].price"),
        (lambda t: t.replace('price = "19.90"', 'price = "0"'), "bots[0].offers[0].price"),
        (lambda t: t.replace('gateway = "main"', 'gateway = "nope"'), "bots[0].gateway"),
        (lambda t: t.replace('kind = "sandbox"', 'kind = "paypal"'), "gateways[0].kind"),
        (
            lambda t: t.replace('webhook_secret = "tg-secret-1"', 'webhook_secret = "bad secret!"'),
            "bots[0].webhook_secret",
        ),
        (lambda t: t.replace('token = "123456:TEST"', 'token = "nope"'), "bots[0].token"),
        (
            lambda t: t.replace('merchant_city = "SAO PAULO"', 'merchant_city = "SAO PAULO DO NORTE E SUL"'),
            "gateways[0].merchant_city",
        ),
        (lambda t: t.replace('delivery_link = "https://t.me/+AbCdEf"', ""), "bots[0].offers[0].delivery_link"),
        (lambda t: t + "\n[extra]\nx = 1\n", "extra"),
        (lambda t: t.replace("check_button =", "chek_button ="), "bots[0].texts.chek_button"),
        (lambda t: t.replace("check_button =", 'pix = "sem código"\ncheck_button ='), "bots[0].texts.pix"),
        (
            lambda t: t.replace("check_button =", f'payment_pending = "{"x" * 201}"\ncheck_button ='),
            "bots[0].texts.payment_pending",
        ),
        (lambda t: t.replace("expires_minutes = 30", "expires_minutes = 1"), "bots[0].checkout.expires_minutes"),
        (lambda t: t.replace("send_qr = true", 'send_qr = "yes"'), "bots[0].checkout.send_qr"),
        (lambda t: t.replace('gateway = "main"', 'gateway = "main"\npixel_id = "123"'), "bots[0].pixel_access_token"),
        (lambda t: t.replace('gateway = "main"', 'gateway = "main"\npixel_id = "12a"'), "bots[0].pixel_id"),
        (
            lambda t: t.replace('gateway = "main"', 'gateway = "main"\npixel_access_token = "EAAB"'),
            "bots[0].pixel_id",
        ),
    ],
)
def test_bad_file_names_the_key_and_writes_nothing(tmp_config: Callable[[str], Path], edit, key: str) -> None:  # type: ignore[no-untyped-def]
    code, out = run_apply(tmp_config(edit(EXAMPLE.read_text())))
    assert code == 1
    assert f"{key}:" in out
    assert Bot.select().count() == 0 and Gateway.select().count() == 0 and Offer.select().count() == 0


def test_invalid_toml_is_a_clear_error(tmp_config: Callable[[str], Path]) -> None:
    code, out = run_apply(tmp_config("[[bots]\nid = "))
    assert code == 1 and "not valid TOML" in out


def test_error_in_second_bot_leaves_first_unwritten() -> None:
    data = {
        "bots": [
            {"id": "a", "token": "1:A", "username": "a_bot_x", "webhook_secret": "s", "welcome": {"text": "hi"}},
            {"id": "b", "token": "2:B", "username": "b_bot_x", "webhook_secret": "s", "welcome": {}},
        ]
    }
    with pytest.raises(catalog.ConfigError) as exc:
        catalog.parse(data, set())
    assert exc.value.key == "bots[1].welcome.text"
    assert Bot.select().count() == 0


def test_migrate_command_is_idempotent() -> None:
    result = CliRunner().invoke(cli, ["migrate"])
    assert result.exit_code == 0 and "schema is up to date" in result.output


def test_buyer_texts_and_checkout_options_reach_the_catalog(tmp_config: Callable[[str], Path]) -> None:
    from catalog.schema import DEFAULT_TEXTS
    from catalog.snapshot import load_bots

    text = EXAMPLE.read_text().replace("send_qr = true", "send_qr = false")
    text = text.replace("check_button =", 'pix = "Copie: {code} ({amount})"\ncheck_button =')
    assert run_apply(tmp_config(text))[0] == 0
    bot = load_bots()["demo"]
    assert not bot.send_qr and bot.charge_minutes == 30 and bot.texts["pix"] == "Copie: {code} ({amount})"
    assert bot.text("charge_failed") == DEFAULT_TEXTS["charge_failed"]  # defaults fill the rest
    assert bot.text("pix", code="X", amount="1,00") == "Copie: X (1,00)"


def test_mercadopago_payer_email_is_accepted(tmp_config: Callable[[str], Path]) -> None:
    text = """
[[gateways]]
id = "mp"
kind = "mercadopago"
webhook_secret = "mp-secret"
access_token = "APP_USR-1"
payer_email = "vendas@example.com"
"""
    code, out = run_apply(tmp_config(text))
    assert code == 0, out
    assert Gateway.get_by_id("mp").settings["payer_email"] == "vendas@example.com"
