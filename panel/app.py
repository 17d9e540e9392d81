"""The panel's Starlette app. Every page but the login, sign-up and health needs a logged-in
account; every POST needs the session's CSRF token (no exemptions); every object is read through
the account's `Scope` (another account's id answers 404, saying nothing of it)."""

from __future__ import annotations

import asyncio
import hmac
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import redis
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

import accounts
import settings
from accounts import links, passwords, sessions
from catalog.schema import brl
from clicks import client_ip
from db import audit
from db.database import db, init_db, transaction, utcnow
from db.models import Account
from panel import api
from panel.scope import NotFound, Scope
from panel.shared import PANEL

COOKIE = "grimbots_session"
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
                        autoescape=select_autoescape(["html"]))  # fmt: skip
TEMPLATES.filters["brl"] = lambda value: brl(Decimal(str(value)))
STATES = {"creating": "criando", "pending": "aguardando", "paid": "pago", "expired": "expirado",
          "failed": "falhou", "refunded": "reembolsado"}  # fmt: skip
TEMPLATES.globals["STATES"] = STATES
WRONG = "E-mail ou senha incorretos."  # the same words whether the account exists or not


def _secure() -> bool:
    return settings.PANEL_BASE_URL.startswith("https://")


def _address(request: Request) -> str:
    """The client's address (X-Forwarded-For believed only from TRUSTED_PROXIES)."""
    peer = request.client.host if request.client else None
    return client_ip(peer, request.headers.get("x-forwarded-for")) or "unknown"


def _render(request: Request, name: str, session: sessions.Session, status: int = 200, **context: Any) -> Response:
    html = TEMPLATES.get_template(name).render(csrf=session.csrf, path=request.url.path, **context)
    response = HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
    response.set_cookie(COOKIE, session.id, httponly=True, samesite="lax", secure=_secure(), path="/")
    return response


def _session(request: Request) -> sessions.Session | None:
    return sessions.get(PANEL.redis, request.cookies.get(COOKIE))


def _visitor(request: Request) -> sessions.Session:
    """The request's session, or a new anonymous one (it carries the CSRF token of the forms)."""
    return _session(request) or sessions.start(PANEL.redis, None, _address(request))


def _logged_in(request: Request) -> tuple[sessions.Session, Scope] | None:
    session = _session(request)
    if session is None or session.account is None:
        return None
    db.connect(reuse_if_open=True)
    account = Account.get_or_none(Account.id == session.account)
    if account is None or account.state != "active":
        sessions.end(PANEL.redis, session.id)
        return None
    return session, Scope(account)


def _to_login(request: Request) -> Response:
    wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?{urlencode({'next': wanted})}", status_code=303)


def safe_next(value: str | None) -> str:
    """Only the panel's own paths: never another host, a scheme, or "//host"."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else "/"


async def _form(request: Request, session: sessions.Session) -> dict[str, str] | None:
    """The form's fields when its CSRF token is the session's; None (refuse) otherwise."""
    form = await request.form()
    given = str(form.get("csrf") or "")
    if not given or not hmac.compare_digest(given.encode(), session.csrf.encode()):
        return None
    return {k: str(v) for k, v in form.items() if isinstance(v, str)}


def _forbidden() -> Response:
    return PlainTextResponse("Formulário expirado: recarregue a página e tente de novo.", status_code=403)


async def _posted(request: Request) -> tuple[sessions.Session, dict[str, str]] | None:
    """The session and the form of a POST whose CSRF token is the session's; None: refuse (403)."""
    session = _session(request)
    form = await _form(request, session) if session is not None else None
    return (session, form) if session is not None and form is not None else None


def _enter(request: Request, old: sessions.Session, account: Account, to: str) -> Response:
    """Log `account` in: the visitor's session ends, a new one (a new id) starts."""
    sessions.end(PANEL.redis, old.id)
    fresh = sessions.start(PANEL.redis, account.id, _address(request))
    audit.record("login", account=account, actor=account.slug, session=fresh.tag, address=_address(request))
    response = RedirectResponse(to, status_code=303)
    response.set_cookie(COOKIE, fresh.id, httponly=True, samesite="lax", secure=_secure(), path="/")
    return response


# A one-use link's kind → its form's page, and what an unknown, used or expired one says.
LINK_PAGES = {
    "invite": ("signup.html", "Convite inválido", "Este convite expirou ou já foi usado. Peça um novo à plataforma."),
    "reset": ("reset.html", "Link inválido", "Este link expirou ou já foi usado. Peça um novo."),
}


def _invalid_link(request: Request, session: sessions.Session, kind: str) -> Response:
    _, title, text = LINK_PAGES[kind]
    return _render(request, "message.html", session, 404, title=title, text=text)


