"""The account page: password, e-mail, second factor, sessions, API keys and the audit log. Every
change asks for the password again (and is in the audit log); a new password or second factor ends
every other session."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

import accounts
from accounts import api_keys, passwords, second_factor, sessions
from db import audit
from db.database import utcnow
from db.models import Account, ApiKey
from panel.auth import WRONG_CODE, rotate
from panel.scope import Scope
from panel.shared import PANEL
from panel.web import address, render, seller_form, seller_page

SAVED = {
    "password": "Senha alterada. As outras sessões foram encerradas.",
    "email": "E-mail alterado.",
    "2fa-off": "Verificação em duas etapas desligada.",
    "key-revoked": "Chave revogada: ela não abre mais a API.",
}
NOT_YOU = "A senha atual não confere."


def _fresh(scope: Scope) -> Account:
    """The account as stored now (a form may have changed it since the scope was made)."""
    return Account.get_by_id(scope.account.id)


def _context(session: sessions.Session, scope: Scope, **extra: Any) -> dict[str, Any]:
    account = _fresh(scope)
    keys = list(ApiKey.select().where(ApiKey.account == account.id).order_by(ApiKey.id.desc()))
    live = [{"tag": tag, "started": dt.datetime.fromtimestamp(started, dt.UTC).replace(tzinfo=None),
             "address": where, "this": tag == session.tag}
            for tag, started, where in sessions.live(PANEL.redis, account.id)]  # fmt: skip
    left = second_factor.recovery_codes_left(account) if account.totp_secret else 0
    return {"account": account, "entries": scope.audit(), "keys": keys, "sessions": live, "codes_left": left, **extra}


async def _password_ok(scope: Scope, form: dict[str, str]) -> bool:
    ok, _ = await run_in_threadpool(passwords.check, _fresh(scope).password_hash, form.get("current", ""))
    return bool(ok)


def _refused(request: Request, session: sessions.Session, scope: Scope, error: str, where: str) -> Response:
    return render(request, "account.html", session, 422, error=error, error_at=where, **_context(session, scope))


def _audit(request: Request, session: sessions.Session, scope: Scope, action: str, **change: Any) -> None:
    audit.record(action, account=scope.account, actor=scope.account.slug, session=session.tag,
                 address=address(request), obj=f"account {scope.account.slug}", **change)  # fmt: skip


@seller_page
async def page(request: Request, session: sessions.Session, scope: Scope) -> Response:
    saved = SAVED.get(request.query_params.get("saved", ""))
    return render(request, "account.html", session, saved=saved, **_context(session, scope))


@seller_form
async def change_password(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str]) -> Response:
    account = _fresh(scope)
    new = form.get("password", "")
    problem = None if await _password_ok(scope, form) else NOT_YOU
    problem = problem or passwords.problem(new, account.email)
    if problem is None and new != form.get("confirm", ""):
        problem = "As duas senhas não são iguais."
    if problem is not None:
        return _refused(request, session, scope, problem, "password")
    hashed = await run_in_threadpool(passwords.hashed, new)
    Account.update(password_hash=hashed, updated_at=utcnow()).where(Account.id == account.id).execute()
    sessions.end_all(PANEL.redis, account.id, keep=session.id)  # every other session ends
    _audit(request, session, scope, "password changed")
    return RedirectResponse("/account?saved=password", status_code=303)


@seller_form
async def change_email(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str]) -> Response:
    if not await _password_ok(scope, form):
        return _refused(request, session, scope, NOT_YOU, "email")
    try:
        new = accounts.normal_email(form.get("email", ""))
    except accounts.AccountError:
        return _refused(request, session, scope, "Digite um e-mail válido.", "email")
    try:
        accounts.set_email(scope.account.slug, new, actor=scope.account.slug, session=session.tag,
                           address=address(request))  # fmt: skip
    except accounts.AccountError:
        return _refused(request, session, scope, "Já existe uma conta com este e-mail.", "email")
    return RedirectResponse("/account?saved=email", status_code=303)


# --- the second factor ---------------------------------------------------------------------------


def _valid_secret(secret: str) -> bool:
    try:
        return len(secret) == 32 and len(base64.b32decode(secret)) == 20
    except (binascii.Error, ValueError):
        return False


@seller_page
async def second_factor_page(request: Request, session: sessions.Session, scope: Scope) -> Response:
    account = _fresh(scope)
    if account.totp_secret:
        return render(request, "second_factor_setup.html", session, **_context(session, scope))
    secret = second_factor.new_secret()
    return _setup(request, session, scope, secret)


def _setup(request: Request, session: sessions.Session, scope: Scope, secret: str, status: int = 200,
           error: str | None = None) -> Response:  # fmt: skip
    uri = second_factor.uri(secret, scope.account.email or scope.account.slug)
    return render(request, "second_factor_setup.html", session, status, secret=secret, qr=second_factor.qr_svg(uri),
                  error=error, **_context(session, scope))  # fmt: skip


@seller_form
async def enable_second_factor(request: Request, session: sessions.Session, scope: Scope,
                               form: dict[str, str]) -> Response:  # fmt: skip
    secret = form.get("secret", "")
    if _fresh(scope).totp_secret or not _valid_secret(secret):
        return RedirectResponse("/account/2fa", status_code=303)
    if not await _password_ok(scope, form):
        return _setup(request, session, scope, secret, 422, NOT_YOU)
    codes = second_factor.enable(scope.account, secret, form.get("code", ""))
    if codes is None:
        return _setup(request, session, scope, secret, 422, "Código incorreto: confira o relógio do celular e "
                      "digite o código que o aplicativo mostra agora.")  # fmt: skip
    sessions.end_all(PANEL.redis, scope.account.id, keep=session.id)
    _audit(request, session, scope, "second factor enabled")
    # A new session id after the second factor; the recovery codes are shown once, on the way.
    fresh = rotate(request, session, scope.account, action="login (second factor)")
    return render(request, "recovery_codes.html", fresh, account=_fresh(scope), codes=codes)


async def _code_ok(scope: Scope, form: dict[str, str]) -> bool:
    code = form.get("code", "").strip()
    return second_factor.check(_fresh(scope), code) or second_factor.use_recovery_code(scope.account, code)


@seller_form
async def disable_second_factor(request: Request, session: sessions.Session, scope: Scope,
                                form: dict[str, str]) -> Response:  # fmt: skip
    if scope.operator:
        return _refused(request, session, scope, "Contas de operador precisam da verificação em duas etapas.", "2fa")
    if not await _password_ok(scope, form):
        return _refused(request, session, scope, NOT_YOU, "2fa")
    if not await _code_ok(scope, form):
        return _refused(request, session, scope, WRONG_CODE, "2fa")
    second_factor.disable(scope.account)
    _audit(request, session, scope, "second factor disabled")
    return RedirectResponse("/account?saved=2fa-off", status_code=303)


@seller_form
async def new_recovery_codes(request: Request, session: sessions.Session, scope: Scope,
                             form: dict[str, str]) -> Response:  # fmt: skip
    if not _fresh(scope).totp_secret:
        return RedirectResponse("/account/2fa", status_code=303)
    if not await _password_ok(scope, form):
        return _refused(request, session, scope, NOT_YOU, "2fa")
    if not await _code_ok(scope, form):
        return _refused(request, session, scope, WRONG_CODE, "2fa")
    codes = second_factor.new_recovery_codes(scope.account)
    _audit(request, session, scope, "recovery codes replaced")
    return render(request, "recovery_codes.html", session, account=_fresh(scope), codes=codes)


# --- API keys -----------------------------------------------------------------------------------


@seller_form
async def create_api_key(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str]) -> Response:
    if not await _password_ok(scope, form):
        return _refused(request, session, scope, NOT_YOU, "keys")
    key = api_keys.create(scope.account)
    _audit(request, session, scope, "api key created", after={"prefix": key.split("_")[1]})
    return render(request, "account.html", session, new_key=key, **_context(session, scope))


@seller_form
async def revoke_api_key(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str]) -> Response:
    if not await _password_ok(scope, form):
        return _refused(request, session, scope, NOT_YOU, "keys")
    prefix = form.get("prefix", "")
    if not api_keys.revoke(scope.account, prefix):
        return _refused(request, session, scope, "Essa chave não existe ou já foi revogada.", "keys")
    _audit(request, session, scope, "api key revoked", before={"prefix": prefix})
    return RedirectResponse("/account?saved=key-revoked", status_code=303)
