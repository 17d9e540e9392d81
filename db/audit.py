"""The audit log: who (account, session, address) did what to which object, when, before and after.
Values under a secret's name are masked before they are written."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from db.models import Account, AuditEntry

# A value under a name holding one of these is a credential (or a PIX key: personal data).
SECRET_NAMES = ("token", "secret", "password", "key", "app_id", "hash")
MASK = "…"


def is_secret(name: str) -> bool:
    return any(s in name.lower() for s in SECRET_NAMES)


def masked(value: Any) -> Any:
    """`value` with every secret's value replaced by its last four characters at most."""
    if isinstance(value, dict):
        return {k: (MASK + str(v)[-4:] if v and is_secret(k) else masked(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [masked(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value


def record(action: str, *, account: Account | int | None, actor: str, obj: str | None = None,
           before: Any = None, after: Any = None, session: str | None = None,
           address: str | None = None) -> None:  # fmt: skip
    AuditEntry.create(account=account, actor=actor[:128], session=session, address=(address or None),
                      action=action, object=obj, before=masked(before), after=masked(after))  # fmt: skip