def _link_page(request: Request, kind: str) -> Response:
    """GET of a one-use link: its form, or why the link is no good."""
    db.connect(reuse_if_open=True)
    link = links.valid(kind, request.path_params["token"])
    visitor = _visitor(request)
    if link is None:
        return _invalid_link(request, visitor, kind)
    return _render(request, LINK_PAGES[kind][0], visitor, email=link.email)


# --- login, logout -----------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    if _logged_in(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return _render(request, "login.html", _visitor(request), next=safe_next(request.query_params.get("next")),
                   reset=request.query_params.get("reset") == "1")  # fmt: skip


async def login(request: Request) -> Response:
    posted = await _posted(request)
    if posted is None:
        return _forbidden()
    session, form = posted
    email = form.get("email", "").strip().lower()[:254]
    address = _address(request)
    who = (f"ip:{address}", f"email:{email}")
    count = sessions.failures(PANEL.redis, *who)
    nxt = safe_next(form.get("next"))
    if count >= sessions.REFUSE_AT:
        return _render(request, "login.html", session, 429, next=nxt, email=email,
                       error="Muitas tentativas. Espere 15 minutos e tente de novo.")  # fmt: skip
    await asyncio.sleep(sessions.delay_for(count))
    db.connect(reuse_if_open=True)
    account = Account.get_or_none(Account.email == email) if email else None
    ok, rehash = await run_in_threadpool(passwords.check, account.password_hash if account else None,
                                         form.get("password", ""))  # fmt: skip
    if not ok or account is None or account.state != "active":
        sessions.failed(PANEL.redis, *who)
        audit.record("login failed", account=account, actor="-", session=session.tag, address=address)
        return _render(request, "login.html", session, 401, next=nxt, email=email, error=WRONG)
    if rehash:
        Account.update(password_hash=rehash).where(Account.id == account.id).execute()
    return _enter(request, session, account, nxt)


