"""Seller accounts (CONTRACT §14): who owns which gateways, bots and pools, their role (seller or
operator) and state (active or suspended). The operator's CLI (`ops accounts`) and, next, the seller
panel both go through here. A suspension reaches every running process within CONFIG_POLL_SECONDS:
it bumps the configuration's version, and the snapshot marks the account's bots suspended."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from peewee import IntegrityError, fn

from accounts import links
from catalog.apply import bump_version
from catalog.validate import SLUG
from db import audit
from db.database import transaction, utcnow
from db.days import day_start, local_day
from db.models import Account, Bot, Charge

# Deliberately loose (RFC 5321's lengths, one @, a dot in the domain): the address is proven by
# the mail that reaches it, not by a pattern.
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
ROLES = ("seller", "operator")


class AccountError(ValueError):
    """A bad account operation; `key` names what is wrong (slug, email, role)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


@dataclass(frozen=True)
class Summary:
    slug: str
    email: str | None
    role: str
    state: str
    bots: int
    created_at: str
    revenue_month: str = "0.00"  # BRL paid and kept this month (the sellers' month, REPORT_TIMEZONE)

    def as_dict(self) -> dict[str, object]:
        return {"slug": self.slug, "email": self.email, "role": self.role, "state": self.state, "bots": self.bots,
                "created_at": self.created_at, "revenue_month": self.revenue_month}  # fmt: skip


def normal_email(email: str) -> str:
    value = email.strip().lower()
    if len(value) > 254 or not EMAIL.match(value):
        raise AccountError("email", f"{email!r} is not an e-mail address")
    return value


def create(slug: str, email: str, *, role: str = "seller") -> Account:
    if not SLUG.match(slug):
        raise AccountError("slug", "must be 1–64 characters of A-Za-z0-9_-")
    if role not in ROLES:
        raise AccountError("role", f"must be one of {', '.join(ROLES)}")
    address = normal_email(email)
    with transaction():
        if Account.select().where(Account.slug == slug).exists():
            raise AccountError("slug", f"an account {slug!r} exists already")
        if Account.select().where(Account.email == address).exists():
            raise AccountError("email", "another account has this e-mail")
        try:
            return Account.create(slug=slug, email=address, role=role)
        except IntegrityError:  # a concurrent create of the same slug or e-mail
            raise AccountError("slug", f"an account {slug!r} or with this e-mail exists already") from None


def invite(email: str) -> str:
    """A one-use sign-up link (7 days) for an e-mail no account has."""
    address = normal_email(email)
    if Account.select().where(Account.email == address).exists():
        raise AccountError("email", "another account has this e-mail")
    return links.url("invite", links.invite(address))


def set_email(slug: str, email: str, actor: str = "ops accounts", session: str | None = None,
              address: str | None = None) -> bool:  # fmt: skip
    """Give the account a (new) login e-mail (the `default` account, made by the migration, has none);
    True when it changed. Audited."""
    account, new = get(slug), normal_email(email)
    if account.email == new:
        return False
    with transaction():
        if Account.select().where((Account.email == new) & (Account.id != account.id)).exists():
            raise AccountError("email", "another account has this e-mail")
        Account.update(email=new, updated_at=utcnow()).where(Account.id == account.id).execute()
        audit.record("e-mail changed", account=account, actor=actor, obj=f"account {slug}",
                     before={"email": account.email}, after={"email": new}, session=session,
                     address=address)  # fmt: skip
    return True


def get(slug: str) -> Account:
    account = Account.get_or_none(Account.slug == slug)
    if account is None:
        raise AccountError("slug", f"no account {slug!r}")
    return account


def set_state(slug: str, state: str, actor: str = "ops accounts") -> bool:
    """Suspend (`suspended`) or resume (`active`) an account; True when its state changed. Its bots
    stop (or start again) selling within CONFIG_POLL_SECONDS; the change is in the audit log."""
    account = get(slug)
    with transaction():
        changed = Account.update(state=state, updated_at=utcnow()).where(
            (Account.id == account.id) & (Account.state != state)).execute()  # fmt: skip
        if changed:
            bump_version()
            audit.record(f"account {'suspended' if state == 'suspended' else 'resumed'}", account=account,
                         actor=actor, obj=f"account {slug}", before={"state": account.state},
                         after={"state": state})  # fmt: skip
    return bool(changed)


def summaries() -> list[Summary]:
    rows = Bot.select(Bot.account, fn.COUNT(Bot.id)).group_by(Bot.account).tuples()
    counts: dict[int, int] = {int(row[0]): int(row[1]) for row in rows if row[0] is not None}  # type: ignore[index]
    today = local_day(utcnow())
    paid = (Charge.select(Bot.account, fn.SUM(Charge.paid_amount)).join(Bot, on=(Bot.id == Charge.bot_id))
            .where((Charge.status == "paid") & (Charge.paid_at >= day_start(today.replace(day=1))))
            .group_by(Bot.account).tuples())  # fmt: skip
    revenue = {int(row[0]): Decimal(str(row[1] or 0)) for row in paid if row[0] is not None}  # type: ignore[index]
    return [Summary(a.slug, a.email, a.role, a.state, counts.get(a.id, 0), a.created_at.isoformat(timespec="seconds"),
                    f"{revenue.get(a.id, 0):.2f}") for a in Account.select().order_by(Account.slug)]  # fmt: skip
