"""What every page of the panel shares: its templates, the session cookie, who is logged in, the
CSRF check of every POST (no exemptions) and the 404 that says nothing of another account's objects.

A page is written as `async def page(request, session, scope)` under `@seller_page` (a GET) or
`@seller_form` (a POST, its form already checked): it is reached only by a logged-in, active
account whose second factor is done, and a `NotFound` raised by its `Scope` answers 404."""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Awaitable, Callable
from decimal import Decimal
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

import settings
from accounts import sessions
from catalog.schema import brl
from clicks import client_ip
from db.database import db
from db.days import ZONE
from db.models import Account
from panel.scope import NotFound, Scope
from panel.shared import PANEL

COOKIE = "grimbots_session"
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
                        autoescape=select_autoescape(["html"]))  # fmt: skip
TEMPLATES.filters["brl"] = lambda value: brl(Decimal(str(value)))


def when(value: dt.datetime | str | None) -> str:
    """A stored (naive UTC) time, or its ISO text, as the seller reads it: DD/MM/YYYY HH:MM in
    REPORT_TIMEZONE."""
    if not value:
        return "—"
    at = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return at.replace(tzinfo=dt.UTC).astimezone(ZONE).strftime("%d/%m/%Y %H:%M")


TEMPLATES.filters["when"] = when
TEMPLATES.filters["pct"] = lambda share: "—" if share is None else f"{share * 100:.1f}%".replace(".", ",")

# The audit log's actions (English in the database, as the CLI shows them) as the seller reads them.
ACTIONS = {
    "login": "entrou", "login (second factor)": "entrou (com a verificação em duas etapas)",
    "login failed": "tentativa de entrar com a senha errada", "second factor failed": "código de verificação errado",
    "logout everywhere": "saiu de todos os dispositivos", "signup": "conta criada", "password changed": "senha trocada",
    "password reset": "senha redefinida por link", "reset link mailed": "link de nova senha enviado por e-mail",
    "e-mail changed": "e-mail trocado", "second factor enabled": "verificação em duas etapas ativada",
    "second factor disabled": "verificação em duas etapas desligada",
    "recovery code used": "código de recuperação usado", "recovery codes replaced": "novos códigos de recuperação",
    "api key created": "chave da API criada", "api key revoked": "chave da API revogada",
    "account suspended": "conta suspensa", "account resumed": "conta reativada",
}  # fmt: skip
OBJECTS = {"bot": "bot", "gateway": "gateway", "offer": "oferta", "pool": "pool"}
OUTCOMES = {"created": "criado(a)", "updated": "alterado(a)", "deactivated": "desativado(a)"}


def action(value: str) -> str:
    if value in ACTIONS:
        return ACTIONS[value]
    kind, _, outcome = value.partition(" ")
    return f"{OBJECTS[kind]} {OUTCOMES[outcome]}" if kind in OBJECTS and outcome in OUTCOMES else value


TEMPLATES.filters["action"] = action
STATES = {"creating": "criando", "pending": "aguardando", "paid": "pago", "expired": "expirado",
          "failed": "falhou", "refunded": "reembolsado"}  # fmt: skip
DELIVERIES = {"pending": "pendente", "sent": "entregue", "failed": "falhou"}
STEPS = {"click": "Clique", "start": "Início", "charge": "PIX gerado", "paid": "Pagamento", "refunded": "Reembolso",
         "delivery": "Entrega", "subscription": "Assinatura"}  # fmt: skip
BROADCASTS = {"scheduled": "agendada", "running": "enviando", "done": "concluída", "stopped": "parada",
              "failed": "falhou"}  # fmt: skip
DETAILS = {"amount": "valor", "state": "situação", "paid": "valor pago", "until": "até", "renewals": "renovações",
           "pool": "pool"}  # fmt: skip
EVENT_STATES = {"pending": "na fila", "sending": "enviando", "sent": "enviado", "failed": "recusado",
                "expired": "velho demais (7 dias)"}  # fmt: skip
WORDS = {**STATES, **DELIVERIES, "active": "ativa", "expired": "encerrada"}
TEMPLATES.globals.update(EVENT_STATES=EVENT_STATES, STATES=STATES, DELIVERIES=DELIVERIES, STEPS=STEPS,
                         BROADCASTS=BROADCASTS, DETAILS=DETAILS, WORDS=WORDS)  # fmt: skip

T = TypeVar("T")
MAX_FORM_BYTES = 20 * 1024 * 1024  # a form with the largest upload a channel takes (a 16 MB video), and room
Page = Callable[[Request, sessions.Session, Scope], Awaitable[Response]]
FormPage = Callable[[Request, sessions.Session, Scope, dict[str, str]], Awaitable[Response]]


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """Run blocking work (a provider's HTTP call, the database) off the event loop; the database
    connection that thread took goes back to the pool when it is done."""

    def closing() -> T:
        try:
            return function(*args)
        finally:
            if not db.is_closed():
                db.close()

    return await run_in_threadpool(closing)


