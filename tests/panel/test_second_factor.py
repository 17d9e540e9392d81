"""The TOTP second factor (required for operators, optional for sellers): the code asked after the
password, each code usable once, recovery codes shown once and each usable once, a new session id
after the second factor, and the password asked again before turning it off."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pyotp
import pytest
from starlette.testclient import TestClient

from accounts import second_factor
from db.models import Account, AuditEntry
from panel.app import COOKIE, make_app
from tests.panel.test_panel import PASSWORD, client, csrf, login, make_seller  # noqa: F401 - the fixture

EMAIL = "ana@acme.com.br"


def enable(client: TestClient) -> tuple[str, list[str]]:  # noqa: F811
    setup = client.get("/account/2fa").text
    secret = re.search(r'data-secret="([A-Z2-7]{32})"', setup).group(1)  # type: ignore[union-attr]
    wrong = client.post("/account/2fa", data={"csrf": csrf(setup), "secret": secret, "current": "not-my-password",
                                              "code": pyotp.TOTP(secret).now()})  # fmt: skip
    assert wrong.status_code == 422 and "senha atual não confere" in wrong.text  # the password asked again
    done = client.post("/account/2fa", data={"csrf": csrf(setup), "secret": secret, "current": PASSWORD,
                                             "code": pyotp.TOTP(secret).now()})  # fmt: skip
    assert done.status_code == 200
    return secret, re.findall(r'data-code="([0-9a-f-]+)"', done.text)


@pytest.fixture
def seller(client: TestClient) -> Iterator[tuple[TestClient, str, list[str]]]:  # noqa: F811
    make_seller("acme", EMAIL)
    assert login(client, EMAIL) == 303
    secret, codes = enable(client)
    assert len(codes) == 10
    yield client, secret, codes


def second_step(client: TestClient, code: str) -> int:  # noqa: F811
    page = client.post("/login", data={"email": EMAIL, "password": PASSWORD, "csrf": csrf(client.get("/login").text),
                                       "next": "/sales"})  # fmt: skip
    assert page.status_code == 200 and 'name="code"' in page.text
    assert client.get("/", follow_redirects=False).status_code == 303  # the password alone is not in
    answer = client.post("/login/code", data={"csrf": csrf(page.text), "code": code, "next": "/sales"},
                         follow_redirects=False)  # fmt: skip
    return answer.status_code


def test_the_code_is_asked_after_the_password_and_works_once(seller: tuple[TestClient, str, list[str]]) -> None:
    _, secret, _ = seller
    fresh = TestClient(make_app(), base_url="http://127.0.0.1:8100")
    code = pyotp.TOTP(secret).at(time.time() + 30)  # the next step's (the setup spent the current one)
    assert second_step(fresh, "000000" if code != "000000" else "111111") == 401
    before = fresh.cookies.get(COOKIE)
    assert second_step(fresh, code) == 303
    assert fresh.cookies.get(COOKIE) != before  # a new session id after the second factor
    assert fresh.get("/sales").status_code == 200
    again = TestClient(make_app(), base_url="http://127.0.0.1:8100")
    assert second_step(again, code) == 401  # the same code, replayed: refused
    actions = {e.action for e in AuditEntry.select()}
    assert {"second factor enabled", "second factor failed", "login"} <= actions


def test_a_recovery_code_works_once(seller: tuple[TestClient, str, list[str]]) -> None:
    _, _, codes = seller
    fresh = TestClient(make_app(), base_url="http://127.0.0.1:8100")
    assert second_step(fresh, codes[0].upper()) == 303
    again = TestClient(make_app(), base_url="http://127.0.0.1:8100")
    assert second_step(again, codes[0]) == 401
    assert second_factor.recovery_codes_left(Account.get(Account.slug == "acme")) == 9


def test_turning_it_off_asks_the_password_and_a_code(seller: tuple[TestClient, str, list[str]]) -> None:
    http, _, codes = seller
    page = http.get("/account").text
    wrong = http.post("/account/2fa/disable", data={"csrf": csrf(page), "current": "nope", "code": codes[1]})
    assert wrong.status_code == 422 and Account.get(Account.slug == "acme").totp_secret
    done = http.post("/account/2fa/disable", data={"csrf": csrf(page), "current": PASSWORD, "code": codes[1]},
                       follow_redirects=False)  # fmt: skip
    assert done.status_code == 303 and Account.get(Account.slug == "acme").totp_secret is None
    assert login(TestClient(make_app(), base_url="http://127.0.0.1:8100"), EMAIL) == 303  # the password alone again


def test_a_code_is_good_for_the_step_around_it_and_not_further() -> None:
    account = make_seller("acme", EMAIL)
    secret = second_factor.new_secret()
    now = 1_800_000_000.0
    assert second_factor.enable(account, secret, pyotp.TOTP(secret).at(int(now)), now) is not None
    account = Account.get_by_id(account.id)
    assert not second_factor.check(account, pyotp.TOTP(secret).at(int(now + 90)), now)  # three steps ahead
    assert second_factor.check(account, pyotp.TOTP(secret).at(int(now + 30)), now)  # one step ahead: a slow phone
    assert not second_factor.check(account, pyotp.TOTP(secret).at(int(now)), now)  # an earlier step: spent
