"""Getting in and out: login (with the second factor when the account has one), logout (here or
everywhere), sign-up (an operator's invite, or open when PANEL_SIGNUP=open) and password reset (a
one-use link: the operator's, or mailed when SMTP_URL is set)."""

from __future__ import annotations

import asyncio
import logging

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

import accounts
import settings
from accounts import links, mail, passwords, second_factor, sessions
from db import audit
from db.database import db, transaction, utcnow
from db.models import Account
from panel.shared import PANEL
from panel.web import COOKIE, address, forbidden, logged_in, posted, render, safe_next, set_cookie, visitor  # fmt: skip

log = logging.getLogger("grimbots.panel")
WRONG = "E-mail ou senha incorretos."  # the same words whether the account exists or not
TOO_MANY = "Muitas tentativas. Espere 15 minutos e tente de novo."
WRONG_CODE = "Código incorreto ou já usado."
SIGNUPS_PER_HOUR = 5  # open sign-ups from one address
RESET_MAILS_PER_HOUR = 3  # reset mails to one e-mail (and from one address)


def _limited(kind: str, who: str, most: int) -> bool:
    """Count one more `kind` for `who` this hour; True when that is over `most`."""
    key = f"grimbots:panel-limit:{kind}:{who}"
    pipe = PANEL.redis.pipeline()
    pipe.incr(key)
    pipe.expire(key, 3600, nx=True)
    return int(pipe.execute()[0]) > most


def rotate(request: Request, old: sessions.Session, account: Account, action: str = "login") -> sessions.Session:
    """`account` is in: the old session ends and a new one (a new id) starts, as the audit log says."""
    sessions.end(PANEL.redis, old.id)
    fresh = sessions.start(PANEL.redis, account.id, address(request))
    audit.record(action, account=account, actor=account.slug, session=fresh.tag, address=address(request))
    return fresh


def enter(request: Request, old: sessions.Session, account: Account, to: str) -> Response:
    """Log `account` in (a new session id) and go to `to`."""
    response = RedirectResponse(to, status_code=303)
    set_cookie(response, rotate(request, old, account))
    return response


# --- login, second factor, logout ---------------------------------------------------------------


