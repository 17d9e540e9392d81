"""One-use links: an invite to sign up (7 days) and a password reset (1 hour). The token is 32
random bytes, URL-safe; only its SHA-256 is stored, and a link is used once (a conditional update)."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

import settings
from db.database import utcnow
from db.models import Account, AccountToken

INVITE_DAYS = 7
RESET_HOURS = 1


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _make(kind: str, ttl: dt.timedelta, *, email: str | None = None, account: Account | None = None) -> str:
    token = secrets.token_urlsafe(32)
    AccountToken.create(kind=kind, token_hash=_digest(token), email=email, account=account,
                        expires_at=utcnow() + ttl)  # fmt: skip
    return token


def invite(email: str) -> str:
    return _make("invite", dt.timedelta(days=INVITE_DAYS), email=email)


def reset(account: Account) -> str:
    return _make("reset", dt.timedelta(hours=RESET_HOURS), account=account, email=account.email)


def url(kind: str, token: str) -> str:
    path = "signup" if kind == "invite" else "reset"
    return f"{settings.PANEL_BASE_URL}/{path}/{token}"


def valid(kind: str, token: str) -> AccountToken | None:
    """The unused, unexpired link of this kind, without using it."""
    row = AccountToken.get_or_none((AccountToken.token_hash == _digest(token)) & (AccountToken.kind == kind))
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        return None
    return row


def use(row: AccountToken) -> bool:
    """Use the link; False when another request used it first (or it expired meanwhile)."""
    now = utcnow()
    return bool(AccountToken.update(used_at=now).where((AccountToken.id == row.id) & AccountToken.used_at.is_null()
                                                       & (AccountToken.expires_at > now)).execute())  # fmt: skip
