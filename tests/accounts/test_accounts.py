"""Seller accounts (CONTRACT §14): `ops accounts`, a configuration applied into its account (and
refused, by key, where it names another account's gateway, bot, pool or token), and a suspended
account's bots selling nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from actors import broadcasts, funnel, payments
from actors.channels import Channels
from actors.throttle import Throttle
from actors.updates import upsert_lead
from catalog.snapshot import load_bots
from db.models import Account, Bot, Charge, Followup, Gateway, Offer
from gateways.channel import Person
from ops.cli import cli
from tests.conftest import FakeTelegramTransport

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo.toml"

Apply = Callable[[str], tuple[int, str]]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture
def apply_text(tmp_config: Callable[[str], Path]) -> Apply:
    return lambda text: run("apply", str(tmp_config(text)))


def for_account(slug: str, text: str | None = None) -> str:
    return f'account = "{slug}"\n' + (text if text is not None else EXAMPLE.read_text())


def test_accounts_are_created_listed_suspended_and_resumed() -> None:
    assert run("accounts", "create", "acme", "--email", "Ana@Acme.com.br") == (0, "created account acme (seller)\n")
    assert run("accounts", "create", "ops", "--email", "ops@grimbots.example", "--operator")[0] == 0
    code, out = run("accounts", "list", "--json")
    assert code == 0
    rows = {r["slug"]: r for r in json.loads(out)}
    assert rows["acme"]["email"] == "ana@acme.com.br" and rows["acme"]["role"] == "seller"
    assert rows["ops"]["role"] == "operator" and rows["acme"]["state"] == "active"
    assert run("accounts", "suspend", "acme") == (0, "account acme suspended\n")
    assert run("accounts", "suspend", "acme") == (0, "account acme was suspended already\n")
    assert Account.get(Account.slug == "acme").state == "suspended"
    assert run("accounts", "resume", "acme") == (0, "account acme resumed\n")
    assert run("accounts", "set-email", "acme", "--email", "ops@grimbots.example")[1].startswith("Error: email:")
    assert run("accounts", "set-email", "acme", "--email", "Nova@Acme.com.br") == (0, "account acme: e-mail set\n")
    assert Account.get(Account.slug == "acme").email == "nova@acme.com.br"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "acme", "--email", "other@x.com"), "slug: an account 'acme' exists already"),
        (("create", "beta", "--email", "ana@acme.com.br"), "email: another account has this e-mail"),
        (("create", "bad slug", "--email", "b@x.com"), "slug: must be 1–64 characters"),
        (("create", "beta", "--email", "not-an-address"), "email: 'not-an-address' is not an e-mail address"),
        (("suspend", "nope"), "slug: no account 'nope'"),
        (("resume", "nope"), "slug: no account 'nope'"),
        (("set-email", "nope", "--email", "a@b.com"), "slug: no account 'nope'"),
        (("set-email", "acme", "--email", "nope"), "email: 'nope' is not an e-mail address"),
    ],
)
def test_account_commands_name_what_is_wrong_and_change_nothing(args: tuple[str, ...], message: str) -> None:
    run("accounts", "create", "acme", "--email", "ana@acme.com.br")
    code, out = run("accounts", *args)
    assert code != 0 and message in out
    assert Account.select().count() == 1


def test_a_file_applies_into_the_account_it_names_and_without_one_into_default(apply_text: Apply) -> None:
    run("accounts", "create", "acme", "--email", "ana@acme.com.br")
    code, out = apply_text(for_account("acme"))
    assert code == 0, out
    acme = Account.get(Account.slug == "acme")
    assert {b.account_id for b in Bot.select()} == {acme.id} == {g.account_id for g in Gateway.select()}
    assert apply_text(for_account("acme")) == (0, "nothing changed\n")
    assert apply_text(EXAMPLE.read_text().replace('id = "demo"', 'id = "demo2"').replace(
        'token = "123456:TEST"', 'token = "999999:OTHER"').replace('id = "main"', 'id = "main2"').replace(
        'gateway = "main"', 'gateway = "main2"'))[0] == 0  # fmt: skip
    default = Account.get(Account.slug == "default")
    assert Bot.get(Bot.id == "demo2").account_id == default.id


@pytest.mark.parametrize(
    ("edit", "key", "problem"),
    [
        (lambda t: t, "gateways[0].id", "'main' belongs to another account"),
        (lambda t: t.replace('id = "main"', 'id = "main-b"').replace('gateway = "main"', 'gateway = "main-b"'),
         "bots[0].id", "'demo' belongs to another account"),
        (lambda t: t.replace('id = "main"', 'id = "main-b"').replace('gateway = "main"', 'gateway = "main-b"')
         .replace('id = "demo"', 'id = "demo-b"'), "bots[0].token", "is the token of another account's bot"),
        (lambda t: t.replace('id = "main"\n', 'id = "main-b"\n', 1).replace('id = "demo"', 'id = "demo-b"')
         .replace('token = "123456:TEST"', 'token = "999999:OTHER"'), "bots[0].gateway", "no gateway 'main'"),
    ],
)  # fmt: skip
def test_another_accounts_gateway_bot_or_token_is_refused_by_key_and_nothing_is_written(
    apply_text: Apply, edit: Callable[[str], str], key: str, problem: str
) -> None:
    run("accounts", "create", "acme", "--email", "ana@acme.com.br")
    run("accounts", "create", "beta", "--email", "bia@beta.com.br")
    assert apply_text(for_account("acme"))[0] == 0
    before = (Gateway.select().count(), Bot.select().count(), Offer.select().count())
    code, out = apply_text(for_account("beta", edit(EXAMPLE.read_text())))
    assert code != 0 and f"{key}: {problem}" in out, out
    assert (Gateway.select().count(), Bot.select().count(), Offer.select().count()) == before
    assert not Bot.select().where(Bot.account == Account.get(Account.slug == "beta").id).exists()


def test_a_file_naming_an_account_that_does_not_exist_is_refused(apply_text: Apply) -> None:
    code, out = apply_text(for_account("ghost"))
    assert code != 0 and "account: no account 'ghost'" in out and not Bot.select().exists()


def test_a_suspended_accounts_bot_answers_unavailable_creates_no_charge_and_sends_no_follow_up(
    apply_text: Apply, channels: Channels, throttle: Throttle, fake_telegram: FakeTelegramTransport
) -> None:
    run("accounts", "create", "acme", "--email", "ana@acme.com.br")
    assert apply_text(for_account("acme"))[0] == 0
    bot = load_bots()["demo"]
    lead = upsert_lead(bot.id, Person(555, "Ana"), 555)
    run("accounts", "suspend", "acme")
    bot = load_bots()["demo"]
    assert bot.suspended
    funnel.send_welcome(bot, lead, 1, channels, throttle)
    [(method, params)] = fake_telegram.calls
    assert method == "sendMessage" and params["text"] == bot.text("unavailable") and "reply_markup" not in params
    fake_telegram.calls.clear()
    vip = next(o for o in bot.offers if o.slug == "vip")
    assert payments.checkout(bot, lead, vip.id, 2, None, channels, throttle) is None
    assert not Charge.select().exists()
    assert [p["text"] for _, p in fake_telegram.calls] == [bot.text("unavailable")]
    with pytest.raises(broadcasts.BroadcastError, match="suspended"):
        broadcasts.create(bot, "all", "Promo")
    run("accounts", "resume", "acme")
    assert not load_bots()["demo"].suspended


def test_a_follow_up_of_a_suspended_account_is_cancelled(apply_text: Apply) -> None:
    from actors.followups import why_not
    from db.models import Lead

    run("accounts", "create", "acme", "--email", "ana@acme.com.br")
    assert apply_text(for_account("acme"))[0] == 0
    lead = upsert_lead("demo", Person(556, "Bia"), 556)
    run("accounts", "suspend", "acme")
    row = Followup(bot_id="demo", lead_id=lead.lead_id, kind="downsell", position=0, offer_id=0)
    assert why_not(row, load_bots()["demo"], Lead.get_by_id(lead.lead_id)) == "account suspended"


def test_every_change_an_apply_makes_and_every_suspension_is_audited_with_secrets_masked(apply_text: Apply) -> None:
    from db.models import AuditEntry

    run("accounts", "create", "acme", "--email", "ana@acme.com.br")
    assert apply_text(for_account("acme"))[0] == 0
    acme = Account.get(Account.slug == "acme")
    entries = list(AuditEntry.select().where(AuditEntry.account == acme.id).order_by(AuditEntry.id))
    assert {(e.action, e.object) for e in entries} >= {("gateway created", "gateway main"), ("bot created", "bot demo"),
                                                        ("offer created", "offer demo/vip")}  # fmt: skip
    bot = next(e for e in entries if e.object == "bot demo")
    assert bot.actor == "ops apply" and bot.before is None and bot.after["welcome_text"]
    assert bot.after["token"] == "…TEST" and "123456:TEST" not in str(bot.after)  # the last 4 at most
    gateway = next(e for e in entries if e.object == "gateway main")
    assert gateway.after["settings"]["pix_key"] == "….com" and gateway.after["webhook_secret"].startswith("…")
    renamed = EXAMPLE.read_text().replace('label = "VIP mensal', 'label = "VIP Mensal')
    assert apply_text(for_account("acme", renamed))[0] == 0
    [changed] = AuditEntry.select().where(AuditEntry.action == "offer updated")
    assert changed.before == {"label": "VIP mensal – R$ 19,90"} and changed.after == {"label": "VIP Mensal – R$ 19,90"}
    run("accounts", "suspend", "acme")
    [suspended] = AuditEntry.select().where(AuditEntry.action == "account suspended")
    assert (suspended.account_id, suspended.before, suspended.after) == (acme.id, {"state": "active"},
                                                                          {"state": "suspended"})  # fmt: skip