async def login_page(request: Request) -> Response:
    if logged_in(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return render(request, "login.html", visitor(request), next=safe_next(request.query_params.get("next")),
                  reset=request.query_params.get("reset") == "1", mail=mail.enabled(),
                  open_signup=settings.PANEL_SIGNUP == "open")  # fmt: skip


async def login(request: Request) -> Response:
    got = await posted(request)
    if got is None:
        return forbidden()
    session, form = got
    email = form.get("email", "").strip().lower()[:254]
    where = address(request)
    who = (f"ip:{where}", f"email:{email}")
    count = sessions.failures(PANEL.redis, *who)
    nxt = safe_next(form.get("next"))
    context = {"next": nxt, "email": email, "mail": mail.enabled(), "open_signup": settings.PANEL_SIGNUP == "open"}
    if count >= sessions.REFUSE_AT:
        return render(request, "login.html", session, 429, error=TOO_MANY, **context)
    await asyncio.sleep(sessions.delay_for(count))
    db.connect(reuse_if_open=True)
    account = Account.get_or_none(Account.email == email) if email else None
    ok, rehash = await run_in_threadpool(passwords.check, account.password_hash if account else None,
                                         form.get("password", ""))  # fmt: skip
    if not ok or account is None or account.state != "active":
        sessions.failed(PANEL.redis, *who)
        audit.record("login failed", account=account, actor="-", session=session.tag, address=where)
        return render(request, "login.html", session, 401, error=WRONG, **context)
    if rehash:
        Account.update(password_hash=rehash).where(Account.id == account.id).execute()
    if account.totp_secret:  # the password is right: a new anonymous session waits for the code
        sessions.end(PANEL.redis, session.id)
        waiting = sessions.start(PANEL.redis, None, where, pending=account.id)
        return render(request, "second_factor.html", waiting, next=nxt)
    return enter(request, session, account, nxt)


async def second_factor_login(request: Request) -> Response:
    got = await posted(request)
    if got is None:
        return forbidden()
    session, form = got
    nxt = safe_next(form.get("next"))
    if session.pending is None:
        return RedirectResponse("/login", status_code=303)
    where = address(request)
    who = (f"ip:{where}", f"account:{session.pending}")
    if sessions.failures(PANEL.redis, *who) >= sessions.REFUSE_AT:
        sessions.end(PANEL.redis, session.id)
        return render(request, "login.html", visitor(request), 429, next=nxt, error=TOO_MANY)
    db.connect(reuse_if_open=True)
    account = Account.get_or_none(Account.id == session.pending)
    if account is None or account.state != "active":
        sessions.end(PANEL.redis, session.id)
        return RedirectResponse("/login", status_code=303)
    code = form.get("code", "").strip()
    ok = second_factor.check(account, code) or (len(code) > 6 and second_factor.use_recovery_code(account, code))
    if not ok:
        sessions.failed(PANEL.redis, *who)
        audit.record("second factor failed", account=account, actor="-", session=session.tag, address=where)
        return render(request, "second_factor.html", session, 401, next=nxt, error=WRONG_CODE)
    if len(code) > 6:
        audit.record("recovery code used", account=account, actor=account.slug, session=session.tag, address=where)
    return enter(request, session, account, nxt)


async def logout(request: Request) -> Response:
    got = await posted(request)
    if got is None:
        return forbidden()
    session = got[0]
    if request.url.path.endswith("/everywhere") and session.account is not None:
        sessions.end_all(PANEL.redis, session.account)
        db.connect(reuse_if_open=True)
        account = Account.get_or_none(Account.id == session.account)
        audit.record("logout everywhere", account=account, actor=account.slug if account else "-",
                     session=session.tag, address=address(request))  # fmt: skip
    sessions.end(PANEL.redis, session.id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# --- sign-up: by invite, or open ------------------------------------------------------------------

# A one-use link's kind → its form's page, and what an unknown, used or expired one says.
LINK_PAGES = {
    "invite": ("signup.html", "Convite inválido", "Este convite expirou ou já foi usado. Peça um novo à plataforma."),
    "reset": ("reset.html", "Link inválido", "Este link expirou ou já foi usado. Peça um novo."),
}


def _invalid_link(request: Request, session: sessions.Session, kind: str) -> Response:
    _, title, text = LINK_PAGES[kind]
    return render(request, "message.html", session, 404, title=title, text=text)


def _link_page(request: Request, kind: str) -> Response:
    """GET of a one-use link: its form, or why the link is no good."""
    db.connect(reuse_if_open=True)
    link = links.valid(kind, request.path_params["token"])
    session = visitor(request)
    if link is None:
        return _invalid_link(request, session, kind)
    return render(request, LINK_PAGES[kind][0], session, email=link.email)


def _new_password_problem(form: dict[str, str], email: str | None) -> str | None:
    password = form.get("password", "")
    problem = passwords.problem(password, email)
    if problem is None and password != form.get("confirm", ""):
        problem = "As duas senhas não são iguais."
    return problem


async def signup_page(request: Request) -> Response:
    return _link_page(request, "invite")


async def open_signup_page(request: Request) -> Response:
    if settings.PANEL_SIGNUP != "open":
        return render(request, "message.html", visitor(request), 404, title="Cadastro por convite",
                      text="Para abrir uma conta, peça um convite à plataforma.")  # fmt: skip
    return render(request, "signup.html", visitor(request), open=True)


async def signup(request: Request) -> Response:
    """A new account from the sign-up form: by an invite's link, or open (its e-mail typed in)."""
    got = await posted(request)
    if got is None:
        return forbidden()
    session, form = got
    db.connect(reuse_if_open=True)
    token = request.path_params.get("token")
    link = links.valid("invite", token) if token else None
    if token and link is None:
        return _invalid_link(request, session, "invite")
    if not token and settings.PANEL_SIGNUP != "open":
        return await open_signup_page(request)
    email = link.email if link is not None else form.get("email", "").strip().lower()
    slug = form.get("slug", "").strip()
    context = {"email": email, "slug": slug, "open": link is None}
    problem = None
    if link is None:
        try:
            email = accounts.normal_email(email or "")
        except accounts.AccountError:
            problem = "Digite um e-mail válido."
        if problem is None and _limited("signup", address(request), SIGNUPS_PER_HOUR):
            problem = "Muitos cadastros deste endereço. Tente de novo mais tarde."
    problem = problem or _new_password_problem(form, email)
    if problem is None and not accounts.SLUG.match(slug):
        problem = "O nome da loja usa só letras, números, - e _ (até 64)."
    if problem is not None:
        return render(request, "signup.html", session, 422, error=problem, **context)
    hashed = await run_in_threadpool(passwords.hashed, form.get("password", ""))
    try:
        with transaction():
            if link is not None and not links.use(link):
                raise accounts.AccountError("token", "used")
            account = accounts.create(slug, email or "")
            Account.update(password_hash=hashed).where(Account.id == account.id).execute()
    except accounts.AccountError as exc:
        error = {"slug": "Esse nome de loja já existe.", "email": "Já existe uma conta com este e-mail."}.get(
            exc.key, "Este convite não vale mais.")  # fmt: skip
        return render(request, "signup.html", session, 422, error=error, **context)
    audit.record("signup", account=account, actor=account.slug, address=address(request))
    return enter(request, session, account, "/")


# --- password reset -----------------------------------------------------------------------------


async def reset_page(request: Request) -> Response:
    return _link_page(request, "reset")


async def reset(request: Request) -> Response:
    got = await posted(request)
    if got is None:
        return forbidden()
    session, form = got
    db.connect(reuse_if_open=True)
    link = links.valid("reset", request.path_params["token"])
    account = Account.get_or_none(Account.id == link.account_id) if link is not None else None  # type: ignore[attr-defined]
    if link is None or account is None:
        return _invalid_link(request, session, "reset")
    problem = _new_password_problem(form, account.email)
    if problem is not None:
        return render(request, "reset.html", session, 422, email=link.email, error=problem)
    hashed = await run_in_threadpool(passwords.hashed, form.get("password", ""))
    with transaction():
        if not links.use(link):
            return _invalid_link(request, session, "reset")
        Account.update(password_hash=hashed, updated_at=utcnow()).where(Account.id == account.id).execute()
    sessions.end_all(PANEL.redis, account.id)  # whoever had the old password is out
    audit.record("password reset", account=account, actor=account.slug, session=session.tag, address=address(request))
    return RedirectResponse("/login?reset=1", status_code=303)


FORGOT_SENT = ("Se houver uma conta com este e-mail, enviamos um link para criar uma nova senha. "
               "Ele vale por 1 hora.")  # fmt: skip


async def forgot_page(request: Request) -> Response:
    return render(request, "forgot.html", visitor(request), mail=mail.enabled())


async def forgot(request: Request) -> Response:
    """Mail a reset link (SMTP_URL) to the account with this e-mail. The answer is the same whether
    there is one or not; mails are limited per e-mail and per address."""
    got = await posted(request)
    if got is None:
        return forbidden()
    session, form = got
    if not mail.enabled():
        return render(request, "forgot.html", session, 404, mail=False)
    email = form.get("email", "").strip().lower()[:254]
    db.connect(reuse_if_open=True)
    account = Account.get_or_none(Account.email == email) if email else None
    over = _limited("reset-mail", f"email:{email}", RESET_MAILS_PER_HOUR) or _limited(
        "reset-mail", f"ip:{address(request)}", RESET_MAILS_PER_HOUR * 3)  # fmt: skip
    response = render(request, "forgot.html", session, mail=True, sent=FORGOT_SENT)
    if account is not None and account.state == "active" and not over:
        url = links.url("reset", links.reset(account))
        audit.record("reset link mailed", account=account, actor="-", session=session.tag, address=address(request))
        # Sent after the answer: how long it takes says nothing of whether the account exists.
        response.background = BackgroundTask(_mail_reset, account.slug, email, url)
    return response


def _mail_reset(slug: str, email: str, url: str) -> None:
    body = (f"Olá,\n\nPara criar uma nova senha da sua conta {slug} no GrimBots, abra o link abaixo "
            f"(vale por 1 hora e uma só vez):\n\n{url}\n\nSe não foi você que pediu, ignore este e-mail: "
            "sua senha continua a mesma.\n")  # fmt: skip
    try:
        mail.send(email, "Nova senha do GrimBots", body)
    except mail.MailError as exc:
        log.error("reset mail not sent account=%s error=%s", slug, exc)