def secure() -> bool:
    return settings.PANEL_BASE_URL.startswith("https://")


def address(request: Request) -> str:
    """The client's address (X-Forwarded-For believed only from TRUSTED_PROXIES)."""
    peer = request.client.host if request.client else None
    return client_ip(peer, request.headers.get("x-forwarded-for")) or "unknown"


def set_cookie(response: Response, session: sessions.Session) -> None:
    response.set_cookie(COOKIE, session.id, httponly=True, samesite="lax", secure=secure(), path="/")


def render(request: Request, name: str, session: sessions.Session, status: int = 200, **context: Any) -> Response:
    html = TEMPLATES.get_template(name).render(csrf=session.csrf, path=request.url.path, **context)
    response = HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
    set_cookie(response, session)
    return response


def session_of(request: Request) -> sessions.Session | None:
    return sessions.get(PANEL.redis, request.cookies.get(COOKIE))


def visitor(request: Request) -> sessions.Session:
    """The request's session, or a new anonymous one (it carries the CSRF token of the forms)."""
    return session_of(request) or sessions.start(PANEL.redis, None, address(request))


def logged_in(request: Request) -> tuple[sessions.Session, Scope] | None:
    """The session and scope of a logged-in, active account (second factor done), or None."""
    session = session_of(request)
    if session is None or session.account is None:
        return None
    db.connect(reuse_if_open=True)
    account = Account.get_or_none(Account.id == session.account)
    if account is None or account.state != "active":
        sessions.end(PANEL.redis, session.id)
        return None
    return session, Scope(account)


def to_login(request: Request) -> Response:
    wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?{urlencode({'next': wanted})}", status_code=303)


def safe_next(value: str | None) -> str:
    """Only the panel's own paths: never another host, a scheme, or "//host"."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else "/"


async def form_of(request: Request, session: sessions.Session) -> dict[str, str] | None:
    """The form's fields when its CSRF token is the session's; None (refuse) otherwise."""
    form = await request.form()
    given = str(form.get("csrf") or "")
    if not given or not hmac.compare_digest(given.encode(), session.csrf.encode()):
        return None
    return {k: str(v) for k, v in form.items() if isinstance(v, str)}


def forbidden() -> Response:
    return PlainTextResponse("Formulário expirado: recarregue a página e tente de novo.", status_code=403)


async def posted(request: Request) -> tuple[sessions.Session, dict[str, str]] | None:
    """The session and the form of a POST whose CSRF token is the session's; None: refuse (403)."""
    session = session_of(request)
    form = await form_of(request, session) if session is not None else None
    return (session, form) if session is not None and form is not None else None


def not_found(request: Request, session: sessions.Session, account: Account | None) -> Response:
    return render(request, "message.html", session, 404, account=account, title="Não encontrado",
                  text="Esta página não existe ou não é da sua conta.")  # fmt: skip


# An operator must have a second factor before any page but the one that sets it up.
SECOND_FACTOR_SETUP = "/account/2fa"


def _must_set_up(request: Request, scope: Scope) -> bool:
    return scope.operator and not scope.account.totp_secret and not request.url.path.startswith(SECOND_FACTOR_SETUP)


def seller_page(handler: Page) -> Callable[[Request], Awaitable[Response]]:
    """A GET page of a logged-in account (see the module's docstring)."""
    return wraps(handler)(_gated(handler))


def seller_form(handler: FormPage) -> Callable[[Request], Awaitable[Response]]:
    """A POST of a logged-in account whose form carries the session's CSRF token (403 otherwise);
    a multipart form's uploads are closed after it."""

    async def checked(request: Request, session: sessions.Session, scope: Scope) -> Response:
        if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
            return PlainTextResponse("Arquivo grande demais: imagens até 5 MB, vídeos até 16 MB.", status_code=413)
        form = await form_of(request, session)
        if form is None:
            return forbidden()
        try:
            return await handler(request, session, scope, form)
        finally:
            await (await request.form()).close()

    return wraps(handler)(_gated(checked))


def _gated(page: Page) -> Callable[[Request], Awaitable[Response]]:
    """Logged in (else to the login page), an operator's second factor set up (else to its page),
    another account's object (NotFound) answered 404."""

    async def endpoint(request: Request) -> Response:
        current = logged_in(request)
        if current is None:
            return to_login(request)
        session, scope = current
        if _must_set_up(request, scope):
            return RedirectResponse(SECOND_FACTOR_SETUP, status_code=303)
        try:
            return await page(request, session, scope)
        except NotFound:
            return not_found(request, session, scope.account)

    return endpoint
