"""Accounts' keys to the HTTP API (CONTRACT §14): `gbk_<prefix>_<secret>`, shown once, stored as
SHA-256; a revoked key is refused like an unknown one."""

from __future__ import annotations

import hashlib
import secrets

from db.database import utcnow
from db.models import Account, ApiKey


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create(account: Account) -> str:
    prefix = secrets.token_hex(4)
    key = f"gbk_{prefix}_{secrets.token_urlsafe(32)}"
    ApiKey.create(account=account, prefix=prefix, key_hash=_digest(key))
    return key


def account_of(key: str) -> Account | None:
    """The active account a live key belongs to, or None."""
    if not key.startswith("gbk_") or len(key) > 128:
        return None
    row = ApiKey.get_or_none((ApiKey.key_hash == _digest(key)) & ApiKey.revoked_at.is_null())
    if row is None:
        return None
    account = Account.get_or_none((Account.id == row.account_id) & (Account.state == "active"))  # type: ignore[attr-defined]
    if account is not None:
        ApiKey.update(last_used_at=utcnow()).where(ApiKey.id == row.id).execute()
    return account


def revoke(account: Account, prefix: str) -> bool:
    return bool(ApiKey.update(revoked_at=utcnow()).where((ApiKey.account == account.id) & (ApiKey.prefix == prefix)
                                                        & ApiKey.revoked_at.is_null()).execute())  # fmt: skip