async def logout(request: Request) -> Response:
    posted = await _posted(request)
    if posted is None:
        return _forbidden()
    session = posted[0]
    everywhere = request.url.path.endswith("/everywhere")
    if everywhere and session.account is not None:
        sessions.end_all(PANEL.redis, session.account)
        db.connect(reuse_if_open=True)
        audit.record("logout everywhere", account=session.account, actor=_slug(session.account),
                     session=session.tag, address=_address(request))  # fmt: skip
    sessions.end(PANEL.redis, session.id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _slug(account_id: int) -> str:
    account = Account.get_or_none(Account.id == account_id)
    return account.slug if account is not None else "-"


# --- sign-up by invite ---------------------------------------------------------------------------


async def signup_page(request: Request) -> Response:
    return _link_page(request, "invite")


async def signup(request: Request) -> Response:
    posted = await _posted(request)
    if posted is None:
        return _forbidden()
    session, form = posted
    db.connect(reuse_if_open=True)
    link = links.valid("invite", request.path_params["token"])
    if link is None:
        return _invalid_link(request, session, "invite")
    slug, password = form.get("slug", "").strip(), form.get("password", "")
    problem = passwords.problem(password, link.email)
    if problem is None and password != form.get("confirm", ""):
        problem = "As duas senhas não são iguais."
    if problem is None and not accounts.SLUG.match(slug):
        problem = "O nome da loja usa só letras, números, - e _ (até 64)."
    if problem is not None:
        return _render(request, "signup.html", session, 422, email=link.email, slug=slug, error=problem)
    hashed = await run_in_threadpool(passwords.hashed, password)
    try:
        with transaction():
            if not links.use(link):
                raise accounts.AccountError("token", "used")
            account = accounts.create(slug, link.email or "")
            Account.update(password_hash=hashed).where(Account.id == account.id).execute()
    except accounts.AccountError as exc:
        error = "Esse nome de loja já existe." if exc.key == "slug" else "Este convite não vale mais."
        return _render(request, "signup.html", session, 422, email=link.email, slug=slug, error=error)
    audit.record("signup", account=account, actor=account.slug, address=_address(request))
    return _enter(request, session, account, "/")


# --- password reset by a one-use link (1 hour) ------------------------------------------------------


async def reset_page(request: Request) -> Response:
    return _link_page(request, "reset")


async def reset(request: Request) -> Response:
    posted = await _posted(request)
    if posted is None:
        return _forbidden()
    session, form = posted
    db.connect(reuse_if_open=True)
    link = links.valid("reset", request.path_params["token"])
    account = Account.get_or_none(Account.id == link.account_id) if link is not None else None  # type: ignore[attr-defined]
    if link is None or account is None:
        return _invalid_link(request, session, "reset")
    password = form.get("password", "")
    problem = passwords.problem(password, account.email)
    if problem is None and password != form.get("confirm", ""):
        problem = "As duas senhas não são iguais."
    if problem is not None:
        return _render(request, "reset.html", session, 422, email=link.email, error=problem)
    hashed = await run_in_threadpool(passwords.hashed, password)
    with transaction():
        if not links.use(link):
            return _invalid_link(request, session, "reset")
        Account.update(password_hash=hashed, updated_at=utcnow()).where(Account.id == account.id).execute()
    sessions.end_all(PANEL.redis, account.id)  # whoever had the old password is out
    audit.record("password reset", account=account, actor=account.slug, session=session.tag,
                 address=_address(request))  # fmt: skip
    return RedirectResponse("/login?reset=1", status_code=303)


# --- the seller's pages --------------------------------------------------------------------------


def _days(request: Request) -> int:
    raw = request.query_params.get("days", "30")
    return min(max(int(raw), 1), 366) if raw.isdigit() else 30


async def dashboard(request: Request) -> Response:
    current = _logged_in(request)
    if current is None:
        return _to_login(request)
    session, scope = current
    days = _days(request)
    return _render(request, "dashboard.html", session, account=scope.account, days=days, rows=scope.funnel(days),
                   bots=scope.bots())  # fmt: skip


async def sales(request: Request) -> Response:
    current = _logged_in(request)
    if current is None:
        return _to_login(request)
    session, scope = current
    bot, state = request.query_params.get("bot", ""), request.query_params.get("state", "")
    if state and state not in STATES:
        state = ""
    try:
        charges = scope.charges(bot, state)
    except NotFound:
        return _not_found(request, session, scope.account)
    return _render(request, "sales.html", session, account=scope.account, charges=charges, bots=scope.bot_ids(),
                   bot=bot, state=state)  # fmt: skip


async def account_page(request: Request) -> Response:
    current = _logged_in(request)
    if current is None:
        return _to_login(request)
    session, scope = current
    return _render(request, "account.html", session, account=scope.account, entries=scope.audit(),
                   saved=request.query_params.get("saved") == "1")  # fmt: skip


async def change_password(request: Request) -> Response:
    current = _logged_in(request)
    if current is None:
        return _to_login(request)
    session, scope = current
    form = await _form(request, session)
    if form is None:
        return _forbidden()
    account = scope.account
    ok, _ = await run_in_threadpool(passwords.check, account.password_hash, form.get("current", ""))
    new = form.get("password", "")
    problem = None if ok else "A senha atual não confere."
    problem = problem or passwords.problem(new, account.email)
    if problem is None and new != form.get("confirm", ""):
        problem = "As duas senhas não são iguais."
    if problem is not None:
        return _render(request, "account.html", session, 422, account=account, entries=scope.audit(), error=problem)
    hashed = await run_in_threadpool(passwords.hashed, new)
    Account.update(password_hash=hashed, updated_at=utcnow()).where(Account.id == account.id).execute()
    sessions.end_all(PANEL.redis, account.id, keep=session.id)  # every other session ends
    audit.record("password changed", account=account, actor=account.slug, session=session.tag,
                 address=_address(request))  # fmt: skip
    return RedirectResponse("/account?saved=1", status_code=303)


async def operator_accounts(request: Request) -> Response:
    current = _logged_in(request)
    if current is None:
        return _to_login(request)
    session, scope = current
    if not scope.operator:
        return _not_found(request, session, scope.account)
    return _render(request, "operator.html", session, account=scope.account, rows=accounts.summaries())


def _not_found(request: Request, session: sessions.Session, account: Account) -> Response:
    return _render(request, "message.html", session, 404, account=account, title="Não encontrado",
                   text="Esta página não existe ou não é da sua conta.")  # fmt: skip


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


def make_app(client: redis.Redis | None = None) -> Starlette:
    if client is not None:
        PANEL._client = client
    init_db()
    return Starlette(routes=[
        Route("/health", health),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/logout/everywhere", logout, methods=["POST"]),
        Route("/signup/{token}", signup_page, methods=["GET"]),
        Route("/signup/{token}", signup, methods=["POST"]),
        Route("/reset/{token}", reset_page, methods=["GET"]),
        Route("/reset/{token}", reset, methods=["POST"]),
        Route("/", dashboard),
        Route("/sales", sales),
        Route("/account", account_page, methods=["GET"]),
        Route("/account/password", change_password, methods=["POST"]),
        Route("/operator/accounts", operator_accounts),
        *api.ROUTES,
    ])  # fmt: skip
