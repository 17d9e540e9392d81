"""The seller panel over HTTP (CONTRACT §14): sign-up by invite, login with server-side sessions,
CSRF on every form, failed logins slowed then refused with the same answer, `next` kept to the
panel's paths, a password change ending the other sessions, a suspension ending them all, and
another account's objects answering 404 with nothing of theirs."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from decimal import Decimal

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from accounts import passwords, sessions
from db.database import utcnow
from db.models import Account, AuditEntry, Charge
from ops.cli import cli
from panel.app import COOKIE, PANEL, make_app, safe_next
from tests.conftest import apply_config

PASSWORD = "cavalo-correto-bateria-grampo"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def make_seller(slug: str, email: str, password: str = PASSWORD) -> Account:
    run("accounts", "create", slug, "--email", email)
    Account.update(password_hash=passwords.hashed(password)).where(Account.slug == slug).execute()
    return Account.get(Account.slug == slug)


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


@pytest.fixture
def client() -> Iterator[TestClient]:
    PANEL._client = None  # this test's Redis database
    with TestClient(make_app(), base_url="http://127.0.0.1:8100") as http:
        yield http


def login(client: TestClient, email: str, password: str = PASSWORD, next_path: str = "/") -> int:
    token = csrf(client.get("/login").text)
    answer = client.post("/login", data={"email": email, "password": password, "csrf": token, "next": next_path},
                         follow_redirects=False)  # fmt: skip
    return answer.status_code


def shops() -> None:
    """Two sellers, each with a bot and a paid sale."""
    from tests.actors.test_selling import selling_config

    for slug, email in (("acme", "ana@acme.com.br"), ("beta", "bia@beta.com.br")):
        make_seller(slug, email)
        data = selling_config()
        data["account"] = slug
        data["gateways"][0]["id"] = f"{slug}-main"
        bot = data["bots"][0]
        bot.update(id=f"{slug}-bot", gateway=f"{slug}-main", token=f"{len(slug)}00:{slug.upper()}")
        apply_config(data)
    from actors.updates import upsert_lead
    from db.models import Offer
    from gateways.channel import Person

    for slug, amount in (("acme", "19.90"), ("beta", "77.70")):
        offer = Offer.get(Offer.bot == f"{slug}-bot")
        lead = upsert_lead(f"{slug}-bot", Person(len(slug) * 1000, "Ana"), len(slug) * 1000)
        Charge.create(bot_id=f"{slug}-bot", lead_id=lead.lead_id, offer_id=offer.id, gateway_id=f"{slug}-main",
                      gateway_kind="sandbox", amount=Decimal(amount), paid_amount=Decimal(amount), paid_at=utcnow(),
                      status="paid", idempotency_key=f"k-{slug}")  # fmt: skip


def test_an_invite_signs_a_seller_up_once_and_logs_them_in(client: TestClient) -> None:
    code, url = run("accounts", "invite", "--email", "Nova@Loja.com.br")
    assert code == 0 and url.startswith("http://127.0.0.1:8100/signup/")
    path = url.strip().removeprefix("http://127.0.0.1:8100")
    page = client.get(path).text
    assert "nova@loja.com.br" in page
    weak = client.post(path, data={"csrf": csrf(page), "slug": "nova", "password": "password1234",
                                   "confirm": "password1234"})  # fmt: skip
    assert weak.status_code == 422 and "comum demais" in weak.text
    short = client.post(path, data={"csrf": csrf(page), "slug": "nova", "password": "curta", "confirm": "curta"})
    assert short.status_code == 422 and "12 caracteres" in short.text
    done = client.post(path, data={"csrf": csrf(page), "slug": "nova", "password": PASSWORD, "confirm": PASSWORD},
                       follow_redirects=False)  # fmt: skip
    assert done.status_code == 303 and done.headers["location"] == "/"
    cookie = done.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    account = Account.get(Account.slug == "nova")
    assert account.email == "nova@loja.com.br" and account.password_hash.startswith("$argon2id$")
    assert "Seu funil" in client.get("/").text
    assert client.get(path).status_code == 404  # used once


def test_login_rotates_the_session_and_logout_ends_it(client: TestClient) -> None:
    make_seller("acme", "ana@acme.com.br")
    client.get("/login")
    anonymous = client.cookies.get(COOKIE)
    assert login(client, "ana@acme.com.br") == 303
    logged_in = client.cookies.get(COOKIE)
    assert logged_in and logged_in != anonymous  # a new session id at login
    page = client.get("/")
    assert page.status_code == 200 and "acme" in page.text
    client.post("/logout", data={"csrf": csrf(page.text)})
    assert client.get("/", follow_redirects=False).status_code == 303
    assert sessions.get(PANEL.redis, logged_in) is None


def test_every_form_needs_its_csrf_token(client: TestClient) -> None:
    make_seller("acme", "ana@acme.com.br")
    client.get("/login")
    assert client.post("/login", data={"email": "ana@acme.com.br", "password": PASSWORD}).status_code == 403
    assert client.post("/login", data={"email": "ana@acme.com.br", "password": PASSWORD,
                                       "csrf": "forged"}).status_code == 403  # fmt: skip
    assert login(client, "ana@acme.com.br") == 303
    assert client.post("/logout", data={}).status_code == 403
    assert client.post("/account/password", data={"current": PASSWORD, "password": "x" * 20,
                                                  "confirm": "x" * 20}).status_code == 403  # fmt: skip


def test_failed_logins_are_slowed_then_refused_with_the_same_answer_whoever_is_tried(client: TestClient) -> None:
    make_seller("acme", "ana@acme.com.br")
    wrong = [login(client, "ana@acme.com.br", "wrong-password-1") for _ in range(2)]
    nobody = login(client, "ghost@nowhere.com.br", "wrong-password-1")
    assert wrong == [401, 401] and nobody == 401
    page = client.post("/login", data={"email": "ghost@nowhere.com.br", "password": "x", "csrf": csrf(
        client.get("/login").text)})  # fmt: skip
    assert "E-mail ou senha incorretos." in page.text
    PANEL.redis.set(sessions.FAILURES.format(who="email:ana@acme.com.br"), sessions.REFUSE_AT)
    assert login(client, "ana@acme.com.br") == 429  # refused now, the right password included
    assert sessions.delay_for(sessions.SLOW_AFTER - 1) == 0 and sessions.delay_for(sessions.SLOW_AFTER + 1) == 2
    failed = AuditEntry.select().where(AuditEntry.action == "login failed").count()
    assert failed == 4


def test_next_goes_only_to_the_panels_own_paths(client: TestClient) -> None:
    tried = ("/sales?bot=x", "//evil.example/x", "https://evil.example", "/\\evil", "", None)
    assert [safe_next(v) for v in tried] == ["/sales?bot=x", "/", "/", "/", "/", "/"]
    make_seller("acme", "ana@acme.com.br")
    client.get("/login")
    token = csrf(client.get("/login").text)
    answer = client.post("/login", data={"email": "ana@acme.com.br", "password": PASSWORD, "csrf": token,
                                         "next": "https://evil.example/"}, follow_redirects=False)  # fmt: skip
    assert answer.headers["location"] == "/"


def test_a_password_change_ends_every_other_session(client: TestClient) -> None:
    make_seller("acme", "ana@acme.com.br")
    other = TestClient(make_app(), base_url="http://127.0.0.1:8100")
    assert login(other, "ana@acme.com.br") == 303 and login(client, "ana@acme.com.br") == 303
    page, new = client.get("/account").text, "outra-senha-bem-longa"
    wrong = client.post(
        "/account/password",
        data={
            "csrf": csrf(page),
            "current": "not-it-at-all",
            "password": "outra-senha-bem-longa",
            "confirm": "outra-senha-bem-longa",
        },
    )
    assert wrong.status_code == 422 and "senha atual" in wrong.text
    done = client.post("/account/password", data={"csrf": csrf(page), "current": PASSWORD, "password": new,
                                                  "confirm": new}, follow_redirects=False)  # fmt: skip
    assert done.status_code == 303
    assert client.get("/account").status_code == 200  # this session stays
    assert other.get("/", follow_redirects=False).status_code == 303  # the other one ended
    assert login(client, "ana@acme.com.br", "outra-senha-bem-longa") == 303


def test_a_suspended_account_is_logged_out_and_cannot_log_in(client: TestClient) -> None:
    make_seller("acme", "ana@acme.com.br")
    assert login(client, "ana@acme.com.br") == 303
    run("accounts", "suspend", "acme")
    assert client.get("/", follow_redirects=False).status_code == 303
    assert login(client, "ana@acme.com.br") == 401


def test_each_seller_sees_only_their_own_and_anothers_ids_answer_404(client: TestClient) -> None:
    shops()
    assert login(client, "ana@acme.com.br") == 303
    dashboard, sales = client.get("/").text, client.get("/sales").text
    assert "acme-bot" in dashboard and "19,90" in dashboard and "19,90" in sales
    for page in (dashboard, sales):
        assert "beta" not in page and "77,70" not in page
    walk = {
        "/sales?bot=beta-bot": 404,
        "/sales?bot=beta-bot&state=paid": 404,
        "/operator/accounts": 404,  # a seller is no operator
    }
    for path, status in walk.items():
        answer = client.get(path)
        assert answer.status_code == status, path
        assert "beta" not in answer.text.replace("/sales?bot=beta", "") and "77,70" not in answer.text, path


def test_the_operator_sets_up_a_second_factor_then_sees_every_account_and_suspends_one(client: TestClient) -> None:
    import pyotp

    make_seller("acme", "ana@acme.com.br")
    run("accounts", "create", "ops", "--email", "ops@grimbots.example", "--operator")
    Account.update(password_hash=passwords.hashed(PASSWORD)).where(Account.slug == "ops").execute()
    assert login(client, "ops@grimbots.example") == 303
    first = client.get("/operator/accounts", follow_redirects=False)  # required for operators: set it up first
    assert first.status_code == 303 and first.headers["location"] == "/account/2fa"
    setup = client.get("/account/2fa").text
    secret = re.search(r'data-secret="([A-Z2-7]{32})"', setup).group(1)  # type: ignore[union-attr]
    before = client.cookies.get(COOKIE)
    codes = client.post("/account/2fa", data={"csrf": csrf(setup), "secret": secret, "current": PASSWORD,
                                              "code": pyotp.TOTP(secret).now()})  # fmt: skip
    assert codes.status_code == 200 and len(re.findall(r"data-code=", codes.text)) == 10
    assert client.cookies.get(COOKIE) != before  # a new session id after the second factor
    page = client.get("/operator/accounts")
    assert page.status_code == 200 and 'data-account="acme"' in page.text and 'data-account="ops"' in page.text
    seller = TestClient(make_app(), base_url="http://127.0.0.1:8100")
    assert login(seller, "ana@acme.com.br") == 303
    done = client.post("/operator/accounts/acme/suspend", data={"csrf": csrf(page.text)}, follow_redirects=False)
    assert done.status_code == 303 and Account.get(Account.slug == "acme").state == "suspended"
    assert seller.get("/", follow_redirects=False).status_code == 303  # the seller's sessions ended
    assert AuditEntry.select().where(AuditEntry.action == "account suspended").exists()
    page = client.get("/operator/accounts").text
    client.post("/operator/accounts/acme/resume", data={"csrf": csrf(page)})
    assert Account.get(Account.slug == "acme").state == "active"
    assert client.post("/operator/accounts/ops/suspend", data={"csrf": csrf(page)}).status_code == 422  # not oneself
    audit = client.get("/operator/audit").text
    assert re.search(r'data-entry-account="acme"[^>]*>.*?conta suspensa', audit, re.S)  # every account's
    system = client.get("/operator/system")
    assert system.status_code == 200 and 'data-queue="updates"' in system.text


def test_a_reset_link_sets_a_new_password_once_and_ends_every_session(client: TestClient) -> None:
    import datetime as dt

    from db.models import AccountToken

    make_seller("acme", "ana@acme.com.br")
    other = TestClient(make_app(), base_url="http://127.0.0.1:8100")
    assert login(other, "ana@acme.com.br") == 303
    code, url = run("accounts", "reset-link", "acme")
    assert code == 0 and "/reset/" in url
    path = url.strip().removeprefix("http://127.0.0.1:8100")
    page = client.get(path).text
    assert "ana@acme.com.br" in page
    new = "uma-senha-nova-e-longa"
    done = client.post(path, data={"csrf": csrf(page), "password": new, "confirm": new}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/login?reset=1"
    assert other.get("/", follow_redirects=False).status_code == 303  # logged out everywhere
    assert login(client, "ana@acme.com.br") == 401 and login(client, "ana@acme.com.br", new) == 303
    assert client.get(path).status_code == 404  # used once
    assert run("accounts", "reset-link", "ghost")[0] != 0
    _, url = run("accounts", "reset-link", "acme")
    AccountToken.update(expires_at=utcnow() - dt.timedelta(seconds=1)).where(AccountToken.used_at.is_null()).execute()
    assert client.get(url.strip().removeprefix("http://127.0.0.1:8100")).status_code == 404  # expired after 1 hour


def test_a_visitors_session_lives_an_hour_and_a_sellers_the_idle_time(client: TestClient) -> None:
    import settings

    make_seller("acme", "ana@acme.com.br")
    client.get("/login")
    visitor = client.cookies.get(COOKIE)
    assert 0 < PANEL.redis.ttl(sessions.PREFIX + hashlib.sha256(visitor.encode()).hexdigest()) <= 3600
    assert login(client, "ana@acme.com.br") == 303
    seller = client.cookies.get(COOKIE)
    ttl = PANEL.redis.ttl(sessions.PREFIX + hashlib.sha256(seller.encode()).hexdigest())
    assert 3600 < ttl <= settings.SESSION_IDLE_SECONDS


def test_every_request_gives_its_database_connection_back(client: TestClient) -> None:
    """The panel's threads come and go (a test client's, the thread pool's): each request returns
    the connection its thread took, or the pool (64) runs dry. Here: 80 clients, each on its own thread."""
    from db.database import db

    for _ in range(80):
        with TestClient(make_app(), base_url="http://127.0.0.1:8100") as other:
            assert other.get("/signup/no-such-invite").status_code == 404  # a page that reads the database
    assert len(db._in_use) <= 2  # type: ignore[attr-defined]  # this thread's, at most
