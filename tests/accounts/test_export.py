"""`ops export --account SLUG` (CONTRACT §14): the account's configuration as a file that `ops apply`
takes back with nothing changed, holding nothing of another account."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

from click.testing import CliRunner

from ops.cli import cli
from tests.actors.test_selling import selling_config
from tests.actors.test_subscriptions import vip_config
from tests.actors.test_whatsapp import whatsapp_config
from tests.conftest import apply_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo.toml"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_an_exported_account_applies_back_with_nothing_changed(tmp_path: Path) -> None:
    run("accounts", "create", "acme", "--email", "ana@acme.com.br")
    run("accounts", "create", "beta", "--email", "bia@beta.com.br")
    assert run("apply", str(EXAMPLE))[0] == 0  # the default account's: not acme's
    for data in (selling_config(), vip_config(), whatsapp_config()):  # selling, subscriptions, both WhatsApps
        data = copy.deepcopy(data)
        data["account"] = "acme"
        for bot in data["bots"]:
            bot["id"] = f"acme-{bot['id']}"
            if "token" in bot:
                bot["token"] = bot["token"].replace(":", "1:", 1)
        for gateway in data.get("gateways", []):
            gateway["id"] = f"acme-{gateway['id']}"
        for bot in data["bots"]:
            if "gateway" in bot:
                bot["gateway"] = f"acme-{bot['gateway']}"
        data["pools"] = [{"id": "acme-pool", "bots": [{"bot": data["bots"][0]["id"], "weight": 3}]}]
        apply_config(data)
    code, text = run("export", "--account", "acme")
    assert code == 0, text
    doc = tomllib.loads(text)
    assert doc["account"] == "acme" and doc["bots"] and doc["pools"][0]["id"] == "acme-pool"
    assert all(b["id"].startswith("acme-") for b in doc["bots"]) and all(
        g["id"].startswith("acme-") for g in doc["gateways"])  # fmt: skip
    assert "123456:TEST" not in text  # the default account's token
    exported = tmp_path / "acme.toml"
    exported.write_text(text)
    assert run("apply", str(exported)) == (0, "nothing changed\n")
    assert run("export", "--account", "acme") == (0, text)


def test_export_of_an_unknown_account_is_refused() -> None:
    code, out = run("export", "--account", "ghost")
    assert code != 0 and "--account: slug: no account 'ghost'" in out
